"""Shape arithmetic for conv and pooling layers: output sizes, 'same' padding, and the
search for hyper-parameters that map one size to another."""

from __future__ import annotations

import itertools
from typing import Iterable, NamedTuple

from ._pool_spec import pool_spec
from ._spec import (IntOrPair, PaddingLike, Pair, _is_int, output_size, resolve_padding,
                    to_tuple)


def _size_pair(size: IntOrPair, name: str) -> Pair:
    return to_tuple(size, name, 2, minimum=1, broadcast=False)


def _infer_ndim(ndim: int | None, *values: object) -> int:
    """``ndim`` if given, else the length of the first tuple/list among ``values``, else 2."""
    if ndim is not None:
        if ndim not in (1, 2, 3):
            raise ValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")
        return ndim
    for v in values:
        if isinstance(v, (tuple, list)) and not isinstance(v[0] if v else 0, (tuple, list)):
            return len(v)
    return 2


def conv_output_shape(input_size: IntOrPair, kernel_size: IntOrPair, stride: IntOrPair = 1,
                      padding: PaddingLike = 0, dilation: IntOrPair = 1, *,
                      ndim: int | None = None) -> tuple[int, ...]:
    """The spatial output size of a 1-D, 2-D or 3-D convolution (``ndim`` spatial dims:
    given, or the length of the first tuple among the sizes, or 2 when all are ints).

      out = (size + pad_low + pad_high - dilation*(k-1) - 1) // stride + 1   (per dim)

    ``padding`` takes every form :func:`jconv.convnd` takes; the result does not depend on
    ``padding_mode``.

    Example:
      >>> import jconv
      >>> jconv.conv_output_shape((16000,), 3, stride=2, padding="valid")
      (7999,)
      >>> jconv.conv_output_shape((16, 112, 112), (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3))
      (16, 56, 56)
    """
    nd = _infer_ndim(ndim, input_size, kernel_size, stride, dilation)
    size = to_tuple(input_size, "input_size", nd, minimum=1)
    k = to_tuple(kernel_size, "kernel_size", nd, minimum=1)
    s = to_tuple(stride, "stride", nd, minimum=1)
    d = to_tuple(dilation, "dilation", nd, minimum=1)
    pads = resolve_padding(padding, k, d, s)
    out = tuple(output_size(*args) for args in zip(size, k, s, pads, d))
    if min(out) < 1:
        raise ValueError(f"kernel_size={kernel_size!r} with dilation={dilation!r} does not fit "
                         f"in input {size} padded by {pads}: no output pixel")
    return out


def conv2d_output_shape(input_hw: IntOrPair, kernel_size: IntOrPair, stride: IntOrPair = 1,
                        padding: PaddingLike = 0, dilation: IntOrPair = 1) -> Pair:
    """(H_out, W_out) of a convolution on an (H, W) input (an int means a square input):
    :func:`conv_output_shape` in 2-D.

      H_out = (H + pad_top + pad_bottom - dilation_h*(kH-1) - 1) // stride_h + 1

    ``padding`` takes every form :func:`jconv.conv2d` takes (int, pair, asymmetric pairs,
    ``"same"``, ``"valid"``).

    Example:
      >>> import jconv
      >>> jconv.conv2d_output_shape(224, 7, stride=2, padding=3)
      (112, 112)
      >>> jconv.conv2d_output_shape((128, 128), (3, 5), stride=(2, 1), padding=(1, 2))
      (64, 128)
      >>> jconv.conv2d_output_shape((64, 96), 7, stride=2, padding=3, dilation=2)
      (29, 45)
    """
    _size_pair(input_hw, "input_hw")
    return conv_output_shape(input_hw, kernel_size, stride, padding, dilation,
                             ndim=2)  # type: ignore[return-value]


