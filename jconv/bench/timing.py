"""Benchmark cases: compiled conv layers, the matmul reference rate, compiled memory.

The stopwatch itself is :mod:`jconv.stopwatch` (``interleaved_medians`` is re-exported here
for the bench modules)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from .._registry import DEPRECATED_NAMES, check_conv_impl
from ..conv import convnd
from ..transpose import conv_transpose1d, conv_transpose2d, conv_transpose3d
from ..stopwatch import Fn, interleaved_medians
from ..xla_options import jit as conv_jit
from .suite import Layer

__all__ = ["EIGEN_SUFFIX", "MATMUL_SIZE", "ConvCase", "current_label", "interleaved_medians",
           "matmul_case", "matmul_peak_gflops", "split_label"]

EIGEN_SUFFIX = "+eigen"
# The reference matmul's size in every mode: smaller ones run well below the rate XLA reaches
# at this size (docs/performance.md), which made small convs look faster than "peak".
MATMUL_SIZE = 1024
_TRANSPOSED = {1: conv_transpose1d, 2: conv_transpose2d, 3: conv_transpose3d}


def split_label(label: str) -> tuple[str, str]:
    """A bench implementation label -> (jconv impl, conv_backend): ``"auto+eigen"`` is
    ``impl="auto"`` compiled with ``jconv.conv_compiler_options("eigen")``.

    Example:
      >>> split_label("auto+eigen"), split_label("lax")
      (('auto', 'eigen'), ('lax', 'xla_default'))
    """
    if label.endswith(EIGEN_SUFFIX):
        return label[:-len(EIGEN_SUFFIX)], "eigen"
    return label, "xla_default"


def current_label(label: str) -> str:
    """``label`` with a deprecated implementation name (``jconv._registry.DEPRECATED_NAMES``)
    replaced by its current one, with :func:`jconv._registry.check_conv_impl`'s
    DeprecationWarning (attributed to the caller); any other label unchanged, for the
    caller's own check.

    Example:
      >>> import warnings
      >>> with warnings.catch_warnings():
      ...     warnings.simplefilter("ignore", DeprecationWarning)
      ...     current_label("winograd+eigen"), current_label("lax"), current_label("nope")
      ('winograd_f4x4+eigen', 'lax', 'nope')
    """
    impl, backend = split_label(label)
    if impl not in DEPRECATED_NAMES:
        return label
    new = check_conv_impl(impl)
    return new if backend == "xla_default" else new + EIGEN_SUFFIX


def matmul_case(size: int = MATMUL_SIZE) -> tuple[Fn, int]:
    """A blocking float32 ``(size x size) @ (size x size)`` call through XLA and its FLOPs: the
    practical compute rate the conv numbers are compared with."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    mm = jax.jit(jnp.matmul)
    jax.block_until_ready(mm(a, a))
    return (lambda: jax.block_until_ready(mm(a, a))), 2 * size ** 3


def matmul_peak_gflops(size: int = MATMUL_SIZE, reps: int = 5) -> float:
    """Median GFLOP/s of :func:`matmul_case` over ``reps`` calls."""
    fn, flops = matmul_case(size)
    return flops / (interleaved_medians({"mm": fn}, reps)["mm"] * 1e6)


class ConvCase:
    """Compiled forward and forward+backward functions of one layer, implementation label
    (see :func:`split_label`) and data format.

    ``fwd()`` runs y = convnd(x, w) (1-D, 2-D or 3-D as the layer; conv_transpose{n}d for a
    transposed one); ``fwd_bwd()`` runs
    <convnd(x, w), dy> and its gradient
    with respect to both x and w (forward pass included), as a training step needs.
    """

    def __init__(self, layer: Layer, label: str, data_format: str,
                 dtype: object = jnp.float32):
        impl, conv_backend = split_label(label)
        self.x, self.w = layer.arrays(data_format, dtype)
        rng = np.random.default_rng(1)

        op = _TRANSPOSED[layer.ndim] if layer.transposed else convnd

        def conv(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
            return op(x, w, impl=impl, data_format=layer.data_format(data_format),
                      **layer.conv_kwargs)

        self.dy = jnp.asarray(rng.standard_normal(jax.eval_shape(conv, self.x, self.w).shape),
                              dtype)

        def grads(x: jnp.ndarray, w: jnp.ndarray, dy: jnp.ndarray) -> tuple:
            # value_and_grad, not grad: <conv(x, w), dy> is linear in each argument, so its
            # gradients alone never need the forward result and XLA would drop the forward.
            return jax.value_and_grad(lambda a, b: jnp.vdot(conv(a, b), dy),
                                      argnums=(0, 1))(x, w)

        start = time.perf_counter()
        self._fwd = conv_jit(conv, conv_backend=conv_backend).lower(self.x, self.w).compile()
        compiled_fb = conv_jit(grads, conv_backend=conv_backend).lower(
            self.x, self.w, self.dy).compile()
        self.compile_s = time.perf_counter() - start
        self._fwd_bwd = compiled_fb
        self.peak_mb = _compiled_mb(compiled_fb)
        self.fwd()  # warm-up
        self.fwd_bwd()

    def fwd(self) -> object:
        return jax.block_until_ready(self._fwd(self.x, self.w))

    def fwd_bwd(self) -> object:
        return jax.block_until_ready(self._fwd_bwd(self.x, self.w, self.dy))


def _compiled_mb(compiled: object) -> float:
    """Arguments + outputs + XLA temporaries of a compiled function, in MB (NaN if XLA
    reports no memory analysis on this backend)."""
    try:
        stats = compiled.memory_analysis()  # type: ignore[attr-defined]
        total = (stats.argument_size_in_bytes + stats.output_size_in_bytes
                 + stats.temp_size_in_bytes)
    except (AttributeError, NotImplementedError, TypeError):
        return float("nan")
    return total / 2 ** 20
