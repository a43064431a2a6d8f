"""N-D convolution checks: ``check_conv(fn, ndim=...)``, ``check_conv1d``, ``check_conv3d``,
their case lists (every padding form and mode per dim) and ``ConvNdCase``."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ._api import DTYPES, Cases, _asserting, resolve_cases
from ._cases import Arrays, _Case
from ._check import run_checks
from ._grids import _check_kind
from ._oracle import conv_pads, reference_convnd, reference_convnd_vjp
from ._report import CheckReport

PADDING_MODES: tuple[str, ...] = ("zeros", "reflect", "replicate", "circular")
_NDIMS = (1, 2, 3)


@dataclass(frozen=True)
class ConvNdCase(_Case):
    """One conv1d/conv2d/conv3d call (``len(w_shape) - 2`` spatial dims), channels first.

    x_shape (N, C_in, *spatial) or (C_in, *spatial); w_shape (C_out, C_in/groups, *kernel).
    ``padding_mode`` is passed to ``fn`` only when it is not ``"zeros"``, so functions
    without that argument can be checked on the zero-padding cases.

    >>> case = ConvNdCase((1, 2, 7), (4, 1, 3), padding="same", groups=2,
    ...                   padding_mode="circular")
    >>> case.reference(*case.inputs("float32")).shape
    (1, 4, 7)
    """

    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    bias: bool = True
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    padding_mode: str = "zeros"
    seed: int = 0
    name: str = field(default="", compare=False)

    op: ClassVar[str] = "convnd"
    arg_names: ClassVar[tuple[str, ...]] = ("x", "w", "b")

    def kwargs_dict(self) -> dict[str, Any]:
        kw = dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                  groups=self.groups)
        return kw if self.padding_mode == "zeros" else {**kw, "padding_mode": self.padding_mode}

    def _raw_inputs(self, rng: np.random.Generator) -> Arrays:
        x, w = rng.standard_normal(self.x_shape), rng.standard_normal(self.w_shape)
        return x, w, rng.standard_normal(self.w_shape[0]) if self.bias else None

    def reference(self, *arrays: Any) -> np.ndarray:
        return reference_convnd(*arrays, **self.kwargs)

    def reference_vjp(self, arrays: Arrays, ct: np.ndarray) -> Arrays:
        return reference_convnd_vjp(*arrays, ct, **self.kwargs)


def _forms(ndim: int) -> list[tuple[Any, ...]]:
    """(name, x_shape, w_shape, bias, stride, padding, dilation, groups, padding_mode):
    every argument form per dim, unequal sizes per axis (an axis swap shows), and each
    padding mode with padding at both ends (a mode mixed up, or a wrap off by one, shows)."""
    sp, k = (9, 7, 6)[:ndim], (3, 2, 3)[:ndim]
    per_dim = (2, 1, 1)[:ndim]
    pairs = ((2, 1), (0, 2), (1, 0))[:ndim]
    return [
        ("everything", (2, 4, *sp), (6, 2, *k), True, per_dim, pairs, (1, 2, 1)[:ndim], 2,
         "zeros"),
        ("reflect", (2, 3, *sp), (4, 3, *k), True, 1, 2, 1, 1, "reflect"),
        ("replicate-pairs", (1, 2, *sp), (3, 2, *k), False, 1, pairs, 1, 1, "replicate"),
        ("circular-same", (2, 2, *sp), (2, 1, *k), True, 1, "same", (2, 1, 1)[:ndim], 2,
         "circular"),
        ("circular-wraps-whole", (1, 2, *(3, 3, 2)[:ndim]), (2, 2, *(3, 2, 2)[:ndim]), True,
         1, (3, 3, 2)[:ndim], 1, 1, "circular"),
        ("reflect-strided-dilated", (2, 2, *sp), (3, 2, *k), True, per_dim,
         (1, 2, 1)[:ndim], (2, 1, 2)[:ndim], 1, "reflect"),
        ("valid-depthwise", (2, 3, *sp), (6, 1, *k), False, 1, "valid", 1, 3, "zeros"),
        ("unbatched-replicate", (2, *sp), (4, 2, *k), True, 1, 1, 1, 1, "replicate"),
    ]


def _random_case(rng: np.random.Generator, ndim: int, seed: int, j: int,
                 modes: Sequence[str]) -> ConvNdCase:
    groups = int(rng.choice([1, 1, 2, 3]))
    cg, c_out = int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    k = tuple(int(v) for v in rng.integers(1, 4 if ndim < 3 else 3, ndim))
    d = tuple(int(v) for v in rng.integers(1, 3, ndim))
    s = tuple(int(v) for v in rng.integers(1, 3, ndim)) if rng.random() < 0.5 else (1,) * ndim
    mode = str(rng.choice(list(modes)))
    forms = ["int", "tuple", "pairs", "valid"] + (["same"] if s == (1,) * ndim else [])
    form = str(rng.choice(forms))
    p = [int(v) for v in rng.integers(0, 3, 2 * ndim)]
    padding: Any = {"int": p[0], "tuple": tuple(p[:ndim]), "valid": "valid", "same": "same",
                    "pairs": tuple((p[2 * i], p[2 * i + 1]) for i in range(ndim))}[form]
    pads = conv_pads(padding, k, d, s)
    # Big enough for the kernel and for reflect padding (< the size).
    size = tuple(max(dd * (kk - 1) + 1 - lo - hi, max(lo, hi) + 1) + int(rng.integers(0, 3))
                 for kk, dd, (lo, hi) in zip(k, d, pads))
    n = int(rng.integers(1, 3))
    x_shape = (groups * cg, *size) if rng.random() < 0.1 else (n, groups * cg, *size)
    return ConvNdCase(x_shape, (c_out, cg, *k), bool(rng.random() < 0.7), s, padding, d,
                      groups, mode, seed=seed * 100_000 + 1000 + j, name=f"random-{j}")


def conv_cases(ndim: int = 2, kind: str = "default", n: int | None = None, seed: int = 0,
               padding_modes: Sequence[str] = PADDING_MODES) -> list[ConvNdCase]:
    """The N-D conv cases of ``kind`` (``ndim`` spatial dims): ``"quick"`` (4 hand-picked
    forms, no draws), ``"default"`` (8 forms + 8 random draws) or ``"full"`` (8 + 60),
    keeping only those whose ``padding_mode`` is in ``padding_modes``.

    >>> [len(conv_cases(1, k)) for k in ("quick", "default", "full")]
    [4, 16, 68]
    >>> conv_cases(3, "quick")[0].w_shape
    (6, 2, 3, 2, 3)
    """
    if ndim not in _NDIMS:
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")
    bad = [m for m in padding_modes if m not in PADDING_MODES]
    if bad or not padding_modes or isinstance(padding_modes, str):
        raise ValueError(f"padding_modes must be a non-empty sequence of {PADDING_MODES}, "
                         f"got {padding_modes!r}")
    draws = _check_kind(kind, n, {"quick": 0, "default": 8, "full": 60})
    forms = _forms(ndim)[:4] if kind == "quick" else _forms(ndim)
    cases = [ConvNdCase(*f[1:], seed=seed * 100_000 + i, name=f[0])
             for i, f in enumerate(forms) if f[8] in padding_modes]
    rng = np.random.default_rng(seed * 10 + ndim)
    return cases + [_random_case(rng, ndim, seed, j, padding_modes) for j in range(draws)]


def check_conv(fn: Callable[..., Any], *, ndim: int = 2, cases: Cases = "default",
               dtypes: Sequence[str] = DTYPES, grads: bool = True, seed: int = 0,
               padding_modes: Sequence[str] = PADDING_MODES,
               check_grads_cases: int | None = None,
               tolerances: dict[str, tuple[float, float]] | None = None,
               jit: bool = True, fail_fast: bool = False) -> CheckReport:
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
    if ndim not in _NDIMS:
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")
    grid = functools.partial(conv_cases, ndim, padding_modes=padding_modes)
    listed, label, n_grads = resolve_cases(grid, ConvNdCase, cases, seed, check_grads_cases)
    return run_checks(f"conv{ndim}d", fn, listed, label, dtypes, grads, n_grads, tolerances,
                      jit, fail_fast)


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


assert_conv = _asserting(check_conv)
assert_conv1d = _asserting(check_conv1d)
assert_conv3d = _asserting(check_conv3d)
