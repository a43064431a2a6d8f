"""Conv+BN folding: folded and unfolded eval-mode models agree on real CIFAR-10 test images
(when the shared data is present) and on random data; edge cases and error messages."""

from __future__ import annotations

import pickle
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import normal

import jconv
from jconv.bench.fold import bench
from jconv.nn import BatchNorm2d, Conv2d, MaxPool2d

# One compiled forward per model structure instead of hundreds of eager ops.
_forward = nnx.jit(lambda model, x: model(x))

CIFAR_TEST = (Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset"
              / "cifar-10-batches-py" / "test_batch")


def _cnn(data_format="NCHW", bias=True, seed=0):
    """The seeds' 2-block CNN with a linear head, BN statistics made non-trivial."""
    r = nnx.Rngs(seed)
    kw = dict(data_format=data_format)
    model = nnx.Sequential(
        Conv2d(3, 16, 3, padding=1, bias=bias, rngs=r, **kw), BatchNorm2d(16, rngs=r, **kw),
        nnx.relu, MaxPool2d(2, **kw),
        nnx.Sequential(Conv2d(16, 32, 3, padding=1, bias=bias, rngs=r, **kw),
                       BatchNorm2d(32, rngs=r, **kw)),
        nnx.relu, MaxPool2d(2, **kw),
        lambda x: x.reshape(x.shape[0], -1), nnx.Linear(32 * 8 * 8, 10, rngs=r))
    rng = np.random.default_rng(seed)
    for _, bn in nnx.iter_graph(model):
        if isinstance(bn, BatchNorm2d):
            bn.scale[...] = jnp.asarray(rng.uniform(0.5, 2.0, bn.num_features), jnp.float32)
            bn.bias[...] = jnp.asarray(rng.normal(size=bn.num_features), jnp.float32)
    shape = (8, 3, 32, 32) if data_format == "NCHW" else (8, 32, 32, 3)
    for i in range(2):  # train mode: running statistics move away from (0, 1)
        _forward(model, normal(i, shape) * 2.0 + 0.5)
    model.eval()
    return model


def _assert_same(model, x):
    folded = jconv.fold_conv_bn_sequential(model)
    want, got = _forward(model, x), _forward(folded, x)
    scale = float(jnp.abs(want).max())
    assert float(jnp.abs(got - want).max()) <= 1e-5 * max(1.0, scale)
    return folded


def test_folds_on_real_cifar_images():
    if not CIFAR_TEST.exists():
        pytest.skip(f"CIFAR-10 test batch not found at {CIFAR_TEST} (shared data absent)")
    with open(CIFAR_TEST, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    images = np.asarray(batch[b"data"][:16], np.float32).reshape(16, 3, 32, 32) / 255.0
    mean, std = images.mean(axis=(0, 2, 3), keepdims=True), images.std(axis=(0, 2, 3),
                                                                        keepdims=True)
    folded = _assert_same(_cnn(), jnp.asarray((images - mean) / std))
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert "BatchNorm2d" not in kinds and kinds.count("Conv2d") == 1  # one nested in Sequential
    assert [type(layer).__name__ for layer in folded.layers[3].layers] == ["Conv2d"]


@pytest.mark.parametrize("data_format,bias", [("NCHW", True), ("NHWC", False)])
def test_folds_on_random_data(data_format, bias):
    shape = (4, 3, 32, 32) if data_format == "NCHW" else (4, 32, 32, 3)
    model = _cnn(data_format, bias, seed=1)
    _assert_same(model, normal(7, shape))


def test_fold_pair_formula_and_originals_untouched():
    r = nnx.Rngs(0)
    conv, bn = Conv2d(2, 3, 1, bias=False, rngs=r), BatchNorm2d(3, eps=0.25, rngs=r)
    conv.kernel[...] = jnp.ones((3, 2, 1, 1))
    bn.mean[...] = jnp.array([1.0, 2.0, 3.0])
    bn.var[...] = jnp.array([0.75, 3.75, 8.75])  # var + eps = 1, 4, 9 -> s = gamma / 1, 2, 3
    bn.scale[...] = jnp.array([1.0, 2.0, 3.0])
    bn.bias[...] = jnp.array([0.5, 0.0, -1.0])
    folded = jconv.fold_conv_bn(conv, bn)
    np.testing.assert_allclose(folded.kernel[...][:, 0, 0, 0], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(folded.bias[...], [-0.5, -2.0, -4.0])  # -mean*s + beta
    assert conv.bias is None and float(conv.kernel[...].sum()) == 6.0


def test_bad_arguments():
    r = nnx.Rngs(0)
    conv = Conv2d(3, 4, 3, rngs=r)
    with pytest.raises(TypeError, match="conv must be a jconv.nn.Conv1d/Conv2d/Conv3d or "
                                        "ConvTranspose1d/2d/3d, got Linear"):
        jconv.fold_conv_bn(nnx.Linear(3, 4, rngs=r), BatchNorm2d(4, rngs=r))
    with pytest.raises(TypeError, match="bn must be a flax.nnx.BatchNorm .*got Conv2d"):
        jconv.fold_conv_bn(conv, conv)
    with pytest.raises(ValueError, match="bn.num_features=5 must equal conv.out_channels=4"):
        jconv.fold_conv_bn(conv, BatchNorm2d(5, rngs=r))
    with pytest.raises(ValueError, match=r"bn.axis=-1 does not normalise the channel axis of a "
                                         r"data_format='NCHW' conv"):
        jconv.fold_conv_bn(conv, BatchNorm2d(4, data_format="NHWC", rngs=r))
    with pytest.raises(TypeError, match="model must be a flax.nnx.Sequential, got Conv2d"):
        jconv.fold_conv_bn_sequential(conv)


def test_bench_runs_and_agrees():
    # Tiny batch, one repeat: checks the benchmark is well formed, not its timings.
    r = bench(batch=2, repeats=1)
    assert r["unfolded_ms"] > 0 and r["folded_ms"] > 0
    assert r["speedup"] == pytest.approx(r["unfolded_ms"] / r["folded_ms"])
    assert r["max_abs_diff"] < 1e-4


def _random_stats(bn, seed):
    """Non-trivial running statistics and affine parameters, eval mode."""
    rng = np.random.default_rng(seed)
    c = bn.num_features
    for var, values in ((bn.mean, rng.normal(size=c)), (bn.var, rng.uniform(0.2, 3, c)),
                        (bn.scale, rng.uniform(0.5, 2, c)), (bn.bias, rng.normal(size=c))):
        var[...] = jnp.asarray(values, var[...].dtype)
    bn.eval()


_LAYERS = {(1, False): jconv.nn.Conv1d, (3, False): jconv.nn.Conv3d,
           (1, True): jconv.nn.ConvTranspose1d, (3, True): jconv.nn.ConvTranspose3d}


# Each layer kind channels-first and channels-last, each in one of the two dtypes (every
# combination of format and dtype met twice per rank).
_PAIR_CASES = [(nd, t, last, ("float32", "float64")[(last + i) % 2])
               for i, (nd, t) in enumerate(_LAYERS) for last in (False, True)]


@pytest.mark.parametrize("ndim,transposed,channels_last,dtype", _PAIR_CASES)
def test_fold_pair_1d_and_3d(ndim, transposed, channels_last, dtype, x64):
    fmt = {1: ("NCL", "NLC"), 3: ("NCDHW", "NDHWC")}[ndim][channels_last]
    r = nnx.Rngs(ndim)
    kw = dict(stride=2, groups=2, bias=not channels_last, data_format=fmt,
              param_dtype=jnp.dtype(dtype), rngs=r)
    conv = _LAYERS[ndim, transposed](4, 6, 3, **kw)
    bn = nnx.BatchNorm(6, axis=-1 if channels_last else 1, param_dtype=jnp.dtype(dtype),
                       rngs=r)
    _random_stats(bn, seed=ndim)
    folded = jconv.fold_conv_bn(conv, bn)
    assert type(folded) is type(conv) and folded.kernel[...].dtype == jnp.dtype(dtype)
    spatial = (9,) if ndim == 1 else (5, 4, 6)
    shape = (2, *spatial, 4) if channels_last else (2, 4, *spatial)
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), dtype)
    want, got = bn(conv(x)), folded(x)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol,
                               atol=tol * float(jnp.abs(want).max()))


