"""Flax NNX layers: they compute what the functional ops compute, init as documented, and a
CNN built from jconv alone trains."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jconv
from jconv import nn


def test_conv2d_layer_matches_functional():
    layer = nn.Conv2d(4, 6, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2), groups=2,
                      impl="im2col", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 9, 9))
    want = jconv.conv2d(x, layer.kernel[...], layer.bias[...], stride=2, padding=(1, 0),
                        dilation=(1, 2), groups=2)
    np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-5)
    assert layer.kernel.shape == (6, 2, 3, 2) and layer.bias.shape == (6,)


def test_he_init_statistics():
    layer = nn.Conv2d(64, 256, 3, bias=True, rngs=nnx.Rngs(0))
    fan_in = 64 * 9
    std = float(layer.kernel[...].std())
    assert abs(std - np.sqrt(2.0 / fan_in)) / np.sqrt(2.0 / fan_in) < 0.03
    assert float(jnp.abs(layer.bias[...]).max()) == 0.0
    assert nn.Conv2d(3, 8, 3, bias=False, rngs=nnx.Rngs(0)).bias is None


def test_nhwc_layer_and_bf16_compute():
    layer = nn.Conv2d(3, 8, 3, padding="same", data_format="NHWC", dtype=jnp.bfloat16,
                      rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 10, 10, 3))
    y = layer(x)
    assert y.shape == (2, 10, 10, 8) and y.dtype == jnp.bfloat16
    assert layer.kernel[...].dtype == jnp.float32
    ref = jconv.conv2d(x, layer.kernel[...], layer.bias[...], padding="same", data_format="NHWC")
    np.testing.assert_allclose(y.astype(jnp.float32), ref, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(in_channels=0), ValueError, r"in_channels must be a positive int, got 0"),
    (dict(out_channels=6, groups=4), ValueError, r"groups=4 must divide both in_channels=4 and out_channels=6"),
    (dict(kernel_size=(3, 0)), ValueError, r"kernel_size must be >= 1 in every dimension, got \(3, 0\)"),
    (dict(impl="magic"), ValueError, r"impl must be one of \('lax', 'im2col', 'loops'.*got 'magic'"),
    (dict(data_format="HWCN"), ValueError, r"data_format must be one of \('NCHW', 'NHWC'\), got 'HWCN'"),
])
def test_conv2d_layer_errors(kwargs, exc, match):
    args = dict(in_channels=4, out_channels=8, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        nn.Conv2d(**args, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("fmt, x_shape, match", [
    ("NCHW", (2, 3, 4, 4), r"BatchNorm2d\(num_features=5\) expects 5 channels on axis 1 of its "
                           r"NCHW input, got an input of shape \(2, 3, 4, 4\) \(3 channels "
                           r"there\)"),
    ("NHWC", (2, 4, 4, 3), r"BatchNorm2d\(num_features=5\) expects 5 channels on axis 3 of its "
                           r"NHWC input, got an input of shape \(2, 4, 4, 3\)"),
    ("NCHW", (5, 4, 4), r"BatchNorm2d\(num_features=5\) expects a 4-D \(N, C, H, W\) input for "
                        r"data_format='NCHW', got shape \(5, 4, 4\)"),
    ("NHWC", (2, 5), r"expects a 4-D \(N, H, W, C\) input for data_format='NHWC', got shape "
                     r"\(2, 5\)"),
])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm2d_wrong_input_names_layer_and_channels(fmt, x_shape, match, train):
    bn = nn.BatchNorm2d(5, data_format=fmt, rngs=nnx.Rngs(0))
    bn.train() if train else bn.eval()
    with pytest.raises(ValueError, match=match):
        bn(jnp.ones(x_shape))


@pytest.mark.parametrize("make, x_shape, match", [
    (lambda r: nn.Conv2d(5, 4, 3, rngs=r), (2, 3, 8, 8),
     r"Conv2d\(in_channels=5\) expects 5 channels on axis 1 of its NCHW input, got an input of "
     r"shape \(2, 3, 8, 8\) \(3 channels there\)"),
    (lambda r: nn.Conv2d(5, 4, 3, rngs=r), (3, 8, 8),  # unbatched: channels on axis 0
     r"Conv2d\(in_channels=5\) expects 5 channels on axis 0 of its NCHW input"),
    (lambda r: nn.Conv1d(5, 4, 3, data_format="NLC", rngs=r), (2, 8, 3),
     r"Conv1d\(in_channels=5\) expects 5 channels on axis 2 of its NLC input"),
    (lambda r: nn.Conv3d(5, 4, 1, rngs=r), (1, 4, 2, 2, 2),
     r"Conv3d\(in_channels=5\) expects 5 channels on axis 1 of its NCDHW input"),
    (lambda r: nn.ConvTranspose2d(5, 4, 2, data_format="NHWC", rngs=r), (1, 4, 4, 3),
     r"ConvTranspose2d\(in_channels=5\) expects 5 channels on axis 3 of its NHWC input"),
])
def test_conv_layers_wrong_channel_count_names_layer(make, x_shape, match):
    layer = make(nnx.Rngs(0))
    with pytest.raises(ValueError, match=match):
        layer(jnp.ones(x_shape))


def test_batchnorm2d_uses_torch_momentum_and_channel_axis():
    bn = nn.BatchNorm2d(3, momentum=0.1, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 3, 5, 5)) * 2.0 + 1.0
    y = bn(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(bn.mean[...], 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    bn_last = nn.BatchNorm2d(3, data_format="NHWC", rngs=nnx.Rngs(0))
    np.testing.assert_allclose(bn_last(x.transpose(0, 2, 3, 1)), y.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        nn.BatchNorm2d(3, momentum=1.5, rngs=nnx.Rngs(0))


def test_pool_layers():
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 3, 8, 8))
    np.testing.assert_array_equal(nn.MaxPool2d(3, 2, 1, impl="loops")(x), jconv.max_pool2d(x, 3, 2, 1))
    np.testing.assert_allclose(nn.AvgPool2d(2, count_include_pad=False)(x), jconv.avg_pool2d(x, 2), rtol=1e-6)
    assert nn.GlobalAvgPool2d(keepdims=True)(x).shape == (2, 3, 1, 1)


class TinyCNN(nnx.Module):
    """The seeds' 2-block CNN (3->16->32), with a linear head."""

    def __init__(self, impl: str, rngs: nnx.Rngs):
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, impl=impl, rngs=rngs)
        self.bn1 = nn.BatchNorm2d(16, rngs=rngs)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, impl=impl, rngs=rngs)
        self.bn2 = nn.BatchNorm2d(32, rngs=rngs)
        self.pool = nn.MaxPool2d(2, impl=impl)
        self.gap = nn.GlobalAvgPool2d()
        self.head = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        x = self.pool(jax.nn.relu(self.bn1(self.conv1(x))))
        x = self.pool(jax.nn.relu(self.bn2(self.conv2(x))))
        return self.head(self.gap(x))


