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
``python -m jconv._fft --bench``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
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


def _interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each zero-argument jitted call; the calls alternate within every
    repeat so that load from other processes hits all of them alike."""
    for fn in fns.values():
        jax.block_until_ready(fn())  # compile + warm up outside the timed runs
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def bench(kernel_sizes: tuple[int, ...] = (3, 7, 11, 15, 19, 23, 27, 31), batch: int = 4,
          channels: int = 8, size: int = 64, repeats: int = 5) -> list[dict[str, float]]:
    """Time jitted fft vs lax forward convs, 'same' padding, float32; one row per kernel size.

    Both impls run in this process on the same input, alternating; each time is the median
    of ``repeats`` runs after one warm-up (compile) call.
    """
    from .conv import conv2d  # imported here: conv.py registers this module's impl

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, channels, size, size)), jnp.float32)
    rows = []
    for k in kernel_sizes:
        w = jnp.asarray(rng.normal(size=(channels, channels, k, k)) / k, jnp.float32)
        fns = {impl: partial(jax.jit(partial(conv2d, padding="same", impl=impl)), x, w)
               for impl in ("lax", "fft")}
        times = _interleaved_medians(fns, repeats)
        rows.append({"kernel": k, "lax_ms": 1e3 * times["lax"], "fft_ms": 1e3 * times["fft"],
                     "lax_over_fft": times["lax"] / times["fft"]})
    return rows


def _main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark impl='fft' against impl='lax'.")
    parser.add_argument("--bench", action="store_true", help="run the benchmark")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.bench:
        parser.print_help()
        return
    print(f"device: {jax.devices()[0].device_kind}; x=({args.batch}, {args.channels}, "
          f"{args.size}, {args.size}) float32, C_out={args.channels}, padding='same', "
          f"median of {args.repeats}")
    print("| kernel | lax (ms) | fft (ms) | lax / fft |")
    print("|---:|---:|---:|---:|")
    for r in bench(batch=args.batch, channels=args.channels, size=args.size,
                   repeats=args.repeats):
        print(f"| {r['kernel']}x{r['kernel']} | {r['lax_ms']:.2f} | {r['fft_ms']:.2f} | "
              f"{r['lax_over_fft']:.2f} |")


if __name__ == "__main__":
    _main()
