"""Graph-level conv+BN folding (jconv.fold_conv_bn_graph): which pairs fold on real data-flow
edges, which are reported as skipped and why, and folded == unfolded in eval mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jconv
from jconv.fold_graph import FoldedBatchNorm, fold_conv_transpose_bn
from jconv.nn import BatchNorm2d, Conv2d, ConvTranspose2d, MaxPool2d
from train.config import load_config
from train.model import CifarCNN, ModelOptions


def _cnn(seed: int, *overrides: str) -> CifarCNN:
    """vgg.yaml's network with these model.* overrides."""
    return CifarCNN(ModelOptions.from_config(load_config("vgg.yaml", overrides).model),
                    rngs=nnx.Rngs(seed))

_forward = nnx.jit(lambda model, x: model(x))


def _randomise_bn(model: nnx.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters in every BatchNorm, eval mode."""
    rng = np.random.default_rng(seed)
    for _, bn in nnx.iter_graph(model):
        if isinstance(bn, nnx.BatchNorm):
            c = bn.num_features
            for var, values in ((bn.mean, rng.normal(size=c)), (bn.var, rng.uniform(0.2, 3, c)),
                                (bn.scale, rng.uniform(0.5, 2, c)), (bn.bias, rng.normal(size=c))):
                var[...] = jnp.asarray(values, var[...].dtype)
    model.eval()


def _x(shape, dtype=jnp.float32, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), dtype)


def _max_diff(model, folded, x) -> float:
    return float(jnp.abs(_forward(folded, x) - _forward(model, x)).max())


def _assert_folded_close(model, folded, x, tol: float = 1e-5) -> None:
    """Folded and original agree to ``tol`` relative to the output's largest value: folding
    rounds the weights once in float32, and how that shows depends on the output's scale
    and on the CPU's vector width (XLA's summation order)."""
    scale = max(1.0, float(jnp.abs(_forward(model, x)).max()))
    assert _max_diff(model, folded, x) <= tol * scale


class Residual(nnx.Module):
    """ResNet basic block with a projection shortcut: every conv feeds only its BN."""

    def __init__(self, c_in: int, c_out: int, rngs: nnx.Rngs):
        self.conv1 = Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False, rngs=rngs)
        self.bn1 = BatchNorm2d(c_out, rngs=rngs)
        self.conv2 = Conv2d(c_out, c_out, 3, padding=1, bias=False, rngs=rngs)
        self.bn2 = BatchNorm2d(c_out, rngs=rngs)
        self.proj = Conv2d(c_in, c_out, 1, stride=2, bias=False, rngs=rngs)
        self.proj_bn = BatchNorm2d(c_out, rngs=rngs)

    def __call__(self, x):
        y = nnx.relu(self.bn1(self.conv1(x)))
        return nnx.relu(self.bn2(self.conv2(y)) + self.proj_bn(self.proj(x)))


class ConvThenBN(nnx.Module):
    """conv -> ``between`` -> BN, optionally returning the conv output too."""

    def __init__(self, between=None, shared=False, rngs=None):
        rngs = rngs or nnx.Rngs(0)
        self.between, self.shared = between, shared
        self.conv = Conv2d(3, 4, 3, padding=1, rngs=rngs)
        self.bn = BatchNorm2d(4, rngs=rngs)

    def __call__(self, x):
        y = self.conv(x)
        z = self.bn(y if self.between is None else self.between(y))
        return z + y if self.shared else z


class DetailedConvNet(nnx.Module):
    """Seed 000's 2-block CNN (conv with bias -> BN -> ReLU -> max pool, twice), NCHW."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1, self.bn1 = Conv2d(3, 16, 3, padding=1, rngs=rngs), BatchNorm2d(16, rngs=rngs)
        self.pool1 = MaxPool2d(2, 2)
        self.conv2, self.bn2 = Conv2d(16, 32, 3, padding=1, rngs=rngs), BatchNorm2d(32, rngs=rngs)
        self.pool2 = MaxPool2d(2, 2)

    def __call__(self, x):
        x = self.pool1(nnx.relu(self.bn1(self.conv1(x))))
        return self.pool2(nnx.relu(self.bn2(self.conv2(x))))


