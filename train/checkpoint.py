"""Orbax checkpoints of the whole training state, one per epoch: the last N plus the best
by test accuracy are kept; Orbax writes each into a temporary folder and renames it when
complete, so a run killed mid-save never leaves a half-written checkpoint behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN


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
                                               enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(Path(directory).resolve(), options=options)

    def save(self, epoch: int, state: Any, meta: dict, test_acc: float) -> None:
        self.manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            metrics={"test_acc": float(test_acc)})
        self.manager.wait_until_finished()

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def best(self) -> int | None:
        return self.manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def restore(self, epoch: int, like: Any) -> tuple[Any, dict]:
        """(state shaped like ``like``, metadata) saved at ``epoch``."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        out = self.manager.restore(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out["state"], dict(out["meta"])

    def close(self) -> None:
        self.manager.close()
