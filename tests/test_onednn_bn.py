"""oneDNN batch normalisation through the XLA FFI (jconv/_onednn_bn.py, jconv/_onednn.cc) and
train.norm.OnednnBatchNorm2d: outputs, statistics, running-statistics update and gradients
against PyTorch's F.batch_norm(training=True) in float32; errors raised in Python before any
native call; the non-CPU branch; the model's choice of BatchNorm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jconv import _onednn_bn
from jconv import nn as jnn

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.skipif(not _onednn_bn.available(),
                                reason="jconv's oneDNN extension (with batch norm) is absent")

RTOL = 1e-5


def _rel(got, want) -> float:
    got = np.asarray(got, np.float64)
    want = np.asarray(want.detach() if hasattr(want, "detach") else want, np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def _data(shape, c, use_scale, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 3).astype(np.float32)  # a mean away from 0
    g = rng.standard_normal(shape).astype(np.float32)
    scale = rng.uniform(0.5, 2, c).astype(np.float32) if use_scale else None
    shift = rng.standard_normal(c).astype(np.float32)
    return x, g, scale, shift


def _torch_nchw(a: np.ndarray, nhwc: bool):
    t = torch.tensor(a)
    return t.permute(0, 3, 1, 2) if nhwc else t


@pytest.mark.parametrize("data_format,shape,use_scale", [
    ("NHWC", (6, 5, 4, 48), False),   # airbench's case: no learned scale, C a multiple of 16
    ("NHWC", (4, 3, 5, 7), True),     # C with a vector tail
    ("NCHW", (3, 7, 4, 5), True),
    ("NCHW", (5, 6, 3, 3), False)])
def test_matches_torch_batch_norm_training(data_format, shape, use_scale):
    nhwc = data_format == "NHWC"
    c = shape[3] if nhwc else shape[1]
    x, g, scale, shift = _data(shape, c, use_scale)

    def loss(x, scale, shift):
        y, mean, var = _onednn_bn.batch_norm_train(x, scale, shift, 1e-5, data_format)
        return jnp.sum(y * g), (y, mean, var)

    (_, (y, mean, var)), (dx, dscale, dshift) = jax.jit(jax.value_and_grad(
        loss, argnums=(0, 1, 2), has_aux=True))(x, scale, shift)

    tx = _torch_nchw(x, nhwc).requires_grad_()
    tscale = torch.tensor(scale).requires_grad_() if use_scale else None
    tshift = torch.tensor(shift).requires_grad_()
    rm, rv = torch.zeros(c), torch.ones(c)
    ty = F.batch_norm(tx, rm, rv, tscale, tshift, training=True, momentum=1.0, eps=1e-5)
    (ty * _torch_nchw(g, nhwc)).sum().backward()
    n = x.size // c
    assert _rel(y, ty.permute(0, 2, 3, 1) if nhwc else ty) < RTOL
    assert _rel(mean, rm) < RTOL                   # momentum 1: the batch statistics
    assert _rel(var * n / (n - 1), rv) < RTOL      # torch keeps the unbiased one
    assert _rel(dx, tx.grad.permute(0, 2, 3, 1) if nhwc else tx.grad) < RTOL
    assert _rel(dshift, tshift.grad) < RTOL
    if use_scale:
        assert _rel(dscale, tscale.grad) < RTOL
    else:
        assert dscale is None


def test_runs_onednn_kernels_not_the_reference():
    for pass_ in ("forward", "backward"):
        assert "ref" not in _onednn_bn.probe("NHWC", pass_, n=8, c=48, hw=15)
    text = jax.jit(jax.grad(lambda x, b: jnp.sum(
        _onednn_bn.batch_norm_train(x, None, b, 1e-5)[0] ** 3), argnums=(0, 1))).lower(
        jnp.ones((2, 3, 3, 4)), jnp.ones(4)).as_text()
    assert "jconv_onednn_bn_fwd" in text and "jconv_onednn_bn_bwd" in text


def _layers(c, momentum, use_scale):
    """(PyTorch's BatchNorm2d, ours) with the same parameters and running statistics."""
    from train.norm import OnednnBatchNorm2d

    rng = np.random.default_rng(2)
    mean, var = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    scale, bias = rng.uniform(0.5, 2, c), rng.standard_normal(c)
    if not use_scale:
        scale = np.ones(c)  # airbench's frozen weight
    ours = OnednnBatchNorm2d(c, 1e-5, momentum, data_format="NHWC", rngs=nnx.Rngs(0))
    ref = torch.nn.BatchNorm2d(c, eps=1e-5, momentum=momentum)
    with torch.no_grad():
        ref.running_mean.copy_(torch.tensor(mean)), ref.running_var.copy_(torch.tensor(var))
        ref.weight.copy_(torch.tensor(scale)), ref.bias.copy_(torch.tensor(bias))
    ref.weight.requires_grad_(use_scale)
    for v, values in ((ours.mean, mean), (ours.var, var), (ours.scale, scale),
                      (ours.bias, bias)):
        v.set_value(jnp.asarray(values, jnp.float32))
    if not use_scale:
        ours.scale, ours.use_scale = None, False
    return ref, ours


@pytest.mark.parametrize("use_scale", [False, True])
def test_layer_running_statistics_and_grads_match_torch(use_scale):
    c, shape = 8, (5, 4, 3, 8)
    ref, ours = _layers(c, 0.6, use_scale)
    x, g, _, _ = _data(shape, c, False, seed=3)
    graphdef, params, stats = nnx.split(ours, nnx.Param, nnx.BatchStat)

    def loss(params, x, stats):
        m = nnx.merge(graphdef, params, stats)
        return jnp.sum(m(x) * g), nnx.as_pure(nnx.state(m, nnx.BatchStat))

    (_, new), (dparams, dx) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        nnx.as_pure(params), x, nnx.as_pure(stats))
    tx = _torch_nchw(x, True).requires_grad_()
    ty = ref(tx)
    (ty * _torch_nchw(g, True)).sum().backward()
    assert _rel(new["mean"], ref.running_mean) < RTOL
    assert _rel(new["var"], ref.running_var) < RTOL
    assert _rel(dx, tx.grad.permute(0, 2, 3, 1)) < RTOL
    assert _rel(dparams["bias"], ref.bias.grad) < RTOL
    assert ("scale" in dparams) == use_scale
    if use_scale:
        assert _rel(dparams["scale"], ref.weight.grad) < RTOL
    ours.eval(), ref.eval()  # eval mode: Flax's, from the updated running statistics
    ours.mean.set_value(new["mean"]), ours.var.set_value(new["var"])
    assert _rel(ours(jnp.asarray(x)), ref(_torch_nchw(x, True)).permute(0, 2, 3, 1)) < RTOL


