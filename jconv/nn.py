"""Flax NNX layers built on jconv's functional ops, with torch-style constructors."""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from ._pool_spec import (POOL_FORMATS, IntOrTuple, check_bool, check_pool_padding, pool_format,
                         pool_geometry)
from ._registry import CONV_IMPLS, POOL_IMPLS, check_conv_impl, check_impl_ndim
from ._spec import (CONV_DATA_FORMATS, IntOrPair, PaddingLike, _is_int, check_data_format,
                    check_impl, check_padding_mode, resolve_padding, to_tuple)
from .adaptive_pool import (adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d,
                            adaptive_max_pool1d, adaptive_max_pool2d, adaptive_max_pool3d,
                            output_sizes)
from .conv import convnd
from .pool import avg_poolnd, global_avg_pool2d, max_poolnd
from .transpose import (check_output_padding, conv_transpose1d, conv_transpose2d,
                        conv_transpose3d)
from .unfold import fold, unfold

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


def _setup_conv_layer(layer: nnx.Module, in_channels: int, out_channels: int,
                      kernel_size: IntOrPair, stride: IntOrPair, dilation: IntOrPair,
                      groups: int, impl: str, data_format: str | None, dtype: Any,
                      precision: Any) -> None:
    """The arguments every (transposed) conv layer shares, parsed with the functions' own
    validators so that a bad value fails at construction; ``layer.ndim`` spatial dims."""
    nd = layer.ndim
    _check_channels(in_channels, out_channels, groups)
    layer.in_channels, layer.out_channels, layer.groups = in_channels, out_channels, groups
    layer.kernel_size = to_tuple(kernel_size, "kernel_size", nd, minimum=1)
    layer.stride = to_tuple(stride, "stride", nd, minimum=1)
    layer.dilation = to_tuple(dilation, "dilation", nd, minimum=1)
    layer.impl = impl = check_conv_impl(impl)
    check_impl_ndim(impl, nd)
    layer.data_format = check_data_format(
        CONV_DATA_FORMATS[nd][0] if data_format is None else data_format, nd)
    layer.dtype, layer.precision = dtype, precision


def _init_conv_params(layer: nnx.Module, shape: tuple[int, ...], bias: bool, param_dtype: Any,
                      kernel_init: Any, rngs: nnx.Rngs) -> None:
    layer.kernel = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
    layer.bias = nnx.Param(jnp.zeros((layer.out_channels,), param_dtype)) if bias else None


def _check_input_channels(layer: nnx.Module, x: Any, expected: int, data_format: str,
                          what: str) -> None:
    """A ValueError naming ``layer`` unless ``x`` has ``expected`` channels on the channel
    axis of ``data_format`` (axis 1 batched / 0 unbatched channels first, the last axis
    channels last). Inputs of a rank the layer's function rejects are left to it, whose
    message names the layout."""
    shape = tuple(getattr(x, "shape", ()))
    nd = len(data_format) - 2
    if len(shape) not in (nd + 1, nd + 2):
        return
    axis = len(shape) - 1 if data_format[-1] == "C" else len(shape) - nd - 1
    if shape[axis] != expected:
        raise ValueError(f"{type(layer).__name__}({what}={expected}) expects {expected} "
                         f"channels on axis {axis} of its {data_format} input, got an input "
                         f"of shape {shape} ({shape[axis]} channels there)")


