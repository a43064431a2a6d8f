"""One run, built once from its config: :class:`Experiment` owns the data and normaliser,
the model, the learning-rate schedule, the optimiser (with Lookahead when the config asks
for it), the training state and the compiled steps.

Every entry point builds from it (the trainer :mod:`train.loop`, the gradient check
:mod:`train.check`, the throughput bench :mod:`train.bench`, the export
:mod:`train.export`), so the update they check or time is by construction the one the
trainer runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from .config import Config, dtypes
from .data import (Dataset, Normalizer, channel_stats, config_batches, load_dataset,
                   steps_per_epoch)
from .model import ModelOptions, build_model, set_whitening
from .optim import make_optimizer, make_schedule, stop_untrained_gradients, whiten_bias_steps
from .parallel import AXIS, check_batch_size, replicated
from .steps import (ModelGraphs, TrainState, make_eval_step, make_grad_fn, make_train_step,
                    split_model)

# airbench computes its whitening conv from this many (normalised) training images.
WHITEN_IMAGES = 5000


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
    return max(1, -(-(-(-n // batches)) // n_dev)) * n_dev


@dataclass(frozen=True)
class RunData:
    """A run's dataset and the per-channel normaliser of its training images. ``dataset``
    is None where only the model's structure is needed (restoring a checkpoint for export;
    the normaliser then comes from the run's ``run.json``)."""

    dataset: Dataset | None
    norm: Normalizer

    @classmethod
    def load(cls, cfg: Config, progress: bool = False) -> "RunData":
        """The dataset of ``cfg.data`` (see :func:`train.data.load_dataset`) and its
        normaliser."""
        ds = load_dataset(cfg.data, cfg.seed, progress=progress)
        return cls(ds, Normalizer(*channel_stats(ds.train.images)))


@dataclass(frozen=True)
class CompiledSteps:
    """The steps of a run, compiled for its batch shapes: ``train`` (state, images, labels)
    -> (state, metrics); ``evaluate`` (params, batch_stats, images) -> logits with the
    config's test-time augmentation; ``epoch_evaluate`` the same for the per-epoch
    evaluations (without TTA unless ``train.epoch_tta``); ``late_train`` the train step
    from step ``late_from`` on, once the whitening bias no longer trains (None when it
    trains all run)."""

    train: Any
    evaluate: Any
    epoch_evaluate: Any
    late_train: Any = None
    late_from: int | None = None

    def train_at(self, step: int) -> Any:
        """The train step for step index ``step`` (0-based, over the whole run): ``train``,
        or ``late_train`` from step ``late_from`` on (the whitening bias no longer trains,
        :meth:`Experiment.train_step`)."""
        return self.train if self.late_from is None or step < self.late_from \
            else self.late_train


