"""Command line of ``python -m train``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, load_config
from .data import DataError

EPILOG = """examples:
  python -m train --config configs/cifar.yaml
  python -m train --config cifar.yaml data.source=cifar10_dir data.dir=~/cifar-10-batches-py
  python -m train --config cifar.yaml optim.lr=0.002 train.epochs=5 --workdir runs/try
  python -m train --config cifar.yaml --workdir runs/try --resume   # continue a killed run
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train", description="Train a jconv CNN on CIFAR-10 with Optax.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True,
                   help="YAML config; a bare file name is looked up in configs/")
    p.add_argument("--workdir", default=None,
                   help="output folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --workdir from its latest checkpoint")
    p.add_argument("--quiet", action="store_true",
                   help="one line per epoch instead of progress bars (for log files)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides, e.g. optim.lr=0.05 data.source=synthetic")
    # Intermixed: key=value overrides may come before, between and after the options.
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for config/data/usage errors)."""
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        workdir = Path(args.workdir or Path("runs") / Path(args.config).stem)
        from .loop import RunError, run  # jax & co. load only once the config is valid

        try:
            run(cfg, workdir, resume=args.resume, quiet=args.quiet)
        except RunError as e:
            raise ConfigError(str(e)) from None
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
