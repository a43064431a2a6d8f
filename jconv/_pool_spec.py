"""Pooling argument parsing for 1, 2 and 3 spatial dims: the frozen :class:`PoolSpec`, built
once per call by :func:`canonical_pool` (or from a shape alone by :func:`pool_spec`) and
shared by every pooling implementation. The number of spatial dims comes from
``data_format`` (``"NCL"``/``"NLC"``, ``"NCHW"``/``"NHWC"``, ``"NCDHW"``/``"NDHWC"``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from ._geometry import (CONV_DATA_FORMATS, IntOrTuple, check_data_format, format_ndim,
                        output_size, spatial_shape, to_tuple)
from ._spec import PadPairs, SpatialGeometry, _check_float

# Pooling takes the data formats convolution does: {1: ("NCL", "NLC"), 2: ..., 3: ...}.
POOL_FORMATS: dict[int, tuple[str, str]] = CONV_DATA_FORMATS


def pool_format(data_format: str, ndim: int) -> str:
    """Validate ``data_format`` for ``ndim``-D pooling (channels first or last)."""
    return check_data_format(data_format, ndim, f"{ndim}-D pooling")


def check_pool_rank(x_shape: Sequence[int], data_format: str) -> None:
    nd = len(data_format) - 2
    if len(x_shape) not in (nd + 1, nd + 2):
        raise ValueError(f"x must be {nd + 1}-D or {nd + 2}-D ({data_format} batched or "
                         f"unbatched), got shape {tuple(x_shape)}")


@dataclass(frozen=True)
class PoolSpec(SpatialGeometry):
    """Validated pooling geometry over ``ndim`` spatial dims; ``padding`` includes the extra
    ceil-mode overhang, ``user_padding`` is the padding as given."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: PadPairs
    user_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    data_format: str


def pool_geometry(kernel_size: IntOrTuple, stride: IntOrTuple | None, padding: IntOrTuple,
                  nd: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Kernel, stride and padding of an ``nd``-D pooling or unpooling call, one entry per
    spatial dim, read as PyTorch reads them: ``stride`` ``None`` or empty (``()``, what
    ``torch.nn.functional.max_pool2d`` passes for ``None``) is the kernel size, a one-int
    sequence is broadcast to every dim.

    Example:
      >>> pool_geometry((3, 3), (), (1,), 2)
      ((3, 3), (3, 3), (1, 1))
    """
    kernel = to_tuple(kernel_size, "kernel_size", nd, minimum=1)
    empty = isinstance(stride, (tuple, list)) and len(stride) == 0
    stride_t = kernel if stride is None or empty else to_tuple(stride, "stride", nd, minimum=1)
    return kernel, stride_t, to_tuple(padding, "padding", nd, minimum=0)


def check_pool_nonempty(x_shape: Sequence[int], data_format: str) -> None:
    """PyTorch's rule for windowed pooling: only the batch may be empty (channels and every
    spatial size non-zero; an unbatched input has no batch)."""
    nd = len(data_format) - 2
    rest = x_shape[1:] if len(x_shape) == nd + 2 else x_shape
    if 0 in tuple(rest):
        raise ValueError(f"x must have non-zero channels and spatial sizes (only the batch "
                         f"may be empty, as in PyTorch), got shape {tuple(x_shape)}")


def check_pool_padding(pad: Sequence[int], kernel: Sequence[int], padding: object,
                       kernel_size: object) -> None:
    """PyTorch's pooling rule: padding at most half the kernel (``padding``/``kernel_size``
    as the user gave them, for the message)."""
    for p, k in zip(pad, kernel):
        if 2 * p > k:
            raise ValueError(f"padding must be at most half of kernel_size (PyTorch rule), "
                             f"got padding={padding!r} for kernel_size={kernel_size!r}")


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                     ceil_mode: bool) -> int:
    """PyTorch's pooling output size along one dim: :func:`jconv._geometry.output_size`
    with ``padding`` on both sides.

    Example:
      >>> pool_output_size(5, 2, 2, 0, 1, False), pool_output_size(5, 2, 2, 0, 1, True)
      (2, 3)
    """
    return output_size(size, kernel, stride, (padding, padding), dilation, ceil_mode)


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def pool_spec(x_shape: Sequence[int], kernel_size: IntOrTuple,
              stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
              dilation: IntOrTuple = 1, ceil_mode: bool = False,
              data_format: str = "NCHW") -> PoolSpec:
    """The validated :class:`PoolSpec` of a pooling call from the input shape alone
    (PyTorch rules). The spatial dims follow ``data_format``: x_shape (N, C, *spatial) or
    (C, *spatial), channels last for ``"NLC"``/``"NHWC"``/``"NDHWC"``.

    Example:
      >>> pool_spec((1, 1, 5, 5), 2, ceil_mode=True).out_size
      (3, 3)
      >>> pool_spec((1, 2, 9), 3, stride=2, padding=1, data_format="NCL").out_size
      (5,)
    """
    data_format = pool_format(data_format, format_ndim(data_format))
    nd = len(data_format) - 2
    check_pool_rank(x_shape, data_format)
    check_pool_nonempty(x_shape, data_format)
    kernel, stride_t, pad = pool_geometry(kernel_size, stride, padding, nd)
    dil = to_tuple(dilation, "dilation", nd, minimum=1)
    check_bool(ceil_mode, "ceil_mode")
    check_pool_padding(pad, kernel, padding, kernel_size)
    size_in = spatial_shape(x_shape, data_format)
    out_size, pads = [], []
    for size, k, s, p, d, axis in zip(size_in, kernel, stride_t, pad, dil, data_format[-nd:]
                                      if data_format[1] == "C" else data_format[1:-1]):
        out = pool_output_size(size, k, s, p, d, ceil_mode)
        if out < 1:
            raise ValueError(f"pooling window larger than the padded input along {axis}: "
                             f"effective kernel {d * (k - 1) + 1} > padded size {size + 2 * p}")
        # Ceil mode may need windows that run past the padded input: pad the overhang too.
        overhang = max(0, (out - 1) * s + d * (k - 1) + 1 - (size + 2 * p))
        out_size.append(out)
        pads.append((p, p + overhang))
    return PoolSpec(kernel=kernel, stride=stride_t, padding=tuple(pads), user_padding=pad,
                    dilation=dil, in_size=size_in, out_size=tuple(out_size),
                    data_format=data_format)


def canonical_pool(x: jnp.ndarray, kernel_size: IntOrTuple, stride: IntOrTuple | None,
                   padding: IntOrTuple, dilation: IntOrTuple, ceil_mode: bool,
                   data_format: str) -> tuple[PoolSpec, bool]:
    """Validate a pooling call (PyTorch rules). Returns the spec and whether x was unbatched."""
    _check_float(x, "x")
    spec = pool_spec(x.shape, kernel_size, stride, padding, dilation, ceil_mode, data_format)
    return spec, x.ndim == spec.ndim + 1
