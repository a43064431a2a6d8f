"""``impl="fft"``: convolution via the convolution theorem.

Cross-correlation with a kernel k is a product in the frequency domain:
``y = irfft2(rfft2(x_padded) * conj(rfft2(k)))``, a circular correlation that equals the linear
one on the first ``H_p - kH_eff + 1`` rows/columns, which is exactly the valid output. The cost
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
    """Batched FFT conv in ``spec.data_format`` with OIHW weights; output dtype = input dtype.

    Half-precision inputs are transformed in float32 (XLA has no half-precision FFT).
    """
    ct = accum_dtype(x.dtype)
    xn = x if spec.data_format == "NCHW" else jnp.transpose(x, (0, 3, 1, 2))
    (pt, pb), (pl, pr) = spec.padding
    xp = jnp.pad(xn.astype(ct), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    (dh, dw), (sh, sw), (ho, wo) = spec.dilation, spec.stride, spec.out_hw
    # Interior padding inserts dilation-1 zeros between taps: the dilated kernel, exactly.
    wd = lax.pad(w.astype(ct), jnp.zeros((), ct), [(0, 0, 0), (0, 0, 0), (0, 0, dh - 1),
                                                    (0, 0, dw - 1)])
    n, c_in, hp, wp = xp.shape
    c_out, cg = w.shape[:2]
    g = spec.groups
    fh, fw = fast_fft_size(hp), fast_fft_size(wp)
    xf = jnp.fft.rfft2(xp, s=(fh, fw)).reshape(n, g, cg, fh, fw // 2 + 1)
    kf = jnp.conj(jnp.fft.rfft2(wd, s=(fh, fw))).reshape(g, c_out // g, cg, fh, fw // 2 + 1)
    yf = jnp.einsum("ngchw,gochw->ngohw", xf, kf, precision=spec.precision)
    y = jnp.fft.irfft2(yf.reshape(n, c_out, fh, fw // 2 + 1), s=(fh, fw))
    y = y[:, :, : (ho - 1) * sh + 1: sh, : (wo - 1) * sw + 1: sw].astype(x.dtype)
    return y if spec.data_format == "NCHW" else jnp.transpose(y, (0, 2, 3, 1))
