"""The checking engine shared by every ``check_*``: run ``fn`` on each case and dtype, compare
output and reverse-mode gradients with the float64 oracle, run ``check_grads`` on a few."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ._cases import to_jax
from ._report import DEFAULT_TOLERANCES, CheckReport, CheckResult
from ._tolerance import TOLERANCE_MODES, half_sum_tolerance

_MSG_CHARS = 400
# Compile time dominates a check (one XLA compile per case and dtype, milliseconds of
# running); XLA's backend optimisations change how fast the code runs, not what it computes.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= _MSG_CHARS else text[:_MSG_CHARS] + " ..."


@contextlib.contextmanager
def _x64(dtype: str) -> Iterator[None]:
    """float64 arrays need jax_enable_x64; switch it on for the float64 checks only, so the
    other dtypes run under the caller's own setting."""
    import jax

    if dtype == "float64":
        with jax.enable_x64(True):
            yield
    else:
        yield


def _tracer_errors() -> tuple[type[BaseException], ...]:
    import jax

    names = ("ConcretizationTypeError", "TracerArrayConversionError",
             "TracerBoolConversionError", "TracerIntegerConversionError")
    return tuple(getattr(jax.errors, n) for n in names if hasattr(jax.errors, n))


def _error(got: Any, want: np.ndarray) -> tuple[float, tuple[int, ...], float, float]:
    """max|got - want| / max(1, max|want|), with NaN/inf where want is finite counting as
    infinite error; also the worst index and the two values there."""
    got = np.asarray(got, np.float64)
    diff = np.abs(got - want)
    diff = np.where(np.isnan(diff), np.inf, diff)
    if diff.size == 0:
        return 0.0, (), 0.0, 0.0
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
    scale = max(1.0, float(np.abs(want).max()))
    return float(diff[idx]) / scale, idx, float(got[idx]), float(want[idx])


def _compare(rec: Callable[..., None], check: str, got: Any, want: np.ndarray, tol: float,
             where: str) -> None:
    shape = tuple(np.shape(got))
    if shape != want.shape:
        rec(check, "fail", message=f"{where} shape {shape}, expected {want.shape}")
        return
    err, idx, g, w = _error(got, want)
    if err <= tol:
        rec(check, "pass", err, tol)
    else:
        # The fixed tolerances read as set (3e-02); a computed one keeps its digits.
        shown = f"{tol:.0e}" if float(f"{tol:.0e}") == tol else f"{tol:.2e}"
        rec(check, "fail", err, tol, f"max error {err:.2e} > tolerance {shown} at {where} "
                                     f"index {idx} (got {g!r}, want {w!r})")


def _bug_variants(inputs: Sequence[Any]) -> list[tuple[str, tuple[Any, ...]]]:
    """The classic conv bugs as the inputs under which the oracle computes what the buggy
    function does: (name, (x, w, b)). A true convolution is a cross-correlation with the
    kernel flipped along every spatial axis; an ignored bias is a call without one."""
    x, w, b = inputs
    flipped = np.flip(w, axis=tuple(range(2, w.ndim)))
    variants = [("flipped kernel", (x, flipped, b))]
    if b is not None:
        variants += [("no bias", (x, w, None)), ("flipped kernel, no bias", (x, flipped, None))]
    return variants


def _resembles(case: Any, inputs: Sequence[Any], y: np.ndarray,
               tol: float) -> tuple[str, ...]:
    """The classic bugs (:func:`_bug_variants`) whose output ``y``, a wrong output of a conv
    case, matches within ``tol`` (several where they coincide: a flip of a 1x1 kernel is
    none); () for none, or for an op without a kernel and a bias."""
    if tuple(case.arg_names) != ("x", "w", "b"):
        return ()
    matches = []
    for name, args in _bug_variants(inputs):
        alt = case.reference(*args)
        if alt.shape == y.shape and _error(y, alt)[0] <= tol:
            matches.append(name)
    return tuple(matches)


