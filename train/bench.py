"""Training throughput of each conv implementation on the configured model, measured in one
process with the implementations interleaved round by round (so that a busy machine slows
all of them alike):

    python -m train.bench --config cifar_subset.yaml --impls lax,im2col,loops --rounds 5

An implementation is a name in ``jconv.CONV_IMPLS``, compiled with XLA's default conv
kernels, or that name plus ``+eigen`` (``lax+eigen``) for ``jconv.conv_compiler_options
("eigen")`` — the labels of ``python -m jconv.bench``; ``model.conv_backend`` is not used.
Each round times ``--steps`` jitted train steps (real batches; the trainer's step, built by
:class:`train.experiment.Experiment`: forward, backward, optimiser update and, with
``optim.lookahead``, Lookahead) per implementation; the table reports the median over rounds in images/s, and the
ratio to the first one listed. ``--formats NHWC,NCHW`` also compares the data layouts.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import jax.numpy as jnp

from jconv.bench.timing import EIGEN_SUFFIX, interleaved_medians, split_label

from .config import ConfigError, load_config, override
from .data import DataError
from .experiment import Experiment, RunData


def main(argv: list[str] | None = None) -> int:
    from jconv import CONV_IMPLS

    p = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--impls", default="lax,im2col,loops")
    p.add_argument("--formats", default=None,
                   help="comma-separated data formats to compare (default: the config's)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="train steps timed per round")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    impls = [i for i in args.impls.split(",") if i]
    bad = [i for i in impls if split_label(i)[0] not in CONV_IMPLS]
    if bad or args.rounds < 1 or args.steps < 1:
        print(f"Error: --impls must name {tuple(CONV_IMPLS)}, each optionally with "
              f"{EIGEN_SUFFIX} (got {bad}); --rounds and --steps >= 1", file=sys.stderr)
        return 2
    formats = args.formats.split(",") if args.formats else [None]
    if any(f not in (None, "NHWC", "NCHW") for f in formats):
        print(f"Error: --formats must be NHWC and/or NCHW, got {args.formats!r}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.overrides)
        run_data = RunData.load(cfg)
    except (ConfigError, DataError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2

    bs = cfg.train.batch_size
    batches = Experiment.from_config(cfg, data=run_data).batches(0)
    data = [(jnp.asarray(b["image"]), jnp.asarray(b["label"])) for b in
            (batches[i] for i in range(min(args.steps, len(batches))))]

    runners = {}
    variants = [(i, f) for f in formats for i in impls]
    for label, fmt in variants:
        impl, conv_backend = split_label(label)
        # The trainer's run with this implementation, kernels and layout: the same update.
        exp = Experiment.from_config(override(cfg, [
            f"model.conv_impl={impl}", f"model.conv_backend={conv_backend}",
            *([] if fmt is None else [f"model.data_format={fmt}"])]), data=run_data)
        state, step = exp.state, exp.train_step()
        t0 = time.perf_counter()
        state, m = step(state, *data[0])
        m["loss"].block_until_ready()
        name = label if fmt is None else f"{label}/{fmt}"
        print(f"{name}: compiled + first step {time.perf_counter() - t0:.1f} s", flush=True)
        runners[name] = [step, state]
    names = list(runners)

    def run_steps(name: str) -> None:
        step, state = runners[name]
        for x, y in data:
            state, m = step(state, x, y)
        m["loss"].block_until_ready()
        runners[name][1] = state

    # jconv's benchmark timer: interleaved rounds with a rotating start, medians in ms.
    times = interleaved_medians({n: functools.partial(run_steps, n) for n in names},
                                args.rounds)
    n_img = len(data) * bs
    base = times[names[0]] / 1000
    layout = cfg.model.data_format if args.formats is None else args.formats
    print(f"\n{layout}, batch {bs}, widths {list(cfg.model.widths)}; median of "
          f"{args.rounds} rounds x {len(data)} steps")
    print(f"{'impl':<12} {'images/s':>9} {'ms/step':>8} {'vs ' + names[0]:>12}")
    for name in names:
        med = times[name] / 1000
        print(f"{name:<12} {n_img / med:>9.1f} {1000 * med / len(data):>8.1f} "
              f"{base / med:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