def test_statistics_cotangents_match_autodiff_of_the_formula():
    """Differentiated through mean and var too (not only y), the oneDNN path adds their
    terms; the plain JAX formula (the non-CPU branch) is the reference."""
    x, g, scale, shift = _data((4, 3, 3, 6), 6, True, seed=4)
    a, b = np.arange(6.0, dtype=np.float32), np.linspace(-1, 1, 6, dtype=np.float32)

    def loss(fn):
        def f(x, scale, shift):
            y, mean, var = fn(x, scale, shift)
            return jnp.sum(y * g) + jnp.sum(mean * a) + jnp.sum(var * b)
        return jax.jit(jax.grad(f, argnums=(0, 1, 2)))(x, scale, shift)

    got = loss(lambda *args: _onednn_bn.batch_norm_train(*args, 1e-5))
    want = loss(lambda *args: _onednn_bn._bn_jax(*args, 1e-5, True))
    for u, v in zip(got, want):
        assert _rel(u, v) < RTOL


def test_vmap_normalises_each_mapped_batch_on_its_own():
    x, _, _, shift = _data((3, 4, 2, 2, 5), 5, False, seed=5)
    got = jax.vmap(lambda x: _onednn_bn.batch_norm_train(x, None, shift, 1e-5))(x)
    for i in range(3):
        want = _onednn_bn._bn_jax(jnp.asarray(x[i]), None, shift, 1e-5, True)
        for u, v in zip(got, want):
            assert _rel(u[i], v) < RTOL


