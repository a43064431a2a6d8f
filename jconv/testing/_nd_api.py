"""``check_*`` / ``assert_*`` for the N-D pooling family (``check_max_pool2d`` and
``check_avg_pool2d`` are names of ``check_pool``) and unfold/fold, on the shared checking
engine (:func:`jconv.testing._check.run_checks`) and the one grid table (``_api.GRIDS``)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ._api import DTYPES, Cases, _asserting, _check
from ._nd_cases import POOL_FUNCTIONS
from ._report import CheckReport


def check_pool(fn: Callable[..., Any], function: str, *, cases: Cases = "default",
               dtypes: Sequence[str] = DTYPES, grads: bool = True, seed: int = 0,
               check_grads_cases: int | None = None,
               tolerances: dict[str, tuple[float, float]] | None = None, jit: bool = True,
               fail_fast: bool = False, tolerance_mode: str = "pytorch") -> CheckReport:
    """Check that ``fn`` is the PyTorch pooling function named ``function`` (one of
    ``max_pool1d/2d/3d``, ``avg_pool1d/2d/3d``, ``lp_pool1d/2d/3d``,
    ``adaptive_avg_pool1d/2d/3d``, ``adaptive_max_pool1d/2d/3d``), gradients included.

    ``fn(x, **case.kwargs)`` takes a channels-first JAX array, (N, C, *spatial) or
    (C, *spatial), and the keywords of that PyTorch function; it returns the pooled array.
    Everything else as :func:`jconv.testing.check_conv2d`: the values and the reverse-mode
    gradient against the float64 oracle per dtype, ``check_grads(order=2)`` on the first
    cases, and a :class:`CheckReport`. ``cases``: ``"quick"``/``"default"``/``"full"``
    random configurations (:func:`pool_cases`; for ``max_pool2d`` and ``avg_pool2d``
    :func:`max_pool2d_cases` and :func:`avg_pool2d_cases`, hand-picked forms first) or your
    own list of :class:`PoolCase` of ``function`` (:class:`MaxPool2dCase` and
    :class:`AvgPool2dCase` are ``PoolCase`` s).

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
                  fail_fast, tolerance_mode)


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


def check_max_pool2d(fn: Callable[..., Any], *, cases: Cases = "default",
                     dtypes: Sequence[str] = DTYPES, grads: bool = True, seed: int = 0,
                     check_grads_cases: int | None = None,
                     tolerances: dict[str, tuple[float, float]] | None = None,
                     jit: bool = True, fail_fast: bool = False,
                     tolerance_mode: str = "pytorch") -> CheckReport:
    """``check_pool(fn, "max_pool2d", ...)``: check that ``fn`` is
    ``torch.nn.functional.max_pool2d``, ``fn(x, kernel_size, stride=None, padding=0,
    dilation=1, ceil_mode=False)`` (called with keywords), x (N, C, H, W) or (C, H, W).
    ``cases``: a kind of :func:`max_pool2d_cases` or a list of :class:`MaxPool2dCase` (any
    ``PoolCase`` of ``max_pool2d``). Inputs hold distinct values, so the gradient (all of a
    window's cotangent to its max) is unambiguous. The other arguments are
    :func:`check_conv2d`'s.

    >>> import jconv
    >>> from jconv.testing import max_pool2d_cases
    >>> report = check_max_pool2d(jconv.max_pool2d, cases=max_pool2d_cases("quick"),
    ...                           dtypes=("float32",))
    >>> report.passed, report.n_cases
    (True, 6)
    """
    return check_pool(fn, "max_pool2d", cases=cases, dtypes=dtypes, grads=grads, seed=seed,
                      check_grads_cases=check_grads_cases, tolerances=tolerances, jit=jit,
                      fail_fast=fail_fast, tolerance_mode=tolerance_mode)


def check_avg_pool2d(fn: Callable[..., Any], *, cases: Cases = "default",
                     dtypes: Sequence[str] = DTYPES, grads: bool = True, seed: int = 0,
                     check_grads_cases: int | None = None,
                     tolerances: dict[str, tuple[float, float]] | None = None,
                     jit: bool = True, fail_fast: bool = False,
                     tolerance_mode: str = "pytorch") -> CheckReport:
    """``check_pool(fn, "avg_pool2d", ...)``: check that ``fn`` is
    ``torch.nn.functional.avg_pool2d``, ``fn(x, kernel_size, stride=None, padding=0,
    ceil_mode=False, count_include_pad=True)`` (called with keywords, plus
    ``divisor_override`` where a case sets it), x (N, C, H, W) or (C, H, W). ``cases``: a
    kind of :func:`avg_pool2d_cases` or a list of :class:`AvgPool2dCase` (any ``PoolCase``
    of ``avg_pool2d``).

    >>> import jconv
    >>> check_avg_pool2d(jconv.avg_pool2d, cases="quick", dtypes=("float32",)).passed
    True
    """
    return check_pool(fn, "avg_pool2d", cases=cases, dtypes=dtypes, grads=grads, seed=seed,
                      check_grads_cases=check_grads_cases, tolerances=tolerances, jit=jit,
                      fail_fast=fail_fast, tolerance_mode=tolerance_mode)


_assert_pool = _asserting(check_pool)


def assert_pool(fn: Callable[..., Any], function: str, **kwargs: Any) -> CheckReport:
    """Run :func:`check_pool` (same arguments) and raise AssertionError naming the first
    failing case as a runnable repro; returns the report when everything passed."""
    return _assert_pool(fn, function=function, **kwargs)


assert_max_pool2d = _asserting(check_max_pool2d)
assert_avg_pool2d = _asserting(check_avg_pool2d)
assert_unfold = _asserting(check_unfold)
assert_fold = _asserting(check_fold)
