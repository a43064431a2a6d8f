"""Max, average and global-average pooling with PyTorch semantics, three ways like conv2d."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ._registry import POOL_IMPLS, pool_reducer
from ._spec import (IntOrPair, PoolSpec, _check_float, accum_dtype, canonical_pool,
                    check_data_format, check_impl)


def _pool(x: jnp.ndarray, spec: PoolSpec, unbatched: bool, op: str, impl: str) -> jnp.ndarray:
    if unbatched:
        x = x[None]
    y = pool_reducer(impl)(x, spec, op)
    return y[0] if unbatched else y


def max_pool2d(x: jnp.ndarray, kernel_size: IntOrPair, stride: IntOrPair | None = None,
               padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False, *,
               impl: str = "lax", data_format: str = "NCHW") -> jnp.ndarray:
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

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.arange(16.0).reshape(1, 1, 4, 4)
      >>> jconv.max_pool2d(x, 2)[0, 0].tolist()
      [[5.0, 7.0], [13.0, 15.0]]
    """
    check_impl(impl, POOL_IMPLS)
    spec, unbatched = canonical_pool(x, kernel_size, stride, padding, dilation, ceil_mode,
                                     data_format)
    return _pool(x, spec, unbatched, "max", impl)


def _avg_divisor(spec: PoolSpec, count_include_pad: bool) -> np.ndarray:
    """Per-output-pixel divisor (H_out, W_out), PyTorch's rule: padding counts when asked,
    the ceil-mode overhang past the padded input never does."""
    counts = []
    for size, k, s, p, out in zip(spec.in_hw, spec.kernel, spec.stride, spec.user_padding,
                                  spec.out_hw):
        start = np.arange(out) * s - p
        if count_include_pad:
            counts.append(np.minimum(start + k, size + p) - start)
        else:
            counts.append(np.minimum(start + k, size) - np.maximum(start, 0))
    return np.outer(counts[0], counts[1])


def avg_pool2d(x: jnp.ndarray, kernel_size: IntOrPair, stride: IntOrPair | None = None,
               padding: IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               *, impl: str = "lax", data_format: str = "NCHW") -> jnp.ndarray:
    """Average pooling, ``torch.nn.functional.avg_pool2d`` semantics.

    x: (N, C, H, W) or (C, H, W) (NHWC: (N, H, W, C) or (H, W, C)) -> same layout, C kept.

      H_out = (H + 2*pad_h - kH) // stride_h + 1    (ceil_mode as in :func:`max_pool2d`)

    Zero padding; with ``count_include_pad`` the zeros count in the divisor, without it only
    real pixels do. Windows that ceil mode lets run past the padded input are averaged over
    their in-bounds part. Half precisions are summed in float32.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.arange(16.0).reshape(1, 1, 4, 4)
      >>> jconv.avg_pool2d(x, 2, impl="loops")[0, 0].tolist()
      [[2.5, 4.5], [10.5, 12.5]]
    """
    check_impl(impl, POOL_IMPLS)
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(f"count_include_pad must be a bool, got {count_include_pad!r}")
    spec, unbatched = canonical_pool(x, kernel_size, stride, padding, 1, ceil_mode, data_format)
    acc = accum_dtype(x.dtype)
    total = _pool(x.astype(acc), spec, unbatched, "sum", impl)
    div = _avg_divisor(spec, count_include_pad)
    div = div[..., None] if spec.data_format == "NHWC" else div
    return (total / jnp.asarray(div, acc)).astype(x.dtype)


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
