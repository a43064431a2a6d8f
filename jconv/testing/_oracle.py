"""Float64 NumPy oracles for conv2d and conv_transpose2d, written from PyTorch's definitions.

Independent of jconv's own argument parser: every padding form is resolved here. Vectorised
over everything but the kernel taps (one NumPy slice and one ``einsum`` per tap), so hundreds
of small cases take well under a second.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Pair = tuple[int, int]
Pads = tuple[tuple[int, int], tuple[int, int]]


def pair(value: Any, name: str) -> Pair:
    """An int or a length-2 sequence of ints as an ``(h, w)`` tuple."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value), int(value))
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def conv_pads(padding: Any, kernel: Pair, dilation: Pair, stride: Pair) -> Pads:
    """Any conv2d padding form -> ``((top, bottom), (left, right))``.

    ``"same"`` is PyTorch's rule: total ``dilation*(k-1)`` per dim, the odd pixel at the
    bottom/right, stride 1 only.

    >>> conv_pads("same", (2, 4), (1, 1), (1, 1))
    ((0, 1), (1, 2))
    >>> conv_pads(((1, 0), (2, 1)), (3, 3), (1, 1), (2, 2))
    ((1, 0), (2, 1))
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
            tot = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return ((tot[0] // 2, tot[0] - tot[0] // 2), (tot[1] // 2, tot[1] - tot[1] // 2))
        raise ValueError(f"padding must be 'valid' or 'same' when a string, got {padding!r}")
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        (t, b), (l, r) = pair(padding[0], "padding[0]"), pair(padding[1], "padding[1]")
        pads = ((t, b), (l, r))
    else:
        ph, pw = pair(padding, "padding")
        pads = ((ph, ph), (pw, pw))
    if min(min(p) for p in pads) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return pads


def _batched(x: Any) -> tuple[np.ndarray, bool]:
    x = np.asarray(x, np.float64)
    if x.ndim == 3:
        return x[None], True
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W) or (C, H, W), got shape {x.shape}")
    return x, False


def _taps(kernel: Pair, dilation: Pair, stride: Pair, out_hw: Pair):
    """Yield ``(p, q, rows, cols)``: tap (p, q) reads padded rows ``p*dh + i*sh`` (i < H_out)."""
    (kh, kw), (dh, dw), (sh, sw), (ho, wo) = kernel, dilation, stride, out_hw
    for p in range(kh):
        for q in range(kw):
            yield (p, q, slice(p * dh, p * dh + sh * (ho - 1) + 1, sh),
                   slice(q * dw, q * dw + sw * (wo - 1) + 1, sw))


def _conv_geometry(x: np.ndarray, w: np.ndarray, stride: Any, padding: Any, dilation: Any,
                   groups: int):
    s, d = pair(stride, "stride"), pair(dilation, "dilation")
    k = (int(w.shape[2]), int(w.shape[3]))
    pads = conv_pads(padding, k, d, s)
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        raise ValueError(f"shapes x {x.shape}, w {w.shape} do not fit groups={groups}")
    ho = (x.shape[2] + sum(pads[0]) - d[0] * (k[0] - 1) - 1) // s[0] + 1
    wo = (x.shape[3] + sum(pads[1]) - d[1] * (k[1] - 1) - 1) // s[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"output size ({ho}, {wo}) is not positive")
    return s, d, k, pads, (ho, wo)


def reference_conv2d(x: Any, w: Any, b: Any = None, *, stride: Any = 1, padding: Any = 0,
                     dilation: Any = 1, groups: int = 1) -> np.ndarray:
    """``torch.nn.functional.conv2d`` in float64 NumPy (cross-correlation, NCHW).

    x (N, C_in, H, W) or (C_in, H, W); w (C_out, C_in/groups, kH, kW); b (C_out,) or None
    -> (N, C_out, H_out, W_out), ``H_out = (H + pad_t + pad_b - d_h*(kH-1) - 1)//s_h + 1``.
    ``padding``: int, (h, w), ((top, bottom), (left, right)), ``"valid"`` or ``"same"``.

    >>> import numpy as np
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> reference_conv2d(x, np.ones((1, 1, 2, 2)), stride=2)[0, 0].tolist()
    [[10.0, 18.0], [42.0, 50.0]]
    """
    x, unbatched = _batched(x)
    w = np.asarray(w, np.float64)
    s, d, k, pads, (ho, wo) = _conv_geometry(x, w, stride, padding, dilation, groups)
    xp = np.pad(x, ((0, 0), (0, 0), *pads))
    n, cg = x.shape[0], w.shape[1]
    wg = w.reshape(groups, -1, cg, *k)
    out = np.zeros((n, groups, wg.shape[1], ho, wo))
    for p, q, rows, cols in _taps(k, d, s, (ho, wo)):
        xs = xp[:, :, rows, cols].reshape(n, groups, cg, ho, wo)
        out += np.einsum("ngchw,goc->ngohw", xs, wg[..., p, q])
    out = out.reshape(n, -1, ho, wo)
    if b is not None:
        out += np.asarray(b, np.float64)[None, :, None, None]
    return out[0] if unbatched else out


def reference_conv2d_vjp(x: Any, w: Any, b: Any, ct: Any, *, stride: Any = 1, padding: Any = 0,
                         dilation: Any = 1, groups: int = 1
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients ``(dx, dw, db)`` of ``sum(ct * reference_conv2d(x, w, b, ...))``, float64.

    Each tap's forward term ``out += x_tap @ w_tap`` is bilinear, so its pullback scatters
    ``ct @ w_tap`` back to the tap's input pixels and correlates ``ct`` with ``x_tap``.
    """
    x, unbatched = _batched(x)
    w = np.asarray(w, np.float64)
    ct = np.asarray(ct, np.float64)
    ct = ct[None] if unbatched else ct
    s, d, k, pads, (ho, wo) = _conv_geometry(x, w, stride, padding, dilation, groups)
    xp = np.pad(x, ((0, 0), (0, 0), *pads))
    n, cg = x.shape[0], w.shape[1]
    wg = w.reshape(groups, -1, cg, *k)
    ctg = ct.reshape(n, groups, -1, ho, wo)
    dxp, dwg = np.zeros_like(xp), np.zeros_like(wg)
    for p, q, rows, cols in _taps(k, d, s, (ho, wo)):
        xs = xp[:, :, rows, cols].reshape(n, groups, cg, ho, wo)
        dxp[:, :, rows, cols] += np.einsum("ngohw,goc->ngchw", ctg, wg[..., p, q]).reshape(
            n, -1, ho, wo)
        dwg[..., p, q] = np.einsum("ngohw,ngchw->goc", ctg, xs)
    h, wd = x.shape[2:]
    dx = dxp[:, :, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + wd]
    db = None if b is None else ct.sum(axis=(0, 2, 3))
    return (dx[0] if unbatched else dx), dwg.reshape(w.shape), db


