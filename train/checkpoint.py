"""Orbax checkpoints of the whole training state, one per epoch: the last N plus the best
by test accuracy are kept; Orbax writes each into a temporary folder and renames it when
complete, so a run killed mid-save never leaves a half-written checkpoint behind.

Saves are asynchronous: :meth:`Checkpoints.save` copies the state to host memory and
returns, and Orbax writes the files in a background thread while training goes on. Every
other method (and :meth:`Checkpoints.close`) first waits for a save under way, so what they
see on disk is complete.

A checkpoint damaged afterwards (a truncated or zeroed data file, a deleted
``manifest.ocdbt``, ``_METADATA`` or ``meta/metadata``) or a stray step folder that is not a
checkpoint does not block a resume: :meth:`Checkpoints.restore_newest` falls back to the
newest one that loads and moves the others aside into ``<directory>.damaged/``.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from .errors import CheckpointError


ITEMS = ("state", "meta")


def _reason(e: BaseException, folder: Path, limit: int = 240) -> str:
    """One short line for why restoring ``folder`` failed: tensorstore messages run to
    kilobytes (a JSON spec, a chain of driver names, absolute paths) around the cause."""
    text = str(e).split(" [tensorstore_spec")[0]
    for noise in ('Error opening "cast" driver: ', 'Error opening "zarr" driver: ',
                  f"{folder}/"):
        text = text.replace(noise, "")
    text = f"{type(e).__name__}: {' '.join(text.split()) or 'no message'}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


@contextlib.contextmanager
def _quiet_failed_reads() -> Iterator[None]:
    """Once a restore fails, tensorstore's other reads of it each fail on the closed event
    loop, in threads, and print a traceback (dozens per checkpoint) or log "exception never
    retrieved". Keep those out of the user's terminal: the caller reports one reason. On
    failure, wait for those reads and collect their futures before leaving."""
    def hook(args: Any) -> None:
        if not (isinstance(args.exc_value, RuntimeError)
                and "Event loop is closed" in str(args.exc_value)):
            previous(args)

    previous, sys.unraisablehook = sys.unraisablehook, hook
    log = logging.getLogger("asyncio")
    disabled = log.disabled
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            try:
                yield
            except Exception:
                time.sleep(0.5)
                log.disabled = True
                gc.collect()
                raise
    finally:
        log.disabled = disabled
        sys.unraisablehook = previous


class Checkpoints:
    """Checkpoints under ``directory``; step number = epochs completed.

    Example:
      >>> import tempfile, jax.numpy as jnp
      >>> with tempfile.TemporaryDirectory() as d:
      ...     ck = Checkpoints(d, keep=1)
      ...     ck.save(1, {"w": jnp.ones(2)}, {"epoch": 1}, test_acc=0.5)
      ...     state, meta = ck.restore(ck.latest(), {"w": jnp.zeros(2)})
      ...     ck.close()
      >>> state["w"].tolist(), meta
      ([1.0, 1.0], {'epoch': 1})
    """

    def __init__(self, directory: str | Path, keep: int):
        policy = AnyPreservationPolicy([
            LatestN(keep), BestN(get_metric_fn=lambda m: m["test_acc"], n=1)])
        options = ocp.CheckpointManagerOptions(preservation_policy=policy,
                                               enable_async_checkpointing=True)
        self.directory = Path(directory).resolve()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, epoch: int, state: Any, meta: dict, test_acc: float) -> None:
        """Start saving ``state`` and ``meta`` as checkpoint ``epoch``; the previous save,
        if still under way, is finished first."""
        self.manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            metrics={"test_acc": float(test_acc)})

    def latest(self) -> int | None:
        self.manager.wait_until_finished()
        return self.manager.latest_step()

    def best(self) -> int | None:
        self.manager.wait_until_finished()
        return self.manager.best_step()

    def all_steps(self) -> list[int]:
        self.manager.wait_until_finished()
        return list(self.manager.all_steps())

    def restore(self, epoch: int, like: Any) -> tuple[Any, dict]:
        """(state shaped like ``like``, metadata) saved at ``epoch``."""
        self.manager.wait_until_finished()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        out = self.manager.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out["state"], dict(out["meta"])

    def restore_newest(self, like: Any, say: Any = print) -> tuple[int, Any, dict] | None:
        """(epoch, state, metadata) of the newest checkpoint that restores, trying them newest
        to oldest; None when there is no checkpoint at all.

        Step folders lacking an item folder (e.g. a stray empty ``checkpoints/7``) are not
        checkpoints and are ignored; a checkpoint that fails to restore is reported through
        ``say`` ("checkpoint 3 is unreadable (...); resuming from 2"). Both are moved into
        ``<directory>.damaged/`` once an older one has loaded, so that later saves of those
        step numbers succeed and keep-last-N counts real checkpoints. When checkpoints exist
        but none restores, raises :class:`CheckpointError` listing each one tried and why,
        and moves nothing.

        Example:
          >>> import tempfile, jax.numpy as jnp
          >>> with tempfile.TemporaryDirectory() as d:
          ...     ck = Checkpoints(d, keep=2)
          ...     ck.save(1, {"w": jnp.ones(2)}, {"epoch": 1}, test_acc=0.5)
          ...     (Path(d) / "7").mkdir()  # a stray folder, not a checkpoint
          ...     epoch, state, meta = ck.restore_newest({"w": jnp.zeros(2)})
          ...     ck.close()
          ignoring checkpoint folder 7: not a complete checkpoint (no state/, meta/)
          >>> epoch, meta
          (1, {'epoch': 1})
        """
        self.manager.wait_until_finished()
        self.manager.reload()  # the folders on disk now, not those seen at construction
        failed: list[tuple[int, str]] = []
        set_aside: list[int] = []
        for step in sorted(self.all_steps(), reverse=True):
            folder = self.directory / str(step)
            missing = [f"{item}/" for item in ITEMS if not (folder / item).is_dir()]
            if missing:
                say(f"ignoring checkpoint folder {step}: not a complete checkpoint "
                    f"(no {', '.join(missing)})")
                set_aside.append(step)
                continue
            try:
                with _quiet_failed_reads():
                    state, meta = self.restore(step, like)
                    int(meta["epoch"])
            except Exception as e:  # any damage shows up as some exception from orbax
                failed.append((step, _reason(e, folder)))
                set_aside.append(step)
                continue
            for bad, why in failed:
                say(f"checkpoint {bad} is unreadable ({why}); resuming from {step}")
            self._set_aside(set_aside)
            return step, state, meta
        if failed:
            tried = "; ".join(f"{step}: {why}" for step, why in failed)
            raise CheckpointError(f"no checkpoint in {self.directory} could be restored "
                                  f"(tried {tried})")
        self._set_aside(set_aside)
        return None

    def _set_aside(self, steps: list[int]) -> None:
        if not steps:
            return
        aside = self.directory.with_name(self.directory.name + ".damaged")
        aside.mkdir(exist_ok=True)
        for step in steps:
            target, n = aside / str(step), 1
            while target.exists():
                target, n = aside / f"{step}-{n}", n + 1
            shutil.move(str(self.directory / str(step)), target)
        self.manager.reload()

    def close(self) -> None:
        self.manager.close()
