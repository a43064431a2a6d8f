"""jconv.summary against hand counts for the seeds' two networks, plus sharing, layouts,
custom modules, purity and error messages."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jconv
from jconv.nn import BatchNorm2d, Conv2d, ConvTranspose2d, MaxPool2d
from jconv.summary import RF_UNKNOWN

F32 = 4  # bytes


def _abstract(build):
    """The model's structure without allocating or initialising weights: summary only
    needs shapes."""
    return nnx.eval_shape(lambda: build(nnx.Rngs(0)))


def _rows(s):
    return [(r.kind, r.output_shape, r.params, r.macs, r.activation_bytes, r.receptive_field)
            for r in s.layers]


def test_two_block_cnn_hand_counts():
    """Conv2d(3,16,3,p1)-BN-ReLU-MaxPool(2)-Conv2d(16,32,3,p1)-BN-ReLU-MaxPool(2), (1,3,32,32)."""
    model = _abstract(lambda r: nnx.Sequential(
        Conv2d(3, 16, 3, padding=1, rngs=r), BatchNorm2d(16, rngs=r), nnx.relu, MaxPool2d(2),
        Conv2d(16, 32, 3, padding=1, rngs=r), BatchNorm2d(32, rngs=r), nnx.relu, MaxPool2d(2)))
    s = jconv.summary(model, (1, 3, 32, 32))
    conv1_params, conv2_params = 16 * 3 * 3 * 3 + 16, 32 * 16 * 3 * 3 + 32
    conv1_macs = 16 * 32 * 32 * (3 * 3 * 3)   # C_out * H_out * W_out * (C_in * kH * kW)
    conv2_macs = 32 * 16 * 16 * (16 * 3 * 3)
    a1, a2, a3, a4 = (16 * 32 * 32 * F32, 16 * 16 * 16 * F32, 32 * 16 * 16 * F32,
                      32 * 8 * 8 * F32)
    # RF: 3; pool2 adds 1 (jump 1) -> 4; conv3 adds 2*jump 2 -> 8; pool2 adds 1*jump 2 -> 10.
    assert _rows(s) == [
        ("Conv2d", (1, 16, 32, 32), conv1_params, conv1_macs, a1, (3, 3)),
        ("BatchNorm2d", (1, 16, 32, 32), 2 * 16, 0, a1, (3, 3)),
        ("relu", (1, 16, 32, 32), 0, 0, a1, (3, 3)),
        ("MaxPool2d", (1, 16, 16, 16), 0, 0, a2, (4, 4)),
        ("Conv2d", (1, 32, 16, 16), conv2_params, conv2_macs, a3, (8, 8)),
        ("BatchNorm2d", (1, 32, 16, 16), 2 * 32, 0, a3, (8, 8)),
        ("relu", (1, 32, 16, 16), 0, 0, a3, (8, 8)),
        ("MaxPool2d", (1, 32, 8, 8), 0, 0, a4, (10, 10)),
    ]
    assert [r.name for r in s.layers] == [f"layers.{i}" for i in range(8)]
    assert s.total_params == conv1_params + conv2_params + 2 * 16 + 2 * 32 == 5184
    assert s.total_macs == conv1_macs + conv2_macs == 1_622_016
    assert s.activation_bytes == 3 * a1 + a2 + 3 * a3 + a4
    assert s.param_bytes == 5184 * F32 and s.input_bytes == 3 * 32 * 32 * F32
    assert s.output_shape == (1, 32, 8, 8)
    # The numbers come from the core helpers.
    assert conv1_macs == jconv.conv2d_macs((1, 3, 32, 32), 16, 3, padding=1)
    assert conv2_params == jconv.conv2d_params(16, 32, 3)


def test_practice_net_hand_counts():
    """Conv2d(3,32,5,p2)-ReLU-MaxPool2-Conv2d(32,64,3,p1)-ReLU-MaxPool2 on (2,3,64,64)."""
    model = _abstract(lambda r: nnx.Sequential(
        Conv2d(3, 32, 5, padding=2, rngs=r), nnx.relu, MaxPool2d(2),
        Conv2d(32, 64, 3, padding=1, rngs=r), nnx.relu, MaxPool2d(2)))
    s = jconv.summary(model, (2, 3, 64, 64))
    p1, p2 = 32 * 3 * 5 * 5 + 32, 64 * 32 * 3 * 3 + 64
    m1, m2 = 2 * 32 * 64 * 64 * (3 * 5 * 5), 2 * 64 * 32 * 32 * (32 * 3 * 3)
    b1, b2, b3, b4 = (2 * 32 * 64 * 64 * F32, 2 * 32 * 32 * 32 * F32, 2 * 64 * 32 * 32 * F32,
                      2 * 64 * 16 * 16 * F32)
    assert _rows(s) == [
        ("Conv2d", (2, 32, 64, 64), p1, m1, b1, (5, 5)),
        ("relu", (2, 32, 64, 64), 0, 0, b1, (5, 5)),
        ("MaxPool2d", (2, 32, 32, 32), 0, 0, b2, (6, 6)),
        ("Conv2d", (2, 64, 32, 32), p2, m2, b3, (10, 10)),
        ("relu", (2, 64, 32, 32), 0, 0, b3, (10, 10)),
        ("MaxPool2d", (2, 64, 16, 16), 0, 0, b4, (12, 12)),
    ]
    assert (s.total_params, s.total_macs) == (p1 + p2, m1 + m2) == (20_928, 57_409_536)
    table = str(s)
    assert "Total params: 20,928" in table and "Total MACs: 57,409,536" in table
    assert "layers.3 (Conv2d)" in table and "12x12" in table


class _Shared(nnx.Module):
    """A custom (non-Sequential) module that applies one conv twice, then a head."""

    def __init__(self, rngs):
        self.conv = Conv2d(4, 4, 3, padding=1, bias=False, rngs=rngs)
        self.pool = jconv.nn.GlobalAvgPool2d()
        self.head = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(self.pool(jnp.tanh(self.conv(self.conv(x)))))


def test_shared_layer_params_counted_once_and_custom_module():
    s = jconv.summary(_abstract(_Shared), (5, 4, 8, 8))
    assert [(r.name, r.kind) for r in s.layers] == [
        ("conv", "Conv2d"), ("conv", "Conv2d"), ("pool", "GlobalAvgPool2d"), ("head", "Linear")]
    macs = 5 * 4 * 8 * 8 * 4 * 9
    assert [r.params for r in s.layers] == [4 * 4 * 9, 0, 0, 4 * 3 + 3]
    assert [r.macs for r in s.layers] == [macs, macs, 0, 5 * 4 * 3]
    assert [r.receptive_field for r in s.layers] == [(3, 3), (5, 5), None, None]
    assert s.total_params == 4 * 4 * 9 + 4 * 3 + 3 and s.output_shape == (5, 3)


def test_nhwc_unbatched_and_transposed_conv():
    nhwc = _abstract(lambda r: nnx.Sequential(Conv2d(3, 8, (3, 5), stride=2, padding=1,
                                                     data_format="NHWC", rngs=r)))
    s = jconv.summary(nhwc, (2, 16, 12, 3))
    assert s.layers[0].output_shape == (2, 8, 5, 8)
    assert s.layers[0].macs == jconv.conv2d_macs((2, 3, 16, 12), 8, (3, 5), stride=2, padding=1)
    assert s.layers[0].receptive_field == (3, 5)
    up = _abstract(lambda r: nnx.Sequential(ConvTranspose2d(8, 4, 3, stride=2, padding=1,
                                                            output_padding=1, rngs=r)))
    s = jconv.summary(up, (8, 5, 6))  # unbatched (C, H, W)
    assert s.layers[0].output_shape == (4, 10, 12)
    assert s.layers[0].macs == 8 * 5 * 6 * 4 * 3 * 3  # every input pixel scatters k*k*C_out
    assert s.layers[0].params == 8 * 4 * 9 + 4 and s.layers[0].receptive_field is None


def test_summary_leaves_model_and_classes_untouched():
    r = nnx.Rngs(0)
    model = nnx.Sequential(Conv2d(3, 4, 1, rngs=r), BatchNorm2d(4, rngs=r))  # train mode
    before = np.asarray(model.layers[1].mean[...]).copy()
    call, bn_call = Conv2d.__call__, BatchNorm2d.__call__
    jconv.summary(model, (2, 3, 8, 8))
    assert Conv2d.__call__ is call and BatchNorm2d.__call__ is bn_call
    assert "__call__" not in Conv2d.__dict__  # inherited from _ConvNd, not left patched
    np.testing.assert_array_equal(model.layers[1].mean[...], before)
    assert model.layers[1].mean[...].shape == (4,)  # a concrete array again, not a tracer


def test_bad_arguments():
    with pytest.raises(TypeError, match="model must be a flax.nnx.Module, got function"):
        jconv.summary(lambda x: x, (1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"input_shape must be a non-empty sequence of positive "
                                         r"ints, got \(1, 0, 8\)"):
        jconv.summary(nnx.Sequential(), (1, 0, 8))
    # An array passed for its shape: its shape and dtype in the message, not its elements.
    with pytest.raises(TypeError, match=r"input_shape must be a shape \(a sequence of positive "
                                        r"ints\), got an array of shape \(2, 3, 64, 64\) and "
                                        r"dtype float32: pass x.shape$"):
        jconv.summary(nnx.Sequential(), jnp.zeros((2, 3, 64, 64)))
    with pytest.raises(ValueError, match=r"got \[1, 2, 3, 4, 5, 6, \.\.\.\]$"):
        jconv.summary(nnx.Sequential(), [1, 2, 3, 4, 5, 6, 7, 8, 0] * 100)


@pytest.mark.parametrize("flax_kw, jconv_kw", [
    (dict(padding="SAME"), dict(padding="same")),
    (dict(strides=2, padding=1, kernel_dilation=2), dict(stride=2, padding=1, dilation=2)),
    (dict(strides=(1, 2), padding="VALID", feature_group_count=2), dict(stride=(1, 2), groups=2)),
    (dict(padding=((2, 0), (1, 1)), kernel_dilation=(1, 3)),
     dict(padding=((2, 0), (1, 1)), dilation=(1, 3))),
])
def test_flax_conv_counted_like_the_same_jconv_conv(flax_kw, jconv_kw):
    """nnx.Conv (HWIO kernel, channels last): the MACs and receptive fields of the jconv conv
    with the same geometry, two layers deep (so the second field depends on the first's)."""
    flax_model = _abstract(lambda r: nnx.Sequential(nnx.Conv(4, 8, (3, 3), rngs=r, **flax_kw),
                                                    nnx.Conv(8, 8, (3, 3), rngs=r, **flax_kw)))
    jconv_model = _abstract(lambda r: nnx.Sequential(
        Conv2d(4, 8, 3, data_format="NHWC", rngs=r, **jconv_kw),
        Conv2d(8, 8, 3, data_format="NHWC", rngs=r, **jconv_kw)))
    got, want = (jconv.summary(m, (2, 17, 15, 4)) for m in (flax_model, jconv_model))
    assert [(r.output_shape, r.params, r.macs, r.receptive_field) for r in got.layers] == \
        [(r.output_shape, r.params, r.macs, r.receptive_field) for r in want.layers]
    assert got.layers[0].macs > 0 and got.layers[1].receptive_field[0] > 3
    assert got.total_macs == want.total_macs


def test_flax_conv_1d_causal_and_3x3_hand_counts():
    s = jconv.summary(_abstract(lambda r: nnx.Sequential(
        nnx.Conv(2, 4, (3,), padding="CAUSAL", kernel_dilation=2, rngs=r))), (1, 10, 2))
    assert (s.layers[0].macs, s.layers[0].receptive_field) == (10 * 4 * 3 * 2, (5,))
    s = jconv.summary(_abstract(lambda r: nnx.Sequential(nnx.Conv(3, 16, (3, 3), rngs=r))),
                      (1, 32, 32, 3))
    assert (s.layers[0].macs, s.layers[0].receptive_field) == (16 * 32 * 32 * 27, (3, 3))
    # Input dilation multiplies inserted zeros: no single count, no known window.
    s = jconv.summary(_abstract(lambda r: nnx.Sequential(
        nnx.Conv(3, 4, (3, 3), input_dilation=2, padding=1, rngs=r))), (1, 8, 8, 3))
    assert (s.layers[0].macs, s.layers[0].receptive_field, s.total_macs) == (None, (), None)


class _Mystery(nnx.Module):
    """A leaf with parameters summary knows nothing about."""

    def __init__(self, rngs):
        self.w = nnx.Param(jnp.ones((8, 8)))

    def __call__(self, x):
        return x @ self.w[...]


def test_what_summary_cannot_count_is_marked_not_numbered():
    model = _abstract(lambda r: nnx.Sequential(
        Conv2d(3, 3, 3, padding=1, rngs=r), _Mystery(r), Conv2d(3, 3, 3, rngs=r),
        lambda x: x[:, :, ::2], nnx.relu))
    s = jconv.summary(model, (1, 3, 8, 8))
    assert [r.macs for r in s.layers] == [3 * 8 * 8 * 27, None, 3 * 6 * 6 * 27, 0, 0]
    assert [r.receptive_field for r in s.layers] == [(3, 3)] + [RF_UNKNOWN] * 4
    assert s.total_macs is None
    table = str(s)
    assert f"Total MACs: ? (the rows counted sum to {3 * 8 * 8 * 27 + 3 * 6 * 6 * 27:,})" in table
    assert "? MACs: not counted for _Mystery (layers jconv.summary cannot count)" in table
    assert "? RF: unknown from layers.1 (_Mystery) on" in table
    # A subsampling function without parameters: its own MACs 0, the field after it unknown.
    s = jconv.summary(_abstract(lambda r: nnx.Sequential(
        Conv2d(3, 3, 3, rngs=r), lambda x: x[..., ::2], Conv2d(3, 3, 1, rngs=r))), (1, 3, 8, 8))
    assert [r.receptive_field for r in s.layers] == [(3, 3), (), ()]
    assert s.total_macs == 3 * 6 * 6 * 27 + 3 * 6 * 3 * 3
    # A flatten keeps every element where it is: the field stays, Linear then sees it all.
    s = jconv.summary(_abstract(lambda r: nnx.Sequential(
        Conv2d(3, 2, 3, rngs=r), lambda x: x.reshape(x.shape[0], -1),
        nnx.Linear(72, 2, rngs=r))), (1, 3, 8, 8))
    assert [r.receptive_field for r in s.layers] == [(3, 3), (3, 3), None]
    assert "?" not in str(s)


def test_flax_conv_transpose_counted_like_jconv_conv_transpose():
    flax_model = _abstract(lambda r: nnx.Sequential(
        nnx.ConvTranspose(4, 6, (3, 2), strides=2, rngs=r)))
    jconv_model = _abstract(lambda r: nnx.Sequential(
        ConvTranspose2d(4, 6, (3, 2), stride=2, data_format="NHWC", rngs=r)))
    got, want = (jconv.summary(m, (2, 5, 7, 4)).layers[0] for m in (flax_model, jconv_model))
    assert got.macs == want.macs == 2 * 5 * 7 * 4 * 6 * 3 * 2
    assert got.receptive_field is None and want.receptive_field is None
