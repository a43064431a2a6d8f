"""Test cases, one class per op family: frozen, printable (their ``repr`` is a runnable
one-line repro), each making its own inputs, reference output and reference gradients from
the float64 oracles (:mod:`._oracle`, :mod:`._pool_oracle`). The 2-D classes
(``Conv2dCase``, ``MaxPool2dCase``, ``AvgPool2dCase``) are the N-D ones under their 2-D
names and arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import numpy as np

from ._oracle import (reference_conv_transposend, reference_conv_transposend_vjp,
                      reference_convnd, reference_convnd_vjp)
from ._pool_oracle import (reference_adaptive_avg_pool, reference_adaptive_avg_pool_vjp,
                           reference_adaptive_max_pool, reference_adaptive_max_pool_vjp,
                           reference_avg_pool, reference_avg_pool_vjp, reference_fold,
                           reference_lp_pool, reference_lp_pool_vjp, reference_max_pool,
                           reference_max_pool_vjp, reference_unfold)

Arrays = tuple[Any, ...]


def round_to(a: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to ``dtype`` and back, so the oracle sees what ``fn`` sees."""
    import jax.numpy as jnp  # bfloat16 is an ml_dtypes type that NumPy can cast to

    return np.asarray(np.asarray(a).astype(jnp.dtype(dtype)), np.float64)


def to_jax(a: np.ndarray | None, dtype: str) -> Any:
    """``a`` as a JAX array of ``dtype``: cast by NumPy, then ``jax.device_put``, because
    ``jnp.asarray`` of a NumPy array compiles a small XLA program per shape (``lax.stage``),
    a quarter of the checker's compiles."""
    import jax
    import jax.numpy as jnp

    return None if a is None else jax.device_put(np.asarray(a).astype(jnp.dtype(dtype)))


@dataclass(frozen=True)
class _Case:
    """What every case kind shares: inputs from its own seed, a cotangent, a repro."""

    op: ClassVar[str]
    arg_names: ClassVar[tuple[str, ...]]

    def kwargs_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments to pass to ``fn`` (and to the reference)."""
        return self.kwargs_dict()

    def _raw_inputs(self, rng: np.random.Generator) -> Arrays:
        raise NotImplementedError

    def inputs(self, dtype: str = "float64") -> Arrays:
        """The positional array arguments as float64 NumPy holding ``dtype``-rounded values
        (``None`` for an absent bias)."""
        raw = self._raw_inputs(np.random.default_rng(self.seed))  # type: ignore[attr-defined]
        return tuple(None if a is None else round_to(a, dtype) for a in raw)

    def arrays(self, dtype: str = "float32") -> Arrays:
        """The positional array arguments as JAX arrays of ``dtype``."""
        return tuple(to_jax(a, dtype) for a in self.inputs(dtype))

    def cotangent(self, shape: tuple[int, ...], dtype: str = "float64") -> np.ndarray:
        """The output cotangent used for gradient checks (float64 values, ``dtype``-rounded)."""
        rng = np.random.default_rng(self.seed + 1)  # type: ignore[attr-defined]
        return round_to(rng.standard_normal(shape), dtype)

    def is_of(self, op: str) -> bool:
        """Whether this is a case of ``op`` (a ``GRIDS`` name)."""
        return self.op == op

    def call(self, fn: Callable[..., Any], *arrays: Any) -> Any:
        """``fn`` applied the way this case's op is called."""
        return fn(*arrays, **self.kwargs)

    def reference(self, *arrays: Any) -> np.ndarray:
        raise NotImplementedError

    def reference_vjp(self, arrays: Arrays, ct: np.ndarray) -> Arrays:
        raise NotImplementedError

    def repro(self, dtype: str) -> str:
        """Lines that rebuild this case's failing call."""
        args = ", ".join(self.arg_names)
        return (f"from jconv.testing import {type(self).__name__}\n"
                f"case = {self!r}\n"
                f"{args} = case.arrays({dtype!r})\n"
                f"y = fn({args}, **case.kwargs)  # want: "
                f"jconv.testing.reference_{self.op}({args}, **case.kwargs)")


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

    def is_of(self, op: str) -> bool:
        return op == f"conv{len(self.w_shape) - 2}d"

    def reference(self, *arrays: Any) -> np.ndarray:
        return reference_convnd(*arrays, **self.kwargs)

    def reference_vjp(self, arrays: Arrays, ct: np.ndarray) -> Arrays:
        return reference_convnd_vjp(*arrays, ct, **self.kwargs)


