"""impl="pallas": the kernels in interpret mode (CPU) against the float64 NumPy oracle and
``lax``, under jit/vmap/grad/grad-of-grad, both tile rules; the fused bias+activation
epilogue; and lowering for CUDA (Triton) and TPU (Mosaic) through ``jax.export``."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.export import DisabledSafetyCheck

import jconv
from jconv import _pallas
from jconv._spec import canonical_conv
from jconv.testing import reference_conv2d

# Small shapes: interpret mode runs the grid as a loop of XLA ops and compiling it dominates.
# Each case names the tile rule its kernels use in interpret mode, so both the Triton (GPU)
# and the Mosaic (TPU) block layouts are exercised on CPU.
CASES = [
    dict(stride=1, padding=1, dilation=1, groups=1, data_format="NCHW", rule="triton"),
    dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=1, data_format="NHWC",
         rule="tpu"),
    dict(stride=2, padding="valid", dilation=1, groups=4, data_format="NCHW", rule="triton"),
    dict(stride=1, padding="same", dilation=2, groups=4, data_format="NHWC", rule="tpu"),
]


def _ids(case):
    return "-".join(str(v) for v in case.values()).replace(" ", "")


def _args(case, dtype, c_out=6, key=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(key))
    shape = (2, 4, 7, 6) if case["data_format"] == "NCHW" else (2, 7, 6, 4)
    x = jax.random.normal(k1, shape, jnp.float32).astype(dtype)
    # Depthwise cases use a channel multiplier of 2 (C_out = 2 * C_in).
    c_out = 8 if case["groups"] > 1 else c_out
    w = jax.random.normal(k2, (c_out, 4 // case["groups"], 3, 2), jnp.float32).astype(dtype)
    return x, w


def _pallas_fn(case, act=None):
    """conv with the case's arguments, routed through the tile rule the case names."""
    kwargs = {k: v for k, v in case.items() if k != "rule"}

    def f(x, w, b=None):
        spec, unbatched = canonical_conv(x, w, b, precision=None, **kwargs)
        y = _pallas.conv_pallas_bias_act(x[None] if unbatched else x, w, b, spec, act,
                                         rule=case["rule"])
        return y[0] if unbatched else y
    return f


def _lax_fn(case):
    kwargs = {k: v for k, v in case.items() if k != "rule"}
    return functools.partial(jconv.conv2d, impl="lax", **kwargs)


def _nchw(y, case):
    return np.asarray(y, np.float64) if case["data_format"] == "NCHW" else \
        np.asarray(y, np.float64).transpose(0, 3, 1, 2)


def _oracle(x, w, case):
    xn = _nchw(x, case)
    spec, _ = canonical_conv(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), None,
                             precision=None, **{k: v for k, v in case.items() if k != "rule"})
    return reference_conv2d(xn, np.asarray(w, np.float64), None, stride=spec.stride,
                            padding=spec.padding, dilation=spec.dilation, groups=case["groups"])


def _fwd_and_vjp(f, x, w, ct_key=5):
    """(y, dx, dw) of ``f`` at (x, w) for a random cotangent, in one compiled call."""
    @jax.jit
    def run(x, w):
        y, pullback = jax.vjp(f, x, w)
        ct = jax.random.normal(jax.random.PRNGKey(ct_key), y.shape, jnp.float32)
        return (y, *pullback(ct.astype(y.dtype)))
    return run(x, w)


# CASES[0]'s geometry runs in test_fused_bias_act_matches_unfused (with a bias and an
# activation) and test_public_impl_unbatched_and_vmap; not repeated here to save CI time.
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES[1:], ids=_ids)
def test_forward_and_vjp_float32(case, record_error):
    x, w = _args(case, jnp.float32)
    y, dx, dw = _fwd_and_vjp(_pallas_fn(case), x, w)
    assert y.dtype == jnp.float32
    assert record_error("fwd", "float32", "pallas", _nchw(y, case), _oracle(x, w, case)) < 1e-5
    _, rx, rw = _fwd_and_vjp(_lax_fn(case), x, w)
    assert record_error("grad_x", "float32", "pallas", dx, rx) < 1e-5
    assert record_error("grad_w", "float32", "pallas", dw, rw) < 1e-5


