"""Max unpooling over 1, 2 or 3 spatial dims, PyTorch semantics: each value is written at
the flat spatial index that ``max_pool*d(..., return_indices=True)`` returned, zeros
elsewhere."""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._geometry import IntOrTuple, spatial_shape, transposed_output_size
from ._pool_spec import check_pool_rank, pool_format, pool_geometry
from ._spec import _check_float, prod
from ._windows import from_nhwc, to_nhwc


def _output_size(size_in: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
                 padding: tuple[int, ...], output_size: Optional[Sequence[int]]
                 ) -> tuple[int, ...]:
    """PyTorch's rule: by default ``(in-1)*stride - 2*padding + kernel``; an explicit size
    (its last ``ndim`` entries if it has ``ndim + 2``) must lie strictly within one stride
    of that default."""
    default = tuple(transposed_output_size(n, k, s, (p, p))
                    for n, k, s, p in zip(size_in, kernel, stride, padding))
    if output_size is None:
        if min(default) < 1:
            raise ValueError(f"output size {default} is not positive: padding={padding} is "
                             f"too large for input size {size_in}")
        return default
    nd = len(kernel)
    if not (isinstance(output_size, (tuple, list)) and len(output_size) in (nd, nd + 2)
            and all(isinstance(v, (int, np.integer)) for v in output_size)):
        raise ValueError(f"output_size must be None or a sequence of {nd} or {nd + 2} ints, "
                         f"got {output_size!r}")
    size = tuple(int(v) for v in output_size[-nd:])
    for d, (o, dflt, s) in enumerate(zip(size, default, stride)):
        if not dflt - s < o < dflt + s:
            raise ValueError(f"output_size {tuple(output_size)} is invalid: dim {d} must lie "
                             f"strictly between {dflt - s} and {dflt + s}, got {o}")
    return size


def _check_concrete_indices(indices: jnp.ndarray, volume: int) -> None:
    if isinstance(indices, jax.core.Tracer):
        return
    idx = np.asarray(indices)
    if idx.size and (idx.min() < 0 or idx.max() >= volume):
        bad = idx.min() if idx.min() < 0 else idx.max()
        raise ValueError(f"indices must lie in [0, {volume}) (the output's spatial volume), "
                         f"found {int(bad)}")


def _scatter(vals: jnp.ndarray, idx: jnp.ndarray, volume: int, add: bool) -> jnp.ndarray:
    """(N, M, C) values written (or added) at their (N, M, C) flat indices of an
    (N, volume, C) zero array; out-of-range indices dropped."""
    n, _, c = vals.shape
    at = jnp.zeros((n, volume, c), vals.dtype).at[jnp.arange(n)[:, None, None], idx,
                                                   jnp.arange(c)[None, None, :]]
    return at.add(vals, mode="drop") if add else at.set(vals, mode="drop")


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _unpool_flat(vals: jnp.ndarray, idx: jnp.ndarray, volume: int) -> jnp.ndarray:
    return _scatter(vals, idx, volume, add=False)


@_unpool_flat.defjvp
def _unpool_flat_jvp(volume: int, primals, tangents):
    # PyTorch's backward is a gather, grad_x = grad_y[indices]: where indices repeat
    # (overlapping pooling windows) every copy gets the gradient, where the scatter's own
    # derivative gives it to the one copy written. A scatter-add tangent is that gather's
    # adjoint, so JAX transposes it into exactly PyTorch's backward, and being linear and
    # free of x it differentiates again (to zero) in either mode.
    (vals, idx), (t, _) = primals, tangents
    return _unpool_flat(vals, idx, volume), _scatter(t, idx, volume, add=True)


