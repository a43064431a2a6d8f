"""The airbench race: jconv's whole training run against airbench94's own PyTorch code, on
this machine, one right after the other, seed by seed:

    python -m train.race --config cifar_subset.yaml --seeds 0,1,2
    python -m train.race --config cifar_subset.yaml --seeds 0,1,2 --compile-seeds 0

Each seed runs both sides as fresh processes, exactly as a user starts them:
``python -m train --config ... seed=S --quiet`` and the peer script
(``../shared/peers/airbench94_torch.py``, airbench94's code adapted only to read the subset
on the CPU; ``--peer`` names another copy) with the config's sizes (``AB_EPOCHS``,
``AB_BATCH``, ``AB_WIDTHS``). The order alternates by seed (PyTorch first for the 1st, 3rd,
... seed, jconv first for the others) so that a drift in the machine's speed does not
favour one side. ``--compile-seeds`` adds a row for the peer under ``torch.compile``
(``AB_COMPILE=1``), ``--reuse-seeds`` one for the peer with the malloc settings that
jconv's trainer uses (:func:`jconv.reuse_host_memory`, given to its process as glibc
tunables): PyTorch's large tensors are page-faulted in afresh the same way.
``--autocast-seeds`` adds one for the peer script with its network's forward under
``torch.autocast("cpu", dtype=torch.bfloat16)`` (the PyTorch side of a race of jconv's
``model.dtype=bfloat16``: convolutions and matmuls in bfloat16, the rest float32; the
whitening initialisation, the loss and the optimiser as the script has them).

The race is against the peer script rather than a port of ours: it is airbench94's own
code, so nothing we wrote can make the PyTorch side slower than it is.

One table is printed (and saved with every run's numbers, the machine and its load in
``<workdir>/race.json``, rewritten after each run so an interrupted race keeps what it
measured): accuracy (flip + multicrop TTA on the test images), the whole run's wall time
(the command, from process start to exit), training images/s (training images over the time
spent in training steps), start-up (the wall time before the first step and after the last
evaluation: imports, data, model, compiling, writing results), evaluation and checkpoint
time, and the ratio of each side's mean wall time to PyTorch eager's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import Config, load_config
from .errors import ConfigError, RaceError, command

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PEER = REPO.parent / "shared" / "peers" / "airbench94_torch.py"
JCONV, TORCH, COMPILED = "jconv", "PyTorch eager", "PyTorch torch.compile"
TORCH_REUSE = "PyTorch eager, reused host memory"
TORCH_BF16 = "PyTorch eager, autocast bfloat16"
SIDES = (JCONV, TORCH, COMPILED, TORCH_REUSE, TORCH_BF16)
# Runs the peer script with its network's forward under torch.autocast("cpu", bfloat16), as a
# PyTorch user turns on bfloat16 compute (autocast around the model, not the whole program:
# under a global autocast the whitening's covariance matmul ran in bfloat16, and training
# reached chance accuracy). The script is loaded as a module so that make_net can be wrapped
# before its __main__ block, repeated here, runs: argv is the peer's path, the data folder,
# the seeds.
AUTOCAST_RUNNER = (
    "import json, runpy, sys, torch\n"
    "path, data, seeds = sys.argv[1], sys.argv[2], sys.argv[3:] or ['0']\n"
    "peer = runpy.run_path(path, run_name='airbench94_peer')\n"
    "scope, make = peer['main'].__globals__, peer['make_net']\n"
    "def make_net():\n"
    "    net = make()\n"
    "    forward = net.forward\n"
    "    def autocast_forward(x):\n"
    "        with torch.autocast('cpu', dtype=torch.bfloat16):\n"
    "            return forward(x).float()\n"
    "    net.forward = autocast_forward\n"
    "    return net\n"
    "scope['make_net'] = make_net\n"
    "for s in seeds:\n"
    "    print(json.dumps(dict(scope['main'](int(s), data), autocast_dtype='bfloat16')), flush=True)\n")
# jconv.reuse_host_memory's mallopt settings as glibc tunables, for the peer's process.
REUSE_TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                  "glibc.malloc.trim_threshold=2147483647")
PROGRESS = re.compile(r"(epoch \d|test accuracy|VALIDATION|Error|note|\s+compiled|Traceback)")

# airbench94's hyperparameters that the peer script fixes (it takes only the sizes from the
# environment), with the jconv config key that must match for the two sides to run one
# recipe.
PEER_FIXED: tuple[tuple[str, Any], ...] = (
    ("model.arch", "airbench"), ("optim.name", "sgd"), ("optim.lr", 11.5),
    ("optim.momentum", 0.85), ("optim.nesterov", True), ("optim.weight_decay", 0.0153),
    ("optim.bias_lr_scale", 64.0), ("optim.label_smoothing", 0.2),
    ("optim.whiten_bias_epochs", 3.0), ("optim.lookahead", True), ("data.crop_padding", 2),
    ("data.flip", True), ("data.alternating_flip", True), ("model.bn_momentum", 0.6),
    ("model.head_scale", 1 / 9), ("train.tta_flip", True), ("train.tta_multicrop", True),
)


@dataclass
class RunResult:
    """One side's run of one seed."""

    side: str
    seed: int
    accuracy: float
    wall_s: float
    images_per_s: float
    startup_s: float
    eval_s: float
    checkpoint_s: float
    load_before: float
    load_after: float
    log: str
    extra: dict = field(default_factory=dict)


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def recipe_differences(cfg: Config) -> list[str]:
    """The airbench94 hyperparameters (fixed in the peer script) that ``cfg`` changes, as
    ``key=value (airbench94: value)``; empty when both sides run one recipe.

    Example:
      >>> recipe_differences(load_config("cifar_subset.yaml"))
      []
      >>> recipe_differences(load_config("cifar_subset.yaml", ["optim.lr=5.0"]))
      ['optim.lr=5.0 (airbench94: 11.5)']
    """
    out = []
    for key, want in PEER_FIXED:
        got = _get(cfg, key)
        same = math.isclose(got, want, rel_tol=1e-9) if isinstance(want, float) else \
            got == want
        if not same:
            out.append(f"{key}={got!r} (airbench94: {want!r})")
    return out


