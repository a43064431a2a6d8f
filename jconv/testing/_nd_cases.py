"""Cases and case grids for the N-D pooling family and unfold/fold: frozen, printable
(``repr`` is a runnable repro), each making its own inputs, reference output and reference
gradients from the float64 oracles of :mod:`jconv.testing._nd_oracle`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np

from ._cases import Arrays, _Case, _distinct_values
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
        return (f"from jconv.testing import PoolCase\ncase = {self!r}\n"
                f"x, = case.arrays({dtype!r})\n"
                f"y = fn(x, **case.kwargs)  # want: case.reference(*case.inputs({dtype!r}))")


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


def pool_cases(function: str, kind: str = "default", *, seed: int = 0) -> list[PoolCase]:
    """Random valid configurations of ``function`` (e.g. ``"max_pool3d"``) over its whole
    argument space: kernel, stride (and its default), padding up to half the kernel,
    dilation, ceil_mode, count_include_pad, divisor_override, norm_type, output sizes with
    ``None``, batched and unbatched. ``kind``: ``"quick"`` (3 cases), ``"default"`` (6),
    ``"full"`` (16).

    >>> [c.x_shape for c in pool_cases("max_pool1d", "quick")]
    [(2, 2, 8), (2, 2, 5), (2, 4)]
    """
    if function not in POOL_FUNCTIONS:
        raise ValueError(f"function must be one of {POOL_FUNCTIONS}, got {function!r}")
    if kind not in _COUNTS:
        raise ValueError(f"kind must be one of {tuple(_COUNTS)}, got {kind!r}")
    rng = np.random.default_rng(seed)
    cases: list[PoolCase] = []
    while len(cases) < _COUNTS[kind]:
        case = _draw_pool(function, rng, seed, len(cases))
        try:  # a draw whose window does not fit is not a valid call: draw again
            case.reference(*case.inputs())
        except ValueError:
            continue
        cases.append(case)
    return cases


def _block_draws(kind: str, seed: int) -> list[tuple[int, tuple[int, ...], dict[str, Any]]]:
    """(index, image (H, W), block arguments) for the unfold/fold grids: random kernels,
    dilations, paddings and strides, redrawn until at least one block fits."""
    if kind not in _COUNTS:
        raise ValueError(f"kind must be one of {tuple(_COUNTS)}, got {kind!r}")
    rng = np.random.default_rng(seed)
    draws: list[tuple[int, tuple[int, ...], dict[str, Any]]] = []
    while len(draws) < _COUNTS[kind]:
        size = tuple(int(v) for v in rng.integers(3, 9, 2))
        kw = dict(kernel_size=tuple(int(v) for v in rng.integers(1, 4, 2)),
                  dilation=tuple(int(v) for v in rng.integers(1, 3, 2)),
                  padding=tuple(int(v) for v in rng.integers(0, 3, 2)),
                  stride=tuple(int(v) for v in rng.integers(1, 4, 2)))
        if all(n + 2 * p - d * (k - 1) - 1 >= 0 for n, k, d, p in
               zip(size, kw["kernel_size"], kw["dilation"], kw["padding"])):
            draws.append((len(draws), size, kw))
    return draws


def unfold_cases(kind: str = "default", *, seed: int = 0) -> list[UnfoldCase]:
    """Random valid ``unfold`` configurations (overlapping and gapped blocks, dilation,
    padding, rectangular kernels), every third unbatched; counts as :func:`pool_cases`.

    >>> len(unfold_cases("quick"))
    3
    """
    return [UnfoldCase((2, *size) if i % 3 == 2 else (2, 2, *size), **kw, seed=seed + i,
                       name=f"unfold #{i}") for i, size, kw in _block_draws(kind, seed)]


def fold_cases(kind: str = "default", *, seed: int = 0) -> list[FoldCase]:
    """Random valid ``fold`` configurations (as :func:`unfold_cases`), every third
    unbatched.

    >>> [c.batch for c in fold_cases("quick")]
    [2, 2, None]
    """
    return [FoldCase(size, 2, **kw, batch=None if i % 3 == 2 else 2, seed=seed + i,
                     name=f"fold #{i}") for i, size, kw in _block_draws(kind, seed)]
