"""Data parallelism over every device: one ``jax.sharding.Mesh`` with a ``data`` axis, the
global batch sharded along it and the training state replicated (the run itself is built
by :class:`train.experiment.Experiment`).

Because the steps are ``jax.jit`` functions of *global* arrays, BatchNorm's batch mean and
variance and the loss mean run over the whole global batch (XLA inserts the all-reduces),
so an N-device run computes what a 1-device run with the same global batch computes, up to
the order of floating-point sums.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .errors import ConfigError

AXIS = "data"


def cluster_detected(environ: Any = None) -> bool:
    """Whether this process is one task of a multi-task SLURM or Open MPI job, whose
    variables ``jax.distributed.initialize()`` reads by itself.

    Example:
      >>> cluster_detected({"SLURM_NTASKS": "4"}), cluster_detected({"SLURM_NTASKS": "1"})
      (True, False)
    """
    env = os.environ if environ is None else environ
    return any(int(env.get(var, "1") or "1") > 1 for var in ("SLURM_NTASKS",
                                                               "OMPI_COMM_WORLD_SIZE"))


def init_distributed(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, *, auto: bool = False,
                     timeout_s: int = 60) -> bool:
    """Join a multi-process run through ``jax.distributed.initialize`` when a coordinator
    is given, when ``auto`` (JAX then detects SLURM, Open MPI, Cloud TPU, ...) or when
    :func:`cluster_detected`; returns whether it did. Must run before JAX touches a device.

    ``timeout_s`` bounds the wait for the other processes at start-up and, as the
    heartbeat timeout, how long the survivors run on once a process has died: JAX's
    coordination service then stops them with an error instead of letting them hang in
    a collective.

    Example:
      >>> init_distributed()  # no coordinator, no cluster: a single-process run
      False
    """
    if coordinator is None and not auto and not cluster_detected():
        if num_processes is not None or process_id is not None:
            raise ConfigError("--num-processes and --process-id need --coordinator HOST:PORT "
                             "(or --distributed for JAX's cluster detection)")
        return False
    if coordinator is not None:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--coordinator {coordinator!r} is invalid: expected HOST:PORT, "
                             "e.g. 10.0.0.1:1234")
        if num_processes is None or process_id is None:
            raise ConfigError("--coordinator needs --num-processes N and --process-id I")
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"--num-processes {num_processes} is invalid: expected >= 1")
    if process_id is not None and not 0 <= process_id < (num_processes or process_id + 1):
        raise ConfigError(f"--process-id {process_id} is invalid: expected 0 <= I < "
                         f"--num-processes {num_processes}")
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               initialization_timeout=timeout_s,
                               heartbeat_timeout_seconds=timeout_s,
                               shutdown_timeout_seconds=timeout_s)
    return True


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``data`` over ``devices`` (default: every device of every process).

    Example:
      >>> dict(make_mesh(jax.devices()[:1]).shape)
      {'data': 1}
    """
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimiser state, BN statistics)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Dimension 0 (the batch) split evenly over the ``data`` axis."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def check_batch_size(name: str, batch_size: int, mesh: Mesh) -> None:
    """A clear error unless ``batch_size`` splits evenly over the mesh's devices.

    Example:
      >>> check_batch_size("train.batch_size", 6, make_mesh(jax.devices()[:1]))
    """
    n = mesh.shape[AXIS]
    if batch_size % n:
        raise ConfigError(f"{name}={batch_size} is invalid: expected a multiple of the {n} "
                         f"devices it is split over (mesh axis {AXIS!r}), e.g. "
                         f"{max(n, batch_size // n * n)}")


def shard_batch(mesh: Mesh, global_batch: np.ndarray) -> jax.Array:
    """The global batch (B, ...) as one array sharded along ``data``; each process passes
    only its own rows to ``jax.make_array_from_process_local_data`` (every process holds the
    same global batch, since the batch order depends only on (seed, epoch)).

    Example:
      >>> x = shard_batch(make_mesh(jax.devices()[:1]), np.arange(4.0))
      >>> x.shape, x.sharding.spec
      ((4,), P('data',))
    """
    sharding = batch_sharding(mesh)
    n = len(global_batch)
    slices = [idx[0] for idx in sharding.addressable_devices_indices_map((n,)).values()]
    start = min(s.start or 0 for s in slices)
    stop = max(n if s.stop is None else s.stop for s in slices)
    return jax.make_array_from_process_local_data(sharding, global_batch[start:stop],
                                                  global_batch.shape)
