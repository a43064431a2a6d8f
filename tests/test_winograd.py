"""impl="winograd_f4x4" (F(4x4,3x3)) and impl="winograd_f2x2" (F(2x2,3x3)): forward agreement with
lax.conv_general_dilated, float64 gradient checks, float32 VJPs, dtype error bounds, errors."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

from helpers import assert_close_global, normal

import jconv
from jconv._winograd import winograd_matrices
from jconv.bench.winograd_error import error_table

WINOGRAD = ("winograd_f4x4", "winograd_f2x2")


def _lax_ref(x, w, b, pads, groups, data_format):
    """Straight lax.conv_general_dilated, independent of jconv's own dispatch."""
    y = lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=(data_format, "OIHW",
                                                                        data_format),
                                 feature_group_count=groups, precision="highest")
    if b is not None:
        y = y + (b[:, None, None] if data_format == "NCHW" else b)
    return y


@pytest.mark.parametrize("tile", [2, 4])
def test_transform_matrices_give_1d_correlation(tile):
    """A^T [(G g) * (B^T d)] must equal the valid correlation of d with g, in exact float64."""
    bt, g_mat, at = winograd_matrices(tile)
    rng = np.random.default_rng(tile)
    d, g = rng.normal(size=tile + 2), rng.normal(size=3)
    want = np.array([d[i:i + 3] @ g for i in range(tile)])
    np.testing.assert_allclose(at @ ((g_mat @ g) * (bt @ d)), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", WINOGRAD)
@pytest.mark.parametrize("padding,pads,groups,bias", [
    (0, ((0, 0), (0, 0)), 1, True), ((2, 1), ((2, 2), (1, 1)), 4, False),
    (((2, 0), (1, 3)), ((2, 0), (1, 3)), 2, True), ("same", ((1, 1), (1, 1)), 1, False)])
def test_forward_matches_lax_nchw(impl, padding, pads, groups, bias):
    # Odd sizes: neither output dim is a multiple of the tile, so padding + cropping is exercised.
    x, w, b = normal(groups, (2, 4, 9, 7), (8, 4 // groups, 3, 3), (8,))
    b = b if bias else None
    got = jconv.conv2d(x, w, b, padding=padding, groups=groups, impl=impl)
    want = _lax_ref(x, w, b, pads, groups, "NCHW")
    assert got.shape == want.shape and got.dtype == jnp.float32
    assert_close_global(got, want)


@pytest.mark.parametrize("impl", WINOGRAD)
def test_forward_nhwc_and_unbatched(impl):
    x, w = normal(1, (3, 10, 6, 4), (6, 2, 3, 3))
    got = jconv.conv2d(x, w, padding=1, groups=2, impl=impl, data_format="NHWC")
    assert_close_global(got, _lax_ref(x, w, None, ((1, 1), (1, 1)), 2, "NHWC"))
    x1 = jnp.transpose(x[0], (2, 0, 1))  # unbatched NCHW (C, H, W)
    got1 = jconv.conv2d(x1, w, padding=1, groups=2, impl=impl)
    assert_close_global(got1, jconv.conv2d(x1, w, padding=1, groups=2))
    assert got1.shape == (6, 10, 6)


@pytest.mark.parametrize("impl", WINOGRAD)
def test_float64_exact_and_gradients(impl):
    with jax.enable_x64(True):
        x, w, b = normal(2, (1, 2, 5, 6), (2, 1, 3, 3), (2,), dtype=jnp.float64)
        f = lambda x, w, b: jconv.conv2d(x, w, b, padding=1, groups=2, impl=impl)  # noqa: E731
        np.testing.assert_allclose(f(x, w, b), _lax_ref(x, w, b, ((1, 1), (1, 1)), 2, "NCHW"),
                                   rtol=1e-12, atol=1e-12)
        check_grads(f, (x, w, b), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("impl", WINOGRAD)
def test_float32_vjp_matches_lax(impl):
    x, w, ct = normal(3, (2, 4, 7, 9), (6, 2, 3, 3), (2, 6, 7, 9))

    @partial(jax.jit, static_argnums=3)  # one compilation per impl, not one per eager op
    def grads(x, w, ct, which):
        _, vjp = jax.vjp(lambda x, w: jconv.conv2d(x, w, padding="same", groups=2, impl=which),
                         x, w)
        return vjp(ct)

    for got, want in zip(grads(x, w, ct, impl), grads(x, w, ct, "lax")):
        assert_close_global(got, want)


def test_error_table_vs_float64():
    """The error table of docs/performance.md, on a smaller problem: F(2,3) is as accurate as lax, F(4,3)
    loses about an order of magnitude in float32; half precisions transform in float32, so
    their error is the input/output rounding that lax has too. (float64 exactness is checked
    in test_float64_exact_and_gradients.)"""
    rows = {(r["dtype"], r["impl"]): r["max_rel"]
            for r in error_table(("float32", "bfloat16"), batch=1, channels=8, size=12)}
    assert rows[("float32", "winograd_f2x2")] < 2e-6 and rows[("float32", "winograd_f4x4")] < 2e-5
    for dtype in ("bfloat16",):
        for impl in WINOGRAD:
            assert rows[(dtype, impl)] <= 1.5 * rows[(dtype, "lax")] + 1e-6


@pytest.mark.parametrize("impl", WINOGRAD)
@pytest.mark.parametrize("w_shape,kwargs,match", [
    ((4, 4, 5, 5), {}, r"only 3x3 kernels.*\(5, 5\)"),
    ((4, 4, 3, 1), {}, r"only 3x3 kernels.*\(3, 1\)"),
    ((4, 4, 3, 3), {"stride": 2}, r"only stride=1, got stride=\(2, 2\)"),
    ((4, 4, 3, 3), {"dilation": (1, 2)}, r"only dilation=1, got dilation=\(1, 2\)"),
])
def test_unsupported_geometry_raises(impl, w_shape, kwargs, match):
    x, w = jnp.ones((1, 4, 12, 12)), jnp.ones(w_shape)
    with pytest.raises(ValueError, match=f"impl='{impl}' supports {match}"):
        jconv.conv2d(x, w, impl=impl, **kwargs)


def test_bad_tile_raises():
    with pytest.raises(ValueError, match=r"tile must be one of \(2, 4\), got 3"):
        winograd_matrices(3)


def test_half_precision_keeps_dtype_and_jits():
    x = jnp.ones((1, 2, 6, 6), jnp.bfloat16)
    w = jnp.ones((3, 2, 3, 3), jnp.bfloat16)
    y = jax.jit(lambda x, w: jconv.conv2d(x, w, padding=1, impl="winograd_f4x4"))(x, w)
    assert y.dtype == jnp.bfloat16
    assert float(y[0, 0, 2, 2]) == 18.0  # interior: 2 channels x 9 taps of ones


def test_set_impl_switches_convs_and_leaves_pooling():
    from flax import nnx

    model = nnx.Sequential(jconv.nn.Conv2d(3, 4, 3, padding=1, rngs=nnx.Rngs(0)),
                           jconv.nn.MaxPool2d(2, impl="loops"))
    forward = nnx.jit(lambda m, x: m(x))  # one compilation per impl setting
    x = normal(5, (1, 3, 10, 10))
    want = forward(model, x)
    jconv.set_impl(model, "winograd_f4x4")
    assert (model.layers[0].impl, model.layers[1].impl) == ("winograd_f4x4", "loops")
    assert_close_global(forward(model, x), want)
