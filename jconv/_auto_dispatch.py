"""``impl="auto"``'s dispatch: run chosen implementations per pass and per platform.

A convolution is bilinear, so its JVP is ``conv(dx, w) + conv(x, dw)`` and reverse mode
transposes each term separately: the ``dx`` term's transpose is the input gradient, the
``dw`` term's the weight gradient. :func:`conv_bilinear` is a ``jax.custom_jvp``: under
differentiation its JVP rule runs the forward implementation chosen for training and two
tangent terms with the implementations whose *transposes* are fastest; a call that is not
differentiated (inference) runs the primal alone, with the implementation fastest forward on
its own. Everything stays ordinary differentiable JAX, so jit, vmap, forward mode and
grad-of-grad all work. :func:`dispatch` emits one branch per platform
(``lax.platform_dependent``), and lowering keeps only its own.

The implementations are the registry's: ``jconv._registry`` hands its candidate table over
with :func:`use_candidates` (this module never imports the registry, which imports ``auto``),
per host platform and dtype: a candidate must be exact there and transposable (``onednn``'s
passes are JAX primitives with transpose rules, and it is a candidate on CPU for float32 and
bfloat16 only).
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from ._spec import ConvSpec

ConvImpl = Callable[[jnp.ndarray, jnp.ndarray, ConvSpec], jnp.ndarray]
# (fwd, dx, dw) implementations for differentiated calls, and the one for calls without
# derivatives.
Plan = tuple[tuple[str, str, str], str]

# (platform, dtype, ndim) -> candidates; platform and dtype None: every implementation auto
# may ever choose; ndim None: for any number of spatial dims.
CandidateSource = Callable[[str | None, jnp.dtype | None, int | None], Mapping[str, ConvImpl]]
_SOURCE: list[CandidateSource] = []


def use_candidates(source: CandidateSource) -> None:
    """Take the implementations ``auto`` chooses among from ``source`` (called on each use,
    so implementations registered later count too). The registry calls this once."""
    _SOURCE[:] = [source]


def candidates(platform: str | None = None, dtype: jnp.dtype | None = None,
               ndim: int | None = None) -> dict[str, ConvImpl]:
    """The implementations ``auto`` measures for a ``platform`` host and ``dtype`` (the
    registry's, in its order), of those that compute ``ndim``-D convolutions when ``ndim``
    is given; without platform and dtype, every one a choice may name."""
    if not _SOURCE:
        raise RuntimeError("impl='auto' has no candidates: jconv._registry hands them over "
                           "when it is imported (import jconv first)")
    return dict(_SOURCE[0](platform, dtype, ndim))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def conv_bilinear(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec,
                  impls: tuple[str, str, str], inference: str) -> jnp.ndarray:
    """Batched conv running ``impls`` = (fwd, dx, dw) under differentiation and ``inference``
    in a call that is not differentiated."""
    # Only a call that is not differentiated gets here; under a JVP the rule below runs.
    return candidates()[inference](x, w, spec)


def _conv_bilinear_jvp(spec: ConvSpec, impls: tuple[str, str, str], inference: str,
                       primals: tuple, tangents: tuple) -> tuple[jnp.ndarray, jnp.ndarray]:
    (x, w), (tx, tw) = primals, tangents
    y = conv_bilinear(x, w, spec, impls, impls[0])
    # Symbolic zeros skip a whole conv, e.g. the input gradient of a network's first layer.
    terms = []
    if not isinstance(tx, SymbolicZero):
        terms.append(candidates()[impls[1]](tx, w, spec))
    if not isinstance(tw, SymbolicZero):
        terms.append(candidates()[impls[2]](x, tw, spec))
    ty = functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)
    return y, ty


conv_bilinear.defjvp(_conv_bilinear_jvp, symbolic_zeros=True)


def dispatch(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec,
             plans: Mapping[str, Plan]) -> jnp.ndarray:
    """:func:`conv_bilinear` with the plan of each platform (``"cpu"``, ``"gpu"``,
    ``"tpu"``); one branch when they all agree."""
    branch = {p: (lambda a, b, t=t: conv_bilinear(a, b, spec, *t)) for p, t in plans.items()}
    if len(set(plans.values())) == 1:
        return branch["cpu"](x, w)
    return jax.lax.platform_dependent(x, w, cpu=branch["cpu"], cuda=branch["gpu"],
                                      rocm=branch["gpu"], tpu=branch["tpu"],
                                      default=branch["gpu"])