@pytest.mark.slow
def test_train_cnn_float32():
    model = _cnn(0, "model.widths=[8,16]")
    _randomise_bn(model)
    before = jax.tree.map(np.asarray, nnx.state(model))
    x = _x((4, 32, 32, 3))
    folded, report = jconv.fold_conv_bn_graph(model, jax.ShapeDtypeStruct(x.shape, x.dtype))
    assert [p.conv for p in report.folded] == [f"blocks.{i}.conv" for i in (0, 2, 3, 5)]
    assert [p.bn for p in report.folded] == [f"blocks.{i}.bn" for i in (0, 2, 3, 5)]
    assert report.skipped == ()
    assert all(isinstance(folded.blocks[i].bn, FoldedBatchNorm) for i in (0, 2, 3, 5))
    _assert_folded_close(model, folded, x)
    # The original is untouched: same types, same values.
    assert isinstance(model.blocks[0].bn, BatchNorm2d) and model.blocks[0].conv.bias is None
    jax.tree.map(np.testing.assert_array_equal, before,
                 jax.tree.map(np.asarray, nnx.state(model)))


def test_train_cnn_float64(x64):
    model = _cnn(1, "model.widths=[8]", "model.convs_per_stage=1", "model.data_format=NCHW",
                 "model.dtype=float64", "model.conv_impl=lax")
    _randomise_bn(model, seed=1)
    x = _x((2, 32, 32, 3), jnp.float64)
    folded, report = jconv.fold_conv_bn_graph(model, x)
    assert len(report.folded) == 1

    def head_in_float64(m):  # CifarCNN casts its logits to float32: compare before that
        y = jnp.transpose(x, (0, 3, 1, 2))
        for block in m.blocks:
            y = block(y)
        return m.head(m.pool(y))

    want, got = head_in_float64(model), head_in_float64(folded)
    assert got.dtype == jnp.float64 and float(jnp.abs(want).max()) > 0.1
    assert float(jnp.abs(got - want).max()) < 1e-12


def test_residual_block_folds_all_three():
    model = Residual(4, 8, nnx.Rngs(0))
    _randomise_bn(model)
    x = _x((2, 4, 16, 16))
    folded, report = jconv.fold_conv_bn_graph(model, x)
    assert {(p.conv, p.bn) for p in report.folded} == {
        ("conv1", "bn1"), ("conv2", "bn2"), ("proj", "proj_bn")}
    _assert_folded_close(model, folded, x)


def test_shared_conv_output_does_not_fold():
    model = ConvThenBN(shared=True)
    _randomise_bn(model)
    x = _x((1, 3, 8, 8))
    folded, report = jconv.fold_conv_bn_graph(model, x)
    assert report.folded == ()
    assert [(p.conv, p.bn, p.reason) for p in report.skipped] == [
        ("conv", "bn", "the conv output is also used by add")]
    assert isinstance(folded.bn, BatchNorm2d)
    assert _max_diff(model, folded, x) == 0.0


def test_conv_output_returned_does_not_fold():
    class Both(ConvThenBN):
        def __call__(self, x):
            y = self.conv(x)
            return self.bn(y), y

    model = Both()
    _randomise_bn(model)
    _, report = jconv.fold_conv_bn_graph(model, _x((1, 3, 8, 8)))
    assert report.skipped[0].reason == "the conv output is also used by the model's output"


@pytest.mark.parametrize("between,op", [(jnp.tanh, "tanh"), (lambda y: y * 2.0, "mul")])
def test_op_between_conv_and_bn_does_not_fold(between, op):
    model = ConvThenBN(between=between)
    _randomise_bn(model)
    x = _x((1, 3, 8, 8))
    folded, report = jconv.fold_conv_bn_graph(model, x)
    assert report.folded == () and len(report.skipped) == 1
    assert report.skipped[0].reason.startswith(op)
    assert "between the conv and the BatchNorm" in report.skipped[0].reason
    assert _max_diff(model, folded, x) == 0.0


def test_train_mode_model_is_an_error():
    model = _cnn(0, "model.widths=[8]", "model.convs_per_stage=1")  # fresh: train mode
    with pytest.raises(ValueError, match=r"model is in train mode: BatchNorm 'blocks.0.bn' "
                                         r"normalises with batch statistics"):
        jconv.fold_conv_bn_graph(model, _x((1, 32, 32, 3)))


