"""Ship a trained run: fold its conv+BatchNorm pairs and serialise it with ``jax.export``.

  python -m train.export --workdir runs/x [--checkpoint best|latest|N] [--out DIR]
                         [--platforms cpu,cuda,tpu] [--impl lax] [--no-tta] [--no-bench]
  python -m train.export predict --artifact runs/x/export image.png [more.png ...]

The export loads the chosen checkpoint of the run in ``--workdir`` in eval mode, folds it
with :func:`jconv.fold_conv_bn_graph`, and writes ``model.jaxexport`` (the serialised
:class:`jax.export.Exported`, one module lowered for every platform that lowers) and
``model.json`` (class names, normalisation, checkpoint, platforms) into ``--out``. The
exported function maps uint8 images (N, 32, 32, 3) -> float32 logits (N, 10) for any N; it
applies the run's per-channel normalisation and the run's test-time augmentation
(``train.tta_flip``: the mean of the logits of each image and its mirror image;
``train.tta_multicrop``: airbench's two 1-pixel translations on top, see
:func:`train.steps.tta_logits`), so it scores as the run's reported test accuracy did. It
then checks the artifact against the checkpoint's unfolded eval-mode model on the run's test
images and times both models.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jconv

from .errors import ConfigError, DataError, ExportError, command, first_line
from .steps import jit_step, tta_logits

ARTIFACT = "model.jaxexport"
META = "model.json"
PLATFORMS = ("cpu", "cuda", "tpu")


@dataclass
class LoadedRun:
    """A run's model restored from one checkpoint, in eval mode."""

    model: nnx.Module
    cfg: Any
    step: int
    mean: np.ndarray  # (3,) in [0, 1] units
    std: np.ndarray  # (3,)
    class_names: tuple[str, ...]


def load_run(workdir: str | Path, checkpoint: str = "best") -> LoadedRun:
    """The model of the run in ``workdir`` at ``checkpoint`` (``best`` by test accuracy,
    ``latest``, or an epoch number), in eval mode, with the run's normalisation.

    Example:
      >>> load_run("/no/such/run")
      Traceback (most recent call last):
      ...
      train.errors.ExportError: --workdir /no/such/run does not exist
    """
    from .checkpoint import Checkpoints
    from .config import load_config
    from .data import CIFAR10_CLASSES, Normalizer
    from .experiment import Experiment, RunData

    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ExportError(f"--workdir {workdir} does not exist")
    cfg_file, run_file = workdir / "config.yaml", workdir / "run.json"
    if not cfg_file.is_file() or not run_file.is_file():
        raise ExportError(f"--workdir {workdir} is not a train run (no config.yaml / run.json;"
                          " train one with python -m train --workdir ...)")
    ckpt_dir = workdir / "checkpoints"
    if not ckpt_dir.is_dir() or not any(ckpt_dir.iterdir()):
        raise ExportError(f"--workdir {workdir} has no checkpoints (checkpoints/ is empty)")
    cfg = load_config(cfg_file)
    saved = json.loads(run_file.read_text())["normalisation"]
    norm = Normalizer(np.asarray(saved["mean"], np.float32), np.asarray(saved["std"],
                                                                          np.float32))
    # The run's structure, without its data: restoring needs only the state's shapes.
    exp = Experiment.from_config(cfg, data=RunData(None, norm))
    ckpts = Checkpoints(ckpt_dir, cfg.train.keep_checkpoints)
    try:
        steps = ckpts.all_steps()
        if checkpoint == "best":
            step = ckpts.best() if ckpts.best() is not None else ckpts.latest()
        elif checkpoint == "latest":
            step = ckpts.latest()
        elif checkpoint.isdigit() and int(checkpoint) in steps:
            step = int(checkpoint)
        else:
            raise ExportError(f"--checkpoint {checkpoint!r} not found in {ckpt_dir}: expected "
                              f"best, latest or one of the saved epochs {sorted(steps)}")
        if step is None:
            raise ExportError(f"--workdir {workdir} has no checkpoints")
        state, _ = ckpts.restore(step, exp.state)
    finally:
        ckpts.close()
    model = nnx.merge(exp.graphs.eval_def, state.params, state.batch_stats)
    return LoadedRun(model, cfg, step, norm.mean, norm.std, tuple(CIFAR10_CLASSES))