@dataclass(frozen=True)
class Experiment:
    """Everything a run of ``cfg`` is built from (see the module docstring).

    ``mesh`` (a 1-D ``data`` mesh, :func:`train.parallel.make_mesh`) splits each batch over
    its devices and replicates the state; None leaves arrays where JAX puts them (checks,
    benchmarks). ``steps_per_epoch`` and ``total_steps`` set the schedule's and Lookahead's
    lengths.

    Example:
      >>> from train.config import load_config
      >>> cfg = load_config("cifar.yaml", ["data.source=synthetic", "model.widths=[8]",
      ...                                  "train.batch_size=64", "train.epochs=3"])
      >>> exp = Experiment.from_config(cfg)
      >>> exp.steps_per_epoch, exp.total_steps, exp.state.ema is not None  # Lookahead on
      (8, 24, True)
    """

    cfg: Config
    mesh: Mesh | None
    data: RunData
    options: ModelOptions
    model: nnx.Module
    graphs: ModelGraphs
    steps_per_epoch: int
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    state: TrainState

    @classmethod
    def from_config(cls, cfg: Config, mesh: Mesh | None = None, *,
                    data: RunData | None = None, progress: bool = False) -> "Experiment":
        """Build the run of ``cfg``: ``data`` (loaded when None, with a download progress
        bar when ``progress``), the model initialised from ``cfg.seed`` (its whitening conv
        from the first training images), schedule, optimiser and initial state. A
        ``ValueError`` when ``train.batch_size`` does not split over ``mesh``."""
        t = cfg.train
        if mesh is not None:
            check_batch_size("train.batch_size", t.batch_size, mesh)
        if dtypes(cfg.model.dtype)[1] == jnp.float64 and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)
        data = RunData.load(cfg, progress) if data is None else data
        steps = 1 if data.dataset is None else steps_per_epoch(
            len(data.dataset.train), t.batch_size, t.max_steps_per_epoch)
        schedule = make_schedule(cfg.optim, t.epochs * steps, steps)
        options = ModelOptions.from_config(cfg.model)
        model = build_model(options, cfg.seed)
        if options.whiten and data.dataset is not None:
            set_whitening(model, data.norm(data.dataset.train.images[:WHITEN_IMAGES]))
        tx = make_optimizer(cfg.optim, schedule, steps_per_epoch=steps,
                            frozen_whiten=options.whiten, batch_size=t.batch_size)
        graphs, state = split_model(model, tx, lookahead=cfg.optim.lookahead)
        if mesh is not None:
            state = jax.device_put(state, replicated(mesh))
        return cls(cfg, mesh, data, options, model, graphs, steps, schedule, tx, state)

    @property
    def total_steps(self) -> int:
        return self.cfg.train.epochs * self.steps_per_epoch

    @property
    def input_dtype(self) -> Any:
        """The dtype the batches are fed in: the model's parameter dtype (float64 only for
        float64 compute, :func:`train.config.dtypes`)."""
        return self.options.param_dtype

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.shape[AXIS]

    @property
    def eval_batch_size(self) -> int:
        """The batch size the evaluation split is evaluated in: at most
        ``train.eval_batch_size`` (rounded up to split evenly over the devices) and balanced
        over the split by :func:`balanced_batch_size` (without the dataset, whose length
        it needs: ``train.eval_batch_size`` so rounded)."""
        t, ds = self.cfg.train, self.data.dataset
        n = t.eval_batch_size if ds is None else len(ds.test)
        return balanced_batch_size(n, t.eval_batch_size, self.devices)

    def batches(self, epoch: int) -> Any:
        """The augmented, normalised training batches of ``epoch`` (indexable; their order
        depends only on (seed, epoch)), see :func:`train.data.config_batches`."""
        t = self.cfg.train
        if self.data.dataset is None:
            raise ValueError("this Experiment was built without its dataset (data=RunData("
                             "None, ...)): it has no training batches")
        return config_batches(self.data.dataset.train, self.data.norm, self.cfg.data,
                              batch_size=t.batch_size, seed=self.cfg.seed, epoch=epoch,
                              max_steps=t.max_steps_per_epoch)

    @property
    def whiten_bias_until(self) -> int | None:
        """The step index (0-based) from which the whitening bias stops training
        (``optim.whiten_bias_epochs``), when that comes within the run; None when the
        model has no frozen whitening conv or its bias trains all run."""
        if not self.options.whiten:
            return None
        n = whiten_bias_steps(self.cfg.optim, self.steps_per_epoch)
        return n if n < self.total_steps else None

    def train_step(self, whiten_bias: bool = True) -> Callable:
        """The jitted training step (:func:`train.steps.make_train_step`): the config's
        loss, optimiser, schedule and, with ``optim.lookahead``, Lookahead over the run's
        ``total_steps``. The frozen whitening kernel gets no gradient; with ``whiten_bias=
        False`` (the steps from :attr:`whiten_bias_until` on) neither does its bias, so
        the step skips the second conv's backward-data pass, as PyTorch's does once
        airbench94 sets the bias's ``requires_grad`` off. The update is the same: the
        optimiser applies nothing to the bias from then on."""
        trained = functools.partial(stop_untrained_gradients, frozen_whiten=self.options.whiten,
                                    whiten_bias=whiten_bias)
        return make_train_step(self.graphs, self.tx, self.cfg.optim.label_smoothing,
                               self.cfg.model.conv_backend, self.mesh,
                               self.total_steps if self.cfg.optim.lookahead else None,
                               trained)

    def eval_step(self, tta: bool = True) -> Callable:
        """The jitted evaluation step with the config's test-time augmentation (none when
        not ``tta``)."""
        t = self.cfg.train
        return make_eval_step(self.graphs, tta and t.tta_flip, self.cfg.model.conv_backend,
                              self.mesh, tta and t.tta_multicrop)

    def grad_fn(self) -> Callable:
        """Jitted ``(params, batch_stats, images, labels) -> (loss, grads)``: the gradient
        the train step applies."""
        return make_grad_fn(self.graphs, self.cfg.optim.label_smoothing,
                            self.cfg.model.conv_backend)

    def compile(self) -> CompiledSteps:
        """The train and eval steps compiled ahead of time for the run's batch shapes."""
        t, state = self.cfg.train, self.state
        images = jax.ShapeDtypeStruct((t.batch_size, 32, 32, 3), self.input_dtype)
        labels = jax.ShapeDtypeStruct((t.batch_size,), np.int32)
        eval_images = jax.ShapeDtypeStruct((self.eval_batch_size, 32, 32, 3),
                                           self.input_dtype)
        late_from = self.whiten_bias_until
        late = None if late_from is None else \
            self.train_step(whiten_bias=False).lower(state, images, labels).compile()
        # With whiten_bias_epochs 0 every step is a late one: no program to compile for none.
        train = late if late_from == 0 else \
            self.train_step().lower(state, images, labels).compile()

        def compiled_eval(tta: bool) -> Any:
            return self.eval_step(tta).lower(state.params, state.batch_stats,
                                             eval_images).compile()

        evaluate = compiled_eval(True)
        # Per-epoch evaluations without test-time augmentation cost one forward pass, not 2-6.
        return CompiledSteps(train, evaluate, evaluate if t.epoch_tta else compiled_eval(False),
                             late, late_from)
