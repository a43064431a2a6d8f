"""jconv.pad: PyTorch's values and vector-Jacobian products in float64 for every mode,
negative pads, several ranks; second-order gradients, jit, a traced fill value, integer
inputs, and every error message (each one a case PyTorch rejects too, or computes from
memory it never wrote)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jconv

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (input shape, pad, mode, value): every mode on each rank it allows, negative pads on one
# side, both sides and across dims, pads as large as each mode allows, empty batches.
CASES = [
    ((5,), (1, 2), "constant", None),
    ((2, 3), (1, -1, 2, 0), "constant", 1.5),
    ((2, 3, 4), (1, 1, 1, 1, 1, 1), "constant", -2.0),  # every dim, batch included
    ((1, 2, 3, 4, 5), (-1, 2, 0, 1, 1, -2), "constant", 0.5),
    ((2, 3, 4), (-4, 1), "constant", 3.0),  # crops the whole dim, then pads it
    ((0, 3, 4), (2, 0, 1, 1), "constant", 1.0),
    ((2, 5), (4, -1), "reflect", None),
    ((2, 3, 5), (3, 4), "reflect", 0),
    ((3, 4, 5), (1, 2, -1, 3), "reflect", None),  # unbatched (C, H, W)
    ((1, 2, 4, 5), (-2, 3, 2, -1), "reflect", None),  # crop then mirror over the cropped part
    ((2, 3, 4, 5, 6), (1, 2, 2, 0, -1, 3), "reflect", None),
    ((0, 2, 4), (1, 3), "reflect", None),  # empty batch
    ((2, 3), (5, -2), "replicate", None),  # pad larger than the dim
    ((2, 3, 4), (-3, 2, 1, 1), "replicate", None),
    ((1, 2, 4, 5), (-4, 5, 3, -2), "replicate", None),
    ((2, 2, 3, 4, 5), (1, 0, 4, 1, 2, 2), "replicate", None),
    ((2, 5), (2, -1), "circular", None),
    ((2, 3, 4), (4, 0), "circular", None),  # the whole dim, once
    ((1, 2, 4, 5), (-1, 2, 2, -2), "circular", None),  # crop, then wrap what is left
    ((2, 2, 3, 4, 5), (-1, 2, 0, 1, 1, -2), "circular", None),
    ((2, 0, 4), (1, 2), "circular", None),  # circular allows an empty channel dim
]


def _ids(case):
    shape, pad, mode, value = case
    return f"{mode}-{'x'.join(map(str, shape))}-{pad}-{value}"


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_pad_matches_pytorch_values_and_vjp(case, x64):
    shape, pad, mode, value = case
    rng = np.random.default_rng(len(shape) * 7 + sum(pad))
    x = rng.standard_normal(shape)
    xt = torch.from_numpy(x).requires_grad_()
    want = F.pad(xt, pad, mode=mode, value=value)
    got, vjp = jax.vjp(lambda a: jconv.pad(a, pad, mode, value), jnp.asarray(x))
    assert got.dtype == jnp.float64 and got.shape == tuple(want.shape)
    np.testing.assert_array_equal(np.asarray(got), want.detach().numpy())
    cot = rng.standard_normal(tuple(want.shape))
    (grad_t,) = torch.autograd.grad(want, xt, torch.from_numpy(cot), allow_unused=True)
    (grad_j,) = vjp(jnp.asarray(cot))
    want_g = np.zeros(shape) if grad_t is None else grad_t.numpy()
    np.testing.assert_allclose(np.asarray(grad_j), want_g, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode,pad", [("constant", (2, -1, 1, 1)), ("reflect", (2, -1, 1, 2)),
                                      ("replicate", (3, -1, 0, 2)), ("circular", (-1, 2, 2, 0))])
def test_pad_second_order_grads_and_jit(mode, pad, x64):
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 4)))
    f = functools.partial(jconv.pad, pad=pad, mode=mode)
    # A nonlinear function of the padded array, so the second derivatives are not all zero.
    check_grads(lambda a: jnp.sin(f(a)) * f(a), (x,), order=2, modes=("fwd", "rev"))
    np.testing.assert_array_equal(jax.jit(f)(x), f(x))


def test_pad_takes_a_traced_value_under_jit(x64):
    x = np.random.default_rng(2).standard_normal((2, 3))
    got = jax.jit(lambda v: jconv.pad(x, (2, -1, 1, 0), value=v))(jnp.float64(5.0))
    np.testing.assert_array_equal(np.asarray(got),
                                  F.pad(torch.from_numpy(x), (2, -1, 1, 0), value=5.0).numpy())


@pytest.mark.parametrize("dtype,value", [("int64", 2.7), ("int32", -3), ("bool", 1.0)])
def test_pad_casts_value_to_the_input_dtype_as_pytorch(dtype, value, x64):
    x = np.arange(6).reshape(2, 3).astype(dtype)
    want = F.pad(torch.from_numpy(x), (1, 2), value=value).numpy()
    got = jconv.pad(jnp.asarray(x), (1, 2), value=value)
    assert got.dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(got), want)


def test_pad_takes_array_likes():
    assert jconv.pad([[1.0, 2.0]], [1, 0]).tolist() == [[0.0, 1.0, 2.0]]


# (shape, pad, mode, value, error type, message regex, torch raises): every error jconv.pad
# has. The circular cases torch does not reject read memory its kernel never wrote.
ERRORS = [
    ((1, 4), (1.5, 2), "constant", None, TypeError, r"pad must be a tuple or list of ints"),
    ((1, 4), (True, 2), "constant", None, TypeError, r"pad must be a tuple or list of ints"),
    ((1, 4), 1, "constant", None, TypeError, r"pad must be a tuple or list of ints.*got 1"),
    ((1, 4), (1, 2, 3), "constant", None, ValueError,
     r"pad must have an even length .*got 3 values \(1, 2, 3\)"),
    ((1, 4), (1,) * 6, "constant", None, ValueError,
     r"pad pads 3 dims but input has 2: len\(pad\) must be <= 2 \* input.ndim = 4"),
    ((1, 4), (1, 2), None, None, TypeError, r"mode must be a str, one of \('constant'"),
    ((1, 4), (1, 2), "foo", None, ValueError, r"mode must be one of \('constant'.*got 'foo'"),
    ((1, 4), (1, 2), "constant", "a", TypeError,
     r"value must be a number \(or a 0-d array\) or None, got 'a'"),
    ((1, 4), (1, 2), "reflect", 1.0, ValueError,
     r"mode='reflect' takes no value .*got value=1.0"),
    ((4,), (1, 2), "reflect", None, ValueError,
     r"mode='reflect' supports len\(pad\) 2 with a 2-D or 3-D input.*got len\(pad\)=2 for a "
     r"1-D input of shape \(4,\)"),
    ((1, 1, 1, 4), (1, 2), "circular", None, ValueError,
     r"mode='circular' supports len\(pad\) 2 .*got len\(pad\)=2 for a 4-D input"),
    ((1, 1, 1, 1, 1, 4), (1,) * 6, "replicate", None, ValueError,
     r"got len\(pad\)=6 for a 6-D input"),
    ((1, 1, 4), (), "reflect", None, ValueError, r"got len\(pad\)=0 for a 3-D input"),
    ((1, 0, 4), (1, 2), "reflect", None, ValueError,
     r"mode='reflect' needs a non-empty input in every dim except the batch dim of a 3-D "
     r"input \(PyTorch rule\), got shape \(1, 0, 4\)"),
    ((0, 3, 3), (1, 2, 1, 1), "replicate", None, ValueError,
     r"mode='replicate' needs a non-empty input .*got shape \(0, 3, 3\)"),
    ((1, 1, 4), (4, 0), "reflect", None, ValueError,
     r"mode='reflect' needs padding < the input size along dim 2 \(PyTorch rule\), got "
     r"padding \(4, 0\) for size 4"),
    ((1, 1, 4), (-4, 5), "circular", None, ValueError,
     r"mode='circular' needs padding <= the input size along dim 2 \(it wraps around once"),
    ((1, 3, 4), (0, 0, 1, 4), "circular", None, ValueError,
     r"padding <= the input size along dim 1 .*got padding \(1, 4\) for size 3"),
    ((1, 1, 4), (-5, 2), "constant", None, ValueError,
     r"negative pads may crop at most the whole dim \(PyTorch rule\), got pad \(-5, 2\) for "
     r"dim 2 of size 4"),
    ((2, 3), (0, 0, -2, -1), "constant", None, ValueError,
     r"got pad \(-2, -1\) for dim 0 of size 2"),
    ((1, 1, 4), (-4, 0), "reflect", None, ValueError,
     r"mode='reflect' needs an output size >= 1 \(PyTorch rule\), got pad \(-4, 0\) for dim 2 "
     r"of size 4, which gives size 0"),
    ((1, 1, 4), (-3, -2), "replicate", None, ValueError,
     r"mode='replicate' needs an output size >= 1 .*which gives size -1"),
    ((1, 1, 4), (-5, 0), "circular", None, ValueError,
     r"mode='circular' needs an output size >= 0 \(PyTorch rule\), got pad \(-5, 0\) for dim "
     r"2 of size 4, which gives size -1"),
    ((1, 1, 4), (-2, 3), "circular", None, ValueError,
     r"mode='circular' wraps the input its negative pads leave, so each pad must be <= that "
     r"size, got pad \(-2, 3\) for dim 2 of size 4 \(2 after cropping\)"),
]
# Torch computes these from memory it never wrote (its own overlap check, which rejects the
# last case of ERRORS, depends on the memory layout) instead of raising.
TORCH_READS_GARBAGE = [((1, 1, 4), (-4, 1), "circular", r"\(0 after cropping\)"),
                       ((1, 1, 4), (-5, 2), "circular", r"\(0 after cropping\)"),
                       ((1, 2, 4, 5), (-1, 2, 3, -2), "circular",
                        r"got pad \(3, -2\) for dim 2 of size 4 \(2 after cropping\)")]


@pytest.mark.parametrize("case", ERRORS, ids=[f"{c[2]}-{c[1]}-{c[0]}" for c in ERRORS])
def test_pad_errors_where_pytorch_raises(case):
    shape, pad, mode, value, err, match = case
    with pytest.raises((RuntimeError, TypeError, ValueError, NotImplementedError)):
        F.pad(torch.zeros(shape), pad, mode=mode, value=value)
    with pytest.raises(err, match=match):
        jconv.pad(jnp.zeros(shape), pad, mode=mode, value=value)


@pytest.mark.parametrize("case", TORCH_READS_GARBAGE, ids=str)
def test_pad_circular_wrapping_more_than_the_cropped_input_raises(case):
    shape, pad, mode, match = case
    with pytest.raises(ValueError, match=match):
        jconv.pad(jnp.zeros(shape), pad, mode=mode)


def test_pad_input_must_be_an_array():
    with pytest.raises(TypeError, match=r"input must be an array or an array-like .*got object"):
        jconv.pad(object(), (1, 1))


def test_pad_non_constant_mode_takes_a_zero_value():
    x = jnp.arange(4.0).reshape(1, 4)
    np.testing.assert_array_equal(jconv.pad(x, (1, 1), "reflect", 0.0),
                                  jconv.pad(x, (1, 1), "reflect"))
