"""Cost helpers, with the seeds' worked examples recomputed (several seed answers are wrong)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import jconv


def test_conv2d_params_against_layer():
    for args, kw in [((3, 64, 3), {}), ((3, 64, 5), dict(bias=False)), ((32, 64, (3, 5)), dict(groups=4)),
                     ((16, 16, 3), dict(groups=16, bias=False))]:
        layer = jconv.nn.Conv2d(*args, **kw, rngs=nnx.Rngs(0))
        n = sum(p.size for p in jax.tree.leaves(nnx.state(layer, nnx.Param)))
        assert jconv.conv2d_params(*args, **kw) == n


def test_seed_parameter_answers():
    assert jconv.conv2d_params(3, 64, 3) == 1792                      # 004 Q2
    assert jconv.conv2d_params(3, 64, 5) == 4864                      # 003 C1 with bias
    assert jconv.conv2d_params(3, 64, 5, bias=False) == 4800          # 003 C1 without
    assert jconv.conv2d_params(3, 16, 3) + jconv.conv2d_params(16, 32, 3, bias=False) == 5056  # C2


def test_macs_worked_examples():
    # Seed 004 prints 2,764,800,000 for this layer; 32*64*224*224*3*3*3 is 2,774,532,096.
    assert jconv.conv2d_macs((32, 3, 224, 224), 64, 3, padding=1) == 32 * 64 * 224 * 224 * 27
    assert jconv.conv2d_macs((32, 3, 224, 224), 64, 3, padding=1) == 2_774_532_096
    # Seed 004 Q3 prints 3,707,764,736; 16*128*56*56*64*9 is 3,699,376,128.
    assert jconv.conv2d_macs((16, 64, 56, 56), 128, 3, padding=1) == 3_699_376_128
    assert jconv.conv2d_macs((3, 32, 32), 16, 3, padding=1) == 16 * 32 * 32 * 27   # unbatched
    assert jconv.conv2d_macs((1, 32, 8, 8), 32, 3, padding=1, groups=32) == 32 * 64 * 9


def test_macs_match_the_cost_analysis_of_a_real_conv():
    """XLA's own FLOP count for the compiled lax conv equals 2 * jconv.conv2d_macs.

    Without padding only: XLA skips taps that land on padding, while the usual MAC
    convention (and jconv's) counts every tap of every window."""
    x = jnp.zeros((2, 8, 17, 16))
    w = jnp.zeros((16, 4, 3, 2))
    f = jax.jit(lambda x, w: jconv.conv2d(x, w, stride=2, dilation=(1, 2), groups=2))
    analysis = f.lower(x, w).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    assert analysis["flops"] == jconv.conv2d_flops((2, 8, 17, 16), 16, (3, 2), stride=2,
                                                   dilation=(1, 2), groups=2)


def test_flops_with_bias():
    macs = jconv.conv2d_macs((1, 3, 8, 8), 4, 3)
    assert jconv.conv2d_flops((1, 3, 8, 8), 4, 3, bias=True) == 2 * macs + 4 * 6 * 6


def test_activation_bytes():
    # Seed 004 Q4 prints 825,753,600; 64*256*112*112*4 is 822,083,584.
    assert jconv.activation_bytes((64, 256, 112, 112), "float32") == 822_083_584
    assert jconv.activation_bytes((32, 64, 224, 224), jnp.float32) == 411_041_792   # "411 MB"
    assert jconv.activation_bytes((2, 3), jnp.bfloat16) == 12
    assert jconv.activation_bytes((2, 3), "float64") == 48
    assert jconv.activation_bytes((64, 256, 112, 112)) == jnp.zeros((1,)).dtype.itemsize * 64 * 256 * 112 * 112


def test_receptive_field():
    rf = jconv.receptive_field([(3, 1), (2, 2), (3, 1), (3, 1)])     # seed 004 Q5
    assert (rf.size, rf.jump) == (12, 2)
    assert [layer.size for layer in rf.layers] == [3, 4, 8, 12]
    assert jconv.receptive_field([(3, 1)] * 5).size == 11            # "five 3x3 -> 11x11"
    assert jconv.receptive_field([(3, 1, 1, 2)]).size == 5            # dilation 2
    assert jconv.receptive_field([dict(kernel_size=7, stride=2, padding=3), (3, 2, 1)]).size == 11
    assert jconv.receptive_field([(3, 1, 1)]).layers[0].start == 0.5  # 'same' keeps centres


def test_receptive_field_matches_gradient_support():
    """The receptive field is exactly the set of inputs with a nonzero gradient."""
    def stack(x):
        x = jconv.conv2d(x, jnp.ones((1, 1, 3, 3)), padding=1)
        x = jconv.max_pool2d(x, 2)
        x = jconv.conv2d(x, jnp.ones((1, 1, 3, 3)), dilation=2, padding=2)
        return x[0, 0, 4, 4]
    grad = jax.grad(stack)(jax.random.uniform(jax.random.PRNGKey(0), (1, 1, 24, 24)) + 1.0)
    rows = jnp.nonzero(grad[0, 0].sum(axis=1))[0]
    rf = jconv.receptive_field([(3, 1, 1), (2, 2), (3, 1, 2, 2)])
    assert int(rows.max() - rows.min() + 1) == rf.size


@pytest.mark.parametrize("layers, exc, match", [
    ([], ValueError, r"layers must contain at least one layer"),
    ([(3,)], TypeError, r"layers\[0\] must be \(kernel, stride\[, padding\[, dilation\]\]\) or a mapping, got \(3,\)"),
    ([(3, 1), (3, 0)], ValueError, r"layers\[1\] stride must be an int >= 1, got 0"),
    ([dict(kernel=3)], ValueError, r"layers\[0\] must have key 'kernel_size'"),
])
def test_receptive_field_errors(layers, exc, match):
    with pytest.raises(exc, match=match):
        jconv.receptive_field(layers)


def test_cost_errors():
    with pytest.raises(ValueError, match=r"groups=3 must divide both in_channels=4 and out_channels=6"):
        jconv.conv2d_params(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match=r"input_shape must be \(N, C, H, W\) or \(C, H, W\), got \(8, 8\)"):
        jconv.conv2d_macs((8, 8), 4, 3)
    with pytest.raises(ValueError, match=r"shape must have non-negative dims, got \(2, -1\)"):
        jconv.activation_bytes((2, -1))
