"""impl="auto" with impl="onednn" among its candidates: measured on a CPU host for float32 and
bfloat16 only, and, once chosen for a pass, differentiated like any other candidate (auto's
custom_jvp transposes its tangent terms, which oneDNN's primitives allow)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jconv
from jconv import _auto, _onednn

pytestmark = [pytest.mark.usefixtures("fresh_auto"),
              pytest.mark.skipif(not _onednn.available(), reason="oneDNN extension not built")]

KW = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2)


def _arrays(dtype=jnp.float32):
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    return (jax.random.normal(kx, (2, 4, 7, 6), dtype),
            jax.random.normal(kw, (6, 2, 3, 3), dtype))


def _rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


@pytest.mark.slow  # ~12 s: four candidates' passes compiled and timed
def test_measured_on_cpu_in_every_pass():
    x, w = _arrays()
    spec = jconv.conv_spec(x.shape, w.shape, **KW)
    choice = _auto.measure_choice(x.shape, w.shape, x.dtype, spec, reps=1)
    assert "onednn" in dict(choice.times_ms) and "onednn/onednn/onednn" in dict(choice.joint_ms)
    assert not choice.failed
    assert all(np.isfinite(dict(choice.times_ms)["onednn"]))


def test_not_a_candidate_for_float64_other_platforms_or_without_the_extension(monkeypatch,
                                                                               x64):
    assert "onednn" in _auto.candidates("cpu", jnp.float32)
    assert "onednn" in _auto.candidates("cpu", jnp.bfloat16) or _onednn._bf16_kernel() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # excluded by dtype, not by a failed measurement
        assert "onednn" not in _auto.candidates("cpu", jnp.float64)
        x, w = _arrays(jnp.float64)
        spec = jconv.conv_spec(x.shape, w.shape, **KW)
        timed = []
        monkeypatch.setattr(_auto, "_minima", lambda fns, args, reps: (
            timed.extend(fns) or {key: 1.0 for key in fns}, {}))  # nothing compiled or run
        choice = _auto.measure_choice(x.shape, w.shape, x.dtype, spec, reps=1)
    assert set(dict(choice.times_ms)) == set(jconv.AUTO_IMPLS)
    assert all("onednn" not in str(key) for key in timed)
    # On a GPU/TPU host impl="onednn" is lax, which auto measures anyway.
    assert "onednn" not in _auto.candidates("gpu", jnp.float32)
    assert "onednn" not in _auto.candidates("tpu", jnp.float32)
    monkeypatch.setattr(_onednn, "_library_or_reason", lambda: (None, "not built"))
    assert "onednn" not in _auto.candidates("cpu", jnp.float32)
    assert "onednn" in _auto.candidates()  # a choice may still name it (e.g. on disk)


def _choose(monkeypatch, *impls):
    monkeypatch.setattr(_auto, "measure_choice", lambda *a, **k: _auto.AutoChoice(
        *impls, source="measured"))
    jconv.set_auto_measure(True)


def _auto_conv(x, w):
    return jconv.conv2d(x, w, impl="auto", **KW)


def _loss(impl):
    return lambda x, w: jnp.sum(jconv.conv2d(x, w, impl=impl, **KW) ** 2)


@pytest.mark.parametrize("impls", [("lax", "onednn", "onednn"), ("onednn", "lax", "onednn"),
                                   ("onednn",) * 3], ids="/".join)
def test_gradients_through_auto_with_onednn_chosen_match_lax(monkeypatch, impls):
    _choose(monkeypatch, *impls)
    x, w = _arrays()
    grad = jax.jit(jax.grad(_loss("auto"), argnums=(0, 1)))
    text = grad.lower(x, w).as_text()
    # The dx term's transpose is backward-data, the dw term's backward-weights.
    assert ("jconv_onednn_bwd_data" in text) == (impls[1] == "onednn")
    assert ("jconv_onednn_bwd_weights" in text) == (impls[2] == "onednn")
    for got, want in zip(grad(x, w), jax.grad(_loss("lax"), argnums=(0, 1))(x, w)):
        assert _rel(got, want) < 1e-5

    def gog(impl):
        grads = jax.grad(_loss(impl), argnums=(0, 1))
        return jax.grad(lambda x, w: sum(jnp.sum(g ** 2) for g in grads(x, w)),
                        argnums=(0, 1))(x, w)

    for got, want in zip(gog("auto"), gog("lax")):
        assert _rel(got, want) < 1e-5


def test_forward_mode_and_check_grads_through_auto_with_onednn(monkeypatch):
    _choose(monkeypatch, "onednn", "onednn", "onednn")
    x, w = _arrays()
    _, ty = jax.jvp(_auto_conv, (x, w), (w.sum() * x, x.sum() * w))
    _, want = jax.jvp(lambda x, w: jconv.conv2d(x, w, **KW), (x, w), (w.sum() * x, x.sum() * w))
    assert _rel(ty, want) < 1e-5
    check_grads(_auto_conv, (x, w), order=2, modes=("fwd", "rev"), eps=0.03, atol=1e-2,
                rtol=1e-2)


def test_a_cached_onednn_choice_is_measured_again_once_it_cannot_run(monkeypatch):
    _choose(monkeypatch, "onednn", "onednn", "onednn")
    x, w = _arrays()
    spec = jconv.conv_spec(x.shape, w.shape, **KW)
    assert jconv.auto_choice(x.shape, w.shape, x.dtype, spec).impls == ("onednn",) * 3
    monkeypatch.setattr(_onednn, "_library_or_reason", lambda: (None, "not built"))
    _choose(monkeypatch, "lax", "lax", "lax")
    assert jconv.auto_choice(x.shape, w.shape, x.dtype, spec).impls == ("lax",) * 3
