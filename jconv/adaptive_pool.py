"""Adaptive average and max pooling over 1, 2 or 3 spatial dims with PyTorch semantics: the
output size is given, and output ``i`` along a dim of input size ``n`` and output size ``m``
pools input ``floor(i*n/m) .. ceil((i+1)*n/m) - 1``. Both reductions are separable over a
box window, so each runs one spatial dim at a time."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import jax.numpy as jnp
import numpy as np
from jax import lax

from ._pool_impls import gather_spatial
from ._pool_spec import check_bool, check_pool_rank, pool_format, spatial_shape
from ._spec import _check_float, _is_int, accum_dtype
from ._windows import from_nhwc, to_nhwc

OutputSize = Union[int, None, Sequence[Optional[int]]]


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive windows along one dim: ``[start, end)`` for each output index.

    Example:
      >>> adaptive_windows(5, 3)
      [(0, 2), (1, 4), (3, 5)]
    """
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _parse(x: jnp.ndarray, output_size: OutputSize, nd: int,
           data_format: str) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    fmt = pool_format(data_format, nd)
    _check_float(x, "x")
    check_pool_rank(x.shape, fmt)
    size_in = spatial_shape(x.shape, fmt)
    if 0 in size_in or (x.ndim == nd + 2 and x.shape[1 if fmt[1] == "C" else -1] == 0):
        raise ValueError(f"x must have non-zero channels and spatial sizes, got shape "
                         f"{tuple(x.shape)}")
    out = tuple(n if v is None else v for v, n in zip(output_sizes(output_size, nd), size_in))
    return fmt, size_in, out


def output_sizes(output_size: OutputSize, nd: int) -> tuple[Optional[int], ...]:
    """Validate an adaptive ``output_size`` for ``nd`` spatial dims: one entry per dim, an
    int >= 1 or ``None`` (keep that input size)."""
    if output_size is None or _is_int(output_size):
        sizes: Sequence[Optional[int]] = (output_size,) * nd  # type: ignore[assignment]
    elif isinstance(output_size, (tuple, list)) and len(output_size) == nd:
        sizes = output_size
    else:
        raise TypeError(f"output_size must be an int, None or a tuple of {nd} ints or Nones, "
                        f"got {output_size!r}")
    if not all(v is None or (_is_int(v) and v >= 1) for v in sizes):
        raise ValueError(f"output_size must be >= 1 (or None: keep the input size) in every "
                         f"dimension, got {output_size!r}")
    return tuple(None if v is None else int(v) for v in sizes)


def _batched(x: jnp.ndarray, nd: int) -> tuple[jnp.ndarray, bool]:
    unbatched = x.ndim == nd + 1
    return (x[None] if unbatched else x), unbatched


def _adaptive_avg(nd: int, x: jnp.ndarray, output_size: OutputSize,
                  data_format: str) -> jnp.ndarray:
    fmt, size_in, out = _parse(x, output_size, nd, data_format)
    xb, unbatched = _batched(x, nd)
    acc = accum_dtype(x.dtype)
    y = to_nhwc(xb, fmt).astype(acc)
    for axis, (n, m) in enumerate(zip(size_in, out), start=1):
        # One (m, n) averaging matrix per dim; HIGHEST so float32 is not rounded to bfloat16
        # passes on accelerators.
        mean = np.zeros((m, n))
        for i, (lo, hi) in enumerate(adaptive_windows(n, m)):
            mean[i, lo:hi] = 1.0 / (hi - lo)
        y = jnp.moveaxis(jnp.tensordot(y, jnp.asarray(mean, acc), axes=([axis], [1]),
                                       precision=lax.Precision.HIGHEST), -1, axis)
    y = from_nhwc(y, fmt).astype(x.dtype)
    return y[0] if unbatched else y


def _adaptive_argmax(x: jnp.ndarray, size_in: tuple[int, ...], out: tuple[int, ...],
                     fmt: str) -> jnp.ndarray:
    """Flat spatial index of each adaptive window's maximum (first on ties, NaN largest),
    reducing one dim at a time while carrying the candidates' flat indices."""
    v = to_nhwc(x, fmt)
    idx = jnp.broadcast_to(jnp.arange(math.prod(size_in), dtype=jnp.int32)
                           .reshape(1, *size_in, 1), v.shape)
    for axis, (n, m) in enumerate(zip(size_in, out), start=1):
        wins = adaptive_windows(n, m)
        width = max(hi - lo for lo, hi in wins)
        # Shorter windows repeat their first element: a duplicate changes neither the max
        # nor the first index of it.
        table = np.array([[lo + min(t, hi - lo - 1) for t in range(width)] for lo, hi in wins])
        gv, gi = jnp.take(v, table, axis=axis), jnp.take(idx, table, axis=axis)
        best = gv.max(axis=axis + 1, keepdims=True)
        hit = jnp.where(jnp.isnan(best), jnp.isnan(gv), gv == best)
        idx = jnp.where(hit, gi, np.iinfo(np.int32).max).min(axis=axis + 1)
        v = best.squeeze(axis + 1)
    return from_nhwc(idx, fmt)