def peer_env(cfg: Config, train_images: int) -> dict[str, str]:
    """The peer script's environment for ``cfg``'s sizes: epochs (fractional when
    ``train.max_steps_per_epoch`` cuts the epochs short, so both sides take as many steps),
    batch size and widths.

    Example:
      >>> cfg = load_config("cifar_subset.yaml")
      >>> peer_env(cfg, 5170)
      {'AB_EPOCHS': '20', 'AB_BATCH': '256', 'AB_WIDTHS': '48,192,192'}
      >>> peer_env(load_config("cifar_subset.yaml", ["train.max_steps_per_epoch=2",
      ...                                            "train.epochs=1"]), 5170)["AB_EPOCHS"]
      '0.1'
    """
    t = cfg.train
    full = train_images // t.batch_size
    steps = full if t.max_steps_per_epoch is None else min(full, t.max_steps_per_epoch)
    epochs = t.epochs * steps / full
    return {"AB_EPOCHS": f"{epochs:.6g}", "AB_BATCH": str(t.batch_size),
            "AB_WIDTHS": ",".join(str(w) for w in cfg.model.widths)}


def machine() -> dict[str, Any]:
    """The CPU, its core count, the OS and the time (UTC), for the race's record."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _run(cmd: list[str], env: dict[str, str], log: Path, echo: Callable[[str], None]
         ) -> tuple[float, int, list[str]]:
    """Run ``cmd``, its output into ``log`` (and each line through ``echo``); returns
    (wall seconds, exit code, output lines)."""
    lines = []
    t0 = time.perf_counter()
    with open(log, "w") as f, subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=os.getcwd()) as p:
        assert p.stdout is not None
        try:
            for line in p.stdout:
                f.write(line)
                lines.append(line.rstrip("\n"))
                echo(line.rstrip("\n"))
            code = p.wait()
        except KeyboardInterrupt:
            p.terminate()
            p.wait()
            raise
    return time.perf_counter() - t0, code, lines


def _failed(side: str, seed: int, code: int, lines: list[str], log: Path) -> RaceError:
    tail = "\n    ".join(lines[-5:])
    return RaceError(f"{side} run of seed {seed} failed (exit {code}); its log: {log}; last "
                     f"lines:\n    {tail}")


def run_jconv(config: str, overrides: Sequence[str], seed: int, workdir: Path,
              echo: Callable[[str], None]) -> RunResult:
    """One whole ``python -m train`` run of ``seed`` in a fresh work directory."""
    run_dir = workdir / f"jconv-seed{seed}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    log = workdir / f"jconv-seed{seed}.log"
    cmd = [sys.executable, "-m", "train", "--config", config, *overrides, f"seed={seed}",
           "--workdir", str(run_dir), "--quiet"]
    before = _load()
    wall, code, lines = _run(cmd, dict(os.environ), log, echo)
    if code != 0:
        raise _failed(JCONV, seed, code, lines, log)
    res = json.loads((run_dir / "results.json").read_text())
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    timing = res["timing"]
    images = sum(r["images_per_s"] * r["train_time_s"] for r in records)
    accounted = timing["train_s"] + timing["eval_s"] + timing["final_eval_s"] + \
        timing["checkpoint_s"]
    return RunResult(JCONV, seed, res["test_acc"], wall, images / timing["train_s"],
                     wall - accounted, timing["eval_s"] + timing["final_eval_s"],
                     timing["checkpoint_s"], before, _load(), str(log),
                     {"timing": timing, "median_epoch_images_per_s":
                      res["median_images_per_s"]})


def run_peer(peer: Path, data_dir: Path, env: dict[str, str], seed: int, workdir: Path,
             side: str, echo: Callable[[str], None]) -> RunResult:
    """One run of the peer script for ``seed`` as ``side``: eager, under ``torch.compile``
    (COMPILED), eager with jconv's malloc settings (TORCH_REUSE) or eager under bfloat16
    autocast (TORCH_BF16)."""
    name = {TORCH: "torch", COMPILED: "torch-compile", TORCH_REUSE: "torch-reuse",
            TORCH_BF16: "torch-autocast-bf16"}[side]
    log = workdir / f"{name}-seed{seed}.log"
    full_env = {**os.environ, **env, "AB_COMPILE": "1" if side == COMPILED else "0"}
    if side == TORCH_REUSE:
        full_env["GLIBC_TUNABLES"] = REUSE_TUNABLES
    before = _load()
    runner = ["-c", AUTOCAST_RUNNER] if side == TORCH_BF16 else []
    wall, code, lines = _run([sys.executable, *runner, str(peer), str(data_dir), str(seed)],
                             full_env, log, echo)
    if code != 0:
        raise _failed(side, seed, code, lines, log)
    try:
        out = json.loads(next(x for x in reversed(lines) if x.startswith("{")))
    except (StopIteration, json.JSONDecodeError):
        raise RaceError(f"{side} run of seed {seed} printed no result line; its log: "
                        f"{log}") from None
    return RunResult(side, seed, out["tta_acc"], wall,
                     out["steps"] * int(env["AB_BATCH"]) / out["train_s"],
                     wall - out["total_s"], out["total_s"] - out["train_s"], 0.0, before,
                     _load(), str(log), {"peer": out})


def _mean_sd(xs: Sequence[float], fmt: str) -> str:
    if len(xs) == 1:
        return format(xs[0], fmt)
    return f"{format(statistics.mean(xs), fmt)} ± {format(statistics.stdev(xs), fmt)}"


def table(results: Sequence[RunResult]) -> str:
    """The race's markdown table: one row per side, means over its seeds (± the sample
    standard deviation where there are several), and each side's mean wall time over
    PyTorch eager's.

    Example:
      >>> r = [RunResult(JCONV, 0, 0.8, 200.0, 500.0, 10.0, 5.0, 2.0, 0.1, 0.2, "a.log"),
      ...      RunResult(TORCH, 0, 0.79, 250.0, 400.0, 4.0, 3.0, 0.0, 0.1, 0.2, "b.log")]
      >>> print(table(r))  # doctest: +NORMALIZE_WHITESPACE
      | side | seeds | accuracy (TTA) | whole run s | training images/s | start-up s | evaluation s | checkpoints s | wall / PyTorch eager's |
      |---|---|---|---|---|---|---|---|---|
      | jconv | 0 | 80.00% | 200.0 | 500 | 10.0 | 5.0 | 2.0 | 0.80 |
      | PyTorch eager | 0 | 79.00% | 250.0 | 400 | 4.0 | 3.0 | 0.0 | 1.00 |
    """
    sides = list(dict.fromkeys(r.side for r in results))
    base = [r.wall_s for r in results if r.side == TORCH]
    rows = ["| side | seeds | accuracy (TTA) | whole run s | training images/s | start-up s "
            "| evaluation s | checkpoints s | wall / PyTorch eager's |",
            "|---|---|---|---|---|---|---|---|---|"]
    for side in sides:
        rs = [r for r in results if r.side == side]
        ratio = f"{statistics.mean(r.wall_s for r in rs) / statistics.mean(base):.2f}" \
            if base else "–"
        rows.append(
            f"| {side} | {','.join(str(r.seed) for r in rs)} | "
            f"{_mean_sd([100 * r.accuracy for r in rs], '.2f')}% | "
            f"{_mean_sd([r.wall_s for r in rs], '.1f')} | "
            f"{_mean_sd([r.images_per_s for r in rs], '.0f')} | "
            f"{_mean_sd([r.startup_s for r in rs], '.1f')} | "
            f"{_mean_sd([r.eval_s for r in rs], '.1f')} | "
            f"{_mean_sd([r.checkpoint_s for r in rs], '.1f')} | {ratio} |")
    return "\n".join(rows)


def _seeds(text: str, flag: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds and text:
        raise ConfigError(f"{flag} must be comma-separated integers, e.g. 0,1,2; got {text!r}")
    return seeds


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.race", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cifar_subset.yaml")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--compile-seeds", default="",
                   help="seeds that also run the peer under torch.compile (default: none)")
    p.add_argument("--reuse-seeds", default="",
                   help="seeds that also run the peer with jconv's malloc settings "
                        "(jconv.reuse_host_memory, as glibc tunables; default: none)")
    p.add_argument("--autocast-seeds", default="",
                   help="seeds that also run the peer under torch.autocast bfloat16")
    p.add_argument("--peer", default=str(DEFAULT_PEER),
                   help=f"airbench94's PyTorch script (default {DEFAULT_PEER})")
    p.add_argument("--workdir", default="runs/race",
                   help="where the runs, their logs and race.json go (default runs/race)")
    p.add_argument("--no-torch", action="store_true", help="jconv's runs only")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides for jconv's runs; the peer gets the same sizes")
    return p.parse_intermixed_args(argv)


@dataclass
class _Plan:
    """A checked race: the config, its data folder, the peer script and who runs when."""

    cfg: Config
    data_dir: Path
    peer: Path
    use_torch: bool
    seeds: list[int]
    compile_seeds: list[int]
    reuse_seeds: list[int]
    autocast_seeds: list[int]

    def order(self, i: int, seed: int) -> list[str]:
        """The sides of seed number ``i``: the two main ones alternate which goes first."""
        if not self.use_torch:
            return [JCONV]
        order = [TORCH, JCONV] if i % 2 == 0 else [JCONV, TORCH]
        return order + [COMPILED] * (seed in self.compile_seeds) + \
            [TORCH_REUSE] * (seed in self.reuse_seeds) + \
            [TORCH_BF16] * (seed in self.autocast_seeds)


def _check_config(cfg: Config, config: str) -> Path:
    """The config's data folder; a ConfigError unless both sides can race on it."""
    if cfg.model.arch != "airbench":
        raise ConfigError(f"--config {config}: model.arch={cfg.model.arch!r}; the "
                          "race's peer is airbench94, so the config must be an airbench "
                          "recipe (cifar.yaml, cifar_subset.yaml)")
    if cfg.data.source not in ("cifar10_dir", "auto") or not cfg.data.dir:
        raise ConfigError("the race reads the data from a cifar-10-batches-py folder on "
                          "both sides: set data.source=cifar10_dir and data.dir")
    if cfg.data.val_fraction > 0 or cfg.data.max_train is not None:
        raise ConfigError("the peer trains on every training image and tests on the test "
                          "set: leave data.val_fraction=0 and data.max_train=null")
    data_dir = Path(cfg.data.dir).expanduser()
    if not (data_dir / "data_batch_1").is_file():
        raise ConfigError(f"data.dir={cfg.data.dir!r} is not a cifar-10-batches-py folder "
                          f"(no data_batch_1 in {data_dir.resolve()}; it is relative to "
                          f"the working directory {Path.cwd()})")
    return data_dir