def _own_repr(case: _Case, names: tuple[str, ...]) -> str:
    """``Name(field=value, ...)`` over ``names`` only: the repro of a 2-D case names the
    arguments its own constructor takes, not the whole N-D field set."""
    args = ", ".join(f"{n}={getattr(case, n)!r}" for n in names)
    return f"{type(case).__name__}({args})"


@dataclass(frozen=True, init=False, repr=False)
class Conv2dCase(ConvNdCase):
    """One conv2d call: ``ConvNdCase`` with zero padding under its 2-D name and arguments
    (``torch.nn.functional.conv2d`` has no ``padding_mode``).

    x_shape (N, C_in, H, W) or (C_in, H, W); w_shape (C_out, C_in/groups, kH, kW).

    >>> case = Conv2dCase((1, 2, 5, 5), (4, 1, 3, 3), padding="same", groups=2)
    >>> x, w, b = case.arrays("float32")
    >>> case.reference(*case.inputs("float32")).shape, isinstance(case, ConvNdCase)
    ((1, 4, 5, 5), True)
    """

    op: ClassVar[str] = "conv2d"

    def __init__(self, x_shape: tuple[int, ...], w_shape: tuple[int, int, int, int],
                 bias: bool = True, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: int = 1, seed: int = 0, name: str = "") -> None:
        if len(w_shape) != 4:
            raise ValueError(f"w_shape must be (C_out, C_in/groups, kH, kW), got {w_shape!r}")
        super().__init__(x_shape, w_shape, bias, stride, padding, dilation, groups,
                         seed=seed, name=name)

    def __repr__(self) -> str:
        return _own_repr(self, ("x_shape", "w_shape", "bias", "stride", "padding",
                                "dilation", "groups", "seed", "name"))


@dataclass(frozen=True)
class ConvTransposeNdCase(_Case):
    """One conv_transpose1d/2d/3d call (``len(w_shape) - 2`` spatial dims), channels first.
    x_shape (N, C_in, *spatial) or (C_in, *spatial); w_shape (C_in, C_out/groups, *kernel).

    >>> case = ConvTransposeNdCase((1, 2, 3), (2, 1, 3), stride=2)
    >>> case.reference(*case.inputs()).shape
    (1, 1, 7)
    """

    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    bias: bool = True
    stride: Any = 1
    padding: Any = 0
    output_padding: Any = 0
    groups: int = 1
    dilation: Any = 1
    seed: int = 0
    name: str = field(default="", compare=False)

    op: ClassVar[str] = "conv_transposend"
    arg_names: ClassVar[tuple[str, ...]] = ("x", "w", "b")

    def is_of(self, op: str) -> bool:
        return op == f"conv_transpose{len(self.w_shape) - 2}d"

    def kwargs_dict(self) -> dict[str, Any]:
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding, groups=self.groups,
                    dilation=self.dilation)

    def _raw_inputs(self, rng: np.random.Generator) -> Arrays:
        x, w = rng.standard_normal(self.x_shape), rng.standard_normal(self.w_shape)
        return x, w, rng.standard_normal(self.w_shape[1] * self.groups) if self.bias else None

    def reference(self, *arrays: Any) -> np.ndarray:
        return reference_conv_transposend(*arrays, **self.kwargs)

    def reference_vjp(self, arrays: Arrays, ct: np.ndarray) -> Arrays:
        return reference_conv_transposend_vjp(*arrays, ct, **self.kwargs)


class ConvTranspose2dCase(ConvTransposeNdCase):
    """One conv_transpose2d call: ``ConvTransposeNdCase`` under its 2-D name (the same
    fields). x_shape (N, C_in, H, W); w_shape (C_in, C_out/groups, kH, kW).

    >>> ConvTranspose2dCase((1, 2, 3, 3), (2, 1, 3, 3), stride=2).arrays()[0].shape
    (1, 2, 3, 3)
    """

    op: ClassVar[str] = "conv_transpose2d"


def _distinct_values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Distinct integers centred on 0: no ties (so max-pool gradients are unambiguous), and
    exact in bfloat16 while there are at most 512 of them."""
    size = int(np.prod(shape))
    return (rng.permutation(size) - size // 2).astype(np.float64).reshape(shape)


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
