"""train.norm: the custom_vjp BatchNorm equals flax's nnx.BatchNorm (as jconv.nn.BatchNorm2d)
in values, gradients (to second order, float64), running statistics and eval mode, across
devices (SPMD jit and a named axis), and keeps what reads nnx.BatchNorm working (folding)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import jconv
from jconv import nn as jnn
from train.norm import BatchNorm2d, batch_norm_train

REPO = Path(__file__).resolve().parents[1]


def _pair(c: int, data_format: str, dtype, use_scale: bool = True, momentum: float = 0.1):
    """(flax's BatchNorm, ours) with the same random parameters and running statistics."""
    rng = np.random.default_rng(1)
    layers = []
    for cls in (jnn.BatchNorm2d, BatchNorm2d):
        bn = cls(c, 1e-5, momentum, data_format=data_format, param_dtype=dtype,
                 rngs=nnx.Rngs(0))
        for var, values in ((bn.mean, rng.normal(size=c)), (bn.var, rng.uniform(0.5, 2, c)),
                            (bn.scale, rng.uniform(0.5, 2, c)), (bn.bias, rng.normal(size=c))):
            var.set_value(jnp.asarray(values, dtype))
        rng = np.random.default_rng(1)  # the same values for the second layer
        if not use_scale:
            bn.scale, bn.use_scale = None, False
        layers.append(bn)
    return layers


def _x(shape, dtype, seed=0, offset=3.0):
    # A mean far from 0 (offset) and from the running mean: the statistics must not cancel.
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * 2 + offset, dtype)


def _loss_and_grads(bn: nnx.Module, x: jnp.ndarray, w: jnp.ndarray):
    graphdef, params, stats = nnx.split(bn, nnx.Param, nnx.BatchStat)

    def loss(params, x, stats):
        m = nnx.merge(graphdef, params, stats)
        out = jnp.sum(jnp.tanh(m(x)) * w)  # a non-linear head: every gradient term matters
        return out, nnx.as_pure(nnx.state(m, nnx.BatchStat))

    (value, new_stats), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        nnx.as_pure(params), x, nnx.as_pure(stats))
    return value, new_stats, grads


@pytest.mark.parametrize("data_format,shape,use_scale", [
    ("NHWC", (4, 5, 3, 6), True), ("NCHW", (3, 6, 4, 5), True), ("NHWC", (2, 3, 3, 4), False)])
def test_train_mode_matches_flax_float64(data_format, shape, use_scale):
    jax.config.update("jax_enable_x64", True)
    try:
        c = shape[-1] if data_format == "NHWC" else shape[1]
        ref, ours = _pair(c, data_format, jnp.float64, use_scale)
        x, w = _x(shape, jnp.float64), _x(shape, jnp.float64, seed=1, offset=0)
        v_ref, s_ref, g_ref = _loss_and_grads(ref, x, w)
        v, s, g = _loss_and_grads(ours, x, w)
        assert float(v) == pytest.approx(float(v_ref), rel=1e-12)
        for a, b in zip(jax.tree.leaves((s, g)), jax.tree.leaves((s_ref, g_ref))):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        assert jax.tree.structure(g) == jax.tree.structure(g_ref)  # same names, no scale
        assert ("scale" in g[0]) == use_scale
    finally:
        jax.config.update("jax_enable_x64", False)


def test_float32_against_float64_truth():
    """A batch mean 25x its standard deviation: Flax's E[x^2] - E[x]^2 cancels, the sums
    of x minus each channel's first value do not."""
    ref, ours = _pair(8, "NHWC", jnp.float32, momentum=0.2)
    x = _x((16, 6, 6, 8), jnp.float32, offset=50.0)
    xd = np.asarray(x, np.float64)
    mean, var = xd.mean((0, 1, 2)), xd.var((0, 1, 2))
    old_mean, old_var = np.asarray(ours.mean[...], np.float64), np.asarray(ours.var[...])
    scale, bias = np.asarray(ours.scale[...], np.float64), np.asarray(ours.bias[...])
    truth = (xd - mean) / np.sqrt(var + 1e-5) * scale + bias
    y_ref, y = ref(x), ours(x)
    assert y.dtype == y_ref.dtype == jnp.float32
    err, err_ref = float(np.abs(y - truth).max()), float(np.abs(y_ref - truth).max())
    assert err <= 1e-5 and err_ref > 10 * err, (err, err_ref)
    np.testing.assert_allclose(ours.mean[...], 0.8 * old_mean + 0.2 * mean, rtol=1e-6)
    np.testing.assert_allclose(ours.var[...], 0.8 * old_var + 0.2 * var, rtol=1e-5)
    assert ours.mean[...].dtype == ours.var[...].dtype == jnp.float32


def test_eval_mode_and_mask_are_flax():
    ref, ours = _pair(4, "NCHW", jnp.float32)
    x = _x((3, 4, 5, 5), jnp.float32)
    ref.eval(), ours.eval()
    np.testing.assert_array_equal(ours(x), ref(x))
    ref.train(), ours.train()
    mask = jnp.asarray(np.random.default_rng(2).uniform(size=x.shape) > 0.3)
    np.testing.assert_array_equal(ours(x, mask=mask), ref(x, mask=mask))
    np.testing.assert_array_equal(ours.var[...], ref.var[...])