@pytest.mark.slow
def test_several_channel_blocks(record_error):
    # The other cases fit one channel block; here the Triton rule splits C_in=80 into two
    # 64-blocks (the in-kernel fori_loop) and C_out=130 into two 128-blocks (grid axis), and
    # the weight-gradient grid has 2 x 4 channel blocks. A 2x2 kernel keeps the unrolled
    # tap loop, and so the interpret-mode compile, short.
    case = dict(stride=1, padding=1, dilation=1, groups=1, data_format="NCHW", rule="triton")
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 80, 3, 4))
    w = jax.random.normal(jax.random.PRNGKey(1), (130, 80, 2, 2))
    got, want = _fwd_and_vjp(_pallas_fn(case), x, w), _fwd_and_vjp(_lax_fn(case), x, w)
    for g, r, name in zip(got, want, ("fwd", "grad_x", "grad_w")):
        assert record_error(name, "float32", "pallas-blocks", g, r) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_accumulates_in_float32(dtype, record_error):
    case = CASES[1]
    x, w = _args(case, jnp.dtype(dtype))
    y, dx, dw = _fwd_and_vjp(_pallas_fn(case), x, w)
    assert y.dtype == dx.dtype == dw.dtype == jnp.dtype(dtype)
    # The oracle sees the rounded inputs; the result may differ by one final rounding
    # (bf16 eps 2^-8 ~ 3.9e-3 relative) plus accumulation order.
    tol = 2e-2 if dtype == "bfloat16" else 3e-3
    assert record_error("fwd", dtype, "pallas", _nchw(y, case), _oracle(x, w, case)) < tol
    _, rx, rw = _fwd_and_vjp(_lax_fn(case), x.astype(jnp.float32), w.astype(jnp.float32))
    assert record_error("grad_x", dtype, "pallas", dx, rx) < tol
    assert record_error("grad_w", dtype, "pallas", dw, rw) < tol


@pytest.mark.slow
def test_public_impl_unbatched_and_vmap():
    x, w = _args(CASES[0], jnp.float32)
    b = jnp.arange(6.0)
    conv = functools.partial(jconv.conv2d, padding=1)
    y = jax.jit(functools.partial(conv, impl="pallas"))(x[0], w, b)
    np.testing.assert_allclose(y, conv(x[0], w, b, impl="lax"), atol=1e-5, rtol=1e-5)
    # vmap over an extra leading axis: pallas_call's batching rule adds a grid axis.
    xs = jnp.stack([x, 2.0 * x])
    ys = jax.jit(jax.vmap(functools.partial(conv, weight=w, impl="pallas")))(xs)
    np.testing.assert_allclose(ys, jax.vmap(functools.partial(conv, weight=w))(xs), atol=2e-5,
                               rtol=1e-5)


def _second_order(f, x, w):
    """Reverse-over-reverse: the VJP of (dx, dw) = grad of <f(x, w), ct>, in one jit."""
    @jax.jit
    def run(x, w):
        ct = jax.random.normal(jax.random.PRNGKey(1), jax.eval_shape(f, x, w).shape)
        grads = jax.grad(lambda x, w: jnp.vdot(f(x, w), ct), argnums=(0, 1))
        (gx, gw), pullback = jax.vjp(grads, x, w)
        keys = jax.random.split(jax.random.PRNGKey(2))
        return pullback((jax.random.normal(keys[0], gx.shape),
                         jax.random.normal(keys[1], gw.shape)))
    return run(x, w)


@pytest.mark.slow
@pytest.mark.parametrize("case", [CASES[1]], ids=_ids)
def test_grad_of_grad_matches_lax(case, record_error):
    # Second order runs only Pallas kernels: the weight-gradient kernel's own VJP is an
    # input-gradient conv and a forward conv. Forward mode is not available (custom_vjp).
    x, w = _args(case, jnp.float32)
    got = _second_order(_pallas_fn(case), x[:1], w)
    want = _second_order(_lax_fn(case), x[:1], w)
    for g, r, name in zip(got, want, ("x", "w")):
        assert record_error(f"grad2_{name}", "float32", "pallas", g, r) < 1e-5