def _max_unpool(nd: int, x: jnp.ndarray, indices: jnp.ndarray, kernel_size: IntOrTuple,
                stride: IntOrTuple | None, padding: IntOrTuple,
                output_size: Optional[Sequence[int]], data_format: str) -> jnp.ndarray:
    fmt = pool_format(data_format, nd)
    _check_float(x, "x")
    check_pool_rank(x.shape, fmt)
    if not hasattr(indices, "dtype") or not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"indices must be an integer array (from return_indices=True), got "
                        f"{getattr(indices, 'dtype', type(indices).__name__)}")
    if tuple(indices.shape) != tuple(x.shape):
        raise ValueError(f"indices must have the shape of x {tuple(x.shape)}, got "
                         f"{tuple(indices.shape)}")
    kernel, stride_t, pad = pool_geometry(kernel_size, stride, padding, nd)
    size = _output_size(spatial_shape(x.shape, fmt), kernel, stride_t, pad, output_size)
    volume = prod(size)
    _check_concrete_indices(indices, volume)
    unbatched = x.ndim == nd + 1
    xl = to_nhwc(x[None] if unbatched else x, fmt)
    il = to_nhwc(indices[None] if unbatched else indices, fmt)
    n, c = xl.shape[0], xl.shape[-1]
    vals, idx = xl.reshape(n, -1, c), il.reshape(n, -1, c).astype(jnp.int32)
    # Under jit the indices cannot be checked: out-of-range ones (negatives included) are
    # dropped instead of wrapping around.
    idx = jnp.where(idx < 0, volume, idx)
    out = _unpool_flat(vals, idx, volume)
    y = from_nhwc(out.reshape(n, *size, c), fmt)
    return y[0] if unbatched else y


def max_unpool1d(x: jnp.ndarray, indices: jnp.ndarray, kernel_size: IntOrTuple,
                 stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
                 output_size: Optional[Sequence[int]] = None, *,
                 data_format: str = "NCL") -> jnp.ndarray:
    """Inverse of :func:`jconv.max_pool1d` with ``return_indices=True``,
    ``torch.nn.functional.max_unpool1d`` semantics (see :func:`max_unpool2d`).
    x, indices: (N, C, L) or (C, L) -> (N, C, L_out), L_out = (L-1)*stride - 2*padding + k.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> y, i = jconv.max_pool1d(jnp.array([[3.0, 1.0, 4.0, 1.0]]), 2, return_indices=True)
      >>> jconv.max_unpool1d(y, i, 2).tolist()
      [[3.0, 0.0, 4.0, 0.0]]
    """
    return _max_unpool(1, x, indices, kernel_size, stride, padding, output_size, data_format)


def max_unpool2d(x: jnp.ndarray, indices: jnp.ndarray, kernel_size: IntOrTuple,
                 stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
                 output_size: Optional[Sequence[int]] = None, *,
                 data_format: str = "NCHW") -> jnp.ndarray:
    """Inverse of :func:`jconv.max_pool2d` with ``return_indices=True``,
    ``torch.nn.functional.max_unpool2d`` semantics: zeros everywhere except each value of
    ``x`` written at its flat index ``h*W_out + w`` of the output plane.

    x, indices: (N, C, H, W) or (C, H, W) (NHWC: channels last) -> (N, C, H_out, W_out),

      H_out = (H - 1)*stride_h - 2*padding_h + kH    (``stride`` defaults to the kernel)

    or ``output_size`` ((H_out, W_out) or (N, C, H_out, W_out)), which must lie strictly
    within one stride of that default (what a ``ceil_mode`` or odd input size needs).
    Indices outside the output raise ``ValueError`` when they are concrete; under ``jit``
    they are dropped. Differentiable in ``x``, to any order: the gradient is PyTorch's
    gather ``grad_x = grad_y.flatten()[indices]``, so where overlapping windows repeat an
    index every copy gets that element's gradient.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.arange(16.0).reshape(1, 1, 4, 4)
      >>> y, i = jconv.max_pool2d(x, 2, return_indices=True)
      >>> jconv.max_unpool2d(y, i, 2)[0, 0].tolist()
      [[0.0, 0.0, 0.0, 0.0], [0.0, 5.0, 0.0, 7.0], [0.0, 0.0, 0.0, 0.0], [0.0, 13.0, 0.0, 15.0]]
    """
    return _max_unpool(2, x, indices, kernel_size, stride, padding, output_size, data_format)


def max_unpool3d(x: jnp.ndarray, indices: jnp.ndarray, kernel_size: IntOrTuple,
                 stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
                 output_size: Optional[Sequence[int]] = None, *,
                 data_format: str = "NCDHW") -> jnp.ndarray:
    """Inverse of :func:`jconv.max_pool3d` with ``return_indices=True``,
    ``torch.nn.functional.max_unpool3d`` semantics (see :func:`max_unpool2d`; flat index
    ``d*H*W + h*W + w``). x, indices: (N, C, D, H, W) or (C, D, H, W) -> (N, C, *out).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> y, i = jconv.max_pool3d(jnp.ones((1, 1, 4, 4, 4)), 2, return_indices=True)
      >>> jconv.max_unpool3d(y, i, 2).sum().item()
      8.0
    """
    return _max_unpool(3, x, indices, kernel_size, stride, padding, output_size, data_format)