def make_predict_fn(model: nnx.Module, mean: np.ndarray, std: np.ndarray, tta_flip: bool,
                    tta_multicrop: bool = False,
                    input_dtype: Any = jnp.float32) -> Callable[[jax.Array], jax.Array]:
    """uint8 images (N, 32, 32, 3) -> float32 logits (N, K): the run's normalisation
    ``(x/255 - mean) / std`` (as ``train.data.Normalizer``), then ``model`` under the test-time
    augmentation of :func:`train.steps.tta_logits` (``tta_flip``, ``tta_multicrop``).

    Example:
      >>> from flax import nnx
      >>> f = make_predict_fn(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), np.zeros(3), np.ones(3),
      ...                     tta_flip=False)
      >>> f(jnp.zeros((4, 32, 32, 3), jnp.uint8)).shape
      (4, 32, 32, 2)
    """
    mean32 = jnp.asarray(mean, jnp.float32)
    std32 = jnp.maximum(jnp.asarray(std, jnp.float32), 1e-6)

    def predict(images: jax.Array) -> jax.Array:
        x = ((images.astype(jnp.float32) / 255.0 - mean32) / std32).astype(input_dtype)
        return tta_logits(model, x, tta_flip, tta_multicrop).astype(jnp.float32)

    return predict


def export_predict_fn(fn: Callable, platforms: Sequence[str]) -> tuple[Any, dict[str, str]]:
    """``(Exported for every platform in platforms that lowers, {platform: why it did not})``.

    The batch dimension is symbolic, so the artifact takes any number of images.

    Example:
      >>> exp, failed = export_predict_fn(lambda x: x.astype(jnp.float32) / 255, ["cpu"])
      >>> exp.platforms, failed, exp.in_avals[0].shape[1:]
      (('cpu',), {}, (32, 32, 3))
    """
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("n, 32, 32, 3"), jnp.uint8)
    ok, failed = [], {}
    for p in platforms:
        try:
            jax.export.export(jax.jit(fn), platforms=[p])(spec)
            ok.append(p)
        except Exception as e:  # any lowering failure just leaves this platform out
            failed[p] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if "custom calls" in str(e):
                failed[p] += (" (impl='onednn' puts jconv's native calls into the program; "
                              "trace with jconv.set_impl(model, 'lax') for a portable artifact)")
    if not ok:
        raise ExportError(f"no platform lowered: {failed}")
    return jax.export.export(jax.jit(fn), platforms=ok)(spec), failed