def test_fold_sequential_1d():
    r = nnx.Rngs(0)
    model = nnx.Sequential(jconv.nn.Conv1d(3, 8, 5, padding=2, rngs=r),
                           nnx.BatchNorm(8, axis=1, rngs=r), nnx.relu,
                           jconv.nn.ConvTranspose1d(8, 4, 2, stride=2, rngs=r),
                           nnx.BatchNorm(4, axis=1, rngs=r))
    for layer in (model.layers[1], model.layers[4]):
        _random_stats(layer, seed=layer.num_features)
    folded = _assert_same(model, normal(3, (2, 3, 20)))
    assert [type(layer).__name__ for layer in folded.layers] == ["Conv1d", "custom_jvp",
                                                                 "ConvTranspose1d"]


def test_mismatched_1d_3d_pairs():
    r = nnx.Rngs(0)
    with pytest.raises(ValueError, match=r"bn is a BatchNorm2d for data_format='NCHW', which "
                                         r"cannot follow the 1-D Conv1d \(data_format='NCL'\)"):
        jconv.fold_conv_bn(jconv.nn.Conv1d(3, 4, 3, rngs=r), BatchNorm2d(4, rngs=r))
    with pytest.raises(ValueError, match=r"bn.axis=-1 does not normalise the channel axis of a "
                                         r"data_format='NCDHW' conv \(expected one of \(1, -4\)\)"):
        jconv.fold_conv_bn(jconv.nn.Conv3d(3, 4, 3, rngs=r), nnx.BatchNorm(4, rngs=r))
    with pytest.raises(ValueError, match=r"bn.axis=1 .*data_format='NLC' conv \(expected one "
                                         r"of \(2, -1\)\)"):
        jconv.fold_conv_bn(jconv.nn.Conv1d(3, 4, 3, data_format="NLC", rngs=r),
                           nnx.BatchNorm(4, axis=1, rngs=r))
    with pytest.raises(ValueError, match="bn.num_features=4 must equal conv.out_channels=6"):
        jconv.fold_conv_bn(jconv.nn.ConvTranspose3d(3, 6, 2, rngs=r),
                           nnx.BatchNorm(4, axis=1, rngs=r))
    with pytest.raises(TypeError, match=r"bn must be a flax.nnx.BatchNorm \(e.g. .*got Conv3d"):
        jconv.fold_conv_bn(jconv.nn.Conv3d(3, 4, 3, rngs=r), jconv.nn.Conv3d(4, 4, 1, rngs=r))
