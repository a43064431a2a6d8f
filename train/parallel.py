"""Data parallelism over every device: one ``jax.sharding.Mesh`` with a ``data`` axis, the
global batch sharded along it and the training state replicated, plus the one function
that builds the model, optimiser and (replicated) training state for every entry point.

Because the steps are ``jax.jit`` functions of *global* arrays, BatchNorm's batch mean and
variance and the loss mean run over the whole global batch (XLA inserts the all-reduces),
so an N-device run computes what a 1-device run with the same global batch computes, up to
the order of floating-point sums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .config import DTYPES, ModelConfig, OptimConfig
from .model import AirbenchNet, CifarCNN, set_whitening
from .optim import make_optimizer, make_schedule
from .steps import ModelGraphs, TrainState, split_model

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
            raise ValueError("--num-processes and --process-id need --coordinator HOST:PORT "
                             "(or --distributed for JAX's cluster detection)")
        return False
    if coordinator is not None:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--coordinator {coordinator!r} is invalid: expected HOST:PORT, "
                             "e.g. 10.0.0.1:1234")
        if num_processes is None or process_id is None:
            raise ValueError("--coordinator needs --num-processes N and --process-id I")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num-processes {num_processes} is invalid: expected >= 1")
    if process_id is not None and not 0 <= process_id < (num_processes or process_id + 1):
        raise ValueError(f"--process-id {process_id} is invalid: expected 0 <= I < "
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
        raise ValueError(f"{name}={batch_size} is invalid: expected a multiple of the {n} "
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


def build_model(model_cfg: ModelConfig, seed: int, conv_impl: str | None = None,
                dtype: str | None = None,
                whiten_images: np.ndarray | None = None) -> CifarCNN | AirbenchNet:
    """The CNN of ``model_cfg`` (``model.arch``) initialised from ``seed`` (``conv_impl``
    and ``dtype`` override the config's). float64 compute implies float64 parameters (for
    the exactness check), otherwise parameters are float32. Initial parameters depend only
    on the seed and shapes, never on the conv implementation. With ``model.whiten``, the
    whitening conv's kernel is computed from ``whiten_images`` (N, 32, 32, 3), normalised
    training images; without them (benchmarks, checks, restoring a checkpoint) it keeps its
    random init."""
    dtype = dtype or model_cfg.dtype
    param_dtype = jnp.float64 if dtype == "float64" else jnp.float32
    common = dict(impl=conv_impl or model_cfg.conv_impl, pool_impl=model_cfg.pool_impl,
                  data_format=model_cfg.data_format, dtype=DTYPES[dtype],
                  param_dtype=param_dtype, bn_momentum=model_cfg.bn_momentum,
                  head_scale=model_cfg.head_scale, act=model_cfg.act,
                  bn_scale=model_cfg.bn_scale, bn_eps=model_cfg.bn_eps,
                  dirac_init=model_cfg.dirac_init)

    # One compiled program for every initialiser: built eagerly, each parameter shape
    # compiled its own truncated normal (80 compilations, ~half a short run's start-up);
    # the values are bit for bit the same.
    @nnx.jit
    def init() -> CifarCNN | AirbenchNet:
        if model_cfg.arch == "airbench":
            return AirbenchNet(tuple(model_cfg.widths), model_cfg.convs_per_stage,
                               rngs=nnx.Rngs(seed), **common)
        return CifarCNN(tuple(model_cfg.widths), model_cfg.convs_per_stage,
                        pool_first=model_cfg.pool_first, rngs=nnx.Rngs(seed), **common)

    model = init()
    if model_cfg.arch == "airbench" and model_cfg.whiten and whiten_images is not None:
        set_whitening(model, whiten_images)
    return model


@dataclass(frozen=True)
class Training:
    """What every entry point trains with: the model, its split graph definitions, the
    learning-rate schedule, the Optax optimiser and the initial state (replicated over
    ``mesh`` when one is given)."""

    model: CifarCNN | AirbenchNet
    fns: ModelGraphs
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    state: TrainState


def init_training(model_cfg: ModelConfig, optim_cfg: OptimConfig, seed: int,
                  total_steps: int, steps_per_epoch: int, *, conv_impl: str | None = None,
                  dtype: str | None = None, mesh: Mesh | None = None,
                  whiten_images: np.ndarray | None = None,
                  batch_size: int | None = None) -> Training:
    """Model (:func:`build_model`, ``whiten_images`` for its whitening conv), schedule and
    optimiser of the config (``total_steps`` steps, ``steps_per_epoch`` for the warm-up and
    ``optim.whiten_bias_epochs``, ``batch_size`` for ``optim.scaling=airbench``) and the
    initial training state (with ``optim.lookahead`` its ``"ema"`` copy of the weights),
    placed replicated on ``mesh`` (left where JAX puts it when None).

    Example:
      >>> from train.config import load_config
      >>> cfg = load_config("cifar.yaml", ["model.widths=[4]", "model.convs_per_stage=1"])
      >>> t = init_training(cfg.model, cfg.optim, 0, 10, 5, mesh=make_mesh())
      >>> t.state["step"].sharding.is_fully_replicated
      True
    """
    schedule = make_schedule(optim_cfg, total_steps, steps_per_epoch)
    model = build_model(model_cfg, seed, conv_impl, dtype, whiten_images)
    tx = make_optimizer(optim_cfg, schedule, steps_per_epoch=steps_per_epoch,
                        frozen_whiten=model_cfg.arch == "airbench" and model_cfg.whiten,
                        batch_size=batch_size)
    fns, state = split_model(model, tx, lookahead=optim_cfg.lookahead)
    if mesh is not None:
        state = jax.device_put(state, replicated(mesh))
    return Training(model, fns, schedule, tx, state)
