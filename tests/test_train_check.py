"""train.check: every conv implementation gives the real model the same gradients and
training trajectory, and a wrong implementation is caught."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jconv import _registry
from train.check import (check_config, main, max_rel_err, run_check, tensor_errors,
                         trajectory_f64)
from train.config import load_config, override
from train.experiment import Experiment, RunData

from train_helpers import TINY

CFG = ["data.source=synthetic", *TINY, "model.widths=[4]"]


def test_lax_im2col_loops_agree_on_the_real_model():
    cfg = load_config("vgg.yaml", CFG)
    lines: list[str] = []
    assert run_check(cfg, ["lax", "im2col", "loops"], "lax", steps=2, batch_size=8,
                     tol32=1e-4, tol64=1e-10, log=lines.append)
    table = "\n".join(lines)
    assert "im2col" in table and "loops" in table and "PASS: all implementations agree" in table


def test_check_replays_the_trainers_update_lookahead_included(x64):
    """On an airbench config the checked trajectory is the trainer's: a run of --steps
    epochs of one batch whose last step ends on Lookahead's slow weights."""
    cfg = check_config(load_config("cifar.yaml", [
        "data.source=synthetic", "model.widths=[4,4,4]", "data.synthetic_train=64",
        "data.synthetic_test=8"], say=lambda note: None), steps=2, batch_size=8)
    data = RunData.load(cfg)
    exp = Experiment.from_config(cfg, data=data)
    assert exp.total_steps == 2 and exp.state.ema is not None
    batches = [exp.batches(epoch)[0] for epoch in range(2)]
    losses, params = trajectory_f64(cfg, data, "lax", batches)
    plain = trajectory_f64(override(cfg, ["optim.lookahead=false"]), data, "lax", batches)
    np.testing.assert_array_equal(losses, plain[0])  # the same steps until the jump...
    assert not np.allclose(params["head"]["kernel"], plain[1]["head"]["kernel"])  # ...then EMA


@pytest.fixture
def slightly_wrong(monkeypatch):
    lax_conv = _registry.conv_impl("lax")
    # One kernel tap weighted 1% too much: invisible in a loss curve, far above float64
    # noise. (A uniform output scale would not do: the BatchNorm after each conv cancels it.)
    wrong = _registry.Implementation(
        "slightly_wrong", lambda x, w, spec: lax_conv(x, w.at[:, :, 0, 0].multiply(1.01), spec),
        "lax with one tap off by 1%", exact=False)
    monkeypatch.setitem(_registry._REGISTRY, "slightly_wrong", wrong)


def test_a_wrong_implementation_fails(slightly_wrong, capsys):
    assert main(["--config", "vgg.yaml", "--impls", "lax,slightly_wrong", "--steps", "1",
                 "--batch-size", "8", *CFG]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out.split("slightly_wrong")[-1]


def test_the_float32_gradient_alone_catches_it(slightly_wrong):
    # tol64 = 1 switches the float64 comparison off: the float32 one must fail by itself,
    # on a tensor whose allowance is tol32 (the reference's own float32 error is far below).
    lines: list[str] = []
    cfg = load_config("vgg.yaml", CFG)
    assert not run_check(cfg, ["slightly_wrong"], "lax", steps=1, batch_size=8, tol32=1e-4,
                         tol64=1.0, log=lines.append)
    row = next(line for line in lines if line.startswith("slightly_wrong"))
    assert "FAIL" in row and "1.0e-04" in row and "kernel" in row


def test_tensor_errors_name_each_tensor():
    errs = tensor_errors({"a": np.array([1.0, 2.1]), "b": [np.zeros(2)]},
                         {"a": np.array([1.0, 2.0]), "b": [np.array([0.0, 1.0])]})
    assert errs == {"['a']": pytest.approx(0.05), "['b'][0]": 1.0}


@pytest.mark.parametrize("args, match", [
    (["--impls", "lax,nope"], r"\['nope'\] not in"),
    (["--steps", "0"], r"--steps and --batch-size must be >= 1"),
    (["optim.lr=-1"], r"optim.lr=-1.0 is invalid"),
])
def test_check_argument_errors(capsys, args, match):
    assert main(["--config", "vgg.yaml", *args, *CFG]) == 2
    assert __import__("re").search(match, capsys.readouterr().err)


def test_max_rel_err_is_relative_per_tensor():
    ref = {"a": jnp.array([100.0, 0.0]), "b": jnp.array([1e-3])}
    assert max_rel_err({"a": jnp.array([101.0, 0.0]), "b": jnp.array([1e-3])}, ref) == \
        pytest.approx(0.01)
    assert max_rel_err(ref, ref) == 0.0
