"""Test cases: frozen, printable (their ``repr`` is a runnable one-line repro), and able to
make their own inputs, reference output and reference gradients."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from ._oracle import (reference_conv2d, reference_conv2d_vjp, reference_conv_transpose2d,
                      reference_conv_transpose2d_vjp)

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
        import jax.numpy as jnp

        return tuple(to_jax(a, dtype) for a in self.inputs(dtype))

    def cotangent(self, shape: tuple[int, ...], dtype: str = "float64") -> np.ndarray:
        """The output cotangent used for gradient checks (float64 values, ``dtype``-rounded)."""
        rng = np.random.default_rng(self.seed + 1)  # type: ignore[attr-defined]
        return round_to(rng.standard_normal(shape), dtype)

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
class Conv2dCase(_Case):
    """One conv2d call: shapes, arguments and the seed of its data.

    x_shape (N, C_in, H, W) or (C_in, H, W); w_shape (C_out, C_in/groups, kH, kW).

    >>> case = Conv2dCase((1, 2, 5, 5), (4, 1, 3, 3), padding="same", groups=2)
    >>> x, w, b = case.arrays("float32")
    >>> case.reference(*case.inputs("float32")).shape
    (1, 4, 5, 5)
    """

    x_shape: tuple[int, ...]
    w_shape: tuple[int, int, int, int]
    bias: bool = True
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    seed: int = 0
    name: str = field(default="", compare=False)

    op: ClassVar[str] = "conv2d"
    arg_names: ClassVar[tuple[str, ...]] = ("x", "w", "b")

    def kwargs_dict(self) -> dict[str, Any]:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def _raw_inputs(self, rng: np.random.Generator) -> Arrays:
        x, w = rng.standard_normal(self.x_shape), rng.standard_normal(self.w_shape)
        return x, w, rng.standard_normal(self.w_shape[0]) if self.bias else None

    def reference(self, *arrays: Any) -> np.ndarray:
        return reference_conv2d(*arrays, **self.kwargs)

    def reference_vjp(self, arrays: Arrays, ct: np.ndarray) -> Arrays:
        return reference_conv2d_vjp(*arrays, ct, **self.kwargs)


@dataclass(frozen=True)
class ConvTranspose2dCase(_Case):
    """One conv_transpose2d call. x_shape (N, C_in, H, W); w_shape (C_in, C_out/groups, kH, kW).

    >>> ConvTranspose2dCase((1, 2, 3, 3), (2, 1, 3, 3), stride=2).arrays()[0].shape
    (1, 2, 3, 3)
    """

    x_shape: tuple[int, ...]
    w_shape: tuple[int, int, int, int]
    bias: bool = True
    stride: Any = 1
    padding: Any = 0
    output_padding: Any = 0
    groups: int = 1
    dilation: Any = 1
    seed: int = 0
    name: str = field(default="", compare=False)

    op: ClassVar[str] = "conv_transpose2d"
    arg_names: ClassVar[tuple[str, ...]] = ("x", "w", "b")

    def kwargs_dict(self) -> dict[str, Any]:
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding, groups=self.groups,
                    dilation=self.dilation)

    def _raw_inputs(self, rng: np.random.Generator) -> Arrays:
        x, w = rng.standard_normal(self.x_shape), rng.standard_normal(self.w_shape)
        return x, w, rng.standard_normal(self.w_shape[1] * self.groups) if self.bias else None

    def reference(self, *arrays: Any) -> np.ndarray:
        return reference_conv_transpose2d(*arrays, **self.kwargs)

    def reference_vjp(self, arrays: Arrays, ct: np.ndarray) -> Arrays:
        return reference_conv_transpose2d_vjp(*arrays, ct, **self.kwargs)


def _distinct_values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Distinct integers centred on 0: no ties (so max-pool gradients are unambiguous), and
    exact in bfloat16 while there are at most 512 of them."""
    size = int(np.prod(shape))
    return (rng.permutation(size) - size // 2).astype(np.float64).reshape(shape)