def test_seed_cnn_shapes_and_set_impl():
    model = TinyCNN("lax", nnx.Rngs(0))
    x = jnp.ones((1, 3, 32, 32))
    feats = model.pool(jax.nn.relu(model.bn2(model.conv2(model.pool(jax.nn.relu(model.bn1(model.conv1(x))))))))
    assert feats.shape == (1, 32, 8, 8)   # seed 000's final shape
    jconv.set_impl(model, "loops")
    assert model.conv1.impl == model.conv2.impl == model.pool.impl == "loops"
    with pytest.raises(ValueError, match=r"impl must be one of .* got 'gpu'"):
        jconv.set_impl(model, "gpu")


@pytest.mark.parametrize("impl", ["lax", "im2col", "loops"])
def test_cnn_from_jconv_alone_learns(impl):
    """A few AdamW steps on a fixed batch cut the loss: the layers are trainable end to end."""
    model = TinyCNN(impl, nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adamw(3e-3), wrt=nnx.Param)
    x = jax.random.normal(jax.random.PRNGKey(5), (16, 3, 16, 16))
    y = jnp.arange(16) % 10

    @nnx.jit
    def step(model, opt):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    losses = [float(step(model, opt)) for _ in range(15)]
    assert losses[-1] < 0.6 * losses[0]
