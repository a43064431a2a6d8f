"""``impl="im2col"``: gather every receptive-field patch into a matrix, then one matmul.

The patch matrix has one row per output pixel and ``kH*kW*C_in/groups`` columns per group;
grouped convolutions become one batched matmul over the group axis.
"""

from __future__ import annotations

import jax.numpy as jnp

from ._spec import ConvSpec, accum_dtype
from ._windows import from_nhwc, pad_hw, tap_windows, to_nhwc


def im2col(x_nhwc: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """Patch tensor (N, H_out, W_out, kH*kW, C_in): taps row-major, channels minor."""
    xp = pad_hw(x_nhwc, spec.padding)
    return jnp.stack(list(tap_windows(xp, spec.kernel, spec.stride, spec.dilation, spec.out_hw)),
                     axis=3)


def conv_im2col(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """Batched conv in ``spec.data_format`` with OIHW weights; output dtype = input dtype."""
    g = spec.groups
    n, (ho, wo), taps = x.shape[0], spec.out_hw, spec.kernel[0] * spec.kernel[1]
    c_out, cg = w.shape[0], w.shape[1]
    patches = im2col(to_nhwc(x, spec.data_format), spec)
    cols = patches.reshape(n * ho * wo, taps, g, cg)
    # (C_out, C_in/g, kH, kW) -> (g, kH*kW, C_in/g, C_out/g): rows ordered like the patch columns.
    wmat = w.reshape(g, c_out // g, cg, taps).transpose(0, 3, 2, 1)
    y = jnp.einsum("ptgc,gtco->pgo", cols, wmat, precision=spec.precision,
                   preferred_element_type=accum_dtype(x.dtype))
    y = y.reshape(n, ho, wo, c_out).astype(x.dtype)
    return from_nhwc(y, spec.data_format)