def pool2d_output_shape(input_hw: IntOrPair, kernel_size: IntOrPair,
                        stride: IntOrPair | None = None, padding: IntOrPair = 0,
                        dilation: IntOrPair = 1, ceil_mode: bool = False) -> Pair:
    """(H_out, W_out) of a max/avg pool (PyTorch rules; ``stride`` defaults to the kernel).

      H_out = (H + 2*pad_h - dilation_h*(kH-1) - 1) // stride_h + 1
      ceil_mode: divide rounding up, then drop a last window that would start in the
      bottom/right padding.

    Example:
      >>> import jconv
      >>> jconv.pool2d_output_shape(5, 2)
      (2, 2)
      >>> jconv.pool2d_output_shape(5, 2, ceil_mode=True)
      (3, 3)
    """
    hw = _size_pair(input_hw, "input_hw")
    return pool_spec((1, 1, *hw), kernel_size, stride, padding, dilation, ceil_mode).out_size


def same_padding(kernel_size: IntOrPair, dilation: IntOrPair = 1) -> int | Pair:
    """Symmetric padding that keeps the size of a stride-1 conv: ``dilation*(k-1)/2``.

    Returns an int for int arguments, else an (h, w) pair. Raises ``ValueError`` when the
    effective kernel ``dilation*(k-1)+1`` is even, since then no symmetric integer padding
    exists (use ``padding="same"``, which pads asymmetrically like PyTorch).

    Example:
      >>> import jconv
      >>> jconv.same_padding(3, dilation=3)
      3
      >>> jconv.same_padding((3, 5))
      (1, 2)
    """
    k = to_tuple(kernel_size, "kernel_size", 2, minimum=1, broadcast=False)
    d = to_tuple(dilation, "dilation", 2, minimum=1, broadcast=False)
    pads = []
    for kk, dd in zip(k, d):
        total = dd * (kk - 1)
        if total % 2:
            raise ValueError(
                f"no integer symmetric padding keeps the size for kernel_size={kk}, "
                f"dilation={dd}: effective kernel {total + 1} is even, so it needs "
                f"{total / 2} per side; use padding='same' (asymmetric) instead")
        pads.append(total // 2)
    scalar = isinstance(kernel_size, int) and isinstance(dilation, int)
    return pads[0] if scalar else (pads[0], pads[1])


class ConvParams(NamedTuple):
    """One square (kernel, stride, padding, dilation) choice."""

    kernel_size: int
    stride: int
    padding: int
    dilation: int


def find_conv_params(input_hw: IntOrPair, target_hw: IntOrPair,
                     kernel_sizes: Iterable[int] = range(1, 8),
                     strides: Iterable[int] = range(1, 4),
                     paddings: Iterable[int] = range(0, 6),
                     dilations: Iterable[int] = range(1, 4)) -> list[ConvParams]:
    """Every square (kernel, stride, padding, dilation) in the given ranges that maps an
    (H, W) input to an (H_target, W_target) output, in lexicographic order.

    Default search window: kernel 1..7, stride 1..3, padding 0..5, dilation 1..3. The ranges
    must hold ints (``TypeError`` otherwise).

    Example:
      >>> import jconv
      >>> sols = jconv.find_conv_params(64, 31, paddings=range(0, 8))
      >>> sols[0]
      ConvParams(kernel_size=2, stride=2, padding=0, dilation=2)
      >>> len(jconv.find_conv_params(32, 16))
      18
    """
    hw = _size_pair(input_hw, "input_hw")
    target = _size_pair(target_hw, "target_hw")
    found = []
    ranges = {"kernel_sizes": list(kernel_sizes), "strides": list(strides),
              "paddings": list(paddings), "dilations": list(dilations)}
    for name, values in ranges.items():
        wrong = [v for v in values if not _is_int(v)]
        if wrong:
            raise TypeError(f"{name} must hold ints, got {wrong[0]!r} "
                            f"({type(wrong[0]).__name__})")
    for k, s, p, d in itertools.product(*ranges.values()):
        if k < 1 or s < 1 or p < 0 or d < 1:
            raise ValueError(f"search ranges must have kernel, stride, dilation >= 1 and "
                             f"padding >= 0, got kernel={k}, stride={s}, padding={p}, "
                             f"dilation={d}")
        if all(output_size(n, k, s, (p, p), d) == t for n, t in zip(hw, target)):
            found.append(ConvParams(k, s, p, d))
    return found
