"""conv2d: every impl against jconv.testing's NumPy oracle (values and gradients), hand
examples, and under transforms."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconv
from jconv import testing

IMPLS = ["lax", "im2col", "loops"]

# Every impl against jconv.testing's float64 oracle, forward and reverse-mode gradients:
# lax on the 49 "default" cases in float64 (+ order-2 check_grads on one), every exact impl
# on the 10 "quick" cases (lax in float32/bfloat16/float16, im2col and loops in
# float64/float32/bfloat16), fft in float64/float32, and the
# restricted Winograd impls on the default cases they accept (3x3, stride 1, dilation 1).
# Each case and dtype is one XLA compile, so the lists stay short; the oracle itself is
# checked against PyTorch in test_testing.py.
WINOGRAD_CASES = [c for c in testing.conv2d_cases("default")
                  if c.w_shape[2:] == (3, 3) and c.stride == 1 and c.dilation == 1]
LOW = ("float32", "bfloat16", "float16")
CHECKS = [
    pytest.param("lax", "default", ("float64",), 1, id="lax-default"),
    pytest.param("lax", "quick", LOW, 0, id="lax-quick"),
    # float16 and bfloat16 take the same float32-accumulating path: one of them is enough.
    *(pytest.param(impl, "quick", ("float64", "float32", "bfloat16"), 0, id=f"{impl}-quick")
      for impl in ("im2col", "loops")),
    pytest.param("fft", "quick", ("float64", "float32"), 0, id="fft-quick"),
    *(pytest.param(impl, WINOGRAD_CASES, ("float64", "float32"), 0, id=f"{impl}-3x3")
      for impl in ("winograd_f4x4", "winograd_f2x2")),
]


def _record(report, impl, record_error):
    for dtype in report.dtypes:
        record_error("conv", dtype, impl, report.worst(dtype, "forward"))
        record_error("conv-grad", dtype, impl, report.worst(dtype, "grad"))


@pytest.mark.slow  # 10-50 s each on the shared 2-core CPU: one XLA compile per case and dtype
@pytest.mark.parametrize("impl,cases,dtypes,check_grads_cases", CHECKS)
def test_check_conv2d(impl, cases, dtypes, check_grads_cases, record_error):
    report = testing.check_conv2d(functools.partial(jconv.conv2d, impl=impl), cases=cases,
                                  dtypes=dtypes, check_grads_cases=check_grads_cases)
    _record(report, impl, record_error)
    assert report.passed, str(report)


@pytest.mark.parametrize("impl", IMPLS)
def test_check_conv2d_nhwc(impl, record_error):
    nhwc = functools.partial(jconv.conv2d, impl=impl, data_format="NHWC")
    report = testing.check_conv2d(testing.from_nhwc(nhwc), cases="quick", dtypes=("float32",))
    _record(report, f"{impl}-nhwc", record_error)
    assert report.passed, str(report)


@pytest.mark.parametrize("impl", IMPLS)
def test_depthwise_and_rectangular(impl, x64, record_error):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 13, 7))
    w = rng.standard_normal((12, 1, 5, 3))  # depthwise with channel multiplier 2
    kw = dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=6)
    got = jconv.conv2d(jnp.asarray(x), jnp.asarray(w), impl=impl, **kw)
    assert record_error("conv", "float64", impl, got, testing.reference_conv2d(x, w, **kw)) < 1e-12


@pytest.mark.parametrize("impl", IMPLS)
def test_hand_computed_5x5(impl):
    """The seeds' 5x5 image with the X-shaped kernel, worked out on paper:
    each output is the sum of the window's four corners and centre."""
    row_a, row_b = [1, 2, 3, 4, 5], [6, 7, 8, 9, 0]
    img = jnp.array([row_a, row_b, row_a, row_b, row_a], jnp.float32)
    k = jnp.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], jnp.float32)
    y = jconv.conv2d(img[None, None], k[None, None], impl=impl)
    expected = [[15, 20, 25],  # 1+3+7+1+3, 2+4+8+2+4, 3+5+9+3+5
                [30, 35, 20],  # 6+8+2+6+8, 7+9+3+7+9, 8+0+4+8+0
                [15, 20, 25]]
    np.testing.assert_array_equal(np.asarray(y[0, 0]), expected)


