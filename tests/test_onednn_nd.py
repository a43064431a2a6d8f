"""impl="onednn" for 1-D and 3-D convolutions and conv_transpose1d/2d/3d (jconv/_onednn.py,
_onednn.cc): values and gradients against PyTorch (float32, rel 1e-5) and jconv.testing's
oracles, order-2 gradients, bfloat16, forward mode, vmap, the primitive cache over many
shapes, optimized kernels, errors and lowering elsewhere. The 2-D path is tests/test_onednn.py.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.test_util import check_grads

from helpers import onednn_dtypes

import jconv
from jconv import _onednn, testing
from jconv._spec import CONV_DATA_FORMATS, PADDING_MODES

pytestmark = pytest.mark.skipif(not _onednn.available(), reason="oneDNN extension not built")

CONV = {1: jconv.conv1d, 2: jconv.conv2d, 3: jconv.conv3d}
CONV_T = {1: jconv.conv_transpose1d, 2: jconv.conv_transpose2d, 3: jconv.conv_transpose3d}


def _rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def _bf16_or_skip(dtype: str) -> None:
    if dtype == "bfloat16" and _onednn._bf16_kernel() is None:
        pytest.skip("no bfloat16 kernels on this CPU")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("fmt", ["NCL", "NLC", "NCDHW", "NDHWC"])
@pytest.mark.parametrize("pass_", ["forward", "input_grad", "weight_grad"])
def test_optimized_kernels_not_the_reference_one(dtype, fmt, pass_):
    _bf16_or_skip(dtype)
    assert "ref" not in _onednn.probe(dtype, fmt, pass_, hw=8)


@pytest.mark.parametrize("ndim", [1, 3])
def test_check_conv_quick_float32_bfloat16(ndim, record_error):
    """jconv.testing's oracle, every padding mode of the quick grid, at its tolerances."""
    fn = functools.partial(CONV[ndim], impl="onednn")
    report = testing.check_conv(fn, ndim=ndim, cases="quick", dtypes=onednn_dtypes(),
                                check_grads_cases=0)
    for dtype in report.dtypes:
        record_error(f"conv{ndim}d", dtype, "onednn", report.worst(dtype, "forward"))
        record_error(f"conv{ndim}d-grad", dtype, "onednn", report.worst(dtype, "grad"))
    assert report.passed, str(report)


