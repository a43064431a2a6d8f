"""Winograd forward error vs float64, per dtype: ``python -m jconv.bench.winograd_error --errors``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from ..conv import conv2d


def error_table(dtypes: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16"),
                impls: tuple[str, ...] = ("lax", "winograd_f2x2", "winograd_f4x4"), batch: int = 4,
                channels: int = 32, size: int = 32, seed: int = 0) -> list[dict[str, object]]:
    """Forward error of each impl and dtype against a float64 ``lax`` conv of the same
    (rounded) inputs: 3x3, padding 1, x ~ N(0, 1), w ~ N(0, 1/fan_in).

    Returns rows with ``max_rel`` = max |y - ref| / max |ref| and ``rms_rel`` =
    rms(y - ref) / rms(ref).
    """
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=(batch, channels, size, size))
    w0 = rng.normal(size=(channels, channels, 3, 3)) / np.sqrt(9 * channels)
    rows = []
    with jax.enable_x64(True):  # for the float64 reference and the float64 rows
        for name in dtypes:
            x, w = jnp.asarray(x0, name), jnp.asarray(w0, name)
            ref = np.asarray(conv2d(x.astype(jnp.float64), w.astype(jnp.float64), padding=1,
                                    precision="highest"))
            for impl in impls:
                y = np.asarray(conv2d(x, w, padding=1, impl=impl).astype(jnp.float64))
                err = y - ref
                rows.append({"dtype": name, "impl": impl,
                             "max_rel": float(np.abs(err).max() / np.abs(ref).max()),
                             "rms_rel": float(np.sqrt((err ** 2).mean() / (ref ** 2).mean()))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="Winograd forward error vs float64.")
    parser.add_argument("--errors", action="store_true", help="print the error table")
    if not parser.parse_args().errors:
        parser.print_help()
        return
    print(f"device: {jax.devices()[0].device_kind}; x=(4, 32, 32, 32) ~ N(0,1), "
          f"w=(32, 32, 3, 3) ~ N(0, 1/288), padding 1; reference: float64 lax conv of the "
          f"same rounded inputs")
    print("| dtype | impl | max abs err / max abs ref | rms err / rms ref |")
    print("|---|---|---:|---:|")
    for r in error_table():
        print(f"| {r['dtype']} | {r['impl']} | {r['max_rel']:.2e} | {r['rms_rel']:.2e} |")


if __name__ == "__main__":
    main()
