"""Pooling: every impl against jconv.testing's NumPy oracle (values and gradients),
PyTorch, and the documented rules."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconv
from jconv import testing

IMPLS = ["lax", "im2col", "loops"]

# The hand-picked forms of jconv.testing (overlapping, strided, padded, dilated, rectangular,
# ceil-mode windows hanging past the padded input, count_include_pad both ways, unbatched).
MAX_CASES = testing.max_pool2d_cases("quick")
AVG_CASES = testing.avg_pool2d_cases("quick")


def _x(rng, shape=(2, 3, 7, 9)):
    return rng.standard_normal(shape)


POOL_CHECKS = [(testing.check_max_pool2d, jconv.max_pool2d),
               (testing.check_avg_pool2d, jconv.avg_pool2d)]


@pytest.mark.slow  # up to 11 s each on the shared 2-core CPU
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("check,pool", POOL_CHECKS, ids=["max", "avg"])
@pytest.mark.parametrize("impl", IMPLS)
def test_pool_matches_oracle(impl, check, pool, fmt, record_error):
    """Values and gradients in float64/float32/bfloat16; max pooling is exact (0 error)."""
    fn = functools.partial(pool, impl=impl, data_format=fmt)
    fn = testing.from_nhwc(fn) if fmt == "NHWC" else fn
    report = check(fn, cases="quick", check_grads_cases=0,
                   dtypes=("float64", "float32", "bfloat16") if fmt == "NCHW" else ("float64",))
    kind = pool.__name__.replace("_pool2d", "pool")
    for dtype in report.dtypes:
        record_error(kind, dtype, impl, report.worst(dtype, "forward"))
    assert report.passed, str(report)
    if pool is jconv.max_pool2d:
        assert all(report.worst(d, "forward") == 0.0 for d in report.dtypes), str(report)
    else:
        assert report.worst("float64", "forward") < 1e-14, str(report)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("impl", IMPLS)
def test_pool_low_precision(impl, dtype, record_error):
    x = jnp.asarray(_x(np.random.default_rng(2)), dtype)
    ref_in = np.asarray(x.astype(jnp.float32), np.float64)
    mx = jconv.max_pool2d(x, 3, 2, 1, impl=impl)
    av = jconv.avg_pool2d(x, 3, 2, 1, impl=impl)
    assert mx.dtype == dtype and av.dtype == dtype
    name = jnp.dtype(dtype).name
    assert record_error("maxpool", name, impl, mx.astype(jnp.float32), testing.reference_max_pool2d(ref_in, 3, 2, 1)) == 0.0
    tol = {"float32": 1e-6, "bfloat16": 1e-2, "float16": 1e-3}[name]
    assert record_error("avgpool", name, impl, av.astype(jnp.float32), testing.reference_avg_pool2d(ref_in, 3, 2, 1)) < tol


def test_max_pool_hand_example():
    x = jnp.array([[1, -2, 3, 0], [4, 5, -6, 7], [-1, 0, 2, 2], [9, -8, 1, 3]], jnp.float32)
    for impl in IMPLS:
        np.testing.assert_array_equal(jconv.max_pool2d(x[None], 2, impl=impl)[0],
                                      [[5, 7], [9, 3]])


def test_max_pool_padding_is_minus_inf():
    """The seeds' 'padding value confusion' bug: zero padding would win over negatives."""
    x = -jnp.ones((1, 1, 4, 4))
    for impl in IMPLS:
        assert float(jconv.max_pool2d(x, 2, 2, padding=1, impl=impl).max()) == -1.0


def test_avg_pool_count_include_pad_hand_example():
    x = jnp.ones((1, 1, 2, 2))
    for impl in IMPLS:
        incl = jconv.avg_pool2d(x, 2, 1, padding=1, impl=impl)[0, 0]
        excl = jconv.avg_pool2d(x, 2, 1, padding=1, count_include_pad=False, impl=impl)[0, 0]
        # Corner windows see 1 real pixel of 4; edges 2 of 4; the centre 4 of 4.
        np.testing.assert_allclose(incl, [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
        np.testing.assert_allclose(excl, np.ones((3, 3)))


def test_global_avg_pool():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 4))
    np.testing.assert_allclose(jconv.global_avg_pool2d(x), x.mean(axis=(2, 3)), rtol=1e-6)
    assert jconv.global_avg_pool2d(x, keepdims=True).shape == (2, 3, 1, 1)
    nhwc = x.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(jconv.global_avg_pool2d(nhwc, data_format="NHWC"),
                               x.mean(axis=(2, 3)), rtol=1e-6)
    assert jconv.global_avg_pool2d(x[0]).shape == (3,)
    full = jconv.avg_pool2d(x, (5, 4))[:, :, 0, 0]
    np.testing.assert_allclose(jconv.global_avg_pool2d(x), full, rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_unbatched_and_jit(impl):
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 8, 8))
    f = jax.jit(lambda x: jconv.max_pool2d(x, 3, 2, 1, impl=impl) + jconv.avg_pool2d(x, 2, impl=impl)[..., :4, :4])
    np.testing.assert_allclose(f(x[1]), f(x)[1], rtol=1e-6)


@pytest.mark.parametrize("case", MAX_CASES, ids=lambda c: c.name)
def test_max_pool_matches_pytorch(case):
    torch = pytest.importorskip("torch")
    x = case.inputs("float32")[0].astype(np.float32)
    want = torch.nn.functional.max_pool2d(torch.from_numpy(x), **case.kwargs)
    for impl in IMPLS:
        got = jconv.max_pool2d(jnp.asarray(x), **case.kwargs, impl=impl)
        np.testing.assert_array_equal(got, want.numpy())


@pytest.mark.parametrize("case", AVG_CASES, ids=lambda c: c.name)
def test_avg_pool_matches_pytorch(case):
    torch = pytest.importorskip("torch")
    x = case.inputs("float32")[0].astype(np.float32)
    want = torch.nn.functional.avg_pool2d(torch.from_numpy(x), **case.kwargs)
    for impl in IMPLS:
        got = jconv.avg_pool2d(jnp.asarray(x), **case.kwargs, impl=impl)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-6)
