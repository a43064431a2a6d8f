"""Training throughput of each conv implementation on the configured model, measured in one
process with the implementations interleaved round by round (so that a busy machine slows
all of them alike):

    python -m train.bench --config cifar_subset.yaml --impls lax,im2col,loops --rounds 5

An implementation is a name in ``jconv.CONV_IMPLS``, compiled with XLA's default conv
kernels, or that name plus ``+eigen`` (``lax+eigen``) for ``jconv.conv_compiler_options
("eigen")`` — the labels of ``python -m jconv.bench``; without ``--impls`` it is the
config's own ``model.conv_impl`` and ``model.conv_backend``. Each round times ``--steps``
jitted train steps (real batches; the trainer's step, built by
:class:`train.experiment.Experiment`: forward, backward, optimiser update and, with
``optim.lookahead``, Lookahead) per implementation, and the same steps of the PyTorch
reference of the same network, batch, layout and optimiser (:mod:`train.torch_ref`; rows
``torch``, left out with ``--no-torch`` or when torch is not installed), after
``--warmup`` untimed rounds of every row (default 2); the table reports
the median over rounds in images/s, and the ratio to the first one listed. ``--formats
NHWC,NCHW`` also compares the data layouts (PyTorch's NHWC is ``channels_last``), and
``--dtypes float32,bfloat16`` the compute dtypes (``model.dtype``; PyTorch's bfloat16 rows
run under ``torch.autocast("cpu", dtype=torch.bfloat16)``):

    python -m train.bench --config cifar_subset.yaml --impls onednn --dtypes float32,bfloat16
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from typing import Callable, Sequence

import numpy as np

import jconv

from .config import Config, override
from .errors import ConfigError, command
from .experiment import Experiment, RunData
from .harness import EIGEN_SUFFIX, bench_batches, load_inputs, split_label


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--impls", default=None,
                   help="comma-separated impl labels (default: the config's conv_impl, "
                        "+eigen when its conv_backend is eigen)")
    p.add_argument("--formats", default=None,
                   help="comma-separated data formats to compare (default: the config's)")
    p.add_argument("--dtypes", default=None,
                   help="comma-separated model.dtype values to compare (default: the config's)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="train steps timed per round")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed rounds of every row before the timed ones (default 2)")
    p.add_argument("--no-torch", action="store_true",
                   help="leave out the PyTorch reference (train.torch_ref) rows")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, with one ``Error:``
    line on stderr)."""
    args = _parse_args(argv)
    impls = [i for i in (args.impls or "").split(",") if i]
    bad = [i for i in impls if split_label(i)[0] not in jconv.CONV_IMPLS]
    if bad or args.rounds < 1 or args.steps < 1:
        raise ConfigError(f"--impls must name {tuple(jconv.CONV_IMPLS)}, each optionally "
                          f"with {EIGEN_SUFFIX} (got {bad}); --rounds and --steps >= 1")
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")
    formats = args.formats.split(",") if args.formats else [None]
    if any(f not in (None, "NHWC", "NCHW") for f in formats):
        raise ConfigError(f"--formats must be NHWC and/or NCHW, got {args.formats!r}")
    dtypes = args.dtypes.split(",") if args.dtypes else [None]
    if any(d not in (None, "float32", "bfloat16") for d in dtypes):
        raise ConfigError(f"--dtypes must be float32 and/or bfloat16, got {args.dtypes!r}")
    cfg, run_data = load_inputs(args.config, args.overrides)
    if not impls:
        impls = [cfg.model.conv_impl + (EIGEN_SUFFIX if cfg.model.conv_backend == "eigen"
                                        else "")]
    exps = {variant_name(label, fmt, dt): bench_experiment(cfg, run_data, *split_label(label),
                                                           fmt, dt)
            for fmt in formats for dt in dtypes for label in impls}
    # The batches depend only on the config's data, seed and epoch, not on the variant.
    data = bench_batches(next(iter(exps.values())), args.steps)
    fns = jconv_runners(exps, data)
    configs = run_configs(cfg, formats, dtypes, split_label(impls[0])[0])
    torch_runs = {} if args.no_torch else torch_runners(configs, data)
    if not args.no_torch and not torch_runs:
        print("PyTorch is not installed: no PyTorch reference rows (pip install torch)",
              flush=True)
    fns.update(torch_runs)
    warm_up(fns, args.warmup)
    # jconv's benchmark timer: interleaved rounds with a rotating start, medians in ms.
    times = jconv.interleaved_medians(fns, args.rounds)
    layout = cfg.model.data_format if args.formats is None else args.formats
    dtype = cfg.model.dtype if args.dtypes is None else args.dtypes
    print(f"\n{layout}, {dtype}, batch {cfg.train.batch_size}, widths "
          f"{list(cfg.model.widths)}; median of {args.rounds} rounds x {len(data)} steps")
    print(report(times, len(data), cfg.train.batch_size))
    return 0