def _plan(args: argparse.Namespace) -> _Plan:
    """The race ``args`` ask for, checked before anything runs."""
    seeds = _seeds(args.seeds, "--seeds")
    compile_seeds = _seeds(args.compile_seeds, "--compile-seeds")
    reuse_seeds = _seeds(args.reuse_seeds, "--reuse-seeds")
    autocast_seeds = _seeds(args.autocast_seeds, "--autocast-seeds")
    if not seeds:
        raise ConfigError("--seeds must name at least one seed, e.g. --seeds 0,1,2")
    cfg = load_config(args.config, args.overrides)
    data_dir = _check_config(cfg, args.config)
    use_torch = not args.no_torch
    if use_torch and not _torch_available():
        print("PyTorch is not installed: the PyTorch rows are skipped (pip install torch)")
        use_torch = False
    peer = Path(args.peer)
    if use_torch and not peer.is_file():
        raise ConfigError(f"--peer {args.peer}: no such file (airbench94's PyTorch "
                          "script; pass its path, or --no-torch)")
    return _Plan(cfg, data_dir, peer, use_torch, seeds, compile_seeds, reuse_seeds,
                 autocast_seeds)


@command
def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, 1 when a side's run
    failed, 130 when interrupted; one ``Error:`` line on stderr)."""
    args = _parse_args(argv)
    plan = _plan(args)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    from .data import load_cifar10_dir

    train_images = len(load_cifar10_dir(plan.data_dir, read_test=False).train)
    env = peer_env(plan.cfg, train_images)
    differs = recipe_differences(plan.cfg)
    record: dict[str, Any] = {
        "command": [sys.executable, "-m", "train.race", *(argv if argv is not None
                                                          else sys.argv[1:])],
        "config": args.config, "overrides": list(args.overrides), "peer": str(plan.peer),
        "peer_env": env, "machine": machine(), "recipe_differences": differs, "runs": []}
    print(f"race on {record['machine']['cpu']} ({record['machine']['cores']} cores), "
          f"{record['machine']['date']}, load {_load():.2f}: --config {args.config} "
          f"{' '.join(args.overrides)} vs {plan.peer.name if plan.use_torch else '(no PyTorch)'} "
          f"{' '.join(f'{k}={v}' for k, v in env.items())}", flush=True)
    if differs:
        print(f"note: the sides run different recipes: {'; '.join(differs)}", flush=True)
    return _race(args, plan, env, record, workdir)


def _race(args: argparse.Namespace, plan: _Plan, env: dict[str, str], record: dict,
          workdir: Path) -> int:
    """Run every side of every seed, saving ``race.json`` after each; prints the table."""
    results: list[RunResult] = []

    def save() -> None:
        record["runs"] = [asdict(r) for r in results]
        (workdir / "race.json").write_text(json.dumps(record, indent=1))

    def one(side: str, seed: int) -> None:
        def echo(line: str) -> None:
            # The runs' progress (epochs, results, errors), not their reports' tables.
            if side != JCONV or PROGRESS.match(line):
                print(f"  [{side} seed {seed}] {line}", flush=True)
        print(f"{side}, seed {seed}: started (load {_load():.2f})", flush=True)
        if side == JCONV:
            r = run_jconv(args.config, args.overrides, seed, workdir, echo)
        else:
            r = run_peer(plan.peer, plan.data_dir, env, seed, workdir, side, echo)
        results.append(r)
        save()
        print(f"{side}, seed {seed}: {100 * r.accuracy:.2f}% in {r.wall_s:.1f} s "
              f"({r.images_per_s:.0f} training images/s)", flush=True)

    try:
        for i, seed in enumerate(plan.seeds):
            for side in plan.order(i, seed):
                one(side, seed)
    except KeyboardInterrupt:
        save()
        print(f"\ninterrupted: the finished runs are in {workdir / 'race.json'}",
              file=sys.stderr)
        if results:
            print(table(sorted(results, key=lambda r: SIDES.index(r.side))))
        return 130
    finally:
        save()  # a failed side (RaceError) leaves the finished runs on record too
    results.sort(key=lambda r: SIDES.index(r.side))
    save()
    print(f"\n{record['machine']['date']}, {record['machine']['cpu']}, "
          f"{record['machine']['cores']} cores; load {min(r.load_before for r in results):.2f}"
          f"-{max(r.load_after for r in results):.2f} (1-minute averages at the runs' starts "
          f"and ends)")
    print(table(results))
    print(f"runs, logs and race.json: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