def _adaptive_max(nd: int, x: jnp.ndarray, output_size: OutputSize, return_indices: bool,
                  data_format: str):
    fmt, size_in, out = _parse(x, output_size, nd, data_format)
    check_bool(return_indices, "return_indices")
    xb, unbatched = _batched(x, nd)
    idx = _adaptive_argmax(lax.stop_gradient(xb), size_in, out, fmt)
    # Values read at the indices: the gradient goes to exactly that element, as in PyTorch.
    y = gather_spatial(xb, idx, fmt)
    if unbatched:
        y, idx = y[0], idx[0]
    return (y, idx) if return_indices else y


def adaptive_avg_pool1d(x: jnp.ndarray, output_size: OutputSize, *,
                        data_format: str = "NCL") -> jnp.ndarray:
    """Adaptive average pooling over L, ``torch.nn.functional.adaptive_avg_pool1d``
    semantics: x (N, C, L) or (C, L) (``"NLC"``: channels last) -> L_out = ``output_size``;
    output ``i`` averages input ``floor(i*L/L_out) .. ceil((i+1)*L/L_out) - 1``.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.adaptive_avg_pool1d(jnp.array([[1.0, 2.0, 3.0, 4.0, 5.0]]), 3).tolist()
      [[1.5, 3.0, 4.5]]
    """
    return _adaptive_avg(1, x, output_size, data_format)


def adaptive_avg_pool2d(x: jnp.ndarray, output_size: OutputSize, *,
                        data_format: str = "NCHW") -> jnp.ndarray:
    """Adaptive average pooling, ``torch.nn.functional.adaptive_avg_pool2d`` semantics.

    x: (N, C, H, W) or (C, H, W) (NHWC: channels last) -> (N, C, H_out, W_out) with
    ``(H_out, W_out) = output_size`` (an int for both; ``None`` keeps that input size).
    Output ``i`` along a dim of size ``n`` averages input ``floor(i*n/m) .. ceil((i+1)*n/m)-1``
    (``m`` the output size), so windows may overlap and differ in size. Half precisions
    are averaged in float32.

    Example (a ResNet head: any input size to 1x1):
      >>> import jax.numpy as jnp, jconv
      >>> jconv.adaptive_avg_pool2d(jnp.ones((8, 512, 7, 7)), 1).shape
      (8, 512, 1, 1)
      >>> jconv.adaptive_avg_pool2d(jnp.arange(5.0).reshape(1, 1, 5), (None, 2)).tolist()
      [[[1.0, 3.0]]]
    """
    return _adaptive_avg(2, x, output_size, data_format)


def adaptive_avg_pool3d(x: jnp.ndarray, output_size: OutputSize, *,
                        data_format: str = "NCDHW") -> jnp.ndarray:
    """Adaptive average pooling over (D, H, W), ``torch.nn.functional.adaptive_avg_pool3d``
    semantics (see :func:`adaptive_avg_pool2d`). x: (N, C, D, H, W) or (C, D, H, W) ->
    (N, C, *output_size).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.adaptive_avg_pool3d(jnp.ones((2, 3, 5, 6, 7)), (1, 2, None)).shape
      (2, 3, 1, 2, 7)
    """
    return _adaptive_avg(3, x, output_size, data_format)


def adaptive_max_pool1d(x: jnp.ndarray, output_size: OutputSize, return_indices: bool = False,
                        *, data_format: str = "NCL"):
    """Adaptive max pooling over L, ``torch.nn.functional.adaptive_max_pool1d`` semantics
    (windows as :func:`adaptive_avg_pool1d`; ``return_indices`` as :func:`jconv.max_pool1d`).
    x: (N, C, L) or (C, L) -> (N, C, L_out).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> y, i = jconv.adaptive_max_pool1d(jnp.array([[1.0, 5.0, 2.0, 4.0, 3.0]]), 2, True)
      >>> y.tolist(), i.tolist()
      ([[5.0, 4.0]], [[1, 3]])
    """
    return _adaptive_max(1, x, output_size, return_indices, data_format)


def adaptive_max_pool2d(x: jnp.ndarray, output_size: OutputSize, return_indices: bool = False,
                        *, data_format: str = "NCHW"):
    """Adaptive max pooling, ``torch.nn.functional.adaptive_max_pool2d`` semantics.

    x: (N, C, H, W) or (C, H, W) (NHWC: channels last) -> (N, C, H_out, W_out), windows as
    :func:`adaptive_avg_pool2d`. ``return_indices=True`` returns ``(y, indices)``: int32 flat
    indices ``h*W + w`` of each window's maximum (first on ties, NaN largest); the gradient
    goes to exactly that element.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.adaptive_max_pool2d(jnp.arange(16.0).reshape(1, 4, 4), 2).tolist()
      [[[5.0, 7.0], [13.0, 15.0]]]
    """
    return _adaptive_max(2, x, output_size, return_indices, data_format)


def adaptive_max_pool3d(x: jnp.ndarray, output_size: OutputSize, return_indices: bool = False,
                        *, data_format: str = "NCDHW"):
    """Adaptive max pooling over (D, H, W), ``torch.nn.functional.adaptive_max_pool3d``
    semantics (see :func:`adaptive_max_pool2d`; flat index ``d*H*W + h*W + w``).
    x: (N, C, D, H, W) or (C, D, H, W) -> (N, C, *output_size).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.adaptive_max_pool3d(jnp.ones((1, 2, 3, 4, 5)), 2).shape
      (1, 2, 2, 2, 2)
    """
    return _adaptive_max(3, x, output_size, return_indices, data_format)
