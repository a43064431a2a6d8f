"""Shape helpers: the seeds' practice problems, checked against real convolutions."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import pytest

import jconv


def _real_hw(hw, k, **kw):
    """Output (H, W) of an actual jconv convolution (shape only, no FLOPs spent)."""
    x = jax.ShapeDtypeStruct((1, 1, *hw), jnp.float32)
    w = jax.ShapeDtypeStruct((1, 1, *k), jnp.float32)
    return jax.eval_shape(lambda x, w: jconv.conv2d(x, w, **kw), x, w).shape[2:]


@pytest.mark.parametrize("hw, k, kw, expected", [
    ((32, 32), (3, 3), dict(stride=1, padding=1), (32, 32)),                         # seed 003 A1
    ((28, 28), (3, 3), dict(stride=2, padding=1), (14, 14)),                         # A2
    ((128, 128), (3, 5), dict(stride=(2, 1), padding=(1, 2)), (64, 128)),            # A3
    ((64, 96), (7, 7), dict(stride=2, padding=3, dilation=2), (29, 45)),             # A4
    ((32, 32), (3, 3), dict(padding=3, dilation=3), (32, 32)),                       # A5
    ((224, 224), (3, 3), dict(stride=2), (111, 111)),                                # seed 004 "55 vs 56"
    ((112, 112), (3, 3), dict(stride=2), (55, 55)),
    ((128, 128), (5, 5), dict(stride=2, padding=2), (64, 64)),                       # 004 Q1
    ((9, 10), (4, 3), dict(padding="same", dilation=(1, 2)), (9, 10)),
    ((9, 10), (2, 3), dict(padding=((0, 3), (1, 0)), stride=(3, 2)), (4, 5)),  # (12-2)//3+1, (11-3)//2+1
])
def test_conv2d_output_shape(hw, k, kw, expected):
    assert jconv.conv2d_output_shape(hw, k, **kw) == expected
    assert tuple(_real_hw(hw, k, **kw)) == expected


def test_conv2d_output_shape_int_input():
    assert jconv.conv2d_output_shape(32, 5) == (28, 28)


def test_conv2d_output_shape_error():
    with pytest.raises(ValueError, match=r"kernel_size=7 with dilation=2 does not fit"):
        jconv.conv2d_output_shape(10, 7, dilation=2)
    with pytest.raises(TypeError, match=r"input_hw must be an int or a pair of ints, got 'big'"):
        jconv.conv2d_output_shape("big", 3)


@pytest.mark.parametrize("hw, k, s, p, d, ceil", [
    ((7, 9), 3, 2, 1, 1, True), ((5, 5), 2, None, 0, 1, False), ((5, 5), 2, None, 0, 1, True),
    ((8, 6), (3, 2), (2, 1), (1, 1), (2, 1), True), ((6, 6), 2, 2, 1, 1, True),
])
def test_pool2d_output_shape_matches_pooling(hw, k, s, p, d, ceil):
    x = jnp.zeros((1, 1, *hw))
    assert jconv.pool2d_output_shape(hw, k, s, p, d, ceil) == jconv.max_pool2d(x, k, s, p, d, ceil).shape[2:]


def test_pool2d_output_shape_matches_torch():
    torch = pytest.importorskip("torch")
    for size, k, s, p, ceil in itertools.product(range(4, 12), (2, 3), (1, 2, 3), (0, 1), (False, True)):
        if 2 * p > k:
            continue
        want = torch.nn.functional.max_pool2d(torch.zeros(1, 1, size, size), k, s, p, ceil_mode=ceil).shape[2:]
        assert jconv.pool2d_output_shape(size, k, s, p, 1, ceil) == tuple(want), (size, k, s, p, ceil)


def test_pool2d_output_shape_error():
    with pytest.raises(ValueError, match=r"pooling window larger than the padded input along H: "
                                         r"effective kernel 9 > padded size 4"):
        jconv.pool2d_output_shape(4, 9)


def test_same_padding():
    assert jconv.same_padding(3, dilation=3) == 3                   # seed 003 A5
    assert jconv.same_padding((3, 5)) == (1, 2)
    assert jconv.same_padding(7, 2) == 6
    for k, d in [(3, 1), (5, 2), (7, 3)]:
        p = jconv.same_padding(k, d)
        assert jconv.conv2d_output_shape(17, k, padding=p, dilation=d) == (17, 17)


def test_same_padding_error():
    with pytest.raises(ValueError, match=r"no integer symmetric padding keeps the size for kernel_size=4, dilation=1: effective kernel 4 is even.*1.5 per side.*padding='same'"):
        jconv.same_padding(4)


def _brute(hw, target, ks, ss, ps, ds):
    return [(k, s, p, d) for k, s, p, d in itertools.product(ks, ss, ps, ds)
            if all((n + 2 * p - d * (k - 1) - 1) // s + 1 == t and n + 2 * p >= d * (k - 1) + 1
                   for n, t in zip(hw, target))]


@pytest.mark.parametrize("hw, target, pads", [
    ((32, 32), (16, 16), range(0, 6)),    # seed 003 B1
    ((64, 64), (31, 31), range(0, 8)),    # B2
    ((72, 96), (36, 48), range(0, 6)),    # B3
])
def test_find_conv_params(hw, target, pads):
    found = jconv.find_conv_params(hw, target, paddings=pads)
    assert [tuple(f) for f in found] == _brute(hw, target, range(1, 8), range(1, 4), pads, range(1, 4))
    assert found, "the seeds' problems all have solutions"
    for k, s, p, d in found:
        assert jconv.conv2d_output_shape(hw, k, s, p, d) == target


def test_find_conv_params_bad_range():
    with pytest.raises(ValueError, match=r"search ranges must have .* got kernel=0"):
        jconv.find_conv_params(8, 4, kernel_sizes=[0])
