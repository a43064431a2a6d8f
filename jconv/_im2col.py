"""``impl="im2col"``: gather every receptive-field patch into a matrix, then one matmul.

The patch matrix has one row per output pixel and ``kH*kW*C_in/groups`` columns per group.
On CPU it is built and multiplied one cache-sized batch chunk at a time (materialising it
for the whole batch made this implementation memory-bound there; see docs/performance.md);
on GPU/TPU the whole batch is one matmul (see
:func:`jconv._windows.run_planned`).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ._spec import ConvSpec, accum_dtype
from ._windows import from_nhwc, grouped_einsum, pad_hw, run_planned, tap_windows, to_nhwc


def im2col(x_nhwc: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """Patch tensor (N, H_out, W_out, kH*kW, C_in): taps row-major, channels minor."""
    xp = pad_hw(x_nhwc, spec.padding)
    return jnp.stack(list(tap_windows(xp, spec.kernel, spec.stride, spec.dilation, spec.out_hw)),
                     axis=3)


def _im2col_chunk(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    g, acc = spec.groups, accum_dtype(x.dtype)
    n, (ho, wo), taps = x.shape[0], spec.out_hw, spec.kernel[0] * spec.kernel[1]
    c_out, cg = w.shape[0], w.shape[1]
    patches = im2col(to_nhwc(x, spec.data_format), spec)
    if g == 1:
        # A plain 2-D matmul (rows x kH*kW*C_in) @ (kH*kW*C_in x C_out): XLA's fastest path.
        wmat = w.transpose(2, 3, 1, 0).reshape(taps * cg, c_out)
        y = lax.dot_general(patches.reshape(n * ho * wo, taps * cg), wmat,
                            (((1,), (0,)), ((), ())), precision=spec.precision,
                            preferred_element_type=acc)
    else:
        cols = patches.reshape(n * ho * wo, taps, g, cg)
        # (C_out, C_in/g, kH, kW) -> (g, kH*kW, C_in/g, C_out/g): rows ordered like the columns.
        wmat = w.reshape(g, c_out // g, cg, taps).transpose(0, 3, 2, 1)
        y = grouped_einsum("ptgc,gtco->pgo", cols, wmat, spec.precision, acc)
    y = y.reshape(n, ho, wo, c_out).astype(x.dtype)
    return from_nhwc(y, spec.data_format)


def conv_im2col(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """Batched conv in ``spec.data_format`` with OIHW weights; output dtype = input dtype."""
    (ho, wo), (kh, kw) = spec.out_hw, spec.kernel
    per_image = ho * wo * kh * kw * w.shape[1] * spec.groups * x.dtype.itemsize
    return run_planned(lambda xb, wb: _im2col_chunk(xb, wb, spec), x, w, per_image)
