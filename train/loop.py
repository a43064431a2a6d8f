"""One training run of a config, in four parts: prepare (the :class:`Experiment`, the work
directory, a restored checkpoint), compile (its steps), fit (the epochs, each logged and
checkpointed) and finish (the final evaluation, plots and results)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from scipy.special import log_softmax
from tqdm import tqdm

from . import report
from .checkpoint import Checkpoints
from .config import Config, as_dict, to_yaml
from .data import Split, eval_batches
from .errors import CheckpointError, RunError, TrainError
from .experiment import CompiledSteps, Experiment
from .model import count_params, macs_per_image
from .parallel import AXIS, make_mesh, shard_batch
from .process import SIGNALS, Terminated, use_compilation_cache
from .steps import TrainState
from .workdir import check_resume, completed_results, prepare_workdir

# Fields of a metrics record that depend only on the computation (not on timing): these are
# what a resumed run must reproduce exactly.
DETERMINISTIC_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")

# The parts of a run's wall time that results.json reports (seconds, this process): start-up
# (imports excluded: from run() to the first step: data, model, compiling), the training
# steps, the per-epoch and final evaluations, and the checkpoint saves.
TIMED = ("startup_s", "train_s", "eval_s", "final_eval_s", "checkpoint_s")


def due(epoch: int, every: int, epochs: int) -> bool:
    """Whether the work done every ``every``-th epoch (0: never) falls after ``epoch``
    (1-based) of a run of ``epochs``; the last epoch always gets it.

    Example:
      >>> [e for e in range(1, 8) if due(e, 3, 7)], [e for e in range(1, 4) if due(e, 0, 3)]
      ([3, 6, 7], [])
    """
    return every > 0 and (epoch % every == 0 or epoch == epochs)


def evaluate(exp: Experiment, eval_step: Any, state: TrainState,
             split: Split) -> tuple[float, float, np.ndarray]:
    """(mean cross-entropy, accuracy, predictions (N,)) of ``eval_step`` over the whole
    ``split``; each batch (the last one padded, see :func:`train.data.eval_batches`) is split
    over the experiment's mesh."""
    preds, losses = [], []
    for b in eval_batches(split, exp.data.norm, exp.eval_batch_size):
        images = b["image"].astype(exp.input_dtype)
        logits = eval_step(state.params, state.batch_stats,
                           images if exp.mesh is None else shard_batch(exp.mesh, images))
        logits = np.asarray(logits, np.float64)[b["mask"]]
        labels = b["label"][b["mask"]]
        # float64 on the host, as every reported test loss has been computed
        losses.append(-log_softmax(logits, axis=-1)[np.arange(len(labels)), labels])
        preds.append(logits.argmax(-1))
    pred = np.concatenate(preds)
    return (float(np.concatenate(losses).mean()), float((pred == split.labels).mean()), pred)


def _summary(exp: Experiment, workdir: Path) -> str:
    cfg, m, ds = exp.cfg, exp.cfg.model, exp.data.dataset
    lines = [
        f"jconv CIFAR-10 training -> {workdir}",
        f"  devices     {', '.join(report.devices())}",
        f"  parallel    data parallel over {exp.devices} device(s) of {jax.process_count()} "
        f"process(es): {cfg.train.batch_size // exp.devices} images per device per step",
        f"  data        {ds.description}",
        f"  model       {m.arch}, widths {list(m.widths)} x {m.convs_per_stage} convs, "
        f"conv_impl={m.conv_impl} ({m.conv_backend} XLA conv kernels), {m.data_format}, {m.dtype}",
        f"  size        {count_params(exp.model):,} parameters, "
        f"{macs_per_image(exp.model) / 1e6:.1f} M MACs/image (forward)",
        f"  optimiser   {cfg.optim.name} lr={cfg.optim.lr} {cfg.optim.schedule} "
        f"warm-up {cfg.optim.warmup_epochs} epochs, wd={cfg.optim.weight_decay}, "
        f"label smoothing {cfg.optim.label_smoothing}",
        f"  schedule    {cfg.train.epochs} epochs x {exp.steps_per_epoch} steps of "
        f"{cfg.train.batch_size} images, seed {cfg.seed}",
    ]
    return "\n".join(lines)


