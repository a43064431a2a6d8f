"""The N-D pooling, adaptive pooling and Unfold/Fold layers of jconv.nn: the same outputs as
the PyTorch modules, construction-time errors, and load_torch_state_dict on a model that
contains parameter-free pooling layers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jconv
from jconv import nn

# (jconv layer, torch module name, constructor args, input shape)
LAYERS = [
    (nn.MaxPool1d, "MaxPool1d", (3, 2, 1), (2, 3, 11)),
    (nn.MaxPool3d, "MaxPool3d", ((2, 3, 2), 2, (1, 1, 0), 1, False, True), (2, 3, 5, 7, 6)),
    (nn.AvgPool1d, "AvgPool1d", (3, 2, 1, True, False), (2, 3, 11)),
    (nn.AvgPool3d, "AvgPool3d", (3, 2, 1, False, True, 5), (2, 3, 5, 7, 6)),
    (nn.AdaptiveAvgPool1d, "AdaptiveAvgPool1d", (4,), (2, 3, 11)),
    (nn.AdaptiveAvgPool2d, "AdaptiveAvgPool2d", ((3, None),), (2, 3, 7, 6)),
    (nn.AdaptiveAvgPool3d, "AdaptiveAvgPool3d", ((2, 3, 4),), (2, 3, 5, 7, 6)),
    (nn.AdaptiveMaxPool1d, "AdaptiveMaxPool1d", (4,), (2, 3, 11)),
    (nn.AdaptiveMaxPool2d, "AdaptiveMaxPool2d", (3,), (2, 3, 7, 6)),
    (nn.AdaptiveMaxPool3d, "AdaptiveMaxPool3d", ((2, 3, 4),), (2, 3, 5, 7, 6)),
    (nn.Unfold, "Unfold", ((2, 3), 1, 1, 2), (2, 3, 7, 6)),
    (nn.Fold, "Fold", ((7, 6), 2, 1, 0, 1), (2, 12, 30)),
]


@pytest.mark.parametrize("layer,torch_name,args,shape", LAYERS, ids=[t[1] for t in LAYERS])
def test_layer_matches_torch_module(layer, torch_name, args, shape):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = getattr(torch.nn, torch_name)(*args)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(layer(*args)(jnp.asarray(x)), want, rtol=1e-6, atol=1e-6)


def test_return_indices_and_channels_last_layers():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 6, 6, 6)), jnp.float32)
    y, idx = nn.MaxPool3d(2, return_indices=True)(x)
    np.testing.assert_array_equal(y, jconv.max_pool3d(x, 2))
    np.testing.assert_array_equal(jconv.max_unpool3d(y, idx, 2).max(), x.max())
    xl = jnp.moveaxis(x, 1, -1)
    got = nn.AdaptiveMaxPool3d(2, data_format="NDHWC")(xl)
    np.testing.assert_array_equal(jnp.moveaxis(got, -1, 1), jconv.adaptive_max_pool3d(x, 2))


@pytest.mark.parametrize("make,exc,match", [
    (lambda: nn.MaxPool1d((2, 2)), TypeError, r"kernel_size must be an int, got \(2, 2\)"),
    (lambda: nn.MaxPool3d(2, padding=2), ValueError, r"padding must be at most half"),
    (lambda: nn.MaxPool3d(2, data_format="NHWC"), ValueError,
     r"data_format must be one of \('NCDHW', 'NDHWC'\) for 3-D pooling, got 'NHWC'"),
    (lambda: nn.MaxPool2d(2, return_indices="no"), TypeError,
     r"return_indices must be a bool, got 'no'"),
    (lambda: nn.AvgPool1d(2, divisor_override=2), ValueError,
     r"divisor_override must be None \(PyTorch's AvgPool1d has none\), got 2"),
    (lambda: nn.AvgPool3d(2, divisor_override=0), ValueError,
     r"divisor_override must be None or a non-zero int, got 0"),
    (lambda: nn.AvgPool2d(2, count_include_pad=1), TypeError,
     r"count_include_pad must be a bool, got 1"),
    (lambda: nn.AdaptiveAvgPool2d((1, 2, 3)), TypeError,
     r"output_size must be an int, None or a tuple of 2 ints or Nones"),
    (lambda: nn.AdaptiveMaxPool1d(0), ValueError, r"output_size must be >= 1"),
    (lambda: nn.Unfold(0), ValueError, r"kernel_size must be >= 1"),
    (lambda: nn.Fold((4, 4, 4), 2), TypeError, r"output_size must be an int or a pair of ints"),
])
def test_construction_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_load_torch_state_dict_with_pooling_layers():
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    torch.manual_seed(0)
    net = tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1), tnn.MaxPool2d(2),
                         tnn.Conv2d(8, 8, 3, padding=1), tnn.AdaptiveMaxPool2d((3, 3)),
                         tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(8, 4)).eval()
    r = nnx.Rngs(0)
    model = nnx.Sequential(nn.Conv2d(3, 8, 3, padding=1, rngs=r), nn.MaxPool2d(2),
                           nn.Conv2d(8, 8, 3, padding=1, rngs=r), nn.AdaptiveMaxPool2d((3, 3)),
                           nn.AdaptiveAvgPool2d(1), lambda x: x.reshape(x.shape[0], -1),
                           nnx.Linear(8, 4, rngs=r))
    jconv.load_torch_state_dict(model, net.state_dict(), input_shape=(2, 3, 10, 10))
    x = np.random.default_rng(2).standard_normal((2, 3, 10, 10)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(jnp.asarray(x)), want, rtol=1e-4, atol=1e-5)


def test_summary_receptive_field_through_nd_pooling_layers():
    # Hand counts: k3 -> 3; pool k2 s2 -> 3 + 1 = 4 (jump 2); k3 -> 4 + 2*2 = 8. An adaptive
    # pool's windows depend on the input size, so the field after it is undefined (None).
    model = nnx.Sequential(nn.Conv3d(2, 4, 3, padding=1, rngs=nnx.Rngs(0)), nn.MaxPool3d(2),
                           nn.Conv3d(4, 4, 3, padding=1, rngs=nnx.Rngs(0)),
                           nn.AdaptiveAvgPool3d(1))
    s = jconv.summary(model, (1, 2, 8, 8, 8))
    assert [(r.kind, r.output_shape, r.receptive_field) for r in s.layers] == [
        ("Conv3d", (1, 4, 8, 8, 8), (3, 3, 3)), ("MaxPool3d", (1, 4, 4, 4, 4), (4, 4, 4)),
        ("Conv3d", (1, 4, 4, 4, 4), (8, 8, 8)), ("AdaptiveAvgPool3d", (1, 4, 1, 1, 1), None)]
    # Channels-last 1-D: avg pool k3 s2 p1 -> 3 + 2 = 5 (jump 2); k3 -> 5 + 2*2 = 9.
    nlc = nnx.Sequential(nn.Conv1d(2, 4, 3, padding=1, data_format="NLC", rngs=nnx.Rngs(0)),
                         nn.AvgPool1d(3, 2, 1, data_format="NLC"),
                         nn.Conv1d(4, 4, 3, padding=1, data_format="NLC", rngs=nnx.Rngs(0)))
    s1 = jconv.summary(nlc, (1, 16, 2))
    assert [(r.output_shape, r.receptive_field) for r in s1.layers] == [
        ((1, 16, 4), (3,)), ((1, 8, 4), (5,)), ((1, 8, 4), (9,))]


def test_set_impl_switches_every_pooling_layer():
    # set_impl once tested for the 2-D pool classes only, so 1-D and 3-D pools kept "lax".
    pools = [cls(2) for cls in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                                nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)]
    model = nnx.Sequential(*pools)
    jconv.set_impl(model, "loops")
    assert [layer.impl for layer in model.layers] == ["loops"] * len(pools)
    # An impl without a pooling counterpart leaves every pool as it was.
    jconv.set_impl(model, "fft")
    assert [layer.impl for layer in model.layers] == ["loops"] * len(pools)
    x = jnp.arange(16.0).reshape(1, 1, 16)
    np.testing.assert_array_equal(model.layers[0](x), jconv.max_pool1d(x, 2))
