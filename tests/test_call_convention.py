"""PyTorch's calling convention for every conv and transposed conv: the positional order of
``torch.nn.functional`` (input, weight, bias, stride, padding, dilation, groups; transposed:
..., output_padding, groups, dilation), its keywords ``input=``/``weight=``/``bias=``, the
jconv-only arguments keyword-only, and array-likes taken as jnp functions take them."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jconv

# (jconv function, torch.nn.functional name, x shape, w shape, positional args after bias)
CONVS = [
    (jconv.conv1d, "conv1d", (2, 4, 11), (6, 2, 3), (2, 1, 2, 2)),
    (jconv.conv2d, "conv2d", (2, 4, 9, 8), (6, 2, 3, 2), ((2, 1), (1, 0), (1, 2), 2)),
    (jconv.conv3d, "conv3d", (1, 4, 6, 7, 5), (6, 2, 2, 3, 2), (1, 1, 2, 2)),
    (jconv.convnd, "conv2d", (2, 4, 9, 8), (6, 2, 3, 2), (2, 1, 1, 2)),
]
# stride, padding, output_padding, groups, dilation (PyTorch's order: groups, then dilation)
TRANSPOSED = [
    (jconv.conv_transpose1d, "conv_transpose1d", (2, 4, 7), (4, 3, 3), (2, 1, 1, 2, 2)),
    (jconv.conv_transpose2d, "conv_transpose2d", (2, 4, 5, 6), (4, 3, 3, 2),
     ((2, 1), (1, 0), (1, 0), 2, (2, 1))),
    (jconv.conv_transpose3d, "conv_transpose3d", (1, 4, 3, 4, 3), (4, 3, 2, 3, 2),
     (2, 1, 1, 2, 1)),
]


def _arrays(x_shape, w_shape, c_out, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(x_shape), rng.standard_normal(w_shape),
            rng.standard_normal(c_out))


@pytest.mark.parametrize("fn, torch_name, x_shape, w_shape, rest",
                         [*CONVS, *TRANSPOSED], ids=lambda v: getattr(v, "__name__", None))
def test_positional_call_matches_torch(x64, fn, torch_name, x_shape, w_shape, rest):
    torch = pytest.importorskip("torch")
    transposed = "transpose" in torch_name
    c_out = w_shape[1] * rest[3] if transposed else w_shape[0]
    x, w, b = _arrays(x_shape, w_shape, c_out)
    want = getattr(torch.nn.functional, torch_name)(
        torch.tensor(x), torch.tensor(w), torch.tensor(b), *rest).numpy()
    got = fn(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), *rest)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-10)
    # torch's keyword names give the same call
    kw = fn(input=jnp.asarray(x), weight=jnp.asarray(w), bias=jnp.asarray(b), stride=rest[0],
            padding=rest[1], groups=rest[3],
            **({"output_padding": rest[2], "dilation": rest[4]} if transposed
               else {"dilation": rest[2]}))
    np.testing.assert_array_equal(np.asarray(kw), np.asarray(got))


@pytest.mark.parametrize("fn, n_positional", [
    (jconv.conv1d, 7), (jconv.conv2d, 7), (jconv.conv3d, 7), (jconv.convnd, 7),
    (jconv.conv_transpose1d, 8), (jconv.conv_transpose2d, 8), (jconv.conv_transpose3d, 8)])
def test_jconv_only_arguments_are_keyword_only(fn, n_positional):
    """impl (and data_format, precision, padding_mode) after PyTorch's arguments: one more
    positional argument is refused rather than read as impl."""
    with pytest.raises(TypeError, match=rf"takes from 2 to {n_positional} positional "
                                        rf"arguments but {n_positional + 1} were given"):
        fn(*[None] * (n_positional + 1))


def test_lists_are_taken_as_arrays():
    x, w = [[[[1.0, 2.0], [3.0, 4.0]]]], [[[[1.0]]], [[[2.0]]]]
    np.testing.assert_array_equal(jconv.conv2d(x, w, [0.5, 0.0]),
                                  jconv.conv2d(jnp.asarray(x), jnp.asarray(w),
                                               jnp.asarray([0.5, 0.0])))
    assert jconv.conv1d([[1.0, 2.0, 3.0]], [[[1.0, 1.0]]]).tolist() == [[3.0, 5.0]]
    assert jconv.conv_transpose1d([[1.0]], [[[1.0, 2.0]]]).tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize("args, match", [
    (([[1.0], [1.0, 2.0]], [[[[1.0]]]]), r"input must be an array or an array-like \(e.g. "
                                         r"nested lists of floats\), got list: "),
    ((jnp.ones((1, 1, 2, 2)), "w"), r"weight must be an array or an array-like .* got str"),
    ((jnp.ones((1, 1, 2, 2)), jnp.ones((1, 1, 1, 1)), object()),
     r"bias must be an array or an array-like .* got object"),
    (([[[[1, 2]]]], [[[[1]]]]), r"x must be a floating-point array .* got dtype int32"),
])
@pytest.mark.parametrize("fn", [jconv.conv2d, jconv.conv_transpose2d])
def test_non_arrays_are_a_type_error(fn, args, match):
    with pytest.raises(TypeError, match=match):
        fn(*args)
