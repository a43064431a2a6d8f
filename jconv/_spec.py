"""Canonical argument parsing shared by every convolution and pooling implementation.

Every public entry point calls one of the ``canonical_*`` functions exactly once; they check
the arrays and build the frozen :class:`ConvSpec` / :class:`PoolSpec` from their shapes with
:func:`conv_spec` / :func:`pool_spec`, which tools that have only shapes (benchmarks,
``jconv.auto_choice``) call directly. Implementations receive the spec and never re-parse.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence, Union

import jax.numpy as jnp

from ._geometry import (CONV_DATA_FORMATS, SPATIAL_AXES, _is_int, check_data_format,
                        format_ndim, output_size, spatial_shape, to_tuple)

Pair = tuple[int, int]
PadPairs = tuple[tuple[int, int], ...]
IntOrPair = Union[int, Sequence[int]]
PaddingLike = Union[int, str, Sequence[int], Sequence[Sequence[int]]]

DATA_FORMATS: tuple[str, ...] = CONV_DATA_FORMATS[2]
PADDING_MODES: tuple[str, ...] = ("zeros", "reflect", "replicate", "circular")


def _padding_forms(ndim: int) -> str:
    if ndim == 2:
        return "an int, a pair, ((top, bottom), (left, right)), 'valid' or 'same'"
    return (f"an int, a tuple of {ndim} ints, {ndim} (low, high) pairs, 'valid' or 'same'"
            if ndim > 1 else "an int, a 1-tuple, one (low, high) pair, 'valid' or 'same'")


def resolve_padding(padding: PaddingLike, kernel: Sequence[int], dilation: Sequence[int],
                    stride: Sequence[int]) -> PadPairs:
    """Turn any accepted padding form into one ``(low, high)`` pair per spatial dim
    (``((top, bottom), (left, right))`` in 2-D); the number of dims is ``len(kernel)``.

    Forms: an int, one int per dim, one ``(low, high)`` pair per dim, ``"valid"`` or
    ``"same"``. ``"same"`` follows PyTorch: total padding ``dilation*(k-1)`` split with the
    extra pixel on the high side (bottom/right), and only for stride 1.
    """
    ndim = len(kernel)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0),) * ndim
        if mode == "same":
            if any(s != 1 for s in stride):
                raise ValueError(
                    f"padding='same' requires stride 1, got stride={tuple(stride)}; "
                    "pass explicit padding for strided convolutions"
                )
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ValueError(f"padding must be {_padding_forms(ndim)}, got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 1 and _is_int(padding[0]):
        padding = padding[0]  # PyTorch broadcasts a one-int padding to every dim
    if _is_int(padding):
        p = int(padding)
        pads = ((p, p),) * ndim
    elif (isinstance(padding, (tuple, list)) and len(padding) == ndim
          and all(_is_int(v) for v in padding)):
        pads = tuple((int(v),) * 2 for v in padding)
    elif (isinstance(padding, (tuple, list)) and len(padding) == ndim
          and all(isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(u) for u in v)
                  for v in padding)):
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)  # type: ignore[misc]
    else:
        raise TypeError(f"padding must be {_padding_forms(ndim)}, got {padding!r}")
    if min(v for pair in pads for v in pair) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return pads  # type: ignore[return-value]


class SpatialGeometry:
    """What every spec with per-dim ``kernel``/``in_size``/``out_size`` fields derives from
    them (:class:`ConvSpec`, :class:`jconv._pool_spec.PoolSpec`)."""

    kernel: tuple[int, ...]
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]

    @property
    def ndim(self) -> int:
        """The number of spatial dims (1, 2 or 3)."""
        return len(self.kernel)

    @property
    def in_hw(self) -> tuple[int, ...]:
        """Deprecated: ``in_size`` (its name from when jconv was 2-D only)."""
        warnings.warn("in_hw is deprecated: use in_size", DeprecationWarning, stacklevel=2)
        return self.in_size

    @property
    def out_hw(self) -> tuple[int, ...]:
        """Deprecated: ``out_size`` (its name from when jconv was 2-D only)."""
        warnings.warn("out_hw is deprecated: use out_size", DeprecationWarning, stacklevel=2)
        return self.out_size


@dataclass(frozen=True)
class ConvSpec(SpatialGeometry):
    """Validated convolution geometry with N = 1, 2 or 3 spatial dims, built once by
    :func:`conv_spec` and shared by every implementation (``conv(x, w, spec)``).

    Every per-dim field has one entry per spatial dim, in the order of ``data_format``'s
    letters (L; H, W; D, H, W): ``padding`` is resolved to one ``(low, high)`` pair per dim
    (``((top, bottom), (left, right))`` in 2-D), ``in_size``/``out_size`` are the spatial
    sizes (``in_hw``/``out_hw``, their 2-D names, are deprecated aliases). ``padding_mode`` other than
    ``"zeros"`` is applied by :func:`jconv._windows.apply_padding_mode` before an
    implementation runs, so implementations only ever see zero padding."""

    stride: tuple[int, ...]
    padding: PadPairs
    dilation: tuple[int, ...]
    groups: int
    kernel: tuple[int, ...]
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    data_format: str
    precision: object = None
    padding_mode: str = "zeros"

    @property
    def channels_last(self) -> bool:
        return self.data_format.endswith("C")


def check_impl(impl: str, allowed: Sequence[str]) -> str:
    if not isinstance(impl, str) or impl not in allowed:
        raise ValueError(f"impl must be one of {tuple(allowed)}, got {impl!r}")
    return impl


def check_padding_mode(padding_mode: str) -> str:
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    return padding_mode


def weight_layout(ndim: int, transposed: bool = False) -> str:
    """The weight layout in words, e.g. ``(C_out, C_in/groups, kH, kW)``."""
    io = "C_in, C_out/groups" if transposed else "C_out, C_in/groups"
    return "(" + ", ".join([io] + ["k" + a for a in SPATIAL_AXES[ndim]]) + ")"


def _check_float(arr: object, name: str) -> None:
    dtype = getattr(arr, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array "
                        f"(float16/bfloat16/float32/float64), got dtype {dtype}")


def _check_shapes(x_shape: Sequence[int], w_shape: Sequence[int], groups: int,
                  data_format: str, w_layout: str) -> None:
    """Rank and groups checks that need only shapes: x (N+1)-D or (N+2)-D in
    ``data_format`` (N spatial dims), w (N+2)-D (its ``w_layout`` named in the message),
    groups a positive int."""
    ndim = len(data_format) - 2
    spatial = ", ".join(SPATIAL_AXES[ndim])
    if len(x_shape) not in (ndim + 1, ndim + 2):
        expect = (f"(N, C_in, {spatial}) or (C_in, {spatial})" if data_format[1] == "C" else
                  f"(N, {spatial}, C_in) or ({spatial}, C_in)")
        raise ValueError(f"x must be {ndim + 1}-D or {ndim + 2}-D {expect} for "
                         f"data_format={data_format!r}, got shape {tuple(x_shape)}")
    if len(w_shape) != ndim + 2:
        raise ValueError(f"w must be {ndim + 2}-D {w_layout}, got shape {tuple(w_shape)}")
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")


def check_operands(x: jnp.ndarray, w: jnp.ndarray, groups: int, data_format: str,
                   w_layout: str) -> None:
    """Checks every conv-like op makes of its operands: float arrays of one dtype, x
    (N+1)-D or (N+2)-D in ``data_format``, w (N+2)-D (its ``w_layout`` named in the
    message), groups >= 1."""
    _check_float(x, "x")
    _check_float(w, "w")
    _check_shapes(x.shape, w.shape, groups, data_format, w_layout)
    if x.dtype != w.dtype:
        raise TypeError(f"x and w must have the same dtype, got x {x.dtype} and w {w.dtype}")


def check_bias(b: jnp.ndarray | None, c_out: int, dtype: jnp.dtype) -> None:
    """A bias must be None or a (C_out,) float array of the input's dtype."""
    if b is None:
        return
    _check_float(b, "b")
    if b.shape != (c_out,):
        raise ValueError(f"b must have shape (C_out,) = ({c_out},), got {tuple(b.shape)}")
    if b.dtype != dtype:
        raise TypeError(f"b must have the dtype of x ({dtype}), got {b.dtype}")


