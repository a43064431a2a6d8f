"""Conv+BN folding speed-up: ``python -m jconv.bench.fold`` (``--eager`` for op by op).

Eval-mode inference of the seeds' 2-block CNN, unfolded vs folded
(:func:`jconv.fold_conv_bn_sequential`), interleaved in one process, median of N.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..bn_fold import fold_conv_bn_sequential
from ..nn import BatchNorm2d, Conv2d, MaxPool2d
from .timing import interleaved_medians


def bench(batch: int = 64, repeats: int = 50, seed: int = 0,
          jit: bool = True) -> dict[str, float]:
    """Eval-mode inference of the seeds' 2-block CNN (+ linear head) on (batch, 3, 32, 32),
    unfolded vs folded, alternating, median of ``repeats`` runs each. ``jit=False`` runs the
    models op by op (no XLA fusion across layers)."""
    r = nnx.Rngs(seed)
    model = nnx.Sequential(
        Conv2d(3, 16, 3, padding=1, rngs=r), BatchNorm2d(16, rngs=r), nnx.relu, MaxPool2d(2),
        Conv2d(16, 32, 3, padding=1, rngs=r), BatchNorm2d(32, rngs=r), nnx.relu, MaxPool2d(2),
        lambda x: x.reshape(x.shape[0], -1), nnx.Linear(32 * 8 * 8, 10, rngs=r))
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(batch, 3, 32, 32)), jnp.float32)
    model(x)  # train mode: give the running statistics non-trivial values
    model.eval()
    folded = fold_conv_bn_sequential(model)
    run = nnx.jit(lambda m, x: m(x)) if jit else (lambda m, x: m(x))
    err = float(jnp.abs(run(model, x) - run(folded, x)).max())  # also compiles both
    times = interleaved_medians({"unfolded": lambda: jax.block_until_ready(run(model, x)),
                                 "folded": lambda: jax.block_until_ready(run(folded, x))},
                                repeats)
    return {"unfolded_ms": times["unfolded"], "folded_ms": times["folded"],
            "speedup": times["unfolded"] / times["folded"], "max_abs_diff": err}


def main() -> None:
    parser = argparse.ArgumentParser(description="Time folded vs unfolded conv+BN inference.")
    parser.add_argument("--bench", action="store_true", help="run the benchmark")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--eager", action="store_true", help="op by op instead of jitted")
    args = parser.parse_args()
    if not args.bench:
        parser.print_help()
        return
    r = bench(args.batch, args.repeats, jit=not args.eager)
    print(f"device: {jax.devices()[0].device_kind}; 2-block CNN + linear head, "
          f"x=({args.batch}, 3, 32, 32) float32, eval mode, "
          f"{'eager' if args.eager else 'jitted'}, median of {args.repeats}")
    print(f"unfolded {r['unfolded_ms']:.3f} ms | folded {r['folded_ms']:.3f} ms | "
          f"speed-up {r['speedup']:.2f}x | max |diff| {r['max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
