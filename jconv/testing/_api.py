"""The public ``check_*`` / ``assert_*`` functions of conv2d and conv_transpose2d, and the
one table of case grids every check resolves ``cases=`` with."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence, Union

from ._cases import Conv2dCase, ConvTranspose2dCase
from ._check import run_checks
from ._grids import KINDS, conv2d_cases, conv_transpose2d_cases
from ._nd_cases import (POOL_FUNCTIONS, FoldCase, PoolCase, UnfoldCase, avg_pool2d_cases,
                        fold_cases, max_pool2d_cases, pool_cases, unfold_cases)
from ._report import CheckReport

DTYPES: tuple[str, ...] = ("float64", "float32", "bfloat16")
# How many cases (from the front of the list, the richest forms) also get check_grads.
_CHECK_GRADS_CASES = {"quick": 1, "default": 2, "full": 6}
Cases = Union[str, Any, Sequence[Any]]

# op -> (its grid, grid(kind, n=None, seed=0) -> cases; the type its cases have). The one
# table: check_<op>, check_pool(fn, op), pytest_cases(op=op) and the CLI all read it, so a
# case list, its documented counts and the check that takes it cannot disagree. The 2-D max
# and avg pools have hand-picked forms besides random draws: those grids are theirs under
# either name (MaxPool2dCase and AvgPool2dCase are PoolCases).
GRIDS: dict[str, tuple[Callable[..., list[Any]], type]] = {
    "conv2d": (conv2d_cases, Conv2dCase),
    "conv_transpose2d": (conv_transpose2d_cases, ConvTranspose2dCase),
    **{f: (functools.partial(pool_cases, f), PoolCase) for f in POOL_FUNCTIONS},
    "max_pool2d": (max_pool2d_cases, PoolCase),
    "avg_pool2d": (avg_pool2d_cases, PoolCase),
    "unfold": (unfold_cases, UnfoldCase),
    "fold": (fold_cases, FoldCase),
}


def _resolve(op: str, cases: Cases, seed: int, check_grads_cases: int | None
             ) -> tuple[list[Any], str, int]:
    return resolve_cases(*GRIDS[op], cases, seed, check_grads_cases, op=op)


def resolve_cases(grid: Callable[..., list[Any]], case_type: type, cases: Cases, seed: int,
                  check_grads_cases: int | None, op: str | None = None
                  ) -> tuple[list[Any], str, int]:
    """(the case list, its label, how many get check_grads) for ``cases``: a kind of
    ``grid`` or the caller's own ``case_type`` instances (of ``op``, when given: a
    ``PoolCase`` of ``max_pool3d`` is no case of ``max_pool2d``)."""
    if isinstance(cases, str):
        if cases not in KINDS:
            raise ValueError(f"cases must be one of {KINDS} or a list of {case_type.__name__}, "
                             f"got {cases!r}")
        listed, label = grid(cases, seed=seed), f"{cases!r}, seed {seed}"
        n_grads = _CHECK_GRADS_CASES[cases]
    else:
        listed = [cases] if isinstance(cases, case_type) else list(cases)
        bad = [c for c in listed if not isinstance(c, case_type)
               or (op is not None and c.op != op)]
        if bad or not listed:
            # A type that several ops share (PoolCase) says which op's cases it wanted.
            of = "" if op is None or getattr(case_type, "op", None) == op else f" of {op}"
            raise TypeError(f"cases must be one of {KINDS} or a non-empty list of "
                            f"{case_type.__name__}{of}, got {bad[0] if bad else cases!r}")
        label, n_grads = "given cases", 1
    return listed, label, n_grads if check_grads_cases is None else check_grads_cases


def _check(op: str, fn: Callable[..., Any], cases: Cases, dtypes: Sequence[str], grads: bool,
           seed: int, check_grads_cases: int | None,
           tolerances: dict[str, tuple[float, float]] | None, jit: bool,
           fail_fast: bool = False, tolerance_mode: str = "pytorch") -> CheckReport:
    listed, label, n_grads = _resolve(op, cases, seed, check_grads_cases)
    return run_checks(op, fn, listed, label, dtypes, grads, n_grads, tolerances, jit,
                      fail_fast, tolerance_mode)


def check_conv2d(fn: Callable[..., Any], *, cases: Cases = "default",
                 dtypes: Sequence[str] = DTYPES, grads: bool = True, seed: int = 0,
                 check_grads_cases: int | None = None,
                 tolerances: dict[str, tuple[float, float]] | None = None,
                 jit: bool = True, fail_fast: bool = False,
                 tolerance_mode: str = "pytorch") -> CheckReport:
    """Check that ``fn`` is ``torch.nn.functional.conv2d``, gradients included.

    ``fn(x, w, b=None, *, stride, padding, dilation, groups)`` takes NCHW JAX arrays:
    x (N, C_in, H, W) or (C_in, H, W), w (C_out, C_in/groups, kH, kW), b (C_out,) or None,
    and returns (N, C_out, H_out, W_out). For every case and dtype it checks the output's
    shape, dtype and values against :func:`reference_conv2d`, and the reverse-mode gradients
    for x, w and b against the oracle's VJP, each with error
    ``max|got - want| / max(1, max|want|)`` under ``tolerances[dtype] = (forward, grad)``
    (defaults in ``DEFAULT_TOLERANCES``). The first ``check_grads_cases`` cases (default 1
    quick, 2 default, 6 full, 1 for a given list) also run ``jax.test_util.check_grads``
    with ``order=2`` in float64, each mode separately; a mode ``fn`` cannot do is reported
    "unsupported". Exceptions, wrong shapes or dtypes and NaNs are reported failures.

    Args:
      cases: ``"quick"``, ``"default"``, ``"full"`` (see :func:`conv2d_cases`), or your own
        :class:`Conv2dCase` list.
      dtypes: any of ``"float64"`` (run under ``jax.enable_x64`` for you), ``"float32"``,
        ``"bfloat16"``, ``"float16"``.
      grads: also check gradients.
      seed: which random draws and data.
      jit: call ``fn`` under ``jax.jit`` (one compile per case); falls back to eager for a
        function that needs concrete values.
      fail_fast: stop at the first failing case (all dtypes before it were checked).
      tolerance_mode: ``"pytorch"`` holds half precisions to PyTorch's float32
        accumulation; ``"half-sum"`` also accepts a bias gradient summed in the half
        precision itself (a plain ``y + b`` in bfloat16, as Equinox's and Flax's layers
        add it), within a per-case bound (see docs/testing.md). The report states the mode,
        and in ``"pytorch"`` mode names that cause when the failures fit it.

    Returns a :class:`CheckReport`: ``.passed``, ``.failures``, and ``str()`` a table.

    Example:
      >>> import jconv
      >>> from jconv import testing
      >>> report = testing.check_conv2d(jconv.conv2d, cases="quick", dtypes=("float32",))
      >>> report.passed
      True
    """
    return _check("conv2d", fn, cases, dtypes, grads, seed, check_grads_cases, tolerances,
                  jit, fail_fast, tolerance_mode)


def check_conv_transpose2d(fn: Callable[..., Any], *, cases: Cases = "default",
                           dtypes: Sequence[str] = DTYPES, grads: bool = True, seed: int = 0,
                           check_grads_cases: int | None = None,
                           tolerances: dict[str, tuple[float, float]] | None = None,
                           jit: bool = True, fail_fast: bool = False,
                           tolerance_mode: str = "pytorch") -> CheckReport:
    """:func:`check_conv2d` for ``torch.nn.functional.conv_transpose2d``:
    ``fn(x, w, b=None, *, stride, padding, output_padding, groups, dilation)`` with
    x (N, C_in, H, W), w (C_in, C_out/groups, kH, kW) -> (N, C_out, H_out, W_out).

    >>> import jconv
    >>> check_conv_transpose2d(jconv.conv_transpose2d, cases="quick", dtypes=("float32",),
    ...                        check_grads_cases=0).passed
    True
    """
    return _check("conv_transpose2d", fn, cases, dtypes, grads, seed, check_grads_cases, tolerances,
                  jit, fail_fast, tolerance_mode)


def _asserting(check: Callable[..., CheckReport]) -> Callable[..., CheckReport]:
    def assert_(fn: Callable[..., Any], **kwargs: Any) -> CheckReport:
        report = check(fn, **kwargs)
        if not report.passed:
            raise AssertionError(f"{report.first_failure()}\n\n{report}")
        return report
    assert_.__name__ = check.__name__.replace("check_", "assert_")
    assert_.__doc__ = (f"Run :func:`{check.__name__}` (same arguments) and raise "
                       "AssertionError naming the first failing case as a runnable repro; "
                       "returns the report when everything passed.")
    return assert_


assert_conv2d = _asserting(check_conv2d)
assert_conv_transpose2d = _asserting(check_conv_transpose2d)
