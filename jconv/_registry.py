"""The one table of convolution implementations: name -> :class:`Implementation`.

Everything else that names implementations derives from it: ``jconv.CONV_IMPLS`` (every
``impl=`` that :func:`jconv.conv2d` accepts), ``jconv.AUTO_IMPLS`` (the exact general ones,
which ``impl="auto"`` chooses among everywhere; it measures one with an ``auto_where``, such
as ``onednn``, only where that says so), ``jconv.POOL_IMPLS`` (those with a pooling
counterpart), the train config's validation and the benchmarks' labels. Renamed
implementations keep their old name as a deprecated alias (:data:`DEPRECATED_NAMES`).

Every implementation shares one signature, ``conv(x, w, spec) -> y``: ``x`` batched in
``spec.data_format``, ``w`` (C_out, C_in/groups, *kernel), ``spec`` the frozen
:class:`jconv.ConvSpec` that :func:`jconv.conv_spec` parsed once; the result
has the input's dtype. To add one: write that function in its own module, add an
``Implementation`` below, and the suite's registry-driven tests pick it up.
"""

from __future__ import annotations

import types
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping

import jax.numpy as jnp

from ._auto import conv_auto
from ._auto_dispatch import use_candidates
from ._fft import conv_fft
from ._im2col import conv_im2col
from ._lax import conv_lax
from ._loops import conv_loops
from ._onednn import auto_where as onednn_auto_where
from ._onednn import conv_onednn
from ._pallas import conv_pallas
from ._pool_impls import reduce_im2col, reduce_lax, reduce_loops
from ._pool_spec import PoolSpec
from ._spec import ConvSpec, check_impl
from ._winograd import conv_winograd_f2x2, conv_winograd_f4x4

ConvImpl = Callable[[jnp.ndarray, jnp.ndarray, ConvSpec], jnp.ndarray]
PoolReducer = Callable[[jnp.ndarray, PoolSpec, str], jnp.ndarray]

_XLA_PLAN = {"cpu": "XLA's convolution (YNNPACK; Eigen under jconv.jit / conv_backend='eigen')",
             "gpu": "XLA's convolution (cuDNN)", "tpu": "XLA's convolution"}
_CHUNKED_PLAN = {"cpu": "cache-sized batch chunks under lax.map (2 MiB working set each)",
                 "gpu": "whole batch in one contraction; chunks only past 1 GiB",
                 "tpu": "whole batch in one contraction; chunks only past 1 GiB"}
_WHOLE_PLAN = {"cpu": "whole batch", "gpu": "whole batch", "tpu": "whole batch"}


@dataclass(frozen=True)
class Implementation:
    """One convolution implementation and what it supports.

    ``exact``: accepts every argument and computes the convolution with ordinary rounding
    (these are ``impl="auto"``'s candidates everywhere); ``auto_where``: for one that is not
    exact everywhere, ``(platform, dtype) -> bool``, where ``auto`` measures it too (it must be
    exact and transposable there); ``restrictions``: the arguments it rejects or handles
    specially ("" when none); ``pool``: the pooling reduction of the same name, if any;
    ``plans``: how it executes on each platform it is lowered for; ``grad_of_grad``:
    whether second derivatives are supported; ``ndims``: the numbers of spatial dims it
    computes (1-D, 2-D, 3-D convolutions; anything else raises a ValueError).
    """

    name: str
    conv: ConvImpl
    summary: str
    exact: bool
    restrictions: str = ""
    pool: PoolReducer | None = None
    plans: Mapping[str, str] = field(default_factory=lambda: dict(_WHOLE_PLAN))
    grad_of_grad: bool = True
    ndims: tuple[int, ...] = (1, 2, 3)
    auto_where: Callable[[str, jnp.dtype], bool] | None = None

    @property
    def auto_candidate(self) -> bool:
        """Whether ``auto`` measures it on every platform, for every dtype."""
        return self.exact and self.name != "auto"

    def auto_measures(self, platform: str, dtype: jnp.dtype) -> bool:
        """Whether ``auto`` measures it for a ``platform`` host and this ``dtype``."""
        return self.auto_candidate or (self.auto_where is not None
                                       and self.auto_where(platform, dtype))


_REGISTRY: dict[str, Implementation] = {}


def register(impl: Implementation) -> Implementation:
    """Add ``impl`` to the table (its name must be new)."""
    if impl.name in _REGISTRY:
        raise ValueError(f"an implementation named {impl.name!r} is already registered")
    _REGISTRY[impl.name] = impl
    return impl


