"""Float64 NumPy oracles for convolution and transposed convolution with 1, 2 or 3 spatial
dims and every padding mode, written from PyTorch's definitions.

Independent of jconv's own argument parser: every padding form is resolved here, and the
padding modes are index maps written from their definitions (reflect mirrors without
repeating the edge, replicate repeats the edge, circular wraps), applied as 0/1 matrices, so
their VJP is the transposed matrix. Vectorised over everything but the kernel taps (one
NumPy slice and one ``einsum`` per tap), so hundreds of small cases take well under a second.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator

import numpy as np

Pair = tuple[int, int]
Pads = tuple[tuple[int, int], ...]
_AXES = {1: "L", 2: "HW", 3: "DHW"}


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def pair(value: Any, name: str) -> Pair:
    """An int or a length-2 sequence of ints as an ``(h, w)`` tuple."""
    if _is_int(value):
        return (int(value), int(value))
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def ntuple(value: Any, name: str, ndim: int) -> tuple[int, ...]:
    """An int or a length-``ndim`` sequence of ints as an ``ndim``-tuple."""
    if _is_int(value):
        return (int(value),) * ndim
    if isinstance(value, (tuple, list)) and len(value) == ndim and all(_is_int(v) for v in value):
        return tuple(int(v) for v in value)
    what = "a pair of ints" if ndim == 2 else f"{ndim} ints"
    raise TypeError(f"{name} must be an int or {what}, got {value!r}")


def conv_pads(padding: Any, kernel: Any, dilation: Any, stride: Any) -> Pads:
    """Any conv padding form -> one ``(low, high)`` pair per spatial dim (``len(kernel)``
    of them; ``((top, bottom), (left, right))`` in 2-D).

    ``"same"`` is PyTorch's rule: total ``dilation*(k-1)`` per dim, the odd pixel at the
    high end, stride 1 only.

    >>> conv_pads("same", (2, 4), (1, 1), (1, 1))
    ((0, 1), (1, 2))
    >>> conv_pads(((1, 0), (2, 1)), (3, 3), (1, 1), (2, 2))
    ((1, 0), (2, 1))
    >>> conv_pads((1, 2, 0), (3, 3, 3), (1, 1, 1), (1, 1, 1))
    ((1, 1), (2, 2), (0, 0))
    """
    ndim = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * ndim
        if padding == "same":
            if any(v != 1 for v in stride):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
            tot = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple((t // 2, t - t // 2) for t in tot)
        raise ValueError(f"padding must be 'valid' or 'same' when a string, got {padding!r}")
    if (isinstance(padding, (tuple, list)) and len(padding) == ndim
            and all(isinstance(p, (tuple, list)) for p in padding)):
        pads = tuple(pair(p, f"padding[{i}]") for i, p in enumerate(padding))
    else:
        pads = tuple((p, p) for p in ntuple(padding, "padding", ndim))
    if min(min(p) for p in pads) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return pads


def pad_matrix(size: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """The (lo + size + hi, size) 0/1 matrix that pads one axis in PyTorch's ``mode``:
    row ``i`` picks input ``i - lo`` mapped into range (``"zeros"``: an all-zero row).

    >>> pad_matrix(3, 2, 1, "reflect").argmax(1).tolist()
    [2, 1, 0, 1, 2, 1]
    >>> pad_matrix(3, 2, 1, "circular").argmax(1).tolist()
    [1, 2, 0, 1, 2, 0]
    >>> pad_matrix(3, 1, 2, "replicate").argmax(1).tolist()
    [0, 0, 1, 2, 2, 2]
    """
    m = np.zeros((lo + size + hi, size))
    for row in range(lo + size + hi):
        i = row - lo
        if 0 <= i < size:
            j = i
        elif mode == "zeros":
            continue
        elif mode == "reflect":
            j = -i if i < 0 else 2 * (size - 1) - i
        elif mode == "replicate":
            j = min(max(i, 0), size - 1)
        elif mode == "circular":
            j = i % size
        else:
            raise ValueError(f"padding_mode must be 'zeros', 'reflect', 'replicate' or "
                             f"'circular', got {mode!r}")
        m[row, j] = 1.0
    return m


def _apply_per_axis(a: np.ndarray, mats: list[np.ndarray]) -> np.ndarray:
    """Multiply spatial axis ``2 + i`` of ``a`` by ``mats[i]``."""
    for i, m in enumerate(mats):
        a = np.moveaxis(np.tensordot(m, a, axes=(1, 2 + i)), 0, 2 + i)
    return a


def _batched(x: Any, ndim: int = 2) -> tuple[np.ndarray, bool]:
    x = np.asarray(x, np.float64)
    if x.ndim == ndim + 1:
        return x[None], True
    if x.ndim != ndim + 2:
        axes = ", ".join(_AXES[ndim])
        raise ValueError(f"x must be (N, C, {axes}) or (C, {axes}), got shape {x.shape}")
    return x, False


def _taps_nd(kernel: tuple[int, ...], dilation: tuple[int, ...], stride: tuple[int, ...],
             out: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """Yield ``(tap, slices)``: tap ``t`` reads padded index ``t*d + i*s`` (i < out) per dim."""
    for tap in itertools.product(*(range(k) for k in kernel)):
        yield tap, tuple(slice(t * d, t * d + s * (o - 1) + 1, s)
                         for t, d, s, o in zip(tap, dilation, stride, out))


def _conv_geometry(x: np.ndarray, w: np.ndarray, stride: Any, padding: Any, dilation: Any,
                   groups: int):
    nd = w.ndim - 2
    s, d = ntuple(stride, "stride", nd), ntuple(dilation, "dilation", nd)
    k = tuple(int(v) for v in w.shape[2:])
    pads = conv_pads(padding, k, d, s)
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        raise ValueError(f"shapes x {x.shape}, w {w.shape} do not fit groups={groups}")
    out = tuple((n + sum(p) - dd * (kk - 1) - 1) // ss + 1
                for n, p, dd, kk, ss in zip(x.shape[2:], pads, d, k, s))
    if min(out) < 1:
        raise ValueError(f"output size {out} is not positive")
    return s, d, k, pads, out


def _weights(w: Any) -> tuple[np.ndarray, int]:
    w = np.asarray(w, np.float64)
    if w.ndim - 2 not in _AXES:
        raise ValueError(f"w must have 1, 2 or 3 spatial dims, got shape {w.shape}")
    return w, w.ndim - 2


def reference_convnd(x: Any, w: Any, b: Any = None, *, stride: Any = 1, padding: Any = 0,
                     dilation: Any = 1, groups: int = 1,
                     padding_mode: str = "zeros") -> np.ndarray:
    """``torch.nn.functional.conv1d/2d/3d`` (``w.ndim - 2`` spatial dims) in float64 NumPy,
    channels first, with ``torch.nn.ConvNd``'s ``padding_mode``.

    x (N, C_in, *spatial) or (C_in, *spatial); w (C_out, C_in/groups, *kernel);
    b (C_out,) or None -> (N, C_out, *out), per dim
    ``out = (size + pad_lo + pad_hi - d*(k-1) - 1)//s + 1``. ``padding``: int, one int per
    dim, one (low, high) pair per dim, ``"valid"`` or ``"same"``.

    >>> import numpy as np
    >>> reference_convnd(np.arange(4.0)[None], np.ones((1, 1, 3)), padding=1,
    ...                  padding_mode="reflect").tolist()
    [[2.0, 3.0, 6.0, 7.0]]
    """
    w, nd = _weights(w)
    x, unbatched = _batched(x, nd)
    s, d, k, pads, out = _conv_geometry(x, w, stride, padding, dilation, groups)
    xp = _apply_per_axis(x, [pad_matrix(n, lo, hi, padding_mode)
                             for n, (lo, hi) in zip(x.shape[2:], pads)])
    n, cg = x.shape[0], w.shape[1]
    wg = w.reshape(groups, -1, cg, *k)
    y = np.zeros((n, groups, wg.shape[1], *out))
    for tap, sl in _taps_nd(k, d, s, out):
        xs = xp[(slice(None), slice(None), *sl)].reshape(n, groups, cg, *out)
        y += np.einsum("ngc...,goc->ngo...", xs, wg[(..., *tap)])
    y = y.reshape(n, -1, *out)
    if b is not None:
        y += np.asarray(b, np.float64).reshape(-1, *(1,) * nd)
    return y[0] if unbatched else y


def reference_convnd_vjp(x: Any, w: Any, b: Any, ct: Any, *, stride: Any = 1,
                         padding: Any = 0, dilation: Any = 1, groups: int = 1,
                         padding_mode: str = "zeros"
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients ``(dx, dw, db)`` of ``sum(ct * reference_convnd(x, w, b, ...))``, float64.

    Each tap's forward term ``out += x_tap @ w_tap`` is bilinear, so its pullback scatters
    ``ct @ w_tap`` back to the tap's (padded) input pixels and correlates ``ct`` with
    ``x_tap``; the padding's pullback is its matrices' transposes.
    """
    w, nd = _weights(w)
    x, unbatched = _batched(x, nd)
    ct = np.asarray(ct, np.float64)
    ct = ct[None] if unbatched else ct
    s, d, k, pads, out = _conv_geometry(x, w, stride, padding, dilation, groups)
    mats = [pad_matrix(n, lo, hi, padding_mode) for n, (lo, hi) in zip(x.shape[2:], pads)]
    xp = _apply_per_axis(x, mats)
    n, cg = x.shape[0], w.shape[1]
    wg = w.reshape(groups, -1, cg, *k)
    ctg = ct.reshape(n, groups, -1, *out)
    dxp, dwg = np.zeros_like(xp), np.zeros_like(wg)
    sp = "xyz"[:nd]  # einsum sums spatial axes only when they are named
    for tap, sl in _taps_nd(k, d, s, out):
        idx = (slice(None), slice(None), *sl)
        xs = xp[idx].reshape(n, groups, cg, *out)
        dxp[idx] += np.einsum("ngo...,goc->ngc...", ctg, wg[(..., *tap)]).reshape(n, -1, *out)
        dwg[(..., *tap)] = np.einsum(f"ngo{sp},ngc{sp}->goc", ctg, xs)
    dx = _apply_per_axis(dxp, [m.T for m in mats])
    db = None if b is None else ct.sum(axis=(0, *range(2, 2 + nd)))
    return (dx[0] if unbatched else dx), dwg.reshape(w.shape), db


