"""Window extraction shared by the im2col and loops implementations (convolution and pooling).

Both work channels-last (NHWC) because the contraction over channels is then a plain matmul
over the minor axis; NCHW callers are transposed once on the way in and once on the way out.
"""

from __future__ import annotations

from typing import Iterator

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
