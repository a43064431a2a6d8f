"""The CIFAR-10 CNNs, every convolution a ``jconv.nn.Conv2d`` so that ``model.conv_impl``
picks the convolution that actually runs: :class:`CifarCNN` (``model.arch: vgg``,
conv-BN-ReLU stages with max pooling and a linear head) and :class:`AirbenchNet`
(``model.arch: airbench``, the network of Keller Jordan's airbench94: a frozen 2x2
patch-whitening conv, three conv groups and a max-pooled linear head)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jconv
from jconv import nn as jnn


def gelu(x: jnp.ndarray) -> jnp.ndarray:
    """Exact GELU as PyTorch's CPU kernel computes it, ``x/2 * (1 + erf(x/sqrt(2)))``.

    ``jax.nn.gelu(approximate=False)`` computes ``x/2 * erfc(-x/sqrt(2))``, and XLA:CPU's
    float32 ``erfc`` (an exponential and two polynomial branches) made GELU 3.6x PyTorch's
    time in the airbench train step; its ``erf`` is one clamped rational polynomial
    (docs/performance.md, "Train step profile"). The two agree to float32 rounding except
    far in the left tail, where both are within 1e-7 of 0.

    Example:
      >>> [round(float(v), 4) for v in gelu(jnp.array([-1.0, 0.0, 2.0]))]
      [-0.1587, 0.0, 1.9545]
    """
    return 0.5 * x * (1 + jax.lax.erf(x * np.asarray(np.sqrt(0.5), x.dtype)))


ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {"relu": nnx.relu,
                                                                "gelu": gelu}


def batch_norm(c: int, *, momentum: float, eps: float, scale: bool, data_format: str,
               dtype: Any, param_dtype: Any, rngs: nnx.Rngs) -> jnn.BatchNorm2d:
    """``jconv.nn.BatchNorm2d`` (PyTorch ``momentum``) with its running statistics in
    ``param_dtype`` and, when not ``scale``, no learned scale (airbench's BatchNorm: the
    weight is frozen at 1, only the bias learns)."""
    bn = jnn.BatchNorm2d(c, eps, momentum, data_format=data_format, dtype=dtype,
                         param_dtype=param_dtype, rngs=rngs)
    if not scale:
        bn.scale = None  # nnx.BatchNorm multiplies by nothing when its scale is None
        bn.use_scale = False
    # nnx.BatchNorm keeps running statistics in float32 whatever param_dtype says; the
    # float64 exactness check needs them in float64 too.
    for stat in (bn.mean, bn.var):
        stat.set_value(stat[...].astype(param_dtype))
    return bn


def dirac_(conv: jnn.Conv2d) -> jnn.Conv2d:
    """``torch.nn.init.dirac_(w[:C_in])``: the first ``min(C_in, C_out)`` filters become
    identity maps (1 at the kernel centre of their own input channel, 0 elsewhere), so the
    freshly initialised conv passes its input through; the other filters keep their init.

    Example:
      >>> from flax import nnx; import jax.numpy as jnp
      >>> c = dirac_(jnn.Conv2d(2, 3, 3, padding=1, bias=False, rngs=nnx.Rngs(0)))
      >>> x = jnp.arange(2 * 4 * 4.0).reshape(1, 2, 4, 4)
      >>> bool((c(x)[:, :2] == x).all())
      True
    """
    w = conv.kernel[...]
    c_out, c_in, kh, kw = w.shape
    n = jnp.arange(min(c_in, c_out))
    conv.kernel.set_value(w.at[:len(n)].set(0).at[n, n, kh // 2, kw // 2].set(1))
    return conv


class ConvBNReLU(nnx.Module):
    """3x3 conv (no bias: BN follows) -> BatchNorm -> activation (ReLU by default);
    (N, C_in, H, W) -> (N, C_out, H, W) (channels-last with ``data_format="NHWC"``)."""

    def __init__(self, c_in: int, c_out: int, *, impl: str, data_format: str, dtype: Any,
                 param_dtype: Any, bn_momentum: float, rngs: nnx.Rngs, act: str = "relu",
                 bn_scale: bool = True, bn_eps: float = 1e-5, dirac_init: bool = False):
        self.conv = jnn.Conv2d(c_in, c_out, 3, padding=1, bias=False, impl=impl,
                               data_format=data_format, dtype=dtype, param_dtype=param_dtype,
                               rngs=rngs)
        if dirac_init:
            dirac_(self.conv)
        self.bn = batch_norm(c_out, momentum=bn_momentum, eps=bn_eps, scale=bn_scale,
                             data_format=data_format, dtype=dtype, param_dtype=param_dtype,
                             rngs=rngs)
        self.act = act

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return ACTIVATIONS[self.act](self.bn(self.conv(x)))


class CifarCNN(nnx.Module):
    """A VGG-style CNN for 32x32 images (``model.arch: vgg``).

    Stage ``i`` has ``convs_per_stage`` ConvBNReLU blocks of width ``widths[i]`` and one 2x2
    max pool, so spatial size halves per stage: 32 -> 32/2**len(widths). The pool comes
    after the stage's last block, or with ``pool_first`` right after its first conv (the
    airbench layout: the later, wider convs then run at the lower resolution, cheaper). A
    global average pool and a linear layer give the logits. ``act``, ``bn_scale``, ``bn_eps``
    and ``dirac_init`` are :class:`ConvBNReLU`'s.

    Shapes: images (N, 32, 32, 3) channels-last (the loader's layout; transposed inside when
    ``data_format="NCHW"``) -> logits (N, num_classes), float32 (float64 when ``dtype``
    is float64).

    Example:
      >>> from flax import nnx; import jax.numpy as jnp
      >>> m = CifarCNN((8, 16), 1, num_classes=10, rngs=nnx.Rngs(0))
      >>> m(jnp.zeros((2, 32, 32, 3))).shape
      (2, 10)
    """

    def __init__(self, widths: Sequence[int], convs_per_stage: int, *, num_classes: int = 10,
                 impl: str = "lax", pool_impl: str = "loops", data_format: str = "NHWC",
                 dtype: Any = None,
                 param_dtype: Any = jnp.float32, bn_momentum: float = 0.1,
                 head_scale: float = 1.0, pool_first: bool = False, act: str = "relu",
                 bn_scale: bool = True, bn_eps: float = 1e-5, dirac_init: bool = False,
                 rngs: nnx.Rngs):
        self.data_format = data_format
        self.widths = tuple(widths)
        self.convs_per_stage = convs_per_stage
        self.head_scale = head_scale
        blocks: list[nnx.Module] = []
        c_in = 3
        for width in widths:
            for i in range(convs_per_stage):
                if pool_first and i == 1:
                    blocks.append(jnn.MaxPool2d(2, impl=pool_impl, data_format=data_format))
                blocks.append(ConvBNReLU(c_in, width, impl=impl, data_format=data_format,
                                         dtype=dtype, param_dtype=param_dtype,
                                         bn_momentum=bn_momentum, rngs=rngs, act=act,
                                         bn_scale=bn_scale, bn_eps=bn_eps,
                                         dirac_init=dirac_init))
                c_in = width
            if not (pool_first and convs_per_stage > 1):
                blocks.append(jnn.MaxPool2d(2, impl=pool_impl, data_format=data_format))
        self.blocks = nnx.List(blocks)
        self.pool = jnn.GlobalAvgPool2d(data_format=data_format)
        self.head = nnx.Linear(c_in, num_classes, dtype=dtype, param_dtype=param_dtype,
                               rngs=rngs)

    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        x = images if self.data_format == "NHWC" else jnp.transpose(images, (0, 3, 1, 2))
        for block in self.blocks:
            x = block(x)
        x = self.pool(x)
        # Scaling the logits down (airbench's trick) keeps early softmax outputs soft.
        # float32 logits at least (a bfloat16 softmax is too coarse); float64 stays float64.
        logits = self.head(x) * self.head_scale
        return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


WHITEN_KERNEL = 2  # airbench's patch size: 2x2x3 patches, 12 directions, 24 filters
WHITEN_WIDTH = 2 * 3 * WHITEN_KERNEL ** 2


def whitening_kernel(images: np.ndarray, kernel_size: int = WHITEN_KERNEL,
                     eps: float = 5e-4) -> np.ndarray:
    """airbench's patch-whitening filters from (normalised) training images.

    images (N, H, W, C) float -> kernel (2*C*k*k, C, k, k) float32 in ``Conv2d``'s OIHW
    layout, k = ``kernel_size``. With ``P`` the (N*(H-k+1)*(W-k+1), C*k*k) matrix of every
    k x k patch flattened in (C, kH, kW) order and ``P^T P / rows = V diag(lam) V^T`` (not
    mean-centred, as airbench), the first C*k*k filters are the rows of
    ``V^T / sqrt(lam + eps)`` (largest eigenvalue first) and the others their negatives, so
    the conv maps patches to coordinates with (nearly) identity second moment, in both
    signs (GELU follows).

    Example:
      >>> x = np.random.default_rng(0).normal(size=(4, 8, 8, 3))
      >>> whitening_kernel(x).shape
      (24, 3, 2, 2)
    """
    images = np.asarray(images, np.float64)
    _, h, w, c = images.shape
    if images.ndim != 4 or h < kernel_size or w < kernel_size:
        raise ValueError(f"images must be (N, H, W, C) with H, W >= kernel_size={kernel_size}, "
                         f"got shape {images.shape}")
    d = c * kernel_size * kernel_size
    second, rows = np.zeros((d, d)), 0
    for start in range(0, len(images), 256):  # chunks bound the patch matrix's memory
        win = np.lib.stride_tricks.sliding_window_view(images[start:start + 256],
                                                       (kernel_size, kernel_size), (1, 2))
        # (n, H', W', C, kH, kW) -> rows of C*kH*kW, PyTorch's weight order
        flat = win.reshape(-1, d)
        second += flat.T @ flat
        rows += len(flat)
    lam, vec = np.linalg.eigh(second / rows)
    lam, vec = lam[::-1], vec[:, ::-1]
    filters = (vec.T / np.sqrt(lam + eps)[:, None]).reshape(d, c, kernel_size, kernel_size)
    return np.concatenate([filters, -filters]).astype(np.float32)


class ConvGroup(nnx.Module):
    """airbench's ConvGroup: conv -> 2x2 max pool -> BN -> act, then (``convs`` - 1) times
    conv -> BN -> act; every conv 3x3, padding 1, no bias. (N, H, W, C_in) ->
    (N, H//2, W//2, C_out) channels-last (or the NCHW equivalent)."""

    def __init__(self, c_in: int, c_out: int, convs: int, *, impl: str, pool_impl: str,
                 data_format: str, dtype: Any, param_dtype: Any, bn_momentum: float,
                 bn_eps: float, bn_scale: bool, act: str, dirac_init: bool, rngs: nnx.Rngs):
        conv_kw = dict(padding=1, bias=False, impl=impl, data_format=data_format, dtype=dtype,
                       param_dtype=param_dtype, rngs=rngs)
        bn_kw = dict(momentum=bn_momentum, eps=bn_eps, scale=bn_scale, data_format=data_format,
                     dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        convs_, norms = [], []
        for i in range(convs):
            conv = jnn.Conv2d(c_in if i == 0 else c_out, c_out, 3, **conv_kw)
            convs_.append(dirac_(conv) if dirac_init else conv)
            norms.append(batch_norm(c_out, **bn_kw))
        self.convs, self.norms = nnx.List(convs_), nnx.List(norms)
        self.pool = jnn.MaxPool2d(2, impl=pool_impl, data_format=data_format)
        self.act = act

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = conv(x)
            if i == 0:
                x = self.pool(x)
            x = ACTIVATIONS[self.act](norm(x))
        return x


class AirbenchNet(nnx.Module):
    """airbench94's network (``model.arch: airbench``).

    A 2x2 conv (3 -> 24 channels, bias, no padding; its kernel set by
    :func:`set_whitening` and frozen when ``model.whiten``) and the activation, one
    :class:`ConvGroup` per entry of ``widths`` (64, 256, 256 in airbench94), a max pool over
    the whole remaining map, and a bias-free linear layer whose logits are multiplied by
    ``head_scale`` (airbench: 1/9).

    Shapes: images (N, 32, 32, 3) channels-last -> logits (N, num_classes) float32; spatial
    size 32 -> 31 (whitening) -> 15 -> 7 -> 3 -> 1 with three groups.

    Example:
      >>> from flax import nnx; import jax.numpy as jnp
      >>> m = AirbenchNet((8, 16, 16), rngs=nnx.Rngs(0))
      >>> m(jnp.zeros((2, 32, 32, 3))).shape
      (2, 10)
    """

    def __init__(self, widths: Sequence[int], convs_per_stage: int = 2, *,
                 num_classes: int = 10, impl: str = "lax", pool_impl: str = "loops",
                 data_format: str = "NHWC", dtype: Any = None, param_dtype: Any = jnp.float32,
                 bn_momentum: float = 0.6, bn_eps: float = 1e-12, bn_scale: bool = False,
                 act: str = "gelu", dirac_init: bool = True, head_scale: float = 1 / 9,
                 rngs: nnx.Rngs):
        self.data_format = data_format
        self.widths = tuple(widths)
        self.head_scale = head_scale
        self.act = act
        self.whiten = jnn.Conv2d(3, WHITEN_WIDTH, WHITEN_KERNEL, bias=True, impl=impl,
                                 data_format=data_format, dtype=dtype, param_dtype=param_dtype,
                                 rngs=rngs)
        groups, c_in, hw = [], WHITEN_WIDTH, 32 - WHITEN_KERNEL + 1
        for width in widths:
            groups.append(ConvGroup(c_in, width, convs_per_stage, impl=impl,
                                    pool_impl=pool_impl, data_format=data_format, dtype=dtype,
                                    param_dtype=param_dtype, bn_momentum=bn_momentum,
                                    bn_eps=bn_eps, bn_scale=bn_scale, act=act,
                                    dirac_init=dirac_init, rngs=rngs))
            c_in, hw = width, hw // 2
        if hw < 1:
            raise ValueError(f"widths={list(widths)}: {len(widths)} groups halve the 31x31 "
                             "map below 1x1; use at most 4")
        self.groups = nnx.List(groups)
        self.pool = jnn.MaxPool2d(hw, impl=pool_impl, data_format=data_format)
        self.head = nnx.Linear(c_in, num_classes, use_bias=False, dtype=dtype,
                               param_dtype=param_dtype, rngs=rngs)

    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        x = images if self.data_format == "NHWC" else jnp.transpose(images, (0, 3, 1, 2))
        x = ACTIVATIONS[self.act](self.whiten(x))
        for group in self.groups:
            x = group(x)
        x = self.pool(x).reshape(x.shape[0], -1)
        logits = self.head(x) * self.head_scale
        return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def set_whitening(model: AirbenchNet, images: np.ndarray, eps: float = 5e-4) -> None:
    """Set ``model.whiten``'s kernel to :func:`whitening_kernel` of ``images`` (N, 32, 32, 3),
    the normalised training images (airbench uses the first 5,000)."""
    k = model.whiten.kernel
    k.set_value(jnp.asarray(whitening_kernel(images, WHITEN_KERNEL, eps), k[...].dtype))



def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars (``nnx.Param`` leaves) in ``model``.

    Example:
      >>> from flax import nnx
      >>> count_params(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
      8
    """
    return sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def macs_per_image(widths: Sequence[int], convs_per_stage: int, num_classes: int = 10,
                   image_hw: int = 32, pool_first: bool = False, arch: str = "vgg") -> int:
    """Forward multiply-accumulates for one image of the ``arch`` network (``vgg``:
    :class:`CifarCNN`, ``airbench``: :class:`AirbenchNet`), conv layers via
    :func:`jconv.conv2d_macs` plus the linear head.

    Example:
      >>> macs_per_image((8,), 1)  # 3*8*9*32*32 conv + 8*10 head
      221264
    """
    if arch == "airbench":
        hw = image_hw - WHITEN_KERNEL + 1
        total = jconv.conv2d_macs((1, 3, image_hw, image_hw), WHITEN_WIDTH, WHITEN_KERNEL)
        c_in = WHITEN_WIDTH
        for width in widths:
            total += jconv.conv2d_macs((1, c_in, hw, hw), width, 3, padding=1)
            hw //= 2
            total += (convs_per_stage - 1) * jconv.conv2d_macs((1, width, hw, hw), width, 3,
                                                               padding=1)
            c_in = width
        return total + c_in * num_classes
    total, c_in, hw = 0, 3, image_hw
    for width in widths:
        for i in range(convs_per_stage):
            if pool_first and i == 1:
                hw //= 2
            total += jconv.conv2d_macs((1, c_in, hw, hw), width, 3, padding=1)
            c_in = width
        if not (pool_first and convs_per_stage > 1):
            hw //= 2
    return total + c_in * num_classes