def _draw(rng: np.random.Generator, nd: int) -> dict:
    groups = int(rng.choice([1, 2, 3]))
    c_in, c_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    k = tuple(int(v) for v in rng.integers(1, 4, nd))
    d = tuple(int(v) for v in rng.integers(1, 3, nd))
    s = tuple(int(v) for v in rng.integers(1, 3, nd))
    p = tuple(int(v) for v in rng.integers(0, 3, nd))
    size = tuple(dd * (kk - 1) + 1 + pp + int(rng.integers(0, 4 if nd == 3 else 8))
                 for kk, dd, pp in zip(k, d, p))
    mode = str(rng.choice(PADDING_MODES))
    return dict(x=(int(rng.integers(1, 3)), c_in, *size), w=(c_out, c_in // groups, *k),
                kw=dict(stride=s, padding=p, dilation=d, groups=groups), mode=mode)


def _torch_conv(nd: int, cfg: dict, x, w, ct):
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    flat = [v for pp in reversed(cfg["kw"]["padding"]) for v in (pp, pp)]
    mode = "constant" if cfg["mode"] == "zeros" else cfg["mode"]
    kw = {k: v for k, v in cfg["kw"].items() if k != "padding"}
    y = getattr(F, f"conv{nd}d")(F.pad(xt, flat, mode=mode), wt, **kw)
    y.backward(torch.from_numpy(ct))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


@pytest.mark.parametrize("nd", [1, 3])
@pytest.mark.parametrize("seed", range(2))
def test_random_convs_match_pytorch_both_layouts(nd, seed):
    """Forward and both gradients against torch.nn.functional.conv{1,3}d (padding modes by
    F.pad first), channels first and channels last, over strides, dilations, groups."""
    rng = np.random.default_rng(10 * nd + seed)
    for _ in range(3):
        cfg = _draw(rng, nd)
        x = rng.standard_normal(cfg["x"]).astype(np.float32)
        w = rng.standard_normal(cfg["w"]).astype(np.float32)
        y_shape = jax.eval_shape(lambda a, b: CONV[nd](a, b, **cfg["kw"]), x, w).shape
        ct = rng.standard_normal(y_shape).astype(np.float32)
        want = _torch_conv(nd, cfg, x, w, ct)
        for last in (False, True):
            fmt = CONV_DATA_FORMATS[nd][last]
            to = (lambda a: jnp.moveaxis(a, 1, -1)) if last else jnp.asarray
            back = (lambda a: jnp.moveaxis(a, -1, 1)) if last else jnp.asarray
            y, vjp = jax.vjp(lambda a, b: CONV[nd](a, b, impl="onednn", data_format=fmt,
                                                   padding_mode=cfg["mode"], **cfg["kw"]),
                             to(x), jnp.asarray(w))
            dx, dw = vjp(to(ct))
            for got, ref in zip((back(y), back(dx), dw), want):
                assert _rel(got, ref) < 1e-5, (cfg, fmt)


def _draw_t(rng: np.random.Generator, nd: int) -> dict:
    groups = int(rng.choice([1, 2]))
    c_in, c_out_g = groups * int(rng.integers(1, 3)), int(rng.integers(1, 3))
    s = tuple(int(v) for v in rng.integers(1, 4, nd))
    d = tuple(int(v) for v in rng.integers(1, 3, nd))
    return dict(x=(int(rng.integers(1, 3)), c_in, *rng.integers(2, 5, nd)),
                w=(c_in, c_out_g, *rng.integers(1, 4, nd)),
                kw=dict(stride=s, padding=tuple(int(v) for v in rng.integers(0, 2, nd)),
                        output_padding=tuple(int(rng.integers(0, max(a, b)))
                                             for a, b in zip(s, d)),
                        groups=groups, dilation=d))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_transposed_convs_match_pytorch_and_the_oracle(nd, x64):
    """conv_transpose{1,2,3}d, bias included, values and every gradient, both layouts."""
    rng = np.random.default_rng(nd)
    for _ in range(2):
        cfg = _draw_t(rng, nd)
        x, w = (rng.standard_normal(cfg[k]).astype(np.float32) for k in ("x", "w"))
        b = rng.standard_normal(cfg["w"][1] * cfg["kw"]["groups"]).astype(np.float32)
        tensors = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
        y_t = getattr(F, f"conv_transpose{nd}d")(*tensors, **cfg["kw"])
        ct = rng.standard_normal(tuple(y_t.shape)).astype(np.float32)
        y_t.backward(torch.from_numpy(ct))
        oracle = testing.reference_conv_transposend(x, w, b, **cfg["kw"])
        assert _rel(oracle, y_t.detach().numpy()) < 1e-6
        want = [y_t.detach().numpy()] + [t.grad.numpy() for t in tensors]
        for last in (False, True):
            fmt = CONV_DATA_FORMATS[nd][last]
            to = (lambda a: jnp.moveaxis(a, 1, -1)) if last else jnp.asarray
            back = (lambda a: jnp.moveaxis(a, -1, 1)) if last else jnp.asarray
            f = lambda a, v, c: CONV_T[nd](a, v, c, impl="onednn", data_format=fmt,  # noqa: E731
                                           **cfg["kw"])
            y, vjp = jax.vjp(f, to(x), jnp.asarray(w), jnp.asarray(b))
            dx, dw, db = vjp(to(ct))
            for got, ref in zip((back(y), back(dx), dw, db), want):
                assert _rel(got, ref) < 1e-5, (cfg, fmt)


def test_transposed_conv_is_the_backward_data_primitive():
    x, w = jnp.ones((1, 4, 5, 5, 5)), jnp.ones((4, 2, 3, 3, 3))
    text = jax.jit(lambda x: jconv.conv_transpose3d(x, w, stride=2, impl="onednn")).lower(
        x).as_text()  # for CPU: platform_dependent's oneDNN branch only
    assert text.count("jconv_onednn_bwd_data") == 1 and "jconv_onednn_fwd" not in text
    assert "stablehlo.convolution" not in text


@pytest.mark.parametrize("nd,fmt,outer", [(1, "NLC", jnp.sin), (3, "NCDHW", None),
                                          (3, "NDHWC", None)])
def test_check_grads_order_2(nd, fmt, outer):
    """jax.test_util.check_grads, order 2, forward and reverse mode, in float32 (oneDNN has no
    float64): a tiny dilated, grouped case, reflect padding. Float32 finite differences are
    noisy: the 3-D cases check the bilinear conv itself (central differences are exact for
    it up to rounding), where sin's curvature over 3-D sums fails impl="lax" alike."""
    rng = np.random.default_rng(nd)
    c_axis = 1 if fmt[1] == "C" else -1
    x = jnp.moveaxis(jnp.asarray(rng.standard_normal((1, 4, *(7, 4, 4)[:nd])), jnp.float32),
                     1, c_axis)
    w = jnp.asarray(rng.standard_normal((4, 2, *(3, 2, 2)[:nd])), jnp.float32)

    @jax.jit
    def f(x, w):
        y = CONV[nd](x, w, impl="onednn", data_format=fmt, padding=1, padding_mode="reflect",
                     dilation=(2, 1, 1)[:nd], groups=2)
        return y if outer is None else outer(y)

    check_grads(f, (x, w), order=2, modes=("fwd", "rev"), eps=0.03, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("nd", [1, 3])
def test_grad_of_grad_and_forward_mode_match_lax(nd):
    rng = np.random.default_rng(20 + nd)
    fmt = CONV_DATA_FORMATS[nd][1]
    x = jnp.asarray(rng.standard_normal((2, *(6,) * nd, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((6, 2, *(3,) * nd)), jnp.float32)
    tx, tw = (jnp.asarray(rng.standard_normal(a.shape), jnp.float32) for a in (x, w))
    kw = dict(stride=2, padding=1, groups=2, data_format=fmt)

    def gog(impl):
        grads = jax.grad(lambda x, w: jnp.sum(CONV[nd](x, w, impl=impl, **kw) ** 2), (0, 1))
        return jax.grad(lambda x, w: sum(jnp.sum(g ** 2) for g in grads(x, w)), (0, 1))(x, w)

    for got, want in zip(gog("onednn"), gog("lax")):
        assert _rel(got, want) < 1e-5
    jvp = {i: jax.jvp(lambda x, w: CONV[nd](x, w, impl=i, **kw), (x, w), (tx, tw))
           for i in ("onednn", "lax")}
    for got, want in zip(jvp["onednn"], jvp["lax"]):
        assert _rel(got, want) < 1e-5


@pytest.mark.parametrize("dtype", ["bfloat16"])
@pytest.mark.parametrize("nd", [1, 3])
def test_bfloat16_transposed_within_testing_tolerances(nd, dtype):
    """bfloat16 in, bfloat16 out, within jconv.testing's bfloat16 tolerance of the float64
    oracle (the quick grid covers the forward conv's bfloat16)."""
    _bf16_or_skip(dtype)
    rng = np.random.default_rng(nd)
    x, w = rng.standard_normal((2, 4, *(5,) * nd)), rng.standard_normal((4, 3, *(3,) * nd))
    y = CONV_T[nd](jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16), stride=2,
                   padding=1, impl="onednn")
    assert y.dtype == jnp.bfloat16
    xr, wr = (np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64) for a in (x, w))
    want = testing.reference_conv_transposend(xr, wr, None, stride=2, padding=1)
    rtol, atol = testing.DEFAULT_TOLERANCES[dtype]
    np.testing.assert_allclose(np.asarray(y, np.float64), want, rtol=rtol, atol=atol * 4)


@pytest.mark.parametrize("nd", [1, 3])
def test_vmap_folds_a_mapped_input_into_the_batch(nd):
    rng = np.random.default_rng(30 + nd)
    xs = jnp.asarray(rng.standard_normal((3, 2, 4, *(5,) * nd)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((6, 4, *(3,) * nd)), jnp.float32)
    conv = functools.partial(CONV[nd], padding=1)
    fwd = jax.vmap(lambda x: conv(x, w, impl="onednn"))
    text = str(jax.make_jaxpr(fwd)(xs))
    assert text.count("onednn_conv_fwd") == 1 and "while" not in text

    def grads(impl):
        return jax.vmap(jax.grad(lambda x, w: jnp.sum(conv(x, w, impl=impl) ** 2), (0, 1)),
                        in_axes=(0, None))(xs, w)

    for got, want in zip(grads("onednn"), grads("lax")):
        assert _rel(got, want) < 1e-5
    per_w = jax.vmap(lambda v: conv(xs[0], v, impl="onednn"))(jnp.stack([w, 2 * w]))
    assert _rel(per_w[1], conv(xs[0], 2 * w, impl="lax")) < 1e-5


def test_primitive_cache_stays_bounded_over_many_shapes():
    """1-D, 2-D and 3-D shapes, forward + both gradients, through a small cache: it never
    holds more than its capacity, a repeated shape hits, and results stay right."""
    stats = _onednn.cache_stats()
    rng = np.random.default_rng(5)
    shapes = [(nd, hw) for nd in (1, 2, 3) for hw in (5, 6, 7)]
    try:
        _onednn.set_cache_capacity(8)
        for rounds in range(2):
            for nd, hw in shapes:
                x = jnp.asarray(rng.standard_normal((1, 2, *(hw,) * nd)), jnp.float32)
                w = jnp.asarray(rng.standard_normal((3, 2, *(3,) * nd)), jnp.float32)
                f = lambda x, w, impl: jnp.sum(CONV[nd](x, w, impl=impl) ** 2)  # noqa: E731
                got = jax.value_and_grad(f, (0, 1))(x, w, "onednn")
                if rounds:  # the second round rebuilds evicted primitives: still right
                    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(
                            jax.value_and_grad(f, (0, 1))(x, w, "lax"))):
                        assert _rel(g, r) < 1e-5
                assert _onednn.cache_stats()["size"] <= 8
        before = _onednn.cache_stats()
        x = jnp.ones((1, 2, 7, 7, 7))
        CONV[3](x, jnp.ones((3, 2, 3, 3, 3)), impl="onednn").block_until_ready()
        after = _onednn.cache_stats()
        assert after["hits"] == before["hits"] + 1 and after["misses"] == before["misses"]
    finally:
        _onednn.set_cache_capacity(stats["capacity"])


@pytest.mark.parametrize("fn,shape", [(jconv.conv1d, (1, 2, 5)), (jconv.conv3d, (1, 2, 4, 4, 4)),
                                      (jconv.conv_transpose1d, (1, 2, 5))])
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float16])
def test_other_dtypes_raise_naming_the_dtype(fn, shape, dtype, x64):
    x = jnp.ones(shape, dtype)
    w = jnp.ones((2, 2, *(3,) * (len(shape) - 2)), dtype)
    with pytest.raises(ValueError, match=rf"impl='onednn' supports dtypes \('float32', "
                                         rf"'bfloat16'\), got {jnp.dtype(dtype).name}"):
        fn(x, w, impl="onednn")


