"""conv2d: every impl against the NumPy oracle, against each other, and under transforms."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconv
from oracle import conv2d_ref

IMPLS = ["lax", "im2col", "loops"]
STRIDES = [1, 2, (2, 1)]
PADDINGS = [0, 1, (1, 2), ((1, 0), (2, 1)), "valid", "same"]
DILATIONS = [1, 2, (1, 2)]
KERNELS = [(3, 3), (2, 3), (1, 1), (3, 2)]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _explicit_pads(padding, kernel, dilation):
    """Padding forms resolved independently of jconv (PyTorch's documented rules)."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        tot = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in tot)
    if isinstance(padding, int):
        return ((padding, padding),) * 2
    if isinstance(padding[0], int):
        return tuple((p, p) for p in padding)
    return tuple(tuple(p) for p in padding)


def _grid():
    """Every stride x padding pair, with dilation/groups/bias/layout/kernel cycled so each
    value of each argument meets many others (a covering design, not the full product)."""
    cases = []
    for i, (stride, padding) in enumerate(itertools.product(STRIDES, PADDINGS)):
        if padding == "same" and _pair(stride) != (1, 1):
            continue
        cases.append(dict(stride=stride, padding=padding, dilation=DILATIONS[i % 3],
                          groups=[1, 2, 4][(i // 3) % 3], bias=i % 2 == 0,
                          data_format=["NCHW", "NHWC"][(i // 2) % 2], kernel=KERNELS[i % 4]))
    return cases


GRID = _grid()

# One compiled call per case is much cheaper than eager op-by-op dispatch of the tap loops.
conv_jit = jax.jit(jconv.conv2d, static_argnames=(
    "stride", "padding", "dilation", "groups", "impl", "data_format", "precision"))


def _inputs(rng, n=2, c_in=4, hw=(8, 9), c_out=4, groups=1, kernel=(3, 3), dtype=np.float32):
    x = rng.standard_normal((n, c_in, *hw)).astype(dtype)
    w = rng.standard_normal((c_out, c_in // groups, *kernel)).astype(dtype)
    b = rng.standard_normal((c_out,)).astype(dtype)
    return x, w, b


def _nhwc(a):
    return np.transpose(a, (0, 2, 3, 1))


def _run(impl, x, w, b, case, dtype=jnp.float32):
    """Call jconv.conv2d on NCHW test data in the case's layout; return NCHW float64."""
    fmt = case["data_format"]
    xin = _nhwc(x) if fmt == "NHWC" else x
    y = conv_jit(jnp.asarray(xin, dtype), jnp.asarray(w, dtype),
                 None if b is None else jnp.asarray(b, dtype), stride=case["stride"],
                 padding=case["padding"], dilation=case["dilation"],
                 groups=case["groups"], impl=impl, data_format=fmt)
    assert y.dtype == dtype
    y = np.asarray(y.astype(jnp.float32) if dtype != jnp.float64 else y, np.float64)
    return np.transpose(y, (0, 3, 1, 2)) if fmt == "NHWC" else y


def _ref(x, w, b, case):
    k = w.shape[2:]
    return conv2d_ref(x, w, b, _pair(case["stride"]),
                      _explicit_pads(case["padding"], k, _pair(case["dilation"])),
                      _pair(case["dilation"]), case["groups"])


@pytest.mark.parametrize("case", GRID, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("impl", IMPLS)
def test_matches_oracle_float64(impl, case, x64, record_error):
    rng = np.random.default_rng(0)
    x, w, b = _inputs(rng, groups=case["groups"], kernel=case["kernel"], dtype=np.float64)
    b = b if case["bias"] else None
    got = _run(impl, x, w, b, case, jnp.float64)
    want = _ref(x, w, b, case)
    assert got.shape == want.shape
    assert record_error("conv", "float64", impl, got, want) < 1e-12


# Tolerances are relative to max(1, max|ref|); inputs are O(1), sums of <= 36 terms.
DTYPE_TOL = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2, jnp.float16: 2e-3}


@pytest.mark.parametrize("dtype", list(DTYPE_TOL), ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("case", GRID[::3], ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("impl", IMPLS)
def test_low_precision_matches_oracle(impl, case, dtype, record_error):
    rng = np.random.default_rng(1)
    x, w, b = _inputs(rng, groups=case["groups"], kernel=case["kernel"])
    # Round the inputs to the test dtype first so the oracle sees exactly what jconv sees.
    x, w, b = (np.asarray(jnp.asarray(a, dtype).astype(jnp.float32)) for a in (x, w, b))
    b = b if case["bias"] else None
    got = _run(impl, x, w, b, case, dtype)
    err = record_error("conv", jnp.dtype(dtype).name, impl, got, _ref(x, w, b, case))
    assert err < DTYPE_TOL[dtype]


@pytest.mark.parametrize("case", GRID[1::2], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_impls_agree_float32(case):
    rng = np.random.default_rng(2)
    x, w, b = _inputs(rng, n=3, c_in=8, hw=(11, 10), c_out=8, groups=case["groups"],
                      kernel=case["kernel"])
    outs = [_run(impl, x, w, b if case["bias"] else None, case) for impl in IMPLS]
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_depthwise_and_rectangular(impl, x64, record_error):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 13, 7))
    w = rng.standard_normal((12, 1, 5, 3))  # depthwise with channel multiplier 2
    case = dict(stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=6, data_format="NCHW")
    got = _run(impl, x, w, None, case, jnp.float64)
    assert record_error("conv", "float64", impl, got, _ref(x, w, None, case)) < 1e-12


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
    """A real CIFAR-10 test image when ../shared has one, else a seeded random image with the
    same statistics; normalised to [-1, 1] like the seed notebook."""
    import pickle
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared/data/cifar10-subset/cifar-10-batches-py/test_batch"
    if path.exists():
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="bytes")[b"data"][0]
        img = data.reshape(3, 32, 32).astype(np.float32) / 255.0
    else:
        img = np.random.default_rng(4).random((3, 32, 32), dtype=np.float32)
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
    x = jax.random.normal(jax.random.PRNGKey(8), (1, 3, 6, 6))
    w = jax.random.normal(jax.random.PRNGKey(9), (2, 3, 3, 3))
    hi = jconv.conv2d(x, w, impl=impl, precision="highest")
    np.testing.assert_allclose(hi, jconv.conv2d(x, w, impl="lax"), rtol=1e-5, atol=1e-5)



# PyTorch warns that it copies the input for 'same' with even kernels; expected, not ours.
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("case", GRID, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_matches_pytorch(case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    x, w, b = _inputs(rng, groups=case["groups"], kernel=case["kernel"])
    b = b if case["bias"] else None
    pads = _explicit_pads(case["padding"], case["kernel"], _pair(case["dilation"]))
    if isinstance(case["padding"], str):
        tpad = case["padding"]
    elif pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]:
        tpad = (pads[0][0], pads[1][0])
    else:  # torch.conv2d has no asymmetric padding: pad explicitly first
        x = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
        tpad = 0
    want = torch.nn.functional.conv2d(
        torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
        stride=case["stride"], padding=tpad, dilation=case["dilation"], groups=case["groups"])
    x_nchw = _inputs(np.random.default_rng(10), groups=case["groups"], kernel=case["kernel"])[0]
    for impl in IMPLS:
        got = _run(impl, x_nchw, w, b, case)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