def _cifar_image() -> np.ndarray:
    """The first real CIFAR-10 test image of ../shared, normalised to [-1, 1] like the seed
    notebook; the test skips (it does not swap in random data) where the subset is absent."""
    import pickle
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared/data/cifar10-subset/cifar-10-batches-py/test_batch"
    if not path.exists():
        pytest.skip(f"the real CIFAR-10 subset is not at {path}")
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="bytes")[b"data"][0]
    img = data.reshape(3, 32, 32).astype(np.float32) / 255.0
    return (img - 0.5) / 0.5


def test_im2col_matches_lax_on_cifar_image():
    """Seed 001: unfold+matmul vs Conv2d(3, 1, 5) on a CIFAR image differ by 1.5e-7 in
    PyTorch; jconv's im2col must agree with lax to <= 1e-6."""
    x = jnp.asarray(_cifar_image())[None]
    w = jax.random.uniform(jax.random.PRNGKey(0), (1, 3, 5, 5), minval=-0.115, maxval=0.115)
    b = jnp.array([0.05])
    y_im2col = jconv.conv2d(x, w, b, impl="im2col")
    y_lax = jconv.conv2d(x, w, b, impl="lax")
    assert y_im2col.shape == (1, 1, 28, 28)
    assert float(jnp.abs(y_im2col - y_lax).max()) <= 1e-6


@pytest.mark.parametrize("impl", IMPLS)
def test_identity_kernel_returns_input(impl):
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 6, 7))
    w = jnp.zeros((3, 3, 3, 3)).at[jnp.arange(3), jnp.arange(3), 1, 1].set(1.0)
    np.testing.assert_array_equal(jconv.conv2d(x, w, padding=1, impl=impl), x)


@pytest.mark.parametrize("impl", IMPLS)
def test_shift_equivariance(impl):
    """Shifting the input shifts the output (away from the borders, with stride 1)."""
    x = jax.random.normal(jax.random.PRNGKey(2), (1, 2, 12, 12))
    w = jax.random.normal(jax.random.PRNGKey(3), (3, 2, 3, 3))
    y = jconv.conv2d(x, w, impl=impl)
    y_shift = jconv.conv2d(jnp.roll(x, (2, 1), axis=(2, 3)), w, impl=impl)
    np.testing.assert_allclose(y_shift[:, :, 2:, 1:], y[:, :, :-2, :-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_unbatched_input(impl, data_format):
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 3, 7, 8))
    if data_format == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    w = jax.random.normal(jax.random.PRNGKey(5), (4, 3, 3, 3))
    batched = jconv.conv2d(x, w, padding=1, stride=2, impl=impl, data_format=data_format)
    single = jconv.conv2d(x[1], w, padding=1, stride=2, impl=impl, data_format=data_format)
    assert single.shape == batched.shape[1:]
    np.testing.assert_allclose(single, batched[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_jit_and_vmap(impl):
    x = jax.random.normal(jax.random.PRNGKey(6), (3, 2, 3, 9, 9))  # a stack of batches
    w = jax.random.normal(jax.random.PRNGKey(7), (4, 3, 3, 3))
    f = jax.jit(lambda x, w: jconv.conv2d(x, w, stride=2, padding="valid", impl=impl))
    stacked = jax.vmap(f, in_axes=(0, None))(x, w)
    for i in range(3):
        np.testing.assert_allclose(stacked[i], f(x[i], w), rtol=1e-5, atol=1e-5)
    per_image = jax.vmap(lambda xi: jconv.conv2d(xi, w, stride=2, impl=impl))(x[0])
    np.testing.assert_allclose(per_image, stacked[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_precision_argument_reaches_the_contraction(impl):
    """On CPU both precisions compute the same numbers, so the values alone cannot show the
    argument arrived: the lowered contractions must carry it, and only when it is given."""
    x = jax.random.normal(jax.random.PRNGKey(8), (1, 3, 6, 6))
    w = jax.random.normal(jax.random.PRNGKey(9), (2, 3, 3, 3))

    def lowered(precision):
        return jax.jit(lambda x, w: jconv.conv2d(x, w, impl=impl, precision=precision)) \
            .lower(x, w).as_text()

    highest, default = lowered("highest"), lowered(None)
    assert "HIGHEST" in highest
    assert "HIGHEST" not in default
    hi = jconv.conv2d(x, w, impl=impl, precision="highest")
    np.testing.assert_allclose(hi, jconv.conv2d(x, w, impl="lax"), rtol=1e-5, atol=1e-5)


