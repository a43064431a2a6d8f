"""The public ``check_*`` / ``assert_*`` functions: one path for every op. Each resolves
``cases=`` with the one grid table (:data:`jconv.testing._grids.GRIDS`) and runs the shared
engine (:func:`jconv.testing._check.run_checks`); the 2-D names (``check_conv2d``,
``check_max_pool2d``, ...) are the N-D checks under PyTorch's 2-D names."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence, Union

from ._cases import POOL_FUNCTIONS, ConvNdCase
from ._check import run_checks
from ._grids import GRIDS, KINDS, NDIMS, PADDING_MODES, conv_cases
from ._report import CheckReport

DTYPES: tuple[str, ...] = ("float64", "float32", "bfloat16")
# How many cases (from the front of the list, the richest forms) also get check_grads.
_CHECK_GRADS_CASES = {"quick": 1, "default": 2, "full": 6}
Cases = Union[str, Any, Sequence[Any]]


def resolve_cases(op: str, cases: Cases, seed: int, check_grads_cases: int | None,
                  grid: Callable[..., list[Any]] | None = None, case_type: type | None = None
                  ) -> tuple[list[Any], str, int]:
    """(the case list, its label, how many get check_grads) for ``cases``: a kind of ``op``'s
    grid (``GRIDS[op]`` unless ``grid``/``case_type`` are given) or the caller's own cases
    of ``op`` (a ``PoolCase`` of ``max_pool3d`` is no case of ``max_pool2d``)."""
    grid = grid or GRIDS[op][0]
    case_type = case_type or GRIDS[op][1]
    if isinstance(cases, str):
        if cases not in KINDS:
            raise ValueError(f"cases must be one of {KINDS} or a list of {case_type.__name__}, "
                             f"got {cases!r}")
        listed, label = grid(cases, seed=seed), f"{cases!r}, seed {seed}"
        n_grads = _CHECK_GRADS_CASES[cases]
    else:
        listed = [cases] if isinstance(cases, case_type) else list(cases)
        bad = [c for c in listed if not isinstance(c, case_type) or not c.is_of(op)]
        if bad or not listed:
            # A type that several ops share (PoolCase, ConvNdCase) says which op's it wanted.
            of = "" if getattr(case_type, "op", None) == op else f" of {op}"
            raise TypeError(f"cases must be one of {KINDS} or a non-empty list of "
                            f"{case_type.__name__}{of}, got {bad[0] if bad else cases!r}")
        label, n_grads = "given cases", 1
    return listed, label, n_grads if check_grads_cases is None else check_grads_cases


def _check(op: str, fn: Callable[..., Any], cases: Cases, dtypes: Sequence[str], grads: bool,
           seed: int, check_grads_cases: int | None,
           tolerances: dict[str, tuple[float, float]] | None, jit: bool,
           fail_fast: bool = False, tolerance_mode: str = "pytorch", **grid: Any
           ) -> CheckReport:
    listed, label, n_grads = resolve_cases(op, cases, seed, check_grads_cases, **grid)
    return run_checks(op, fn, listed, label, dtypes, grads, n_grads, tolerances, jit,
                      fail_fast, tolerance_mode)


def check_op(fn: Callable[..., Any], op: str, *, cases: Cases = "default",
             dtypes: Sequence[str] = DTYPES, grads: bool = True, seed: int = 0,
             check_grads_cases: int | None = None,
             tolerances: dict[str, tuple[float, float]] | None = None, jit: bool = True,
             fail_fast: bool = False, tolerance_mode: str = "pytorch") -> CheckReport:
    """Check ``fn`` as the op named ``op`` (any ``GRIDS`` name, ``"conv1d"`` ... ``"fold"``)
    on that op's grid: what ``check_<op>`` does, by name (the CLI's one path).

    >>> import jconv
    >>> check_op(jconv.lp_pool1d, "lp_pool1d", cases="quick", dtypes=("float32",)).passed
    True
    """
    if op not in GRIDS:
        raise ValueError(f"op must be one of {tuple(GRIDS)}, got {op!r}")
    return _check(op, fn, cases, dtypes, grads, seed, check_grads_cases, tolerances, jit,
                  fail_fast, tolerance_mode)


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


def check_conv_transpose(fn: Callable[..., Any], *, ndim: int = 2, cases: Cases = "default",
                         dtypes: Sequence[str] = DTYPES, grads: bool = True, seed: int = 0,
                         check_grads_cases: int | None = None,
                         tolerances: dict[str, tuple[float, float]] | None = None,
                         jit: bool = True, fail_fast: bool = False,
                         tolerance_mode: str = "pytorch") -> CheckReport:
    """:func:`check_conv2d` for ``torch.nn.functional.conv_transpose{ndim}d``:
    ``fn(x, w, b=None, *, stride, padding, output_padding, groups, dilation)`` with
    x (N, C_in, *spatial) or (C_in, *spatial), w (C_in, C_out/groups, *kernel) ->
    (N, C_out, *out). ``cases``: a kind of :func:`conv_transpose_cases` or a list of
    :class:`ConvTransposeNdCase` (a :class:`ConvTranspose2dCase` is one).

    >>> import jconv
    >>> check_conv_transpose(jconv.conv_transpose3d, ndim=3, cases="quick",
    ...                      dtypes=("float32",), check_grads_cases=0).passed
    True
    """
    if ndim not in NDIMS:
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")
    return _check(f"conv_transpose{ndim}d", fn, cases, dtypes, grads, seed, check_grads_cases,
                  tolerances, jit, fail_fast, tolerance_mode)


def check_conv_transpose1d(fn: Callable[..., Any], **kwargs: Any) -> CheckReport:
    """:func:`check_conv_transpose` with ``ndim=1``, (N, C_in, L) inputs.

    >>> import jconv
    >>> check_conv_transpose1d(jconv.conv_transpose1d, cases="quick", dtypes=("float64",)).passed
    True
    """
    return check_conv_transpose(fn, ndim=1, **kwargs)


def check_conv_transpose3d(fn: Callable[..., Any], **kwargs: Any) -> CheckReport:
    """:func:`check_conv_transpose` with ``ndim=3``, (N, C_in, D, H, W) inputs.

    >>> import jconv
    >>> check_conv_transpose3d(jconv.conv_transpose3d, cases="quick", dtypes=("float32",),
    ...                        check_grads_cases=0).passed
    True
    """
    return check_conv_transpose(fn, ndim=3, **kwargs)


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
    return check_conv_transpose(fn, ndim=2, cases=cases, dtypes=dtypes, grads=grads, seed=seed,
                                check_grads_cases=check_grads_cases, tolerances=tolerances,
                                jit=jit, fail_fast=fail_fast, tolerance_mode=tolerance_mode)


def check_conv(fn: Callable[..., Any], *, ndim: int = 2, cases: Cases = "default",
               dtypes: Sequence[str] = DTYPES, grads: bool = True, seed: int = 0,
               padding_modes: Sequence[str] = PADDING_MODES,
               check_grads_cases: int | None = None,
               tolerances: dict[str, tuple[float, float]] | None = None,
               jit: bool = True, fail_fast: bool = False,
               tolerance_mode: str = "pytorch") -> CheckReport:
    """Check that ``fn`` is ``torch.nn.functional.conv{ndim}d`` (with ``torch.nn.ConvNd``'s
    ``padding_mode``), gradients included: :func:`check_conv2d` for 1, 2 or 3 spatial dims.

    ``fn(x, w, b=None, *, stride, padding, dilation, groups[, padding_mode])`` takes
    channels-first JAX arrays: x (N, C_in, *spatial) or (C_in, *spatial),
    w (C_out, C_in/groups, *kernel), b (C_out,) or None. ``padding_mode`` is passed only
    for non-zero modes; pass ``padding_modes=("zeros",)`` for a function without it.
    ``cases``: ``"quick"``, ``"default"``, ``"full"`` (see :func:`conv_cases`) or a list of
    :class:`ConvNdCase`. The other arguments are :func:`check_conv2d`'s.

    Example:
      >>> import jconv
      >>> from jconv import testing
      >>> testing.check_conv(jconv.conv3d, ndim=3, cases="quick", dtypes=("float32",),
      ...                    check_grads_cases=0).passed
      True
    """
    if ndim not in NDIMS:
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")
    grid = functools.partial(conv_cases, ndim, padding_modes=padding_modes)
    return _check(f"conv{ndim}d", fn, cases, dtypes, grads, seed, check_grads_cases,
                  tolerances, jit, fail_fast, tolerance_mode, grid=grid, case_type=ConvNdCase)


def check_conv1d(fn: Callable[..., Any], **kwargs: Any) -> CheckReport:
    """:func:`check_conv` with ``ndim=1``: ``fn`` is ``conv1d`` on (N, C_in, L) inputs.

    >>> import jconv
    >>> check_conv1d(jconv.conv1d, cases="quick", dtypes=("float64",)).passed
    True
    """
    return check_conv(fn, ndim=1, **kwargs)


def check_conv3d(fn: Callable[..., Any], **kwargs: Any) -> CheckReport:
    """:func:`check_conv` with ``ndim=3``: ``fn`` is ``conv3d`` on (N, C_in, D, H, W) inputs.

    >>> import jconv
    >>> check_conv3d(jconv.conv3d, cases="quick", dtypes=("float32",),
    ...              check_grads_cases=0).passed
    True
    """
    return check_conv(fn, ndim=3, **kwargs)


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


assert_conv2d = _asserting(check_conv2d)
assert_conv_transpose = _asserting(check_conv_transpose)
assert_conv_transpose1d = _asserting(check_conv_transpose1d)
assert_conv_transpose2d = _asserting(check_conv_transpose2d)
assert_conv_transpose3d = _asserting(check_conv_transpose3d)
assert_conv = _asserting(check_conv)
assert_conv1d = _asserting(check_conv1d)
assert_conv3d = _asserting(check_conv3d)
assert_max_pool2d = _asserting(check_max_pool2d)
assert_avg_pool2d = _asserting(check_avg_pool2d)
assert_unfold = _asserting(check_unfold)
assert_fold = _asserting(check_fold)
