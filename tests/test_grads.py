"""Gradient checks: jax.test_util.check_grads (order 2, fwd and rev) in float64 for every
impl, for conv and both pools, and for ``onednn`` (which has no float64) in float32.
Reverse-mode gradients of every impl against the float64 oracle, in every dtype, are
checked by jconv.testing in test_conv.py and test_pool.py."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jconv

IMPLS = ["lax", "im2col", "loops"]

CONV_CASES = [
    dict(stride=1, padding=1, dilation=1, groups=1, data_format="NCHW"),
    dict(stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2, data_format="NCHW"),
    dict(stride=2, padding="valid", dilation=2, groups=4, data_format="NHWC"),
    dict(stride=1, padding="same", dilation=1, groups=1, data_format="NHWC"),
]


def _conv_args(case, dtype, key=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(key), 3)
    shape = (2, 4, 7, 6) if case["data_format"] == "NCHW" else (2, 7, 6, 4)
    x = jax.random.normal(k1, shape, dtype)
    w = jax.random.normal(k2, (4, 4 // case["groups"], 3, 2), dtype)
    b = jax.random.normal(k3, (4,), dtype)
    return x, w, b


# The first case is the simple one the others generalise; skip it here to keep the suite fast.
@pytest.mark.parametrize("case", CONV_CASES[1:], ids=lambda c: "-".join(map(str, c.values())))
@pytest.mark.parametrize("impl", IMPLS)
def test_conv_check_grads_order2(impl, case, x64):
    # Eager, not jitted: check_grads builds many nested transforms, each of which would
    # compile afresh under jit, while eager primitives are cached across cases.
    x, w, b = _conv_args(case, jnp.float64)
    f = functools.partial(jconv.conv2d, impl=impl, **case)
    check_grads(f, (x, w, b), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("case", CONV_CASES[1:], ids=lambda c: "-".join(map(str, c.values())))
def test_onednn_conv_check_grads_order2_float32(case):
    # oneDNN has no float64: float32 with a step large enough that rounding stays small against
    # the difference, small enough for the cubic terms of the second order.
    x, w, b = _conv_args(case, jnp.float32)
    f = functools.partial(jconv.conv2d, impl="onednn", **case)
    check_grads(f, (x, w, b), order=2, modes=("fwd", "rev"), eps=0.03, atol=1e-2, rtol=1e-2)


POOL_CASES = [
    ("max", dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)),
    ("max", dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), ceil_mode=True)),
    ("avg", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("avg", dict(kernel_size=(2, 3), stride=1, padding=(1, 1), ceil_mode=False, count_include_pad=True)),
]


@pytest.mark.parametrize("kind, kwargs", POOL_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("impl", IMPLS)
def test_pool_check_grads_order2(impl, kind, kwargs, x64):
    # A permutation of well-separated values: no ties, so max-pool is smooth near the point
    # (finite differences with eps 1e-3 never change which element is the max).
    x = jax.random.permutation(jax.random.PRNGKey(1), jnp.arange(2 * 3 * 7 * 8, dtype=jnp.float64))
    x = x.reshape(2, 3, 7, 8) / 10.0
    fn = jconv.max_pool2d if kind == "max" else jconv.avg_pool2d
    check_grads(functools.partial(fn, impl=impl, **kwargs), (x,), order=2, modes=("fwd", "rev"))


def test_global_avg_pool_check_grads(x64):
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 4, 5), jnp.float64)
    check_grads(jconv.global_avg_pool2d, (x,), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("impl", IMPLS)
def test_half_precision_grads_keep_dtype(impl):
    x, w, b = (a.astype(jnp.bfloat16) for a in _conv_args(CONV_CASES[1], jnp.float32))
    loss = lambda x, w, b: jconv.conv2d(x, w, b, impl=impl, **CONV_CASES[1]).astype(jnp.float32).sum()
    grads = jax.grad(loss, argnums=(0, 1, 2))(x, w, b)
    assert all(g.dtype == jnp.bfloat16 for g in grads)
    ref = jax.grad(loss, argnums=(0, 1, 2))(*(a.astype(jnp.float32) for a in (x, w, b)))
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g.astype(jnp.float32), r, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("impl", IMPLS)
def test_pool_grads_under_jit(impl):
    """Regression: under jit a jnp init value is a tracer and lax.reduce_window silently
    became a generic, non-differentiable reduction."""
    x = jax.random.normal(jax.random.PRNGKey(7), (2, 3, 8, 8))

    def loss(x):
        return (jconv.max_pool2d(x, 3, 2, 1, impl=impl).sum()
                + jconv.avg_pool2d(x, 2, impl=impl).sum())

    np.testing.assert_allclose(jax.jit(jax.grad(loss))(x), jax.grad(loss)(x), rtol=1e-6)