def test_unbatched_and_empty_inputs():
    w = jnp.ones((2, 4, 3))
    np.testing.assert_allclose(jconv.conv1d(jnp.ones((4, 6)), w, impl="onednn"),
                               jnp.full((2, 4), 12.0))
    assert jconv.conv3d(jnp.ones((0, 4, 5, 5, 5)), jnp.ones((2, 4, 3, 3, 3)),
                        impl="onednn").shape == (0, 2, 3, 3, 3)
    y = jconv.conv1d(jnp.ones((2, 0, 6)), jnp.ones((3, 0, 3)), impl="onednn")
    np.testing.assert_array_equal(y, np.zeros((2, 3, 4)))


def test_auto_measures_onednn_for_1d_and_3d_on_cpu():
    from jconv import _auto

    for ndim in (1, 3):
        assert "onednn" in _auto.candidates("cpu", jnp.float32, ndim)
        assert "onednn" not in _auto.candidates("cpu", jnp.float64, ndim)
        assert "onednn" not in _auto.candidates("gpu", jnp.float32, ndim)


@pytest.mark.parametrize("platform_", ["cuda", "tpu"])
def test_3d_exports_keep_lax_elsewhere(platform_):
    x = jax.ShapeDtypeStruct((1, 5, 5, 5, 4), jnp.float32)
    w = jax.ShapeDtypeStruct((4, 4, 3, 3, 3), jnp.float32)
    fn = jax.jit(jax.grad(lambda x, w: jnp.sum(jconv.conv3d(
        x, w, padding=1, data_format="NDHWC", impl="onednn") ** 2), argnums=(0, 1)))
    text = jax.export.export(fn, platforms=[platform_])(x, w).mlir_module()
    assert "jconv_onednn" not in text and "stablehlo.convolution" in text


