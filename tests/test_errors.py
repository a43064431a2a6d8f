"""Every bad input gets a ValueError/TypeError that names the argument and the value."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import jconv

X = jnp.ones((2, 4, 8, 8))
W = jnp.ones((6, 4, 3, 3))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(x=jnp.ones((4, 8))), ValueError, r"x must be 3-D or 4-D \(N, C_in, H, W\).*got shape \(4, 8\)"),
    (dict(x=jnp.ones((1, 2, 4, 8, 8))), ValueError, r"x must be 3-D or 4-D.*\(1, 2, 4, 8, 8\)"),
    (dict(w=jnp.ones((6, 4, 3))), ValueError, r"w must be 4-D \(C_out, C_in/groups, kH, kW\), got shape \(6, 4, 3\)"),
    (dict(w=jnp.ones((6, 3, 3, 3))), ValueError, r"channel mismatch: x has C_in=4.*C_in/groups=3"),
    (dict(groups=3), ValueError, r"groups=3 must divide both C_in=4 and C_out=6"),
    (dict(groups=0), ValueError, r"groups must be a positive int, got 0"),
    (dict(w=jnp.ones((6, 4, 9, 3))), ValueError, r"kernel larger than the padded input along H: effective kernel .* = 9 > padded size 8\+0\+0 = 8"),
    (dict(w=jnp.ones((6, 4, 3, 3)), dilation=4), ValueError, r"kernel larger than the padded input along H: effective kernel .* = 9"),
    (dict(stride=0), ValueError, r"stride must be >= 1 in every dimension, got 0"),
    (dict(stride=(1, -2)), ValueError, r"stride must be >= 1 in every dimension, got \(1, -2\)"),
    (dict(dilation=0), ValueError, r"dilation must be >= 1 in every dimension, got 0"),
    (dict(stride=1.5), TypeError, r"stride must be an int or a pair of ints, got 1.5"),
    (dict(padding=-1), ValueError, r"padding must be non-negative, got -1"),
    (dict(padding=((1, -1), (0, 0))), ValueError, r"padding must be non-negative, got \(\(1, -1\), \(0, 0\)\)"),
    (dict(padding="full"), ValueError, r"padding must be .*'valid' or 'same', got 'full'"),
    (dict(padding=(1, 2, 3)), TypeError, r"padding must be an int, a pair.*got \(1, 2, 3\)"),
    (dict(padding="same", stride=2), ValueError, r"padding='same' requires stride 1, got stride=\(2, 2\)"),
    (dict(impl="cudnn"), ValueError, r"impl must be one of \('lax', 'im2col', 'loops'.*got 'cudnn'"),
    (dict(data_format="NWHC"), ValueError, r"data_format must be one of \('NCHW', 'NHWC'\), got 'NWHC'"),
    (dict(b=jnp.ones((5,))), ValueError, r"b must have shape \(C_out,\) = \(6,\), got \(5,\)"),
    (dict(b=jnp.ones((6,), jnp.float16)), TypeError, r"b must have the dtype of x \(float32\), got float16"),
    (dict(w=jnp.ones((6, 4, 3, 3), jnp.bfloat16)), TypeError, r"x and w must have the same dtype, got x float32 and w bfloat16"),
    (dict(x=jnp.ones((2, 4, 8, 8), jnp.int32), w=jnp.ones((6, 4, 3, 3), jnp.int32)), TypeError, r"x must be a floating-point array.*got dtype int32"),
])
@pytest.mark.parametrize("impl", ["lax", "im2col", "loops"])
def test_conv2d_errors(impl, kwargs, exc, match):
    args = dict(x=X, w=W, b=None, impl=impl)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        jconv.conv2d(args.pop("x"), args.pop("w"), args.pop("b"), **args)


def test_nhwc_rank_error_names_layout():
    with pytest.raises(ValueError, match=r"\(N, H, W, C_in\) or \(H, W, C_in\) for data_format='NHWC'"):
        jconv.conv2d(jnp.ones((8, 8)), W, data_format="NHWC")


def test_nhwc_channel_mismatch_reads_last_axis():
    with pytest.raises(ValueError, match=r"channel mismatch: x has C_in=8"):
        jconv.conv2d(jnp.ones((2, 4, 8, 8)), W, data_format="NHWC")


@pytest.mark.parametrize("fn", [jconv.max_pool2d, jconv.avg_pool2d])
@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(kernel_size=0), ValueError, r"kernel_size must be >= 1 in every dimension, got 0"),
    (dict(kernel_size=2, stride=0), ValueError, r"stride must be >= 1 in every dimension, got 0"),
    (dict(kernel_size=2, padding=2), ValueError, r"padding must be at most half of kernel_size.*padding=2.*kernel_size=2"),
    (dict(kernel_size=2, padding=-1), ValueError, r"padding must be >= 0 in every dimension, got -1"),
    (dict(kernel_size=10), ValueError, r"pooling window larger than the padded input along H: effective kernel 10 > padded size 8"),
    (dict(kernel_size=2, impl="fast"), ValueError, r"impl must be one of \('lax', 'im2col', 'loops'\), got 'fast'"),
    (dict(kernel_size=2, data_format="CHWN"), ValueError, r"data_format must be one of .* got 'CHWN'"),
    (dict(kernel_size=2, ceil_mode="yes"), TypeError, r"ceil_mode must be a bool, got 'yes'"),
])
def test_pool_errors(fn, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(X, **kwargs)


def test_pool_rank_and_dtype_errors():
    with pytest.raises(ValueError, match=r"x must be 3-D or 4-D \(NCHW batched or unbatched\), got shape \(8, 8\)"):
        jconv.max_pool2d(jnp.ones((8, 8)), 2)
    with pytest.raises(TypeError, match=r"x must be a floating-point array.*int32"):
        jconv.avg_pool2d(jnp.ones((1, 1, 4, 4), jnp.int32), 2)
    with pytest.raises(TypeError, match=r"count_include_pad must be a bool, got 1"):
        jconv.avg_pool2d(X, 2, count_include_pad=1)
    with pytest.raises(ValueError, match=r"x must be 3-D or 4-D \(NHWC batched or unbatched\), got shape \(8,\)"):
        jconv.global_avg_pool2d(jnp.ones((8,)), data_format="NHWC")
    with pytest.raises(ValueError, match=r"dilation must be >= 1 in every dimension, got 0"):
        jconv.max_pool2d(X, 2, dilation=0)
