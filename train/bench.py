"""Training throughput of each conv implementation on the configured model, measured in one
process with the implementations interleaved round by round (so that a busy machine slows
all of them alike):

    python -m train.bench --config cifar_subset.yaml --impls lax,im2col,loops --rounds 5

Each round times ``--steps`` jitted train steps (real batches, forward + backward + AdamW
update) per implementation; the table reports the median over rounds in images/s, and the
ratio to the first implementation listed.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax.numpy as jnp
import numpy as np

from .config import ConfigError, load_config
from .data import DataError, Normalizer, channel_stats, load_dataset, train_batches


def main(argv: list[str] | None = None) -> int:
    from jconv.conv import CONV_IMPLS

    p = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--impls", default="lax,im2col,loops")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="train steps timed per round")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    impls = [i for i in args.impls.split(",") if i]
    bad = [i for i in impls if i not in CONV_IMPLS]
    if bad or args.rounds < 1 or args.steps < 1:
        print(f"error: --impls must name {tuple(CONV_IMPLS)} (got {bad}); --rounds and --steps "
              ">= 1", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.overrides)
        ds = load_dataset(cfg.data, cfg.seed)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from .loop import build_model
    from .optim import make_optimizer, make_schedule
    from .steps import make_train_step, split_model

    bs = cfg.train.batch_size
    norm = Normalizer(*channel_stats(ds.train.images))
    batches = train_batches(ds.train, norm, batch_size=bs, seed=cfg.seed, epoch=0,
                            crop_padding=cfg.data.crop_padding, flip=cfg.data.flip,
                            max_steps=args.steps)
    data = [(jnp.asarray(b["image"]), jnp.asarray(b["label"])) for b in
            (batches[i] for i in range(len(batches)))]
    tx = make_optimizer(cfg.optim, make_schedule(cfg.optim, 1000, 10))
    runners = {}
    for impl in impls:
        fns, state = split_model(build_model(cfg.model, cfg.seed, impl), tx)
        step = make_train_step(fns, tx, cfg.optim.label_smoothing)
        t0 = time.perf_counter()
        state, m = step(state, *data[0])
        m["loss"].block_until_ready()
        print(f"{impl}: compiled + first step {time.perf_counter() - t0:.1f} s", flush=True)
        runners[impl] = [step, state]
    times: dict[str, list[float]] = {i: [] for i in impls}
    for _ in range(args.rounds):
        for impl in impls:
            step, state = runners[impl]
            t0 = time.perf_counter()
            for x, y in data:
                state, m = step(state, x, y)
            m["loss"].block_until_ready()
            times[impl].append(time.perf_counter() - t0)
            runners[impl][1] = state
    n_img = len(data) * bs
    base = np.median(times[impls[0]])
    print(f"\n{cfg.model.data_format}, batch {bs}, widths {list(cfg.model.widths)}; median of "
          f"{args.rounds} rounds x {len(data)} steps")
    print(f"{'impl':<10} {'images/s':>9} {'ms/step':>8} {'vs ' + impls[0]:>9}")
    for impl in impls:
        med = float(np.median(times[impl]))
        print(f"{impl:<10} {n_img / med:>9.1f} {1000 * med / len(data):>8.1f} "
              f"{base / med:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