def _with_diff_args(fn: Callable[..., Any], case: Any,
                    arrays: list[Any]) -> tuple[Callable[..., Any], list[int]]:
    """``case.call(fn, ...)`` as a function of the non-None entries of ``arrays`` alone, and
    their indices: the differentiable arguments of one check."""
    diff_idx = [i for i, a in enumerate(arrays) if a is not None]

    def call(*diff: Any) -> Any:
        full = list(arrays)
        for i, a in zip(diff_idx, diff):
            full[i] = a
        return case.call(fn, *full)

    return call, diff_idx


def _run(fn: Callable[..., Any], case: Any, arrays: list[Any], grads: bool, ct: Any,
         jit: bool) -> tuple[Any, Any, Any]:
    """(y, vjp primal, grads) from one compiled call; grads None when skipped."""
    import jax

    call, diff_idx = _with_diff_args(fn, case, arrays)

    def run(diff: list[Any], ct: Any) -> tuple[Any, Any, Any]:
        y = call(*diff)
        if not grads or tuple(np.shape(y)) != tuple(ct.shape):
            return y, None, None
        y2, pull = jax.vjp(call, *diff)
        return y, y2, pull(ct.astype(y2.dtype))

    diff = [arrays[i] for i in diff_idx]
    if jit:
        try:
            lowered = jax.jit(run).lower(diff, ct)
        except _tracer_errors():
            return run(diff, ct)  # fn needs concrete values: check it eagerly instead
        try:
            compiled = lowered.compile(_FAST_COMPILE)
        except Exception:  # a backend that does not know the options: compile as usual
            compiled = lowered.compile()
        return compiled(diff, ct)
    return run(diff, ct)


def _check_case(fn: Callable[..., Any], case: Any, index: int, dtype: str, grads: bool,
                tols: tuple[float, float], jit: bool, out: list[CheckResult],
                tolerance_mode: str = "pytorch") -> bool:
    """Forward and gradient checks of one case in one dtype; True if all passed."""
    import jax.numpy as jnp

    n_before = len(out)

    def rec(check: str, status: str, error: float | None = None, tol: float | None = None,
            message: str = "", half_sum: float | None = None) -> None:
        out.append(CheckResult(index, case, dtype, check, status, error, tol, message,
                               half_sum))

    inputs = case.inputs(dtype)
    want = case.reference(*inputs)
    ct = case.cotangent(want.shape, dtype)
    with _x64(dtype):
        arrays = [to_jax(a, dtype) for a in inputs]
        try:
            y, y2, got_grads = _run(fn, case, arrays, grads, to_jax(ct, dtype), jit)
            y, y2 = np.asarray(y), None if y2 is None else np.asarray(y2)
            got_grads = None if got_grads is None else [np.asarray(g) for g in got_grads]
        except Exception as exc:  # a user fn may raise anything: report it, never crash
            rec("forward", "fail", message=f"raised {_short(exc)}")
            return False
    if y.dtype != jnp.dtype(dtype):
        rec("forward", "fail", message=f"output dtype {y.dtype}, expected {dtype}")
    _compare(rec, "forward", y, want, tols[0], "output")
    if out[-1].check == "forward" and out[-1].status == "fail" and out[-1].error is not None:
        # Wrong values: say whether they are a classic bug's, for the report's likely cause.
        out[-1] = dataclasses.replace(out[-1], resembles=_resembles(case, inputs, y, tols[0]))
    if y2 is not None and tuple(y2.shape) == want.shape and _error(y2, want)[0] > tols[0]:
        _compare(rec, "forward (jax.vjp primal)", y2, want, tols[0], "output")
    if grads and got_grads is not None:
        want_grads = case.reference_vjp(inputs, ct)
        present = [(n, w) for n, a, w in zip(case.arg_names, inputs, want_grads) if a is not None]
        for (name, w), g in zip(present, got_grads):
            tol, half_sum = tols[1], None
            if name == "b":  # sums ct over all but the channel axis, w's spatial dims after it
                half_sum = half_sum_tolerance(ct, w, dtype, ct.ndim - inputs[1].ndim + 1)
                if tolerance_mode == "half-sum" and half_sum is not None:
                    tol = max(tol, half_sum)
            _compare(functools.partial(rec, half_sum=half_sum), f"grad {name}", g, w, tol,
                     f"d{name}")
    return all(r.status != "fail" for r in out[n_before:])