def check_mode_padding(padding_mode: str, pads: PadPairs, in_size: Sequence[int],
                       axes: Sequence[str], arg: str = "padding_mode") -> None:
    """PyTorch's limits on a non-zero ``padding_mode`` (those of ``F.pad``, which calls it
    ``mode``: ``arg`` is the name the messages give): reflect padding smaller than the
    input, circular at most the input (it wraps once), replicate of a non-empty input."""
    for (lo, hi), size, axis in zip(pads, in_size, axes):
        if padding_mode == "reflect" and max(lo, hi) >= size:
            raise ValueError(f"{arg}='reflect' needs padding < the input size along "
                             f"{axis} (PyTorch rule), got padding ({lo}, {hi}) for size {size}")
        if padding_mode == "circular" and max(lo, hi) > size:
            raise ValueError(f"{arg}='circular' needs padding <= the input size along "
                             f"{axis} (it wraps around once, PyTorch rule), got padding "
                             f"({lo}, {hi}) for size {size}")
        if padding_mode == "replicate" and size == 0 and lo + hi:
            raise ValueError(f"{arg}='replicate' needs a non-empty input along {axis}, "
                             f"got size 0")


def conv_spec(x_shape: Sequence[int], w_shape: Sequence[int], *, stride: IntOrPair = 1,
              padding: PaddingLike = 0, dilation: IntOrPair = 1, groups: int = 1,
              data_format: str | None = None, precision: object = None,
              padding_mode: str = "zeros") -> ConvSpec:
    """The validated :class:`ConvSpec` of a conv from shapes alone (no arrays needed).

    x_shape: (N, C_in, *spatial) or (C_in, *spatial) (channels last for the channels-last
    ``data_format``s); w_shape: (C_out, C_in/groups, *kernel), with 1, 2 or 3 spatial dims.
    ``data_format`` defaults to channels-first for the number of spatial dims of
    ``w_shape`` (``"NCL"``, ``"NCHW"``, ``"NCDHW"``). The arguments mean what they mean in
    :func:`jconv.convnd`, and bad ones raise the same errors.

    Example:
      >>> spec = conv_spec((8, 3, 32, 32), (16, 3, 3, 3), stride=2, padding=1)
      >>> spec.out_size, spec.padding
      ((16, 16), ((1, 1), (1, 1)))
      >>> conv_spec((2, 4, 100), (8, 4, 5), padding="same", padding_mode="reflect").padding
      ((2, 2),)
    """
    ndim = format_ndim(data_format, len(w_shape) - 2 if len(w_shape) - 2 in SPATIAL_AXES else 2)
    data_format = check_data_format(CONV_DATA_FORMATS[ndim][0] if data_format is None
                                    else data_format, ndim)
    check_padding_mode(padding_mode)
    _check_shapes(x_shape, w_shape, groups, data_format, weight_layout(ndim))
    stride_p = to_tuple(stride, "stride", ndim, minimum=1)
    dilation_p = to_tuple(dilation, "dilation", ndim, minimum=1)
    if data_format[1] == "C":
        c_in, *size = tuple(x_shape)[-ndim - 1:]
    else:
        *size, c_in = tuple(x_shape)[-ndim - 1:]
    c_out, c_per_group, *kernel = tuple(w_shape)
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide both C_in={c_in} and C_out={c_out}")
    if c_per_group * groups != c_in:
        raise ValueError(f"channel mismatch: x has C_in={c_in} channels but w expects "
                         f"C_in/groups={c_per_group} x groups={groups} = {c_per_group * groups} "
                         f"(w shape {tuple(w_shape)} is {weight_layout(ndim)})")
    pads = resolve_padding(padding, kernel, dilation_p, stride_p)
    axes = SPATIAL_AXES[ndim]
    check_mode_padding(padding_mode, pads, size, axes)
    out_size = []
    for n, k, s, p, d, axis in zip(size, kernel, stride_p, pads, dilation_p, axes):
        eff = d * (k - 1) + 1
        if eff > n + p[0] + p[1]:
            raise ValueError(
                f"kernel larger than the padded input along {axis}: effective kernel "
                f"dilation*(k-1)+1 = {eff} > padded size {n}+{p[0]}+{p[1]} = {n + sum(p)}")
        out_size.append(output_size(n, k, s, p, d))
    return ConvSpec(stride=stride_p, padding=pads, dilation=dilation_p, groups=int(groups),
                    kernel=tuple(int(k) for k in kernel), in_size=tuple(int(n) for n in size),
                    out_size=tuple(out_size), data_format=data_format, precision=precision,
                    padding_mode=padding_mode)


def canonical_conv(x: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray | None, *, stride: IntOrPair,
                   padding: PaddingLike, dilation: IntOrPair, groups: int, data_format: str,
                   precision: object, padding_mode: str = "zeros",
                   ndim: int = 2) -> tuple[ConvSpec, bool]:
    """Validate an ``ndim``-D conv call: the arrays here, the geometry in :func:`conv_spec`.
    Returns the spec and whether ``x`` was unbatched."""
    data_format = check_data_format(data_format, ndim)
    check_operands(x, w, groups, data_format, weight_layout(ndim))
    check_bias(b, w.shape[0], x.dtype)
    spec = conv_spec(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, data_format=data_format, precision=precision,
                     padding_mode=padding_mode)
    return spec, x.ndim == ndim + 1


def accum_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """Accumulation dtype: half precisions accumulate in float32, others in themselves."""
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype).itemsize < 4 else jnp.dtype(dtype)


def prod(values: Sequence[int]) -> int:
    return int(math.prod(values))
