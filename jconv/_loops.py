"""``impl="loops"``: an explicit loop over the kernel taps (kH*kW of them in 2-D).

Each step takes the strided, dilated window of the padded input that one tap touches and
contracts it over input channels with that tap's weights; the tap results are summed. There
is no loop over output pixels: one window covers all of them at once. Depthwise layers
(one input channel per group) use a broadcast multiply per tap instead of a contraction, so
XLA fuses all taps into one elementwise loop. Like im2col, it runs per cache-sized batch
chunk on CPU and on whole batches on GPU/TPU (:func:`jconv._windows.run_planned`).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from ._spec import ConvSpec, accum_dtype, prod
from ._windows import from_nhwc, grouped_einsum, pad_hw, run_planned, tap_windows, to_nhwc


def _loops_chunk(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    g, nd = spec.groups, spec.ndim
    n, out = x.shape[0], spec.out_size
    c_out, cg = w.shape[0], w.shape[1]
    acc = accum_dtype(x.dtype)
    xp = pad_hw(to_nhwc(x, spec.data_format), spec.padding)
    # (C_out, C_in/g, *kernel) -> (taps, g, C_in/g, C_out/g): one small matrix per tap and
    # group, taps row-major like tap_windows.
    wt = w.reshape(g, c_out // g, cg, prod(spec.kernel)).transpose(3, 0, 2, 1)
    y = jnp.zeros((n, *out, g, c_out // g), acc)
    for t, window in enumerate(tap_windows(xp, spec.kernel, spec.stride, spec.dilation, out)):
        win, wtap = window.reshape(n, *out, g, cg), wt[t]
        if g == 1:
            # No group axis: a plain matmul, without the transposes a batch dim makes XLA add.
            y = y + lax.dot_general(win[..., 0, :], wtap[0], (((nd + 1,), (0,)), ((), ())),
                                    precision=spec.precision,
                                    preferred_element_type=acc)[..., None, :]
        elif cg == 1:
            y = y + win.astype(acc) * wtap[:, 0, :].astype(acc)
        else:
            y = y + grouped_einsum("n...gc,gco->n...go", win, wtap, spec.precision, acc)
    return from_nhwc(y.reshape(n, *out, c_out).astype(x.dtype), spec.data_format)


def conv_loops(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """Batched conv in ``spec.data_format`` with (C_out, C_in/groups, *kernel) weights;
    output dtype = input dtype."""
    c_out = w.shape[0]
    # Live per image: the tap window (input dtype) plus the accumulator (accumulation dtype).
    per_image = prod(spec.out_size) * (w.shape[1] * spec.groups * x.dtype.itemsize
                                       + c_out * accum_dtype(x.dtype).itemsize)
    return run_planned(lambda xb, wb: _loops_chunk(xb, wb, spec), x, w, per_image)
