"""The CIFAR-10 CNN: conv-BN-ReLU stages with max pooling and a linear head, all from
``jconv.nn`` so that ``model.conv_impl`` picks the convolution that actually runs."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

import jconv
from jconv import nn as jnn


class ConvBNReLU(nnx.Module):
    """3x3 conv (no bias: BN follows) -> BatchNorm -> ReLU; (N, C_in, H, W) -> (N, C_out, H, W)
    (channels-last with ``data_format="NHWC"``)."""

    def __init__(self, c_in: int, c_out: int, *, impl: str, data_format: str, dtype: Any,
                 param_dtype: Any, bn_momentum: float, rngs: nnx.Rngs):
        self.conv = jnn.Conv2d(c_in, c_out, 3, padding=1, bias=False, impl=impl,
                               data_format=data_format, dtype=dtype, param_dtype=param_dtype,
                               rngs=rngs)
        self.bn = jnn.BatchNorm2d(c_out, momentum=bn_momentum, data_format=data_format,
                                  dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        # nnx.BatchNorm keeps running statistics in float32 whatever param_dtype says; the
        # float64 exactness check needs them in float64 too.
        for stat in (self.bn.mean, self.bn.var):
            stat.set_value(stat[...].astype(param_dtype))

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nnx.relu(self.bn(self.conv(x)))


class CifarCNN(nnx.Module):
    """A VGG-style CNN for 32x32 images.

    Stage ``i`` has ``convs_per_stage`` ConvBNReLU blocks of width ``widths[i]`` and one 2x2
    max pool, so spatial size halves per stage: 32 -> 32/2**len(widths). The pool comes
    after the stage's last block, or with ``pool_first`` right after its first conv (the
    airbench layout: the later, wider convs then run at the lower resolution, cheaper). A global average
    pool and a linear layer give the logits.

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
                 head_scale: float = 1.0, pool_first: bool = False, rngs: nnx.Rngs):
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
                                         bn_momentum=bn_momentum, rngs=rngs))
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


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars (``nnx.Param`` leaves) in ``model``.

    Example:
      >>> from flax import nnx
      >>> count_params(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
      8
    """
    return sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def macs_per_image(widths: Sequence[int], convs_per_stage: int, num_classes: int = 10,
                   image_hw: int = 32, pool_first: bool = False) -> int:
    """Forward multiply-accumulates for one image, conv layers via :func:`jconv.conv2d_macs`
    plus the linear head.

    Example:
      >>> macs_per_image((8,), 1)  # 3*8*9*32*32 conv + 8*10 head
      221264
    """
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
