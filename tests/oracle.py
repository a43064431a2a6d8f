"""Slow, obviously correct NumPy references: direct loops over every output element.

Written from the definitions (PyTorch's docs), independent of jconv's own parser: padding
here is always explicit ((top, bottom), (left, right)); the tests compute 'same' themselves.
"""

from __future__ import annotations

import math

import numpy as np


def conv2d_ref(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: tuple[int, int],
               pads: tuple[tuple[int, int], tuple[int, int]], dilation: tuple[int, int],
               groups: int) -> np.ndarray:
    """x (N, C_in, H, W), w (C_out, C_in/groups, kH, kW) -> (N, C_out, H_out, W_out), float64."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n_, _, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    ho = (h + sum(pads[0]) - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + sum(pads[1]) - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n_, c_out, ho, wo))
    per_group = c_out // groups
    for n in range(n_):
        for o in range(c_out):
            g = o // per_group
            for i in range(ho):
                for j in range(wo):
                    acc = 0.0
                    for c in range(cg):
                        for p in range(kh):
                            for q in range(kw):
                                acc += xp[n, g * cg + c, i * sh + p * dh, j * sw + q * dw] * w[o, c, p, q]
                    out[n, o, i, j] = acc + (0.0 if b is None else float(b[o]))
    return out


def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    span = (size + 2 * p - d * (k - 1) - 1) / s
    out = (math.ceil(span) if ceil_mode else math.floor(span)) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def max_pool2d_ref(x: np.ndarray, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int],
                   d: tuple[int, int], ceil_mode: bool) -> np.ndarray:
    """Max over each window, reading only in-bounds pixels (padding never wins)."""
    x = np.asarray(x, np.float64)
    n_, c_, h, w = x.shape
    ho, wo = _pool_out(h, k[0], s[0], p[0], d[0], ceil_mode), _pool_out(w, k[1], s[1], p[1], d[1], ceil_mode)
    out = np.full((n_, c_, ho, wo), -np.inf)
    for n in range(n_):
        for c in range(c_):
            for i in range(ho):
                for j in range(wo):
                    for a in range(k[0]):
                        for bb in range(k[1]):
                            r, col = i * s[0] - p[0] + a * d[0], j * s[1] - p[1] + bb * d[1]
                            if 0 <= r < h and 0 <= col < w:
                                out[n, c, i, j] = max(out[n, c, i, j], x[n, c, r, col])
    return out


def avg_pool2d_ref(x: np.ndarray, k: tuple[int, int], s: tuple[int, int], p: tuple[int, int],
                   ceil_mode: bool, count_include_pad: bool) -> np.ndarray:
    """PyTorch's AvgPool2d rule: windows are clipped to the padded input (count_include_pad)
    or to the real input (not), and the sum is divided by the clipped window's area."""
    x = np.asarray(x, np.float64)
    n_, c_, h, w = x.shape
    ho, wo = _pool_out(h, k[0], s[0], p[0], 1, ceil_mode), _pool_out(w, k[1], s[1], p[1], 1, ceil_mode)
    out = np.zeros((n_, c_, ho, wo))
    for i in range(ho):
        for j in range(wo):
            r0, c0 = i * s[0] - p[0], j * s[1] - p[1]
            r1, c1 = min(r0 + k[0], h + p[0]), min(c0 + k[1], w + p[1])
            area = (r1 - r0) * (c1 - c0)
            rr0, cc0, rr1, cc1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
            total = x[:, :, rr0:rr1, cc0:cc1].sum(axis=(2, 3))
            out[:, :, i, j] = total / (area if count_include_pad else (rr1 - rr0) * (cc1 - cc0))
    return out
