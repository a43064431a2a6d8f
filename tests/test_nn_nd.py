"""Conv1d/Conv3d/ConvTranspose1d/3d layers and padding_mode on every conv layer: PyTorch's
modules loaded with load_torch_state_dict give the same outputs; summary handles N-D."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jconv
from jconv import nn


def _torch_model(layers):
    torch.manual_seed(0)
    return torch.nn.Sequential(*layers).double()


@pytest.mark.parametrize("ndim,mode", [(1, "circular"), (2, "reflect"), (3, "replicate"),
                                       (1, "zeros")])
def test_conv_layers_with_padding_modes_match_torch_after_loading(ndim, mode, x64):
    conv_t, conv_j = getattr(torch.nn, f"Conv{ndim}d"), getattr(nn, f"Conv{ndim}d")
    tconv_t = getattr(torch.nn, f"ConvTranspose{ndim}d")
    tconv_j = getattr(nn, f"ConvTranspose{ndim}d")
    torch_model = _torch_model([
        conv_t(4, 6, 3, padding="same", dilation=2, padding_mode=mode),
        conv_t(6, 6, 2, stride=2, padding=1, groups=2, bias=False, padding_mode=mode),
        tconv_t(6, 3, 3, stride=2, padding=1, output_padding=1, groups=3),
    ])
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(
        conv_j(4, 6, 3, padding="same", dilation=2, padding_mode=mode, rngs=rngs,
               param_dtype=jnp.float64),
        conv_j(6, 6, 2, stride=2, padding=1, groups=2, bias=False, padding_mode=mode,
               rngs=rngs, param_dtype=jnp.float64),
        tconv_j(6, 3, 3, stride=2, padding=1, output_padding=1, groups=3, rngs=rngs,
                param_dtype=jnp.float64))
    jconv.load_torch_state_dict(model, torch_model.state_dict())
    x = np.random.default_rng(ndim).standard_normal((2, 4, *(9, 8, 7)[:ndim]))
    want = torch_model(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), want, atol=1e-12)


def test_channels_last_3d_layer_matches_channels_first(x64):
    a = nn.Conv3d(2, 3, (1, 2, 3), padding=1, padding_mode="reflect", rngs=nnx.Rngs(0),
                  param_dtype=jnp.float64)
    b = nn.Conv3d(2, 3, (1, 2, 3), padding=1, padding_mode="reflect", data_format="NDHWC",
                  rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 2, 3, 4, 5)))
    np.testing.assert_allclose(np.moveaxis(np.asarray(b(jnp.moveaxis(x, 1, -1))), -1, 1),
                               np.asarray(a(x)), atol=1e-12)


def test_summary_counts_nd_layers():
    model = nnx.Sequential(nn.Conv1d(4, 8, 3, padding=1, rngs=nnx.Rngs(0)),
                           nn.Conv1d(8, 8, 3, dilation=2, padding="same",
                                     padding_mode="reflect", rngs=nnx.Rngs(0)),
                           nn.ConvTranspose1d(8, 2, 2, stride=2, rngs=nnx.Rngs(0)))
    s = jconv.summary(model, (2, 4, 50))
    assert [r.output_shape for r in s.layers] == [(2, 8, 50), (2, 8, 50), (2, 2, 100)]
    assert [r.macs for r in s.layers] == [2 * 8 * 50 * 4 * 3, 2 * 8 * 50 * 8 * 3,
                                          2 * 8 * 50 * 2 * 2]
    assert [r.receptive_field for r in s.layers] == [(3,), (7,), None]
    s3 = jconv.summary(nnx.Sequential(nn.Conv3d(1, 2, 3, stride=(1, 2, 2), rngs=nnx.Rngs(0))),
                       (1, 1, 5, 9, 9))
    assert s3.layers[0].macs == 2 * 3 * 4 * 4 * 27
    assert s3.layers[0].receptive_field == (3, 3, 3)


def test_set_impl_leaves_layers_an_impl_cannot_compute():
    model = nnx.Sequential(nn.Conv1d(2, 2, 3, rngs=nnx.Rngs(0)),
                           nn.Conv2d(2, 2, 3, rngs=nnx.Rngs(0)))
    jconv.set_impl(model, "winograd_f4x4")
    assert [layer.impl for layer in model.layers] == ["lax", "winograd_f4x4"]
    jconv.set_impl(model, "im2col")
    assert [layer.impl for layer in model.layers] == ["im2col", "im2col"]


@pytest.mark.parametrize("call,exc,match", [
    (lambda: nn.Conv1d(2, 2, 3, padding_mode="mirror", rngs=nnx.Rngs(0)), ValueError,
     r"padding_mode must be one of \('zeros', 'reflect', 'replicate', 'circular'\), "
     r"got 'mirror'"),
    (lambda: nn.ConvTranspose3d(2, 2, 3, padding_mode="reflect", rngs=nnx.Rngs(0)),
     ValueError, r"padding_mode must be 'zeros' for ConvTranspose3d \(PyTorch rule\), "
                 r"got 'reflect'"),
    (lambda: nn.Conv3d(2, 2, 3, impl="winograd_f4x4", rngs=nnx.Rngs(0)), ValueError,
     r"impl='winograd_f4x4' computes 2-D convolutions only, got a 3-D one"),
    (lambda: nn.Conv1d(2, 2, (3, 3), rngs=nnx.Rngs(0)), TypeError,
     r"kernel_size must be an int, got \(3, 3\)"),
    (lambda: nn.Conv3d(2, 2, 3, data_format="NHWC", rngs=nnx.Rngs(0)), ValueError,
     r"data_format must be one of \('NCDHW', 'NDHWC'\), got 'NHWC'"),
    (lambda: nn.ConvTranspose1d(2, 2, 3, stride=2, output_padding=2, rngs=nnx.Rngs(0)),
     ValueError, r"output_padding must be smaller than either stride or dilation"),
    (lambda: nn.Conv1d(2, 2, 3, padding=4, padding_mode="reflect",
                       rngs=nnx.Rngs(0))(jnp.ones((1, 2, 4))), ValueError,
     r"padding_mode='reflect' needs padding < the input size along L"),
])
def test_layer_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_nd_layers_lower_for_accelerators():
    model = nnx.Sequential(nn.Conv3d(2, 4, 3, padding=1, padding_mode="circular",
                                     rngs=nnx.Rngs(0)),
                           nn.ConvTranspose3d(4, 2, 2, stride=2, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)

    def loss(state, x):
        return jnp.sum(nnx.merge(graphdef, state)(x) ** 2)

    x = jax.ShapeDtypeStruct((2, 2, 4, 8, 8), jnp.float32)
    for platform in ("cuda", "tpu"):
        exported = jax.export.export(jax.jit(jax.grad(loss)), platforms=[platform])(state, x)
        assert "func.func public @main" in exported.mlir_module()
