"""``impl="fft"``: convolution via the convolution theorem.

Cross-correlation with a kernel k is a product in the frequency domain:
``y = irfftn(rfftn(x_padded) * conj(rfftn(k)))`` over the 1, 2 or 3 spatial axes, a circular
correlation that equals the linear one on the first ``H_p - kH_eff + 1`` rows/columns, which is
exactly the valid output. The cost
is O(C_in C_out H W) for the spectral products plus O((C_in + C_out) H W log HW) for the
transforms, independent of the kernel size, so it beats direct convolution for large kernels.

Dilation is handled exactly by inserting zeros between kernel taps (the dilated kernel is what
gets transformed). Stride is handled by computing the stride-1 result and subsampling it,
which is correct but does ``stride_h * stride_w`` times the necessary work: prefer ``"lax"``
for strided convolutions.

Run the benchmark (fft vs lax, kernel sizes 3..31, median of N) with
``python -m jconv.bench.fft --bench``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from ._spec import ConvSpec, accum_dtype


def fast_fft_size(n: int) -> int:
    """Smallest 5-smooth integer (2^a 3^b 5^c) >= n: FFTs of such lengths are fastest.

    Example:
      >>> from jconv._fft import fast_fft_size
      >>> [fast_fft_size(n) for n in (7, 17, 97, 128)]
      [8, 18, 100, 128]
    """
    m = max(int(n), 1)
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


@partial(jax.jit, static_argnums=2)  # one compiled computation per geometry, also when eager
def conv_fft(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """Batched FFT conv in ``spec.data_format`` with (C_out, C_in/groups, *kernel) weights
    (1, 2 or 3 spatial dims, transformed together); output dtype = input dtype.

    Half-precision inputs are transformed in float32 (XLA has no half-precision FFT).
    """
    ct, nd, g = accum_dtype(x.dtype), spec.ndim, spec.groups
    xn = jnp.moveaxis(x, -1, 1) if spec.channels_last else x
    xp = jnp.pad(xn.astype(ct), ((0, 0), (0, 0), *spec.padding))
    # Interior padding inserts dilation-1 zeros between taps: the dilated kernel, exactly.
    wd = lax.pad(w.astype(ct), jnp.zeros((), ct),
                 [(0, 0, 0), (0, 0, 0), *((0, 0, d - 1) for d in spec.dilation)])
    n, c_in, *padded = xp.shape
    c_out, cg = w.shape[:2]
    sizes = tuple(fast_fft_size(p) for p in padded)
    axes = tuple(range(2, 2 + nd))
    freq = (*sizes[:-1], sizes[-1] // 2 + 1)
    xf = jnp.fft.rfftn(xp, s=sizes, axes=axes).reshape(n, g, cg, *freq)
    kf = jnp.conj(jnp.fft.rfftn(wd, s=sizes, axes=axes)).reshape(g, c_out // g, cg, *freq)
    yf = jnp.einsum("ngc...,goc...->ngo...", xf, kf, precision=spec.precision)
    y = jnp.fft.irfftn(yf.reshape(n, c_out, *freq), s=sizes, axes=axes)
    keep = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(spec.out_size, spec.stride))
    y = y[(slice(None), slice(None), *keep)].astype(x.dtype)
    return jnp.moveaxis(y, 1, -1) if spec.channels_last else y