for _impl in (
    Implementation("lax", conv_lax, "lax.conv_general_dilated", exact=True, pool=reduce_lax,
                   plans=_XLA_PLAN),
    Implementation("im2col", conv_im2col, "patch matrix + one matmul per group", exact=True,
                   pool=reduce_im2col, plans=_CHUNKED_PLAN),
    Implementation("loops", conv_loops, "explicit loop over the kH*kW kernel taps", exact=True,
                   pool=reduce_loops, plans=_CHUNKED_PLAN),
    Implementation("winograd_f4x4", conv_winograd_f4x4, "Winograd F(4x4, 3x3)", exact=False,
                   restrictions="3x3 kernels, stride 1, dilation 1 (else ValueError); "
                                "one NaN/inf input pixel spreads over its whole tile",
                   ndims=(2,)),
    Implementation("winograd_f2x2", conv_winograd_f2x2, "Winograd F(2x2, 3x3)", exact=False,
                   restrictions="3x3 kernels, stride 1, dilation 1 (else ValueError); "
                                "one NaN/inf input pixel spreads over its whole tile",
                   ndims=(2,)),
    Implementation("fft", conv_fft, "FFT convolution", exact=False,
                   restrictions="strides compute the stride-1 result and subsample it; "
                                "rounding grows with the transform size; one NaN/inf input "
                                "pixel spreads over the whole output"),
    Implementation("pallas", conv_pallas, "hand-written Pallas implicit-GEMM kernels",
                   exact=False,
                   restrictions="groups 1 or depthwise (else ValueError); no forward-mode "
                                "jax.jvp (custom_vjp); interpreted, so slow, on CPU",
                   plans={"cpu": "Pallas interpreter (interpret=True)",
                          "gpu": "Triton kernels", "tpu": "Mosaic TPU kernels"},
                   ndims=(2,)),
    Implementation("onednn", conv_onednn, "oneDNN's CPU kernels (PyTorch's) via the XLA FFI",
                   exact=False,
                   restrictions="float32 and bfloat16 only (else ValueError); needs the built "
                                "extension (else RuntimeError); vmap folds a mapped input into "
                                "the batch, else loops over the mapped axis",
                   plans={"cpu": "oneDNN primitives (cached per shape) through the XLA FFI, "
                                 "on OpenMP threads",
                          "gpu": "lax (platform_dependent)", "tpu": "lax (platform_dependent)"},
                   auto_where=onednn_auto_where),
    Implementation("auto", conv_auto, "fastest exact implementation per shape and pass",
                   exact=True,
                   plans={"cpu": "lax/im2col/loops (and onednn for float32/bfloat16 where built) "
                                 "per pass: measured once per shape, or the CPU heuristic",
                          "gpu": "lax; measured on the GPU when it is the host",
                          "tpu": "lax; measured on the TPU when it is the host"}),
):
    register(_impl)

CONV_IMPLS: Mapping[str, Implementation] = types.MappingProxyType(_REGISTRY)

# Old name -> current name. An old name still works everywhere ``impl=`` is checked through
# :func:`check_conv_impl`, with a DeprecationWarning; it is not listed in CONV_IMPLS.
DEPRECATED_NAMES: Mapping[str, str] = types.MappingProxyType({
    "winograd": "winograd_f4x4",  # the name did not say which tile
    "winograd2": "winograd_f2x2",
})


def check_conv_impl(impl: str) -> str:
    """``impl`` if it names a registered convolution; a deprecated alias's current name, with
    a DeprecationWarning; else the ValueError of :func:`check_impl`.

    Example:
      >>> check_conv_impl("im2col")
      'im2col'
    """
    if isinstance(impl, str) and impl in DEPRECATED_NAMES:
        new = DEPRECATED_NAMES[impl]
        warnings.warn(f"impl={impl!r} is deprecated; use impl={new!r} (same implementation)",
                      DeprecationWarning, stacklevel=3)
        return new
    return check_impl(impl, tuple(_REGISTRY))


def conv_impl(name: str) -> ConvImpl:
    """The ``conv(x, w, spec)`` function registered as ``name``."""
    return _REGISTRY[name].conv


def check_impl_ndim(name: str, ndim: int) -> None:
    """A ValueError naming ``impl`` unless it computes ``ndim``-D convolutions."""
    ndims = _REGISTRY[name].ndims
    if ndim not in ndims:
        others = tuple(n for n, i in _REGISTRY.items() if ndim in i.ndims)
        raise ValueError(f"impl={name!r} computes {'/'.join(f'{n}-D' for n in ndims)} "
                         f"convolutions only, got a {ndim}-D one; use one of {others}")


def pool_reducer(name: str) -> PoolReducer:
    """The pooling reduction registered with the implementation ``name``."""
    reducer = _REGISTRY[name].pool
    if reducer is None:
        raise ValueError(f"impl={name!r} has no pooling counterpart; use one of {pool_impls()}")
    return reducer


def auto_candidates(platform: str | None = None, dtype: jnp.dtype | None = None,
                    ndim: int | None = None) -> dict[str, ConvImpl]:
    """The implementations ``impl="auto"`` measures for a ``platform`` host and ``dtype``, in
    registry order, of those that compute ``ndim``-D convolutions (``Implementation.ndims``;
    any number of spatial dims without it); without ``platform``/``dtype``, every one it may
    ever choose (its exact ones and those with an ``auto_where``).

    Example (Winograd computes 2-D convolutions only, and is not exact, so it is never timed;
    oneDNN is not timed for float64, which it does not compute):
      >>> "winograd_f4x4" in auto_candidates(ndim=1)
      False
      >>> list(auto_candidates("cpu", jnp.float64, ndim=3))
      ['lax', 'im2col', 'loops']
    """
    if platform is None or dtype is None:
        found = {n: i for n, i in _REGISTRY.items()
                 if i.auto_candidate or i.auto_where is not None}
    else:
        found = {n: i for n, i in _REGISTRY.items() if i.auto_measures(platform, dtype)}
    return {n: i.conv for n, i in found.items() if ndim is None or ndim in i.ndims}


def pool_impls() -> tuple[str, ...]:
    return tuple(n for n, i in _REGISTRY.items() if i.pool is not None)


# The registry hands ``auto`` its candidates (auto never imports the registry): a live view,
# so an exact implementation registered later is one too.
use_candidates(auto_candidates)

AUTO_IMPLS: tuple[str, ...] = tuple(n for n, i in _REGISTRY.items() if i.auto_candidate)
POOL_IMPLS: tuple[str, ...] = pool_impls()