def test_one_bn_in_train_mode_is_skipped():
    model = Residual(4, 8, nnx.Rngs(0))
    _randomise_bn(model)
    model.bn2.use_running_average = False
    folded, report = jconv.fold_conv_bn_graph(model, _x((2, 4, 16, 16)))
    assert len(report.folded) == 2
    assert [(p.conv, p.bn) for p in report.skipped] == [("conv2", "bn2")]
    assert "BatchNorm in train mode" in report.skipped[0].reason
    assert isinstance(folded.bn2, BatchNorm2d)


def test_layer_called_twice_does_not_fold():
    class Twice(ConvThenBN):
        def __call__(self, x):
            return self.bn(self.conv(x)) + nnx.relu(self.conv(x))

    model = Twice()
    _randomise_bn(model)
    x = _x((1, 3, 8, 8))
    folded, report = jconv.fold_conv_bn_graph(model, x)
    assert report.folded == ()
    assert "also called elsewhere" in report.skipped[0].reason
    assert _max_diff(model, folded, x) == 0.0


@pytest.mark.slow
def test_seed_networks():
    model = DetailedConvNet(nnx.Rngs(0))
    _randomise_bn(model)
    x = _x((2, 3, 32, 32))
    folded, report = jconv.fold_conv_bn_graph(model, x)
    assert [(p.conv, p.bn) for p in report.folded] == [("conv1", "bn1"), ("conv2", "bn2")]
    assert folded(x).shape == (2, 32, 8, 8)
    _assert_folded_close(model, folded, x)
    practice = nnx.Sequential(Conv2d(3, 32, 5, padding=2, rngs=nnx.Rngs(0)), nnx.relu,
                              MaxPool2d(2, 2), Conv2d(32, 64, 3, padding=1, rngs=nnx.Rngs(1)),
                              nnx.relu, MaxPool2d(2, 2))
    _, report = jconv.fold_conv_bn_graph(practice, _x((1, 3, 32, 32)))
    assert report.folded == () and report.skipped == ()


def test_sequential_and_nhwc():
    r = nnx.Rngs(0)
    model = nnx.Sequential(Conv2d(3, 8, 3, data_format="NHWC", rngs=r),
                           BatchNorm2d(8, data_format="NHWC", rngs=r), nnx.relu)
    _randomise_bn(model)
    x = _x((2, 10, 10, 3))
    folded, report = jconv.fold_conv_bn_graph(model, x)
    assert report.folded[0].conv == "layers.0" and report.folded[0].bn == "layers.1"
    _assert_folded_close(model, folded, x)


def test_conv_transpose_folds():
    r = nnx.Rngs(0)
    model = nnx.Sequential(ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                           groups=2, rngs=r), BatchNorm2d(6, rngs=r))
    _randomise_bn(model)
    x = _x((2, 4, 5, 5))
    folded, report = jconv.fold_conv_bn_graph(model, x)
    assert len(report.folded) == 1 and isinstance(folded.layers[0], ConvTranspose2d)
    _assert_folded_close(model, folded, x)


def test_mismatched_pair_is_reported():
    r = nnx.Rngs(0)
    # A BatchNorm over the wrong axis still runs (4 == W here) but is no per-channel map.
    model = nnx.Sequential(Conv2d(3, 4, 3, padding=1, rngs=r),
                           BatchNorm2d(4, data_format="NHWC", rngs=r))
    _randomise_bn(model)
    _, report = jconv.fold_conv_bn_graph(model, _x((1, 3, 4, 4)))
    assert report.folded == ()
    assert "bn.axis=-1 does not normalise the channel axis" in report.skipped[0].reason


def test_bad_arguments():
    with pytest.raises(TypeError, match="model must be a flax.nnx.Module, got str"):
        jconv.fold_conv_bn_graph("model", jnp.ones(2))
    bn = BatchNorm2d(4, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError,
                       match="conv must be a jconv.nn.ConvTranspose1d/2d/3d, got Conv2d"):
        fold_conv_transpose_bn(Conv2d(3, 4, 1, rngs=nnx.Rngs(0)), bn)
    with pytest.raises(ValueError, match="bn.num_features=4 must equal conv.out_channels=6"):
        fold_conv_transpose_bn(ConvTranspose2d(3, 6, 1, rngs=nnx.Rngs(0)), bn)