def test_no_mode_is_a_clear_error():
    bn = BatchNorm2d(2, rngs=nnx.Rngs(0))
    bn.use_running_average = None
    with pytest.raises(ValueError, match="use_running_average"):
        bn(jnp.ones((1, 2, 2, 2)))


@pytest.mark.parametrize("use_scale", [True, False])
def test_check_grads_order_2_float64(use_scale):
    jax.config.update("jax_enable_x64", True)
    try:
        x = _x((3, 4, 2, 5), jnp.float64)
        rng = np.random.default_rng(3)
        scale = jnp.asarray(rng.uniform(0.5, 2, 5)) if use_scale else None
        bias = jnp.asarray(rng.normal(size=5))

        def f(x, scale, bias):
            # every output, so the cotangents of mean and var are checked too
            y, mean, var = batch_norm_train(x, scale, bias, (0, 1, 2), 1e-5,
                                            jnp.dtype(jnp.float64))
            return jnp.tanh(y), jnp.sin(mean), jnp.log(var)

        check_grads(f, (x, scale, bias), order=2, modes=("rev",), atol=1e-6, rtol=1e-6)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_the_relu_model_uses_it_and_it_folds():
    from train.config import load_config
    from train.model import CifarCNN, ModelOptions, build_model

    airbench = load_config("cifar.yaml", ["model.widths=[8]"])
    assert type(build_model(ModelOptions.from_config(airbench.model), 0).groups[0].norms[0]) \
        is jnn.BatchNorm2d  # GELU networks keep Flax's (slower there: docs/performance.md)

    cfg = load_config("vgg.yaml", ["model.widths=[8]", "model.convs_per_stage=1",
                                   "model.conv_impl=lax"])
    model = CifarCNN(ModelOptions.from_config(cfg.model), rngs=nnx.Rngs(0))
    bn = model.blocks[0].bn
    assert isinstance(bn, BatchNorm2d) and isinstance(bn, nnx.BatchNorm)
    x = _x((2, 32, 32, 3), jnp.float32)
    model(x)  # train mode: updates the running statistics
    with pytest.raises(ValueError, match="model is in train mode: BatchNorm 'blocks.0.bn'"):
        jconv.fold_conv_bn_graph(model, x)
    model.eval()
    folded, report = jconv.fold_conv_bn_graph(model, x)
    assert len(report.folded) == 1 and not report.skipped
    np.testing.assert_allclose(folded(x), model(x), rtol=1e-4, atol=1e-4)


MULTI_DEVICE = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jconv import nn as jnn
    from train.norm import BatchNorm2d
    jax.config.update("jax_enable_x64", True)
    assert jax.device_count() == 4
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 3, 3, 5)) * 2 + 3)
    w = jnp.asarray(rng.normal(size=x.shape))

    def run(cls, x, w, axis_name=None):
        bn = cls(5, data_format="NHWC", param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        bn.axis_name = axis_name
        for stat in (bn.mean, bn.var):  # nnx keeps float32 statistics: float64 here
            stat.set_value(stat[...].astype(jnp.float64))
        g, params, stats = nnx.split(bn, nnx.Param, nnx.BatchStat)
        def loss(params, x, stats):
            m = nnx.merge(g, params, stats)
            return jnp.sum(jnp.tanh(m(x)) * w), nnx.as_pure(nnx.state(m, nnx.BatchStat))
        (v, s), gr = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            nnx.as_pure(params), x, nnx.as_pure(stats))
        return v, s, gr

    one = jax.jit(lambda x, w: run(BatchNorm2d, x, w))(x, w)
    sharding = NamedSharding(mesh, P("data"))
    spmd = jax.jit(lambda x, w: run(BatchNorm2d, x, w))(jax.device_put(x, sharding),
                                                        jax.device_put(w, sharding))
    def named(cls):
        # per-device models over a named axis: the statistics over all devices; the
        # replicated parameters' gradients summed over them (autodiff's transpose)
        def body(x, w):
            v, s, (gp, gx) = run(cls, x, w, "data")
            return jax.lax.psum(v, "data"), s, (gp, gx)
        return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P("data"), P("data")),
                                     out_specs=(P(), P(), (P(), P("data")))))(x, w)
    ours, flax = named(BatchNorm2d), named(jnn.BatchNorm2d)
    for name, got in (("spmd", spmd), ("named axis", ours), ("flax named axis", flax)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(one)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12,
                                       err_msg=name)
    print("OK")
""")


def test_four_devices_spmd_and_named_axis_match_one_device():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    out = subprocess.run([sys.executable, "-c", MULTI_DEVICE], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-3000:]


def test_wrong_channel_count_names_the_layer_in_training_mode():
    from flax import nnx

    from train.norm import BatchNorm2d, OnednnBatchNorm2d

    for cls in (BatchNorm2d, OnednnBatchNorm2d):
        bn = cls(5, data_format="NHWC", rngs=nnx.Rngs(0))
        with pytest.raises(ValueError, match=rf"{cls.__name__}\(num_features=5\) expects 5 "
                                             r"channels on axis 3"):
            bn(jnp.ones((2, 4, 4, 3)))
