"""Max, average and global-average pooling with PyTorch semantics, three ways like conv2d."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._spec import IMPLS, IntOrPair, PoolSpec, _check_float, accum_dtype, canonical_pool, \
    check_data_format, check_impl
from ._windows import from_nhwc, pad_hw, tap_windows, to_nhwc


def _reduce_lax(x: jnp.ndarray, spec: PoolSpec, op: str) -> jnp.ndarray:
    init, fn = (-jnp.inf, lax.max) if op == "max" else (0.0, lax.add)
    spatial = (2, 3) if spec.data_format == "NCHW" else (1, 2)
    dims, strides, dil, pads = [1] * 4, [1] * 4, [1] * 4, [(0, 0)] * 4
    for a, k, s, d, p in zip(spatial, spec.kernel, spec.stride, spec.dilation, spec.padding):
        dims[a], strides[a], dil[a], pads[a] = k, s, d, p
    # reduce_window pads with the init value: -inf for max, 0 for sum, exactly as PyTorch.
    # The init must be a concrete NumPy scalar: under jit a jnp constant is a tracer, and
    # lax then falls back to a generic reduce_window that has no derivative.
    return lax.reduce_window(x, np.array(init, x.dtype), fn, dims, strides, pads,
                             window_dilation=dil)


def _dilated_argmax(x: jnp.ndarray, spec: PoolSpec) -> jnp.ndarray:
    """Flat index into the padded (H, W) plane of each window's maximum (first one on ties),
    shape (N, H_out, W_out, C); computed with a variadic ``lax.reduce_window``."""
    xp = pad_hw(to_nhwc(x, spec.data_format), spec.padding, -jnp.inf)
    n, hp, wp, c = xp.shape
    iota = jnp.broadcast_to(jnp.arange(hp * wp, dtype=jnp.int32).reshape(1, hp, wp, 1), xp.shape)

    def pick(a, b):
        take_b = (b[0] > a[0]) | ((b[0] == a[0]) & (b[1] < a[1]))
        return lax.select(take_b, b[0], a[0]), lax.select(take_b, b[1], a[1])

    dims = (1, *spec.kernel, 1)
    strides = (1, *spec.stride, 1)
    _, idx = lax.reduce_window((xp, iota), (jnp.asarray(-jnp.inf, x.dtype), jnp.int32(hp * wp)),
                               pick, dims, strides, "VALID", window_dilation=(1, *spec.dilation, 1))
    return idx


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _dilated_max_lax(x: jnp.ndarray, spec: PoolSpec) -> jnp.ndarray:
    return _reduce_lax(x, spec, "max")


@_dilated_max_lax.defjvp
def _dilated_max_lax_jvp(spec: PoolSpec, primals, tangents):
    # XLA has no transpose for max windows with window dilation (select_and_gather), so
    # jax.grad fails on them; route the tangent through a gather at the argmax instead,
    # which JAX can transpose (scatter-add) and differentiate again.
    (x,), (t,) = primals, tangents
    idx = _dilated_argmax(lax.stop_gradient(x), spec)
    tp = pad_hw(to_nhwc(t, spec.data_format), spec.padding)
    n, hp, wp, c = tp.shape
    _, ho, wo, _ = idx.shape
    t_out = jnp.take_along_axis(tp.reshape(n, hp * wp, c), idx.reshape(n, ho * wo, c), axis=1)
    return _dilated_max_lax(x, spec), from_nhwc(t_out.reshape(n, ho, wo, c), spec.data_format)


def _taps(x: jnp.ndarray, spec: PoolSpec, op: str):
    fill = -jnp.inf if op == "max" else 0.0
    xp = pad_hw(to_nhwc(x, spec.data_format), spec.padding, fill)
    return tap_windows(xp, spec.kernel, spec.stride, spec.dilation, spec.out_hw)


def _reduce_im2col(x: jnp.ndarray, spec: PoolSpec, op: str) -> jnp.ndarray:
    patches = jnp.stack(list(_taps(x, spec, op)), axis=3)
    out = patches.max(axis=3) if op == "max" else patches.sum(axis=3)
    return from_nhwc(out, spec.data_format)


def _reduce_loops(x: jnp.ndarray, spec: PoolSpec, op: str) -> jnp.ndarray:
    combine = jnp.maximum if op == "max" else jnp.add
    out = functools.reduce(combine, _taps(x, spec, op))
    return from_nhwc(out, spec.data_format)


def _reduce_lax_differentiable(x: jnp.ndarray, spec: PoolSpec, op: str) -> jnp.ndarray:
    if op == "max" and spec.dilation != (1, 1):
        return _dilated_max_lax(x, spec)
    return _reduce_lax(x, spec, op)


_REDUCERS = {"lax": _reduce_lax_differentiable, "im2col": _reduce_im2col,
             "loops": _reduce_loops}


def _pool(x: jnp.ndarray, spec: PoolSpec, unbatched: bool, op: str, impl: str) -> jnp.ndarray:
    if unbatched:
        x = x[None]
    y = _REDUCERS[impl](x, spec, op)
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
    check_impl(impl, IMPLS)
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
    check_impl(impl, IMPLS)
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
