"""Pooling reductions over 1, 2 or 3 spatial dims, one per implementation:
``(x, spec, op) -> y`` with ``op`` ``"max"``, ``"sum"`` or ``"argmax"``, batched input in
``spec.data_format``. ``"argmax"`` gives PyTorch's ``return_indices``: per channel, the flat
index into the (unpadded) input's spatial dims of each window's maximum, int32, first one in
row-major order on ties, NaN counting as the largest value. Registered in
:mod:`jconv._registry` next to the convolution of the same name."""

from __future__ import annotations

import functools
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._pool_spec import PoolSpec
from ._spec import prod
from ._windows import from_nhwc, pad_hw, tap_windows, to_nhwc


def _spatial_axes(spec: PoolSpec) -> range:
    first = 2 if spec.data_format[1] == "C" else 1
    return range(first, first + spec.ndim)


def _reduce_window(x: jnp.ndarray, spec: PoolSpec, op: str) -> jnp.ndarray:
    init, fn = (-jnp.inf, lax.max) if op == "max" else (0.0, lax.add)
    dims, strides, dil, pads = [1] * x.ndim, [1] * x.ndim, [1] * x.ndim, [(0, 0)] * x.ndim
    for a, k, s, d, p in zip(_spatial_axes(spec), spec.kernel, spec.stride, spec.dilation,
                             spec.padding):
        dims[a], strides[a], dil[a], pads[a] = k, s, d, p
    # reduce_window pads with the init value: -inf for max, 0 for sum, exactly as PyTorch.
    # The init must be a concrete NumPy scalar: under jit a jnp constant is a tracer, and
    # lax then falls back to a generic reduce_window that has no derivative.
    return lax.reduce_window(x, np.array(init, x.dtype), fn, dims, strides, pads,
                             window_dilation=dil)


def _flat_index(spec: PoolSpec) -> tuple[np.ndarray, int]:
    """(1, *padded spatial, 1) int32 flat index of every input position, and the sentinel
    the padding gets (larger than any real index, so padding loses every tie)."""
    sentinel = prod(spec.in_size)
    iota = np.arange(sentinel, dtype=np.int32).reshape(spec.in_size)
    iota = np.pad(iota, spec.padding, constant_values=sentinel)
    return iota[None, ..., None], sentinel


def _pick(a: tuple[jnp.ndarray, jnp.ndarray],
          b: tuple[jnp.ndarray, jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Combine two (value, index) candidates: the larger value (NaN largest), the smaller
    index on ties. Commutative and associative, as ``lax.reduce_window`` requires."""
    (va, ia), (vb, ib) = a, b
    nan_a, nan_b = jnp.isnan(va), jnp.isnan(vb)
    take_b = jnp.where(nan_a | nan_b, nan_b & (~nan_a | (ib < ia)),
                       (vb > va) | ((vb == va) & (ib < ia)))
    return lax.select(take_b, vb, va), lax.select(take_b, ib, ia)


def _padded_pair(x: jnp.ndarray, spec: PoolSpec):
    xp = pad_hw(to_nhwc(x, spec.data_format), spec.padding, -jnp.inf)
    iota, sentinel = _flat_index(spec)
    return xp, jnp.broadcast_to(jnp.asarray(iota), xp.shape), sentinel


def _argmax_lax(x: jnp.ndarray, spec: PoolSpec) -> jnp.ndarray:
    xp, iota, sentinel = _padded_pair(x, spec)
    window = (1, *spec.kernel, 1)
    _, idx = lax.reduce_window((xp, iota), (np.array(-np.inf, x.dtype), np.int32(sentinel)),
                               _pick, window, (1, *spec.stride, 1), "VALID",
                               window_dilation=(1, *spec.dilation, 1))
    return from_nhwc(idx, spec.data_format)


def _tap_pairs(x: jnp.ndarray, spec: PoolSpec) -> Iterator[tuple[jnp.ndarray, jnp.ndarray]]:
    xp, iota, _ = _padded_pair(x, spec)
    windows = functools.partial(tap_windows, kernel=spec.kernel, stride=spec.stride,
                                dilation=spec.dilation, out_size=spec.out_size)
    return zip(windows(xp), windows(iota))


def _argmax_im2col(x: jnp.ndarray, spec: PoolSpec) -> jnp.ndarray:
    values, index = (jnp.stack(list(t), axis=-1) for t in zip(*_tap_pairs(x, spec)))
    best = values.max(axis=-1, keepdims=True)  # NaN if any is NaN
    hit = jnp.where(jnp.isnan(best), jnp.isnan(values), values == best)
    idx = jnp.where(hit, index, np.iinfo(np.int32).max).min(axis=-1)
    return from_nhwc(idx, spec.data_format)


def _argmax_loops(x: jnp.ndarray, spec: PoolSpec) -> jnp.ndarray:
    _, idx = functools.reduce(_pick, _tap_pairs(x, spec))
    return from_nhwc(idx, spec.data_format)


def gather_spatial(x: jnp.ndarray, idx: jnp.ndarray, data_format: str) -> jnp.ndarray:
    """``x`` at per-channel flat spatial indices ``idx`` (both batched, in ``data_format``):
    differentiable in ``x``, the gradient going to exactly the indexed element."""
    xl, il = to_nhwc(x, data_format), to_nhwc(idx, data_format)
    n, c = xl.shape[0], xl.shape[-1]
    out = jnp.take_along_axis(xl.reshape(n, -1, c), il.reshape(n, -1, c), axis=1)
    return from_nhwc(out.reshape(il.shape), data_format)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _dilated_max_lax(x: jnp.ndarray, spec: PoolSpec) -> jnp.ndarray:
    return _reduce_window(x, spec, "max")


@_dilated_max_lax.defjvp
def _dilated_max_lax_jvp(spec: PoolSpec, primals, tangents):
    # XLA has no transpose for max windows with window dilation (select_and_gather), so
    # jax.grad fails on them; route the tangent through a gather at the argmax instead,
    # which JAX can transpose (scatter-add) and differentiate again.
    (x,), (t,) = primals, tangents
    idx = _argmax_lax(lax.stop_gradient(x), spec)
    return _dilated_max_lax(x, spec), gather_spatial(t, idx, spec.data_format)


def _taps(x: jnp.ndarray, spec: PoolSpec, op: str) -> Iterator[jnp.ndarray]:
    fill = -jnp.inf if op == "max" else 0.0
    xp = pad_hw(to_nhwc(x, spec.data_format), spec.padding, fill)
    return tap_windows(xp, spec.kernel, spec.stride, spec.dilation, spec.out_size)


def reduce_im2col(x: jnp.ndarray, spec: PoolSpec, op: str) -> jnp.ndarray:
    if op == "argmax":
        return _argmax_im2col(x, spec)
    patches = jnp.stack(list(_taps(x, spec, op)), axis=-1)
    out = patches.max(axis=-1) if op == "max" else patches.sum(axis=-1)
    return from_nhwc(out, spec.data_format)


def reduce_loops(x: jnp.ndarray, spec: PoolSpec, op: str) -> jnp.ndarray:
    if op == "argmax":
        return _argmax_loops(x, spec)
    combine = jnp.maximum if op == "max" else jnp.add
    out = functools.reduce(combine, _taps(x, spec, op))
    return from_nhwc(out, spec.data_format)


def reduce_lax(x: jnp.ndarray, spec: PoolSpec, op: str) -> jnp.ndarray:
    if op == "argmax":
        return _argmax_lax(x, spec)
    if op == "max" and any(d != 1 for d in spec.dilation):
        return _dilated_max_lax(x, spec)
    return _reduce_window(x, spec, op)
