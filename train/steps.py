"""The model as pure functions of its state, and the jitted train and eval steps.

The NNX model is split once into a graph definition and three pytrees (``params``,
``batch_stats`` and the Optax state); the steps are ``jconv.jit`` functions of those
pytrees, which keeps per-step Python overhead near zero and makes the whole training state
one pytree that Orbax can save and restore exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import jconv

TrainState = dict[str, Any]  # {"params", "batch_stats", "opt_state", "step"}


@dataclass(frozen=True)
class ModelFns:
    """Graph definitions of the model in train mode (BN uses and updates batch statistics)
    and eval mode (BN uses the running averages)."""

    train_def: Any
    eval_def: Any


def split_model(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[ModelFns,
                                                                                TrainState]:
    """(graph definitions, initial training state) for ``model`` and optimiser ``tx``.

    Example:
      >>> from flax import nnx
      >>> from train.model import CifarCNN
      >>> fns, state = split_model(CifarCNN((8,), 1, rngs=nnx.Rngs(0)), optax.sgd(0.1))
      >>> sorted(state)
      ['batch_stats', 'opt_state', 'params', 'step']
    """
    model.train()
    train_def, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    # Plain arrays, not Variable objects: each trace then builds its own Variables on merge.
    params, batch_stats = nnx.as_pure(params), nnx.as_pure(batch_stats)
    model.eval()
    eval_def = nnx.graphdef(model)
    model.train()
    state = {"params": params, "batch_stats": batch_stats, "opt_state": tx.init(params),
             "step": jnp.zeros((), jnp.int32)}
    return ModelFns(train_def, eval_def), state


def smoothed_cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray,
                           smoothing: float) -> jnp.ndarray:
    """Per-example cross-entropy against one-hot labels mixed with the uniform distribution.

    logits (B, K) float, labels (B,) int -> (B,).

    Example:
      >>> round(float(smoothed_cross_entropy(jnp.zeros((1, 4)), jnp.array([0]), 0.1)[0]), 4)
      1.3863
    """
    k = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, k, dtype=logits.dtype), smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def _mesh_kwargs(mesh: Any, n_replicated: int, n_batch: int) -> dict[str, Any]:
    """jit arguments that pin a step to ``mesh``: the first ``n_replicated`` arguments and
    every output replicated, the last ``n_batch`` split along ``data``; none without a
    mesh."""
    if mesh is None:
        return {}
    from jax.sharding import NamedSharding, PartitionSpec

    repl = NamedSharding(mesh, PartitionSpec())
    batch = NamedSharding(mesh, PartitionSpec("data"))
    return {"in_shardings": (repl,) * n_replicated + (batch,) * n_batch,
            "out_shardings": repl}


def make_train_step(fns: ModelFns, tx: optax.GradientTransformation,
                    label_smoothing: float, conv_backend: str, mesh: Any = None) -> Callable:
    """Jitted ``(state, images (B,32,32,3), labels (B,)) -> (state, {"loss", "correct"})``.

    ``loss`` is the batch-mean smoothed cross-entropy, ``correct`` the number of right
    argmax predictions. The input state's buffers are donated (updated in place). Compiled
    by ``jconv.jit`` with ``conv_backend`` (``"eigen"`` | ``"xla_default"``), as are the
    other steps. With a ``jax.sharding.Mesh`` (axis ``data``) the state and outputs are
    replicated and the batch is split over the devices; the means are over the global
    batch, so the result is the 1-device result.
    """

    def step(state: TrainState, images: jnp.ndarray, labels: jnp.ndarray):
        def loss_fn(params, batch_stats):
            model = nnx.merge(fns.train_def, params, batch_stats)
            logits = model(images)
            loss = smoothed_cross_entropy(logits, labels, label_smoothing).mean()
            return loss, (logits, nnx.as_pure(nnx.state(model, nnx.BatchStat)))

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["batch_stats"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new = {"params": optax.apply_updates(state["params"], updates),
               "batch_stats": batch_stats, "opt_state": opt_state, "step": state["step"] + 1}
        correct = jnp.sum(jnp.argmax(logits, -1) == labels)
        return new, {"loss": loss, "correct": correct}

    return jconv.jit(step, conv_backend=conv_backend, donate_argnums=0,
                     **_mesh_kwargs(mesh, 1, 2))


def make_grad_fn(fns: ModelFns, label_smoothing: float, conv_backend: str) -> Callable:
    """Jitted ``(params, batch_stats, images, labels) -> (loss, grads)`` in train mode: the
    gradient the train step applies, exposed for the cross-implementation check."""

    def grad(params, batch_stats, images, labels):
        def loss_fn(p, stats):
            model = nnx.merge(fns.train_def, p, stats)
            return smoothed_cross_entropy(model(images), labels, label_smoothing).mean()

        return jax.value_and_grad(loss_fn)(params, batch_stats)

    return jconv.jit(grad, conv_backend=conv_backend)


def make_eval_step(fns: ModelFns, tta_flip: bool, conv_backend: str,
                   mesh: Any = None) -> Callable:
    """Jitted ``(params, batch_stats, images (B,32,32,3)) -> logits (B, K)`` in eval mode;
    with ``tta_flip`` the mean of the logits of the images and their mirror images. With a
    ``mesh`` the images are split over its devices and the logits come back replicated."""

    def step(params, batch_stats, images):
        model = nnx.merge(fns.eval_def, params, batch_stats)
        logits = model(images)
        if tta_flip:
            logits = 0.5 * (logits + model(images[:, :, ::-1]))
        return logits

    return jconv.jit(step, conv_backend=conv_backend, **_mesh_kwargs(mesh, 2, 1))
