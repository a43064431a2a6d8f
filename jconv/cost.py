"""Cost bookkeeping: parameters, MACs/FLOPs, activation bytes, receptive fields."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from ._spec import SPATIAL_AXES, IntOrPair, PaddingLike, prod, to_tuple
from .shapes import conv_output_shape


def conv_params(in_channels: int, out_channels: int, kernel_size: IntOrPair, groups: int = 1,
                bias: bool = True, *, ndim: int = 2) -> int:
    """Trainable parameters of a Conv1d/2d/3d (``ndim`` spatial dims; a tuple
    ``kernel_size`` has one entry per dim): ``C_out * (C_in/groups) * prod(kernel)
    (+ C_out bias)``.

    Example:
      >>> import jconv
      >>> jconv.conv_params(3, 64, 3, ndim=3), jconv.conv_params(80, 256, (5,), ndim=1)
      (5248, 102656)
    """
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide both in_channels={in_channels} "
                         f"and out_channels={out_channels}")
    k = to_tuple(kernel_size, "kernel_size", ndim, minimum=1)
    return out_channels * (in_channels // groups) * prod(k) + (out_channels if bias else 0)


def conv2d_params(in_channels: int, out_channels: int, kernel_size: IntOrPair, groups: int = 1,
                  bias: bool = True) -> int:
    """Trainable parameters of a Conv2d: ``C_out * (C_in/groups) * kH * kW (+ C_out bias)``.

    Example:
      >>> import jconv
      >>> jconv.conv2d_params(3, 64, 3)
      1792
      >>> jconv.conv2d_params(3, 16, 3) + jconv.conv2d_params(16, 32, 3, bias=False)
      5056
      >>> jconv.conv2d_params(32, 32, 3, groups=32, bias=False)  # depthwise
      288
    """
    to_tuple(kernel_size, "kernel_size", 2, minimum=1, broadcast=False)
    return conv_params(in_channels, out_channels, kernel_size, groups, bias, ndim=2)


def _nchw(input_shape: Sequence[int], ndim: int = 2) -> tuple[int, ...]:
    """``input_shape`` batched: (N, C, *spatial) with ``ndim`` spatial dims."""
    if len(input_shape) == ndim + 1:
        return (1, *input_shape)
    if len(input_shape) != ndim + 2:
        axes = ", ".join(SPATIAL_AXES[ndim])
        raise ValueError(f"input_shape must be (N, C, {axes}) or (C, {axes}), "
                         f"got {input_shape!r}")
    return tuple(input_shape)


def conv_macs(input_shape: Sequence[int], out_channels: int, kernel_size: IntOrPair,
              stride: IntOrPair = 1, padding: PaddingLike = 0, dilation: IntOrPair = 1,
              groups: int = 1, *, ndim: int | None = None) -> int:
    """Multiply-accumulates of one 1-D, 2-D or 3-D conv forward pass on an
    (N, C_in, *spatial) input (``ndim`` spatial dims; default ``len(input_shape) - 2``).

      MACs = N * C_out * prod(out_spatial) * (C_in/groups) * prod(kernel)

    Every tap of every window counts, including taps that land on padding (the usual
    convention; XLA's ``cost_analysis`` skips zero padding, so it reports less for padded
    convs). ``padding_mode`` does not change the count.

    Example (a 3x3x3 video conv, and a 1-D audio conv):
      >>> import jconv
      >>> jconv.conv_macs((2, 3, 16, 112, 112), 64, 3, padding=1)
      2080899072
      >>> jconv.conv_macs((8, 32, 16000), 32, 3, padding=1)
      393216000
    """
    nd = len(input_shape) - 2 if ndim is None else ndim
    if nd not in SPATIAL_AXES:
        raise ValueError(f"input_shape must be (N, C_in, *spatial) with 1, 2 or 3 spatial "
                         f"dims, got {input_shape!r}")
    n, c_in, *size = _nchw(input_shape, nd)
    if c_in % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide both C_in={c_in} and "
                         f"out_channels={out_channels}")
    k = to_tuple(kernel_size, "kernel_size", nd, minimum=1)
    out = conv_output_shape(tuple(size), k, stride, padding, dilation, ndim=nd)
    return n * out_channels * prod(out) * (c_in // groups) * prod(k)


def conv2d_macs(input_shape: Sequence[int], out_channels: int, kernel_size: IntOrPair,
                stride: IntOrPair = 1, padding: PaddingLike = 0, dilation: IntOrPair = 1,
                groups: int = 1) -> int:
    """Multiply-accumulates of one conv forward pass on an (N, C_in, H, W) input:
    :func:`conv_macs` in 2-D.

      MACs = N * C_out * H_out * W_out * (C_in/groups) * kH * kW

    Every tap of every window counts, including taps that land on zero padding (the usual
    convention; XLA's ``cost_analysis`` skips those, so it reports less for padded convs).

    Example (input (32, 3, 224, 224), Conv2d(3->64, k3, p1)):
      >>> import jconv
      >>> jconv.conv2d_macs((32, 3, 224, 224), 64, 3, padding=1)
      2774532096
      >>> jconv.conv2d_macs((16, 64, 56, 56), 128, 3, padding=1)
      3699376128
    """
    return conv_macs(_nchw(input_shape), out_channels, kernel_size, stride, padding, dilation,
                     groups, ndim=2)


def conv2d_flops(input_shape: Sequence[int], out_channels: int, kernel_size: IntOrPair,
                 stride: IntOrPair = 1, padding: PaddingLike = 0, dilation: IntOrPair = 1,
                 groups: int = 1, bias: bool = False) -> int:
    """Floating-point operations of one conv forward pass: ``2 * MACs`` (a multiply and an
    add each), plus ``N * C_out * H_out * W_out`` additions when ``bias`` is set.

    Example:
      >>> import jconv
      >>> jconv.conv2d_flops((32, 3, 224, 224), 64, 3, padding=1)
      5549064192
    """
    return conv_flops(_nchw(input_shape), out_channels, kernel_size, stride, padding, dilation,
                      groups, bias, ndim=2)


def conv_flops(input_shape: Sequence[int], out_channels: int, kernel_size: IntOrPair,
               stride: IntOrPair = 1, padding: PaddingLike = 0, dilation: IntOrPair = 1,
               groups: int = 1, bias: bool = False, *, ndim: int | None = None) -> int:
    """Floating-point operations of one 1-D, 2-D or 3-D conv forward pass: ``2 * MACs``,
    plus ``N * C_out * prod(out_spatial)`` additions when ``bias`` is set (arguments as in
    :func:`conv_macs`).

    Example:
      >>> import jconv
      >>> jconv.conv_flops((8, 32, 16000), 32, 3, padding=1, bias=True)
      790528000
    """
    macs = conv_macs(input_shape, out_channels, kernel_size, stride, padding, dilation, groups,
                     ndim=ndim)
    if not bias:
        return 2 * macs
    nd = len(input_shape) - 2 if ndim is None else ndim
    n, _, *size = _nchw(input_shape, nd)
    out = conv_output_shape(tuple(size), kernel_size, stride, padding, dilation, ndim=nd)
    return 2 * macs + n * out_channels * prod(out)


def activation_bytes(shape: Sequence[int], dtype: Any = "float32") -> int:
    """Bytes to store an array of ``shape`` and ``dtype`` (any NumPy/JAX dtype or name).

    Example (batch 64, (256, 112, 112), float32):
      >>> import jconv
      >>> jconv.activation_bytes((64, 256, 112, 112), "float32")
      822083584
      >>> jconv.activation_bytes((64, 256, 112, 112), "bfloat16")
      411041792
    """
    import jax.numpy as jnp  # bfloat16 is a JAX (ml_dtypes) dtype

    if any(int(d) < 0 for d in shape):
        raise ValueError(f"shape must have non-negative dims, got {tuple(shape)!r}")
    return prod([int(d) for d in shape]) * np.dtype(jnp.dtype(dtype)).itemsize


class RFLayer(NamedTuple):
    """Receptive field after one layer: ``size`` input pixels seen, ``jump`` input pixels
    between neighbouring outputs, ``start`` centre of the first output in input coordinates."""

    size: int
    jump: int
    start: float


class ReceptiveField(NamedTuple):
    """Final receptive field ``size`` and ``jump``, plus every layer's :class:`RFLayer`."""

    size: int
    jump: int
    layers: tuple[RFLayer, ...]


def receptive_field(layers: Iterable[Sequence[int] | Mapping[str, Any]]) -> ReceptiveField:
    """Receptive field of a stack of conv/pool layers, along one spatial axis (of a 1-D,
    2-D or 3-D network alike: call it once per axis).

    Each layer is ``(kernel, stride)``, ``(kernel, stride, padding)``,
    ``(kernel, stride, padding, dilation)`` or a mapping with those keys
    (``kernel_size``, ``stride``, ``padding``, ``dilation``). With ``k_eff = d*(k-1)+1``:

      size_l = size_{l-1} + (k_eff - 1) * jump_{l-1}
      jump_l = jump_{l-1} * stride
      start_l = start_{l-1} + ((k_eff - 1)/2 - padding) * jump_{l-1}

    Example (conv3 s1 -> maxpool2 s2 -> conv3 -> conv3):
      >>> import jconv
      >>> rf = jconv.receptive_field([(3, 1), (2, 2), (3, 1), (3, 1)])
      >>> rf.size, rf.jump
      (12, 2)
      >>> jconv.receptive_field([(3, 1)] * 5).size  # five stacked 3x3 convs
      11
    """
    size, jump, start = 1, 1, 0.5
    steps = []
    for i, layer in enumerate(layers):
        if isinstance(layer, Mapping):
            unknown = set(layer) - {"kernel_size", "stride", "padding", "dilation"}
            if unknown or "kernel_size" not in layer:
                raise ValueError(f"layers[{i}] must have key 'kernel_size' and optionally "
                                 f"'stride', 'padding', 'dilation', got {dict(layer)!r}")
            k, s = layer["kernel_size"], layer.get("stride", 1)
            p, d = layer.get("padding", 0), layer.get("dilation", 1)
        elif isinstance(layer, Sequence) and 2 <= len(layer) <= 4:
            # Fill the missing tail from the defaults (padding 0, dilation 1).
            k, s, p, d = (*layer, *(0, 1)[len(layer) - 2:])
        else:
            raise TypeError(f"layers[{i}] must be (kernel, stride[, padding[, dilation]]) or "
                            f"a mapping, got {layer!r}")
        for name, v, lo in (("kernel", k, 1), ("stride", s, 1), ("padding", p, 0),
                            ("dilation", d, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"layers[{i}] {name} must be an int >= {lo}, got {v!r}")
        k_eff = d * (k - 1) + 1
        start = start + ((k_eff - 1) / 2 - p) * jump
        size = size + (k_eff - 1) * jump
        jump = jump * s
        steps.append(RFLayer(size, jump, start))
    if not steps:
        raise ValueError("layers must contain at least one layer")
    return ReceptiveField(size, jump, tuple(steps))
