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

import itertools
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from ._spec import PadPairs, Pair


def to_nhwc(x: jnp.ndarray, data_format: str) -> jnp.ndarray:
    return jnp.transpose(x, (0, 2, 3, 1)) if data_format == "NCHW" else x


def from_nhwc(y: jnp.ndarray, data_format: str) -> jnp.ndarray:
    return jnp.transpose(y, (0, 3, 1, 2)) if data_format == "NCHW" else y


def pad_hw(x_nhwc: jnp.ndarray, padding: PadPairs, value: float = 0.0) -> jnp.ndarray:
    """Pad the two spatial axes of an NHWC array with a constant (``-inf`` for max pooling)."""
    if not any(v for pair in padding for v in pair):
        return x_nhwc
    cfg = [(0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)]
    return lax.pad(x_nhwc, jnp.asarray(value, x_nhwc.dtype), cfg)


def tap_windows(xp: jnp.ndarray, kernel: Pair, stride: Pair, dilation: Pair,
                out_hw: Pair) -> Iterator[jnp.ndarray]:
    """Yield, for each kernel tap (i, j) in row-major order, the strided window of the padded
    NHWC input that tap multiplies: shape (N, H_out, W_out, C).

    Tap (i, j) reads input rows ``i*dilation_h + stride_h*oh`` for ``oh < H_out`` (same for
    columns), so one static strided ``lax.slice`` per tap replaces a loop over output pixels.
    """
    n, _, _, c = xp.shape
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_hw
    for i in range(kh):
        for j in range(kw):
            start = (0, i * dh, j * dw, 0)
            limit = (n, i * dh + sh * (ho - 1) + 1, j * dw + sw * (wo - 1) + 1, c)
            yield lax.slice(xp, start, limit, (1, sh, sw, 1))


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


# N-D counterparts of the helpers above (any number of spatial dims, which axes are spatial
# given by ``first``): pooling and unfold/fold use them; the 2-D conv paths are unchanged.
def channels_last(x: jnp.ndarray, data_format: str) -> jnp.ndarray:
    """(N, C, *spatial) -> (N, *spatial, C) for a channels-first ``data_format`` ("NC...")."""
    return jnp.moveaxis(x, 1, -1) if data_format[1] == "C" else x


def from_channels_last(y: jnp.ndarray, data_format: str) -> jnp.ndarray:
    """Inverse of :func:`channels_last`."""
    return jnp.moveaxis(y, -1, 1) if data_format[1] == "C" else y


def pad_spatial(x: jnp.ndarray, padding: Sequence[tuple[int, int]], value: float = 0.0, *,
                first: int = 1) -> jnp.ndarray:
    """Pad the spatial axes ``first .. first+len(padding)-1`` with a constant."""
    if not any(v for pair in padding for v in pair):
        return x
    cfg = [(0, 0, 0)] * x.ndim
    for i, (lo, hi) in enumerate(padding):
        cfg[first + i] = (lo, hi, 0)
    return lax.pad(x, jnp.asarray(value, x.dtype), cfg)


def taps_nd(kernel: Sequence[int]) -> list[tuple[int, ...]]:
    """Kernel taps in row-major order (the order PyTorch's unfold and weights use)."""
    return list(itertools.product(*(range(k) for k in kernel)))


def tap_windows_nd(xp: jnp.ndarray, kernel: Sequence[int], stride: Sequence[int],
                   dilation: Sequence[int], out_size: Sequence[int], *,
                   first: int = 1) -> Iterator[jnp.ndarray]:
    """For each kernel tap (row-major), the strided window of the padded array ``xp`` that
    tap reads: spatial axes ``first ..`` become ``out_size``, the others are kept.

    Tap ``t`` reads index ``t_i*dilation_i + stride_i*o_i`` for ``o_i < out_size_i`` along
    spatial axis ``i``: one static strided ``lax.slice`` per tap.
    """
    for tap in taps_nd(kernel):
        start, limit, steps = [0] * xp.ndim, list(xp.shape), [1] * xp.ndim
        for i, (t, s, d, o) in enumerate(zip(tap, stride, dilation, out_size)):
            start[first + i] = t * d
            limit[first + i] = t * d + s * (o - 1) + 1
            steps[first + i] = s
        yield lax.slice(xp, start, limit, steps)
