"""A run's work directory: writable before anything runs, created only once the data is
found, checked against the run it holds on ``--resume``, and cleared of a previous run's
outputs."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from .config import Config, config_diff
from .errors import ConfigError, RunError


def check_workdir(path: str | Path) -> Path:
    """Make sure a run can write its ``--workdir``: an existing folder must be writable, a
    new one must be creatable (its nearest existing parent a writable folder); a clear error
    otherwise. Creates nothing: the run makes the folder once its data is found, so a run
    that cannot start leaves no empty folder behind.

    Example:
      >>> import tempfile, os
      >>> new = os.path.join(tempfile.mkdtemp(), "runs", "try")
      >>> check_workdir(new) == Path(new), os.path.exists(new)
      (True, False)
    """
    workdir = Path(path)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir {str(path)!r} is a file, expected a folder (or a path "
                          "to create one at)")
    existing = next(p for p in (workdir, *workdir.absolute().parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, os.strerror(20))
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(f"--workdir {str(path)!r} cannot be created or written to "
                          f"({e.strerror or e}); choose a writable folder") from None
    return workdir


def check_resume(workdir: Path, resume: bool, cfg: Config) -> int | None:
    """A clear error unless ``cfg`` may start (or, with ``resume``, continue) the run in
    ``workdir``; returns the run's saved ``train.epochs`` when ``cfg`` extends it, else
    None. Only ``train.epochs`` may change on ``--resume``."""
    ckpt = workdir / "checkpoints"
    saved = workdir / "config.yaml"
    if not resume:
        if ckpt.exists() and any(ckpt.iterdir()):
            raise RunError(f"--workdir {workdir} already holds a run's checkpoints: pass "
                           "--resume to continue it, or choose another --workdir")
        return None
    if not saved.is_file():
        return None
    diff = config_diff(OmegaConf.load(saved), cfg)
    epochs = diff.pop("train.epochs", None)
    if epochs is not None and "optim.warmup_epochs" in diff:
        # The trainer scales the YAML's warm-up with an overridden train.epochs (see
        # train.config.load_config): a warm-up that is the same fraction of each run followed
        # the epochs, it was not changed.
        (old_w, new_w), (old_e, new_e) = diff["optim.warmup_epochs"], epochs
        if math.isclose(old_w / old_e, new_w / new_e, rel_tol=1e-3):
            del diff["optim.warmup_epochs"]
    if diff:
        changes = ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in diff.items())
        raise RunError(f"--resume: the config differs from the one the run in {workdir} "
                       f"started with: {changes}. Only train.epochs may change on --resume; "
                       f"drop those overrides (--resume without --config reads the run's own "
                       f"{saved}), or start a new --workdir")
    return None if epochs is None else int(epochs[0])


def completed_results(workdir: Path, cfg: Config) -> dict | None:
    """The run's ``results.json`` when it has finished all of ``cfg``'s epochs, else None."""
    path = workdir / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    return results if results.get("epochs") == cfg.train.epochs else None


def prepare_workdir(workdir: Path, resume: bool) -> None:
    """Create ``workdir`` and remove the outputs a new (or resumed) run writes again."""
    workdir.mkdir(parents=True, exist_ok=True)
    # A resumed run ends with new results (an extended one: after more epochs).
    for stale in ("results.json",) if resume else ("metrics.jsonl", "results.json",
                                                    "curves.png"):
        (workdir / stale).unlink(missing_ok=True)
    if not resume:
        shutil.rmtree(workdir / "tensorboard", ignore_errors=True)
