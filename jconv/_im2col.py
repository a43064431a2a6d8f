"""``impl="im2col"``: gather every receptive-field patch into a matrix, then one matmul.

The patch matrix has one row per output pixel and ``kH*kW*C_in/groups`` columns per group
(``prod(kernel)*C_in/groups`` for 1-D and 3-D convolutions).
On CPU it is built and multiplied one cache-sized batch chunk at a time (materialising it
for the whole batch made this implementation memory-bound there; see docs/performance.md);
on GPU/TPU the whole batch is one matmul (see
:func:`jconv._windows.run_planned`).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ._spec import ConvSpec, accum_dtype, prod
from ._windows import from_nhwc, grouped_einsum, pad_hw, run_planned, tap_windows, to_nhwc


def im2col(x_nhwc: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """Patch tensor (N, *out_size, taps, C_in) of a channels-last input: taps row-major
    (kH*kW of them in 2-D), channels minor."""
    xp = pad_hw(x_nhwc, spec.padding)
    return jnp.stack(list(tap_windows(xp, spec.kernel, spec.stride, spec.dilation,
                                      spec.out_size)), axis=-2)


def _im2col_chunk(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    g, acc, nd = spec.groups, accum_dtype(x.dtype), spec.ndim
    n, out, taps = x.shape[0], spec.out_size, prod(spec.kernel)
    rows = n * prod(out)
    c_out, cg = w.shape[0], w.shape[1]
    patches = im2col(to_nhwc(x, spec.data_format), spec)
    if g == 1:
        # A plain 2-D matmul (rows x taps*C_in) @ (taps*C_in x C_out): XLA's fastest path.
        wmat = w.transpose(*range(2, 2 + nd), 1, 0).reshape(taps * cg, c_out)
        y = lax.dot_general(patches.reshape(rows, taps * cg), wmat,
                            (((1,), (0,)), ((), ())), precision=spec.precision,
                            preferred_element_type=acc)
    else:
        cols = patches.reshape(rows, taps, g, cg)
        # (C_out, C_in/g, *kernel) -> (g, taps, C_in/g, C_out/g): rows ordered like the columns.
        wmat = w.reshape(g, c_out // g, cg, taps).transpose(0, 3, 2, 1)
        y = grouped_einsum("ptgc,gtco->pgo", cols, wmat, spec.precision, acc)
    y = y.reshape(n, *out, c_out).astype(x.dtype)
    return from_nhwc(y, spec.data_format)


def conv_im2col(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """Batched conv in ``spec.data_format`` with (C_out, C_in/groups, *kernel) weights;
    output dtype = input dtype."""
    per_image = (prod(spec.out_size) * prod(spec.kernel) * w.shape[1] * spec.groups
                 * x.dtype.itemsize)
    return run_planned(lambda xb, wb: _im2col_chunk(xb, wb, spec), x, w, per_image)
