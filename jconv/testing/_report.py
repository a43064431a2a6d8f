"""Check results and the report that tabulates them."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

from ._tolerance import HALF_SUM_LAMBDA, UNIT_ROUNDOFF

# Tolerances on max|got - want| / max(1, max|want|), (forward, gradients), per input dtype.
# The inputs are rounded to the dtype before the oracle sees them, so these bound the
# arithmetic only: float64 leaves room for any summation order, float32 for a few hundred
# terms, half precisions for the output's rounding plus float32 accumulation, as PyTorch
# computes. Half-precision gradients get a little more: a gradient sums more rounded terms.
# A bias gradient summed in the half precision itself (the VJP of a plain ``y + b`` in
# bfloat16) can be further off; tolerance_mode="half-sum" accepts that (see _tolerance.py).
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-12, 1e-12),
    "float32": (1e-5, 1e-5),
    "float16": (2e-3, 4e-3),
    "bfloat16": (2e-2, 3e-2),
}


@dataclass(frozen=True)
class CheckResult:
    """One check of one case: ``status`` is ``"pass"``, ``"fail"`` or ``"unsupported"``;
    ``check`` names it (``"forward"``, ``"grad x"``, ``"check_grads rev"``, ...).
    ``half_sum_tolerance`` (half-precision bias gradients only) is the tolerance the check
    has under ``tolerance_mode="half-sum"``, whichever mode ran. ``resembles`` (failed
    conv forward values only) names the classic bugs whose output they match within the
    tolerance, of ``"flipped kernel"``, ``"no bias"``, ``"flipped kernel, no bias"``."""

    case_index: int
    case: Any
    dtype: str
    check: str
    status: str
    error: float | None = None
    tolerance: float | None = None
    message: str = ""
    half_sum_tolerance: float | None = None
    resembles: tuple[str, ...] = ()

    @property
    def within_half_sum(self) -> bool:
        """A bias gradient no further off than a sum in its half precision may be."""
        return (self.half_sum_tolerance is not None and self.error is not None
                and self.error <= max(self.half_sum_tolerance, self.tolerance or 0.0))

    def describe(self, op: str, label: str) -> str:
        """The failure as a paragraph: what, where, by how much, and a repro."""
        name = f" {self.case.name!r}" if self.case.name else ""
        head = (f"{op} case{name} (#{self.case_index} of {label}) FAILED [{self.dtype}] "
                f"{self.check}: {self.message}")
        lines = "\n".join("    " + line for line in self.case.repro(self.dtype).splitlines())
        return f"{head}\n  repro:\n{lines}"


@dataclass
class CheckReport:
    """Everything one ``check_*`` call found. ``passed`` is False if any check failed;
    ``str(report)`` is a PASS/FAIL table per dtype followed by the first failure."""

    op: str
    fn_name: str
    label: str
    n_cases: int
    dtypes: tuple[str, ...]
    tolerances: dict[str, tuple[float, float]]
    results: list[CheckResult] = field(default_factory=list)
    stopped_early: bool = False
    tolerance_mode: str = "pytorch"

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    def worst(self, dtype: str, kind: str = "forward") -> float:
        """Worst measured error for ``dtype``; ``kind`` is ``"forward"`` or ``"grad"``.
        ``nan`` when nothing was measured."""
        return _worst(r for r in self.results if r.dtype == dtype and r.check.startswith(kind))

    def likely_cause(self) -> str:
        """A paragraph naming the cause when the failures show a known pattern ('' if not):
        a bias gradient summed in half precision (only ``grad b`` fails, only in
        float16/bfloat16, each within :func:`half_sum_tolerance`), or a classic conv bug,
        a flipped kernel or an ignored bias (in every failing case the output equals the
        oracle's with the kernel flipped, or without the bias)."""
        bad = self.failures
        if not bad:
            return ""
        if all(r.check == "grad b" and r.within_half_sum for r in bad):
            return self._half_sum_cause(bad)
        return self._conv_bug_cause(bad)

    def _half_sum_cause(self, bad: list[CheckResult]) -> str:
        dtypes = " and ".join(sorted({r.dtype for r in bad}))
        return (f"Likely cause: only the bias gradient fails, only in {dtypes}, each within "
                f"what summing the cotangent over the N*H_out*W_out output pixels in {dtypes} "
                f"gives. That is a bias added in {dtypes} (a plain `y + b`, as "
                f"Equinox's and Flax's layers do): its gradient is then summed in {dtypes}, "
                f"while PyTorch accumulates it in float32. Standard {dtypes} rounding, not a "
                f"wrong convolution: to match PyTorch add the bias in float32 and round once; "
                f"to accept it pass tolerance_mode='half-sum' (CLI: --tolerance-mode "
                f"half-sum). See docs/testing.md.")

    def _conv_bug_cause(self, bad: list[CheckResult]) -> str:
        """The flipped-kernel / ignored-bias paragraph, when every failing case and dtype
        has wrong forward values and all of them match the same bug (its gradients then
        fail too, from the same cause)."""
        forward = [r for r in bad if r.check == "forward"]
        failing = {(r.case_index, r.dtype) for r in bad}
        if not forward or failing != {(r.case_index, r.dtype) for r in forward}:
            return ""
        both = "flipped kernel, no bias"
        fits = set(_CONV_BUGS)
        for r in forward:
            # A case without a bias shows only the flip of a conv that also ignores the bias.
            unbiased = not getattr(r.case, "bias", True) and "flipped kernel" in r.resembles
            fits &= set(r.resembles) | ({both} if unbiased else set())
        if not fits:
            return ""
        bug = min(fits, key=_CONV_BUGS.index)  # the simplest explanation of them all
        n = len({r.case_index for r in forward})
        where = (f"In all {n} failing case{'s' if n > 1 else ''} the output equals PyTorch's "
                 f"{self.op}")
        flip = (f"fn computes a true convolution, while torch.nn.functional.{self.op} is a "
                f"cross-correlation (the kernel is not flipped): drop the flip "
                f"(w[..., ::-1, ::-1] for 2-D)")
        drop = "fn ignores b: add b[c] to every output pixel of channel c"
        return {"flipped kernel": f"Likely cause: the kernel is flipped. {where} with w "
                                  f"flipped along its spatial axes: {flip}.",
                "no bias": f"Likely cause: the bias is ignored. {where} without the bias "
                           f"b (the cases without a bias pass): {drop}.",
                "flipped kernel, no bias": f"Likely cause: the kernel is flipped and the "
                                           f"bias ignored. {where} with w flipped along its "
                                           f"spatial axes and without b: {flip}; {drop}."}[bug]

    def first_failure(self) -> str:
        """The first failing check as a runnable repro ('' if none failed)."""
        return self.failures[0].describe(self.op, self.label) if self.failures else ""

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        early = ", stopped at the first failure" if self.stopped_early else ""
        lines = [f"check_{self.op}({self.fn_name}): {self.n_cases} cases ({self.label}{early}) "
                 f"-> {verdict}",
                 _MODE_LINES[self.tolerance_mode],
                 f"{'dtype':<10}{'forward err':>12}{'tol':>9}{'grad err':>12}{'tol':>9}"
                 f"{'failed':>10}  result"]
        for dtype in self.dtypes:
            rows = [r for r in self.results if r.dtype == dtype
                    and not r.check.startswith("check_grads")]
            bad = {r.case_index for r in rows if r.status == "fail"}
            fwd_tol, grad_tol = self.tolerances[dtype]
            # Bias gradients held to a half-sum bound get their own line, so that the
            # column's error always reads against the column's tolerance.
            own = [r for r in rows if r.error is not None and r.tolerance is not None
                   and r.check == "grad b" and r.tolerance > grad_tol]
            separate = {id(r) for r in own}
            grad = _worst(r for r in rows if r.check.startswith("grad") and id(r) not in separate)
            lines.append(f"{dtype:<10}{_fmt(self.worst(dtype, 'forward')):>12}{fwd_tol:>9.0e}"
                         f"{_fmt(grad):>12}{grad_tol:>9.0e}"
                         f"{f'{len(bad)}/{self.n_cases}':>10}  {'FAIL' if bad else 'PASS'}")
            if own:
                top = max(own, key=lambda r: r.error / r.tolerance)
                lines.append(f"  {dtype} grad b against the half-sum bound: worst error/bound "
                             f"{top.error / top.tolerance:.2f} (error {top.error:.1e}, bound "
                             f"{top.tolerance:.1e}, case #{top.case_index})")
        grads = [r for r in self.results if r.check.startswith("check_grads")]
        if grads:
            cases = len({r.case_index for r in grads})
            parts = []
            for mode in ("fwd", "rev"):
                rs = [r for r in grads if r.check.endswith(mode)]
                status = ("FAIL" if any(r.status == "fail" for r in rs) else
                          "unsupported" if rs and all(r.status == "unsupported" for r in rs)
                          else "PASS")
                notes = sorted({r.message for r in rs if r.message and r.status != "fail"})
                parts.append(f"{mode} {status}" + (f" ({notes[0]})" if notes else ""))
            lines.append(f"check_grads(order=2, float64, {cases} cases): " + ", ".join(parts))
        cause = self.likely_cause()
        if cause:
            lines.append(textwrap.fill(cause, width=96))
        if not self.passed:
            lines.append(f"{len(self.failures)} failed checks; first:")
            lines.append(self.first_failure())
        return "\n".join(lines)


_MODE_LINES = {
    "pytorch": "tolerance mode 'pytorch': PyTorch-exact (half precisions accumulate in "
               "float32 and round once)",
    "half-sum": f"tolerance mode 'half-sum': PyTorch-exact, except that a half-precision bias "
                f"gradient may be summed in that precision (bound {HALF_SUM_LAMBDA:g}*u*sqrt("
                f"sum of squared partial sums), u = "
                + ", ".join(f"{u:.1e} {d}" for d, u in UNIT_ROUNDOFF.items()) + ")",
}


# The classic conv bugs the checker recognises (``CheckResult.resembles``), simplest first.
_CONV_BUGS = ("flipped kernel", "no bias", "flipped kernel, no bias")


def _worst(results: Any) -> float:
    errs = [r.error for r in results if r.error is not None]
    return max(errs) if errs else float("nan")


def _fmt(err: float) -> str:
    return "-" if err != err else f"{err:.1e}"