@dataclass
class Predictor:
    """A loaded artifact: ``predictor(images uint8 (N, 32, 32, 3)) -> logits (N, K)``
    (numpy float32) and :meth:`classify` -> [(class name, probability)] per image."""

    exported: Any
    meta: dict
    class_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.class_names = tuple(self.meta["class_names"])
        self._call = jax.jit(self.exported.call)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
            raise ValueError(f"images must be uint8 (N, 32, 32, 3), got {images.dtype} "
                             f"{images.shape}")
        return np.asarray(self._call(images))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, K) float32: the softmax of the logits."""
        return np.asarray(jax.nn.softmax(self(images), axis=-1))

    def classify(self, images: np.ndarray) -> list[tuple[str, float]]:
        p = self.probabilities(images)
        return [(self.class_names[i], float(row[i])) for row, i in zip(p, p.argmax(-1))]


def load_predictor(path: str | Path) -> Predictor:
    """The artifact written by ``python -m train.export``: ``path`` is its folder or its
    ``model.jaxexport`` file (``model.json`` must sit beside it).

    Example:
      >>> load_predictor("/no/such/export")
      Traceback (most recent call last):
      ...
      train.errors.ExportError: --artifact /no/such/export: no model.jaxexport there
    """
    path = Path(path)
    file = path / ARTIFACT if path.is_dir() or not path.suffix else path
    if not file.is_file() or not (file.parent / META).is_file():
        raise ExportError(f"--artifact {path}: no {ARTIFACT} there" if not file.is_file()
                          else f"--artifact {path}: {META} missing beside {file.name}")
    meta = json.loads((file.parent / META).read_text())
    from .config import dtypes

    if dtypes(meta.get("dtype", "float32"))[1] == jnp.float64:
        jax.config.update("jax_enable_x64", True)
    return Predictor(jax.export.deserialize(bytearray(file.read_bytes())), meta)


def read_image(path: str | Path) -> tuple[np.ndarray, str]:
    """A PNG/JPEG as uint8 (32, 32, 3) RGB, resized (bilinear) if it is another size; returns
    (image, note) with note saying what was done. Uses Pillow (a matplotlib dependency).

    Example:
      >>> read_image("/no/such.png")
      Traceback (most recent call last):
      ...
      train.errors.ExportError: image /no/such.png does not exist
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            rgb, note = im.convert("RGB"), ""
            if rgb.size != (32, 32):
                note = f" (resized from {rgb.size[0]}x{rgb.size[1]})"
                rgb = rgb.resize((32, 32), Image.Resampling.BILINEAR)
            return np.asarray(rgb, np.uint8), note
    except UnidentifiedImageError:
        raise ExportError(f"image {path} is not a readable image file") from None


def _images_per_s(fns: dict[str, Callable], images: np.ndarray,
                  repeats: int) -> dict[str, float]:
    """Median images/s of each jitted function, timed by jconv's one stopwatch
    (interleaved rounds with a rotating start, so load from other processes on a shared
    machine hits all of them alike)."""
    for fn in fns.values():
        fn(images).block_until_ready()  # compile
    ms = jconv.interleaved_medians(
        {name: functools.partial(lambda f: f(images).block_until_ready(), fn)
         for name, fn in fns.items()}, repeats)
    return {name: 1000 * len(images) / t for name, t in ms.items()}


@dataclass
class _Export:
    """One export in progress: the restored run, its two predict functions (unfolded
    checkpoint and folded model, both with the run's normalisation and TTA) and what has
    been logged into the summary so far."""

    run: LoadedRun
    unfolded_fn: Callable
    folded_fn: Callable
    flip: bool
    multicrop: bool
    summary: dict


def export_run(workdir: str | Path, checkpoint: str = "best", out: str | Path | None = None,
               platforms: Sequence[str] = PLATFORMS, impl: str = "lax",
               tta: bool | None = None, bench: bool = True, bench_batch: int = 256,
               bench_repeats: int = 5, log: Callable[[str], None] = print) -> dict:
    """Fold and export the run in ``workdir`` (see the module docstring); returns a summary
    dict (artifact path, platforms, fold report, parameter counts, ``max_abs_diff`` against
    the unfolded model on the test images, images/s when ``bench``). ``tta`` None follows
    the run's ``train.tta_flip`` and ``train.tta_multicrop``; True or False switches both."""
    bad = [p for p in platforms if p not in PLATFORMS]
    if bad or not platforms:
        raise ExportError(f"--platforms {','.join(platforms)!r}: expected a comma-separated "
                          f"subset of {','.join(PLATFORMS)}")
    job = _fold(load_run(workdir, checkpoint), checkpoint, impl, tta, Path(workdir), log)
    out = Path(out) if out is not None else Path(workdir) / "export"
    _write(job, out, platforms, impl, Path(workdir), log)
    _check_artifact(job, out, log)
    if bench:
        _bench(job, impl, bench_batch, bench_repeats, log)
    log(f"predict     python -m train.export predict --artifact {out} image.png")
    return job.summary