def test_folding_leaves_the_classes_as_they_were():
    """The interception restores what each class itself defined: Conv2d inherits ``__call__``
    from _ConvNd and must not keep a copy of it (jconv.summary's test checks just that)."""
    from jconv.nn import _ConvNd, _ConvTransposeNd

    classes = (_ConvNd, _ConvTransposeNd, jconv.nn.Conv1d, Conv2d, jconv.nn.Conv3d,
               jconv.nn.ConvTranspose1d, ConvTranspose2d, jconv.nn.ConvTranspose3d, BatchNorm2d)
    own = {cls: cls.__dict__.get("__call__") for cls in classes}
    model = Residual(4, 8, nnx.Rngs(0))
    _randomise_bn(model)
    jconv.fold_conv_bn_graph(model, _x((2, 4, 16, 16)))
    assert {cls: cls.__dict__.get("__call__") for cls in own} == own
    assert "__call__" not in Conv2d.__dict__ and "__call__" in _ConvNd.__dict__


class NetNd(nnx.Module):
    """conv -> BN -> relu -> strided conv -> BN -> relu -> transposed conv -> BN, in 1-D or
    3-D, channels-first or channels-last: every pair folds."""

    def __init__(self, ndim: int, channels_last: bool, dtype: str, rngs: nnx.Rngs):
        fmt = {1: ("NCL", "NLC"), 3: ("NCDHW", "NDHWC")}[ndim][channels_last]
        conv, up = {1: (jconv.nn.Conv1d, jconv.nn.ConvTranspose1d),
                    3: (jconv.nn.Conv3d, jconv.nn.ConvTranspose3d)}[ndim]
        kw = dict(data_format=fmt, param_dtype=jnp.dtype(dtype), rngs=rngs)
        bn = dict(axis=-1 if channels_last else 1, param_dtype=jnp.dtype(dtype), rngs=rngs)
        self.conv1, self.bn1 = conv(3, 6, 3, padding=1, bias=False, **kw), nnx.BatchNorm(6, **bn)
        self.conv2, self.bn2 = conv(6, 8, 3, stride=2, padding=1, **kw), nnx.BatchNorm(8, **bn)
        self.up, self.bn3 = up(8, 4, 2, stride=2, groups=2, **kw), nnx.BatchNorm(4, **bn)

    def __call__(self, x):
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        return self.bn3(self.up(y))


@pytest.mark.parametrize("ndim,channels_last,dtype", [
    (1, False, "float32"), (1, True, "float64"), (3, False, "float64"), (3, True, "float32")])
def test_1d_and_3d_networks_fold(ndim, channels_last, dtype, x64):
    model = NetNd(ndim, channels_last, dtype, nnx.Rngs(ndim))
    _randomise_bn(model, seed=ndim)
    spatial = (16,) if ndim == 1 else (4, 6, 8)
    x = _x((2, *spatial, 3) if channels_last else (2, 3, *spatial), jnp.dtype(dtype))
    folded, report = jconv.fold_conv_bn_graph(model, x)
    assert [(p.conv, p.bn) for p in report.folded] == [("conv1", "bn1"), ("conv2", "bn2"),
                                                       ("up", "bn3")]
    assert report.skipped == () and type(folded.up) is type(model.up)
    want = _forward(model, x)
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert _max_diff(model, folded, x) <= tol * max(1.0, float(jnp.abs(want).max()))


def test_mismatched_1d_pair_is_reported():
    r = nnx.Rngs(0)
    # A BatchNorm over L (4 == C here) runs but is no per-channel map of the conv.
    model = nnx.Sequential(jconv.nn.Conv1d(3, 4, 3, padding=1, rngs=r), nnx.BatchNorm(4, rngs=r))
    _randomise_bn(model)
    _, report = jconv.fold_conv_bn_graph(model, _x((1, 3, 4)))
    assert report.folded == ()
    assert report.skipped[0].reason == ("bn.axis=-1 does not normalise the channel axis of a "
                                        "data_format='NCL' conv (expected one of (1, -2))")
