"""Flax NNX layers built on jconv's functional ops, with torch-style constructors."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ._registry import POOL_IMPLS, check_conv_impl
from ._spec import (IntOrPair, PaddingLike, check_data_format, check_impl, check_pool_padding,
                    resolve_padding, to_pair)
from .conv import conv2d
from .pool import avg_pool2d, global_avg_pool2d, max_pool2d
from .transpose import check_output_padding, conv_transpose2d

# He/Kaiming normal for ReLU nets: std = sqrt(2 / fan_in), fan_in = C_in/groups * kH * kW.
# The OIHW layout puts fan-in on axis 1 and fan-out on axis 0.
kaiming_normal_oihw = jax.nn.initializers.variance_scaling(
    2.0, "fan_in", "truncated_normal", in_axis=1, out_axis=0)


def _check_channels(in_channels: int, out_channels: int, groups: int) -> None:
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                    ("groups", groups)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide both in_channels={in_channels} "
                         f"and out_channels={out_channels}")


class Conv2d(nnx.Module):
    """``torch.nn.Conv2d`` for Flax NNX; the computation is :func:`jconv.conv2d`.

    Input (N, C_in, H, W) -> output (N, C_out, H_out, W_out) (or channels-last with
    ``data_format="NHWC"``; unbatched inputs work too). ``kernel`` has shape
    (C_out, C_in/groups, kH, kW) in either format; ``bias`` (C_out,).

      H_out = (H + pad_top + pad_bottom - dilation*(kH-1) - 1) // stride + 1

    Initialisation: kernel He/Kaiming normal (truncated, std sqrt(2/fan_in),
    fan_in = C_in/groups*kH*kW), bias zeros. PyTorch instead uses a uniform init with
    gain 1/sqrt(3); pass ``kernel_init`` to change it. ``dtype`` is the compute dtype (e.g.
    ``jnp.bfloat16``); parameters are stored in ``param_dtype``.

    Example:
      >>> from flax import nnx; import jax.numpy as jnp, jconv
      >>> conv = jconv.nn.Conv2d(3, 16, 3, padding=1, rngs=nnx.Rngs(0))
      >>> conv(jnp.ones((2, 3, 32, 32))).shape
      (2, 16, 32, 32)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair,
                 stride: IntOrPair = 1, padding: PaddingLike = 0, dilation: IntOrPair = 1,
                 groups: int = 1, bias: bool = True, *, impl: str = "lax",
                 data_format: str = "NCHW", dtype: Any = None, param_dtype: Any = jnp.float32,
                 precision: Any = None, kernel_init: Any = kaiming_normal_oihw,
                 rngs: nnx.Rngs):
        _check_channels(in_channels, out_channels, groups)
        kh, kw = to_pair(kernel_size, "kernel_size", minimum=1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kh, kw)
        # Parsed here with conv2d's own validators, so a bad value fails at construction.
        self.stride = to_pair(stride, "stride", minimum=1)
        self.dilation = to_pair(dilation, "dilation", minimum=1)
        # ``padding`` as given (for display); ``pads`` resolved once, what every call uses.
        self.pads = resolve_padding(padding, (kh, kw), self.dilation, self.stride)
        self.padding, self.groups = padding, groups
        self.impl = check_conv_impl(impl)
        self.data_format = check_data_format(data_format)
        self.dtype, self.precision = dtype, precision
        shape = (out_channels, in_channels // groups, kh, kw)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_channels,), param_dtype)) if bias else None

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        dtype = self.dtype or x.dtype
        b = None if self.bias is None else self.bias[...].astype(dtype)
        return conv2d(x.astype(dtype), self.kernel[...].astype(dtype), b, stride=self.stride,
                      padding=self.pads, dilation=self.dilation, groups=self.groups,
                      impl=self.impl, data_format=self.data_format, precision=self.precision)


def _pool_args(kernel_size: IntOrPair, stride: IntOrPair | None,
               padding: IntOrPair) -> tuple[tuple[int, int], tuple[int, int] | None,
                                            tuple[int, int]]:
    """Kernel, stride (None: the kernel) and padding parsed as the pooling functions do."""
    k = to_pair(kernel_size, "kernel_size", minimum=1)
    s = None if stride is None else to_pair(stride, "stride", minimum=1)
    p = to_pair(padding, "padding", minimum=0)
    check_pool_padding(p, k, padding, kernel_size)
    return k, s, p


class MaxPool2d(nnx.Module):
    """``torch.nn.MaxPool2d``: see :func:`jconv.max_pool2d` for shapes and semantics.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.MaxPool2d(2)(jnp.ones((1, 8, 32, 32))).shape
      (1, 8, 16, 16)
    """

    def __init__(self, kernel_size: IntOrPair, stride: IntOrPair | None = None,
                 padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False, *,
                 impl: str = "lax", data_format: str = "NCHW"):
        self.kernel_size, self.stride, self.padding = _pool_args(kernel_size, stride, padding)
        self.dilation, self.ceil_mode = to_pair(dilation, "dilation", minimum=1), ceil_mode
        self.impl = check_impl(impl, POOL_IMPLS)
        self.data_format = check_data_format(data_format)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode, impl=self.impl, data_format=self.data_format)


