"""conv_transpose2d / nn.ConvTranspose2d: jconv.testing's scatter-add oracle (values and
gradients), PyTorch (optional), every impl, layouts, gradients and error messages."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

import jconv
from jconv import testing
from jconv.transpose import conv_transpose2d
from helpers import normal


# (kernel, stride, padding, output_padding, groups, dilation), all as (h, w) pairs or ints.
CASES = [
    (3, 1, 1, 0, 1, 1),
    (3, 2, 1, 1, 1, 1),
    ((3, 2), (2, 3), (0, 1), (1, 2), 2, (1, 2)),
    (3, 2, 0, 2, 1, 3),        # output_padding >= stride, allowed since < dilation
    (2, 1, 0, 0, 4, 1),        # depthwise-style groups
    (4, 2, 1, 0, 2, 1),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else v


# lax, im2col and loops run jconv.testing's case lists below (values and gradients); the
# inexact impls run the cases that exercise them here (Winograd: the 3x3 stride-1 case it
# supports; its errors elsewhere are tested in test_winograd.py).
IMPL_CASES = ([("fft", CASES[i]) for i in (1, 2, 3)]
              + [("winograd_f4x4", CASES[0]), ("winograd_f2x2", CASES[0])])


@pytest.mark.parametrize("impl,case", IMPL_CASES, ids=[f"{i}-{c}" for i, c in IMPL_CASES])
def test_matches_scatter_oracle(impl, case):
    k, s, p, op, g, d = case
    kh, kw = _pair(k)
    rng = np.random.default_rng(kh * 10 + g)
    x = rng.normal(size=(2, 4, 5, 4)).astype(np.float32)
    w = rng.normal(size=(4, 6 // 2 if g == 2 else 2, kh, kw)).astype(np.float32)
    b = rng.normal(size=(w.shape[1] * g,)).astype(np.float32)
    got = conv_transpose2d(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), stride=s, padding=p,
                           output_padding=op, groups=g, dilation=d, impl=impl)
    want = testing.reference_conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op,
                                              groups=g, dilation=d)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # 10-26 s each on the shared 2-core CPU
@pytest.mark.parametrize("impl,cases", [("lax", "default"), ("im2col", "quick"),
                                        ("loops", "quick")])
def test_check_conv_transpose2d(impl, cases, record_error):
    """Values and x/w/b gradients against the oracle (bfloat16 on the quick lists)."""
    dtypes = ("float64", "float32") if cases == "default" else ("float64", "float32", "bfloat16")
    report = testing.check_conv_transpose2d(functools.partial(conv_transpose2d, impl=impl),
                                            cases=cases, check_grads_cases=0, dtypes=dtypes)
    for dtype in report.dtypes:
        record_error("convT", dtype, impl, report.worst(dtype, "forward"))
    assert report.passed, str(report)


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_matches_torch(case):
    torch = pytest.importorskip("torch")
    k, s, p, op, g, d = case
    kh, kw = _pair(k)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 6, 5)).astype(np.float32)
    w = rng.normal(size=(4, 3, kh, kw)).astype(np.float32)
    b = rng.normal(size=(3 * g,)).astype(np.float32)
    want = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=s, padding=p,
        output_padding=op, groups=g, dilation=d).numpy()
    got = conv_transpose2d(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), stride=s, padding=p,
                           output_padding=op, groups=g, dilation=d)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_nhwc_and_unbatched_match_nchw():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 4, 5, 6)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4, 3, 3, 3)), jnp.float32)
    kw = dict(stride=2, padding=1, output_padding=1)
    want = conv_transpose2d(x, w, **kw)
    got = conv_transpose2d(jnp.transpose(x, (0, 2, 3, 1)), w, data_format="NHWC", **kw)
    np.testing.assert_allclose(jnp.transpose(got, (0, 3, 1, 2)), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conv_transpose2d(x[1], w, **kw), want[1], rtol=1e-5, atol=1e-5)


def test_is_the_adjoint_of_conv2d():
    """<conv2d(z), x> == <z, conv_transpose2d(x)> for the same w: the defining property."""
    z, w, x = normal(0, (2, 6, 9, 8), (4, 3, 3, 3), (2, 4, 5, 4))
    lhs = jnp.vdot(jconv.conv2d(z, w, stride=2, padding=1, groups=2), x)
    rhs = jnp.vdot(z, conv_transpose2d(x, w, stride=2, padding=1, output_padding=(0, 1),
                                       groups=2))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5)


def test_gradients_float64():
    with jax.enable_x64(True):
        x, w, b = normal(1, (1, 2, 3, 4), (2, 2, 3, 3), (2,), dtype=jnp.float64)
        f = lambda x, w, b: conv_transpose2d(x, w, b, stride=2, padding=1)  # noqa: E731
        check_grads(f, (x, w, b), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("kwargs,match", [
    ({"stride": 2, "output_padding": 2}, r"output_padding must be smaller than either stride "
                                         r"or dilation.*output_padding=2, stride=2"),
    ({"output_padding": (0, 1)}, r"output_padding must be smaller"),
    ({"groups": 3}, r"groups=3 must divide C_in=4"),
    ({"groups": 0}, r"groups must be a positive int, got 0"),
    ({"padding": -1}, r"padding must be >= 0"),
    ({"padding": 5}, r"output size \(-5, -5\) is not positive"),
    ({"impl": "cuda"}, r"impl must be one of .*got 'cuda'"),
    ({"data_format": "CHWN"}, r"data_format must be one of"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv_transpose2d(jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3, 3)), **kwargs)


@pytest.mark.parametrize("x,w,b,exc,match", [
    (jnp.ones((1, 4, 3, 3)), jnp.ones((3, 2, 3, 3)), None, ValueError,
     r"channel mismatch: x has C_in=4 .* expected \(C_in=4, C_out/groups, kH, kW\)"),
    (jnp.ones((4, 3)), jnp.ones((4, 2, 3, 3)), None, ValueError, r"x must be 3-D or 4-D"),
    (jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3)), None, ValueError, r"w must be 4-D"),
    (jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3, 3)), jnp.ones(3), ValueError,
     r"b must have shape \(C_out,\) = \(2,\), got \(3,\)"),
    (jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3, 3), jnp.bfloat16), None, TypeError,
     r"x and w must have the same dtype"),
    (jnp.ones((1, 4, 3, 3)), jnp.ones((4, 2, 3, 3)), jnp.ones(2, jnp.bfloat16), TypeError,
     r"b must have the dtype of x"),
    (jnp.ones((1, 4, 3, 3), jnp.int32), jnp.ones((4, 2, 3, 3)), None, TypeError,
     r"x must be a floating-point array"),
])
def test_bad_arrays_raise(x, w, b, exc, match):
    with pytest.raises(exc, match=match):
        conv_transpose2d(x, w, b)


def test_module_matches_functional_and_set_impl():
    layer = jconv.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                     rngs=nnx.Rngs(0))
    assert layer.kernel.shape == (4, 3, 3, 3) and layer.bias.shape == (6,)
    x = normal(3, (2, 4, 5, 5))
    y = layer(x)
    assert y.shape == (2, 6, 10, 10)
    np.testing.assert_allclose(
        y, conv_transpose2d(x, layer.kernel[...], layer.bias[...], stride=2, padding=1,
                            output_padding=1, groups=2), rtol=1e-6, atol=1e-6)
    jconv.set_impl(layer, "fft")
    assert layer.impl == "fft"
    np.testing.assert_allclose(layer(x), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"in_channels": 0}, r"in_channels must be a positive int, got 0"),
    ({"groups": 3}, r"groups=3 must divide both in_channels=4 and out_channels=6"),
    ({"impl": "fast"}, r"impl must be one of"),
])
def test_module_bad_arguments(kwargs, match):
    args = {"in_channels": 4, "out_channels": 6, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        jconv.nn.ConvTranspose2d(**args, rngs=nnx.Rngs(0))