def test_threads_setting_keeps_the_values():
    x, g, _, shift = _data((8, 6, 6, 32), 32, False, seed=6)
    f = jax.jit(jax.grad(lambda x, s: jnp.sum(
        _onednn_bn.batch_norm_train(x, None, s, 1e-5)[0] * g), argnums=(0, 1)))
    one = f(x, shift)
    try:
        _onednn_bn.set_num_threads(2)
        two = jax.jit(jax.grad(lambda x, s: jnp.sum(  # a new program: calls the handler again
            _onednn_bn.batch_norm_train(x, None, s, 1e-5)[0] * g * 1.0), argnums=(0, 1)))(
            x, shift)
    finally:
        _onednn_bn.set_num_threads(1)
    for u, v in zip(one, two):
        assert _rel(u, v) < RTOL
    with pytest.raises(ValueError, match=r"n must be a non-negative int, got -1"):
        _onednn_bn.set_num_threads(-1)


def test_exports_the_jax_formula_elsewhere_and_onednn_on_cpu():
    x, s = jax.ShapeDtypeStruct((2, 3, 3, 4), jnp.float32), jax.ShapeDtypeStruct((4,),
                                                                               jnp.float32)
    fn = jax.jit(jax.grad(lambda x, s: jnp.sum(
        _onednn_bn.batch_norm_train(x, None, s, 1e-5)[0] ** 3), argnums=(0, 1)))
    cuda = jax.export.export(fn, platforms=["cuda"])(x, s).mlir_module()
    assert "jconv_onednn" not in cuda
    ok = [jax.export.DisabledSafetyCheck.custom_call(n) for n in _onednn_bn._BN_HANDLERS]
    both = jax.export.export(fn, platforms=["cpu", "cuda"], disabled_checks=ok)(x, s)
    assert "jconv_onednn_bn_bwd" in both.mlir_module()
    xv, sv = jnp.asarray(_data((2, 3, 3, 4), 4, False)[0]), jnp.linspace(0, 1, 4)
    want = jax.grad(lambda x, s: jnp.sum(_onednn_bn._bn_jax(x, None, s, 1e-5, True)[0] ** 3),
                    argnums=(0, 1))(xv, sv)
    for u, v in zip(both.call(xv, sv), want):  # runs here, on CPU
        assert _rel(u, v) < 1e-4


def _ok(shape=(2, 3, 3, 4)):
    return jnp.ones(shape, jnp.float32), jnp.zeros((shape[-1],), jnp.float32)


@pytest.mark.parametrize("args,kwargs,error,match", [
    ((_ok()[0].astype(jnp.bfloat16), None, _ok()[1], 1e-5), {}, TypeError,
     r"x must be float32 \(oneDNN batch norm\), got bfloat16"),
    ((np.ones((2, 3, 3, 4), np.int32), None, _ok()[1], 1e-5), {}, TypeError,
     "x must be float32 .*got int32"),
    (([[1.0]], None, _ok()[1], 1e-5), {}, TypeError, "x must be a float32 array, got list"),
    ((jnp.ones((2, 3, 4)), None, _ok()[1], 1e-5), {}, ValueError,
     r"x must be 4-D \(NHWC\), got shape \(2, 3, 4\)"),
    ((_ok()[0], None, jnp.zeros(5), 1e-5), {}, ValueError,
     r"shift must have shape \(4,\) \(x's channels\), got \(5,\)"),
    ((_ok()[0], None, jnp.zeros(4), 1e-5), {"data_format": "NCHW"}, ValueError,
     r"shift must have shape \(3,\) \(x's channels\), got \(4,\)"),
    ((_ok()[0], jnp.ones(3), _ok()[1], 1e-5), {}, ValueError,
     r"scale must have shape \(4,\) \(x's channels\), got \(3,\)"),
    ((_ok()[0], jnp.ones(4, jnp.bfloat16), _ok()[1], 1e-5), {}, TypeError,
     r"scale must be float32 \(oneDNN batch norm\), got bfloat16"),
    ((_ok()[0], None, 0.0, 1e-5), {}, TypeError,
     r"shift must be a float32 array of shape \(4,\), got float"),
    ((_ok()[0], None, _ok()[1], 0.0), {}, ValueError, "eps must be a positive float, got 0.0"),
    ((_ok()[0], None, _ok()[1], "1e-5"), {}, ValueError,
     "eps must be a positive float, got '1e-5'"),
    ((jnp.ones((0, 3, 3, 4)), None, _ok()[1], 1e-5), {}, ValueError,
     r"x must have at least one value per channel, got shape \(0, 3, 3, 4\)"),
    ((_ok()[0], None, _ok()[1], 1e-5), {"data_format": "NDHWC"}, ValueError,
     "data_format must be one of"),
])
def test_bad_input_is_named_before_any_native_call(monkeypatch, args, kwargs, error, match):
    def native(*_):
        raise AssertionError("the native library was reached")

    monkeypatch.setattr(_onednn_bn, "_library", native)
    monkeypatch.setattr(_onednn_bn, "_fwd_call", native)
    with pytest.raises(error, match=match):
        _onednn_bn.batch_norm_train(*args, **kwargs)


