"""Every implementation lowers for GPU (``cuda``) and TPU on this CPU-only machine, and the
accelerator execution plans are what docs/devices.md says they are.

``jax.export.export(jax.jit(f), platforms=[p])`` traces and lowers ``f`` to StableHLO for
platform ``p`` without that device: it proves the code compiles to a valid accelerator
program (shapes, dtypes, the ops it uses, which platform branch it keeps) — not that it runs,
nor how fast. Nothing here executes on an accelerator.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx


import jconv
from jconv import _auto, _onednn
from jconv.bench.suite import cifar_layers, resnet18_layers

S = jax.ShapeDtypeStruct
ACCELERATORS = ("cuda", "tpu")
DTYPES = (jnp.float32, jnp.bfloat16)
CONV_KW = dict(stride=1, padding=1)  # a case every implementation accepts (3x3, stride 1)


pytestmark = pytest.mark.usefixtures("fresh_auto")


def stablehlo(fn, *args: S, platform: str) -> str:
    """The StableHLO text of ``jax.jit(fn)`` exported for ``platform``."""
    # Pallas Triton calls carry no serialization-compatibility guarantee (docs/pallas.md).
    checks = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    return jax.export.export(jax.jit(fn), platforms=[platform],
                             disabled_checks=checks)(*args).mlir_module()


def _grad(loss):
    return jax.grad(loss, argnums=(0, 1))


def _passes(impl: str, fmt: str = "NCHW", **kw):
    """forward, first-order gradient and grad-of-grad functions of ``conv2d(impl)``."""
    kw = {**CONV_KW, **kw}

    def fwd(x, w):
        return jconv.conv2d(x, w, impl=impl, data_format=fmt, **kw)

    def loss(x, w):
        return jnp.sum(fwd(x, w).astype(jnp.float32) ** 2)

    def grad(x, w):
        return _grad(loss)(x, w)

    def grad_of_grad(x, w):
        return jax.grad(lambda x, w: sum(jnp.sum(g.astype(jnp.float32) ** 2)
                                         for g in grad(x, w)))(x, w)

    passes = {"fwd": fwd, "grad": grad}
    if jconv.CONV_IMPLS[impl].grad_of_grad:
        passes["grad_of_grad"] = grad_of_grad
    return passes


def _operands(dtype, fmt="NCHW", n=2, c_in=4, c_out=8, hw=8, k=3, groups=1):
    x = (n, c_in, hw, hw) if fmt == "NCHW" else (n, hw, hw, c_in)
    return S(x, dtype), S((c_out, c_in // groups, k, k), dtype)


@pytest.mark.parametrize("platform", ACCELERATORS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("impl", list(jconv.CONV_IMPLS))
def test_every_impl_lowers_fwd_grad_and_grad_of_grad(impl, dtype, platform):
    if impl == "onednn" and dtype == jnp.bfloat16 and _onednn._bf16_kernel() is None:
        pytest.skip("impl='onednn' in bfloat16 traces only on a CPU with oneDNN's bfloat16 "
                    "kernels, also when exporting for another platform (docs/convolution.md)")
    for name, fn in _passes(impl).items():
        text = stablehlo(fn, *_operands(dtype), platform=platform)
        assert "func.func public @main" in text, name


def _contraction_result_types(text: str) -> list[str]:
    """Element type of every convolution / dot_general result in a StableHLO module."""
    ops = [line for line in text.splitlines()
           if re.search(r"= stablehlo\.(convolution|dot_general)\b", line)]
    return [re.search(r"-> tensor<[^>]*x(\w+)>", op).group(1) for op in ops]


@pytest.mark.parametrize("platform", ACCELERATORS)
@pytest.mark.parametrize("impl", ["lax", "im2col", "loops", "winograd_f4x4", "winograd_f2x2"])
def test_half_precision_accumulates_in_float32_on_accelerators(impl, platform):
    for dtype in (jnp.bfloat16, jnp.float16):
        text = stablehlo(_passes(impl)["fwd"], *_operands(dtype), platform=platform)
        kinds = _contraction_result_types(text)
        assert kinds and set(kinds) == {"f32"}, (dtype, kinds)


def test_depthwise_loops_accumulate_in_float32_too():
    fwd = _passes("loops", groups=4)["fwd"]
    text = stablehlo(fwd, *_operands(jnp.bfloat16, c_in=4, c_out=4, groups=4), platform="cuda")
    # Depthwise taps are a broadcast multiply-add: its adds must run on float32 operands.
    assert re.search(r"stablehlo\.multiply .*tensor<[^>]*xf32>", text)
    assert not re.search(r"stablehlo\.add .*tensor<2x8x8x4xbf16>", text)


LAYERS = {f"cifar {layer.name}": layer for layer in cifar_layers(128)}
LAYERS.update({f"resnet18 {layer.name}": layer for layer in resnet18_layers(8)})


@pytest.mark.slow
@pytest.mark.parametrize("platform", ACCELERATORS)
@pytest.mark.parametrize("impl", ["im2col", "loops", "auto"])
@pytest.mark.parametrize("layer", list(LAYERS), ids=list(LAYERS))
def test_accelerator_plans_have_no_sequential_batch_loop(layer, impl, platform):
    spec = LAYERS[layer]
    fmt = "NHWC"
    x = S(spec.x_shape(fmt), jnp.float32)
    w = S(spec.w_shape, jnp.float32)
    passes = _passes(impl, fmt, **spec.conv_kwargs)
    for name in ("fwd", "grad"):
        text = stablehlo(passes[name], x, w, platform=platform)
        assert "stablehlo.while" not in text, f"{layer} {impl} {name} has a sequential loop"


@pytest.mark.parametrize("impl", ["im2col", "loops"])
def test_cpu_plan_keeps_its_cache_sized_chunks(impl):
    """The positive control of the test above: the same layer lowered for CPU loops over
    batch chunks, so the absence of a loop on accelerators is a real difference."""
    layer = cifar_layers(128)[1]
    x, w = S(layer.x_shape("NHWC"), jnp.float32), S(layer.w_shape, jnp.float32)
    fwd = _passes(impl, "NHWC", **layer.conv_kwargs)["fwd"]
    assert "stablehlo.while" in stablehlo(fwd, x, w, platform="cpu")
    assert "stablehlo.while" not in stablehlo(fwd, x, w, platform="cuda")


def test_auto_never_times_host_kernels_for_another_platform(monkeypatch):
    """Exporting ``auto`` for cuda on a CPU host: the GPU and TPU branches get the heuristic
    (lax); measuring, if on, happens only for the host's own platform."""
    jconv.set_auto_measure(True)
    measured: list[tuple] = []
    monkeypatch.setattr(_auto, "measure_choice", lambda *a, **k: measured.append(a) or
                        _auto.AutoChoice("im2col", "im2col", "im2col", source="measured"))
    x, w = _operands(jnp.float32)
    text = stablehlo(_passes("auto")["fwd"], x, w, platform="cuda")
    host = _auto.host_platform()
    for platform in _auto.PLATFORMS:
        keys = [k for k in _auto._MEMORY if k.startswith(platform + "|")]
        assert len(keys) == 1, (platform, list(_auto._MEMORY))
        want = "measured" if platform == host else "heuristic"
        assert _auto._MEMORY[keys[0]].source == want
    assert len(measured) == (1 if host in _auto.PLATFORMS else 0)
    if host == "cpu":
        # The CPU branch chose im2col (a dot_general), the exported cuda program kept lax's.
        assert "stablehlo.convolution" in text and "stablehlo.dot_general" not in text


