"""Check results and the report that tabulates them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Tolerances on max|got - want| / max(1, max|want|), (forward, gradients), per input dtype.
# The inputs are rounded to the dtype before the oracle sees them, so these bound the
# arithmetic only: float64 leaves room for any summation order, float32 for a few hundred
# terms, half precisions for the output's rounding plus accumulation. Half-precision
# gradients get more: the VJP of a plain ``y + b`` sums the bias gradient over N*H_out*W_out
# pixels in that half precision (XLA:CPU does), a few percent off in bfloat16.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-12, 1e-12),
    "float32": (1e-5, 1e-5),
    "float16": (2e-3, 4e-3),
    "bfloat16": (2e-2, 3e-2),
}


@dataclass(frozen=True)
class CheckResult:
    """One check of one case: ``status`` is ``"pass"``, ``"fail"`` or ``"unsupported"``;
    ``check`` names it (``"forward"``, ``"grad x"``, ``"check_grads rev"``, ...)."""

    case_index: int
    case: Any
    dtype: str
    check: str
    status: str
    error: float | None = None
    tolerance: float | None = None
    message: str = ""

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

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    def worst(self, dtype: str, kind: str = "forward") -> float:
        """Worst measured error for ``dtype``; ``kind`` is ``"forward"`` or ``"grad"``.
        ``nan`` when nothing was measured."""
        errs = [r.error for r in self.results if r.dtype == dtype and r.error is not None
                and r.check.startswith(kind)]
        return max(errs) if errs else float("nan")

    def first_failure(self) -> str:
        """The first failing check as a runnable repro ('' if none failed)."""
        return self.failures[0].describe(self.op, self.label) if self.failures else ""

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        early = ", stopped at the first failure" if self.stopped_early else ""
        lines = [f"check_{self.op}({self.fn_name}): {self.n_cases} cases ({self.label}{early}) "
                 f"-> {verdict}",
                 f"{'dtype':<10}{'forward err':>12}{'tol':>9}{'grad err':>12}{'tol':>9}"
                 f"{'failed':>10}  result"]
        for dtype in self.dtypes:
            rows = [r for r in self.results if r.dtype == dtype
                    and not r.check.startswith("check_grads")]
            bad = {r.case_index for r in rows if r.status == "fail"}
            fwd_tol, grad_tol = self.tolerances[dtype]
            lines.append(f"{dtype:<10}{_fmt(self.worst(dtype, 'forward')):>12}{fwd_tol:>9.0e}"
                         f"{_fmt(self.worst(dtype, 'grad')):>12}{grad_tol:>9.0e}"
                         f"{f'{len(bad)}/{self.n_cases}':>10}  {'FAIL' if bad else 'PASS'}")
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
        if not self.passed:
            lines.append(f"{len(self.failures)} failed checks; first:")
            lines.append(self.first_failure())
        return "\n".join(lines)


def _fmt(err: float) -> str:
    return "-" if err != err else f"{err:.1e}"
