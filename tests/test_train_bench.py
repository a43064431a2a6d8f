"""train.bench: the throughput table runs on a tiny model and rejects bad arguments (the
timings themselves are not tested)."""

from __future__ import annotations

import pytest

from train.bench import main

from train_helpers import TINY


def test_bench_prints_a_row_per_impl_and_format(capsys):
    pytest.importorskip("torch")
    assert main(["--config", "vgg.yaml", "--impls", "lax,im2col", "--formats", "NHWC,NCHW",
                 "--rounds", "1", "--steps", "1", "data.source=synthetic", *TINY]) == 0
    out = capsys.readouterr().out
    assert "warm-up: 2 untimed round(s) of every row" in out
    for name in ("lax/NHWC", "im2col/NHWC", "lax/NCHW", "im2col/NCHW", "torch/NHWC",
                 "torch/NCHW"):
        assert f"\n{name} " in out


def test_bench_compares_dtypes_with_pytorch_autocast_rows(capsys):
    pytest.importorskip("torch")
    assert main(["--config", "vgg.yaml", "--impls", "lax", "--dtypes", "float32,bfloat16",
                 "--rounds", "1", "--steps", "1", "data.source=synthetic", *TINY]) == 0
    out = capsys.readouterr().out
    for name in ("lax/float32", "lax/bfloat16", "torch/float32", "torch/bfloat16"):
        assert f"\n{name} " in out


def test_bench_of_lax_in_bfloat16_needs_no_onednn_bfloat16_kernels(capsys, monkeypatch):
    # vgg.yaml's own conv_impl is onednn: the PyTorch rows' configs must not be validated
    # with it on a CPU without oneDNN's bfloat16 kernels.
    pytest.importorskip("torch")
    from jconv import _onednn

    monkeypatch.setattr(_onednn, "_bf16_kernel", lambda: None)
    assert main(["--config", "vgg.yaml", "--impls", "lax", "--dtypes", "bfloat16",
                 "--rounds", "1", "--steps", "1", "data.source=synthetic", *TINY]) == 0
    assert "\ntorch/bfloat16 " in capsys.readouterr().out


def test_bench_defaults_to_the_configs_path_and_skips_a_missing_torch(capsys, monkeypatch):
    import train.torch_ref

    monkeypatch.setattr(train.torch_ref, "load_torch", lambda: None)
    assert main(["--config", "vgg.yaml", "--rounds", "1", "--steps", "1",
                 "data.source=synthetic", *TINY]) == 0
    out = capsys.readouterr().out
    assert "PyTorch is not installed: no PyTorch reference rows" in out
    assert "\nonednn " in out and "\ntorch" not in out  # vgg.yaml: onednn, xla_default


@pytest.mark.parametrize("args, match", [
    (["--impls", "nope"], r"--impls must name .*\['nope'\]"),
    (["--formats", "CHWN"], r"--formats must be NHWC and/or NCHW, got 'CHWN'"),
    (["--rounds", "0"], r"--rounds and --steps >= 1"),
    (["--warmup", "-1"], r"--warmup must be >= 0, got -1"),
    (["--dtypes", "float16"], r"--dtypes must be float32 and/or bfloat16, got 'float16'"),
])
def test_bench_argument_errors(capsys, args, match):
    assert main(["--config", "vgg.yaml", *args]) == 2
    assert __import__("re").search(match, capsys.readouterr().err)


@pytest.mark.parametrize("dtype, conv_dtype", [("float32", "float32"),
                                               ("bfloat16", "bfloat16")])
def test_torch_reference_autocasts_a_bfloat16_model(dtype, conv_dtype):
    torch = pytest.importorskip("torch")
    import numpy as np

    from train.config import load_config
    from train.torch_ref import TorchStep

    # conv_impl lax: the config validates on any CPU (onednn's bfloat16 needs its kernels).
    cfg = load_config("cifar_subset.yaml", ["model.widths=[8,8,8]", f"model.dtype={dtype}",
                                            "model.conv_impl=lax"])
    step = TorchStep(cfg, total_steps=10)
    seen = []
    for m in step.net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    rng = np.random.default_rng(0)
    loss = step(*step.inputs(rng.normal(size=(4, 32, 32, 3)).astype(np.float32),
                             np.arange(4) % 10))
    # bfloat16 convs as under torch.autocast; parameters and the loss stay float32
    assert seen and {str(d).removeprefix("torch.") for d in seen} == {conv_dtype}
    assert all(p.dtype == torch.float32 for p in step.net.parameters())
    assert np.isfinite(loss)
