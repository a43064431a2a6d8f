"""Training throughput of each conv implementation on the configured model, measured in one
process with the implementations interleaved round by round (so that a busy machine slows
all of them alike):

    python -m train.bench --config cifar_subset.yaml --impls lax,im2col,loops --rounds 5

An implementation is a name in ``jconv.CONV_IMPLS``, compiled with XLA's default conv
kernels, or that name plus ``+eigen`` (``lax+eigen``) for ``jconv.conv_compiler_options
("eigen")`` — the labels of ``python -m jconv.bench``; ``model.conv_backend`` is not used.
Each round times ``--steps`` jitted train steps (real batches, forward + backward + AdamW
update) per implementation; the table reports the median over rounds in images/s, and the
ratio to the first one listed. ``--formats NHWC,NCHW`` also compares the data layouts.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import jax.numpy as jnp

from jconv.bench.timing import EIGEN_SUFFIX, interleaved_medians, split_label

from .config import ConfigError, load_config
from .data import DataError, Normalizer, channel_stats, config_batches, load_dataset


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
        ds = load_dataset(cfg.data, cfg.seed)
    except (ConfigError, DataError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2

    from .parallel import init_training
    from .steps import make_train_step

    bs = cfg.train.batch_size
    norm = Normalizer(*channel_stats(ds.train.images))
    batches = config_batches(ds.train, norm, cfg.data, batch_size=bs, seed=cfg.seed, epoch=0,
                             max_steps=args.steps)
    data = [(jnp.asarray(b["image"]), jnp.asarray(b["label"])) for b in
            (batches[i] for i in range(len(batches)))]
    from omegaconf import OmegaConf

    runners = {}
    variants = [(i, f) for f in formats for i in impls]
    for label, fmt in variants:
        impl, conv_backend = split_label(label)
        model_cfg = cfg.model if fmt is None else OmegaConf.merge(cfg.model,
                                                                   {"data_format": fmt})
        tr = init_training(model_cfg, cfg.optim, cfg.seed, 1000, 10, conv_impl=impl,
                           batch_size=bs)
        state = tr.state
        step = make_train_step(tr.fns, tr.tx, cfg.optim.label_smoothing, conv_backend,
                               lookahead_steps=1000 if cfg.optim.lookahead else None)
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
