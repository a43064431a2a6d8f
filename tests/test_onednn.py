"""impl="onednn": oneDNN's convolutions through the XLA FFI (jconv/_onednn.py, _onednn.cc).

Values and gradients against jconv.testing's float64 oracle and PyTorch, what goes wrong with
native code (padding sides, dilation counted from 0, groups, layouts, the primitive cache),
errors named in Python before the native call, thread safety, and lowering elsewhere.
"""

from __future__ import annotations

import functools
import os
import platform
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import onednn_dtypes

import jconv
from jconv import _onednn, testing

conv = functools.partial(jconv.conv2d, impl="onednn")


def _rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def _rand(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.skipif(not (platform.system() == "Linux" and platform.machine() == "x86_64"),
                    reason="the install builds the extension on Linux x86-64 only")
def test_the_install_built_the_extension():
    assert _onednn.available(), _onednn._library_or_reason()[1]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("pass_", ["forward", "input_grad", "weight_grad"])
def test_optimized_kernels_not_the_reference_one(dtype, fmt, pass_):
    # A plain oihw weight descriptor makes oneDNN silently run "ref:any", ~200x slower.
    if dtype == "bfloat16" and _onednn._bf16_kernel() is None:
        pytest.skip("no bfloat16 kernels on this CPU")
    assert "ref" not in _onednn.probe(dtype, fmt, pass_)


def test_check_conv2d_quick_float32_bfloat16(record_error):
    report = testing.check_conv2d(conv, cases="quick", dtypes=onednn_dtypes())
    for dtype in report.dtypes:
        record_error("conv", dtype, "onednn", report.worst(dtype, "forward"))
        record_error("conv-grad", dtype, "onednn", report.worst(dtype, "grad"))
    assert report.passed, str(report)


@pytest.mark.slow  # ~25 s: 48 cases x 2 dtypes, one compile each
def test_check_conv2d_default_float32_bfloat16():
    report = testing.check_conv2d(conv, dtypes=onednn_dtypes())
    assert report.passed, str(report)


def test_check_conv2d_nhwc():
    nhwc = functools.partial(conv, data_format="NHWC")
    report = testing.check_conv2d(testing.from_nhwc(nhwc), cases="quick",
                                  dtypes=onednn_dtypes())
    assert report.passed, str(report)


def _random_config(rng):
    groups = int(rng.choice([1, 2, 3]))
    c_in = groups * int(rng.integers(1, 4))
    depthwise = rng.random() < 0.25
    if depthwise:
        groups = c_in
    c_out = groups * int(rng.integers(1, 4))
    k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    dilation = (int(rng.integers(1, 4)), int(rng.integers(1, 3)))
    stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    pads = tuple((int(rng.integers(0, 4)), int(rng.integers(0, 4))) for _ in range(2))
    hw = [max(int(rng.integers(1, 12)), d * (kk - 1) + 1 - sum(p))
          for kk, d, p in zip(k, dilation, pads)]
    n = int(rng.integers(1, 4))
    return dict(x=(n, c_in, *hw), w=(c_out, c_in // groups, *k), stride=stride, pads=pads,
                dilation=dilation, groups=groups)


@pytest.mark.parametrize("seed", range(4))
def test_random_configurations_match_pytorch(seed):
    """Forward and both gradients against torch.nn.functional.conv2d (asymmetric padding by
    F.pad first), NCHW and NHWC, over strides, paddings, dilations, groups and depthwise."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    for _ in range(5):
        cfg = _random_config(rng)
        x, w = _rand(rng, cfg["x"]), _rand(rng, cfg["w"])
        (top, bottom), (left, right) = cfg["pads"]
        tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        ty = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (left, right, top, bottom)),
                                        tw, stride=cfg["stride"], dilation=cfg["dilation"],
                                        groups=cfg["groups"])
        ct = _rand(rng, tuple(ty.shape))
        ty.backward(torch.from_numpy(ct))
        kw = dict(stride=cfg["stride"], padding=cfg["pads"], dilation=cfg["dilation"],
                  groups=cfg["groups"])
        for fmt in ("NCHW", "NHWC"):
            to = (lambda a: a) if fmt == "NCHW" else (lambda a: jnp.transpose(a, (0, 2, 3, 1)))
            back = (lambda a: a) if fmt == "NCHW" else (lambda a: jnp.transpose(a, (0, 3, 1, 2)))
            y, vjp = jax.vjp(lambda x, w: conv(x, w, data_format=fmt, **kw), to(x), w)
            dx, dw = vjp(to(ct))
            msg = f"{cfg} {fmt}"
            assert _rel(back(y), ty.detach().numpy()) < 1e-5, msg
            assert _rel(back(dx), tx.grad.numpy()) < 1e-5, msg
            assert _rel(dw, tw.grad.numpy()) < 1e-5, msg


@pytest.mark.parametrize("kw", [
    dict(padding=((0, 2), (1, 0))),                     # every side different
    dict(padding=((3, 0), (0, 3)), stride=2),           # padding past the kernel, strided
    dict(dilation=(2, 3), padding=((2, 1), (0, 3))),    # oneDNN counts dilation from 0
    dict(dilation=1),                                   # ... so 1 must mean "none"
    dict(groups=3),
    dict(groups=6),                                     # depthwise, channel multiplier 2
    dict(stride=(3, 1), padding="valid"),
    dict(padding="same", dilation=(1, 2)),              # the extra pixel on the bottom/right
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_native_pitfalls_against_the_oracle(kw, fmt, x64):
    rng = np.random.default_rng(1)
    groups = kw.get("groups", 1)
    x, w = rng.standard_normal((2, 6, 9, 7)), rng.standard_normal((12, 6 // groups, 3, 2))
    want = testing.reference_conv2d(x, w, **kw)
    xj = jnp.asarray(x, jnp.float32)
    y = conv(xj if fmt == "NCHW" else xj.transpose(0, 2, 3, 1), jnp.asarray(w, jnp.float32),
             data_format=fmt, **kw)
    assert _rel(y if fmt == "NCHW" else y.transpose(0, 3, 1, 2), want) < 1e-5


def test_layouts_are_not_mixed_up():
    """Every dim distinct (N, C, H, W = 2, 3, 5, 7): reading NHWC bytes as NCHW (or weights as
    HWIO) would give another shape or other numbers."""
    rng = np.random.default_rng(2)
    x, w = jnp.asarray(_rand(rng, (2, 3, 5, 7))), jnp.asarray(_rand(rng, (4, 3, 2, 3)))
    nchw = conv(x, w, padding=1)
    nhwc = conv(x.transpose(0, 2, 3, 1), w, padding=1, data_format="NHWC")
    assert nchw.shape == (2, 4, 6, 7) and nhwc.shape == (2, 6, 7, 4)
    np.testing.assert_allclose(nhwc.transpose(0, 3, 1, 2), nchw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nchw, jconv.conv2d(x, w, padding=1, precision="highest"),
                               rtol=1e-5, atol=1e-5)


def test_cached_primitive_is_reused_and_not_confused_with_another_shape():
    rng = np.random.default_rng(3)
    w = jnp.asarray(_rand(rng, (5, 4, 3, 3)))
    xs = [jnp.asarray(_rand(rng, s)) for s in ((2, 4, 10, 10), (3, 4, 10, 10), (2, 4, 11, 9))]
    f = jax.jit(lambda x, w: conv(x, w, padding=1))
    before = _onednn.cache_stats()
    first = [f(x, w) for x in xs]
    mid = _onednn.cache_stats()
    again = [f(x, w) for x in xs]
    after = _onednn.cache_stats()
    assert mid["misses"] - before["misses"] <= 3   # at most one primitive per new shape
    assert after["misses"] == mid["misses"] and after["hits"] - mid["hits"] == 3
    for x, a, b in zip(xs, first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, jconv.conv2d(x, w, padding=1, precision="highest"),
                                   rtol=1e-5, atol=1e-5)


def test_eviction_keeps_results_right():
    stats = _onednn.cache_stats()
    rng = np.random.default_rng(4)
    w = jnp.asarray(_rand(rng, (3, 2, 3, 3)))
    try:
        _onednn.set_cache_capacity(2)
        for rounds in range(2):
            for hw in (6, 7, 8, 9):
                x = jnp.asarray(_rand(rng, (1, 2, hw, hw)))
                np.testing.assert_allclose(conv(x, w), jconv.conv2d(x, w, precision="highest"),
                                           rtol=1e-5, atol=1e-5)
                assert _onednn.cache_stats()["size"] <= 2
    finally:
        _onednn.set_cache_capacity(stats["capacity"])


def _loss(impl, **kw):
    return lambda x, w: jnp.sum(jconv.conv2d(x, w, impl=impl, **kw) ** 2)


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_grad_of_grad_matches_lax(fmt):
    rng = np.random.default_rng(5)
    x = jnp.asarray(_rand(rng, (2, 4, 7, 6) if fmt == "NCHW" else (2, 7, 6, 4)))
    w = jnp.asarray(_rand(rng, (6, 2, 3, 3)))
    kw = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2,
              data_format=fmt)

    def gog(impl):
        grads = jax.grad(_loss(impl, **kw), argnums=(0, 1))
        return jax.grad(lambda x, w: sum(jnp.sum(g ** 2) for g in grads(x, w)),
                        argnums=(0, 1))(x, w)

    for got, want in zip(gog("onednn"), gog("lax")):
        assert _rel(got, want) < 1e-5


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_forward_mode_matches_lax(fmt):
    rng = np.random.default_rng(10)
    x = jnp.asarray(_rand(rng, (2, 4, 7, 6) if fmt == "NCHW" else (2, 7, 6, 4)))
    w = jnp.asarray(_rand(rng, (6, 2, 3, 3)))
    tx, tw = jnp.asarray(_rand(rng, x.shape)), jnp.asarray(_rand(rng, w.shape))
    kw = dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2,
              data_format=fmt)
    for primals, tangents, args in (((x, w), (tx, tw), (0, 1)), ((x,), (tx,), (0,)),
                                    ((w,), (tw,), (1,))):
        def f(*a, impl, args=args):
            full = [x, w]
            for i, v in zip(args, a):
                full[i] = v
            return jconv.conv2d(*full, impl=impl, **kw)

        y, ty = jax.jvp(functools.partial(f, impl="onednn"), primals, tangents)
        want_y, want_ty = jax.jvp(functools.partial(f, impl="lax"), primals, tangents)
        assert _rel(y, want_y) < 1e-5 and _rel(ty, want_ty) < 1e-5, args


def test_forward_mode_skips_the_pass_of_a_zero_tangent():
    """jvp in x alone runs forward + one more forward (tx, w), no backward pass."""
    x, w = jnp.ones((1, 2, 5, 5)), jnp.ones((3, 2, 3, 3))
    text = str(jax.make_jaxpr(lambda x, t: jax.jvp(lambda x: conv(x, w), (x,), (t,)))(x, x))
    assert text.count("onednn_conv_fwd") == 2 and "onednn_conv_bwd" not in text


def test_vmap_and_jit():
    rng = np.random.default_rng(6)
    xs, ws = jnp.asarray(_rand(rng, (3, 2, 4, 6, 6))), jnp.asarray(_rand(rng, (3, 5, 4, 3, 3)))
    got = jax.jit(jax.vmap(lambda x, w: conv(x, w, padding=1)))(xs, ws)
    for i in range(3):
        np.testing.assert_allclose(got[i], conv(xs[i], ws[i], padding=1), rtol=1e-6)
    per_w = jax.vmap(lambda w: conv(xs[0], w, padding=1))(ws)
    np.testing.assert_allclose(per_w[1], conv(xs[0], ws[1], padding=1), rtol=1e-6)


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_vmap_folds_a_mapped_input_into_the_batch(fmt):
    """A mapped x (or dy) with a shared weight is one call with the mapped axis in N, in the
    forward pass and both gradients; per-example weight gradients loop and match lax."""
    rng = np.random.default_rng(12)
    xs = jnp.asarray(_rand(rng, (3, 2, 4, 6, 5) if fmt == "NCHW" else (3, 2, 6, 5, 4)))
    w = jnp.asarray(_rand(rng, (6, 4, 3, 3)))

    def loss(impl):
        return lambda x, w: jnp.sum(jconv.conv2d(x, w, impl=impl, padding=1, stride=(2, 1),
                                                 data_format=fmt) ** 2)

    fwd = jax.vmap(lambda x: conv(x, w, padding=1, stride=(2, 1), data_format=fmt))
    text = str(jax.make_jaxpr(fwd)(xs))
    assert text.count("onednn_conv_fwd") == 1 and "while" not in text
    dx = jax.vmap(jax.grad(loss("onednn")), in_axes=(0, None))
    text = str(jax.make_jaxpr(dx)(xs, w))
    assert "onednn_conv_bwd_data" in text and "while" not in text
    for got, want in zip(jax.vmap(jax.grad(loss("onednn"), argnums=(0, 1)),
                                  in_axes=(0, None))(xs, w),
                         jax.vmap(jax.grad(loss("lax"), argnums=(0, 1)),
                                  in_axes=(0, None))(xs, w)):
        assert _rel(got, want) < 1e-5
    assert jax.vmap(lambda x: conv(x, w, padding=1, data_format=fmt))(xs[:0]).shape[0] == 0


@pytest.mark.parametrize("in_axes", [(0, 0), (None, 0), (2, 1)])
def test_vmapped_gradients_over_any_axes_match_lax(in_axes):
    """Mapped weights and mapped axes other than the first: the sequential batching rule."""
    rng = np.random.default_rng(13)
    x = jnp.asarray(_rand(rng, (2, 4, 3, 6, 6) if in_axes[0] == 2 else (3, 2, 4, 6, 6)))
    w = jnp.asarray(_rand(rng, (5, 3, 4, 3, 3) if in_axes[1] == 1 else (3, 5, 4, 3, 3)))
    x = x[0] if in_axes[0] is None else x

    def grads(impl):
        return jax.vmap(jax.grad(_loss(impl, padding=1, stride=(1, 2)), argnums=(0, 1)),
                        in_axes=in_axes)(x, w)

    for got, want in zip(grads("onednn"), grads("lax")):
        assert _rel(got, want) < 1e-5


def test_unbatched_empty_batch_and_no_channels():
    x, w = jnp.ones((4, 6, 6)), jnp.ones((2, 4, 3, 3))
    np.testing.assert_allclose(conv(x, w), jnp.full((2, 4, 4), 36.0))
    assert conv(jnp.ones((0, 4, 6, 6)), w).shape == (0, 2, 4, 4)
    y, vjp = jax.vjp(conv, jnp.ones((2, 0, 6, 6)), jnp.ones((3, 0, 3, 3)))
    np.testing.assert_array_equal(y, np.zeros((2, 3, 4, 4)))
    assert [g.shape for g in vjp(y)] == [(2, 0, 6, 6), (3, 0, 3, 3)]


def test_conv_transpose2d_uses_the_backward_data_pass():
    rng = np.random.default_rng(7)
    x, w = jnp.asarray(_rand(rng, (2, 6, 5, 5))), jnp.asarray(_rand(rng, (6, 2, 3, 3)))
    kw = dict(stride=2, padding=1, output_padding=1, groups=2)
    np.testing.assert_allclose(jconv.conv_transpose2d(x, w, impl="onednn", **kw),
                               jconv.conv_transpose2d(x, w, precision="highest", **kw),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float16])
def test_other_dtypes_raise_naming_the_dtype(dtype, x64):
    x, w = jnp.ones((1, 2, 5, 5), dtype), jnp.ones((3, 2, 3, 3), dtype)
    name = jnp.dtype(dtype).name
    with pytest.raises(ValueError, match=rf"impl='onednn' supports dtypes \('float32', "
                                         rf"'bfloat16'\), got {name}"):
        conv(x, w)


def test_bfloat16_without_cpu_kernels_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_onednn, "_bf16_kernel", lambda: None)
    x, w = jnp.ones((1, 2, 5, 5), jnp.bfloat16), jnp.ones((3, 2, 3, 3), jnp.bfloat16)
    with pytest.raises(ValueError, match=r"impl='onednn' with bfloat16 needs a CPU with "
                                         r"bfloat16 kernels in oneDNN \(avx512_bf16 or AMX\)"):
        conv(x, w)
    assert conv(x.astype(jnp.float32), w.astype(jnp.float32)).dtype == jnp.float32


def test_missing_extension_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(_onednn, "_library_or_reason",
                        lambda: (None, "jconv's oneDNN extension (jconv/_onednn_ffi*.so) was "
                                       "not built"))
    with pytest.raises(RuntimeError, match=r"impl='onednn' is unavailable: jconv's oneDNN "
                                           r"extension \(jconv/_onednn_ffi\*\.so\) was not built"):
        conv(jnp.ones((1, 2, 5, 5)), jnp.ones((3, 2, 3, 3)))


def test_missing_extension_reason_names_the_file(monkeypatch):
    monkeypatch.setattr(_onednn.importlib.util, "find_spec", lambda name: None)
    lib, reason = _onednn._load()
    assert lib is None and "jconv/_onednn_ffi*.so) was not built" in reason


def test_bad_cache_capacity_and_activation():
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        _onednn.set_cache_capacity(0)
    with pytest.raises(ValueError, match=r"act must be None or one of \('relu', 'gelu'\), "
                                         r"got 'tanh'"):
        jconv.conv2d_bias_act(jnp.ones((1, 2, 5, 5)), jnp.ones((3, 2, 3, 3)), act="tanh",
                              impl="onednn")


def test_concurrent_calls_from_threads():
    """The cache's mutex and per-call scratchpads: many threads, several shapes at once."""
    rng = np.random.default_rng(8)
    w = jnp.asarray(_rand(rng, (8, 4, 3, 3)))
    xs = [jnp.asarray(_rand(rng, (2, 4, hw, hw))) for hw in (8, 9, 10, 11)]
    fns = [jax.jit(lambda x, w: conv(x, w, padding=1)) for _ in xs]
    want = [jconv.conv2d(x, w, padding=1, precision="highest") for x in xs]
    errors: list[str] = []

    def work(i: int) -> None:
        for _ in range(12):
            k = (i + _) % len(xs)
            got = fns[k](xs[k], w)
            if not np.allclose(got, want[k], rtol=1e-5, atol=1e-5):
                errors.append(f"thread {i} shape {k}")

    _onednn.clear_cache()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("act", [None, "relu", "gelu"])
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_fused_bias_act_matches_unfused_with_gradients(act, fmt):
    rng = np.random.default_rng(9)
    x = jnp.asarray(_rand(rng, (2, 4, 7, 6) if fmt == "NCHW" else (2, 7, 6, 4)))
    w, b = jnp.asarray(_rand(rng, (6, 2, 3, 3))), jnp.asarray(_rand(rng, (6,)))
    kw = dict(act=act, stride=(1, 2), padding=((2, 0), (1, 1)), groups=2, data_format=fmt)

    def loss(impl):
        return lambda x, w, b: jnp.sum(jconv.conv2d_bias_act(x, w, b, impl=impl, **kw) ** 2)

    def gog(impl):
        grads = jax.grad(loss(impl), argnums=(0, 1, 2))
        return jax.grad(lambda *a: sum(jnp.sum(g ** 2) for g in grads(*a)),
                        argnums=(0, 1, 2))(x, w, b)

    assert _rel(jconv.conv2d_bias_act(x, w, b, impl="onednn", **kw),
                jconv.conv2d_bias_act(x, w, b, impl="lax", **kw)) < 1e-5
    for got, want in zip(jax.grad(loss("onednn"), argnums=(0, 1, 2))(x, w, b),
                         jax.grad(loss("lax"), argnums=(0, 1, 2))(x, w, b)):
        assert _rel(got, want) < 1e-5
    for got, want in zip(gog("onednn"), gog("lax")):
        assert _rel(got, want) < 1e-5


@pytest.mark.parametrize("act", [None, "relu", "gelu"])
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_fused_bias_act_forward_mode_matches_lax(act, fmt):
    """jax.jvp in every argument and in each alone (the others' tangents symbolic zeros),
    and jvp of grad (forward-over-reverse) against impl="lax"."""
    rng = np.random.default_rng(11)
    x = jnp.asarray(_rand(rng, (2, 4, 7, 6) if fmt == "NCHW" else (2, 7, 6, 4)))
    w, b = jnp.asarray(_rand(rng, (6, 2, 3, 3))), jnp.asarray(_rand(rng, (6,)))
    tangents = [jnp.asarray(_rand(rng, a.shape)) for a in (x, w, b)]
    kw = dict(act=act, stride=(1, 2), padding=((2, 0), (1, 1)), groups=2, data_format=fmt)

    def fused(impl):
        return functools.partial(jconv.conv2d_bias_act, impl=impl, **kw)

    for which in ((0, 1, 2), (0,), (1,), (2,)):
        t = tuple(v if i in which else jnp.zeros_like(v) for i, v in enumerate(tangents))
        got = jax.jvp(fused("onednn"), (x, w, b), t)
        want = jax.jvp(fused("lax"), (x, w, b), t)
        for g, v in zip(got, want):
            assert _rel(g, v) < 1e-5, which

    def fwd_over_rev(impl):
        grad = jax.grad(lambda *a: jnp.sum(fused(impl)(*a) ** 2), argnums=(0, 1, 2))
        return jax.jvp(grad, (x, w, b), tuple(tangents))[1]

    # Second order through GELU: each float32 implementation is itself ~1e-5 (relative) from
    # a float64 oracle here, and oneDNN's GELU differs by CPU ISA, so 1e-5 between the two
    # would test rounding, not correctness.
    for got, want in zip(fwd_over_rev("onednn"), fwd_over_rev("lax")):
        assert _rel(got, want) < 5e-5


def test_fused_bias_act_jvp_in_x_alone_runs_no_weight_pass():
    """Symbolic-zero tangents skip their terms: jvp in x is the fused forward plus one
    forward on the tangent; grad in x adds one backward-data pass and no backward-weights."""
    x, w, b = jnp.ones((1, 2, 5, 5)), jnp.ones((3, 2, 3, 3)), jnp.ones(3)
    f = functools.partial(jconv.conv2d_bias_act, impl="onednn", act="relu")
    text = str(jax.make_jaxpr(lambda x, t: jax.jvp(lambda x: f(x, w, b), (x,), (t,)))(x, x))
    assert text.count("onednn_conv_fwd") == 1 and "onednn_conv_bwd" not in text
    text = str(jax.make_jaxpr(jax.grad(lambda x: f(x, w, b).sum()))(x))
    assert text.count("onednn_conv_bwd_data") == 1 and "onednn_conv_bwd_weights" not in text


def test_fused_bias_act_is_one_primitive_with_post_ops():
    lowered = jax.jit(lambda x, w, b: jconv.conv2d_bias_act(
        x, w, b, act="gelu", padding=1, data_format="NHWC", impl="onednn")).lower(
        jnp.ones((1, 5, 5, 2)), jnp.ones((3, 2, 3, 3)), jnp.ones(3))
    text = lowered.as_text()
    assert text.count("jconv_onednn_fwd") == 1 and "tanh" not in text


@pytest.mark.parametrize("platform_", ["cuda", "tpu"])
def test_exports_keep_lax_elsewhere_and_onednn_on_cpu(platform_):
    x, w = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32), jax.ShapeDtypeStruct(
        (6, 4, 3, 3), jnp.float32)
    fn = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w, padding=1, data_format="NHWC") ** 2),
                          argnums=(0, 1)))
    other = jax.export.export(fn, platforms=[platform_])(x, w).mlir_module()
    # For CPU the oneDNN custom calls are in the program; they carry no serialization
    # guarantee, so exporting for CPU needs them named as accepted.
    with pytest.raises(ValueError, match="custom calls whose targets have no compatibility"):
        jax.export.export(fn, platforms=["cpu"])(x, w)
    ok = [jax.export.DisabledSafetyCheck.custom_call(n) for n in _onednn._HANDLERS]
    cpu = jax.export.export(fn, platforms=["cpu"], disabled_checks=ok)(x, w).mlir_module()
    assert "jconv_onednn" not in other and "stablehlo.convolution" in other
    for name in ("jconv_onednn_fwd", "jconv_onednn_bwd_data", "jconv_onednn_bwd_weights"):
        assert name in cpu


