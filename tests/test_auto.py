"""impl="auto": exact results and gradients for every choice, measuring, caching, disk cache."""

from __future__ import annotations

import json
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jconv
from jconv import _auto, _auto_cache
from jconv._lax import conv_lax
from jconv._spec import canonical_conv

TRIPLES = [("lax", "im2col", "loops"), ("im2col", "loops", "lax"), ("loops", "lax", "im2col")]
# (fwd, dx, dw) implementations x geometry x layout: every impl serves every role at least once.
CASES = [
    (TRIPLES[0], "NCHW", dict(stride=1, padding=1, dilation=1, groups=1)),
    (TRIPLES[1], "NHWC", dict(stride=2, padding=((1, 0), (2, 1)), dilation=1, groups=2)),
    (TRIPLES[2], "NCHW", dict(stride=(1, 2), padding="valid", dilation=2, groups=1)),
    (TRIPLES[0], "NHWC", dict(stride=1, padding="same", dilation=1, groups=4)),  # depthwise
    (TRIPLES[1], "NCHW", dict(stride=1, padding="same", dilation=1, groups=4)),
    (TRIPLES[2], "NHWC", dict(stride=2, padding=1, dilation=(2, 1), groups=1)),
]


pytestmark = pytest.mark.usefixtures("fresh_auto")


def _force(monkeypatch, triple):
    monkeypatch.setattr(_auto, "heuristic_choice",
                        lambda w_shape, spec, platform="cpu": _auto.AutoChoice(
                            *triple, source="heuristic"))