def test_probe_rejects_an_unknown_pass():
    with pytest.raises(ValueError, match="pass_ must be 'forward' or 'backward', got 'bwd'"):
        _onednn_bn.probe(pass_="bwd")


def test_layer_rejects_one_value_per_channel_and_falls_back_for_float64():
    from train.norm import OnednnBatchNorm2d

    bn = OnednnBatchNorm2d(4, data_format="NHWC", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"more than 1 value per channel .*\(1, 1, 1, 4\)"):
        bn(jnp.ones((1, 1, 1, 4)))
    jax.config.update("jax_enable_x64", True)
    try:
        ref = jnn.BatchNorm2d(4, data_format="NHWC", param_dtype=jnp.float64,
                              rngs=nnx.Rngs(0))
        ours = OnednnBatchNorm2d(4, data_format="NHWC", param_dtype=jnp.float64,
                                 rngs=nnx.Rngs(0))
        for layer in (ref, ours):  # as train.model.batch_norm keeps them for float64
            for stat in (layer.mean, layer.var):
                stat.set_value(stat[...].astype(jnp.float64))
        x = jnp.asarray(_data((3, 2, 2, 4), 4, False)[0], jnp.float64)
        np.testing.assert_allclose(ours(x), ref(x), rtol=1e-12)  # train.norm's float64 path
        assert ours.var[...].dtype == jnp.float64
        np.testing.assert_allclose(ours.var[...], ref.var[...], rtol=1e-12)  # Flax's biased
    finally:
        jax.config.update("jax_enable_x64", False)


def test_model_picks_onednn_batch_norm_for_onednn_convs_when_switched_on():
    from train import model as tm
    from train.config import load_config
    from train.norm import BatchNorm2d, OnednnBatchNorm2d

    o = tm.ModelOptions.from_config(load_config("cifar_subset.yaml").model)
    assert type(tm.batch_norm(8, o, nnx.Rngs(0))) is jnn.BatchNorm2d  # off by default
    o = tm.ModelOptions.from_config(load_config("cifar_subset.yaml",
                                                ["model.onednn_batch_norm=true"]).model)
    bn = tm.batch_norm(8, o, nnx.Rngs(0))
    assert type(bn) is OnednnBatchNorm2d and bn.scale is None
    lax_o = tm.ModelOptions(**{**o.__dict__, "conv_impl": "lax"})
    assert type(tm.batch_norm(8, lax_o, nnx.Rngs(0))) is jnn.BatchNorm2d
    relu = tm.ModelOptions(**{**o.__dict__, "act": "relu"})  # the VGG recipe's: unchanged
    assert type(tm.batch_norm(8, relu, nnx.Rngs(0))) is BatchNorm2d
