"""Window extraction shared by the im2col and loops implementations (convolution and pooling).

Both work channels-last (NHWC) because the contraction over channels is then a plain matmul
over the minor axis; NCHW callers are transposed once on the way in and once on the way out.

The conv implementations run under a per-platform *execution plan* (:func:`run_planned`).
On CPU they run per cache-sized batch chunk: memory bandwidth, not FLOPs, limits a
materialised patch matrix there, so each chunk's windows stay in cache
(:data:`CPU_CHUNK_BYTES`) and are recomputed, not stored, for the backward pass. On GPU and
TPU the whole batch is one chunk (one large matmul), split only past
:data:`ACCELERATOR_CHUNK_BYTES`.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from ._spec import ConvSpec, PadPairs


def to_nhwc(x: jnp.ndarray, data_format: str) -> jnp.ndarray:
    """Channels to the last axis (any number of spatial dims; a no-op for channels-last)."""
    return jnp.moveaxis(x, 1, -1) if data_format[1] == "C" else x


def from_nhwc(y: jnp.ndarray, data_format: str) -> jnp.ndarray:
    """Channels from the last axis back to where ``data_format`` has them."""
    return jnp.moveaxis(y, -1, 1) if data_format[1] == "C" else y


def pad_hw(x_nhwc: jnp.ndarray, padding: PadPairs, value: float = 0.0) -> jnp.ndarray:
    """Pad the spatial axes of a channels-last array with a constant (``-inf`` for max
    pooling); ``padding`` has one (low, high) pair per spatial axis."""
    if not any(v for pair in padding for v in pair):
        return x_nhwc
    cfg = [(0, 0, 0), *((lo, hi, 0) for lo, hi in padding), (0, 0, 0)]
    return lax.pad(x_nhwc, jnp.asarray(value, x_nhwc.dtype), cfg)


# jnp.pad's names for PyTorch's padding modes: the same element maps, pixel for pixel.
_JNP_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def apply_padding_mode(x: jnp.ndarray, spec: ConvSpec) -> tuple[jnp.ndarray, ConvSpec]:
    """A conv with a non-zero ``spec.padding_mode`` as the same conv of the explicitly padded
    input with no padding (PyTorch computes it the same way: ``F.pad`` then a valid conv).
    The one place every implementation's padding modes come from; a zero-padding spec is
    returned unchanged.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> spec = jconv.conv_spec((1, 1, 4), (1, 1, 3), padding=1, padding_mode="circular")
      >>> xp, valid = apply_padding_mode(jnp.arange(4.0).reshape(1, 1, 4), spec)
      >>> xp[0, 0].tolist(), valid.padding, valid.in_size
      ([3.0, 0.0, 1.0, 2.0, 3.0, 0.0], ((0, 0),), (6,))
    """
    if spec.padding_mode == "zeros":
        return x, spec
    spatial = list(spec.padding)
    pads = [(0, 0), *spatial, (0, 0)] if spec.channels_last else [(0, 0), (0, 0), *spatial]
    xp = jnp.pad(x, pads, mode=_JNP_PAD_MODES[spec.padding_mode])
    size = tuple(n + lo + hi for n, (lo, hi) in zip(spec.in_size, spec.padding))
    return xp, dataclasses.replace(spec, padding=((0, 0),) * spec.ndim, in_size=size,
                                   padding_mode="zeros")


def tap_windows(xp: jnp.ndarray, kernel: Sequence[int], stride: Sequence[int],
                dilation: Sequence[int], out_size: Sequence[int]) -> Iterator[jnp.ndarray]:
    """Yield, for each kernel tap in row-major order ((i, j) in 2-D), the strided window of
    the padded channels-last input that tap multiplies: shape (N, *out_size, C).

    Tap (i, j) reads input rows ``i*dilation_h + stride_h*oh`` for ``oh < H_out`` (same for
    columns, and for every spatial axis in N-D), so one static strided ``lax.slice`` per tap
    replaces a loop over output pixels.
    """
    n, c = xp.shape[0], xp.shape[-1]
    for tap in itertools.product(*(range(k) for k in kernel)):
        start = (0, *(t * d for t, d in zip(tap, dilation)), 0)
        limit = (n, *(t * d + s * (o - 1) + 1
                      for t, d, s, o in zip(tap, dilation, stride, out_size)), c)
        yield lax.slice(xp, start, limit, (1, *stride, 1))


# Per-platform working-set budget for one batch chunk (patch matrix, or tap window plus
# accumulator). CPU: about a per-core L2 cache, because there a materialised patch matrix is
# limited by memory bandwidth and cache-sized chunks ran the CIFAR layers several times
# faster than whole batches (docs/performance.md). GPU/TPU: the whole batch is one chunk, so
# the contraction is one large matmul that fills the device; chunks appear only when one
# would not fit comfortably in device memory. The accelerator figure is deliberately far
# below any current device's memory and is not a cache size.
CPU_CHUNK_BYTES = 2 * 1024 * 1024
ACCELERATOR_CHUNK_BYTES = 1024 * 1024 * 1024


def batch_chunk(n: int, bytes_per_item: int, budget: int) -> int:
    """Largest divisor of ``n`` whose chunk of ``bytes_per_item``-sized items fits ``budget``
    (at least 1), so the batch splits into equal chunks without padding. ``n = 0`` gives 1.

    Example:
      >>> batch_chunk(128, 300_000, CPU_CHUNK_BYTES), batch_chunk(128, 300_000, 10**9)
      (4, 128)
    """
    limit = max(1, budget // max(1, bytes_per_item))
    return max((d for d in range(1, min(n, limit) + 1) if n % d == 0), default=1)


def map_batch_chunks(fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray], x: jnp.ndarray,
                     w: jnp.ndarray, chunk: int) -> jnp.ndarray:
    """``fn(x, w)`` for a batch-separable ``fn``, evaluated ``chunk`` examples at a time.

    x: (N, ...) -> fn's output (N, ...). Each chunk is rematerialised in the backward pass
    (``jax.checkpoint``) so per-chunk intermediates such as patch matrices never all live at
    once; the sequential ``lax.map`` keeps the working set in cache.
    """
    n = x.shape[0]
    if chunk >= n:
        return fn(x, w)
    body = jax.checkpoint(fn)
    xs = x.reshape(n // chunk, chunk, *x.shape[1:])
    ys = lax.map(lambda xb: body(xb, w), xs)
    return ys.reshape(n, *ys.shape[2:])


def batch_plan(n: int, bytes_per_item: int) -> dict[str, int]:
    """The batch chunk each platform runs a conv of ``n`` examples with: ``{"cpu": c,
    "accelerator": a}`` (GPU and TPU share the accelerator rule).

    Example (the 32->32 channel CIFAR layer at batch 128: 1.2 MB of patches per image):
      >>> batch_plan(128, 32 * 32 * 9 * 32 * 4)
      {'cpu': 1, 'accelerator': 128}
    """
    return {"cpu": batch_chunk(n, bytes_per_item, CPU_CHUNK_BYTES),
            "accelerator": batch_chunk(n, bytes_per_item, ACCELERATOR_CHUNK_BYTES)}


def grouped_einsum(subscripts: str, lhs: jnp.ndarray, rhs: jnp.ndarray, precision: object,
                   acc: jnp.dtype) -> jnp.ndarray:
    """``jnp.einsum(subscripts, lhs, rhs)`` with a group batch axis, accumulated in ``acc``.

    Lowered for CPU, half-precision operands are widened to ``acc`` first: jaxlib 0.10's
    XLA:CPU leaves some batched BF16 x BF16 -> F32 dots that its YNNPACK fusion declines to a
    runtime that cannot execute them (``UNIMPLEMENTED: Unsupported element type for
    DotThunk::Execute``). A product of two half-precision numbers is exact in float32, so the
    widened contraction computes the same float32 sums. GPUs and TPUs keep the half-precision
    operands their matrix units take (``lax.platform_dependent``: one branch per lowering).
    """
    def einsum(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
        return jnp.einsum(subscripts, a, b, precision=precision, preferred_element_type=acc)

    if lhs.dtype == acc and rhs.dtype == acc:
        return einsum(lhs, rhs)
    return lax.platform_dependent(lhs, rhs, default=einsum,
                                  cpu=lambda a, b: einsum(a.astype(acc), b.astype(acc)))


def run_planned(fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray], x: jnp.ndarray,
                w: jnp.ndarray, bytes_per_item: int) -> jnp.ndarray:
    """``fn(x, w)`` under the execution plan of the platform the computation is *lowered*
    for (``lax.platform_dependent``), not the host it is traced on: cache-sized chunks on
    CPU, whole batches on GPU/TPU (see :func:`batch_plan`). When both plans agree no
    platform switch is emitted; otherwise lowering for one platform keeps only its branch.
    """
    plan = batch_plan(x.shape[0], bytes_per_item)
    if plan["cpu"] == plan["accelerator"]:
        return map_batch_chunks(fn, x, w, plan["cpu"])
    return lax.platform_dependent(
        x, w, cpu=lambda a, b: map_batch_chunks(fn, a, b, plan["cpu"]),
        default=lambda a, b: map_batch_chunks(fn, a, b, plan["accelerator"]))