def test_exports_for_cpu_and_cuda_at_once():
    """One program for both platforms lowers the CPU branch for cuda too."""
    x, w = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32), jax.ShapeDtypeStruct(
        (6, 4, 3, 3), jnp.float32)
    fn = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w, padding=1, data_format="NHWC") ** 2),
                          argnums=(0, 1)))
    ok = [jax.export.DisabledSafetyCheck.custom_call(n) for n in _onednn._HANDLERS]
    exp = jax.export.export(fn, platforms=["cpu", "cuda"], disabled_checks=ok)(x, w)
    text = exp.mlir_module()
    assert "jconv_onednn_bwd_data" in text and "stablehlo.convolution" in text
    got = exp.call(jnp.ones((2, 8, 8, 4)), jnp.ones((6, 4, 3, 3)))  # runs here, on CPU
    want = jax.grad(lambda x, w: jnp.sum(jconv.conv2d(x, w, padding=1, data_format="NHWC")
                                         ** 2), argnums=(0, 1))(jnp.ones((2, 8, 8, 4)),
                                                                jnp.ones((6, 4, 3, 3)))
    for g, v in zip(got, want):
        assert _rel(g, v) < 1e-5


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.slow  # ~15 s: 2,160 oneDNN calls over 60 shapes
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("capacity", [1024, 50])  # 50 < 180 primitives: evicted and rebuilt
def test_resident_memory_stays_flat_over_thousands_of_calls(capacity):
    """30 shapes x 2 layouts, forward + both gradients (180 primitives), 12 rounds."""
    shapes = [(n, c, hw) for n in (1, 2, 3) for c in (4, 8) for hw in (8, 9, 10, 11, 12)]
    fns = {fmt: jax.jit(jax.value_and_grad(
        lambda x, w, fmt=fmt: jnp.sum(conv(x, w, padding=1, data_format=fmt) ** 2),
        argnums=(0, 1))) for fmt in ("NCHW", "NHWC")}
    stats = _onednn.cache_stats()
    _onednn.set_cache_capacity(capacity)
    try:
        rss = []
        for _ in range(12):
            for n, c, hw in shapes:
                for fmt, fn in fns.items():
                    x = jnp.ones((n, c, hw, hw) if fmt == "NCHW" else (n, hw, hw, c))
                    jax.block_until_ready(fn(x, jnp.ones((c, c, 3, 3))))
            rss.append(_rss_mb())
    finally:
        _onednn.set_cache_capacity(stats["capacity"])
    print(f"capacity {capacity}: RSS after rounds 1, 2, 12: {rss[0]:.1f}, {rss[1]:.1f}, "
          f"{rss[-1]:.1f} MB")
    assert rss[-1] - rss[1] < 8.0, rss


