"""train.profile and train.torch_ref: the PyTorch reference builds the same network as
train.model, and the profile table charges a real step's time to its categories (the
timings themselves are not tested)."""

from __future__ import annotations

import pytest

from train.config import load_config
from train.profile import CATEGORIES, main

from train_helpers import TINY


@pytest.mark.parametrize("config, overrides", [
    ("vgg.yaml", ["model.widths=[8,16]"]),
    ("cifar.yaml", ["model.widths=[8,16,16]"]),
])
def test_torch_reference_has_the_models_trainable_parameters(config, overrides):
    torch = pytest.importorskip("torch")
    from train.model import ModelOptions, build_model, count_params
    from train.torch_ref import TorchStep

    cfg = load_config(config, overrides)
    step = TorchStep(cfg, total_steps=10, torch=torch)
    model = build_model(ModelOptions.from_config(cfg.model), 0)
    frozen = {"airbench": model.whiten.kernel.size if cfg.model.whiten else 0,
              "vgg": 0}[cfg.model.arch]
    # airbench: the BN scale is a fixed 1 in both (not a parameter in jconv's model)
    trained = sum(p.numel() for p in step.net.parameters() if p.requires_grad)
    assert trained == count_params(model) - frozen


def test_profile_table_charges_the_step_to_categories(capsys):
    pytest.importorskip("torch")
    assert main(["--config", "cifar.yaml", "--steps", "1", "data.source=synthetic",
                 *TINY, "model.widths=[8,8,8]"]) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].lstrip("| ") for line in out.splitlines()
            if line.startswith("| ")}
    assert {"conv fwd 3->24 @32", "conv fwd 24->8 @31", "conv bwd (data + weight) 8->8 @15",
            "BatchNorm", CATEGORIES[4], "pooling", "**charged to ops**",
            "**step wall, no profiler**", "**step wall, profiled**",
            "idle inside XLA's executor", "outside the executor",
            "profiler overhead"} <= rows
    values = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:]
              for line in out.splitlines() if line.startswith("| ")}
    unaccounted = next(v for k, v in values.items() if k.startswith("**unaccounted**"))
    parts = [float(values[k][0]) for k in ("idle inside XLA's executor",
                                           "outside the executor")]
    # the two places it lies add up to the unaccounted time (each rounded to 0.1 ms)
    assert abs(sum(parts) - float(unaccounted[0])) <= 0.15
    assert float(values["**step wall, no profiler**"][0]) > 0


def test_profile_rejects_bad_steps(capsys):
    assert main(["--config", "vgg.yaml", "--steps", "0"]) == 2
    assert "--steps must be >= 1, got 0" in capsys.readouterr().err
