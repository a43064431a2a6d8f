"""Timing primitives: compile time, interleaved medians, matmul peak, compiled memory."""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..conv import conv2d
from ..xla_options import jit as conv_jit
from .suite import Layer

Fn = Callable[[], object]
EIGEN_SUFFIX = "+eigen"
# The reference matmul's size in every mode: smaller ones run well below the rate XLA reaches
# at this size (docs/performance.md), which made small convs look faster than "peak".
MATMUL_SIZE = 1024


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


def wall_ms(fn: Fn) -> float:
    """One call of ``fn`` (which must block until its result is ready), in milliseconds."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def interleaved_medians(fns: dict[str, Fn], reps: int) -> dict[str, float]:
    """Median ms per function, calling them in turn ``reps`` times so that load changes on a
    shared machine hit every candidate alike. The starting function rotates every round:
    with a fixed order the first one always ran right after the last (e.g. PyTorch, whose
    OpenMP threads keep spinning after a call) and was measured up to ~2x slow."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for r in range(reps):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            samples[k].append(wall_ms(fns[k]))
    return {k: float(np.median(v)) for k, v in samples.items()}


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

    ``fwd()`` runs y = conv2d(x, w); ``fwd_bwd()`` runs <conv2d(x, w), dy> and its gradient
    with respect to both x and w (forward pass included), as a training step needs.
    """

    def __init__(self, layer: Layer, label: str, data_format: str,
                 dtype: object = jnp.float32):
        impl, conv_backend = split_label(label)
        rng = np.random.default_rng(0)
        self.x = jnp.asarray(rng.standard_normal(layer.x_shape(data_format)), dtype)
        self.w = jnp.asarray(0.1 * rng.standard_normal(layer.w_shape), dtype)

        def conv(x: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
            return conv2d(x, w, impl=impl, data_format=data_format, **layer.conv_kwargs)

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
