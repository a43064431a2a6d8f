"""One training run: data, model, optimiser, the epoch loop, evaluation, checkpoints and the
files a run leaves in its work directory."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from . import report
from .checkpoint import CheckpointError, Checkpoints
from .config import Config, as_dict, to_yaml
from .data import (Dataset, Normalizer, channel_stats, config_batches, default_data_dir,
                   eval_batches, load_dataset, steps_per_epoch)
from .model import count_params, macs_per_image
from .parallel import (AXIS, build_model, check_batch_size, init_training,  # noqa: F401
                       make_mesh, shard_batch)
from .steps import TrainState, make_eval_step, make_train_step

# Fields of a metrics record that depend only on the computation (not on timing): these are
# what a resumed run must reproduce exactly.
DETERMINISTIC_FIELDS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")


class RunError(RuntimeError):
    """A run that cannot start as asked (e.g. a work directory holding another run)."""


def evaluate(eval_step: Any, state: TrainState, ds_split: Any, norm: Normalizer,
             batch_size: int, input_dtype: Any,
             mesh: Any = None) -> tuple[float, float, np.ndarray]:
    """(mean cross-entropy, accuracy, predictions (N,)) over the whole split; with a
    ``mesh`` each batch (the last one padded, see :func:`eval_batches`) is split over it."""
    preds, losses = [], []
    for b in eval_batches(ds_split, norm, batch_size):
        images = b["image"].astype(input_dtype)
        logits = eval_step(state["params"], state["batch_stats"],
                           images if mesh is None else shard_batch(mesh, images))
        logits = np.asarray(logits, np.float64)[b["mask"]]
        labels = b["label"][b["mask"]]
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        losses.append(-log_probs[np.arange(len(labels)), labels])
        preds.append(logits.argmax(-1))
    pred = np.concatenate(preds)
    return (float(np.concatenate(losses).mean()), float((pred == ds_split.labels).mean()),
            pred)


def compilation_cache_dir() -> Path:
    """Where :func:`use_compilation_cache` keeps compiled programs: the user's choice
    (``JAX_COMPILATION_CACHE_DIR``, or ``jax.config``) if any, else ``jconv/xla`` next to
    :func:`~train.data.default_data_dir`.

    Example:
      >>> compilation_cache_dir().parts[-2:] == ("jconv", "xla") or bool(
      ...     jax.config.jax_compilation_cache_dir)
      True
    """
    chosen = jax.config.jax_compilation_cache_dir
    return Path(chosen) if chosen else default_data_dir().parent / "xla"


def use_compilation_cache() -> None:
    """Keep XLA's compiled programs across runs (JAX's persistent compilation cache, in
    :func:`compilation_cache_dir`), so a run of a config compiled before skips compiling
    its model initialiser and its steps."""
    jax.config.update("jax_compilation_cache_dir", str(compilation_cache_dir()))


def balanced_batch_size(n: int, max_batch: int, n_dev: int = 1) -> int:
    """The smallest batch size, a multiple of ``n_dev``, that covers ``n`` images in as few
    batches of at most ``max_batch`` (rounded up to ``n_dev``) as possible. The last batch
    is padded (and masked), so evaluating 1,017 images in batches of 1000 would compute
    2,000; in two of 509 it computes 1,018.

    Example:
      >>> balanced_batch_size(1017, 1000), balanced_batch_size(1017, 500, 2)
      (509, 340)
    """
    max_batch = -(-max_batch // n_dev) * n_dev
    batches = max(1, -(-n // max_batch))
    return -(-(-(-n // batches)) // n_dev) * n_dev


# airbench computes its whitening conv from this many (normalised) training images.
WHITEN_IMAGES = 5000


def _summary(cfg: Config, ds: Dataset, model: Any, steps: int, workdir: Path,
             n_dev: int) -> str:
    m = cfg.model
    macs = macs_per_image(m.widths, m.convs_per_stage, len(ds.class_names),
                          pool_first=m.pool_first, arch=m.arch)
    lines = [
        f"jconv CIFAR-10 training -> {workdir}",
        f"  devices     {', '.join(report.devices())}",
        f"  parallel    data parallel over {n_dev} device(s) of {jax.process_count()} "
        f"process(es): {cfg.train.batch_size // n_dev} images per device per step",
        f"  data        {ds.description}",
        f"  model       {m.arch}, widths {list(m.widths)} x {m.convs_per_stage} convs, "
        f"conv_impl={m.conv_impl} ({m.conv_backend} XLA conv kernels), {m.data_format}, {m.dtype}",
        f"  size        {count_params(model):,} parameters, {macs / 1e6:.1f} M MACs/image "
        f"(forward)",
        f"  optimiser   {cfg.optim.name} lr={cfg.optim.lr} {cfg.optim.schedule} "
        f"warm-up {cfg.optim.warmup_epochs} epochs, wd={cfg.optim.weight_decay}, "
        f"label smoothing {cfg.optim.label_smoothing}",
        f"  schedule    {cfg.train.epochs} epochs x {steps} steps of {cfg.train.batch_size}"
        f" images, seed {cfg.seed}",
    ]
    return "\n".join(lines)


def _check_workdir(workdir: Path, resume: bool, cfg: Config) -> None:
    ckpt = workdir / "checkpoints"
    saved = workdir / "config.yaml"
    if resume and saved.is_file() and saved.read_text() != to_yaml(cfg):
        raise RunError(f"--resume: this config differs from the one the run in {workdir} "
                       f"started with; resume with --config {saved} (and no overrides)")
    if not resume and ckpt.exists() and any(ckpt.iterdir()):
        raise RunError(f"--workdir {workdir} already holds a run's checkpoints: pass --resume "
                       "to continue it, or choose another --workdir")


def _prepare_workdir(workdir: Path, resume: bool) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for stale in ("metrics.jsonl", "results.json", "curves.png"):
            (workdir / stale).unlink(missing_ok=True)
        shutil.rmtree(workdir / "tensorboard", ignore_errors=True)


def _sync(name: str) -> None:
    """Wait until every process gets here (nothing to wait for with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def run(cfg: Config, workdir: str | Path, resume: bool = False, quiet: bool = False) -> dict:
    """Train as ``cfg`` says, writing everything under ``workdir``; returns the final
    results (also saved as ``results.json``). ``resume`` continues from the latest
    checkpoint and, the data order depending only on (seed, epoch), ends with the same
    metrics as an uninterrupted run.

    Data parallel over every device of every process (see :mod:`train.parallel`): each
    global batch of ``train.batch_size`` images is split over the devices, so the metrics
    do not depend on the device count. Only process 0 prints and writes logs, plots and
    results; every process writes and restores the checkpoints (Orbax)."""
    t_start = time.perf_counter()
    use_compilation_cache()
    workdir = Path(workdir)
    main = jax.process_index() == 0
    _check_workdir(workdir, resume, cfg)
    if cfg.model.dtype == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    t = cfg.train
    mesh = make_mesh()
    n_dev = mesh.shape[AXIS]
    try:
        check_batch_size("train.batch_size", t.batch_size, mesh)
    except ValueError as e:
        raise RunError(str(e)) from None
    ds = load_dataset(cfg.data, cfg.seed, progress=main and not quiet)
    eval_bs = balanced_batch_size(len(ds.test), t.eval_batch_size, n_dev)
    _sync("workdir checked")  # before process 0 changes the folder the others checked
    if main:
        _prepare_workdir(workdir, resume)
    norm = Normalizer(*channel_stats(ds.train.images))
    steps = steps_per_epoch(len(ds.train), t.batch_size, t.max_steps_per_epoch)
    whiten = norm(ds.train.images[:WHITEN_IMAGES]) if cfg.model.whiten else None
    tr = init_training(cfg.model, cfg.optim, cfg.seed, t.epochs * steps, steps, mesh=mesh,
                       whiten_images=whiten, batch_size=t.batch_size)
    schedule, state = tr.schedule, tr.state
    input_dtype = np.float64 if cfg.model.dtype == "float64" else np.float32
    say = print if main else _silent

    if main:
        (workdir / "config.yaml").write_text(to_yaml(cfg))
        report.write_json(workdir / "run.json", {
            "command": sys.argv, "seed": cfg.seed, "resumed": resume, "config": as_dict(cfg),
            "versions": report.versions(), "devices": report.devices(),
            "mesh": {AXIS: n_dev}, "processes": jax.process_count(),
            "data": ds.description, "normalisation": {"mean": norm.mean.tolist(),
                                                      "std": norm.std.tolist()}})
    say(_summary(cfg, ds, tr.model, steps, workdir, n_dev), flush=True)

    ckpts = Checkpoints(workdir / "checkpoints", t.keep_checkpoints)
    tensorboard = report.open_tensorboard(workdir / "tensorboard") if t.tensorboard and main \
        else None
    log = report.MetricsLog(workdir / "metrics.jsonl", tensorboard)
    start_epoch, wall_before = 0, 0.0
    if resume:
        try:
            found = ckpts.restore_newest(state, say=lambda line: say(f"--resume: {line}"))
        except CheckpointError as e:
            ckpts.close()
            raise RunError(f"--resume: {e}") from None
        if found is None:
            say("--resume: no checkpoint yet in this work directory, starting from scratch")
        else:
            latest, state, meta = found
            start_epoch, wall_before = int(meta["epoch"]), float(meta["wall_s"])
            say(f"--resume: continuing after epoch {start_epoch} "
                f"(checkpoint {workdir / 'checkpoints' / str(latest)})")
    if main:
        log.truncate(start_epoch)

    t_compile = time.perf_counter()
    images = jax.ShapeDtypeStruct((t.batch_size, 32, 32, 3), input_dtype)
    train_step = make_train_step(tr.fns, tr.tx, cfg.optim.label_smoothing,
                                 cfg.model.conv_backend, mesh,
                                 t.epochs * steps if cfg.optim.lookahead else None).lower(
        state, images, jax.ShapeDtypeStruct((t.batch_size,), np.int32)).compile()
    eval_images = jax.ShapeDtypeStruct((eval_bs, 32, 32, 3), input_dtype)
    eval_step = make_eval_step(tr.fns, t.tta_flip, cfg.model.conv_backend, mesh,
                               t.tta_multicrop).lower(
        state["params"], state["batch_stats"], eval_images).compile()
    # Per-epoch evaluations without test-time augmentation cost one forward pass, not 2-6.
    epoch_eval_step = eval_step if t.epoch_tta else make_eval_step(
        tr.fns, False, cfg.model.conv_backend, mesh).lower(
        state["params"], state["batch_stats"], eval_images).compile()
    say(f"  compiled    train and eval steps in {time.perf_counter() - t_compile:.1f} s",
        flush=True)

    record: dict = {}
    try:
        for epoch in range(start_epoch, t.epochs):
            state, record = _train_epoch(cfg, epoch, steps, ds, norm, train_step,
                                         epoch_eval_step,
                                         state, schedule, input_dtype, quiet or not main,
                                         mesh, eval_bs)
            record["wall_s"] = round(wall_before + time.perf_counter() - t_start, 2)
            if main:
                log.write(record)
            ckpts.save(epoch + 1, state, {"epoch": epoch + 1, "wall_s": record["wall_s"]},
                       record["test_acc"])
    except RunError:
        ckpts.close()
        raise
    except KeyboardInterrupt:
        ckpts.close()
        say(f"\ninterrupted; continue with: python -m train --config "
            f"{workdir / 'config.yaml'} --workdir {workdir} --resume", file=sys.stderr)
        raise
    ckpts.close()
    if tensorboard is not None:
        tensorboard.close()
    test_loss, test_acc, preds = evaluate(eval_step, state, ds.test, norm, eval_bs,
                                          input_dtype, mesh)
    results = {"test_acc": test_acc, "test_loss": test_loss}
    if main:
        results = _finish(cfg, workdir, ds, log, test_loss, test_acc, preds,
                          wall_before + time.perf_counter() - t_start)
    # The others wait for process 0's report here rather than in jax.distributed's
    # shutdown barrier, whose timeout is meant for dead processes, not slow plots.
    _sync("run finished")
    return results


def _silent(*args: Any, **kwargs: Any) -> None:
    """``print`` for processes other than 0."""


def _finite_loss(loss: Any, epoch: int, step: int, steps: int) -> float:
    """The loss of ``step`` (1-based) as a float; a non-finite one stops the run before the
    epoch is logged or checkpointed, so the last checkpoint stays the last good state."""
    value = float(loss)
    if not np.isfinite(value):
        raise RunError(f"training diverged: the loss is {value} at epoch {epoch + 1}, step "
                       f"{step} of {steps}; the checkpoints of earlier epochs are kept. Lower "
                       "optim.lr (or check the data) and start a new --workdir")
    return value


def _train_epoch(cfg: Config, epoch: int, steps: int, ds: Dataset, norm: Normalizer,
                 train_step: Any, eval_step: Any, state: TrainState, schedule: Any,
                 input_dtype: Any, quiet: bool, mesh: Any,
                 eval_bs: int) -> tuple[TrainState, dict]:
    t = cfg.train
    n_dev = mesh.shape[AXIS]
    batches = config_batches(ds.train, norm, cfg.data, batch_size=t.batch_size, seed=cfg.seed,
                             epoch=epoch, max_steps=t.max_steps_per_epoch)
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{t.epochs}", unit="step",
               disable=quiet, leave=True, dynamic_ncols=True)
    losses, correct = [], 0
    t0 = time.perf_counter()
    pending = None
    for i in range(steps):
        b = batches[i]
        state, metrics = train_step(state, shard_batch(mesh, b["image"].astype(input_dtype)),
                                    shard_batch(mesh, b["label"]))
        # Read the previous step's metrics while this one runs (keeps a GPU busy).
        if pending is not None:
            losses.append(_finite_loss(pending["loss"], epoch, i, steps))
            correct += int(pending["correct"])
        pending = metrics
        seen = (i + 1) * t.batch_size
        if losses and (i % 5 == 0 or i == steps - 1):
            bar.set_postfix(loss=f"{np.mean(losses):.3f}",
                            acc=f"{100 * correct / (len(losses) * t.batch_size):.1f}%",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}")
        bar.update(1)
    losses.append(_finite_loss(pending["loss"], epoch, steps, steps))
    correct += int(pending["correct"])
    train_time = time.perf_counter() - t0
    test_loss, test_acc, _ = evaluate(eval_step, state, ds.test, norm, eval_bs, input_dtype,
                                      mesh)
    images_per_s = steps * t.batch_size / train_time
    record = {"epoch": epoch + 1, "lr": float(schedule(int(state["step"]) - 1)),
              "train_loss": float(np.mean(losses)),
              "train_acc": correct / (steps * t.batch_size),
              "test_loss": test_loss, "test_acc": test_acc,
              "train_time_s": round(train_time, 2),
              "images_per_s": round(images_per_s, 1),
              "images_per_s_per_device": round(images_per_s / n_dev, 1)}
    bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{100 * record['train_acc']:.1f}%",
                    img_s=f"{record['images_per_s']:.0f}", test=f"{100 * test_acc:.2f}%")
    bar.close()
    if quiet and jax.process_index() == 0:
        per_device = f", {record['images_per_s_per_device']:.0f} per device" if n_dev > 1 else ""
        print(f"epoch {epoch + 1}/{t.epochs}: loss {record['train_loss']:.3f} train "
              f"{100 * record['train_acc']:.1f}% "
              f"{'val' if cfg.data.val_fraction > 0 else 'test'} {100 * test_acc:.2f}% "
              f"({record['images_per_s']:.0f} img/s{per_device})", flush=True)
    return state, record


