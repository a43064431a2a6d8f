"""The CIFAR-10 CNNs, every convolution a ``jconv.nn.Conv2d`` so that ``model.conv_impl``
picks the convolution that actually runs: :class:`CifarCNN` (``model.arch: vgg``,
conv-BN-ReLU stages with max pooling and a linear head) and :class:`AirbenchNet`
(``model.arch: airbench``, the network of Keller Jordan's airbench94: a frozen 2x2
patch-whitening conv, three conv groups and a max-pooled linear head)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jconv
from jconv import nn as jnn

from .config import ModelConfig, dtypes
from .norm import BatchNorm2d, OnednnBatchNorm2d

NUM_CLASSES = 10  # CIFAR-10


@dataclass
class ModelOptions(ModelConfig):
    """What the networks are built from: the config's ``model`` section itself (the fields
    of :class:`train.config.ModelConfig`, each documented in ``configs/cifar.yaml``; the
    YAML is the only source of defaults) as plain values, ``widths`` a tuple, plus the two
    dtypes ``model.dtype`` implies (:func:`train.config.dtypes`): ``compute_dtype`` and
    ``param_dtype`` (parameters and BatchNorm statistics), and the :attr:`act_dtype`
    derived from them. A key added to ``ModelConfig`` is here without another edit.

    Example:
      >>> from train.config import load_config
      >>> o = ModelOptions.from_config(load_config("vgg.yaml").model)
      >>> o.widths, o.compute_dtype.__name__, o.param_dtype.__name__
      ((48, 96, 192), 'float32', 'float32')
      >>> bf16_lax = ["model.dtype=bfloat16", "model.conv_impl=lax"]  # lax: any CPU
      >>> bf16 = ModelOptions.from_config(load_config("vgg.yaml", bf16_lax).model)
      >>> bf16.compute_dtype.__name__, bf16.act_dtype.__name__
      ('bfloat16', 'float32')
    """

    compute_dtype: Any = None
    param_dtype: Any = None

    @property
    def act_dtype(self) -> Any:
        """The dtype between the convolutions (BatchNorm, activation, pooling, the head):
        at least float32. A bfloat16 model computes only its convolutions in bfloat16, as
        ``torch.autocast("cpu", dtype=torch.bfloat16)`` does for a PyTorch model, because
        XLA:CPU's bfloat16 elementwise and pooling code is slower than its float32 code."""
        return jnp.promote_types(self.compute_dtype, jnp.float32).type

    @classmethod
    def from_config(cls, m: ModelConfig) -> "ModelOptions":
        values = {f.name: getattr(m, f.name) for f in fields(ModelConfig)}
        compute, params = dtypes(m.dtype)
        return cls(**{**values, "widths": tuple(m.widths)}, compute_dtype=compute,
                   param_dtype=params)


def gelu(x: jnp.ndarray) -> jnp.ndarray:
    """Exact GELU as PyTorch's CPU kernel computes it, ``x/2 * (1 + erf(x/sqrt(2)))``.

    ``jax.nn.gelu(approximate=False)`` computes ``x/2 * erfc(-x/sqrt(2))``, and XLA:CPU's
    float32 ``erfc`` (an exponential and two polynomial branches) made GELU several times
    PyTorch's time in the airbench train step; its ``erf`` is one clamped rational
    polynomial (the measurements: docs/performance.md, "Train step profile"). The two agree
    to float32 rounding except far in the left tail, where both are vanishingly small.

    Example:
      >>> [round(float(v), 4) for v in gelu(jnp.array([-1.0, 0.0, 2.0]))]
      [-0.1587, 0.0, 1.9545]
    """
    return 0.5 * x * (1 + jax.lax.erf(x * np.asarray(np.sqrt(0.5), x.dtype)))


ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {"relu": nnx.relu,
                                                                "gelu": gelu}


def batch_norm(c: int, o: ModelOptions, rngs: nnx.Rngs) -> jnn.BatchNorm2d:
    """A BatchNorm (PyTorch momentum ``o.bn_momentum``) with its running statistics in
    ``o.param_dtype`` and, when not ``o.bn_scale``, no learned scale (airbench's BatchNorm:
    the weight is frozen at 1, only the bias learns).

    Before a ReLU it is :class:`train.norm.BatchNorm2d` (PyTorch's one-pass statistics and
    two-pass backward as a ``custom_vjp``), else ``jconv.nn.BatchNorm2d`` (autodiff of
    Flax's): before a GELU, XLA fuses the GELU's backward into the custom backward's
    reduction loops and the train step got slower (docs/performance.md, "Train step
    profile"). Both have the same parameters, statistics and eval mode.

    Where it would be Flax's and ``o.conv_impl == "onednn"`` (airbench's GELU network on
    oneDNN convolutions), with ``o.onednn_batch_norm`` (``model.onednn_batch_norm``), it is
    :class:`train.norm.OnednnBatchNorm2d` instead (oneDNN's primitives for float32
    training mode; PyTorch's unbiased running variance)."""
    if o.onednn_batch_norm and o.conv_impl == "onednn" and o.act != "relu":
        cls = OnednnBatchNorm2d
    else:
        cls = BatchNorm2d if o.act == "relu" else jnn.BatchNorm2d
    bn = cls(c, o.bn_eps, o.bn_momentum, data_format=o.data_format, dtype=o.act_dtype,
             param_dtype=o.param_dtype, rngs=rngs)
    if not o.bn_scale:
        bn.scale = None  # nnx.BatchNorm multiplies by nothing when its scale is None
        bn.use_scale = False
    # nnx.BatchNorm keeps running statistics in float32 whatever param_dtype says; the
    # float64 exactness check needs them in float64 too.
    for stat in (bn.mean, bn.var):
        stat.set_value(stat[...].astype(o.param_dtype))
    return bn


