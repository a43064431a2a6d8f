"""The geometry every windowed op shares, for 1, 2 and 3 spatial dims: the data-format
names and their parser, per-dim argument tuples, and the one output-size rule of
convolutions, pools (floor or ceil mode) and their transposes (transposed convolutions,
unpooling). :mod:`jconv._spec` and :mod:`jconv._pool_spec` build their specs from it."""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

IntOrTuple = Union[int, Sequence[int]]

# The spatial axes' letters per number of spatial dims, and the (channels-first,
# channels-last) data formats of each; the weight layout is always (O, I, *spatial).
SPATIAL_AXES: dict[int, str] = {1: "L", 2: "HW", 3: "DHW"}
CONV_DATA_FORMATS: dict[int, tuple[str, str]] = {
    n: ("NC" + axes, "N" + axes + "C") for n, axes in SPATIAL_AXES.items()}
_EVERY_FORMAT: tuple[str, ...] = tuple(f for fs in CONV_DATA_FORMATS.values() for f in fs)


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def to_tuple(value: IntOrTuple, name: str, ndim: int, *, minimum: int,
             broadcast: bool = True) -> tuple[int, ...]:
    """Turn an int, a length-``ndim`` sequence of ints or a one-int sequence (PyTorch
    broadcasts it, ``(1,)`` meaning 1 on every dim; not with ``broadcast=False``, as for
    ``unfold``/``fold``, whose PyTorch arguments are pairs) into a validated ``ndim``-tuple
    (one entry per spatial dim).

    Example:
      >>> to_tuple(3, "stride", 3, minimum=1), to_tuple((1,), "stride", 2, minimum=1)
      ((3, 3, 3), (1, 1))
    """
    if _is_int(value):
        out = (int(value),) * ndim
    elif (isinstance(value, (tuple, list)) and len(value) in ((1, ndim) if broadcast else (ndim,))
          and all(_is_int(v) for v in value)):
        out = tuple(int(v) for v in value) * (ndim // len(value))
    else:
        what = ("an int" if ndim == 1 else "an int or a pair of ints" if ndim == 2
                else f"an int or a tuple of {ndim} ints")
        raise TypeError(f"{name} must be {what}, got {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum} in every dimension, got {value!r}")
    return out


def format_ndim(data_format: object, default: int | None = None) -> int:
    """The number of spatial dims a known ``data_format`` names (``"NCDHW"`` -> 3). An
    unknown one gives ``default``, or a ``ValueError`` naming every format without one.

    Example:
      >>> format_ndim("nlc"), format_ndim("bogus", 2)
      (1, 2)
    """
    for ndim, formats in CONV_DATA_FORMATS.items():
        if isinstance(data_format, str) and data_format.upper() in formats:
            return ndim
    if default is None:
        raise ValueError(f"data_format must be one of {_EVERY_FORMAT}, got {data_format!r}")
    return default


def check_data_format(data_format: object, ndim: int | None = 2, op: str = "") -> str:
    """``data_format`` upper-cased, if it is one of the formats of ``ndim`` spatial dims
    (any of the family's formats with ``ndim=None``); ``op`` names the call in the error.

    Example:
      >>> check_data_format("nhwc"), check_data_format("NCL", None)
      ('NHWC', 'NCL')
    """
    if ndim is None:
        ndim = format_ndim(data_format)
    formats = CONV_DATA_FORMATS[ndim]
    if not isinstance(data_format, str) or data_format.upper() not in formats:
        where = f" for {op}" if op else ""
        raise ValueError(f"data_format must be one of {formats}{where}, got {data_format!r}")
    return data_format.upper()


def spatial_shape(x_shape: Sequence[int], data_format: str) -> tuple[int, ...]:
    """The spatial sizes of a (batched or unbatched) shape in ``data_format``.

    Example:
      >>> spatial_shape((2, 5, 7, 3), "NHWC")
      (5, 7)
    """
    nd = len(data_format) - 2
    # Only the spatial sizes: the batch may be a jax.export symbolic dimension.
    spatial = x_shape[-nd:] if data_format[1] == "C" else x_shape[-nd - 1:-1]
    return tuple(int(v) for v in spatial)


def output_size(size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int,
                ceil_mode: bool = False) -> int:
    """One spatial dim of a convolution or pool:
    ``(size + lo + hi - dilation*(kernel-1) - 1) // stride + 1`` (0 if the dilated kernel
    does not fit). With ``ceil_mode`` (pooling) the division rounds up, but, as in
    PyTorch, the last window must start inside the input or the low padding, so ceil mode
    can give one window even when the dilated kernel overhangs.

    Example:
      >>> output_size(5, 2, 2, (0, 0), 1), output_size(5, 2, 2, (0, 0), 1, ceil_mode=True)
      (2, 3)
    """
    span = size + pad[0] + pad[1] - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return max(0, span // stride + 1)
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad[0]:
        out -= 1
    return max(0, out)


def transposed_output_size(size: int, kernel: int, stride: int, pad: tuple[int, int],
                           dilation: int = 1, output_padding: int = 0) -> int:
    """One spatial dim of a transposed convolution or an unpooling, the inverse of
    :func:`output_size`: ``(size-1)*stride - lo - hi + dilation*(kernel-1) + 1 +
    output_padding``.

    Example:
      >>> transposed_output_size(2, 2, 2, (0, 0)), transposed_output_size(3, 3, 2, (1, 1), 1, 1)
      (4, 6)
    """
    return ((size - 1) * stride - pad[0] - pad[1] + dilation * (kernel - 1) + 1
            + output_padding)