def test_native_errors_come_back_as_exceptions():
    """Malformed calls that bypass conv2d's checks: the handler returns an FFI error, which
    JAX raises; the interpreter survives."""
    x, w = jnp.ones((1, 2, 5, 5)), jnp.ones((3, 2, 3, 3))
    out = jax.ShapeDtypeStruct((1, 3, 3, 3), jnp.float32)
    _onednn.library()  # registers the handlers
    attrs = _onednn.geometry(jconv.conv_spec(x.shape, w.shape)).attrs()
    call = jax.ffi.ffi_call("jconv_onednn_fwd", out)
    with pytest.raises(jax.errors.JaxRuntimeError, match="malformed operands or attributes"):
        call(x, w, jnp.zeros(0), **{**attrs, "stride": np.array([1, 1, 1], np.int64)},
             act=np.int64(0), has_bias=np.int64(0))
    with pytest.raises(jax.errors.JaxRuntimeError, match="float32 and bfloat16 only"):
        jax.ffi.ffi_call("jconv_onednn_fwd", jax.ShapeDtypeStruct((1, 3, 3, 3), jnp.float16))(
            x.astype(jnp.float16), w.astype(jnp.float16), jnp.zeros(0, jnp.float16), **attrs,
            act=np.int64(0), has_bias=np.int64(0))
    with pytest.raises(jax.errors.JaxRuntimeError, match="oneDNN"):  # output shape inconsistent with geometry
        jax.ffi.ffi_call("jconv_onednn_fwd", jax.ShapeDtypeStruct((1, 3, 4, 4), jnp.float32))(
            x, w, jnp.zeros(0), **attrs, act=np.int64(0), has_bias=np.int64(0))
    assert conv(x, w).shape == (1, 3, 3, 3)


def test_a_gpu_host_runs_xla_without_the_extension_or_its_dtype_limits(monkeypatch, x64):
    # On a GPU/TPU host impl="onednn" is XLA's convolution: float64 (which oneDNN lacks) works
    # and equals impl="lax"; the configs' default impl therefore never blocks a GPU run.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    x = jax.random.normal(jax.random.key(0), (2, 4, 9, 9), jnp.float64)
    w = jax.random.normal(jax.random.key(1), (6, 2, 3, 3), jnp.float64)
    got = jconv.conv2d(x, w, groups=2, padding=1, impl="onednn")
    np.testing.assert_array_equal(got, jconv.conv2d(x, w, groups=2, padding=1, impl="lax"))
