"""Small failure modes: non-finite inputs of the transform convs (documented spread),
train-mode folding, pooling/shape helper argument checks and layer constructors that
validate their arguments at once."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jconv
from jconv.nn import AvgPool2d, BatchNorm2d, Conv2d, ConvTranspose2d, MaxPool2d


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
@pytest.mark.parametrize("impl, limit", [("winograd_f4x4", 8), ("winograd_f2x2", 4), ("fft", 16)])
def test_non_finite_pixel_spread_is_as_documented(impl, limit, bad):
    """A bad pixel at (5, 5) of a 16x16 map, 3 output channels: the exact impls make its
    3x3 neighbourhood non-finite; the transform impls make NaN a square of at most
    ``limit`` x ``limit`` outputs per channel (fft: the whole plane) around it, and never
    touch the other sample."""
    x = jnp.ones((2, 2, 16, 16)).at[0, 1, 5, 5].set(bad)
    w = jnp.ones((3, 2, 3, 3))
    exact = ~np.isfinite(np.asarray(jconv.conv2d(x, w, padding=1, impl="lax")))
    y = np.asarray(jconv.conv2d(x, w, padding=1, impl=impl))
    assert exact[0].sum() == 3 * 9 and exact[0, :, 4:7, 4:7].all()
    bad_out = ~np.isfinite(y)
    assert np.isfinite(y[1]).all()  # the other sample
    assert bad_out[0][exact[0]].all() and np.isnan(y[0][bad_out[0]]).all()  # inf -> NaN too
    rows, cols = np.nonzero(bad_out[0].any(0))
    assert np.ptp(rows) < limit and np.ptp(cols) < limit
    assert bad_out[0].sum() > exact[0].sum()  # it does spread: the behaviour documented
    if impl == "fft":
        assert bad_out[0].all()


def test_fold_of_a_train_mode_model_names_the_layer():
    r = nnx.Rngs(0)
    model = nnx.Sequential(Conv2d(3, 4, 3, rngs=r), nnx.relu, Conv2d(4, 4, 3, rngs=r),
                           BatchNorm2d(4, rngs=r))
    with pytest.raises(ValueError, match=r"model.layers\[3\] \(BatchNorm2d\) is in train mode "
                                         r"\(use_running_average=False\).*call model.eval\(\)"):
        jconv.fold_conv_bn_sequential(model)
    model.eval()
    assert len(jconv.fold_conv_bn_sequential(model).layers) == 3


@pytest.mark.parametrize("x, exc, match", [
    (jnp.ones((1, 2, 4, 4), jnp.int32), TypeError,
     r"x must be a floating-point array \(float16/bfloat16/float32/float64\), got dtype int32"),
    ([[[1.0]]], TypeError, r"x must be an array \(jax or numpy\), got list"),
    (None, TypeError, r"x must be an array \(jax or numpy\), got NoneType"),
    (jnp.ones((4, 4)), ValueError, r"x must be 3-D or 4-D \(NCHW batched or unbatched\), got "
                                   r"shape \(4, 4\)"),
])
def test_global_avg_pool2d_rejects_non_float_and_non_arrays(x, exc, match):
    with pytest.raises(exc, match=match):
        jconv.global_avg_pool2d(x)


def test_global_avg_pool2d_unbatched_3d_still_works():
    np.testing.assert_allclose(jconv.global_avg_pool2d(jnp.arange(8.0).reshape(2, 2, 2)),
                               [1.5, 5.5])


@pytest.mark.parametrize("kwargs, match", [
    ({"strides": [2.0]}, r"strides must hold ints, got 2.0 \(float\)"),
    ({"kernel_sizes": [3, 2.5]}, r"kernel_sizes must hold ints, got 2.5 \(float\)"),
    ({"paddings": ["1"]}, r"paddings must hold ints, got '1' \(str\)"),
    ({"dilations": [True]}, r"dilations must hold ints, got True \(bool\)"),
])
def test_find_conv_params_rejects_non_integer_ranges(kwargs, match):
    with pytest.raises(TypeError, match=match):
        jconv.find_conv_params(8, 4, **kwargs)


def test_find_conv_params_accepts_numpy_ints():
    assert jconv.find_conv_params(8, 4, strides=np.arange(2, 3)) == \
        jconv.find_conv_params(8, 4, strides=[2])


@pytest.mark.parametrize("kernel, padding", [(2, 2), (3, 2), ((3, 2), (1, 2))])
def test_pool2d_output_shape_rejects_what_max_pool2d_rejects(kernel, padding):
    match = r"padding must be at most half of kernel_size \(PyTorch rule\)"
    with pytest.raises(ValueError, match=match):
        jconv.pool2d_output_shape(9, kernel, padding=padding)
    with pytest.raises(ValueError, match=match):
        jconv.max_pool2d(jnp.ones((1, 1, 9, 9)), kernel, padding=padding)
    assert jconv.pool2d_output_shape(9, 3, padding=1) == jconv.max_pool2d(
        jnp.ones((1, 1, 9, 9)), 3, padding=1).shape[2:]


R = nnx.Rngs(0)


@pytest.mark.parametrize("make, match", [
    (lambda: Conv2d(3, 4, 3, stride=0, rngs=R), r"stride must be >= 1 in every dimension, got 0"),
    (lambda: Conv2d(3, 4, 3, dilation=(1, 0), rngs=R), r"dilation must be >= 1"),
    (lambda: Conv2d(3, 4, 3, padding=-1, rngs=R), r"padding"),
    (lambda: Conv2d(3, 4, 3, stride=2, padding="same", rngs=R),
     r"padding='same' requires stride 1"),
    (lambda: ConvTranspose2d(3, 4, 3, stride=0, rngs=R), r"stride must be >= 1"),
    (lambda: ConvTranspose2d(3, 4, 3, stride=2, output_padding=2, rngs=R),
     r"output_padding must be smaller than either stride or dilation"),
    (lambda: MaxPool2d(2, padding=2), r"padding must be at most half of kernel_size"),
    (lambda: MaxPool2d(0), r"kernel_size must be >= 1"),
    (lambda: AvgPool2d(2, stride=0), r"stride must be >= 1"),
])
def test_layers_reject_bad_arguments_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_layers_with_parsed_arguments_compute_as_before():
    x = jnp.ones((1, 3, 9, 9))
    conv = Conv2d(3, 4, 3, stride=2, padding=1, rngs=nnx.Rngs(0))
    assert conv.stride == (2, 2)
    np.testing.assert_allclose(conv(x), jconv.conv2d(x, conv.kernel[...], conv.bias[...],
                                                     stride=2, padding=1), rtol=1e-6)
    assert MaxPool2d(3, padding=1)(x).shape == (1, 3, 3, 3)
    assert AvgPool2d(2, stride=1)(x).shape == (1, 3, 8, 8)
    up = ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, rngs=nnx.Rngs(0))
    assert up(x).shape == (1, 2, 18, 18)