def _fold(run: LoadedRun, checkpoint: str, impl: str, tta: bool | None, workdir: Path,
          log: Callable[[str], None]) -> _Export:
    """The run's model traced with conv ``impl`` and folded; logs the fold report."""
    from .config import dtypes
    from .model import count_params

    cfg = run.cfg
    flip = cfg.train.tta_flip if tta is None else tta
    multicrop = cfg.train.tta_multicrop if tta is None else tta
    input_dtype = dtypes(cfg.model.dtype)[1]
    try:
        jconv.set_impl(run.model, impl)
    except ValueError as e:  # jconv's own message names the implementations
        raise ConfigError(f"--impl {impl!r}: {first_line(e)}") from None
    folded, report = jconv.fold_conv_bn_graph(
        run.model, jax.ShapeDtypeStruct((1, 32, 32, 3), input_dtype))
    log(f"checkpoint  {workdir / 'checkpoints' / str(run.step)} (epoch {run.step}, "
        f"{checkpoint})")
    log(str(report))
    n_stats = sum(int(v.size) for v in jax.tree.leaves(nnx.state(run.model, nnx.BatchStat)))
    params = {"unfolded": count_params(run.model), "unfolded_batch_stats": n_stats,
              "folded": count_params(folded)}
    log(f"parameters  unfolded {params['unfolded']:,} (+ {n_stats:,} BatchNorm running "
        f"statistics) -> folded {params['folded']:,}")
    return _Export(run, make_predict_fn(run.model, run.mean, run.std, flip, multicrop,
                                        input_dtype),
                   make_predict_fn(folded, run.mean, run.std, flip, multicrop, input_dtype),
                   flip, multicrop, {"report": report, "params": params, "step": run.step})


def _write(job: _Export, out: Path, platforms: Sequence[str], impl: str, workdir: Path,
           log: Callable[[str], None]) -> None:
    """Export the folded function and write the artifact and its metadata into ``out``."""
    run = job.run
    exported, failed = export_predict_fn(job.folded_fn, platforms)
    out.mkdir(parents=True, exist_ok=True)
    (out / ARTIFACT).write_bytes(exported.serialize())
    meta = {"class_names": list(run.class_names), "mean": run.mean.tolist(),
            "std": run.std.tolist(), "tta_flip": job.flip, "tta_multicrop": job.multicrop,
            "checkpoint_epoch": run.step,
            "workdir": str(workdir), "platforms": list(exported.platforms),
            "not_lowered": failed, "dtype": run.cfg.model.dtype, "conv_impl": impl,
            "input": "uint8 (N, 32, 32, 3) RGB", "output": "float32 logits (N, 10)",
            "folded": [[p.conv, p.bn] for p in job.summary["report"].folded]}
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    log(f"artifact    {out / ARTIFACT} ({(out / ARTIFACT).stat().st_size:,} bytes), lowered "
        f"for {', '.join(exported.platforms)}"
        + "".join(f"; {p} did not lower ({why})" for p, why in failed.items()))
    job.summary.update(artifact=str(out / ARTIFACT), platforms=list(exported.platforms),
                       not_lowered=failed)


def _check_artifact(job: _Export, out: Path, log: Callable[[str], None]) -> None:
    """Compare the written artifact with the unfolded checkpoint on the run's test images
    (skipped, and said, when they cannot be loaded)."""
    from .data import load_dataset

    cfg = job.run.cfg
    try:
        test_images = load_dataset(cfg.data, cfg.seed).test.images
    except DataError as e:
        log(f"check       skipped: the run's test images cannot be loaded ({e})")
        return
    predictor = load_predictor(out)
    reference = jax.jit(job.unfolded_fn)
    diffs, agree = [], 0
    for start in range(0, len(test_images), cfg.train.eval_batch_size):
        batch = test_images[start:start + cfg.train.eval_batch_size]
        got, want = predictor(batch), np.asarray(reference(batch))
        diffs.append(float(np.abs(got.astype(np.float64) - want).max()))
        agree += int((got.argmax(-1) == want.argmax(-1)).sum())
    job.summary.update(max_abs_diff=max(diffs), test_images=len(test_images),
                       same_predictions=agree)
    log(f"check       exported (folded) vs checkpoint (unfolded) logits on "
        f"{len(test_images)} test images: max |difference| {max(diffs):.3g}, same "
        f"top-1 class for {agree}/{len(test_images)}")


