"""Pooling reductions, one per implementation: ``(x, spec, op) -> y`` with ``op`` ``"max"``
or ``"sum"``, batched input in ``spec.data_format``. Registered in :mod:`jconv._registry`
next to the convolution of the same name."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._spec import PoolSpec
from ._windows import from_nhwc, pad_hw, tap_windows, to_nhwc


def _reduce_window(x: jnp.ndarray, spec: PoolSpec, op: str) -> jnp.ndarray:
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
    return _reduce_window(x, spec, "max")


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


def reduce_im2col(x: jnp.ndarray, spec: PoolSpec, op: str) -> jnp.ndarray:
    patches = jnp.stack(list(_taps(x, spec, op)), axis=3)
    out = patches.max(axis=3) if op == "max" else patches.sum(axis=3)
    return from_nhwc(out, spec.data_format)


def reduce_loops(x: jnp.ndarray, spec: PoolSpec, op: str) -> jnp.ndarray:
    combine = jnp.maximum if op == "max" else jnp.add
    out = functools.reduce(combine, _taps(x, spec, op))
    return from_nhwc(out, spec.data_format)


def reduce_lax(x: jnp.ndarray, spec: PoolSpec, op: str) -> jnp.ndarray:
    if op == "max" and spec.dilation != (1, 1):
        return _dilated_max_lax(x, spec)
    return _reduce_window(x, spec, op)