def conv3x3(c_in: int, c_out: int, o: ModelOptions, rngs: nnx.Rngs) -> jnn.Conv2d:
    """3x3 conv, padding 1, no bias (BatchNorm follows), identity-initialised on its first
    ``C_in`` filters when ``o.dirac_init`` (:func:`dirac_`)."""
    conv = jnn.Conv2d(c_in, c_out, 3, padding=1, bias=False, impl=o.conv_impl,
                      data_format=o.data_format, dtype=o.compute_dtype, param_dtype=o.param_dtype,
                      rngs=rngs)
    return dirac_(conv) if o.dirac_init else conv


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
    """:func:`conv3x3` -> BatchNorm -> ``o.act``; (N, C_in, H, W) -> (N, C_out, H, W)
    (channels-last with ``o.data_format="NHWC"``)."""

    def __init__(self, c_in: int, c_out: int, o: ModelOptions, *, rngs: nnx.Rngs):
        self.conv = conv3x3(c_in, c_out, o, rngs)
        self.bn = batch_norm(c_out, o, rngs)
        self.act = o.act
        self.act_dtype = o.act_dtype

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return ACTIVATIONS[self.act](self.bn(self.conv(x).astype(self.act_dtype)))


def _logits(head: nnx.Linear, x: jnp.ndarray, scale: float) -> jnp.ndarray:
    # Scaling the logits down (airbench's trick) keeps early softmax outputs soft.
    # float32 logits at least (a bfloat16 softmax is too coarse); float64 stays float64.
    logits = head(x) * scale
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


class CifarCNN(nnx.Module):
    """A VGG-style CNN for 32x32 images (``model.arch: vgg``).

    Stage ``i`` has ``o.convs_per_stage`` :class:`ConvBNReLU` blocks of width
    ``o.widths[i]`` and one 2x2 max pool, so spatial size halves per stage: 32 ->
    32/2**len(widths). The pool comes after the stage's last block, or with ``o.pool_first``
    right after its first conv (the airbench layout: the later, wider convs then run at the
    lower resolution, cheaper). A global average pool and a linear layer give the logits,
    multiplied by ``o.head_scale``.

    Shapes: images (N, 32, 32, 3) channels-last (the loader's layout; transposed inside when
    ``o.data_format="NCHW"``) -> logits (N, 10), float32 (float64 when ``o.compute_dtype`` is).

    Example:
      >>> from flax import nnx; import jax.numpy as jnp
      >>> from train.config import load_config
      >>> cfg = load_config("vgg.yaml", ["model.widths=[8,16]", "model.convs_per_stage=1"])
      >>> m = CifarCNN(ModelOptions.from_config(cfg.model), rngs=nnx.Rngs(0))
      >>> m(jnp.zeros((2, 32, 32, 3))).shape
      (2, 10)
    """

    def __init__(self, o: ModelOptions, *, rngs: nnx.Rngs):
        self.data_format = o.data_format
        self.head_scale = o.head_scale
        pool_first = o.pool_first and o.convs_per_stage > 1
        blocks: list[nnx.Module] = []
        c_in = 3
        for width in o.widths:
            for i in range(o.convs_per_stage):
                if pool_first and i == 1:
                    blocks.append(jnn.MaxPool2d(2, impl=o.pool_impl, data_format=o.data_format))
                blocks.append(ConvBNReLU(c_in, width, o, rngs=rngs))
                c_in = width
            if not pool_first:
                blocks.append(jnn.MaxPool2d(2, impl=o.pool_impl, data_format=o.data_format))
        self.blocks = nnx.List(blocks)
        self.pool = jnn.GlobalAvgPool2d(data_format=o.data_format)
        self.head = nnx.Linear(c_in, NUM_CLASSES, dtype=o.act_dtype,
                               param_dtype=o.param_dtype, rngs=rngs)

    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        x = images if self.data_format == "NHWC" else jnp.transpose(images, (0, 3, 1, 2))
        for block in self.blocks:
            x = block(x)
        return _logits(self.head, self.pool(x), self.head_scale)


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
    """airbench's ConvGroup: conv -> 2x2 max pool -> BN -> act, then (``o.convs_per_stage``
    - 1) times conv -> BN -> act; every conv a :func:`conv3x3`. (N, H, W, C_in) ->
    (N, H//2, W//2, C_out) channels-last (or the NCHW equivalent)."""

    def __init__(self, c_in: int, c_out: int, o: ModelOptions, *, rngs: nnx.Rngs):
        convs, norms = [], []
        for i in range(o.convs_per_stage):
            convs.append(conv3x3(c_in if i == 0 else c_out, c_out, o, rngs))
            norms.append(batch_norm(c_out, o, rngs))
        self.convs, self.norms = nnx.List(convs), nnx.List(norms)
        self.pool = jnn.MaxPool2d(2, impl=o.pool_impl, data_format=o.data_format)
        self.act = o.act
        self.act_dtype = o.act_dtype

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = conv(x).astype(self.act_dtype)
            if i == 0:
                x = self.pool(x)
            x = ACTIVATIONS[self.act](norm(x))
        return x