@pytest.mark.parametrize("platform", ACCELERATORS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("impl", jconv.POOL_IMPLS)
def test_pools_lower(impl, dtype, platform):
    x = S((2, 4, 9, 9), dtype)
    pools = {
        "max": lambda x: jconv.max_pool2d(x, 3, 2, 1, impl=impl),
        "max dilated": lambda x: jconv.max_pool2d(x, 2, 1, dilation=2, impl=impl),
        "avg": lambda x: jconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True, impl=impl),
    }
    for name, pool in pools.items():
        stablehlo(pool, x, platform=platform)
        stablehlo(jax.grad(lambda x, p=pool: jnp.sum(p(x).astype(jnp.float32) ** 2)), x,
                  platform=platform)


@pytest.mark.parametrize("platform", ACCELERATORS)
@pytest.mark.parametrize("impl", jconv.AUTO_IMPLS)
def test_conv_transpose_lowers(impl, platform):
    for dtype in DTYPES:
        x, w = S((2, 8, 5, 5), dtype), S((8, 4, 3, 3), dtype)

        def up(x, w):
            return jconv.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1,
                                          impl=impl)

        stablehlo(up, x, w, platform=platform)
        stablehlo(_grad(lambda x, w: jnp.sum(up(x, w).astype(jnp.float32) ** 2)), x, w,
                  platform=platform)