def test_forward_mode_is_not_supported():
    x, w = _args(CASES[0], jnp.float32)
    conv = functools.partial(jconv.conv2d, impl="pallas")
    with pytest.raises(TypeError, match="custom_vjp"):
        # Under jit the error comes at trace time, before any kernel is compiled.
        jax.jit(lambda x, w: jax.jvp(conv, (x, w), (x, w)))(x, w)


def test_unsupported_groups_and_act_raise():
    x = jnp.ones((1, 4, 5, 5))
    with pytest.raises(ValueError, match=r"groups=1 and depthwise groups=C_in=4, got groups=2"):
        jconv.conv2d(x, jnp.ones((4, 2, 3, 3)), groups=2, impl="pallas")
    with pytest.raises(ValueError, match=r"act must be None or one of \('relu', 'gelu'\), "
                                         r"got 'tanh'"):
        jconv.conv2d_bias_act(x, jnp.ones((4, 4, 3, 3)), act="tanh")
    with pytest.raises(ValueError, match="rule must be one of"):
        _pallas.tile_rule("mosaic_gpu", 64, 4, 4, False)


@pytest.mark.parametrize("rule", _pallas.RULES)
@pytest.mark.parametrize("depthwise", [False, True])
def test_tile_rule_respects_backend_constraints(rule, depthwise):
    for m, c_in, c_out in [(3, 3, 16), (56 * 58, 64, 64), (7 * 9, 512, 512), (900, 200, 130),
                           (16 * 18, 3, 1000)]:
        c_out = c_in if depthwise else c_out
        t = _pallas.tile_rule(rule, m, c_in, c_out, depthwise)
        assert t.c_in >= c_in and t.c_out >= c_out
        assert t.c_in % t.tk == 0 and t.c_out % t.tn == 0
        if rule == "triton":
            # Loaded tiles must have power-of-2 sizes; tl.dot needs every dim >= 16.
            for v in (t.tm, t.tn, t.tk):
                assert v & (v - 1) == 0
            assert min(t.tm, t.tn if depthwise else min(t.tn, t.tk)) >= (1 if depthwise else 16)
        else:
            # Mosaic: the minor block dims are multiples of (8, 128) or the whole axis.
            assert t.tm % 8 == 0
            for blk, full in ((t.tn, t.c_out), (t.tk, t.c_in)):
                assert blk % 128 == 0 or blk == full
            assert t.tm * t.tn <= 128 * 1024


@pytest.mark.slow
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_fused_bias_act_matches_unfused(act, record_error):
    x, w = _args(CASES[0], jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(7), (6,))

    def fwd_vjp(impl):
        @jax.jit
        def run(x, w, b):
            f = functools.partial(jconv.conv2d_bias_act, act=act, padding=1, impl=impl)
            y, pullback = jax.vjp(f, x, w, b)
            return (y, *pullback(jax.random.normal(jax.random.PRNGKey(8), y.shape)))
        return run(x, w, b)

    got, want = fwd_vjp("pallas"), fwd_vjp("lax")
    if act == "relu":
        assert float(got[0].min()) == 0.0
    for g, r, name in zip(got, want, ("fwd", "grad_x", "grad_w", "grad_b")):
        assert record_error(name, "float32", f"fused-{act}", g, r) < 1e-5


def test_fused_bias_act_bfloat16_depthwise_nhwc_unbatched():
    case = CASES[3]
    x, w = _args(case, jnp.bfloat16)
    x = x[0]
    b = jnp.linspace(-1, 1, 8).astype(jnp.bfloat16)
    kwargs = dict(act="relu", padding="same", dilation=2, groups=4, data_format="NHWC")
    y = jax.jit(functools.partial(jconv.conv2d_bias_act, **kwargs))(x, w, b)
    want = jconv.conv2d_bias_act(x.astype(jnp.float32), w.astype(jnp.float32),
                                 b.astype(jnp.float32), impl="lax", **kwargs)
    assert y.dtype == jnp.bfloat16 and y.shape == want.shape == (7, 6, 8)
    np.testing.assert_allclose(np.asarray(y, np.float32), want, atol=3e-2, rtol=1e-2)


