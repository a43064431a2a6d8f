"""Max, average, power-average and global-average pooling over 1, 2 or 3 spatial dims with
PyTorch semantics, three ways like the convolutions."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from jax import lax

from ._pool_impls import gather_spatial
from ._geometry import format_ndim
from ._pool_spec import IntOrTuple, PoolSpec, canonical_pool, check_bool, pool_format
from ._registry import POOL_IMPLS, pool_reducer
from ._spec import (_check_float, _is_int, accum_dtype, check_data_format, check_impl, prod,
                    to_tuple)


def _pool(x: jnp.ndarray, spec: PoolSpec, unbatched: bool, op: str, impl: str) -> jnp.ndarray:
    if unbatched:
        x = x[None]
    y = pool_reducer(impl)(x, spec, op)
    return y[0] if unbatched else y


def _max_pool(nd: int, x: jnp.ndarray, kernel_size: IntOrTuple, stride: IntOrTuple | None,
              padding: IntOrTuple, dilation: IntOrTuple, ceil_mode: bool, return_indices: bool,
              impl: str, data_format: str):
    check_impl(impl, POOL_IMPLS)
    fmt = pool_format(data_format, nd)
    check_bool(return_indices, "return_indices")
    spec, unbatched = canonical_pool(x, kernel_size, stride, padding, dilation, ceil_mode, fmt)
    if not return_indices:
        return _pool(x, spec, unbatched, "max", impl)
    idx = _pool(lax.stop_gradient(x), spec, unbatched, "argmax", impl)
    xb, ib = (x, idx) if not unbatched else (x[None], idx[None])
    # The values are read at the indices, so the gradient goes to exactly that element.
    y = gather_spatial(xb, ib, fmt)
    return (y[0] if unbatched else y), idx


def max_poolnd(x: jnp.ndarray, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False, *, impl: str = "lax", data_format: str):
    """N-D max pooling, N = 1, 2 or 3 spatial dims: the one core of :func:`max_pool1d`,
    :func:`max_pool2d` and :func:`max_pool3d`, with their signature; ``data_format``
    (required: ``"NCL"``/``"NLC"``, ``"NCHW"``/``"NHWC"``, ``"NCDHW"``/``"NDHWC"``) says N.

    x: (N, C, *spatial) or unbatched (C, *spatial) in ``data_format`` -> the same layout,
    per spatial dim ``out = (size + 2*padding - dilation*(k-1) - 1) // stride + 1``
    (``ceil_mode``: rounded up, the last window starting inside the input or the padding).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.max_poolnd(jnp.ones((2, 6, 6, 6, 4)), 2, data_format="NDHWC").shape
      (2, 3, 3, 3, 4)
    """
    return _max_pool(format_ndim(data_format), x, kernel_size, stride, padding, dilation,
                     ceil_mode, return_indices, impl, data_format)


def max_pool1d(x: jnp.ndarray, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False, *, impl: str = "lax", data_format: str = "NCL"):
    """Max pooling over L, ``torch.nn.functional.max_pool1d`` semantics (see
    :func:`max_pool2d` for the rules, ``impl`` and gradients).

    x: (N, C, L) or (C, L) (``data_format="NLC"``: (N, L, C) or (L, C)) -> same layout,
    L_out = (L + 2*padding - dilation*(k-1) - 1) // stride + 1 (``ceil_mode``: rounded up).
    ``return_indices=True`` returns ``(y, indices)``, indices into L.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> y, idx = jconv.max_pool1d(jnp.array([[3.0, 1.0, 4.0, 1.0, 5.0]]), 2, return_indices=True)
      >>> y.tolist(), idx.tolist()
      ([[3.0, 4.0]], [[0, 2]])
    """
    return _max_pool(1, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                     impl, data_format)


def max_pool2d(x: jnp.ndarray, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False, *, impl: str = "lax", data_format: str = "NCHW"):
    """Max pooling, ``torch.nn.functional.max_pool2d`` semantics.

    x: (N, C, H, W) or (C, H, W) (NHWC: (N, H, W, C) or (H, W, C)) -> same layout, C kept.

      H_out = (H + 2*pad_h - dilation_h*(kH-1) - 1) // stride_h + 1    (ceil_mode: round up,
      but the last window must start inside the input or the top/left padding)

    Padding is filled with ``-inf`` so it never wins; ``stride`` defaults to ``kernel_size``;
    ``padding`` may be at most half the kernel. ``impl`` is ``"lax"`` (``lax.reduce_window``),
    ``"im2col"`` (stack the window taps, reduce once) or ``"loops"`` (running max over taps).
    At exact ties the gradient goes to one element for ``lax`` and is shared for the others.
    XLA cannot differentiate max windows with dilation, so for ``impl="lax"`` jconv gives
    dilated max pooling its own JVP (a gather at the argmax), differentiable to any order.

    ``return_indices=True`` returns ``(y, indices)``: int32, per channel, the flat index
    ``h*W + w`` into the input of each window's maximum (the first in row-major order on
    ties, NaN counting as the largest); the gradient then goes to exactly that element, as
    in PyTorch, and :func:`jconv.max_unpool2d` inverts it.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.arange(16.0).reshape(1, 1, 4, 4)
      >>> jconv.max_pool2d(x, 2)[0, 0].tolist()
      [[5.0, 7.0], [13.0, 15.0]]
      >>> jconv.max_pool2d(x, 2, return_indices=True)[1][0, 0].tolist()
      [[5, 7], [13, 15]]
    """
    return _max_pool(2, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                     impl, data_format)


def max_pool3d(x: jnp.ndarray, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False, *, impl: str = "lax", data_format: str = "NCDHW"):
    """Max pooling over (D, H, W), ``torch.nn.functional.max_pool3d`` semantics (see
    :func:`max_pool2d` for the rules, ``impl``, gradients and ``return_indices``, whose flat
    index is ``d*H*W + h*W + w``).

    x: (N, C, D, H, W) or (C, D, H, W) (``"NDHWC"``: channels last) -> same layout, per dim
    out = (size + 2*padding - dilation*(k-1) - 1) // stride + 1 (``ceil_mode``: rounded up).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.max_pool3d(jnp.ones((2, 3, 8, 8, 8)), 2, padding=1).shape
      (2, 3, 5, 5, 5)
    """
    return _max_pool(3, x, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
                     impl, data_format)


def _avg_divisor(spec: PoolSpec, count_include_pad: bool) -> np.ndarray:
    """Per-output-pixel divisor (*out_size), PyTorch's rule: padding counts when asked, the
    ceil-mode overhang past the padded input never does."""
    counts = []
    for size, k, s, p, out in zip(spec.in_size, spec.kernel, spec.stride, spec.user_padding,
                                  spec.out_size):
        start = np.arange(out) * s - p
        if count_include_pad:
            counts.append(np.minimum(start + k, size + p) - start)
        else:
            counts.append(np.minimum(start + k, size) - np.maximum(start, 0))
    return functools.reduce(np.multiply.outer, counts)


def _avg_pool(nd: int, x: jnp.ndarray, kernel_size: IntOrTuple, stride: IntOrTuple | None,
              padding: IntOrTuple, ceil_mode: bool, count_include_pad: bool,
              divisor_override: int | None, impl: str, data_format: str) -> jnp.ndarray:
    check_impl(impl, POOL_IMPLS)
    fmt = pool_format(data_format, nd)
    check_bool(count_include_pad, "count_include_pad")
    if divisor_override is not None and not (_is_int(divisor_override) and divisor_override):
        raise ValueError(f"divisor_override must be None or a non-zero int, "
                         f"got {divisor_override!r}")
    spec, unbatched = canonical_pool(x, kernel_size, stride, padding, 1, ceil_mode, fmt)
    acc = accum_dtype(x.dtype)
    total = _pool(x.astype(acc), spec, unbatched, "sum", impl)
    if divisor_override is not None:
        return (total / jnp.asarray(divisor_override, acc)).astype(x.dtype)
    div = _avg_divisor(spec, count_include_pad)
    div = div[..., None] if fmt[1] != "C" else div
    return (total / jnp.asarray(div, acc)).astype(x.dtype)


def avg_poolnd(x: jnp.ndarray, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None, *, impl: str = "lax",
               data_format: str) -> jnp.ndarray:
    """N-D average pooling, N = 1, 2 or 3: the one core of :func:`avg_pool1d`,
    :func:`avg_pool2d` and :func:`avg_pool3d` (``divisor_override`` for every N, where
    PyTorch's 1-D function has none); ``data_format`` (required) says N.

    x: (N, C, *spatial) or (C, *spatial) -> the same layout, per spatial dim
    ``out = (size + 2*padding - k) // stride + 1`` (``ceil_mode``: rounded up).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.avg_poolnd(jnp.arange(4.0).reshape(1, 1, 4), 2, data_format="NCL").tolist()
      [[[0.5, 2.5]]]
    """
    return _avg_pool(format_ndim(data_format), x, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override, impl, data_format)


def avg_pool1d(x: jnp.ndarray, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               *, impl: str = "lax", data_format: str = "NCL") -> jnp.ndarray:
    """Average pooling over L, ``torch.nn.functional.avg_pool1d`` semantics (see
    :func:`avg_pool2d` for the rules and ``impl``; PyTorch's 1-D version has no
    ``divisor_override``).

    x: (N, C, L) or (C, L) (``"NLC"``: channels last) -> same layout,
    L_out = (L + 2*padding - k) // stride + 1 (``ceil_mode``: rounded up).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.avg_pool1d(jnp.array([[1.0, 2.0, 3.0]]), 2, stride=1, padding=1).tolist()
      [[0.5, 1.5, 2.5, 1.5]]
    """
    return _avg_pool(1, x, kernel_size, stride, padding, ceil_mode, count_include_pad, None,
                     impl, data_format)


def avg_pool2d(x: jnp.ndarray, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None, *, impl: str = "lax",
               data_format: str = "NCHW") -> jnp.ndarray:
    """Average pooling, ``torch.nn.functional.avg_pool2d`` semantics.

    x: (N, C, H, W) or (C, H, W) (NHWC: (N, H, W, C) or (H, W, C)) -> same layout, C kept.

      H_out = (H + 2*pad_h - kH) // stride_h + 1    (ceil_mode as in :func:`max_pool2d`)

    Zero padding; with ``count_include_pad`` the zeros count in the divisor, without it only
    real pixels do. Windows that ceil mode lets run past the padded input are averaged over
    their in-bounds part. ``divisor_override`` (a non-zero int) replaces every window's
    divisor. Half precisions are summed in float32.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.arange(16.0).reshape(1, 1, 4, 4)
      >>> jconv.avg_pool2d(x, 2, impl="loops")[0, 0].tolist()
      [[2.5, 4.5], [10.5, 12.5]]
    """
    return _avg_pool(2, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, impl, data_format)


def avg_pool3d(x: jnp.ndarray, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None, *, impl: str = "lax",
               data_format: str = "NCDHW") -> jnp.ndarray:
    """Average pooling over (D, H, W), ``torch.nn.functional.avg_pool3d`` semantics (see
    :func:`avg_pool2d` for the rules, ``impl`` and ``divisor_override``).

    x: (N, C, D, H, W) or (C, D, H, W) (``"NDHWC"``: channels last) -> same layout, per dim
    out = (size + 2*padding - k) // stride + 1 (``ceil_mode``: rounded up).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.avg_pool3d(jnp.ones((1, 2, 4, 4, 4)), 2, divisor_override=1)[0, 0, 0].tolist()
      [[8.0, 8.0], [8.0, 8.0]]
    """
    return _avg_pool(3, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, impl, data_format)


def _lp_pool(nd: int, x: jnp.ndarray, norm_type: float, kernel_size: IntOrTuple,
             stride: IntOrTuple | None, ceil_mode: bool, impl: str,
             data_format: str) -> jnp.ndarray:
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float, np.number)) \
            or not norm_type:
        raise ValueError(f"norm_type must be a non-zero number, got {norm_type!r}")
    _check_float(x, "x")
    # PyTorch's definition: (window sum of x**p)**(1/p), via the average times the kernel
    # volume (also at ceil-mode edges, where the average covers fewer elements).
    avg = _avg_pool(nd, x ** norm_type, kernel_size, stride, 0, ceil_mode, True, None, impl,
                    data_format)
    volume = prod(to_tuple(kernel_size, "kernel_size", nd, minimum=1))
    return (avg * volume) ** (1.0 / norm_type)


def lp_poolnd(x: jnp.ndarray, norm_type: float, kernel_size: IntOrTuple,
              stride: IntOrTuple | None = None, ceil_mode: bool = False, *, impl: str = "lax",
              data_format: str) -> jnp.ndarray:
    """N-D power-average pooling, N = 1, 2 or 3: the one core of :func:`lp_pool1d`,
    :func:`lp_pool2d` and :func:`lp_pool3d`; per window ``(sum x**p)**(1/p)``,
    ``p = norm_type``; ``data_format`` (required) says N.

    x: (N, C, *spatial) or (C, *spatial) -> the same layout, per spatial dim
    ``out = (size - k) // stride + 1`` (no padding; ``ceil_mode``: rounded up).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.lp_poolnd(jnp.array([[[3.0, 4.0]]]), 2, 2, data_format="NCL").tolist()
      [[[5.0]]]
    """
    return _lp_pool(format_ndim(data_format), x, norm_type, kernel_size, stride, ceil_mode,
                    impl, data_format)


def lp_pool1d(x: jnp.ndarray, norm_type: float, kernel_size: IntOrTuple,
              stride: IntOrTuple | None = None, ceil_mode: bool = False, *, impl: str = "lax",
              data_format: str = "NCL") -> jnp.ndarray:
    """Power-average pooling, ``torch.nn.functional.lp_pool1d`` semantics: per window
    ``(sum x**p)**(1/p)`` with ``p = norm_type`` (no padding; ``stride`` defaults to the
    kernel). x: (N, C, L) or (C, L) -> (N, C, L_out) or (C, L_out), L_out as
    :func:`avg_pool1d`. Negative window sums with a fractional ``1/p`` give NaN, as in
    PyTorch.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.lp_pool1d(jnp.array([[3.0, 4.0, 6.0, 8.0]]), 2, 2).tolist()
      [[5.0, 10.0]]
    """
    return _lp_pool(1, x, norm_type, kernel_size, stride, ceil_mode, impl, data_format)


def lp_pool2d(x: jnp.ndarray, norm_type: float, kernel_size: IntOrTuple,
              stride: IntOrTuple | None = None, ceil_mode: bool = False, *, impl: str = "lax",
              data_format: str = "NCHW") -> jnp.ndarray:
    """Power-average pooling, ``torch.nn.functional.lp_pool2d`` semantics: per window
    ``(sum x**p)**(1/p)`` with ``p = norm_type`` (no padding; ``stride`` defaults to the
    kernel). x: (N, C, H, W) or (C, H, W) -> same layout, sizes as :func:`avg_pool2d`.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.lp_pool2d(jnp.full((1, 1, 2, 2), 2.0), 1, 2).tolist()
      [[[[8.0]]]]
    """
    return _lp_pool(2, x, norm_type, kernel_size, stride, ceil_mode, impl, data_format)


def lp_pool3d(x: jnp.ndarray, norm_type: float, kernel_size: IntOrTuple,
              stride: IntOrTuple | None = None, ceil_mode: bool = False, *, impl: str = "lax",
              data_format: str = "NCDHW") -> jnp.ndarray:
    """Power-average pooling, ``torch.nn.functional.lp_pool3d`` semantics (see
    :func:`lp_pool2d`). x: (N, C, D, H, W) or (C, D, H, W) -> same layout.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.lp_pool3d(jnp.ones((1, 1, 2, 2, 2)), 2, 2).tolist()
      [[[[[2.8284270763397217]]]]]
    """
    return _lp_pool(3, x, norm_type, kernel_size, stride, ceil_mode, impl, data_format)


def global_avg_pool2d(x: jnp.ndarray, *, data_format: str = "NCHW",
                      keepdims: bool = False) -> jnp.ndarray:
    """Mean over the spatial axes: (N, C, H, W) -> (N, C), or (N, C, 1, 1) with ``keepdims``
    (NHWC: (N, H, W, C) -> (N, C) or (N, 1, 1, C)). Unbatched inputs lose the N axis.
    ``x`` must be a floating-point array (``TypeError`` otherwise).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> jconv.global_avg_pool2d(jnp.ones((2, 3, 4, 4))).shape
      (2, 3)
    """
    fmt = check_data_format(data_format)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"x must be an array (jax or numpy), got {type(x).__name__}")
    _check_float(x, "x")  # an integer mean would truncate (PyTorch refuses integers too)
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be 3-D or 4-D ({fmt} batched or unbatched), "
                         f"got shape {tuple(x.shape)}")
    axes = (-2, -1) if fmt == "NCHW" else (-3, -2)
    acc = accum_dtype(x.dtype)
    return x.astype(acc).mean(axis=axes, keepdims=keepdims).astype(x.dtype)