@pytest.mark.parametrize("platform", ACCELERATORS)
def test_nn_layers_lower(platform):
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(
        jconv.nn.Conv2d(3, 8, 3, padding=1, impl="loops", rngs=rngs),
        jconv.nn.MaxPool2d(2),
        jconv.nn.Conv2d(8, 8, 3, padding=1, groups=8, impl="im2col", rngs=rngs),
        jconv.nn.AvgPool2d(2),
        jconv.nn.ConvTranspose2d(8, 4, 2, stride=2, rngs=rngs),
    )
    graphdef, params = nnx.split(model)

    def loss(params, x):
        return jnp.sum(nnx.merge(graphdef, params)(x) ** 2)

    x = S((2, 3, 16, 16), jnp.float32)
    p = jax.tree.map(lambda a: S(a.shape, a.dtype), params)
    for dtype in DTYPES:
        xd = S(x.shape, dtype)
        pd = jax.tree.map(lambda a: S(a.shape, dtype), p)
        stablehlo(jax.value_and_grad(loss), pd, xd, platform=platform)


@pytest.mark.slow
@pytest.mark.parametrize("platform", ACCELERATORS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_train_step_lowers(dtype, platform):
    from train.config import load_config
    from train.experiment import Experiment

    cfg = load_config("vgg.yaml", ["data.source=synthetic", f"model.dtype={dtype}",
                                     "model.conv_impl=auto", "model.widths=[8,16]",
                                     "train.batch_size=8"])
    exp = Experiment.from_config(cfg)
    state, step = exp.state, exp.train_step()
    structs = jax.tree.map(lambda a: S(jnp.shape(a), jnp.result_type(a)), state)
    images = S((8, 32, 32, 3), jnp.dtype(dtype))
    labels = S((8,), jnp.int32)
    text = jax.export.export(step, platforms=[platform])(structs, images, labels).mlir_module()
    assert "stablehlo.convolution" in text


def _nd_pools(impl: str) -> dict[str, tuple[tuple[int, ...], object]]:
    """The N-D pooling family and unfold/fold, one call each: name -> (x shape, fn)."""
    return {
        "max_pool1d": ((2, 4, 9), lambda x: jconv.max_pool1d(x, 3, 2, 1, impl=impl)),
        "max_pool3d dilated": ((2, 4, 6, 6, 6),
                               lambda x: jconv.max_pool3d(x, 2, 1, dilation=2, impl=impl)),
        "max_pool2d indices": ((2, 4, 9, 9), lambda x: jconv.max_pool2d(
            x, 3, 2, 1, ceil_mode=True, return_indices=True, impl=impl)[0]),
        "avg_pool3d": ((2, 4, 6, 6, 6), lambda x: jconv.avg_pool3d(
            x, 3, 2, 1, ceil_mode=True, divisor_override=5, impl=impl)),
        "lp_pool1d": ((2, 4, 9), lambda x: jconv.lp_pool1d(x * x + 1, 2, 3, impl=impl)),
        "adaptive avg+max 3d": ((2, 4, 5, 6, 7), lambda x: jconv.adaptive_avg_pool3d(x, 3)
                                + jconv.adaptive_max_pool3d(x, 3)),
        "unpool2d": ((2, 4, 8, 8), lambda x: jconv.max_unpool2d(
            *jconv.max_pool2d(x, 2, return_indices=True, impl=impl), 2)),
        "unfold+fold": ((2, 4, 8, 8), lambda x: jconv.fold(
            jconv.unfold(x, 3, padding=1, stride=2), (8, 8), 3, padding=1, stride=2)),
    }


@pytest.mark.parametrize("platform", ACCELERATORS)
@pytest.mark.parametrize("impl", jconv.POOL_IMPLS)
def test_nd_pools_and_unfold_fold_lower_with_grads(impl, platform):
    for name, (shape, fn) in _nd_pools(impl).items():
        for dtype in DTYPES:
            x = S(shape, dtype)
            stablehlo(fn, x, platform=platform)
            text = stablehlo(jax.grad(lambda x, f=fn: jnp.sum(f(x).astype(jnp.float32) ** 2)),
                             x, platform=platform)
            assert "stablehlo.while" not in text, f"{name} {impl}: a sequential loop"
