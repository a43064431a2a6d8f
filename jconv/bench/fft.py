"""FFT vs lax convolution speed by kernel size: ``python -m jconv.bench.fft``.

Both implementations run jitted in one process on the same input, interleaved, median of N
after a warm-up (compile) call; the ratio ``lax / fft`` > 1 means FFT is faster.
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..conv import conv2d
from .timing import interleaved_medians


def _compiled_calls(x: jnp.ndarray, w: jnp.ndarray,
                    impls: tuple[str, ...]) -> dict[str, Callable[[], object]]:
    """Zero-argument, blocking, already compiled 'same'-padded conv calls, one per impl."""
    calls = {}
    for impl in impls:
        fn = partial(jax.jit(partial(conv2d, padding="same", impl=impl)), x, w)
        jax.block_until_ready(fn())  # compile and warm up outside the timed runs
        calls[impl] = lambda fn=fn: jax.block_until_ready(fn())
    return calls


def bench(kernel_sizes: tuple[int, ...] = (3, 7, 11, 15, 19, 23, 27, 31), batch: int = 4,
          channels: int = 8, size: int = 64, repeats: int = 5) -> list[dict[str, float]]:
    """Time jitted fft vs lax forward convs, 'same' padding, float32; one row per kernel size.

    Both impls run in this process on the same input, alternating; each time is the median
    of ``repeats`` runs after one warm-up (compile) call.
    """
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, channels, size, size)), jnp.float32)
    rows = []
    for k in kernel_sizes:
        w = jnp.asarray(rng.normal(size=(channels, channels, k, k)) / k, jnp.float32)
        times = interleaved_medians(_compiled_calls(x, w, ("lax", "fft")), repeats)
        rows.append({"kernel": k, "lax_ms": times["lax"], "fft_ms": times["fft"],
                     "lax_over_fft": times["lax"] / times["fft"]})
    return rows


def main() -> None:
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
    main()