def _finish(cfg: Config, workdir: Path, ds: Dataset, log: report.MetricsLog, test_loss: float,
            test_acc: float, preds: np.ndarray, wall_s: float) -> dict:
    records = log.read()
    cm = report.confusion_matrix(ds.test.labels, preds, len(ds.class_names))
    if records:
        report.plot_curves(records, workdir / "curves.png")
    train_records = [r for r in records if "images_per_s" in r]
    results = {
        "test_acc": test_acc, "test_loss": test_loss, "test_images": len(ds.test),
        "per_class_acc": {n: float(row[i] / max(row.sum(), 1))
                          for i, (n, row) in enumerate(zip(ds.class_names, cm))},
        "confusion_matrix": cm.tolist(), "class_names": list(ds.class_names),
        "eval_split": "validation" if cfg.data.val_fraction > 0 else "test",
        "epochs": len(records), "wall_s": round(wall_s, 1),
        "median_images_per_s": round(float(np.median([r["images_per_s"]
                                                      for r in train_records])), 1)
        if train_records else None,
    }
    report.write_json(workdir / "results.json", results)
    tta = [n for n, on in (("flip", cfg.train.tta_flip), ("multicrop", cfg.train.tta_multicrop))
           if on]
    split = "VALIDATION" if cfg.data.val_fraction > 0 else "test"
    print(f"\n{split} accuracy {100 * test_acc:.2f}% on {len(ds.test)} images "
          f"({' + '.join(tta) + ' TTA' if tta else 'no TTA'}), wall time "
          f"{wall_s / 60:.1f} min, median {results['median_images_per_s']} images/s (train)")
    print(report.format_report(cm, ds.class_names))
    print(f"outputs: {workdir}/(metrics.jsonl, curves.png, results.json, checkpoints/, "
          f"config.yaml, run.json)")
    return results
