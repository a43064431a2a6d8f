"""Float64 NumPy oracles for the N-D pooling family (1, 2 or 3 spatial dims) and for
unfold/fold, written from PyTorch's definitions one output element (or block) at a time, with
VJPs. Every function takes channels-first arrays, batched (N, C, *spatial) or unbatched
(C, *spatial); ``ndim`` is the number of spatial dims. ``reference_max_pool2d`` and
``reference_avg_pool2d`` (and their VJPs) are the same oracles with ``ndim=2``, under
PyTorch's 2-D names and signatures (as ``reference_conv2d`` is ``reference_convnd``)."""

from __future__ import annotations

import itertools
import math
from typing import Any, Optional, Sequence

import numpy as np

from ._oracle import _batched, ntuple


def pool_out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size: floor (or ceil) of the span, but in ceil mode the last
    window must start inside the input or the top/left padding.

    >>> pool_out_size(5, 2, 2, 0, 1, False), pool_out_size(5, 2, 2, 0, 1, True)
    (2, 3)
    """
    span = (size + 2 * p - d * (k - 1) - 1) / s
    out = (math.ceil(span) if ceil_mode else math.floor(span)) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _unbatch(a: np.ndarray, unbatched: bool) -> np.ndarray:
    return a[0] if unbatched else a


def _batched_ct(ct: Any, unbatched: bool) -> np.ndarray:
    """The cotangent batched as its primal input was."""
    ct = np.asarray(ct, np.float64)
    return ct[None] if unbatched else ct


def _pool_geometry(x: np.ndarray, ndim: int, kernel_size: Any, stride: Any, padding: Any,
                   dilation: Any, ceil_mode: bool):
    k = ntuple(kernel_size, "kernel_size", ndim)
    s = k if stride is None else ntuple(stride, "stride", ndim)
    p, d = ntuple(padding, "padding", ndim), ntuple(dilation, "dilation", ndim)
    if any(2 * pp > kk for pp, kk in zip(p, k)):
        raise ValueError(f"padding {p} must be at most half of kernel_size {k}")
    sizes = x.shape[2:]
    out = tuple(pool_out_size(n, kk, ss, pp, dd, ceil_mode)
                for n, kk, ss, pp, dd in zip(sizes, k, s, p, d))
    if min(out) < 1:
        raise ValueError(f"output size {out} is not positive")
    return k, s, p, d, out


def _window_positions(o: tuple[int, ...], k, s, p, d, sizes) -> list[list[int]]:
    """Per spatial dim, the in-bounds input positions of output ``o``'s window."""
    return [[oo * ss - pp + t * dd for t in range(kk) if 0 <= oo * ss - pp + t * dd < n]
            for oo, kk, ss, pp, dd, n in zip(o, k, s, p, d, sizes)]