# --- lowering for accelerators (no accelerator needed) -----------------------------------------

# (name, batch, C_in, C_out, H=W, kernel, stride, padding)
LAYERS = [
    ("cifar-32@32", 128, 32, 32, 32, 3, 1, 1),
    ("cifar-64@16", 128, 64, 64, 16, 3, 1, 1),
    ("resnet-64@56", 8, 64, 64, 56, 3, 1, 1),
    ("resnet-128@28", 8, 128, 128, 28, 3, 1, 1),
    ("resnet-256@14", 8, 256, 256, 14, 3, 1, 1),
    ("resnet-512@7", 8, 512, 512, 7, 3, 1, 1),
    ("resnet-64->128@56/2", 8, 64, 128, 56, 3, 2, 1),
]
KERNEL_CALLS = {"cuda": "__gpu$xla.gpu.triton", "tpu": "tpu_custom_call"}


def export_stablehlo(fn, args, platform: str) -> str:
    """StableHLO text of ``jax.jit(fn)`` exported for ``platform``. Triton custom calls carry
    no serialization-compatibility guarantee, so export must be told to allow them."""
    exp = jax.export.export(jax.jit(fn), platforms=[platform], disabled_checks=[
        DisabledSafetyCheck.custom_call(KERNEL_CALLS["cuda"])])(*args)
    return exp.mlir_module()


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("layer", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_lowers_for_accelerators(layer, platform):
    _, n, c_in, c_out, hw, k, s, p = layer
    conv = functools.partial(jconv.conv2d, stride=s, padding=p, impl="pallas")

    def fwd_and_grads(x, w):
        y, pullback = jax.vjp(conv, x, w)
        return y, pullback(jnp.ones_like(y))

    for dtype in (jnp.float32, jnp.bfloat16):
        args = (jax.ShapeDtypeStruct((n, c_in, hw, hw), dtype),
                jax.ShapeDtypeStruct((c_out, c_in, k, k), dtype))
        text = export_stablehlo(fwd_and_grads, args, platform)
        # The forward, input-gradient and weight-gradient kernels; no XLA convolution.
        assert len(re.findall(r"custom_call @" + re.escape(KERNEL_CALLS[platform]), text)) == 3
        assert "stablehlo.convolution" not in text
        # The calls carry the kernels' names (pallas_call(name=...)).
        assert "jconv_conv_fwd" in text and "jconv_conv_wgrad" in text


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_fused_epilogue_and_depthwise_lower(platform):
    x = jax.ShapeDtypeStruct((8, 64, 56, 56), jnp.bfloat16)
    w = jax.ShapeDtypeStruct((64, 64, 3, 3), jnp.bfloat16)
    b = jax.ShapeDtypeStruct((64,), jnp.bfloat16)
    fused = functools.partial(jconv.conv2d_bias_act, act="gelu", padding=1)
    text = export_stablehlo(jax.grad(lambda x, w, b: fused(x, w, b).astype(jnp.float32).sum(),
                                     argnums=(0, 1, 2)), (x, w, b), platform)
    # The GELU forward (saving its pre-activation) plus the two backward kernels.
    assert len(re.findall(r"custom_call @" + re.escape(KERNEL_CALLS[platform]), text)) == 3
    dw_w = jax.ShapeDtypeStruct((64, 1, 3, 3), jnp.bfloat16)
    depthwise = functools.partial(jconv.conv2d, padding=1, groups=64, impl="pallas")
    text = export_stablehlo(jax.grad(lambda x, w: depthwise(x, w).astype(jnp.float32).sum(),
                                     argnums=(0, 1)), (x, dw_w), platform)
    assert len(re.findall(r"custom_call @" + re.escape(KERNEL_CALLS[platform]), text)) == 2
