"""Canonical argument parsing shared by every convolution and pooling implementation.

Every public entry point calls one of the ``canonical_*`` functions exactly once; they check
the arrays and build the frozen :class:`ConvSpec` / :class:`PoolSpec` from their shapes with
:func:`conv_spec` / :func:`pool_spec`, which tools that have only shapes (benchmarks,
``jconv.auto_choice``) call directly. Implementations receive the spec and never re-parse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import jax.numpy as jnp
import numpy as np

Pair = tuple[int, int]
PadPairs = tuple[tuple[int, int], tuple[int, int]]
IntOrPair = Union[int, Sequence[int]]
PaddingLike = Union[int, str, Sequence[int], Sequence[Sequence[int]]]

DATA_FORMATS: tuple[str, ...] = ("NCHW", "NHWC")
FLOAT_DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def to_tuple(value: IntOrPair, name: str, ndim: int, *, minimum: int) -> tuple[int, ...]:
    """Turn an int or a length-``ndim`` sequence of ints into a validated ``ndim``-tuple
    (one entry per spatial dim)."""
    if _is_int(value):
        out = (int(value),) * ndim
    elif (isinstance(value, (tuple, list)) and len(value) == ndim
          and all(_is_int(v) for v in value)):
        out = tuple(int(v) for v in value)
    else:
        what = "an int" if ndim == 1 else f"an int or a tuple of {ndim} ints"
        raise TypeError(f"{name} must be {what}, got {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum} in every dimension, got {value!r}")
    return out


def to_pair(value: IntOrPair, name: str, *, minimum: int) -> Pair:
    """Turn an int or a length-2 sequence of ints into a validated ``(h, w)`` pair."""
    if not (_is_int(value) or (isinstance(value, (tuple, list)) and len(value) == 2
                               and all(_is_int(v) for v in value))):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return to_tuple(value, name, 2, minimum=minimum)  # type: ignore[return-value]


def resolve_padding(padding: PaddingLike, kernel: Pair, dilation: Pair, stride: Pair) -> PadPairs:
    """Turn any accepted padding form into ``((top, bottom), (left, right))``.

    ``"same"`` follows PyTorch: total padding ``dilation*(k-1)`` split with the extra pixel
    on the bottom/right, and only for stride 1.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"padding='same' requires stride 1, got stride={stride}; "
                    "pass explicit padding for strided convolutions"
                )
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            return (pads[0], pads[1])
        raise ValueError(f"padding must be an int, a pair, ((top, bottom), (left, right)), "
                         f"'valid' or 'same', got {padding!r}")
    if _is_int(padding):
        p = int(padding)
        pads = ((p, p), (p, p))
    elif (isinstance(padding, (tuple, list)) and len(padding) == 2
          and all(_is_int(v) for v in padding)):
        pads = ((int(padding[0]),) * 2, (int(padding[1]),) * 2)
    elif (isinstance(padding, (tuple, list)) and len(padding) == 2
          and all(isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(u) for u in v)
                  for v in padding)):
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)  # type: ignore[assignment]
    else:
        raise TypeError(f"padding must be an int, a pair, ((top, bottom), (left, right)), "
                        f"'valid' or 'same', got {padding!r}")
    if min(v for pair in pads for v in pair) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return pads  # type: ignore[return-value]


def output_size(size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int,
                ceil_mode: bool = False) -> int:
    """One spatial dim: ``(size + lo + hi - dilation*(kernel-1) - 1) // stride + 1``.

    With ``ceil_mode`` the division rounds up, but (as in PyTorch) the last window must
    start inside the input or the low padding.
    """
    span = size + pad[0] + pad[1] - dilation * (kernel - 1) - 1
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad[0]:
        out -= 1
    return out


@dataclass(frozen=True)
class ConvSpec:
    """Validated convolution geometry, built once by :func:`conv_spec` and shared by every
    implementation (``conv(x, w, spec)``). ``padding`` is resolved to
    ``((top, bottom), (left, right))``; ``in_hw``/``out_hw`` are (H, W)."""

    stride: Pair
    padding: PadPairs
    dilation: Pair
    groups: int
    kernel: Pair
    in_hw: Pair
    out_hw: Pair
    data_format: str
    precision: object = None

    @property
    def effective_kernel(self) -> Pair:
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))  # type: ignore[return-value]


def check_impl(impl: str, allowed: Sequence[str]) -> str:
    if not isinstance(impl, str) or impl not in allowed:
        raise ValueError(f"impl must be one of {tuple(allowed)}, got {impl!r}")
    return impl


def check_data_format(data_format: str) -> str:
    if not isinstance(data_format, str) or data_format.upper() not in DATA_FORMATS:
        raise ValueError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
    return data_format.upper()


def _check_float(arr: object, name: str) -> None:
    dtype = getattr(arr, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array "
                        f"(float16/bfloat16/float32/float64), got dtype {dtype}")


