"""Float64 NumPy oracles for max_pool2d and avg_pool2d (PyTorch's definitions), with VJPs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._oracle import Pair, _batched, _taps, pair


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


def _geometry(x: np.ndarray, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
              ceil_mode: bool):
    k = pair(kernel_size, "kernel_size")
    s = k if stride is None or stride == [] else pair(stride, "stride")
    p, d = pair(padding, "padding"), pair(dilation, "dilation")
    if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
        raise ValueError(f"padding {p} must be at most half of kernel_size {k}")
    out = (pool_out_size(x.shape[2], k[0], s[0], p[0], d[0], ceil_mode),
           pool_out_size(x.shape[3], k[1], s[1], p[1], d[1], ceil_mode))
    if min(out) < 1:
        raise ValueError(f"output size {out} is not positive")
    # Ceil mode can hang the last window past the padded input: pad the far side enough.
    far = tuple(max(p[i], (out[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1 - x.shape[2 + i] - p[i])
                for i in range(2))
    pads = ((p[0], far[0]), (p[1], far[1]))
    return k, s, p, d, out, pads


def reference_max_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                         dilation: Any = 1, ceil_mode: bool = False) -> np.ndarray:
    """``torch.nn.functional.max_pool2d`` in float64: the max over each window's in-bounds
    pixels (padding never wins). x (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out).

    >>> import numpy as np
    >>> reference_max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    x, unbatched = _batched(x)
    k, s, _, d, out_hw, pads = _geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    xp = np.pad(x, ((0, 0), (0, 0), *pads), constant_values=-np.inf)
    out = np.full((*x.shape[:2], *out_hw), -np.inf)
    for _, _, rows, cols in _taps(k, d, s, out_hw):
        out = np.maximum(out, xp[:, :, rows, cols])
    return out[0] if unbatched else out


def reference_max_pool2d_vjp(x: Any, ct: Any, kernel_size: Any, stride: Any = None,
                             padding: Any = 0, dilation: Any = 1,
                             ceil_mode: bool = False) -> np.ndarray:
    """dx of ``sum(ct * reference_max_pool2d(x, ...))``: each window's cotangent goes to its
    argmax (the first tap in row-major order at exact ties; callers avoid ties)."""
    x, unbatched = _batched(x)
    ct = np.asarray(ct, np.float64)
    ct = ct[None] if unbatched else ct
    k, s, _, d, out_hw, pads = _geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    xp = np.pad(x, ((0, 0), (0, 0), *pads), constant_values=-np.inf)
    taps = list(_taps(k, d, s, out_hw))
    arg = np.stack([xp[:, :, rows, cols] for _, _, rows, cols in taps]).argmax(axis=0)
    dxp = np.zeros_like(xp)
    for t, (_, _, rows, cols) in enumerate(taps):
        dxp[:, :, rows, cols] += np.where(arg == t, ct, 0.0)
    dx = dxp[:, :, pads[0][0]:pads[0][0] + x.shape[2], pads[1][0]:pads[1][0] + x.shape[3]]
    return dx[0] if unbatched else dx


def _avg_divisor(size: int, out: int, k: int, s: int, p: int, count_include_pad: bool):
    """Per-output divisor along one axis: the window clipped to the padded input (or to the
    real input without count_include_pad)."""
    start = np.arange(out) * s - p
    end = np.minimum(start + k, size + p)
    if count_include_pad:
        return (end - start).astype(np.float64)
    return (np.minimum(end, size) - np.maximum(start, 0)).astype(np.float64)


def _avg_setup(x: np.ndarray, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
               count_include_pad: bool):
    k, s, p, d, out_hw, pads = _geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    div = np.outer(_avg_divisor(x.shape[2], out_hw[0], k[0], s[0], p[0], count_include_pad),
                   _avg_divisor(x.shape[3], out_hw[1], k[1], s[1], p[1], count_include_pad))
    return k, s, d, out_hw, pads, div


def reference_avg_pool2d(x: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
                         ceil_mode: bool = False, count_include_pad: bool = True) -> np.ndarray:
    """``torch.nn.functional.avg_pool2d`` in float64: the window sum over the divisor of
    PyTorch's rule (zero padding counts only with ``count_include_pad``; windows that ceil
    mode hangs past the padded input are clipped). x (N, C, H, W) or (C, H, W).

    >>> import numpy as np
    >>> reference_avg_pool2d(np.ones((1, 1, 2, 2)), 2, 1, 1)[0, 0].tolist()
    [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]
    """
    x, unbatched = _batched(x)
    k, s, d, out_hw, pads, div = _avg_setup(x, kernel_size, stride, padding, ceil_mode,
                                            count_include_pad)
    xp = np.pad(x, ((0, 0), (0, 0), *pads))
    out = np.zeros((*x.shape[:2], *out_hw))
    for _, _, rows, cols in _taps(k, d, s, out_hw):
        out += xp[:, :, rows, cols]
    out /= div
    return out[0] if unbatched else out


def reference_avg_pool2d_vjp(x: Any, ct: Any, kernel_size: Any, stride: Any = None,
                             padding: Any = 0, ceil_mode: bool = False,
                             count_include_pad: bool = True) -> np.ndarray:
    """dx of ``sum(ct * reference_avg_pool2d(x, ...))``: ``ct / divisor`` spread over each
    window's pixels."""
    x, unbatched = _batched(x)
    ct = np.asarray(ct, np.float64)
    ct = ct[None] if unbatched else ct
    k, s, d, out_hw, pads, div = _avg_setup(x, kernel_size, stride, padding, ceil_mode,
                                            count_include_pad)
    dxp = np.zeros((*x.shape[:2], x.shape[2] + sum(pads[0]), x.shape[3] + sum(pads[1])))
    for _, _, rows, cols in _taps(k, d, s, out_hw):
        dxp[:, :, rows, cols] += ct / div
    dx = dxp[:, :, pads[0][0]:pads[0][0] + x.shape[2], pads[1][0]:pads[1][0] + x.shape[3]]
    return dx[0] if unbatched else dx


__all__ = ["Pair", "pool_out_size", "reference_avg_pool2d", "reference_avg_pool2d_vjp",
           "reference_max_pool2d", "reference_max_pool2d_vjp"]
