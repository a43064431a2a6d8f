"""impl="fft": forward agreement with lax.conv_general_dilated (stride, dilation, groups,
padding, layouts), float64 gradient checks, float32 VJPs, dtypes, FFT sizes."""

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
from jconv._fft import fast_fft_size
from jconv.bench.fft import bench


def _lax_ref(x, w, b, stride, pads, dilation, groups, data_format):
    """Straight lax.conv_general_dilated, independent of jconv's own dispatch."""
    y = lax.conv_general_dilated(x, w, stride, pads, rhs_dilation=dilation,
                                 dimension_numbers=(data_format, "OIHW", data_format),
                                 feature_group_count=groups, precision="highest")
    if b is not None:
        y = y + (b[:, None, None] if data_format == "NCHW" else b)
    return y


@pytest.mark.parametrize("kernel,stride,pads,dilation,groups,bias,data_format", [
    ((3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, True, "NCHW"),
    ((7, 5), (1, 1), ((0, 0), (0, 0)), (1, 1), 2, False, "NHWC"),
    ((3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1, True, "NHWC"),
    ((3, 2), (2, 3), ((2, 0), (1, 3)), (2, 1), 2, True, "NCHW"),
    ((5, 5), (1, 1), ((2, 2), (4, 4)), (1, 2), 4, False, "NCHW"),
    ((1, 1), (3, 1), ((0, 0), (0, 0)), (1, 1), 1, False, "NHWC"),
])
def test_forward_matches_lax(kernel, stride, pads, dilation, groups, bias, data_format):
    x, w, b = normal(groups, (2, 4, 13, 11), (8, 4 // groups, *kernel), (8,))
    if data_format == "NHWC":
        x = jnp.transpose(x, (0, 2, 3, 1))
    b = b if bias else None
    got = jconv.conv2d(x, w, b, stride=stride, padding=pads, dilation=dilation, groups=groups,
                       impl="fft", data_format=data_format)
    assert_close_global(got, _lax_ref(x, w, b, stride, pads, dilation, groups, data_format))


def test_unbatched_and_same_padding():
    x, w = normal(1, (3, 10, 12), (2, 3, 4, 4))
    got = jconv.conv2d(x, w, padding="same", impl="fft")
    assert got.shape == (2, 10, 12)
    assert_close_global(got, jconv.conv2d(x, w, padding="same"))


def test_float64_gradients():
    with jax.enable_x64(True):
        x, w, b = normal(2, (1, 2, 7, 6), (4, 1, 3, 2), (4,), dtype=jnp.float64)
        f = partial(jconv.conv2d, stride=(2, 1), padding=1, dilation=(1, 2), groups=2,
                    impl="fft")
        assert_close_global(f(x, w, b), _lax_ref(x, w, b, (2, 1), ((1, 1), (1, 1)), (1, 2), 2,
                                           "NCHW"), tol=1e-12)
        check_grads(f, (x, w, b), order=2, modes=("fwd", "rev"))


def test_float32_vjp_matches_lax():
    x, w, ct = normal(3, (2, 4, 9, 8), (6, 2, 5, 5), (2, 6, 5, 4))

    @partial(jax.jit, static_argnums=3)  # one compilation per impl, not one per eager op
    def grads(x, w, ct, which):
        _, vjp = jax.vjp(lambda x, w: jconv.conv2d(x, w, stride=2, padding=2, groups=2,
                                                   impl=which), x, w)
        return vjp(ct)

    for got, want in zip(grads(x, w, ct, "fft"), grads(x, w, ct, "lax")):
        assert_close_global(got, want)


@pytest.mark.parametrize("dtype,tol", [(jnp.bfloat16, 2e-2), (jnp.float16, 2e-3)])
def test_half_precision_keeps_dtype(dtype, tol):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(1, 4, 8, 8)), dtype)
    w = jnp.asarray(rng.normal(size=(4, 4, 5, 5)) / 10, dtype)
    got = jconv.conv2d(x, w, padding=2, impl="fft")
    assert got.dtype == dtype
    assert_close_global(got.astype(jnp.float32),
                  jconv.conv2d(x.astype(jnp.float32), w.astype(jnp.float32), padding=2), tol)


@pytest.mark.parametrize("n,want", [(1, 1), (7, 8), (11, 12), (13, 15), (31, 32), (49, 50)])
def test_fast_fft_size(n, want):
    assert fast_fft_size(n) == want


def test_bench_reports_a_row_per_kernel():
    # Tiny sizes, one repeat: checks the benchmark runs and is well formed, not its timings.
    rows = bench(kernel_sizes=(5,), batch=1, channels=2, size=8, repeats=2)
    assert [r["kernel"] for r in rows] == [5]
    for r in rows:
        assert r["lax_ms"] > 0 and r["fft_ms"] > 0
        assert r["lax_over_fft"] == pytest.approx(r["lax_ms"] / r["fft_ms"])
