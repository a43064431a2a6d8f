"""Cases and case grids for the N-D pooling family and unfold/fold: frozen, printable
(``repr`` is a runnable repro), each making its own inputs, reference output and reference
gradients from the float64 oracles of :mod:`jconv.testing._nd_oracle`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np

from ._cases import Arrays, _Case, _distinct_values
from ._grids import _SMALL_DRAWS, KINDS, _check_kind, _random_pair
from ._nd_oracle import (reference_adaptive_avg_pool, reference_adaptive_avg_pool_vjp,
                         reference_adaptive_max_pool, reference_adaptive_max_pool_vjp,
                         reference_avg_pool, reference_avg_pool_vjp, reference_fold,
                         reference_lp_pool, reference_lp_pool_vjp, reference_max_pool,
                         reference_max_pool_vjp, reference_unfold)

POOL_FUNCTIONS: tuple[str, ...] = tuple(
    f"{kind}{nd}d" for kind in ("max_pool", "avg_pool", "lp_pool", "adaptive_avg_pool",
                                "adaptive_max_pool") for nd in (1, 2, 3))


@dataclass(frozen=True)
class PoolCase(_Case):
    """One call of the N-D pooling function ``function`` (a ``torch.nn.functional`` name
    from :data:`POOL_FUNCTIONS`), channels first; only the arguments that function takes
    are passed. Max-pooling inputs hold distinct values (a unique argmax and gradient);
    lp-pooling inputs are positive (``x**p`` is real).

    >>> case = PoolCase("avg_pool3d", (1, 2, 4, 4, 4), 2, divisor_override=3)
    >>> case.kwargs
    {'kernel_size': 2, 'stride': None, 'padding': 0, 'ceil_mode': False, 'count_include_pad': True, 'divisor_override': 3}
    >>> case.reference(*case.inputs()).shape
    (1, 2, 2, 2, 2)
    """

    function: str
    x_shape: tuple[int, ...]
    kernel_size: Any = None
    stride: Any = None
    padding: Any = 0
    dilation: Any = 1
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: Optional[int] = None
    norm_type: float = 2.0
    output_size: Any = None
    seed: int = 0
    name: str = field(default="", compare=False)

    arg_names: ClassVar[tuple[str, ...]] = ("x",)

    def __post_init__(self) -> None:
        if self.function not in POOL_FUNCTIONS:
            raise ValueError(f"function must be one of {POOL_FUNCTIONS}, got {self.function!r}")

    @property
    def op(self) -> str:  # type: ignore[override]
        return self.function

    @property
    def kind(self) -> str:
        return self.function[:-2]

    @property
    def ndim(self) -> int:
        return int(self.function[-2])

    def kwargs_dict(self) -> dict[str, Any]:
        window = dict(kernel_size=self.kernel_size, stride=self.stride)
        if self.kind == "max_pool":
            return dict(**window, padding=self.padding, dilation=self.dilation,
                        ceil_mode=self.ceil_mode)
        if self.kind == "avg_pool":
            kw = dict(**window, padding=self.padding, ceil_mode=self.ceil_mode,
                      count_include_pad=self.count_include_pad)
            return kw if self.divisor_override is None else {
                **kw, "divisor_override": self.divisor_override}
        if self.kind == "lp_pool":
            return dict(norm_type=self.norm_type, **window, ceil_mode=self.ceil_mode)
        return dict(output_size=self.output_size)

    def _raw_inputs(self, rng: np.random.Generator) -> Arrays:
        if self.kind in ("max_pool", "adaptive_max_pool"):
            return (_distinct_values(rng, self.x_shape),)
        if self.kind == "lp_pool":
            return (np.abs(rng.standard_normal(self.x_shape)) + 0.5,)
        return (rng.standard_normal(self.x_shape),)

    def reference(self, *arrays: Any) -> np.ndarray:
        x, nd = arrays[0], self.ndim
        kw = self.kwargs
        if self.kind == "max_pool":
            return reference_max_pool(x, **kw, ndim=nd)[0]
        if self.kind == "avg_pool":
            return reference_avg_pool(x, **kw, ndim=nd)
        if self.kind == "lp_pool":
            return reference_lp_pool(x, **kw, ndim=nd)
        if self.kind == "adaptive_avg_pool":
            return reference_adaptive_avg_pool(x, **kw, ndim=nd)
        return reference_adaptive_max_pool(x, **kw, ndim=nd)[0]

    def reference_vjp(self, arrays: Arrays, ct: np.ndarray) -> Arrays:
        vjp = {"max_pool": reference_max_pool_vjp, "avg_pool": reference_avg_pool_vjp,
               "lp_pool": reference_lp_pool_vjp,
               "adaptive_avg_pool": reference_adaptive_avg_pool_vjp,
               "adaptive_max_pool": reference_adaptive_max_pool_vjp}[self.kind]
        return (vjp(arrays[0], ct, **self.kwargs, ndim=self.ndim),)

    def repro(self, dtype: str) -> str:
        return (f"from jconv.testing import {type(self).__name__}\ncase = {self!r}\n"
                f"x, = case.arrays({dtype!r})\n"
                f"y = fn(x, **case.kwargs)  # want: case.reference(*case.inputs({dtype!r}))")


def _own_repr(case: PoolCase, names: tuple[str, ...]) -> str:
    """``Name(field=value, ...)`` over ``names`` only: the repro of a 2-D case names the
    arguments its own constructor takes, not the whole N-D field set."""
    args = ", ".join(f"{n}={getattr(case, n)!r}" for n in names)
    return f"{type(case).__name__}({args})"


@dataclass(frozen=True, init=False, repr=False)
class MaxPool2dCase(PoolCase):
    """One max_pool2d call: ``PoolCase("max_pool2d", ...)`` under its 2-D name and
    arguments, so every check and grid that takes a ``PoolCase`` takes it. x (N, C, H, W)
    or (C, H, W) holds distinct values, so the argmax (and gradient) is unique.

    >>> case = MaxPool2dCase((1, 1, 4, 4), 2)
    >>> case.reference(*case.inputs()).shape, case.function, isinstance(case, PoolCase)
    ((1, 1, 2, 2), 'max_pool2d', True)
    """

    def __init__(self, x_shape: tuple[int, ...], kernel_size: Any, stride: Any = None,
                 padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False, seed: int = 0,
                 name: str = "") -> None:
        super().__init__("max_pool2d", x_shape, kernel_size, stride, padding, dilation,
                         ceil_mode, seed=seed, name=name)

    def __repr__(self) -> str:
        return _own_repr(self, ("x_shape", "kernel_size", "stride", "padding", "dilation",
                                "ceil_mode", "seed", "name"))


@dataclass(frozen=True, init=False, repr=False)
class AvgPool2dCase(PoolCase):
    """One avg_pool2d call: ``PoolCase("avg_pool2d", ...)`` under its 2-D name and
    arguments (``divisor_override`` included, passed only when set).

    >>> case = AvgPool2dCase((1, 1, 5, 5), 2, ceil_mode=True)
    >>> case.reference(*case.inputs()).shape
    (1, 1, 3, 3)
    """

    def __init__(self, x_shape: tuple[int, ...], kernel_size: Any, stride: Any = None,
                 padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                 seed: int = 0, name: str = "",
                 divisor_override: Optional[int] = None) -> None:
        super().__init__("avg_pool2d", x_shape, kernel_size, stride, padding,
                         ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                         divisor_override=divisor_override, seed=seed, name=name)

    def __repr__(self) -> str:
        return _own_repr(self, ("x_shape", "kernel_size", "stride", "padding", "ceil_mode",
                                "count_include_pad", "divisor_override", "seed", "name"))


@dataclass(frozen=True)
class UnfoldCase(_Case):
    """One ``unfold(x, kernel_size, dilation, padding, stride)`` call, x (N, C, H, W) or
    (C, H, W).

    >>> UnfoldCase((1, 2, 4, 4), 2).reference(*UnfoldCase((1, 2, 4, 4), 2).inputs()).shape
    (1, 8, 9)
    """

    x_shape: tuple[int, ...]
    kernel_size: Any
    dilation: Any = 1
    padding: Any = 0
    stride: Any = 1
    seed: int = 0
    name: str = field(default="", compare=False)

    op: ClassVar[str] = "unfold"
    arg_names: ClassVar[tuple[str, ...]] = ("x",)

    def kwargs_dict(self) -> dict[str, Any]:
        return dict(kernel_size=self.kernel_size, dilation=self.dilation, padding=self.padding,
                    stride=self.stride)

    def _raw_inputs(self, rng: np.random.Generator) -> Arrays:
        return (rng.standard_normal(self.x_shape),)

    def reference(self, *arrays: Any) -> np.ndarray:
        return reference_unfold(arrays[0], **self.kwargs)

    def reference_vjp(self, arrays: Arrays, ct: np.ndarray) -> Arrays:
        # unfold is linear: its VJP is fold (the oracle's, written independently).
        return (reference_fold(ct, self.x_shape[-2:], **self.kwargs),)


@dataclass(frozen=True)
class FoldCase(_Case):
    """One ``fold(cols, output_size, kernel_size, dilation, padding, stride)`` call; cols
    (N, C*kH*kW, L) (``batch=None``: (C*kH*kW, L)) with L the number of blocks.

    >>> case = FoldCase((3, 3), 2, 2)
    >>> case.inputs()[0].shape, case.reference(*case.inputs()).shape
    ((2, 8, 4), (2, 2, 3, 3))
    """

    output_size: Any
    channels: int
    kernel_size: Any
    dilation: Any = 1
    padding: Any = 0
    stride: Any = 1
    batch: Optional[int] = 2
    seed: int = 0
    name: str = field(default="", compare=False)

    op: ClassVar[str] = "fold"
    arg_names: ClassVar[tuple[str, ...]] = ("cols",)

    def kwargs_dict(self) -> dict[str, Any]:
        return dict(output_size=self.output_size, kernel_size=self.kernel_size,
                    dilation=self.dilation, padding=self.padding, stride=self.stride)

    def _image_shape(self) -> tuple[int, ...]:
        size = self.output_size if isinstance(self.output_size, (tuple, list)) else (
            self.output_size,) * 2
        return (self.batch or 1, self.channels, *size)

    def _raw_inputs(self, rng: np.random.Generator) -> Arrays:
        kw = {k: v for k, v in self.kwargs.items() if k != "output_size"}
        rows, length = reference_unfold(np.zeros(self._image_shape()), **kw).shape[1:]
        shape = (rows, length) if self.batch is None else (self.batch, rows, length)
        return (rng.standard_normal(shape),)

    def reference(self, *arrays: Any) -> np.ndarray:
        return reference_fold(arrays[0], **self.kwargs)

    def reference_vjp(self, arrays: Arrays, ct: np.ndarray) -> Arrays:
        kw = {k: v for k, v in self.kwargs.items() if k != "output_size"}
        return (reference_unfold(ct, **kw),)


_COUNTS = {"quick": 3, "default": 6, "full": 16}


_MAX_FORMS: list[tuple[Any, ...]] = [
    # (name, x_shape, kernel_size, stride, padding, dilation, ceil_mode)
    ("2x2", (2, 3, 7, 9), 2, None, 0, 1, False),
    ("3x3-s2-p1", (2, 3, 7, 9), 3, 2, 1, 1, False),
    ("rect-ceil", (2, 3, 7, 9), (3, 2), (2, 1), (1, 0), 1, True),
    ("dilated-ceil", (2, 3, 7, 9), 3, 2, 1, (2, 1), True),
    ("rect-strides-dilated", (2, 3, 7, 9), (2, 3), (3, 2), (0, 1), (1, 2), True),
    ("unbatched-overlap", (3, 8, 8), 3, 1, 0, 1, False),
]
_AVG_FORMS: list[tuple[Any, ...]] = [
    # (name, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad)
    ("2x2", (2, 3, 7, 9), 2, None, 0, False, True),
    ("3x3-s2-p1", (2, 3, 7, 9), 3, 2, 1, False, True),
    ("3x3-s2-p1-exclude-pad", (2, 3, 7, 9), 3, 2, 1, False, False),
    ("rect-ceil", (2, 3, 7, 9), (3, 2), (2, 1), 1, True, True),
    ("rect-ceil-exclude-pad", (2, 3, 7, 9), (3, 2), (2, 1), 1, True, False),
    ("unbatched-strides", (3, 7, 9), (2, 3), (3, 2), (1, 0), True, True),
]


def _pool_draw(rng: np.random.Generator) -> tuple[Any, ...]:
    k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    s = _random_pair(rng, 3)
    pad = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
    hw = (int(rng.integers(k[0] * 2, 10)), int(rng.integers(k[1] * 2, 10)))
    return (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *hw), k, s, pad


def max_pool2d_cases(kind: str = "default", n: int | None = None,
                     seed: int = 0) -> list[MaxPool2dCase]:
    """max_pool2d cases: 6 forms (stride default/int/pair, padding, dilation, ceil mode,
    unbatched) plus ``n`` random draws (default: 0 quick, 8 default, 60 full).

    >>> [len(max_pool2d_cases(k)) for k in KINDS]
    [6, 14, 66]
    """
    draws = _check_kind(kind, n, _SMALL_DRAWS)
    cases = [MaxPool2dCase(*f[1:], seed=seed * 100_000 + i, name=f[0])
             for i, f in enumerate(_MAX_FORMS)]
    rng = np.random.default_rng(seed + 11)
    for j in range(draws):
        x_shape, k, s, pad = _pool_draw(rng)
        d = (int(rng.integers(1, 3)), 1)
        cases.append(MaxPool2dCase(x_shape, k, s, pad, d, bool(rng.random() < 0.5),
                                   seed=seed * 100_000 + 1000 + j, name=f"random-{j}"))
    return cases


def avg_pool2d_cases(kind: str = "default", n: int | None = None,
                     seed: int = 0) -> list[AvgPool2dCase]:
    """avg_pool2d cases: 6 forms (stride default/int/pair, padding, ceil mode,
    ``count_include_pad`` both ways, unbatched) plus ``n`` random draws (0/8/60).

    >>> [len(avg_pool2d_cases(k)) for k in KINDS]
    [6, 14, 66]
    """
    draws = _check_kind(kind, n, _SMALL_DRAWS)
    cases = [AvgPool2dCase(*f[1:], seed=seed * 100_000 + i, name=f[0])
             for i, f in enumerate(_AVG_FORMS)]
    rng = np.random.default_rng(seed + 13)
    for j in range(draws):
        x_shape, k, s, pad = _pool_draw(rng)
        cases.append(AvgPool2dCase(x_shape, k, s, pad, bool(rng.random() < 0.5),
                                   bool(rng.random() < 0.5), seed=seed * 100_000 + 1000 + j,
                                   name=f"random-{j}"))
    return cases


def _draw_pool(function: str, rng: np.random.Generator, seed: int, index: int) -> PoolCase:
    nd = int(function[-2])
    kind = function[:-2]
    high = 6 if nd == 3 else 10  # bfloat16 holds distinct integers only up to 512
    size = tuple(int(v) for v in rng.integers(3, high, nd))
    channels = 2
    # Every third case is unbatched (C, *spatial).
    x_shape = (channels, *size) if index % 3 == 2 else (2, channels, *size)
    k = tuple(int(v) for v in rng.integers(1, 4, nd))
    common = dict(function=function, x_shape=x_shape, seed=seed + index,
                  name=f"{function} #{index}")
    if kind.startswith("adaptive"):
        out = [int(v) for v in rng.integers(1, 6, nd)]
        if index % 4 == 3 and nd > 1:  # PyTorch's 1-D adaptive pools take no None
            out[0] = None  # type: ignore[call-overload]  # None keeps that input size
        return PoolCase(**common, output_size=tuple(out))
    stride = None if index % 3 == 0 else tuple(int(v) for v in rng.integers(1, 4, nd))
    ceil_mode = bool(index % 2)
    if kind == "lp_pool":
        return PoolCase(**common, kernel_size=k, stride=stride, ceil_mode=ceil_mode,
                        norm_type=float(rng.choice([1.0, 2.0, 3.0, 1.5])))
    padding = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
    if kind == "max_pool":
        return PoolCase(**common, kernel_size=k, stride=stride, padding=padding,
                        dilation=tuple(int(v) for v in rng.integers(1, 3, nd)),
                        ceil_mode=ceil_mode)
    divisor = int(rng.integers(1, 5)) if nd > 1 and index % 4 == 1 else None
    return PoolCase(**common, kernel_size=k, stride=stride, padding=padding,
                    ceil_mode=ceil_mode, count_include_pad=bool(index % 3 != 1),
                    divisor_override=divisor)


def pool_cases(function: str, kind: str = "default", n: int | None = None, *,
               seed: int = 0) -> list[PoolCase]:
    """Random valid configurations of ``function`` (e.g. ``"max_pool3d"``) over its whole
    argument space: kernel, stride (and its default), padding up to half the kernel,
    dilation, ceil_mode, count_include_pad, divisor_override, norm_type, output sizes with
    ``None``, batched and unbatched. ``kind``: ``"quick"``, ``"default"`` or ``"full"``
    (counts below); ``n`` overrides the count. This is the grid ``check_pool`` runs for
    every function but ``max_pool2d`` and ``avg_pool2d``, whose grids are
    :func:`max_pool2d_cases` and :func:`avg_pool2d_cases` (hand-picked forms first); for
    those two, these are extra random configurations to pass as ``cases=``.

    >>> [len(pool_cases("max_pool1d", k)) for k in KINDS]
    [3, 6, 16]
    >>> [c.x_shape for c in pool_cases("max_pool1d", "quick")]
    [(2, 2, 8), (2, 2, 5), (2, 4)]
    """
    if function not in POOL_FUNCTIONS:
        raise ValueError(f"function must be one of {POOL_FUNCTIONS}, got {function!r}")
    count = _check_kind(kind, n, _COUNTS)
    rng = np.random.default_rng(seed)
    cases: list[PoolCase] = []
    while len(cases) < count:
        case = _draw_pool(function, rng, seed, len(cases))
        try:  # a draw whose window does not fit is not a valid call: draw again
            case.reference(*case.inputs())
        except ValueError:
            continue
        cases.append(case)
    return cases


def _block_draws(kind: str, n: int | None,
                 seed: int) -> list[tuple[int, tuple[int, ...], dict[str, Any]]]:
    """(index, image (H, W), block arguments) for the unfold/fold grids: random kernels,
    dilations, paddings and strides, redrawn until at least one block fits."""
    count = _check_kind(kind, n, _COUNTS)
    rng = np.random.default_rng(seed)
    draws: list[tuple[int, tuple[int, ...], dict[str, Any]]] = []
    while len(draws) < count:
        size = tuple(int(v) for v in rng.integers(3, 9, 2))
        kw = dict(kernel_size=tuple(int(v) for v in rng.integers(1, 4, 2)),
                  dilation=tuple(int(v) for v in rng.integers(1, 3, 2)),
                  padding=tuple(int(v) for v in rng.integers(0, 3, 2)),
                  stride=tuple(int(v) for v in rng.integers(1, 4, 2)))
        if all(n + 2 * p - d * (k - 1) - 1 >= 0 for n, k, d, p in
               zip(size, kw["kernel_size"], kw["dilation"], kw["padding"])):
            draws.append((len(draws), size, kw))
    return draws


def unfold_cases(kind: str = "default", n: int | None = None, *,
                 seed: int = 0) -> list[UnfoldCase]:
    """Random valid ``unfold`` configurations (overlapping and gapped blocks, dilation,
    padding, rectangular kernels), every third unbatched; counts as :func:`pool_cases`.

    >>> [len(unfold_cases(k)) for k in KINDS]
    [3, 6, 16]
    """
    return [UnfoldCase((2, *size) if i % 3 == 2 else (2, 2, *size), **kw, seed=seed + i,
                       name=f"unfold #{i}") for i, size, kw in _block_draws(kind, n, seed)]


def fold_cases(kind: str = "default", n: int | None = None, *,
               seed: int = 0) -> list[FoldCase]:
    """Random valid ``fold`` configurations (as :func:`unfold_cases`), every third
    unbatched.

    >>> [c.batch for c in fold_cases("quick")]
    [2, 2, None]
    """
    return [FoldCase(size, 2, **kw, batch=None if i % 3 == 2 else 2, seed=seed + i,
                     name=f"fold #{i}") for i, size, kw in _block_draws(kind, n, seed)]