def _transpose_geometry(x: np.ndarray, w: np.ndarray, stride: Any, padding: Any,
                        output_padding: Any, groups: int, dilation: Any):
    s, pd = pair(stride, "stride"), pair(padding, "padding")
    op, d = pair(output_padding, "output_padding"), pair(dilation, "dilation")
    k = (int(w.shape[2]), int(w.shape[3]))
    if x.shape[1] != w.shape[0] or x.shape[1] % groups:
        raise ValueError(f"shapes x {x.shape}, w {w.shape} do not fit groups={groups}")
    h, wd = x.shape[2:]
    ho = (h - 1) * s[0] - 2 * pd[0] + d[0] * (k[0] - 1) + op[0] + 1
    wo = (wd - 1) * s[1] - 2 * pd[1] + d[1] * (k[1] - 1) + op[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"output size ({ho}, {wo}) is not positive")
    # The uncropped scatter target: every tap's landing row, plus room for output_padding.
    full = (max((h - 1) * s[0] + d[0] * (k[0] - 1) + 1, pd[0] + ho),
            max((wd - 1) * s[1] + d[1] * (k[1] - 1) + 1, pd[1] + wo))
    return s, pd, d, k, (ho, wo), full


def reference_conv_transpose2d(x: Any, w: Any, b: Any = None, *, stride: Any = 1,
                               padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                               dilation: Any = 1) -> np.ndarray:
    """``torch.nn.functional.conv_transpose2d`` in float64 NumPy, by its scatter definition.

    x (N, C_in, H, W) or (C_in, H, W); w (C_in, C_out/groups, kH, kW); b (C_out,) or None
    -> (N, C_out, H_out, W_out), ``H_out = (H-1)*s_h - 2*pad_h + d_h*(kH-1) + out_pad_h + 1``.
    Input pixel (i, j) adds ``x[c, i, j] * w[c, o, p, q]`` to output
    ``(i*s_h - pad_h + p*d_h, j*s_w - pad_w + q*d_w)``.

    >>> import numpy as np
    >>> reference_conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)))[0, 0].tolist()
    [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """
    x, unbatched = _batched(x)
    w = np.asarray(w, np.float64)
    s, pd, d, k, (ho, wo), full = _transpose_geometry(x, w, stride, padding, output_padding,
                                                      groups, dilation)
    n, (h, wd) = x.shape[0], x.shape[2:]
    xg = x.reshape(n, groups, -1, h, wd)
    wg = w.reshape(groups, -1, w.shape[1], *k)
    out = np.zeros((n, groups, w.shape[1], *full))
    for p, q, rows, cols in _taps(k, d, s, (h, wd)):
        out[..., rows, cols] += np.einsum("ngchw,gco->ngohw", xg, wg[..., p, q])
    out = out.reshape(n, -1, *full)[:, :, pd[0]:pd[0] + ho, pd[1]:pd[1] + wo]
    if b is not None:
        out = out + np.asarray(b, np.float64)[None, :, None, None]
    return out[0] if unbatched else out


def reference_conv_transpose2d_vjp(x: Any, w: Any, b: Any, ct: Any, *, stride: Any = 1,
                                   padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                                   dilation: Any = 1
                                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients ``(dx, dw, db)`` of ``sum(ct * reference_conv_transpose2d(x, w, b, ...))``."""
    x, unbatched = _batched(x)
    w = np.asarray(w, np.float64)
    ct = np.asarray(ct, np.float64)
    ct = ct[None] if unbatched else ct
    s, pd, d, k, (ho, wo), full = _transpose_geometry(x, w, stride, padding, output_padding,
                                                      groups, dilation)
    n, (h, wd) = x.shape[0], x.shape[2:]
    ct_full = np.zeros((n, ct.shape[1], *full))
    ct_full[:, :, pd[0]:pd[0] + ho, pd[1]:pd[1] + wo] = ct
    ctg = ct_full.reshape(n, groups, -1, *full)
    xg = x.reshape(n, groups, -1, h, wd)
    wg = w.reshape(groups, -1, w.shape[1], *k)
    dxg, dwg = np.zeros_like(xg), np.zeros_like(wg)
    for p, q, rows, cols in _taps(k, d, s, (h, wd)):
        dxg += np.einsum("ngohw,gco->ngchw", ctg[..., rows, cols], wg[..., p, q])
        dwg[..., p, q] = np.einsum("ngchw,ngohw->gco", xg, ctg[..., rows, cols])
    dx = dxg.reshape(x.shape)
    db = None if b is None else ct.sum(axis=(0, 2, 3))
    return (dx[0] if unbatched else dx), dwg.reshape(w.shape), db