def _sync(name: str) -> None:
    """Wait until every process gets here (nothing to wait for with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _silent(*args: Any, **kwargs: Any) -> None:
    """``print`` for processes other than 0."""


@dataclass
class _Run:
    """A run under way: its experiment, its current state and where its outputs go. Only
    process 0 (``main``) prints and writes logs."""

    exp: Experiment
    state: TrainState
    workdir: Path
    main: bool
    quiet: bool
    say: Callable[..., None]
    ckpts: Checkpoints
    log: report.MetricsLog
    tensorboard: Any
    t_start: float
    start_epoch: int = 0
    wall_before: float = 0.0
    # Seconds this process spent on each part of the run (results.json's "timing").
    timing: dict = field(default_factory=lambda: dict.fromkeys(TIMED, 0.0))

    def wall_s(self) -> float:
        """Training wall time so far, including the runs this one resumes."""
        return self.wall_before + time.perf_counter() - self.t_start

    def close(self) -> None:
        self.ckpts.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def run(cfg: Config, workdir: str | Path, resume: bool = False, quiet: bool = False,
        config_name: str = "") -> dict:
    """Train as ``cfg`` says, writing everything under ``workdir``; returns the final
    results (also saved as ``results.json``). ``resume`` continues from the latest
    checkpoint and, the data order depending only on (seed, epoch), ends with the same
    metrics as an uninterrupted run; with a larger ``train.epochs`` than the run's it trains
    the run for longer, and a run already complete only reports its results.
    ``config_name`` (the ``--config`` given) titles the plot.

    Data parallel over every device of every process (see :mod:`train.parallel`): each
    global batch of ``train.batch_size`` images is split over the devices, so the metrics
    do not depend on the device count. Only process 0 prints and writes logs, plots and
    results; every process writes and restores the checkpoints (Orbax)."""
    t_start = time.perf_counter()
    use_compilation_cache()
    workdir = Path(workdir)
    say = print if jax.process_index() == 0 else _silent
    extends = check_resume(workdir, resume, cfg)
    done = completed_results(workdir, cfg) if resume and extends is None else None
    if done is not None:
        n = cfg.train.epochs
        say(f"--resume: the run in {workdir} is already complete ({n} epoch{'s' * (n != 1)}, "
            f"{done['eval_split']} accuracy {100 * done['test_acc']:.2f}%; "
            f"{workdir / 'results.json'}); to train it longer pass train.epochs=N with N > "
            f"{cfg.train.epochs}")
        return done
    r = _prepare(cfg, workdir, resume, quiet, t_start)
    try:
        with SIGNALS.installed():
            _restore(r, resume, extends)
            steps = _compile(r)
            _fit(r, steps)
    except KeyboardInterrupt as e:
        latest = r.ckpts.latest()
        why = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        since = "from scratch" if latest is None else f"after epoch {latest}"
        say(f"\n{why}; continue with: python -m train --workdir {workdir} --resume "
            f"(its newest checkpoint resumes {since})", file=sys.stderr)
        raise
    finally:
        r.close()
    return _finish(r, steps, f"{config_name or 'config'}: run {workdir}, seed {cfg.seed}")


def _prepare(cfg: Config, workdir: Path, resume: bool, quiet: bool, t_start: float) -> _Run:
    """The experiment on every device, the work directory with the run's config and record,
    the checkpoints and the metrics log."""
    main = jax.process_index() == 0
    say = print if main else _silent
    try:
        exp = Experiment.from_config(cfg, make_mesh(), progress=main and not quiet)
    except ValueError as e:  # a model the config's sizes cannot build
        if isinstance(e, TrainError):
            raise
        raise RunError(str(e)) from None
    _sync("workdir checked")  # before process 0 changes the folder the others checked
    if main:
        prepare_workdir(workdir, resume)
        (workdir / "config.yaml").write_text(to_yaml(cfg))
        report.write_json(workdir / "run.json", {
            "command": sys.argv, "seed": cfg.seed, "resumed": resume, "config": as_dict(cfg),
            "versions": report.versions(), "devices": report.devices(),
            "mesh": {AXIS: exp.devices}, "processes": jax.process_count(),
            "data": exp.data.dataset.description,
            "normalisation": {"mean": exp.data.norm.mean.tolist(),
                              "std": exp.data.norm.std.tolist()}})
    say(_summary(exp, workdir), flush=True)
    tensorboard = report.open_tensorboard(workdir / "tensorboard") \
        if cfg.train.tensorboard and main else None
    return _Run(exp, exp.state, workdir, main, quiet, say,
                Checkpoints(workdir / "checkpoints", cfg.train.keep_checkpoints),
                report.MetricsLog(workdir / "metrics.jsonl", tensorboard), tensorboard, t_start)


def _restore(r: _Run, resume: bool, extends: int | None) -> None:
    """With ``resume``, the newest checkpoint that loads into ``r`` (none yet: start from
    scratch); the metrics log cut to the epoch the run continues after."""
    epochs = r.exp.cfg.train.epochs
    found = None
    if resume:
        try:
            found = r.ckpts.restore_newest(r.state, say=lambda line: r.say(f"--resume: {line}"))
        except CheckpointError as e:
            raise RunError(f"--resume: {e}") from None
        if found is None:
            r.say("--resume: no checkpoint yet in this work directory, starting from scratch")
    if found is not None:
        latest, r.state, meta = found
        r.start_epoch, r.wall_before = int(meta["epoch"]), float(meta["wall_s"])
        r.say(f"--resume: continuing after epoch {r.start_epoch} "
              f"(checkpoint {r.workdir / 'checkpoints' / str(latest)})")
        if r.start_epoch > epochs:
            raise RunError(f"--resume: train.epochs={epochs} is below the "
                           f"{r.start_epoch} epochs the run has done; it can only grow")
        if extends is not None:
            r.say(f"--resume: train.epochs {extends} -> {epochs}: the learning-rate "
                  f"schedule now spans {epochs} epochs (the first {r.start_epoch} followed "
                  f"the {extends}-epoch one, so this run differs from one started with "
                  f"train.epochs={epochs})")
    if r.main:
        r.log.truncate(r.start_epoch)


def _compile(r: _Run) -> CompiledSteps:
    t0 = time.perf_counter()
    steps = r.exp.compile()
    r.say(f"  compiled    train and eval steps in {time.perf_counter() - t0:.1f} s",
          flush=True)
    return steps


def _fit(r: _Run, steps: CompiledSteps) -> None:
    """Train the remaining epochs, logging each and checkpointing every
    ``train.checkpoint_every``-th and the last."""
    t = r.exp.cfg.train
    r.timing["startup_s"] = time.perf_counter() - r.t_start
    for epoch in range(r.start_epoch, t.epochs):
        r.state, record = _train_epoch(r, steps, epoch)
        record["wall_s"] = round(r.wall_s(), 2)
        if r.main:
            r.log.write(record)
        if due(epoch + 1, t.checkpoint_every, t.epochs):
            t0 = time.perf_counter()
            # An epoch without an evaluation is never the best checkpoint.
            acc = record["test_acc"]
            with SIGNALS.deferred():
                r.ckpts.save(epoch + 1, r.state, {"epoch": epoch + 1,
                                                  "wall_s": record["wall_s"]},
                             -1.0 if acc is None else acc)
            r.timing["checkpoint_s"] += time.perf_counter() - t0


def _finite_loss(loss: Any, epoch: int, step: int, steps: int) -> float:
    """The loss of ``step`` (1-based) as a float; a non-finite one stops the run before the
    epoch is logged or checkpointed, so the last checkpoint stays the last good state."""
    value = float(loss)
    if not np.isfinite(value):
        raise RunError(f"training diverged: the loss is {value} at epoch {epoch + 1}, step "
                       f"{step} of {steps}; the checkpoints of earlier epochs are kept. Lower "
                       "optim.lr (or check the data) and start a new --workdir")
    return value


def _train_epoch(r: _Run, steps: CompiledSteps, epoch: int) -> tuple[TrainState, dict]:
    """One epoch of training steps and its evaluation: (new state, metrics record)."""
    exp, state = r.exp, r.state
    t, mesh, n = exp.cfg.train, exp.mesh, exp.steps_per_epoch
    batches = exp.batches(epoch)
    bar = tqdm(total=n, desc=f"epoch {epoch + 1}/{t.epochs}", unit="step",
               disable=r.quiet or not r.main, leave=True, dynamic_ncols=True)
    losses, correct = [], 0
    t0 = time.perf_counter()
    pending = None
    for i in range(n):
        b = batches[i]
        state, metrics = steps.train_at(epoch * n + i)(
            state, shard_batch(mesh, b["image"].astype(exp.input_dtype)),
            shard_batch(mesh, b["label"]))
        # Read the previous step's metrics while this one runs (keeps a GPU busy).
        if pending is not None:
            losses.append(_finite_loss(pending["loss"], epoch, i, n))
            correct += int(pending["correct"])
        pending = metrics
        seen = (i + 1) * t.batch_size
        if losses and (i % 5 == 0 or i == n - 1):
            bar.set_postfix(loss=f"{np.mean(losses):.3f}",
                            acc=f"{100 * correct / (len(losses) * t.batch_size):.1f}%",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}")
        bar.update(1)
    losses.append(_finite_loss(pending["loss"], epoch, n, n))
    correct += int(pending["correct"])
    train_time = time.perf_counter() - t0
    r.timing["train_s"] += train_time
    test_loss = test_acc = None
    if due(epoch + 1, t.eval_every, t.epochs):
        t0 = time.perf_counter()
        test_loss, test_acc, _ = evaluate(exp, steps.epoch_evaluate, state,
                                          exp.data.dataset.test)
        r.timing["eval_s"] += time.perf_counter() - t0
    images_per_s = n * t.batch_size / train_time
    record = {"epoch": epoch + 1, "lr": float(exp.schedule(int(state.step) - 1)),
              "train_loss": float(np.mean(losses)),
              "train_acc": correct / (n * t.batch_size),
              "test_loss": test_loss, "test_acc": test_acc,
              "train_time_s": round(train_time, 2),
              "images_per_s": round(images_per_s, 1),
              "images_per_s_per_device": round(images_per_s / exp.devices, 1)}
    split = "val" if exp.cfg.data.val_fraction > 0 else "test"
    tested = {} if test_acc is None else {split: f"{100 * test_acc:.2f}%"}
    bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{100 * record['train_acc']:.1f}%",
                    img_s=f"{record['images_per_s']:.0f}", **tested)
    bar.close()
    if r.quiet and r.main:
        per_device = f", {record['images_per_s_per_device']:.0f} per device" \
            if exp.devices > 1 else ""
        print(f"epoch {epoch + 1}/{t.epochs}: loss {record['train_loss']:.3f} train "
              f"{100 * record['train_acc']:.1f}% "
              + "".join(f"{k} {v} " for k, v in tested.items())
              + f"({record['images_per_s']:.0f} img/s{per_device})", flush=True)
    return state, record


def _finish(r: _Run, steps: CompiledSteps, title: str) -> dict:
    """The final (test-time augmented) evaluation; process 0 writes ``results.json`` and
    ``curves.png`` and prints the report."""
    ds = r.exp.data.dataset
    t0 = time.perf_counter()
    test_loss, test_acc, preds = evaluate(r.exp, steps.evaluate, r.state, ds.test)
    r.timing["final_eval_s"] = time.perf_counter() - t0
    results = {"test_acc": test_acc, "test_loss": test_loss}
    if r.main:
        results = _write_results(r, test_loss, test_acc, preds, title)
    # The others wait for process 0's report here rather than in jax.distributed's
    # shutdown barrier, whose timeout is meant for dead processes, not slow plots.
    _sync("run finished")
    return results


def _write_results(r: _Run, test_loss: float, test_acc: float, preds: np.ndarray,
                   title: str) -> dict:
    cfg, ds, workdir, wall_s = r.exp.cfg, r.exp.data.dataset, r.workdir, r.wall_s()
    records = r.log.read()
    cm = report.confusion_matrix(ds.test.labels, preds, len(ds.class_names))
    if records:
        report.plot_curves(records, workdir / "curves.png", title)
    speeds = [rec["images_per_s"] for rec in records if "images_per_s" in rec]
    results = {
        "test_acc": test_acc, "test_loss": test_loss, "test_images": len(ds.test),
        "per_class_acc": {n: float(row[i] / max(row.sum(), 1))
                          for i, (n, row) in enumerate(zip(ds.class_names, cm))},
        "confusion_matrix": cm.tolist(), "class_names": list(ds.class_names),
        "eval_split": "validation" if cfg.data.val_fraction > 0 else "test",
        "epochs": len(records), "wall_s": round(wall_s, 1),
        "median_images_per_s": round(float(np.median(speeds)), 1) if speeds else None,
        "timing": {k: round(v, 2) for k, v in r.timing.items()},
    }
    report.write_json(workdir / "results.json", results)
    tta = [n for n, on in (("flip", cfg.train.tta_flip), ("multicrop", cfg.train.tta_multicrop))
           if on]
    split = "VALIDATION" if cfg.data.val_fraction > 0 else "test"
    print(f"\n{split} accuracy {100 * test_acc:.2f}% on {len(ds.test)} images "
          f"({' + '.join(tta) + ' TTA' if tta else 'no TTA'}), wall time "
          f"{wall_s / 60:.1f} min, median {results['median_images_per_s']} images/s (train)")
    print(report.format_report(cm, ds.class_names))
    tensorboard = ", tensorboard/" if (workdir / "tensorboard").is_dir() else ""
    print(f"outputs: {workdir}/(metrics.jsonl, curves.png, results.json, checkpoints/"
          f"{tensorboard}, config.yaml, run.json)")
    return results
