"""unfold / fold: PyTorch's values and gradients in float64, fold as the transpose of unfold
(overlaps summed), batched and unbatched, every error message."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconv

# (input (H, W), kernel_size, dilation, padding, stride): overlapping, strided, dilated,
# padded, rectangular, gaps between blocks (stride > kernel).
CONFIGS = [
    ((5, 6), 2, 1, 0, 1),
    ((7, 8), (2, 3), (2, 1), (1, 2), (2, 3)),
    ((6, 6), 3, 1, 1, 2),
    ((9, 5), (1, 2), 1, 0, (3, 2)),
    ((4, 7), (3, 3), (1, 2), 1, 1),
]


def _kw(cfg):
    _, k, d, p, s = cfg
    return dict(kernel_size=k, dilation=d, padding=p, stride=s)


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_unfold_and_fold_match_pytorch_values_and_grads(cfg, x64):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    size, kw = cfg[0], _kw(cfg)
    x = rng.standard_normal((2, 3, *size))
    cols = np.asarray(jconv.unfold(jnp.asarray(x), **kw))
    xt = torch.from_numpy(x).requires_grad_()
    want = F.unfold(xt, **kw)
    np.testing.assert_array_equal(cols, want.detach().numpy())
    c = rng.standard_normal(cols.shape)
    ct = torch.from_numpy(c).requires_grad_()
    folded = F.fold(ct, size, **kw)
    np.testing.assert_allclose(jconv.fold(jnp.asarray(c), size, **kw), folded.detach().numpy(),
                               rtol=0, atol=1e-12)
    # Gradients of a non-linear loss through each.
    (want.sin().sum() + folded.cos().sum()).backward()
    gx = jax.grad(lambda x: jnp.sum(jnp.sin(jconv.unfold(x, **kw))))(jnp.asarray(x))
    gc = jax.grad(lambda c: jnp.sum(jnp.cos(jconv.fold(c, size, **kw))))(jnp.asarray(c))
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(gc, ct.grad.numpy(), rtol=0, atol=1e-12)


def test_unbatched_and_jit():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 6, 6)), jnp.float32)
    f = jax.jit(lambda x: jconv.fold(jconv.unfold(x, 3, padding=1), (6, 6), 3, padding=1))
    np.testing.assert_allclose(f(x[1]), f(x)[1], rtol=1e-6)
    assert jconv.unfold(x[0], 2).shape == (12, 25)


def test_fold_sums_overlaps_and_fold_unfold_counts_coverage():
    # fold(unfold(ones)) counts how many blocks cover each pixel.
    ones = jnp.ones((1, 1, 4, 4))
    cover = jconv.fold(jconv.unfold(ones, 3, padding=1), (4, 4), 3, padding=1)[0, 0]
    np.testing.assert_array_equal(cover, [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]])


def test_conv2d_is_a_matmul_on_unfold():
    x, w = (jnp.asarray(np.random.default_rng(2).standard_normal(s), jnp.float32)
            for s in [(2, 3, 8, 8), (4, 3, 3, 3)])
    y = (w.reshape(4, -1) @ jconv.unfold(x, 3, padding=1)).reshape(2, 4, 8, 8)
    np.testing.assert_allclose(y, jconv.conv2d(x, w, padding=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call,err,match", [
    (lambda: jconv.unfold(jnp.ones((2, 3)), 2), ValueError, r"x must be 4-D .* got shape \(2, 3\)"),
    (lambda: jconv.unfold(jnp.ones((1, 0, 3, 3)), 2), ValueError, r"non-zero C, H, W"),
    (lambda: jconv.unfold(jnp.ones((1, 1, 3, 3), jnp.int32), 2), TypeError,
     r"x must be a floating-point array"),
    (lambda: jconv.unfold(jnp.ones((1, 1, 3, 3)), 4), ValueError,
     r"no sliding block fits: input \(H, W\) \(3, 3\) with kernel_size=\(4, 4\)"),
    (lambda: jconv.unfold(jnp.ones((1, 1, 3, 3)), (2, 2, 2)), TypeError,
     r"kernel_size must be an int or a pair of ints"),
    (lambda: jconv.unfold(jnp.ones((1, 1, 3, 3)), 2, stride=0), ValueError, r"stride must be >= 1"),
    (lambda: jconv.unfold(jnp.ones((1, 1, 3, 3)), 2, padding=-1), ValueError,
     r"padding must be >= 0"),
    (lambda: jconv.unfold(jnp.ones((1, 1, 3, 3)), 2, dilation=0), ValueError,
     r"dilation must be >= 1"),
    (lambda: jconv.fold(jnp.ones((1, 2, 3, 4)), 3, 2), ValueError, r"cols must be 3-D"),
    (lambda: jconv.fold(jnp.ones((1, 4, 0)), 3, 2), ValueError, r"non-zero C\*kH\*kW and L"),
    (lambda: jconv.fold(jnp.ones((1, 5, 4)), 3, 2), ValueError,
     r"cols.shape\[-2\] = 5 must be divisible by the product of kernel_size \(2, 2\) = 4"),
    (lambda: jconv.fold(jnp.ones((1, 4, 5)), 3, 2), ValueError,
     r"cols.shape\[-1\] = 5 must equal the number of sliding blocks, 2 \* 2 = 4"),
    (lambda: jconv.fold(jnp.ones((1, 4, 5)), (3, 3, 3), 2), TypeError,
     r"output_size must be an int or a pair of ints"),
    (lambda: jconv.fold(jnp.ones((1, 4, 1)), 1, 2), ValueError, r"no sliding block fits: output_size"),
    (lambda: jconv.fold(jnp.ones((1, 4, 4), jnp.int32), 3, 2), TypeError, r"cols must be a floating"),
])
def test_errors(call, err, match):
    with pytest.raises(err, match=match):
        call()