def _check_grads_case(fn: Callable[..., Any], case: Any, index: int,
                      out: list[CheckResult]) -> None:
    """jax.test_util.check_grads(order=2) in float64, each mode on its own; a mode the function
    cannot do (a custom_vjp has no forward mode) is reported unsupported."""
    import jax.numpy as jnp
    from jax.test_util import check_grads

    with _x64("float64"):
        arrays = [to_jax(a, "float64") for a in case.inputs("float64")]
        call, diff_idx = _with_diff_args(fn, case, arrays)
        diff = tuple(arrays[i] for i in diff_idx)
        for mode in ("fwd", "rev"):
            check = f"check_grads {mode}"
            try:
                check_grads(call, diff, order=2, modes=(mode,))
                status, note = "pass", ""
            except AssertionError as exc:
                status, note = "fail", f"check_grads(order=2) failed: {_short(exc)}"
            except Exception as exc:
                status, note = _order1(check_grads, call, diff, mode, exc)
            out.append(CheckResult(index, case, "float64", check, status, message=note))


def _order1(check_grads: Callable[..., Any], call: Callable[..., Any], diff: tuple[Any, ...],
            mode: str, exc2: Exception) -> tuple[str, str]:
    """Order 2 raised: fall back to order 1 and say so."""
    try:
        check_grads(call, diff, order=1, modes=(mode,))
        return "pass", f"order 1 only; order 2 raised {type(exc2).__name__}"
    except AssertionError as exc:
        return "fail", f"check_grads(order=1) failed: {_short(exc)}"
    except Exception as exc:
        if "custom_vjp" in str(exc):
            return "unsupported", "custom_vjp: no forward mode"
        return "unsupported", _short(exc)


def run_checks(op: str, fn: Callable[..., Any], cases: Sequence[Any], label: str,
               dtypes: Sequence[str], grads: bool, check_grads_cases: int,
               tolerances: dict[str, tuple[float, float]] | None, jit: bool,
               fail_fast: bool = False, tolerance_mode: str = "pytorch") -> CheckReport:
    """Check ``fn`` on every case and dtype; see :func:`jconv.testing.check_conv2d`."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    if inspect.isclass(fn):  # calling it would build a layer, failing every case alike
        raise TypeError(f"fn is a class ({fn.__qualname__}), not a conv function: build the "
                        f"layer and check it with jconv.testing.from_layer(make), make(w, b, "
                        f"**conv_kwargs) returning the layer")
    if tolerance_mode not in TOLERANCE_MODES:
        raise ValueError(f"tolerance_mode must be one of {TOLERANCE_MODES}, "
                         f"got {tolerance_mode!r}")
    if isinstance(dtypes, str):
        dtypes = (dtypes,)
    tols = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    for d in dtypes:
        if d not in tols:
            raise ValueError(f"dtypes entries must be one of {tuple(tols)}, got {d!r}")
    if not isinstance(check_grads_cases, int) or check_grads_cases < 0:
        raise ValueError(f"check_grads_cases must be a non-negative int, "
                         f"got {check_grads_cases!r}")
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    report = CheckReport(op, name, label, len(cases), tuple(dtypes), tols,
                         tolerance_mode=tolerance_mode)
    float64_ok: dict[int, bool] = {}
    for dtype in dtypes:
        for i, case in enumerate(cases):
            ok = _check_case(fn, case, i, dtype, grads, tols[dtype], jit, report.results,
                             tolerance_mode)
            if dtype == "float64":
                float64_ok[i] = ok
            if fail_fast and not ok:
                report.stopped_early = True
                return report
    if grads and "float64" in dtypes:
        for i, case in enumerate(cases[:check_grads_cases]):
            if float64_ok.get(i):  # a case that already failed would only fail again
                _check_grads_case(fn, case, i, report.results)
    return report
