"""jconv.testing's N-D pooling and unfold/fold checks: they pass jconv's own functions and
catch planted bugs (mutation tests), and their oracles agree with PyTorch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconv
from jconv import testing

F64 = ("float64",)


def _fails(report) -> bool:
    return not report.passed and report.failures


def test_unfold_and_fold_pass():
    assert testing.check_unfold(jconv.unfold, cases="quick", dtypes=F64).passed
    assert testing.check_fold(jconv.fold, cases="quick", dtypes=F64).passed


def test_catches_fold_that_does_not_sum_overlaps():
    def fold_overwrites(cols, output_size, kernel_size, dilation, padding, stride):
        # Last block wins instead of adding up: the classic col2im bug.
        ones = jnp.ones_like(cols)
        total = jconv.fold(cols, output_size, kernel_size, dilation, padding, stride)
        count = jconv.fold(ones, output_size, kernel_size, dilation, padding, stride)
        return total / jnp.maximum(count, 1.0)

    cases = [testing.FoldCase((5, 5), 2, 3, stride=1)]  # 3x3 blocks, stride 1: overlaps
    assert _fails(testing.check_fold(fold_overwrites, cases=cases, dtypes=F64))


def test_catches_unfold_with_channel_minor_rows():
    def unfold_swapped(x, kernel_size, dilation, padding, stride):
        cols = jconv.unfold(x, kernel_size, dilation, padding, stride)
        c, taps = x.shape[-3], cols.shape[-2] // x.shape[-3]
        return cols.reshape(*cols.shape[:-2], c, taps, -1).swapaxes(-3, -2).reshape(cols.shape)

    cases = [testing.UnfoldCase((1, 2, 4, 4), 2)]
    assert _fails(testing.check_unfold(unfold_swapped, cases=cases, dtypes=F64))


def test_catches_an_axis_swap_in_3d_pooling():
    def pool_swapped(x, kernel_size, stride, padding, dilation, ceil_mode):
        # Pools the (H, D, W) volume: wrong whenever the kernel differs along D and H.
        y = jconv.max_pool3d(jnp.swapaxes(x, -3, -2), kernel_size, stride, padding, dilation,
                             ceil_mode)
        return jnp.swapaxes(y, -3, -2)

    case = testing.PoolCase("max_pool3d", (1, 2, 5, 5, 4), (1, 3, 2))
    assert testing.check_pool(jconv.max_pool3d, "max_pool3d", cases=[case], dtypes=F64).passed
    assert _fails(testing.check_pool(pool_swapped, "max_pool3d", cases=[case], dtypes=F64))


def test_catches_count_include_pad_ignored_and_divisor_override_ignored():
    def avg_ignores(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                    divisor_override=None):
        return jconv.avg_pool2d(x, kernel_size, stride, padding, ceil_mode)

    cases = [testing.PoolCase("avg_pool2d", (1, 1, 5, 5), 3, 2, 1, count_include_pad=False),
             testing.PoolCase("avg_pool2d", (1, 1, 4, 4), 2, divisor_override=3)]
    for case in cases:
        assert _fails(testing.check_pool(avg_ignores, "avg_pool2d", cases=[case], dtypes=F64))


def test_catches_adaptive_windows_off_by_one():
    def adaptive_floor_end(x, output_size):
        # Windows [floor(i*n/m), floor((i+1)*n/m)): misses PyTorch's overlap when m ∤ n.
        n, m = x.shape[-1], output_size
        return jnp.stack([x[..., i * n // m:(i + 1) * n // m].mean(-1) for i in range(m)], -1)

    case = testing.PoolCase("adaptive_avg_pool1d", (1, 2, 7), output_size=3)
    assert _fails(testing.check_pool(adaptive_floor_end, "adaptive_avg_pool1d", cases=[case],
                                     dtypes=F64))


def test_catches_max_pool_gradient_split_on_ties_free_inputs():
    """A max whose gradient is routed wrongly (to the window mean) fails the grad check."""
    @jax.custom_vjp
    def wrong(x):
        return jconv.max_pool1d(x, 2)

    wrong.defvjp(lambda x: (wrong(x), x),
                 lambda x, g: (jnp.repeat(g, 2, axis=-1)[..., :x.shape[-1]] / 2,))
    case = testing.PoolCase("max_pool1d", (1, 2, 6), 2)
    report = testing.check_pool(lambda x, **kw: wrong(x), "max_pool1d", cases=[case], dtypes=F64,
                                check_grads_cases=0)
    assert _fails(report) and any(r.check == "grad x" for r in report.failures)


def test_case_and_function_errors():
    with pytest.raises(ValueError, match=r"function must be one of .* got 'max_pool4d'"):
        testing.check_pool(jconv.max_pool2d, "max_pool4d")
    with pytest.raises(ValueError, match=r"function must be one of .* got 'conv2d'"):
        testing.PoolCase("conv2d", (1, 1, 4, 4), 2)
    with pytest.raises(ValueError, match=r"kind must be one of \('quick', 'default', 'full'\), got 'huge'"):
        testing.pool_cases("avg_pool1d", "huge")
    with pytest.raises(ValueError, match=r"cases must be one of .* got 'all'"):
        testing.check_unfold(jconv.unfold, cases="all")
    with pytest.raises(AssertionError, match=r"PoolCase"):
        testing.assert_pool(lambda x, **kw: x[..., :1], "adaptive_avg_pool1d",
                            cases=[testing.PoolCase("adaptive_avg_pool1d", (1, 2, 4),
                                                    output_size=1)], dtypes=F64)


@pytest.mark.parametrize("cfg", [dict(kernel_size=2), dict(kernel_size=(2, 3), dilation=2,
                                                           padding=1, stride=(1, 2))])
def test_unfold_fold_oracles_match_pytorch(cfg):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 7))
    cols = testing.reference_unfold(x, **cfg)
    np.testing.assert_array_equal(cols, torch.nn.functional.unfold(torch.from_numpy(x), **cfg))
    np.testing.assert_allclose(testing.reference_fold(cols, (6, 7), **cfg),
                               torch.nn.functional.fold(torch.from_numpy(cols), (6, 7), **cfg),
                               atol=1e-12)


@pytest.mark.parametrize("function", testing.POOL_FUNCTIONS)
def test_pool_oracles_match_pytorch(function):
    torch = pytest.importorskip("torch")
    for case in testing.pool_cases(function, "default", seed=7):
        (x,) = case.inputs()
        kw = dict(case.kwargs)
        if function == "lp_pool1d":
            kw["kernel_size"] = kw["kernel_size"][0]
        want = getattr(torch.nn.functional, function)(torch.from_numpy(x), **kw)
        np.testing.assert_allclose(case.reference(x), want.numpy(), rtol=0, atol=1e-12,
                                   err_msg=repr(case))