def _arrays(dtype=jnp.float32, fmt="NCHW", n=2, c_in=4, c_out=8, k=3, groups=1, hw=7):
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    shape = (n, c_in, hw, hw) if fmt == "NCHW" else (n, hw, hw, c_in)
    x = jax.random.normal(kx, shape, dtype)
    w = jax.random.normal(kw, (c_out, c_in // groups, k, k), dtype)
    return x, w


@pytest.mark.parametrize("triple,fmt,case", CASES)
def test_auto_matches_lax_value_and_grads(monkeypatch, triple, fmt, case):
    _force(monkeypatch, triple)
    x, w = _arrays(fmt=fmt, groups=case["groups"])
    b = jnp.arange(8.0)

    def loss(impl):
        return lambda x, w, b: jnp.sum(jnp.sin(jconv.conv2d(x, w, b, impl=impl,
                                                           data_format=fmt, **case)))

    want = jax.value_and_grad(loss("lax"), argnums=(0, 1, 2))(x, w, b)
    got = jax.jit(jax.value_and_grad(loss("auto"), argnums=(0, 1, 2)))(x, w, b)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("triple", TRIPLES[:2])
def test_auto_grad_of_grad_fwd_and_rev(monkeypatch, triple):
    _force(monkeypatch, triple)
    with jax.enable_x64(True):
        x, w = _arrays(jnp.float64, n=1, c_in=4, c_out=4, groups=2, hw=5)

        def f(x, w):
            return jconv.conv2d(x, w, stride=2, padding=1, dilation=1, groups=2, impl="auto")

        check_grads(f, (x, w), order=2, modes=("fwd", "rev"))


def test_auto_vmap_unbatched_and_weight_only_grad(monkeypatch):
    _force(monkeypatch, ("im2col", "loops", "im2col"))
    x, w = _arrays()
    per_example = jax.vmap(lambda xi: jconv.conv2d(xi, w, padding=1, impl="auto"))(x)
    np.testing.assert_allclose(per_example, jconv.conv2d(x, w, padding=1), rtol=1e-5,
                               atol=1e-5)
    # Gradient w.r.t. w alone: the input-gradient term is a symbolic zero and is skipped.
    gw = jax.grad(lambda w: jnp.sum(jconv.conv2d(x, w, padding=1, impl="auto") ** 2))(w)
    ref = jax.grad(lambda w: jnp.sum(jconv.conv2d(x, w, padding=1) ** 2))(w)
    np.testing.assert_allclose(gw, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_auto_half_precision_keeps_dtype(dtype):
    x, w = _arrays(dtype)
    y = jconv.conv2d(x, w, padding=1, impl="auto")
    assert y.dtype == dtype
    ref = jconv.conv2d(x.astype(jnp.float32), w.astype(jnp.float32), padding=1)
    np.testing.assert_allclose(y.astype(jnp.float32), ref, rtol=5e-2, atol=5e-2)


def _spec(x, w, fmt="NCHW", **kw):
    kw = {"stride": 1, "padding": 1, "dilation": 1, "groups": 1, **kw}
    return canonical_conv(x, w, None, data_format=fmt, precision=None, **kw)[0]


@pytest.mark.parametrize("c_in,groups,k,want", [
    (16, 1, 3, "lax"),     # 16*3*3 = 144 >= 32
    (3, 1, 3, "im2col"),   # RGB stem: 27 < 32
    (3, 1, 7, "lax"),      # 7x7 RGB stem: 147
    (8, 2, 3, "im2col"),   # grouped
    (4, 4, 3, "loops"),    # depthwise
])
def test_heuristic_rules(c_in, groups, k, want):
    x, w = _arrays(c_in=c_in, c_out=8, groups=groups, k=k)
    spec = _spec(x, w, groups=groups)
    assert _auto.heuristic_choice(w.shape, spec).impls == (want,) * 3


def test_measuring_picks_the_fastest_and_caches(monkeypatch):
    jconv.set_auto_measure(True)
    x, w = _arrays(n=1, hw=6)
    spec = _spec(x, w)
    choice = jconv.auto_choice(x.shape, w.shape, x.dtype, spec)
    assert choice.source == "measured"
    times = dict(choice.times_ms)
    cands = _auto.candidates(_auto.host_platform(), x.dtype)  # onednn too on CPU
    assert set(times) == set(cands)
    mixed = tuple(min(times, key=lambda name: times[name][k]) for k in range(3))
    joint = dict(choice.joint_ms)
    # Stage 2 compares the per-pass winners with each candidate in all three roles ...
    assert set(joint) == {"/".join(mixed)} | {f"{c}/{c}/{c}" for c in cands}
    # ... and keeps the fastest forward+backward.
    assert joint["/".join(choice.impls)] == min(joint.values())

    def must_not_measure(*args, **kwargs):
        raise AssertionError("a cached choice was measured again")

    monkeypatch.setattr(_auto, "measure_choice", must_not_measure)
    assert jconv.auto_choice(x.shape, w.shape, x.dtype, spec) is choice


def test_measuring_inside_jit_trace_uses_concrete_arrays():
    jconv.set_auto_measure(True)
    x, w = _arrays(n=1, hw=5)
    y = jax.jit(lambda x, w: jconv.conv2d(x, w, padding=1, impl="auto"))(x, w)
    np.testing.assert_allclose(y, jconv.conv2d(x, w, padding=1), rtol=1e-5, atol=1e-5)
    assert jconv.auto_choice(x.shape, w.shape, x.dtype, _spec(x, w)).source == "measured"


def test_disk_cache_round_trip(monkeypatch, tmp_path):
    path = tmp_path / "auto.json"
    monkeypatch.setenv(_auto_cache.CACHE_ENV, str(path))
    monkeypatch.setattr(_auto, "measure_choice", lambda *a, **k: _auto.AutoChoice(
        "loops", "im2col", "lax", source="measured"))
    jconv.set_auto_measure(True)
    x, w = _arrays()
    spec = _spec(x, w)
    jconv.auto_choice(x.shape, w.shape, x.dtype, spec)
    saved = json.loads(path.read_text())
    assert saved == {_auto.cache_key(x.shape, w.shape, x.dtype, spec): ["loops", "im2col", "lax"]}
    jconv.clear_auto_cache()
    jconv.set_auto_measure(False)
    again = jconv.auto_choice(x.shape, w.shape, x.dtype, spec)
    assert (again.source, again.impls) == ("disk", ("loops", "im2col", "lax"))


def test_cache_key_separates_dtype_format_and_spec():
    x, w = _arrays()
    base = _auto.cache_key(x.shape, w.shape, x.dtype, _spec(x, w))
    assert base != _auto.cache_key(x.shape, w.shape, jnp.float16, _spec(x, w))
    assert base != _auto.cache_key(x.shape, w.shape, x.dtype, _spec(x, w, stride=2))
    xn = jnp.transpose(x, (0, 2, 3, 1))
    assert base != _auto.cache_key(xn.shape, w.shape, x.dtype, _spec(xn, w, fmt="NHWC"))


def test_measure_switches(monkeypatch):
    jconv.set_auto_measure(None)
    monkeypatch.setenv(_auto.MEASURE_ENV, "0")
    assert not _auto.measuring_enabled()
    monkeypatch.setenv(_auto.MEASURE_ENV, "1")
    assert _auto.measuring_enabled()
    jconv.set_auto_measure(False)
    assert not _auto.measuring_enabled()


def test_set_auto_measure_rejects_non_bool():
    with pytest.raises(TypeError, match="enabled must be a bool or None, got 'yes'"):
        jconv.set_auto_measure("yes")


def _boom(x, w, spec):
    """A candidate that compiles but fails at run time forward (a host callback raising), and
    cannot be differentiated (pure_callback has no JVP): both kinds of failure at once."""
    def fail(a):
        raise RuntimeError("boom: this candidate cannot run here\nsecond line")

    y = conv_lax(x, w, spec)
    return jax.pure_callback(fail, jax.ShapeDtypeStruct(y.shape, y.dtype), y)


def test_a_failing_candidate_is_dropped_with_one_warning(monkeypatch):
    monkeypatch.setattr(_auto, "candidates", lambda *where: {"boom": _boom, "lax": conv_lax})
    jconv.set_auto_measure(True)
    x, w = _arrays(n=1, hw=6)
    with pytest.warns(RuntimeWarning) as got:
        y = jax.jit(lambda x, w: jconv.conv2d(x, w, padding=1, impl="auto"))(x, w)
        gx = jax.grad(lambda x: jnp.sum(jconv.conv2d(x, w, padding=1, impl="auto") ** 2))(x)
    dropped = [str(r.message) for r in got if "dropped" in str(r.message)]
    assert len(dropped) == 1, dropped
    assert re.fullmatch(
        r"impl='auto' dropped 'boom' for the forward, input gradient, weight gradient of "
        r"x \(1, 4, 6, 6\) w \(8, 4, 3, 3\) float32 groups=1 stride=\(1, 1\) NCHW: it failed "
        r"to compile or run \(\w+: .*\)", dropped[0]), dropped[0]
    assert "second line" not in dropped[0]
    choice = jconv.auto_choice(x.shape, w.shape, x.dtype, _spec(x, w))
    assert choice.impls == ("lax",) * 3
    assert {k for k, _ in choice.failed} == {"boom forward", "boom input gradient",
                                             "boom weight gradient"}
    # Forward: the callback raised at run time; gradients: no JVP rule, at trace time.
    assert dict(choice.failed)["boom forward"].startswith("JaxRuntimeError: ")
    assert "Pure callbacks do not support JVP" in dict(choice.failed)["boom input gradient"]
    np.testing.assert_allclose(y, jconv.conv2d(x, w, padding=1), rtol=1e-6)
    want = jax.grad(lambda x: jnp.sum(jconv.conv2d(x, w, padding=1) ** 2))(x)
    np.testing.assert_allclose(gx, want, rtol=1e-5)


def test_every_candidate_failing_a_pass_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(_auto, "candidates", lambda *where: {"boom": _boom})
    jconv.set_auto_measure(True)
    x, w = _arrays(n=1, hw=6)
    with pytest.warns(RuntimeWarning, match="dropped 'boom'"), pytest.raises(
            RuntimeError, match=r"impl='auto': no candidate can run the forward of x \(1, 4, 6, "
                                r"6\) .*: boom: JaxRuntimeError: "):
        jconv.conv2d(x, w, padding=1, impl="auto")


def test_auto_survives_the_real_bfloat16_crash(monkeypatch):
    """The issue-21 crash, put back into ``loops`` only: XLA:CPU cannot run the grouped
    BF16 x BF16 -> F32 einsum. ``auto`` drops ``loops`` and measures the others."""
    from jconv import _loops

    def unwidened(subscripts, a, b, precision, acc):
        return jnp.einsum(subscripts, a, b, precision=precision, preferred_element_type=acc)

    monkeypatch.setattr(_loops, "grouped_einsum", unwidened)
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (8, 16, 16, 16), jnp.bfloat16)
    w = jax.random.normal(kw, (32, 8, 3, 3), jnp.bfloat16)
    conv = jax.jit(lambda x, w, impl: jconv.conv2d(x, w, groups=2, padding=1, impl=impl),
                   static_argnums=2)
    try:
        jax.block_until_ready(conv(x, w, "loops"))
    except Exception as err:  # noqa: BLE001 — what this jaxlib raises is the point
        crash = str(err).splitlines()[0]
    else:
        pytest.skip("this jaxlib runs the unwidened grouped bfloat16 einsum on this platform")
    jconv.set_auto_measure(True)
    with pytest.warns(RuntimeWarning, match=r"dropped 'loops' for the forward of x \(8, 16, 16, "
                                            r"16\) w \(32, 8, 3, 3\) bfloat16 groups=2") as got:
        y = conv(x, w, "auto")
    assert [str(r.message) for r in got if crash[:40] in str(r.message)]
    assert "loops" not in jconv.auto_choice(x.shape, w.shape, x.dtype,
                                            _spec(x, w, groups=2)).impls
    ref = conv(x.astype(jnp.float32), w.astype(jnp.float32), "lax")
    np.testing.assert_allclose(np.asarray(y, np.float32), ref, rtol=2e-2, atol=0.1)


def test_auto_without_candidates_handed_over_is_a_clear_error(monkeypatch):
    from jconv import _auto_dispatch

    monkeypatch.setattr(_auto_dispatch, "_SOURCE", [])
    with pytest.raises(RuntimeError, match=r"impl='auto' has no candidates: jconv._registry "
                                           r"hands them over"):
        _auto_dispatch.candidates()


@pytest.mark.parametrize("fn, x_shape, w_shape", [
    (jconv.conv1d, (2, 4, 9), (6, 4, 3)),
    (jconv.conv3d, (1, 2, 4, 5, 4), (3, 2, 2, 3, 2)),
])
def test_measuring_1d_and_3d_convs_times_only_impls_that_compute_them(fn, x_shape, w_shape):
    """auto times exactly the implementations that compute this many spatial dims and run
    here (oneDNN among them on CPU for float32, where its extension loads; never the 2-D-only
    ones), and none of them fails."""
    jconv.set_auto_measure(True)
    rng = np.random.default_rng(0)
    x, w = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in (x_shape, w_shape))
    ndim = len(w_shape) - 2
    spec = canonical_conv(x, w, None, stride=1, padding=1, dilation=1, groups=1,
                          data_format=("NCL", "NCHW", "NCDHW")[ndim - 1], precision=None,
                          ndim=ndim)[0]
    platform = _auto.host_platform()
    expected = {n for n, i in jconv.CONV_IMPLS.items()
                if i.auto_measures(platform, x.dtype) and spec.ndim in i.ndims}
    assert set(_auto.candidates(platform, x.dtype, spec.ndim)) == expected
    loss = lambda impl: lambda x, w: jnp.sum(jnp.sin(fn(x, w, padding=1, impl=impl)))  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = jax.value_and_grad(loss("auto"), argnums=(0, 1))(x, w)
        choice = jconv.auto_choice(x.shape, w.shape, x.dtype, spec)
    assert choice.source == "measured" and choice.failed == ()
    assert {name for name, _ in choice.times_ms} == expected
    want = jax.value_and_grad(loss("lax"), argnums=(0, 1))(x, w)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)