def test_native_rank_mismatch_is_an_error_not_a_crash():
    """A 1-D activation with a 2-D weight (bypassing conv1d's checks) is rejected natively."""
    _onednn.library()
    x, w = jnp.ones((1, 2, 5)), jnp.ones((3, 2, 3, 3))
    attrs = _onednn.geometry(jconv.conv_spec(x.shape, (3, 2, 3), data_format="NCL")).attrs()
    call = jax.ffi.ffi_call("jconv_onednn_fwd", jax.ShapeDtypeStruct((1, 3, 3), jnp.float32))
    with pytest.raises(jax.errors.JaxRuntimeError, match="malformed operands or attributes"):
        call(x, w, jnp.zeros(0), **attrs, act=np.int64(0), has_bias=np.int64(0))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_depthwise_3d_channels_first_is_right_through_its_channels_last_kernel(dtype):
    """oneDNN's choice for a channels-first depthwise 3-D conv is im2col+GEMM; jconv reorders
    it to ndhwc for the direct kernel instead: values and both gradients stay lax's."""
    _bf16_or_skip(dtype)
    rng = np.random.default_rng(40)
    x = jnp.asarray(rng.standard_normal((2, 8, 5, 6, 7)), dtype)
    w = jnp.asarray(rng.standard_normal((16, 1, 3, 3, 3)), dtype)
    ct = jnp.asarray(rng.standard_normal((2, 16, 2, 6, 7)), dtype)

    def run(impl):
        y, vjp = jax.vjp(lambda x, w: jconv.conv3d(x, w, stride=(2, 1, 1), padding=(0, 1, 1),
                                                   groups=8, impl=impl), x, w)
        return (y, *vjp(ct))

    tol = 1e-5 if dtype == "float32" else testing.DEFAULT_TOLERANCES[dtype][0]
    for got, want in zip(run("onednn"), run("lax")):
        assert _rel(got, want) < tol


@pytest.mark.parametrize("fmt", ["NCL", "NLC"])
def test_depthwise_1d_gets_a_direct_kernel_not_im2col_gemm(fmt):
    """1-D convolutions run as 2-D ones of unit height (lift_1d in _onednn.cc): oneDNN's 1-D
    depthwise convolution is im2col+GEMM, its 2-D one a direct kernel (``jit_dw``)."""
    code = (
        "import jax, jax.numpy as jnp, jconv\n"
        f"x = jnp.ones((2, 16, 64) if {fmt!r} == 'NCL' else (2, 64, 16))\n"
        "w = jnp.ones((16, 1, 3))\n"
        f"f = lambda x, w: jconv.conv1d(x, w, padding=1, groups=16, impl='onednn',"
        f" data_format={fmt!r}).sum()\n"
        "jax.block_until_ready(jax.grad(f, argnums=(0, 1))(x, w))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "ONEDNN_VERBOSE": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    convs = [ln for ln in out.stdout.splitlines() if ",exec," in ln and ",convolution," in ln]
    assert len(convs) >= 3, out.stdout[-2000:]
    assert not [ln for ln in convs if "gemm" in ln or ":ref" in ln], "\n".join(convs)