def reference_conv2d(x: Any, w: Any, b: Any = None, *, stride: Any = 1, padding: Any = 0,
                     dilation: Any = 1, groups: int = 1) -> np.ndarray:
    """``torch.nn.functional.conv2d`` in float64 NumPy (cross-correlation, NCHW): the 2-D
    case of :func:`reference_convnd`.

    x (N, C_in, H, W) or (C_in, H, W); w (C_out, C_in/groups, kH, kW); b (C_out,) or None
    -> (N, C_out, H_out, W_out), ``H_out = (H + pad_t + pad_b - d_h*(kH-1) - 1)//s_h + 1``.
    ``padding``: int, (h, w), ((top, bottom), (left, right)), ``"valid"`` or ``"same"``.

    >>> import numpy as np
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> reference_conv2d(x, np.ones((1, 1, 2, 2)), stride=2)[0, 0].tolist()
    [[10.0, 18.0], [42.0, 50.0]]
    """
    _batched(x)
    return reference_convnd(x, w, b, stride=stride, padding=padding, dilation=dilation,
                            groups=groups)


def reference_conv2d_vjp(x: Any, w: Any, b: Any, ct: Any, *, stride: Any = 1, padding: Any = 0,
                         dilation: Any = 1, groups: int = 1
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients ``(dx, dw, db)`` of ``sum(ct * reference_conv2d(x, w, b, ...))``, float64."""
    _batched(x)
    return reference_convnd_vjp(x, w, b, ct, stride=stride, padding=padding,
                                dilation=dilation, groups=groups)


def _transpose_geometry(x: np.ndarray, w: np.ndarray, stride: Any, padding: Any,
                        output_padding: Any, groups: int, dilation: Any):
    nd = w.ndim - 2
    s, pd = ntuple(stride, "stride", nd), ntuple(padding, "padding", nd)
    op, d = ntuple(output_padding, "output_padding", nd), ntuple(dilation, "dilation", nd)
    k = tuple(int(v) for v in w.shape[2:])
    if x.shape[1] != w.shape[0] or x.shape[1] % groups:
        raise ValueError(f"shapes x {x.shape}, w {w.shape} do not fit groups={groups}")
    size = x.shape[2:]
    out = tuple((n - 1) * ss - 2 * pp + dd * (kk - 1) + o + 1
                for n, ss, pp, dd, kk, o in zip(size, s, pd, d, k, op))
    if min(out) < 1:
        raise ValueError(f"output size {out} is not positive")
    # The uncropped scatter target: every tap's landing index, plus room for output_padding.
    full = tuple(max((n - 1) * ss + dd * (kk - 1) + 1, pp + o)
                 for n, ss, dd, kk, pp, o in zip(size, s, d, k, pd, out))
    return s, pd, d, k, out, full


def reference_conv_transposend(x: Any, w: Any, b: Any = None, *, stride: Any = 1,
                               padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                               dilation: Any = 1) -> np.ndarray:
    """``torch.nn.functional.conv_transpose1d/2d/3d`` (``w.ndim - 2`` spatial dims) in
    float64 NumPy, by its scatter definition.

    x (N, C_in, *spatial) or (C_in, *spatial); w (C_in, C_out/groups, *kernel); b (C_out,)
    or None -> (N, C_out, *out), per dim ``out = (n-1)*s - 2*pad + d*(k-1) + out_pad + 1``.
    Input pixel ``i`` adds ``x[c, i] * w[c, o, t]`` to output ``i*s - pad + t*d`` (per dim).

    >>> import numpy as np
    >>> reference_conv_transposend(np.ones((1, 1, 2)), np.ones((1, 1, 2))).tolist()
    [[[1.0, 2.0, 1.0]]]
    """
    w, nd = _weights(w)
    x, unbatched = _batched(x, nd)
    s, pd, d, k, out, full = _transpose_geometry(x, w, stride, padding, output_padding,
                                                 groups, dilation)
    n, size = x.shape[0], x.shape[2:]
    xg = x.reshape(n, groups, -1, *size)
    wg = w.reshape(groups, -1, w.shape[1], *k)
    y = np.zeros((n, groups, w.shape[1], *full))
    for tap, sl in _taps_nd(k, d, s, size):
        y[(..., *sl)] += np.einsum("ngc...,gco->ngo...", xg, wg[(..., *tap)])
    crop = tuple(slice(p, p + o) for p, o in zip(pd, out))
    y = y.reshape(n, -1, *full)[(slice(None), slice(None), *crop)]
    if b is not None:
        y = y + np.asarray(b, np.float64).reshape(-1, *(1,) * nd)
    return y[0] if unbatched else y


def reference_conv_transposend_vjp(x: Any, w: Any, b: Any, ct: Any, *, stride: Any = 1,
                                   padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                                   dilation: Any = 1
                                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients ``(dx, dw, db)`` of ``sum(ct * reference_conv_transposend(x, w, b, ...))``."""
    w, nd = _weights(w)
    x, unbatched = _batched(x, nd)
    ct = np.asarray(ct, np.float64)
    ct = ct[None] if unbatched else ct
    s, pd, d, k, out, full = _transpose_geometry(x, w, stride, padding, output_padding,
                                                 groups, dilation)
    n, size = x.shape[0], x.shape[2:]
    ct_full = np.zeros((n, ct.shape[1], *full))
    ct_full[(slice(None), slice(None), *(slice(p, p + o) for p, o in zip(pd, out)))] = ct
    ctg = ct_full.reshape(n, groups, -1, *full)
    xg = x.reshape(n, groups, -1, *size)
    wg = w.reshape(groups, -1, w.shape[1], *k)
    dxg, dwg = np.zeros_like(xg), np.zeros_like(wg)
    sp = "xyz"[:nd]  # einsum sums spatial axes only when they are named
    for tap, sl in _taps_nd(k, d, s, size):
        cts = ctg[(..., *sl)]
        dxg += np.einsum("ngo...,gco->ngc...", cts, wg[(..., *tap)])
        dwg[(..., *tap)] = np.einsum(f"ngc{sp},ngo{sp}->gco", xg, cts)
    db = None if b is None else ct.sum(axis=(0, *range(2, 2 + nd)))
    return (dxg.reshape(x.shape)[0] if unbatched else dxg.reshape(x.shape)), \
        dwg.reshape(w.shape), db


def reference_conv_transpose2d(x: Any, w: Any, b: Any = None, *, stride: Any = 1,
                               padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                               dilation: Any = 1) -> np.ndarray:
    """``torch.nn.functional.conv_transpose2d`` in float64 NumPy, by its scatter definition:
    the 2-D case of :func:`reference_conv_transposend`.

    x (N, C_in, H, W) or (C_in, H, W); w (C_in, C_out/groups, kH, kW); b (C_out,) or None
    -> (N, C_out, H_out, W_out), ``H_out = (H-1)*s_h - 2*pad_h + d_h*(kH-1) + out_pad_h + 1``.
    Input pixel (i, j) adds ``x[c, i, j] * w[c, o, p, q]`` to output
    ``(i*s_h - pad_h + p*d_h, j*s_w - pad_w + q*d_w)``.

    >>> import numpy as np
    >>> reference_conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)))[0, 0].tolist()
    [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """
    _batched(x)
    return reference_conv_transposend(x, w, b, stride=stride, padding=padding,
                                      output_padding=output_padding, groups=groups,
                                      dilation=dilation)


def reference_conv_transpose2d_vjp(x: Any, w: Any, b: Any, ct: Any, *, stride: Any = 1,
                                   padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                                   dilation: Any = 1
                                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients ``(dx, dw, db)`` of ``sum(ct * reference_conv_transpose2d(x, w, b, ...))``."""
    _batched(x)
    return reference_conv_transposend_vjp(x, w, b, ct, stride=stride, padding=padding,
                                          output_padding=output_padding, groups=groups,
                                          dilation=dilation)