def warm_up(fns: dict[str, Callable[[], None]], rounds: int) -> None:
    """Run every row ``rounds`` times, untimed. A jconv step's first few executions still
    fault its temporaries' pages in (glibc's heap grows to fit them, even with
    ``train.reuse_host_memory``), and in one process with PyTorch that settles only after
    several steps; timing them would charge start-up to the step."""
    if rounds:
        t0 = time.perf_counter()
        for _ in range(rounds):
            for fn in fns.values():
                fn()
        print(f"warm-up: {rounds} untimed round(s) of every row in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)


def report(times: dict[str, float], steps: int, batch_size: int) -> str:
    """The table of ``times`` (ms per round of ``steps`` steps, by row name): images/s,
    ms per step and the speed relative to the first row.

    Example:
      >>> print(report({"lax": 200.0, "im2col": 400.0}, steps=2, batch_size=10))
      impl            images/s  ms/step       vs lax
      lax                100.0    100.0        1.00x
      im2col              50.0    200.0        0.50x
    """
    first = next(iter(times))
    base = times[first] / 1000
    rows = [f"{'impl':<14} {'images/s':>9} {'ms/step':>8} {'vs ' + first:>12}"]
    for name, ms in times.items():
        med = ms / 1000
        rows.append(f"{name:<14} {steps * batch_size / med:>9.1f} {1000 * med / steps:>8.1f} "
                    f"{base / med:>11.2f}x")
    return "\n".join(rows)


def jconv_runners(exps: dict[str, Experiment],
                  data: list) -> dict[str, Callable[[], None]]:
    """{name: run the batches through that experiment's train step}, each compiled and
    run once first (the time that took is printed); each run waits for its last loss."""
    runners = {}
    for name, exp in exps.items():
        state, step = exp.state, exp.train_step()
        t0 = time.perf_counter()
        state, m = step(state, *data[0])
        m["loss"].block_until_ready()
        print(f"{name}: compiled + first step {time.perf_counter() - t0:.1f} s", flush=True)
        runners[name] = [step, state]

    def run_steps(name: str) -> None:
        step, state = runners[name]
        for x, y in data:
            state, m = step(state, x, y)
        m["loss"].block_until_ready()
        runners[name][1] = state

    return {n: functools.partial(run_steps, n) for n in runners}


def variant_name(label: str, data_format: str | None, dtype: str | None) -> str:
    """A row's name: the impl label, then the layout and dtype where they are compared."""
    return "/".join(x for x in (label, data_format, dtype) if x is not None)


def variant_overrides(data_format: str | None, dtype: str | None) -> list[str]:
    """The config overrides of a row's layout and dtype (none for those not compared)."""
    return [*([] if data_format is None else [f"model.data_format={data_format}"]),
            *([] if dtype is None else [f"model.dtype={dtype}"])]


def bench_experiment(cfg: Config, data: RunData, impl: str, conv_backend: str,
                     data_format: str | None = None, dtype: str | None = None) -> Experiment:
    """The trainer's run of ``cfg`` with conv ``impl`` compiled with ``conv_backend`` (and
    ``data_format``, ``dtype`` when given): the same update, only the kernels, layout or
    compute dtype changed."""
    return Experiment.from_config(override(cfg, [
        f"model.conv_impl={impl}", f"model.conv_backend={conv_backend}",
        *variant_overrides(data_format, dtype)]), data=data)


def run_configs(cfg: Config, formats: Sequence[str | None],
                dtypes: Sequence[str | None] = (None,),
                conv_impl: str | None = None) -> dict[str, Config]:
    """{PyTorch row name: config} for each compared data format and dtype; ``conv_impl``
    (a benchmarked jconv impl) replaces the config's, which PyTorch does not use but the
    config is validated with: ``--impls lax --dtypes bfloat16`` must not need the
    config's onednn to have bfloat16 kernels on this CPU."""
    impl = [] if conv_impl is None else [f"model.conv_impl={conv_impl}"]
    return {variant_name("torch", f, d): override(cfg, [*impl, *variant_overrides(f, d)])
            for f in formats for d in dtypes}


def torch_runners(configs: dict[str, Config], data: list) -> dict[str, Callable[[], None]]:
    """{name: run the batches through PyTorch's step of that config} (:mod:`train.torch_ref`;
    each run ends with a blocking ``float(loss)``), empty when torch is not installed."""
    from .torch_ref import make_torch_step

    out = {}
    for name, cfg in configs.items():
        step = make_torch_step(cfg)
        if step is None:
            return {}
        batches = [step.inputs(np.asarray(x), np.asarray(y)) for x, y in data]

        def run(step: Callable = step, batches: list = batches) -> None:
            for x, y in batches:
                step(x, y)

        t0 = time.perf_counter()
        run()
        print(f"{name}: first steps {time.perf_counter() - t0:.1f} s", flush=True)
        out[name] = run
    return out


if __name__ == "__main__":
    sys.exit(main())
