"""Pooling: every impl against the NumPy oracle, PyTorch, and the documented rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconv
from oracle import avg_pool2d_ref, max_pool2d_ref

IMPLS = ["lax", "im2col", "loops"]

# (kernel, stride, padding, dilation, ceil_mode): overlapping, strided, padded, dilated,
# rectangular, and ceil-mode cases where the last window hangs past the padded input.
MAX_CASES = [
    ((2, 2), None, (0, 0), (1, 1), False),
    ((3, 3), (2, 2), (1, 1), (1, 1), False),
    ((3, 2), (2, 1), (1, 0), (1, 1), True),
    ((3, 3), (2, 2), (1, 1), (2, 1), True),
    ((2, 3), (3, 2), (0, 1), (1, 2), True),
    ((3, 3), (1, 1), (0, 0), (1, 1), False),
]
AVG_CASES = [
    ((2, 2), None, (0, 0), False, True),
    ((3, 3), (2, 2), (1, 1), False, True),
    ((3, 3), (2, 2), (1, 1), False, False),
    ((3, 2), (2, 1), (1, 1), True, True),
    ((3, 2), (2, 1), (1, 1), True, False),
    ((2, 3), (3, 2), (1, 0), True, True),
]


def _x(rng, shape=(2, 3, 7, 9)):
    return rng.standard_normal(shape)


def _to(x, fmt):
    return np.transpose(x, (0, 2, 3, 1)) if fmt == "NHWC" else x


def _from(y, fmt):
    return np.transpose(np.asarray(y), (0, 3, 1, 2)) if fmt == "NHWC" else np.asarray(y)


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", MAX_CASES, ids=str)
@pytest.mark.parametrize("impl", IMPLS)
def test_max_pool_matches_oracle(impl, case, fmt, x64, record_error):
    k, s, p, d, ceil = case
    x = _x(np.random.default_rng(0))
    got = _from(jconv.max_pool2d(jnp.asarray(_to(x, fmt)), k, s, p, d, ceil, impl=impl,
                                 data_format=fmt), fmt)
    want = max_pool2d_ref(x, k, s or k, p, d, ceil)
    assert got.shape == want.shape
    assert record_error("maxpool", "float64", impl, got, want) == 0.0


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", AVG_CASES, ids=str)
@pytest.mark.parametrize("impl", IMPLS)
def test_avg_pool_matches_oracle(impl, case, fmt, x64, record_error):
    k, s, p, ceil, incl = case
    x = _x(np.random.default_rng(1))
    got = _from(jconv.avg_pool2d(jnp.asarray(_to(x, fmt)), k, s, p, ceil, incl, impl=impl,
                                 data_format=fmt), fmt)
    want = avg_pool2d_ref(x, k, s or k, p, ceil, incl)
    assert got.shape == want.shape
    assert record_error("avgpool", "float64", impl, got, want) < 1e-14


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("impl", IMPLS)
def test_pool_low_precision(impl, dtype, record_error):
    x = jnp.asarray(_x(np.random.default_rng(2)), dtype)
    ref_in = np.asarray(x.astype(jnp.float32), np.float64)
    mx = jconv.max_pool2d(x, 3, 2, 1, impl=impl)
    av = jconv.avg_pool2d(x, 3, 2, 1, impl=impl)
    assert mx.dtype == dtype and av.dtype == dtype
    name = jnp.dtype(dtype).name
    assert record_error("maxpool", name, impl, mx.astype(jnp.float32), max_pool2d_ref(ref_in, (3, 3), (2, 2), (1, 1), (1, 1), False)) == 0.0
    tol = {"float32": 1e-6, "bfloat16": 1e-2, "float16": 1e-3}[name]
    assert record_error("avgpool", name, impl, av.astype(jnp.float32), avg_pool2d_ref(ref_in, (3, 3), (2, 2), (1, 1), False, True)) < tol


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


@pytest.mark.parametrize("case", MAX_CASES, ids=str)
def test_max_pool_matches_pytorch(case):
    torch = pytest.importorskip("torch")
    k, s, p, d, ceil = case
    x = _x(np.random.default_rng(3)).astype(np.float32)
    want = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil_mode=ceil)
    for impl in IMPLS:
        np.testing.assert_array_equal(jconv.max_pool2d(jnp.asarray(x), k, s, p, d, ceil, impl=impl), want.numpy())


@pytest.mark.parametrize("case", AVG_CASES, ids=str)
def test_avg_pool_matches_pytorch(case):
    torch = pytest.importorskip("torch")
    k, s, p, ceil, incl = case
    x = _x(np.random.default_rng(4)).astype(np.float32)
    want = torch.nn.functional.avg_pool2d(torch.from_numpy(x), k, s, p, ceil, incl)
    for impl in IMPLS:
        np.testing.assert_allclose(jconv.avg_pool2d(jnp.asarray(x), k, s, p, ceil, incl, impl=impl), want.numpy(), rtol=1e-6, atol=1e-6)
