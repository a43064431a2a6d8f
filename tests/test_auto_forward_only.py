"""impl="auto" runs a call that is not differentiated with the fastest forward timed alone.

The bug this guards against: ``python -m jconv.bench --mode quick`` showed ``auto`` running
its NHWC depthwise forward with ``im2col`` although ``loops`` was 4x faster forward in the same
table. The joint forward+backward stage had (rightly, for training) picked im2col/im2col/im2col,
and the forward-only call ran that training triple's forward.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest

import jconv
from jconv import _auto, _auto_cache, _auto_dispatch
from jconv._spec import canonical_conv

pytestmark = pytest.mark.usefixtures("fresh_auto")


def _depthwise(n=2, c=4, hw=6):
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (n, hw, hw, c))
    w = jax.random.normal(kw, (c, 1, 3, 3))
    spec = canonical_conv(x, w, None, stride=1, padding=1, dilation=1, groups=c,
                          data_format="NHWC", precision=None)[0]
    return x, w, spec


def _fake_minima(pass_ms, joint_best):
    """A stand-in for ``_auto._minima``: per-pass times by candidate name in stage 1, and in
    stage 2 the fastest forward+backward for ``joint_best`` only; no failures. Nothing is run
    or timed."""
    def minima(fns, args, reps):
        return {key: (pass_ms[key[0]] if isinstance(key[1], int)
                      else 1.0 if key == joint_best else 9.0) for key in fns}, {}
    return minima


def test_fastest_forward_alone_serves_calls_without_gradients(monkeypatch):
    # loops wins every pass on its own, im2col wins the passes together: the quick bench's case.
    monkeypatch.setattr(_auto, "_minima", _fake_minima(
        {"lax": 5.0, "im2col": 2.0, "loops": 0.5, "onednn": 3.0}, ("im2col",) * 3))
    x, w, spec = _depthwise()
    choice = _auto.measure_choice(x.shape, w.shape, x.dtype, spec)
    assert choice.impls == ("im2col",) * 3
    assert (choice.fwd_only, choice.inference) == ("loops", "loops")


def test_forward_only_and_differentiated_calls_run_their_own_implementations(monkeypatch):
    monkeypatch.setattr(_auto, "measure_choice", lambda *a, **k: _auto.AutoChoice(
        "im2col", "im2col", "im2col", source="measured", fwd_only="loops"))
    real = _auto.candidates()

    def scoped(name):
        def conv(x, w, spec):
            with jax.named_scope(f"jconv_impl_{name}"):  # visible in the lowered program
                return real[name](x, w, spec)
        return conv

    monkeypatch.setattr(_auto_dispatch, "candidates", lambda *where: {n: scoped(n) for n in real})
    jconv.set_auto_measure(True)
    x, w, _ = _depthwise()

    def conv(x, w):
        return jconv.conv2d(x, w, padding=1, groups=4, data_format="NHWC", impl="auto")

    def loss(x, w):
        return jnp.sum(conv(x, w) ** 2)

    def impls_in(fn):
        text = jax.jit(fn).lower(x, w).as_text(debug_info=True)
        return {n for n in real if f"jconv_impl_{n}" in text}

    # Lowered for CPU: only the CPU branch of lax.platform_dependent is left.
    assert impls_in(conv) == {"loops"}
    assert impls_in(jax.grad(loss, argnums=(0, 1))) == {"im2col"}
    y, g = jax.jit(conv)(x, w), jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)

    def lax_conv(x, w):
        return jconv.conv2d(x, w, padding=1, groups=4, data_format="NHWC")

    want = jax.grad(lambda x, w: jnp.sum(lax_conv(x, w) ** 2), argnums=(0, 1))(x, w)
    assert jnp.allclose(y, lax_conv(x, w), atol=1e-5)
    assert all(jnp.allclose(a, b, atol=1e-4) for a, b in zip(g, want))


def test_measured_forward_only_choice_is_the_fastest_forward_pass():
    jconv.set_auto_measure(True)
    x, w, spec = _depthwise(n=1, hw=5)
    choice = jconv.auto_choice(x.shape, w.shape, x.dtype, spec)
    times = dict(choice.times_ms)
    assert choice.fwd_only == min(times, key=lambda name: times[name][0])


def test_disk_cache_keeps_the_forward_only_choice(monkeypatch, tmp_path):
    path = tmp_path / "auto.json"
    monkeypatch.setenv(_auto_cache.CACHE_ENV, str(path))
    monkeypatch.setattr(_auto, "measure_choice", lambda *a, **k: _auto.AutoChoice(
        "im2col", "im2col", "lax", source="measured", fwd_only="loops"))
    jconv.set_auto_measure(True)
    x, w, spec = _depthwise()
    jconv.auto_choice(x.shape, w.shape, x.dtype, spec)
    key = _auto.cache_key(x.shape, w.shape, x.dtype, spec)
    assert json.loads(path.read_text()) == {key: ["im2col", "im2col", "lax", "loops"]}
    path.write_text(json.dumps({key: ["im2col", "im2col", "lax", "loops"],
                                "old": ["lax", "lax", "lax"]}))  # an entry from before
    jconv.clear_auto_cache()
    jconv.set_auto_measure(False)
    again = jconv.auto_choice(x.shape, w.shape, x.dtype, spec)
    assert (again.source, again.impls, again.inference) == (
        "disk", ("im2col", "im2col", "lax"), "loops")
    assert _auto._MEMORY["old"].inference == "lax"