class AvgPool2d(nnx.Module):
    """``torch.nn.AvgPool2d``: see :func:`jconv.avg_pool2d` for shapes and semantics.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.AvgPool2d(2)(jnp.ones((1, 8, 32, 32))).shape
      (1, 8, 16, 16)
    """

    def __init__(self, kernel_size: IntOrPair, stride: IntOrPair | None = None,
                 padding: IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                 *, impl: str = "lax", data_format: str = "NCHW"):
        self.kernel_size, self.stride, self.padding = _pool_args(kernel_size, stride, padding)
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.impl = check_impl(impl, POOL_IMPLS)
        self.data_format = check_data_format(data_format)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, impl=self.impl, data_format=self.data_format)


class GlobalAvgPool2d(nnx.Module):
    """Mean over H and W: (N, C, H, W) -> (N, C) (``keepdims``: (N, C, 1, 1)).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.GlobalAvgPool2d()(jnp.ones((4, 8, 7, 7))).shape
      (4, 8)
    """

    def __init__(self, *, data_format: str = "NCHW", keepdims: bool = False):
        self.data_format = check_data_format(data_format)
        self.keepdims = keepdims

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return global_avg_pool2d(x, data_format=self.data_format, keepdims=self.keepdims)


class BatchNorm2d(nnx.BatchNorm):
    """``torch.nn.BatchNorm2d`` arguments on top of ``flax.nnx.BatchNorm``.

    Normalises over (N, H, W) per channel; the channel axis follows ``data_format``.
    ``momentum`` has PyTorch's meaning (weight of the new batch statistic, default 0.1),
    i.e. Flax momentum ``1 - momentum``. Train/eval mode: ``model.train()`` / ``model.eval()``.

    Example:
      >>> from flax import nnx; import jax.numpy as jnp, jconv
      >>> jconv.nn.BatchNorm2d(16, rngs=nnx.Rngs(0))(jnp.ones((2, 16, 8, 8))).shape
      (2, 16, 8, 8)
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, *,
                 data_format: str = "NCHW", dtype: Any = None, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        axis = 1 if check_data_format(data_format) == "NCHW" else -1
        super().__init__(num_features, axis=axis, momentum=1.0 - momentum, epsilon=eps,
                         dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.data_format = data_format


def set_impl(model: nnx.Module, impl: str) -> nnx.Module:
    """Switch every jconv conv and pooling layer inside ``model`` to ``impl``, in place.

    Pooling layers only take ``"lax"``, ``"im2col"`` and ``"loops"``; with any other conv
    impl (e.g. ``"winograd_f4x4"``, ``"fft"``) they keep their current impl.

    Example:
      >>> from flax import nnx; import jconv
      >>> conv = jconv.set_impl(jconv.nn.Conv2d(3, 8, 3, rngs=nnx.Rngs(0)), "im2col")
      >>> conv.impl
      'im2col'
    """
    impl = check_conv_impl(impl)
    for _, layer in nnx.iter_graph(model):
        if isinstance(layer, (Conv2d, ConvTranspose2d)):
            layer.impl = impl
        elif isinstance(layer, (MaxPool2d, AvgPool2d)) and impl in POOL_IMPLS:
            # Pooling exists only as lax/im2col/loops: other impls switch the convs alone.
            layer.impl = impl
    return model


class ConvTranspose2d(nnx.Module):
    """``torch.nn.ConvTranspose2d`` for Flax NNX; the computation is
    :func:`jconv.conv_transpose2d`.

    Input (N, C_in, H, W) -> output (N, C_out, H_out, W_out) (channels-last with
    ``data_format="NHWC"``); ``kernel`` has PyTorch's transposed layout
    (C_in, C_out/groups, kH, kW), ``bias`` (C_out,).

      H_out = (H - 1)*stride - 2*padding + dilation*(kH - 1) + output_padding + 1

    Initialisation: kernel He/Kaiming normal with fan_in = C_out/groups*kH*kW (PyTorch's fan
    convention for this layout), bias zeros.

    Example:
      >>> from flax import nnx; import jax.numpy as jnp, jconv
      >>> up = jconv.nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1,
      ...                               rngs=nnx.Rngs(0))
      >>> up(jnp.ones((2, 16, 8, 8))).shape
      (2, 8, 16, 16)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair,
                 stride: IntOrPair = 1, padding: IntOrPair = 0, output_padding: IntOrPair = 0,
                 groups: int = 1, bias: bool = True, dilation: IntOrPair = 1, *,
                 impl: str = "lax", data_format: str = "NCHW", dtype: Any = None,
                 param_dtype: Any = jnp.float32, precision: Any = None,
                 kernel_init: Any = kaiming_normal_oihw, rngs: nnx.Rngs):
        _check_channels(in_channels, out_channels, groups)
        kh, kw = to_pair(kernel_size, "kernel_size", minimum=1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kh, kw)
        self.stride = to_pair(stride, "stride", minimum=1)
        self.dilation = to_pair(dilation, "dilation", minimum=1)
        self.padding = to_pair(padding, "padding", minimum=0)
        self.output_padding = check_output_padding(output_padding, self.stride, self.dilation,
                                                   stride, dilation)
        self.groups = groups
        self.impl = check_conv_impl(impl)
        self.data_format = check_data_format(data_format)
        self.dtype, self.precision = dtype, precision
        shape = (in_channels, out_channels // groups, kh, kw)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_channels,), param_dtype)) if bias else None

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        dtype = self.dtype or x.dtype
        b = None if self.bias is None else self.bias[...].astype(dtype)
        return conv_transpose2d(x.astype(dtype), self.kernel[...].astype(dtype), b,
                                stride=self.stride, padding=self.padding,
                                output_padding=self.output_padding, groups=self.groups,
                                dilation=self.dilation, impl=self.impl,
                                data_format=self.data_format, precision=self.precision)