def _bench(job: _Export, impl: str, batch: int, repeats: int,
           log: Callable[[str], None]) -> None:
    """images/s of the unfolded and folded models, compiled as the trainer's steps are
    (:func:`train.steps.jit_step`)."""
    images = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    backend = job.run.cfg.model.conv_backend
    speed = _images_per_s({"unfolded": jit_step(job.unfolded_fn, backend),
                           "folded": jit_step(job.folded_fn, backend)}, images, repeats)
    job.summary["images_per_s"] = speed
    log(f"speed       {speed['unfolded']:,.0f} -> {speed['folded']:,.0f} images/s "
        f"(unfolded -> folded, batch {batch}, median of {repeats}, "
        f"conv_impl={impl}, conv_backend={backend}, tta_flip={job.flip}, "
        f"tta_multicrop={job.multicrop}; x{speed['folded'] / speed['unfolded']:.2f})")


EPILOG = """examples:
  python -m train.export --workdir runs/cifar_subset
  python -m train.export --workdir runs/try --checkpoint 3 --out /tmp/model --platforms cpu
  python -m train.export predict --artifact runs/cifar_subset/export cat.png ship.png
"""


def _export_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.export", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fold a trained run's conv+BatchNorm pairs and export it with jax.export "
                    "(see also: python -m train.export predict --help).")
    p.add_argument("--workdir", required=True, help="the run's folder (python -m train "
                   "--workdir)")
    p.add_argument("--checkpoint", default="best",
                   help="best (by test accuracy, default) | latest | an epoch number")
    p.add_argument("--out", default=None, help="output folder (default: <workdir>/export)")
    p.add_argument("--platforms", default=",".join(PLATFORMS),
                   help="comma-separated lowering platforms (default: cpu,cuda,tpu; those "
                        "that do not lower are reported and left out)")
    p.add_argument("--impl", default="lax", help="jconv conv impl traced into the artifact "
                   "(default lax: XLA's own convolution, which lowers on every platform)")
    p.add_argument("--no-tta", action="store_true",
                   help="no test-time augmentation (flip, multicrop) even if the run used it")
    p.add_argument("--no-bench", action="store_true", help="skip the images/s comparison")
    p.add_argument("--bench-batch", type=int, default=256)
    p.add_argument("--bench-repeats", type=int, default=5)
    return p.parse_args(argv)


def _predict_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.export predict",
        description="Classify images with an exported model (prints the top classes).")
    p.add_argument("--artifact", required=True, help="export folder or its model.jaxexport")
    p.add_argument("--top", type=int, default=1, help="classes to print per image")
    p.add_argument("images", nargs="+", help="PNG/JPEG files (resized to 32x32 if needed)")
    return p.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, with one ``Error:``
    line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["predict"]:
        args = _predict_args(argv[1:])
        predictor = load_predictor(args.artifact)
        loaded = [read_image(f) for f in args.images]
        probs = predictor.probabilities(np.stack([im for im, _ in loaded]))
        for file, (_, note), p in zip(args.images, loaded, probs):
            top = np.argsort(-p)[:max(args.top, 1)]
            ranked = ", ".join(f"{predictor.class_names[i]} {100 * p[i]:.1f}%" for i in top)
            print(f"{file}{note}: {ranked}")
        return 0
    args = _export_args(argv)
    platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
    export_run(args.workdir, args.checkpoint, args.out, platforms, args.impl,
               False if args.no_tta else None, not args.no_bench, args.bench_batch,
               args.bench_repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