class AirbenchNet(nnx.Module):
    """airbench94's network (``model.arch: airbench``).

    A 2x2 conv (3 -> 24 channels, bias, no padding; its kernel set by
    :func:`set_whitening` and frozen when ``model.whiten``) and the activation, one
    :class:`ConvGroup` per entry of ``o.widths`` (64, 256, 256 in airbench94), a max pool
    over the whole remaining map, and a bias-free linear layer whose logits are multiplied
    by ``o.head_scale`` (airbench: 1/9).

    Shapes: images (N, 32, 32, 3) channels-last -> logits (N, 10) float32; spatial
    size 32 -> 31 (whitening) -> 15 -> 7 -> 3 -> 1 with three groups.

    Example (:func:`build_model` picks this class for ``model.arch: airbench``):
      >>> from train.config import load_config
      >>> m = build_model(ModelOptions.from_config(load_config("cifar.yaml").model), 0)
      >>> [g.convs[0].out_channels for g in m.groups], m.head.out_features
      ([64, 256, 256], 10)
    """

    def __init__(self, o: ModelOptions, *, rngs: nnx.Rngs):
        self.data_format = o.data_format
        self.head_scale = o.head_scale
        self.act = o.act
        self.act_dtype = o.act_dtype
        self.whiten = jnn.Conv2d(3, WHITEN_WIDTH, WHITEN_KERNEL, bias=True, impl=o.conv_impl,
                                 data_format=o.data_format, dtype=o.compute_dtype,
                                 param_dtype=o.param_dtype, rngs=rngs)
        groups, c_in, hw = [], WHITEN_WIDTH, 32 - WHITEN_KERNEL + 1
        for width in o.widths:
            groups.append(ConvGroup(c_in, width, o, rngs=rngs))
            c_in, hw = width, hw // 2
        if hw < 1:
            raise ValueError(f"widths={list(o.widths)}: {len(o.widths)} groups halve the "
                             "31x31 map below 1x1; use at most 4")
        self.groups = nnx.List(groups)
        self.pool = jnn.MaxPool2d(hw, impl=o.pool_impl, data_format=o.data_format)
        self.head = nnx.Linear(c_in, NUM_CLASSES, use_bias=False, dtype=o.act_dtype,
                               param_dtype=o.param_dtype, rngs=rngs)

    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        x = images if self.data_format == "NHWC" else jnp.transpose(images, (0, 3, 1, 2))
        x = ACTIVATIONS[self.act](self.whiten(x).astype(self.act_dtype))
        for group in self.groups:
            x = group(x)
        return _logits(self.head, self.pool(x).reshape(x.shape[0], -1), self.head_scale)


def build_model(o: ModelOptions, seed: int) -> CifarCNN | AirbenchNet:
    """The network ``o.arch`` names, initialised from ``seed``: the initial parameters depend
    only on the seed and the shapes, never on the conv implementation.

    Example:
      >>> from train.config import load_config
      >>> cfg = load_config("cifar.yaml", ["model.widths=[8]"])
      >>> type(build_model(ModelOptions.from_config(cfg.model), 0)).__name__
      'AirbenchNet'
    """
    net = AirbenchNet if o.arch == "airbench" else CifarCNN
    # One compiled program for every initialiser: built eagerly, each parameter shape
    # compiled its own truncated normal (~half a short run's start-up); the values are bit
    # for bit the same.
    return nnx.jit(lambda: net(o, rngs=nnx.Rngs(seed)))()


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


def macs_per_image(model: nnx.Module) -> int:
    """Forward multiply-accumulates of ``model`` for one (32, 32, 3) image, counted by
    :func:`jconv.summary` (conv and linear layers).

    Example:
      >>> from flax import nnx
      >>> from train.config import load_config
      >>> cfg = load_config("vgg.yaml", ["model.widths=[8]", "model.convs_per_stage=1"])
      >>> macs_per_image(CifarCNN(ModelOptions.from_config(cfg.model), rngs=nnx.Rngs(0)))
      221264
    """
    return jconv.summary(model, (1, 32, 32, 3)).total_macs
