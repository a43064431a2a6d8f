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
