"""``check_*`` / ``assert_*`` for the N-D pooling family and unfold/fold, on the shared
checking engine (:func:`jconv.testing._check.run_checks`)."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

from ._api import _GRIDS, DTYPES, Cases, _asserting, _check
from ._nd_cases import (POOL_FUNCTIONS, FoldCase, PoolCase, UnfoldCase, fold_cases,
                        pool_cases, unfold_cases)
from ._report import CheckReport

# The N-D ops join the one table of case grids the check engine resolves ``cases=`` with.
for _function in POOL_FUNCTIONS:
    _GRIDS[_function] = (functools.partial(pool_cases, _function), PoolCase)
_GRIDS["unfold"] = (unfold_cases, UnfoldCase)
_GRIDS["fold"] = (fold_cases, FoldCase)


def check_pool(fn: Callable[..., Any], function: str, *, cases: Cases = "default",
               dtypes: Sequence[str] = DTYPES, grads: bool = True, seed: int = 0,
               check_grads_cases: int | None = None,
               tolerances: dict[str, tuple[float, float]] | None = None, jit: bool = True,
               fail_fast: bool = False) -> CheckReport:
    """Check that ``fn`` is the PyTorch pooling function named ``function`` (one of
    ``max_pool1d/2d/3d``, ``avg_pool1d/2d/3d``, ``lp_pool1d/2d/3d``,
    ``adaptive_avg_pool1d/2d/3d``, ``adaptive_max_pool1d/2d/3d``), gradients included.

    ``fn(x, **case.kwargs)`` takes a channels-first JAX array, (N, C, *spatial) or
    (C, *spatial), and the keywords of that PyTorch function; it returns the pooled array.
    Everything else as :func:`jconv.testing.check_conv2d`: the values and the reverse-mode
    gradient against the float64 oracle per dtype, ``check_grads(order=2)`` on the first
    cases, and a :class:`CheckReport`. ``cases``: ``"quick"``/``"default"``/``"full"``
    random configurations (:func:`pool_cases`) or your own :class:`PoolCase` list.

    Example:
      >>> import jconv
      >>> from jconv import testing
      >>> testing.check_pool(jconv.avg_pool3d, "avg_pool3d", cases="quick",
      ...                    dtypes=("float32",)).passed
      True
    """
    if function not in POOL_FUNCTIONS:
        raise ValueError(f"function must be one of {POOL_FUNCTIONS}, got {function!r}")
    return _check(function, fn, cases, dtypes, grads, seed, check_grads_cases, tolerances, jit,
                  fail_fast)


def check_unfold(fn: Callable[..., Any], *, cases: Cases = "default",
                 dtypes: Sequence[str] = DTYPES, grads: bool = True, seed: int = 0,
                 check_grads_cases: int | None = None,
                 tolerances: dict[str, tuple[float, float]] | None = None, jit: bool = True,
                 fail_fast: bool = False) -> CheckReport:
    """:func:`check_pool` for ``torch.nn.functional.unfold``:
    ``fn(x, kernel_size=, dilation=, padding=, stride=)``, x (N, C, H, W) or (C, H, W) ->
    (N, C*kH*kW, L). Cases: :func:`unfold_cases` or a :class:`UnfoldCase` list.

    >>> import jconv
    >>> check_unfold(jconv.unfold, cases="quick", dtypes=("float32",)).passed
    True
    """
    return _check("unfold", fn, cases, dtypes, grads, seed, check_grads_cases, tolerances, jit,
                  fail_fast)


def check_fold(fn: Callable[..., Any], *, cases: Cases = "default",
               dtypes: Sequence[str] = DTYPES, grads: bool = True, seed: int = 0,
               check_grads_cases: int | None = None,
               tolerances: dict[str, tuple[float, float]] | None = None, jit: bool = True,
               fail_fast: bool = False) -> CheckReport:
    """:func:`check_pool` for ``torch.nn.functional.fold``:
    ``fn(cols, output_size=, kernel_size=, dilation=, padding=, stride=)``, cols
    (N, C*kH*kW, L) or (C*kH*kW, L) -> (N, C, H, W); overlapping blocks must sum.
    Cases: :func:`fold_cases` or a :class:`FoldCase` list.

    >>> import jconv
    >>> check_fold(jconv.fold, cases="quick", dtypes=("float32",)).passed
    True
    """
    return _check("fold", fn, cases, dtypes, grads, seed, check_grads_cases, tolerances, jit,
                  fail_fast)


_assert_pool = _asserting(check_pool)


def assert_pool(fn: Callable[..., Any], function: str, **kwargs: Any) -> CheckReport:
    """Run :func:`check_pool` (same arguments) and raise AssertionError naming the first
    failing case as a runnable repro; returns the report when everything passed."""
    return _assert_pool(fn, function=function, **kwargs)


assert_unfold = _asserting(check_unfold)
assert_fold = _asserting(check_fold)
