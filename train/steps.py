"""The model as pure functions of its state, and the jitted train and eval steps.

The NNX model is split once into a graph definition and pytrees (``params``,
``batch_stats``, the Optax state and, with Lookahead, its slow copy of the weights), held by
one :class:`TrainState`; the steps are ``jconv.jit`` functions of it, which keeps per-step
Python overhead near zero and makes the whole training state one pytree that Orbax can save
and restore exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

import jconv

from .parallel import batch_sharding, replicated

# airbench94's Lookahead: every LOOKAHEAD_EVERY steps the EMA copy moves towards the
# weights by 1 - decay, decay = LOOKAHEAD_BASE * (step / total_steps)**3, and the weights
# jump to it; after the last step the weights are the EMA copy.
LOOKAHEAD_EVERY = 5
LOOKAHEAD_BASE = 0.95 ** 5


@struct.dataclass
class Weights:
    """What the network computes with: its parameters and BatchNorm running statistics."""

    params: Any
    batch_stats: Any


@struct.dataclass
class TrainState:
    """Everything a training step reads and writes (one pytree: checkpoints hold exactly
    this). ``ema`` is Lookahead's slow copy of the weights (:func:`lookahead_update`), the
    empty ``None`` subtree when the run has no ``optim.lookahead``."""

    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    step: jax.Array  # optimiser steps taken, int32 scalar
    ema: Weights | None = None

    @property
    def weights(self) -> Weights:
        return Weights(self.params, self.batch_stats)


@dataclass(frozen=True)
class ModelGraphs:
    """Graph definitions of the model in train mode (BN uses and updates batch statistics)
    and eval mode (BN uses the running averages)."""

    train_def: nnx.GraphDef
    eval_def: nnx.GraphDef


def split_model(model: nnx.Module, tx: optax.GradientTransformation, *,
                lookahead: bool = False) -> tuple[ModelGraphs, TrainState]:
    """(graph definitions, initial training state) for ``model`` and optimiser ``tx``; with
    ``lookahead`` the state's ``ema`` is a copy of the weights (see
    :func:`lookahead_update`), so checkpoints and ``--resume`` carry it.

    Example:
      >>> from flax import nnx
      >>> graphs, state = split_model(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), optax.sgd(0.1))
      >>> sorted(state.params), int(state.step), state.ema
      (['bias', 'kernel'], 0, None)
    """
    model.train()
    train_def, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    # Plain arrays, not Variable objects: each trace then builds its own Variables on merge.
    params, batch_stats = nnx.as_pure(params), nnx.as_pure(batch_stats)
    model.eval()
    eval_def = nnx.graphdef(model)
    model.train()
    ema = jax.tree.map(jnp.copy, Weights(params, batch_stats)) if lookahead else None
    state = TrainState(params, batch_stats, tx.init(params), jnp.zeros((), jnp.int32), ema)
    return ModelGraphs(train_def, eval_def), state


def lookahead_update(ema: Any, net: Any, step: jnp.ndarray,
                     total_steps: int) -> tuple[Any, Any]:
    """airbench94's Lookahead after training step ``step`` (1-based) of ``total_steps``:
    (new ema, new net) pytrees. When ``step`` is a multiple of 5,
    ``ema <- ema + (1 - decay) * (net - ema)`` with ``decay = 0.95**5 * (step /
    total_steps)**3`` and ``net <- ema``; at ``step >= total_steps`` also ``net <- ema``;
    otherwise both are unchanged.

    Example:
      >>> ema, net = lookahead_update(jnp.zeros(()), jnp.ones(()), jnp.array(5), 10)
      >>> round(float(ema), 4), round(float(net), 4)  # 1 - 0.95**5 * 0.5**3
      (0.9033, 0.9033)
    """
    due = step % LOOKAHEAD_EVERY == 0
    decay = LOOKAHEAD_BASE * (step / total_steps) ** 3
    ema = jax.tree.map(lambda e, n: jnp.where(due, e + (1 - decay) * (n - e), e).astype(e.dtype),
                       ema, net)
    jump = due | (step >= total_steps)
    net = jax.tree.map(lambda e, n: jnp.where(jump, e, n), ema, net)
    return ema, net


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


def step_compiler_options(conv_backend: str) -> dict[str, Any]:
    """XLA options of the train and eval steps over ``jconv.conv_compiler_options``: with
    ``eigen`` on CPU, reductions also leave YNNPACK (only dots stay). YNNPACK's reduce
    fusions made XLA materialise full-size constant broadcasts for them and ran BatchNorm's
    statistics slower than XLA's own loops (docs/performance.md, "Train step profile").

    Example:
      >>> step_compiler_options("xla_default")
      {}
    """
    eigen = jconv.conv_compiler_options(conv_backend)
    return {k: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT" for k in eigen
            if k == "xla_cpu_experimental_ynn_fusion_type"}


def jit_step(fun: Callable, conv_backend: str, **jit_kwargs: Any) -> Callable:
    """``fun`` jitted as train/ compiles every step: ``jconv.jit`` with ``conv_backend``
    and :func:`step_compiler_options` (``jit_kwargs`` go to ``jax.jit``). The one place a
    step's compile options are chosen: the trainer's train/eval/grad steps (so
    ``train.bench`` and ``train.profile``, which time those) and ``train.export``'s speed
    check all compile through it.

    Example:
      >>> import jax.numpy as jnp
      >>> jit_step(lambda x: x * 2, "eigen")(jnp.ones(2)).tolist()
      [2.0, 2.0]
    """
    return jconv.jit(fun, conv_backend=conv_backend,
                     compiler_options=step_compiler_options(conv_backend), **jit_kwargs)


def _mesh_kwargs(mesh: Any, n_replicated: int, n_batch: int) -> dict[str, Any]:
    """jit arguments that pin a step to ``mesh``: the first ``n_replicated`` arguments and
    every output replicated, the last ``n_batch`` split along ``data``; none without a
    mesh."""
    if mesh is None:
        return {}
    return {"in_shardings": (replicated(mesh),) * n_replicated
            + (batch_sharding(mesh),) * n_batch, "out_shardings": replicated(mesh)}


def make_train_step(graphs: ModelGraphs, tx: optax.GradientTransformation,
                    label_smoothing: float, conv_backend: str, mesh: Any = None,
                    lookahead_steps: int | None = None,
                    trained: Callable[[Any], Any] | None = None) -> Callable:
    """Jitted ``(state, images (B,32,32,3), labels (B,)) -> (state, {"loss", "correct"})``.

    ``loss`` is the batch-mean smoothed cross-entropy, ``correct`` the number of right
    argmax predictions. The input state's buffers are donated (updated in place). Compiled
    by :func:`jit_step` with ``conv_backend`` (``"eigen"`` | ``"xla_default"``), as are the
    other steps. With a ``jax.sharding.Mesh`` (axis ``data``) the state and outputs are
    replicated and the batch is split over the devices; the means are over the global
    batch, so the result is the 1-device result. With ``lookahead_steps`` (the run's total
    steps; the state must hold ``ema``) each step ends with :func:`lookahead_update`.
    ``trained`` maps the parameters inside the loss, e.g. to stop the gradients of those
    the step does not train (:func:`train.optim.stop_untrained_gradients`).
    """

    def step(state: TrainState, images: jnp.ndarray, labels: jnp.ndarray):
        def loss_fn(params, batch_stats):
            if trained is not None:
                params = trained(params)
            model = nnx.merge(graphs.train_def, params, batch_stats)
            logits = model(images)
            loss = smoothed_cross_entropy(logits, labels, label_smoothing).mean()
            return loss, (logits, nnx.as_pure(nnx.state(model, nnx.BatchStat)))

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = TrainState(optax.apply_updates(state.params, updates), batch_stats, opt_state,
                         state.step + 1, state.ema)
        if lookahead_steps is not None:
            ema, net = lookahead_update(state.ema, new.weights, new.step, lookahead_steps)
            new = new.replace(params=net.params, batch_stats=net.batch_stats, ema=ema)
        correct = jnp.sum(jnp.argmax(logits, -1) == labels)
        return new, {"loss": loss, "correct": correct}

    return jit_step(step, conv_backend, donate_argnums=0, **_mesh_kwargs(mesh, 1, 2))


def make_grad_fn(graphs: ModelGraphs, label_smoothing: float, conv_backend: str) -> Callable:
    """Jitted ``(params, batch_stats, images, labels) -> (loss, grads)`` in train mode: the
    gradient the train step applies, exposed for the cross-implementation check."""

    def grad(params, batch_stats, images, labels):
        def loss_fn(p, stats):
            model = nnx.merge(graphs.train_def, p, stats)
            return smoothed_cross_entropy(model(images), labels, label_smoothing).mean()

        return jax.value_and_grad(loss_fn)(params, batch_stats)

    return jit_step(grad, conv_backend)


def translate(images: jnp.ndarray, dy: int, dx: int) -> jnp.ndarray:
    """Images (B, H, W, C) shifted by (``dy``, ``dx``) pixels, |dy|, |dx| <= 1, the border
    filled by reflection: the (H, W) window at offset (1 - dy, 1 - dx) of the image
    reflect-padded by 1 (airbench's test-time translation).

    Example:
      >>> x = jnp.arange(3.0).reshape(1, 1, 3, 1)
      >>> translate(x, 0, 1)[0, 0, :, 0].tolist()
      [1.0, 0.0, 1.0]
    """
    _, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    return padded[:, 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


def tta_logits(model: Callable, images: jnp.ndarray, flip: bool,
               multicrop: bool) -> jnp.ndarray:
    """Test-time augmented logits of ``model`` for images (B, H, W, C) -> (B, K).

    ``v(x)`` is ``model(x)``, or with ``flip`` the mean of it and of the mirror image's; with
    ``multicrop`` the result is ``0.5 v(x) + 0.25 v(translate(x, 1, 1)) + 0.25
    v(translate(x, -1, -1))`` (airbench94's TTA level 2 when both are on).

    Example:
      >>> tta_logits(lambda x: x.sum((1, 2)), jnp.ones((2, 4, 4, 3)), True, True).shape
      (2, 3)
    """
    def view(x: jnp.ndarray) -> jnp.ndarray:
        out = model(x)
        return 0.5 * (out + model(x[:, :, ::-1])) if flip else out

    logits = view(images)
    if multicrop:
        logits = 0.5 * logits + 0.25 * (view(translate(images, 1, 1))
                                        + view(translate(images, -1, -1)))
    return logits


def make_eval_step(graphs: ModelGraphs, tta_flip: bool, conv_backend: str,
                   mesh: Any = None, tta_multicrop: bool = False) -> Callable:
    """Jitted ``(params, batch_stats, images (B,32,32,3)) -> logits (B, K)`` in eval mode,
    test-time augmented by :func:`tta_logits` (``tta_flip``, ``tta_multicrop``). With a
    ``mesh`` the images are split over its devices and the logits come back replicated."""

    def step(params, batch_stats, images):
        model = nnx.merge(graphs.eval_def, params, batch_stats)
        return tta_logits(model, images, tta_flip, tta_multicrop)

    return jit_step(step, conv_backend, **_mesh_kwargs(mesh, 2, 1))