def _cast_operands(layer: nnx.Module, x: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
    """x, kernel and bias (or None) in the layer's compute dtype (default: x's)."""
    dtype = layer.dtype or x.dtype
    b = None if layer.bias is None else layer.bias[...].astype(dtype)
    return x.astype(dtype), layer.kernel[...].astype(dtype), b


class _ConvNd(nnx.Module):
    """The N-D convolution layer; :class:`Conv1d`, :class:`Conv2d` and :class:`Conv3d` fix
    ``ndim``. Arguments are parsed with the functions' own validators, at construction."""

    ndim: ClassVar[int] = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair,
                 stride: IntOrPair = 1, padding: PaddingLike = 0, dilation: IntOrPair = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 impl: str = "lax", data_format: str | None = None, dtype: Any = None,
                 param_dtype: Any = jnp.float32, precision: Any = None,
                 kernel_init: Any = kaiming_normal_oihw, rngs: nnx.Rngs):
        _setup_conv_layer(self, in_channels, out_channels, kernel_size, stride, dilation,
                          groups, impl, data_format, dtype, precision)
        # ``padding`` as given (for display); ``pads`` resolved once, what every call uses.
        self.pads = resolve_padding(padding, self.kernel_size, self.dilation, self.stride)
        self.padding = padding
        self.padding_mode = check_padding_mode(padding_mode)
        _init_conv_params(self, (out_channels, in_channels // groups, *self.kernel_size), bias,
                          param_dtype, kernel_init, rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        _check_input_channels(self, x, self.in_channels, self.data_format, "in_channels")
        x, w, b = _cast_operands(self, x)
        return convnd(x, w, b, stride=self.stride,
                      padding=self.pads, dilation=self.dilation, groups=self.groups,
                      impl=self.impl, data_format=self.data_format, precision=self.precision,
                      padding_mode=self.padding_mode)


class Conv1d(_ConvNd):
    """``torch.nn.Conv1d`` for Flax NNX; the computation is :func:`jconv.conv1d`.

    Input (N, C_in, L) -> output (N, C_out, L_out) (channels-last with
    ``data_format="NLC"``; unbatched inputs work too). ``kernel`` (C_out, C_in/groups, kL),
    ``bias`` (C_out,). Arguments, ``padding_mode`` and initialisation as in :class:`Conv2d`.

      L_out = (L + pad_left + pad_right - dilation*(kL-1) - 1) // stride + 1

    Example (a dilated layer of a WaveNet-style stack, circular padding):
      >>> from flax import nnx; import jax.numpy as jnp, jconv
      >>> conv = jconv.nn.Conv1d(16, 32, 3, padding="same", dilation=4,
      ...                        padding_mode="circular", rngs=nnx.Rngs(0))
      >>> conv(jnp.ones((2, 16, 100))).shape
      (2, 32, 100)
    """

    ndim: ClassVar[int] = 1


class Conv2d(_ConvNd):
    """``torch.nn.Conv2d`` for Flax NNX; the computation is :func:`jconv.conv2d`.

    Input (N, C_in, H, W) -> output (N, C_out, H_out, W_out) (or channels-last with
    ``data_format="NHWC"``; unbatched inputs work too). ``kernel`` has shape
    (C_out, C_in/groups, kH, kW) in either format; ``bias`` (C_out,).

      H_out = (H + pad_top + pad_bottom - dilation*(kH-1) - 1) // stride + 1

    ``padding_mode``: ``"zeros"`` (default), ``"reflect"``, ``"replicate"`` or
    ``"circular"``, with PyTorch's rules (see :func:`jconv.convnd`).

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

    ndim: ClassVar[int] = 2


class Conv3d(_ConvNd):
    """``torch.nn.Conv3d`` for Flax NNX; the computation is :func:`jconv.conv3d`.

    Input (N, C_in, D, H, W) -> output (N, C_out, D_out, H_out, W_out) (channels-last with
    ``data_format="NDHWC"``). ``kernel`` (C_out, C_in/groups, kD, kH, kW), ``bias``
    (C_out,). Arguments, ``padding_mode`` and initialisation as in :class:`Conv2d`.

      D_out = (D + pad_front + pad_back - dilation_d*(kD-1) - 1) // stride_d + 1  (H, W alike)

    Example (a video block: keep time, halve space):
      >>> from flax import nnx; import jax.numpy as jnp, jconv
      >>> conv = jconv.nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1,
      ...                        padding_mode="replicate", rngs=nnx.Rngs(0))
      >>> conv(jnp.ones((1, 3, 8, 32, 32))).shape
      (1, 8, 8, 16, 16)
    """

    ndim: ClassVar[int] = 3


def _pool_args(kernel_size: IntOrTuple, stride: IntOrTuple | None, padding: IntOrTuple,
               ndim: int = 2) -> tuple[tuple[int, ...], tuple[int, ...] | None, tuple[int, ...]]:
    """Kernel, stride (None: the kernel) and padding parsed as the pooling functions do."""
    k, s, p = pool_geometry(kernel_size, stride, padding, ndim)
    check_pool_padding(p, k, padding, kernel_size)
    # pool_geometry hands back the kernel itself for a None or empty stride: keep it None.
    return k, (None if s is k else s), p


class _MaxPoolNd(nnx.Module):
    """``torch.nn.MaxPool{1,2,3}d``, shared by the three: arguments parsed at construction,
    in the PyTorch module's order (``return_indices`` before ``ceil_mode``)."""

    ndim: ClassVar[int] = 2

    def __init__(self, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
                 padding: IntOrTuple = 0, dilation: IntOrTuple = 1,
                 return_indices: bool = False, ceil_mode: bool = False, *, impl: str = "lax",
                 data_format: str | None = None):
        nd = self.ndim
        self.kernel_size, self.stride, self.padding = _pool_args(kernel_size, stride, padding,
                                                                 nd)
        self.dilation = to_tuple(dilation, "dilation", nd, minimum=1)
        self.ceil_mode = check_bool(ceil_mode, "ceil_mode")
        self.return_indices = check_bool(return_indices, "return_indices")
        self.impl = check_impl(impl, POOL_IMPLS)
        self.data_format = pool_format(data_format or POOL_FORMATS[nd][0], nd)

    def __call__(self, x: jnp.ndarray) -> Any:
        return max_poolnd(x, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode, self.return_indices, impl=self.impl,
                          data_format=self.data_format)


class MaxPool1d(_MaxPoolNd):
    """``torch.nn.MaxPool1d``: see :func:`jconv.max_pool1d` (``data_format`` ``"NCL"``
    by default, or ``"NLC"``).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.MaxPool1d(3, 2, 1)(jnp.ones((4, 8, 16))).shape
      (4, 8, 8)
    """

    ndim = 1


class MaxPool2d(_MaxPoolNd):
    """``torch.nn.MaxPool2d``: see :func:`jconv.max_pool2d` for shapes and semantics.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.MaxPool2d(2)(jnp.ones((1, 8, 32, 32))).shape
      (1, 8, 16, 16)
    """

    ndim = 2


class MaxPool3d(_MaxPoolNd):
    """``torch.nn.MaxPool3d``: see :func:`jconv.max_pool3d` (``"NCDHW"`` or ``"NDHWC"``).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.MaxPool3d(2)(jnp.ones((1, 4, 8, 8, 8))).shape
      (1, 4, 4, 4, 4)
    """

    ndim = 3


class _AvgPoolNd(nnx.Module):
    """``torch.nn.AvgPool{1,2,3}d``, shared by the three: arguments parsed at construction."""

    ndim: ClassVar[int] = 2

    def __init__(self, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
                 padding: IntOrTuple = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None, *, impl: str = "lax",
                 data_format: str | None = None):
        nd = self.ndim
        self.kernel_size, self.stride, self.padding = _pool_args(kernel_size, stride, padding,
                                                                 nd)
        self.ceil_mode = check_bool(ceil_mode, "ceil_mode")
        self.count_include_pad = check_bool(count_include_pad, "count_include_pad")
        if divisor_override is not None and (nd == 1 or not _is_int(divisor_override)
                                             or not divisor_override):
            what = "None (PyTorch's AvgPool1d has none)" if nd == 1 else "None or a non-zero int"
            raise ValueError(f"divisor_override must be {what}, got {divisor_override!r}")
        self.divisor_override = divisor_override
        self.impl = check_impl(impl, POOL_IMPLS)
        self.data_format = pool_format(data_format or POOL_FORMATS[nd][0], nd)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return avg_poolnd(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override, impl=self.impl,
                          data_format=self.data_format)


class AvgPool1d(_AvgPoolNd):
    """``torch.nn.AvgPool1d``: see :func:`jconv.avg_pool1d` (no ``divisor_override``).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.AvgPool1d(2)(jnp.ones((4, 8, 16))).shape
      (4, 8, 8)
    """

    ndim = 1


class AvgPool2d(_AvgPoolNd):
    """``torch.nn.AvgPool2d``: see :func:`jconv.avg_pool2d` for shapes and semantics.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.AvgPool2d(2)(jnp.ones((1, 8, 32, 32))).shape
      (1, 8, 16, 16)
    """

    ndim = 2


class AvgPool3d(_AvgPoolNd):
    """``torch.nn.AvgPool3d``: see :func:`jconv.avg_pool3d`.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.AvgPool3d(2, divisor_override=1)(jnp.ones((1, 4, 8, 8, 8)))[0, 0, 0, 0, 0].item()
      8.0
    """

    ndim = 3


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

    Normalises over (N, H, W) per channel; the channel axis follows ``data_format``. Input
    and output (N, C, H, W) (``"NHWC"``: (N, H, W, C)); any other rank or channel count is a
    ValueError naming the layer, ``num_features`` and the input's shape.
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
        data_format = check_data_format(data_format)
        axis = 1 if data_format == "NCHW" else -1
        super().__init__(num_features, axis=axis, momentum=1.0 - momentum, epsilon=eps,
                         dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.data_format = data_format

    def check_input(self, x: Any) -> None:
        """A ValueError naming the layer unless ``x`` is 4-D (``torch.nn.BatchNorm2d``'s rule:
        an unbatched (C, H, W) input would be normalised over the wrong axes) with
        ``num_features`` channels on the ``data_format`` channel axis. Subclasses that
        replace ``__call__`` call it first.

        Example:
          >>> from flax import nnx; import jax.numpy as jnp, jconv
          >>> bn = jconv.nn.BatchNorm2d(4, data_format="NHWC", rngs=nnx.Rngs(0))
          >>> bn.check_input(jnp.ones((2, 8, 8, 4)))  # (N, H, W, C=4): fine
          >>> bn.check_input(jnp.ones((2, 4, 8, 8)))  # doctest: +ELLIPSIS
          Traceback (most recent call last):
          ValueError: BatchNorm2d(num_features=4) expects 4 channels on axis 3 of its NHWC ...
        """
        shape = tuple(getattr(x, "shape", ()))
        layout = "(N, C, H, W)" if self.data_format == "NCHW" else "(N, H, W, C)"
        if len(shape) != 4:
            raise ValueError(f"{type(self).__name__}(num_features={self.num_features}) expects "
                             f"a 4-D {layout} input for data_format={self.data_format!r}, got "
                             f"shape {shape}")
        _check_input_channels(self, x, self.num_features, self.data_format, "num_features")

    def __call__(self, x: jnp.ndarray, use_running_average: bool | None = None, *,
                 mask: jnp.ndarray | None = None) -> jnp.ndarray:
        """``nnx.BatchNorm``'s call on a checked input (see :meth:`check_input`)."""
        self.check_input(x)
        return super().__call__(x, use_running_average, mask=mask)


def set_impl(model: nnx.Module, impl: str) -> nnx.Module:
    """Switch every jconv conv and pooling layer inside ``model`` to ``impl``, in place.

    Pooling layers only take ``"lax"``, ``"im2col"`` and ``"loops"``; with any other conv
    impl (e.g. ``"winograd_f4x4"``, ``"fft"``) they keep their current impl, and so do 1-D and
    3-D conv layers with a 2-D-only impl (``"winograd_f4x4"``, ``"pallas"``).

    Example:
      >>> from flax import nnx; import jconv
      >>> conv = jconv.set_impl(jconv.nn.Conv2d(3, 8, 3, rngs=nnx.Rngs(0)), "im2col")
      >>> conv.impl
      'im2col'
    """
    impl = check_conv_impl(impl)
    for _, layer in nnx.iter_graph(model):
        if isinstance(layer, (_ConvNd, _ConvTransposeNd)):
            # An impl that lacks a layer's dims (Winograd, pallas: 2-D only) leaves it alone.
            if layer.ndim in CONV_IMPLS[impl].ndims:
                layer.impl = impl
        elif isinstance(layer, (_MaxPoolNd, _AvgPoolNd)) and impl in POOL_IMPLS:
            # Every pooling layer with an impl (1-D, 2-D and 3-D; the base classes, so none
            # is missed). Pooling exists only as lax/im2col/loops: other impls switch the
            # convs alone.
            layer.impl = impl
    return model


class _ConvTransposeNd(nnx.Module):
    """The N-D transposed convolution layer; :class:`ConvTranspose1d`/``2d``/``3d`` fix
    ``ndim``."""

    ndim: ClassVar[int] = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrPair,
                 stride: IntOrPair = 1, padding: IntOrPair = 0, output_padding: IntOrPair = 0,
                 groups: int = 1, bias: bool = True, dilation: IntOrPair = 1,
                 padding_mode: str = "zeros", *, impl: str = "lax",
                 data_format: str | None = None, dtype: Any = None,
                 param_dtype: Any = jnp.float32, precision: Any = None,
                 kernel_init: Any = kaiming_normal_oihw, rngs: nnx.Rngs):
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros' for {type(self).__name__} "
                             f"(PyTorch rule), got {padding_mode!r}")
        _setup_conv_layer(self, in_channels, out_channels, kernel_size, stride, dilation,
                          groups, impl, data_format, dtype, precision)
        self.padding = to_tuple(padding, "padding", self.ndim, minimum=0)
        self.output_padding = check_output_padding(output_padding, self.stride, self.dilation,
                                                   stride, dilation)
        self.padding_mode = padding_mode
        _init_conv_params(self, (in_channels, out_channels // groups, *self.kernel_size), bias,
                          param_dtype, kernel_init, rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        _check_input_channels(self, x, self.in_channels, self.data_format, "in_channels")
        x, w, b = _cast_operands(self, x)
        fn = {1: conv_transpose1d, 2: conv_transpose2d, 3: conv_transpose3d}[self.ndim]
        return fn(x, w, b, stride=self.stride,
                  padding=self.padding, output_padding=self.output_padding, groups=self.groups,
                  dilation=self.dilation, impl=self.impl, data_format=self.data_format,
                  precision=self.precision)


class ConvTranspose1d(_ConvTransposeNd):
    """``torch.nn.ConvTranspose1d`` for Flax NNX; the computation is
    :func:`jconv.conv_transpose1d`: (N, C_in, L) -> (N, C_out, L_out), ``kernel``
    (C_in, C_out/groups, kL); otherwise as :class:`ConvTranspose2d`.

      L_out = (L - 1)*stride - 2*padding + dilation*(kL - 1) + output_padding + 1

    Example:
      >>> from flax import nnx; import jax.numpy as jnp, jconv
      >>> up = jconv.nn.ConvTranspose1d(8, 4, 4, stride=2, padding=1, rngs=nnx.Rngs(0))
      >>> up(jnp.ones((2, 8, 50))).shape
      (2, 4, 100)
    """

    ndim: ClassVar[int] = 1


class ConvTranspose2d(_ConvTransposeNd):
    """``torch.nn.ConvTranspose2d`` for Flax NNX; the computation is
    :func:`jconv.conv_transpose2d`.

    Input (N, C_in, H, W) -> output (N, C_out, H_out, W_out) (channels-last with
    ``data_format="NHWC"``); ``kernel`` has PyTorch's transposed layout
    (C_in, C_out/groups, kH, kW), ``bias`` (C_out,). ``padding_mode`` must be ``"zeros"``
    (as in PyTorch).

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

    ndim: ClassVar[int] = 2


class ConvTranspose3d(_ConvTransposeNd):
    """``torch.nn.ConvTranspose3d`` for Flax NNX; the computation is
    :func:`jconv.conv_transpose3d`: (N, C_in, D, H, W) -> (N, C_out, D_out, H_out, W_out),
    ``kernel`` (C_in, C_out/groups, kD, kH, kW); otherwise as :class:`ConvTranspose2d`.

      D_out = (D - 1)*stride_d - 2*padding_d + dilation_d*(kD - 1) + output_padding_d + 1

    Example:
      >>> from flax import nnx; import jax.numpy as jnp, jconv
      >>> up = jconv.nn.ConvTranspose3d(4, 2, 2, stride=2, rngs=nnx.Rngs(0))
      >>> up(jnp.ones((1, 4, 4, 8, 8))).shape
      (1, 2, 8, 16, 16)
    """

    ndim: ClassVar[int] = 3


_ADAPTIVE = {("avg", 1): adaptive_avg_pool1d, ("avg", 2): adaptive_avg_pool2d,
             ("avg", 3): adaptive_avg_pool3d, ("max", 1): adaptive_max_pool1d,
             ("max", 2): adaptive_max_pool2d, ("max", 3): adaptive_max_pool3d}


class _AdaptivePoolNd(nnx.Module):
    """``torch.nn.Adaptive{Avg,Max}Pool{1,2,3}d``, shared by the six."""

    ndim: ClassVar[int] = 2
    op: ClassVar[str] = "avg"

    def __init__(self, output_size: Any, *, data_format: str | None = None):
        self.output_size = output_sizes(output_size, self.ndim)
        self.data_format = pool_format(data_format or POOL_FORMATS[self.ndim][0], self.ndim)

    def __call__(self, x: jnp.ndarray) -> Any:
        return _ADAPTIVE[self.op, self.ndim](x, self.output_size, data_format=self.data_format)


class _AdaptiveMaxPoolNd(_AdaptivePoolNd):
    op = "max"

    def __init__(self, output_size: Any, return_indices: bool = False, *,
                 data_format: str | None = None):
        super().__init__(output_size, data_format=data_format)
        self.return_indices = check_bool(return_indices, "return_indices")

    def __call__(self, x: jnp.ndarray) -> Any:
        return _ADAPTIVE["max", self.ndim](x, self.output_size, self.return_indices,
                                           data_format=self.data_format)


class AdaptiveAvgPool1d(_AdaptivePoolNd):
    """``torch.nn.AdaptiveAvgPool1d``: see :func:`jconv.adaptive_avg_pool1d`.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.AdaptiveAvgPool1d(4)(jnp.ones((2, 3, 10))).shape
      (2, 3, 4)
    """

    ndim = 1


class AdaptiveAvgPool2d(_AdaptivePoolNd):
    """``torch.nn.AdaptiveAvgPool2d``: see :func:`jconv.adaptive_avg_pool2d` (a ResNet head).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.AdaptiveAvgPool2d((1, 1))(jnp.ones((2, 512, 7, 7))).shape
      (2, 512, 1, 1)
    """

    ndim = 2


class AdaptiveAvgPool3d(_AdaptivePoolNd):
    """``torch.nn.AdaptiveAvgPool3d``: see :func:`jconv.adaptive_avg_pool3d`.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.AdaptiveAvgPool3d((1, None, 2))(jnp.ones((2, 3, 4, 5, 6))).shape
      (2, 3, 1, 5, 2)
    """

    ndim = 3


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """``torch.nn.AdaptiveMaxPool1d``: see :func:`jconv.adaptive_max_pool1d`.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.AdaptiveMaxPool1d(4)(jnp.ones((2, 3, 10))).shape
      (2, 3, 4)
    """

    ndim = 1


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    """``torch.nn.AdaptiveMaxPool2d``: see :func:`jconv.adaptive_max_pool2d`.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> y, idx = jconv.nn.AdaptiveMaxPool2d(2, return_indices=True)(jnp.ones((2, 3, 5, 5)))
      >>> y.shape, idx.dtype
      ((2, 3, 2, 2), dtype('int32'))
    """

    ndim = 2


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    """``torch.nn.AdaptiveMaxPool3d``: see :func:`jconv.adaptive_max_pool3d`.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.AdaptiveMaxPool3d(1)(jnp.ones((2, 3, 4, 5, 6))).shape
      (2, 3, 1, 1, 1)
    """

    ndim = 3


class _SlidingBlocks(nnx.Module):
    """The block geometry Unfold and Fold share, parsed at construction."""

    def __init__(self, kernel_size: IntOrPair, dilation: IntOrPair = 1, padding: IntOrPair = 0,
                 stride: IntOrPair = 1):
        self.kernel_size = to_tuple(kernel_size, "kernel_size", 2, minimum=1, broadcast=False)
        self.dilation = to_tuple(dilation, "dilation", 2, minimum=1, broadcast=False)
        self.padding = to_tuple(padding, "padding", 2, minimum=0, broadcast=False)
        self.stride = to_tuple(stride, "stride", 2, minimum=1, broadcast=False)


class Unfold(_SlidingBlocks):
    """``torch.nn.Unfold``: see :func:`jconv.unfold` ((N, C, H, W) -> (N, C*kH*kW, L)).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.Unfold(3, padding=1)(jnp.ones((2, 4, 8, 8))).shape
      (2, 36, 64)
    """

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)


class Fold(_SlidingBlocks):
    """``torch.nn.Fold``: see :func:`jconv.fold` ((N, C*kH*kW, L) -> (N, C, *output_size),
    overlaps summed).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.nn.Fold((8, 8), 3, padding=1)(jnp.ones((2, 36, 64))).shape
      (2, 4, 8, 8)
    """

    def __init__(self, output_size: IntOrPair, kernel_size: IntOrPair, dilation: IntOrPair = 1,
                 padding: IntOrPair = 0, stride: IntOrPair = 1):
        super().__init__(kernel_size, dilation, padding, stride)
        self.output_size = to_tuple(output_size, "output_size", 2, minimum=1, broadcast=False)

    def __call__(self, cols: jnp.ndarray) -> jnp.ndarray:
        return fold(cols, self.output_size, self.kernel_size, self.dilation, self.padding,
                    self.stride)