def _check_shapes(x_shape: Sequence[int], w_shape: Sequence[int], groups: int,
                  data_format: str, w_layout: str) -> None:
    """Rank and groups checks that need only shapes: x 3-D or 4-D in ``data_format``, w 4-D
    (its ``w_layout`` named in the message), groups a positive int."""
    if len(x_shape) not in (3, 4):
        expect = "(N, C_in, H, W) or (C_in, H, W)" if data_format == "NCHW" else \
            "(N, H, W, C_in) or (H, W, C_in)"
        raise ValueError(f"x must be 3-D or 4-D {expect} for data_format={data_format!r}, "
                         f"got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"w must be 4-D {w_layout}, got shape {tuple(w_shape)}")
    if not _is_int(groups) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")


def check_operands(x: jnp.ndarray, w: jnp.ndarray, groups: int, data_format: str,
                   w_layout: str) -> None:
    """Checks every conv-like op makes of its operands: float arrays of one dtype, x 3-D or
    4-D in ``data_format``, w 4-D (its ``w_layout`` named in the message), groups >= 1."""
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


def conv_spec(x_shape: Sequence[int], w_shape: Sequence[int], *, stride: IntOrPair = 1,
              padding: PaddingLike = 0, dilation: IntOrPair = 1, groups: int = 1,
              data_format: str = "NCHW", precision: object = None) -> ConvSpec:
    """The validated :class:`ConvSpec` of a conv from shapes alone (no arrays needed).

    x_shape: (N, C_in, H, W) or (C_in, H, W) (channels last for ``data_format="NHWC"``);
    w_shape: (C_out, C_in/groups, kH, kW). The arguments mean what they mean in
    :func:`jconv.conv2d`, and bad ones raise the same errors.

    Example:
      >>> spec = conv_spec((8, 3, 32, 32), (16, 3, 3, 3), stride=2, padding=1)
      >>> spec.out_hw, spec.padding
      ((16, 16), ((1, 1), (1, 1)))
    """
    data_format = check_data_format(data_format)
    _check_shapes(x_shape, w_shape, groups, data_format, "(C_out, C_in/groups, kH, kW)")
    stride_p = to_pair(stride, "stride", minimum=1)
    dilation_p = to_pair(dilation, "dilation", minimum=1)
    if data_format == "NCHW":
        c_in, h, w_ = tuple(x_shape)[-3:]
    else:
        h, w_, c_in = tuple(x_shape)[-3:]
    c_out, c_per_group, kh, kw = tuple(w_shape)
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups={groups} must divide both C_in={c_in} and C_out={c_out}")
    if c_per_group * groups != c_in:
        raise ValueError(f"channel mismatch: x has C_in={c_in} channels but w expects "
                         f"C_in/groups={c_per_group} x groups={groups} = {c_per_group * groups} "
                         f"(w shape {tuple(w_shape)} is (C_out, C_in/groups, kH, kW))")
    pads = resolve_padding(padding, (kh, kw), dilation_p, stride_p)
    out_hw = []
    for size, k, s, p, d, axis in zip((h, w_), (kh, kw), stride_p, pads, dilation_p, "HW"):
        eff = d * (k - 1) + 1
        if eff > size + p[0] + p[1]:
            raise ValueError(
                f"kernel larger than the padded input along {axis}: effective kernel "
                f"dilation*(k-1)+1 = {eff} > padded size {size}+{p[0]}+{p[1]} = {size + sum(p)}")
        out_hw.append(output_size(size, k, s, p, d))
    return ConvSpec(stride=stride_p, padding=pads, dilation=dilation_p, groups=int(groups),
                    kernel=(int(kh), int(kw)), in_hw=(int(h), int(w_)),
                    out_hw=tuple(out_hw),  # type: ignore[arg-type]
                    data_format=data_format, precision=precision)


def canonical_conv(x: jnp.ndarray, w: jnp.ndarray, b: jnp.ndarray | None, *, stride: IntOrPair,
                   padding: PaddingLike, dilation: IntOrPair, groups: int, data_format: str,
                   precision: object) -> tuple[ConvSpec, bool]:
    """Validate a conv call: the arrays here, the geometry in :func:`conv_spec`. Returns the
    spec and whether ``x`` was unbatched."""
    data_format = check_data_format(data_format)
    check_operands(x, w, groups, data_format, "(C_out, C_in/groups, kH, kW)")
    check_bias(b, w.shape[0], x.dtype)
    spec = conv_spec(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, data_format=data_format, precision=precision)
    return spec, x.ndim == 3


def accum_dtype(dtype: jnp.dtype) -> jnp.dtype:
    """Accumulation dtype: half precisions accumulate in float32, others in themselves."""
    return jnp.dtype(jnp.float32) if jnp.dtype(dtype).itemsize < 4 else jnp.dtype(dtype)


def prod(values: Sequence[int]) -> int:
    return int(math.prod(values))


_MOVED_TO_POOL_SPEC = ("PoolSpec", "canonical_pool", "check_pool_padding", "pool_spec")


def __getattr__(name: str) -> object:
    # Pooling parsing lives in jconv._pool_spec (N-D); old imports from here keep working.
    # Resolved lazily because _pool_spec itself imports this module.
    if name in _MOVED_TO_POOL_SPEC:
        from . import _pool_spec

        return getattr(_pool_spec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
