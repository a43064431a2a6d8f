"""Command line of ``python -m train``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import load_config
from .errors import ConfigError, RunError, TrainError, command, first_line
from .workdir import check_workdir

EPILOG = """examples:
  python -m train --config configs/cifar.yaml
  python -m train --config cifar.yaml data.source=cifar10_dir data.dir=~/cifar-10-batches-py
  python -m train --config cifar.yaml optim.lr=0.002 train.epochs=5 --workdir runs/try
  python -m train --workdir runs/try --resume    # continue a killed run (its config.yaml)
  python -m train --workdir runs/try --resume train.epochs=30   # train a run for longer
  python -m train --config cifar.yaml --coordinator 10.0.0.1:1234 --num-processes 2 \
      --process-id 0     # on host 0; the same with --process-id 1 on host 1
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train", description="Train a jconv CNN on CIFAR-10 with Optax.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None,
                   help="YAML config; a bare name (cifar_subset or cifar_subset.yaml) is "
                        "looked up in configs/; with --resume the default is the run's own "
                        "<workdir>/config.yaml")
    p.add_argument("--workdir", default=None,
                   help="output folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --workdir from its latest checkpoint; "
                        "train.epochs=N (more than it has done) trains it for longer")
    p.add_argument("--quiet", action="store_true",
                   help="one line per epoch instead of progress bars (for log files)")
    g = p.add_argument_group(
        "several processes (hosts)", "one process per host, all with the same arguments but "
        "--process-id; --distributed (or a multi-task SLURM / Open MPI job) lets JAX detect "
        "the cluster instead")
    g.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                   help="address of process 0 (jax.distributed.initialize)")
    g.add_argument("--num-processes", type=int, metavar="N", default=None)
    g.add_argument("--process-id", type=int, metavar="I", default=None)
    g.add_argument("--distributed", action="store_true",
                   help="jax.distributed.initialize() with JAX's cluster detection")
    g.add_argument("--dist-timeout", type=int, metavar="S", default=60,
                   help="seconds to wait for the other processes at start-up, and after "
                        "one has died before the others stop with an error (default 60)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides, e.g. optim.lr=0.05 data.source=synthetic")
    # Intermixed: key=value overrides may come before, between and after the options.
    return p.parse_intermixed_args(argv)


def _peer_failed(e: BaseException) -> None:
    """One process of a multi-process run saw a collective fail (a peer died): say so in
    one line and exit at once. A normal exit would first wait in jax.distributed's shutdown
    barrier for the dead process, then abort with pages of log."""
    import jax

    print(f"Error: process {jax.process_index()} of {jax.process_count()}: an operation "
          f"with the other processes failed, most likely because one of them died "
          f"({first_line(e)}); start them all again with --resume", file=sys.stderr, flush=True)
    os._exit(3)


def _config_path(args: argparse.Namespace) -> str:
    """``--config``, or with ``--resume`` and no ``--config`` the run's saved config."""
    if args.config is not None:
        return args.config
    if not args.resume or args.workdir is None:
        raise ConfigError("--config is required (or --resume --workdir D, which continues the "
                          "run in D with its own D/config.yaml)")
    saved = Path(args.workdir) / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"--resume without --config reads the run's {saved}, which does not "
                          "exist; pass --config")
    return str(saved)


@command
def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for config/data/usage errors, with
    one ``Error:`` line on stderr; 130/143 when interrupted/terminated)."""
    try:
        _train(parse_args(argv))
    except KeyboardInterrupt as e:
        from .process import Terminated

        return 143 if isinstance(e, Terminated) else 130
    return 0


def _train(args: argparse.Namespace) -> None:
    config = _config_path(args)
    cfg = load_config(config, args.overrides)
    workdir = check_workdir(args.workdir or Path("runs") / Path(config).stem)
    from .loop import run  # jax & co. load only once the config is valid
    from .process import use_host_memory_reuse

    use_host_memory_reuse(cfg)  # before jax starts its threads
    from .parallel import init_distributed

    try:
        distributed = init_distributed(args.coordinator, args.num_processes, args.process_id,
                                       auto=args.distributed, timeout_s=args.dist_timeout)
    except RuntimeError as e:  # jax.distributed could not reach the other processes
        raise RunError(first_line(e)) from None
    try:
        run(cfg, workdir, resume=args.resume, quiet=args.quiet, config_name=str(config))
    except RuntimeError as e:  # jax.errors.JaxRuntimeError: a collective failed
        if not distributed or isinstance(e, TrainError):
            raise
        _peer_failed(e)