def reference_max_pool(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                       dilation: Any = 1, ceil_mode: bool = False, *,
                       ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """``torch.nn.functional.max_pool{ndim}d(..., return_indices=True)`` in float64:
    ``(y, indices)``, indices the flat (row-major) position in the input's spatial dims of
    each window's maximum, the first one on ties (NumPy's argmax, NaN first).

    >>> import numpy as np
    >>> y, i = reference_max_pool(np.array([[3.0, 1.0, 4.0, 1.0, 5.0]]), 2, ndim=1)
    >>> y.tolist(), i.tolist()
    ([[3.0, 4.0]], [[0, 2]])
    """
    x, unbatched = _batched(x, ndim)
    k, s, p, d, out = _pool_geometry(x, ndim, kernel_size, stride, padding, dilation, ceil_mode)
    sizes = x.shape[2:]
    y = np.empty((*x.shape[:2], *out))
    idx = np.empty((*x.shape[:2], *out), np.int64)
    for o in np.ndindex(*out):
        pos = _window_positions(o, k, s, p, d, sizes)
        coords = list(itertools.product(*pos))
        vals = np.stack([x[(slice(None), slice(None), *c)] for c in coords], axis=-1)
        best = np.argmax(vals, axis=-1)
        flat = np.array([np.ravel_multi_index(c, sizes) for c in coords])
        y[(..., *o)] = np.take_along_axis(vals, best[..., None], axis=-1)[..., 0]
        idx[(..., *o)] = flat[best]
    return _unbatch(y, unbatched), _unbatch(idx, unbatched)


def scatter_to_indices(ct: np.ndarray, idx: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """(N, C, *sizes) zeros plus ``ct`` added at the flat spatial ``idx`` (both (N, C, ...)):
    the VJP of every gather-at-argmax pooling."""
    n, c = ct.shape[:2]
    out = np.zeros((n, c, math.prod(sizes)))
    for b, ch in np.ndindex(n, c):
        np.add.at(out[b, ch], idx[b, ch].reshape(-1), ct[b, ch].reshape(-1))
    return out.reshape(n, c, *sizes)


def reference_max_pool_vjp(x: Any, ct: Any, kernel_size: Any, stride: Any = None,
                           padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False, *,
                           ndim: int) -> np.ndarray:
    """dx of ``sum(ct * max_pool(x))``: each window's cotangent goes to its argmax."""
    xb, unbatched = _batched(x, ndim)
    _, idx = reference_max_pool(xb, kernel_size, stride, padding, dilation, ceil_mode,
                                ndim=ndim)
    ctb = _batched_ct(ct, unbatched)
    return _unbatch(scatter_to_indices(ctb, idx, xb.shape[2:]), unbatched)


def _avg_weights(x: np.ndarray, ndim: int, kernel_size: Any, stride: Any, padding: Any,
                 ceil_mode: bool, count_include_pad: bool, divisor_override: Optional[int]):
    """Yield (output index, window slices, 1/divisor) per output element: PyTorch's rule,
    the window clipped to the padded input (count_include_pad) or to the input."""
    k, s, p, _, out = _pool_geometry(x, ndim, kernel_size, stride, padding, 1, ceil_mode)
    sizes = x.shape[2:]
    for o in np.ndindex(*out):
        start = [oo * ss - pp for oo, ss, pp in zip(o, s, p)]
        end = [min(st + kk, n + pp) for st, kk, n, pp in zip(start, k, sizes, p)]
        pool_size = math.prod(e - st for st, e in zip(start, end))
        lo = [max(st, 0) for st in start]
        hi = [min(e, n) for e, n in zip(end, sizes)]
        inside = math.prod(h - lw for lw, h in zip(lo, hi))
        div = divisor_override or (pool_size if count_include_pad else inside)
        yield o, tuple(slice(lw, h) for lw, h in zip(lo, hi)), 1.0 / div, out


def reference_avg_pool(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                       ceil_mode: bool = False, count_include_pad: bool = True,
                       divisor_override: Optional[int] = None, *, ndim: int) -> np.ndarray:
    """``torch.nn.functional.avg_pool{ndim}d`` in float64 (``divisor_override`` replaces
    every divisor).

    >>> import numpy as np
    >>> reference_avg_pool(np.ones((1, 3)), 2, 1, 1, ndim=1).tolist()
    [[0.5, 1.0, 1.0, 0.5]]
    """
    x, unbatched = _batched(x, ndim)
    y = None
    for o, win, inv, out in _avg_weights(x, ndim, kernel_size, stride, padding, ceil_mode,
                                         count_include_pad, divisor_override):
        y = np.zeros((*x.shape[:2], *out)) if y is None else y
        y[(..., *o)] = x[(slice(None), slice(None), *win)].sum(axis=tuple(range(2, 2 + ndim))) * inv
    return _unbatch(y, unbatched)


def reference_avg_pool_vjp(x: Any, ct: Any, kernel_size: Any, stride: Any = None,
                           padding: Any = 0, ceil_mode: bool = False,
                           count_include_pad: bool = True,
                           divisor_override: Optional[int] = None, *, ndim: int) -> np.ndarray:
    """dx of ``sum(ct * avg_pool(x))``: ``ct / divisor`` spread over each window."""
    xb, unbatched = _batched(x, ndim)
    ctb = _batched_ct(ct, unbatched)
    dx = np.zeros_like(xb)
    for o, win, inv, _ in _avg_weights(xb, ndim, kernel_size, stride, padding, ceil_mode,
                                       count_include_pad, divisor_override):
        dx[(slice(None), slice(None), *win)] += (ctb[(..., *o)] * inv).reshape(
            *ctb.shape[:2], *([1] * ndim))
    return _unbatch(dx, unbatched)


def reference_lp_pool(x: Any, norm_type: float, kernel_size: Any, stride: Any = None,
                      ceil_mode: bool = False, *, ndim: int) -> np.ndarray:
    """``torch.nn.functional.lp_pool{ndim}d`` in float64: PyTorch's definition
    ``(avg_pool(x**p) * prod(kernel_size)) ** (1/p)``.

    >>> import numpy as np
    >>> reference_lp_pool(np.array([[3.0, 4.0]]), 2, 2, ndim=1).tolist()
    [[5.0]]
    """
    avg = reference_avg_pool(np.asarray(x, np.float64) ** norm_type, kernel_size, stride, 0,
                             ceil_mode, ndim=ndim)
    return (avg * math.prod(ntuple(kernel_size, "kernel_size", ndim))) ** (1.0 / norm_type)


def reference_lp_pool_vjp(x: Any, ct: Any, norm_type: float, kernel_size: Any,
                          stride: Any = None, ceil_mode: bool = False, *,
                          ndim: int) -> np.ndarray:
    """dx of ``sum(ct * lp_pool(x))`` by the chain rule through ``(V*avg(x**p))**(1/p)``."""
    x = np.asarray(x, np.float64)
    p = float(norm_type)
    volume = math.prod(ntuple(kernel_size, "kernel_size", ndim))
    avg = reference_avg_pool(x ** p, kernel_size, stride, 0, ceil_mode, ndim=ndim)
    d_avg = np.asarray(ct, np.float64) * volume * (avg * volume) ** (1.0 / p - 1.0) / p
    return p * x ** (p - 1.0) * reference_avg_pool_vjp(x ** p, d_avg, kernel_size, stride, 0,
                                                        ceil_mode, ndim=ndim)


def _adaptive_boxes(sizes: Sequence[int], out: Sequence[int]):
    for o in np.ndindex(*out):
        yield o, tuple(slice(oo * n // m, -(-(oo + 1) * n // m))
                       for oo, n, m in zip(o, sizes, out))


def _adaptive_out(x: np.ndarray, output_size: Any, ndim: int) -> tuple[int, ...]:
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * ndim
    return tuple(n if m is None else int(m) for m, n in zip(sizes, x.shape[2:]))


def reference_adaptive_avg_pool(x: Any, output_size: Any, *, ndim: int) -> np.ndarray:
    """``torch.nn.functional.adaptive_avg_pool{ndim}d`` in float64: output ``i`` averages
    input ``floor(i*n/m) .. ceil((i+1)*n/m) - 1`` along each dim.

    >>> import numpy as np
    >>> reference_adaptive_avg_pool(np.arange(5.0)[None], 3, ndim=1).tolist()
    [[0.5, 2.0, 3.5]]
    """
    x, unbatched = _batched(x, ndim)
    out = _adaptive_out(x, output_size, ndim)
    y = np.zeros((*x.shape[:2], *out))
    for o, box in _adaptive_boxes(x.shape[2:], out):
        y[(..., *o)] = x[(slice(None), slice(None), *box)].mean(axis=tuple(range(2, 2 + ndim)))
    return _unbatch(y, unbatched)


def reference_adaptive_avg_pool_vjp(x: Any, ct: Any, output_size: Any, *,
                                    ndim: int) -> np.ndarray:
    """dx of ``sum(ct * adaptive_avg_pool(x))``."""
    xb, unbatched = _batched(x, ndim)
    ctb = _batched_ct(ct, unbatched)
    dx = np.zeros_like(xb)
    for o, box in _adaptive_boxes(xb.shape[2:], _adaptive_out(xb, output_size, ndim)):
        count = math.prod(b.stop - b.start for b in box)
        dx[(slice(None), slice(None), *box)] += (ctb[(..., *o)] / count).reshape(
            *ctb.shape[:2], *([1] * ndim))
    return _unbatch(dx, unbatched)


def reference_adaptive_max_pool(x: Any, output_size: Any, *,
                                ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """``torch.nn.functional.adaptive_max_pool{ndim}d(..., return_indices=True)`` in
    float64: ``(y, indices)`` (flat spatial index of each box's first maximum).

    >>> import numpy as np
    >>> y, i = reference_adaptive_max_pool(np.array([[1.0, 5.0, 2.0, 4.0, 3.0]]), 2, ndim=1)
    >>> y.tolist(), i.tolist()
    ([[5.0, 4.0]], [[1, 3]])
    """
    x, unbatched = _batched(x, ndim)
    out = _adaptive_out(x, output_size, ndim)
    sizes = x.shape[2:]
    y = np.empty((*x.shape[:2], *out))
    idx = np.empty((*x.shape[:2], *out), np.int64)
    for o, box in _adaptive_boxes(sizes, out):
        block = x[(slice(None), slice(None), *box)].reshape(*x.shape[:2], -1)
        best = np.argmax(block, axis=-1)
        local = np.unravel_index(best, [b.stop - b.start for b in box])
        idx[(..., *o)] = np.ravel_multi_index(
            tuple(lc + b.start for lc, b in zip(local, box)), sizes)
        y[(..., *o)] = np.take_along_axis(block, best[..., None], axis=-1)[..., 0]
    return _unbatch(y, unbatched), _unbatch(idx, unbatched)


def reference_adaptive_max_pool_vjp(x: Any, ct: Any, output_size: Any, *,
                                    ndim: int) -> np.ndarray:
    """dx of ``sum(ct * adaptive_max_pool(x))``: each box's cotangent to its argmax."""
    xb, unbatched = _batched(x, ndim)
    _, idx = reference_adaptive_max_pool(xb, output_size, ndim=ndim)
    ctb = _batched_ct(ct, unbatched)
    return _unbatch(scatter_to_indices(ctb, idx, xb.shape[2:]), unbatched)


def reference_max_unpool(x: Any, indices: Any, output_size: Sequence[int], *,
                         ndim: int) -> np.ndarray:
    """``torch.nn.functional.max_unpool{ndim}d`` in float64, given the output's spatial
    size: zeros, with each value of ``x`` written (not added) at its flat index; a repeated
    index (overlapping windows) keeps one of its values, all equal for a max pool's output."""
    xb, unbatched = _batched(x, ndim)
    idx = np.asarray(indices)
    idx = idx[None] if unbatched else idx
    n, c = xb.shape[:2]
    out = np.zeros((n, c, math.prod(output_size)))
    for b, ch in np.ndindex(n, c):
        out[b, ch][idx[b, ch].reshape(-1)] = xb[b, ch].reshape(-1)
    return _unbatch(out.reshape(n, c, *output_size), unbatched)


def _blocks(size: Sequence[int], kernel_size: Any, dilation: Any, padding: Any, stride: Any):
    k, d = ntuple(kernel_size, "kernel_size", 2), ntuple(dilation, "dilation", 2)
    p, s = ntuple(padding, "padding", 2), ntuple(stride, "stride", 2)
    nb = tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1
               for n, kk, ss, pp, dd in zip(size, k, s, p, d))
    # (block, tap) -> padded-input position, one entry per kernel tap in row-major order.
    for b, bl in enumerate(np.ndindex(*nb)):
        for t, tap in enumerate(np.ndindex(*k)):
            yield b, t, tuple(o * ss + tt * dd - pp for o, tt, ss, dd, pp in zip(bl, tap, s, d, p)), k, nb


def reference_unfold(x: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0,
                     stride: Any = 1) -> np.ndarray:
    """``torch.nn.functional.unfold`` in float64: (N, C, H, W) -> (N, C*kH*kW, L), row
    ``c*kH*kW + tap``, column = block (row-major), zero padding.

    >>> import numpy as np
    >>> reference_unfold(np.arange(4.0).reshape(1, 1, 2, 2), 1)[0].tolist()
    [[0.0, 1.0, 2.0, 3.0]]
    """
    x, unbatched = _batched(x, 2)
    size = x.shape[2:]
    entries = list(_blocks(size, kernel_size, dilation, padding, stride))
    k, nb = entries[0][3], entries[0][4]
    taps = math.prod(k)
    cols = np.zeros((x.shape[0], x.shape[1] * taps, math.prod(nb)))
    for b, t, pos, _, _ in entries:
        if all(0 <= q < n for q, n in zip(pos, size)):
            cols[:, t::taps, b] = x[:, :, pos[0], pos[1]]
    return _unbatch(cols, unbatched)


def reference_fold(cols: Any, output_size: Any, kernel_size: Any, dilation: Any = 1,
                   padding: Any = 0, stride: Any = 1) -> np.ndarray:
    """``torch.nn.functional.fold`` in float64: (N, C*kH*kW, L) -> (N, C, H, W), each
    block's entries added at their positions (overlaps sum; padding dropped).

    >>> import numpy as np
    >>> reference_fold(np.ones((1, 4, 4)), 3, 2)[0, 0].tolist()
    [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """
    cols = np.asarray(cols, np.float64)
    unbatched = cols.ndim == 2
    cols = cols[None] if unbatched else cols
    size = ntuple(output_size, "output_size", 2)
    entries = list(_blocks(size, kernel_size, dilation, padding, stride))
    taps = math.prod(entries[0][3])
    y = np.zeros((cols.shape[0], cols.shape[1] // taps, *size))
    for b, t, pos, _, _ in entries:
        if all(0 <= q < n for q, n in zip(pos, size)):
            y[:, :, pos[0], pos[1]] += cols[:, t::taps, b]
    return _unbatch(y, unbatched)


def _stride(stride: Any) -> Any:
    """PyTorch's 2-D pools default ``stride`` to ``[]`` (the kernel size), as None does."""
    return None if isinstance(stride, (list, tuple)) and len(stride) == 0 else stride


def reference_max_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                         dilation: Any = 1, ceil_mode: bool = False) -> np.ndarray:
    """``torch.nn.functional.max_pool2d`` in float64: the max over each window's in-bounds
    pixels (padding never wins). x (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out).

    >>> import numpy as np
    >>> reference_max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    return reference_max_pool(x, kernel_size, _stride(stride), padding, dilation, ceil_mode,
                              ndim=2)[0]


def reference_max_pool2d_vjp(x: Any, ct: Any, kernel_size: Any, stride: Any = None,
                             padding: Any = 0, dilation: Any = 1,
                             ceil_mode: bool = False) -> np.ndarray:
    """dx of ``sum(ct * reference_max_pool2d(x, ...))``: each window's cotangent goes to its
    argmax (the first tap in row-major order at exact ties; callers avoid ties), shaped as x.

    >>> import numpy as np
    >>> reference_max_pool2d_vjp(np.arange(4.0).reshape(1, 1, 2, 2), np.ones((1, 1, 1, 1)),
    ...                          2)[0, 0].tolist()
    [[0.0, 0.0], [0.0, 1.0]]
    """
    return reference_max_pool_vjp(x, ct, kernel_size, _stride(stride), padding, dilation,
                                  ceil_mode, ndim=2)


def reference_avg_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                         ceil_mode: bool = False, count_include_pad: bool = True,
                         divisor_override: Optional[int] = None) -> np.ndarray:
    """``torch.nn.functional.avg_pool2d`` in float64: the window sum over the divisor of
    PyTorch's rule (zero padding counts only with ``count_include_pad``; windows that ceil
    mode hangs past the padded input are clipped; ``divisor_override`` replaces it).
    x (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out).

    >>> import numpy as np
    >>> reference_avg_pool2d(np.ones((1, 1, 2, 2)), 2, 1, 1)[0, 0].tolist()
    [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]
    """
    return reference_avg_pool(x, kernel_size, _stride(stride), padding, ceil_mode,
                              count_include_pad, divisor_override, ndim=2)


def reference_avg_pool2d_vjp(x: Any, ct: Any, kernel_size: Any, stride: Any = None,
                             padding: Any = 0, ceil_mode: bool = False,
                             count_include_pad: bool = True,
                             divisor_override: Optional[int] = None) -> np.ndarray:
    """dx of ``sum(ct * reference_avg_pool2d(x, ...))``: ``ct / divisor`` spread over each
    window's pixels, shaped as x.

    >>> import numpy as np
    >>> reference_avg_pool2d_vjp(np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)), 2)[0, 0].tolist()
    [[0.25, 0.25], [0.25, 0.25]]
    """
    return reference_avg_pool_vjp(x, ct, kernel_size, _stride(stride), padding, ceil_mode,
                                  count_include_pad, divisor_override, ndim=2)
