"""Optax optimiser and learning-rate schedule from the ``optim`` config section, including
airbench94's parts: its learning-rate and weight-decay units, the larger learning rate of
BatchNorm biases, the frozen whitening kernel and the whitening bias trained only at first.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from .config import OptimConfig

# Parameter groups (see param_labels): each gets its own chain in make_optimizer.
REST, BN_BIAS, WHITEN_BIAS, FROZEN = "rest", "bn_bias", "whiten_bias", "frozen"


def make_schedule(optim_cfg: OptimConfig, total_steps: int,
                  steps_per_epoch: int) -> optax.Schedule:
    """Learning rate per step: linear warm-up from ``lr * start_factor`` to ``lr`` over
    ``warmup_epochs``, then

    - ``onecycle``: linear decay to ``lr * end_factor`` at ``total_steps`` (with
      start_factor 0.2, end_factor 0.07 and the peak at 23% of the steps this is
      airbench94's triangle),
    - ``cosine``: cosine decay to 0 at ``total_steps``,
    - ``constant``: the peak ``lr`` until the end.

    Example:
      >>> from types import SimpleNamespace as NS
      >>> s = make_schedule(NS(lr=1.0, schedule="onecycle", warmup_epochs=1, start_factor=0.0,
      ...                      end_factor=0.0), 4, 2)
      >>> [float(s(i)) for i in range(5)]
      [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    warm = min(round(optim_cfg.warmup_epochs * steps_per_epoch), total_steps - 1)
    lr = optim_cfg.lr
    start = lr * optim_cfg.start_factor
    if optim_cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(start, lr, warm, total_steps, end_value=0.0)
    rest = total_steps - warm
    after = (optax.linear_schedule(lr, lr * optim_cfg.end_factor, rest)
             if optim_cfg.schedule == "onecycle" else optax.constant_schedule(lr))
    return optax.join_schedules([optax.linear_schedule(start, lr, warm), after], [warm])


def decay_mask(params: Any) -> Any:
    """Weight decay only on conv and linear kernels (ndim >= 2), not on biases or BN scales.

    Example:
      >>> import jax.numpy as jnp
      >>> decay_mask({"w": jnp.ones((2, 3)), "b": jnp.ones(3)})
      {'b': False, 'w': True}
    """
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def _names(path: tuple) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]


def param_labels(params: Any, frozen_whiten: bool = False) -> Any:
    """The group of each parameter: ``bn_bias`` (a BatchNorm's bias: a ``bias`` inside a
    ``bn``/``norms`` module), ``whiten_bias`` and ``frozen`` (the whitening conv's bias and
    kernel, only when ``frozen_whiten``) or ``rest``.

    Example:
      >>> import jax.numpy as jnp
      >>> p = {"bn": {"bias": jnp.ones(2)}, "whiten": {"bias": jnp.ones(2),
      ...      "kernel": jnp.ones((2, 3, 2, 2))}, "head": {"kernel": jnp.ones((2, 2))}}
      >>> labels = param_labels(p, frozen_whiten=True)
      >>> labels["bn"], labels["head"]
      ({'bias': 'bn_bias'}, {'kernel': 'rest'})
      >>> labels["whiten"]
      {'bias': 'whiten_bias', 'kernel': 'frozen'}
    """
    def label(path: tuple, _: Any) -> str:
        names = _names(path)
        if names[-1] == "bias" and any(n in ("bn", "norms") for n in names[:-1]):
            return BN_BIAS
        if frozen_whiten and names[0] == "whiten":
            return FROZEN if names[-1] == "kernel" else WHITEN_BIAS
        return REST

    return jax.tree_util.tree_map_with_path(label, params)


def whiten_bias_steps(optim_cfg: OptimConfig, steps_per_epoch: int) -> int:
    """How many optimiser steps the whitening bias trains for: ``whiten_bias_epochs`` x
    ``steps_per_epoch``, rounded (from this step index on, 0-based, it stays fixed).

    Example:
      >>> from types import SimpleNamespace as NS
      >>> whiten_bias_steps(NS(whiten_bias_epochs=3.0), 20)
      60
    """
    return round(optim_cfg.whiten_bias_epochs * steps_per_epoch)


def stop_untrained_gradients(params: Any, frozen_whiten: bool, whiten_bias: bool) -> Any:
    """``params`` with ``jax.lax.stop_gradient`` on those a step does not train: with
    ``frozen_whiten`` the whitening kernel, and its bias too when not ``whiten_bias``.
    Their gradients are then zeros that are never computed, as PyTorch computes none for
    a tensor with ``requires_grad`` off: once the whitening bias stops training, nothing
    before the second conv needs a gradient, so its backward-data pass is not run.

    Example:
      >>> import jax
      >>> p = {"whiten": {"bias": jnp.ones(2), "kernel": jnp.ones(2)}, "head": jnp.ones(2)}
      >>> g = jax.grad(lambda p: sum(jnp.sum(v) for v in jax.tree.leaves(
      ...     stop_untrained_gradients(p, True, whiten_bias=False))))(p)
      >>> g["whiten"]["bias"].tolist(), g["whiten"]["kernel"].tolist(), g["head"].tolist()
      ([0.0, 0.0], [0.0, 0.0], [1.0, 1.0])
    """
    if not frozen_whiten:
        return params
    stop = {FROZEN} if whiten_bias else {FROZEN, WHITEN_BIAS}
    return jax.tree.map(lambda p, label: jax.lax.stop_gradient(p) if label in stop else p,
                        params, param_labels(params, frozen_whiten))


def airbench_units(lr: float, weight_decay: float, momentum: float,
                   batch_size: int) -> tuple[float, float]:
    """(learning rate, decay coefficient) for a *mean* batch loss that make
    ``optax.add_decayed_weights(decay)`` + ``optax.sgd(lr, momentum, nesterov=True)`` take
    airbench94's steps for its hyperparameters ``lr``, ``weight_decay``.

    airbench sums the loss over the batch (B = ``batch_size``) and sets PyTorch SGD's
    ``lr_k = lr / K`` and ``weight_decay = c_k = (weight_decay * B / K) / lr_k`` with
    ``K = 1024 * (1 + 1/(1 - momentum))``. Its step ``lr_k * nesterov(B * g + c_k * p)`` for
    the mean-loss gradient ``g`` equals ``(lr_k * B) * nesterov(g + (c_k / B) * p)``: rate
    ``lr * B / K`` and decay ``c_k / B = weight_decay / lr``.

    Example:
      >>> lr, wd = airbench_units(11.5, 0.0153, 0.85, 1024)
      >>> round(lr, 4), round(wd, 6)
      (1.5, 0.00133)
    """
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    return lr * batch_size / kilostep, weight_decay / lr


def make_optimizer(optim_cfg: OptimConfig, schedule: optax.Schedule, *,
                   steps_per_epoch: int = 1, frozen_whiten: bool = False,
                   batch_size: int | None = None) -> optax.GradientTransformation:
    """``adamw`` (decoupled weight decay, beta1 = ``momentum``) or ``sgd`` (weight decay added
    to the gradient, Nesterov momentum when ``nesterov``).

    - ``scaling: airbench``: ``lr`` and ``weight_decay`` are airbench94's numbers (see
      :func:`airbench_units`, which needs ``batch_size``), the schedule's values multiply
      the converted rate, and the decay applies to every trained parameter as in airbench
      (``none``: ``lr`` is the rate itself; decay on kernels only, :func:`decay_mask`).
    - ``bias_lr_scale`` (s): BatchNorm biases take ``lr * s`` and weight decay ``/ s``.
    - ``frozen_whiten``: the whitening kernel never changes; its bias trains (as a ``rest``
      parameter) for the first ``whiten_bias_epochs`` x ``steps_per_epoch`` steps only.

    Example:
      >>> from types import SimpleNamespace as NS
      >>> cfg = NS(name="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4, scaling="none",
      ...          bias_lr_scale=1.0, whiten_bias_epochs=0.0)
      >>> tx = make_optimizer(cfg, optax.constant_schedule(0.1))
      >>> isinstance(tx, optax.GradientTransformation)
      True
    """
    o = optim_cfg
    lr_factor, decay, mask = 1.0, o.weight_decay, decay_mask
    if o.scaling == "airbench":
        if batch_size is None:
            raise ValueError("optim.scaling=airbench needs the batch size (batch_size=None)")
        lr_unit, decay = airbench_units(o.lr, o.weight_decay, o.momentum, batch_size)
        lr_factor, mask = lr_unit / o.lr, None

    def base(scale: float) -> optax.GradientTransformation:
        lr = (lambda step: schedule(step) * (lr_factor * scale)) \
            if lr_factor * scale != 1.0 else schedule
        if o.name == "adamw":
            return optax.adamw(lr, b1=o.momentum, weight_decay=decay / scale, mask=mask)
        return optax.chain(optax.add_decayed_weights(decay / scale, mask=mask),
                           optax.sgd(lr, momentum=o.momentum, nesterov=o.nesterov))

    if o.bias_lr_scale == 1.0 and not frozen_whiten:
        return base(1.0)  # one group: the plain chain (and optimiser state) of before
    cutoff = whiten_bias_steps(o, steps_per_epoch)
    until_cutoff = optax.scale_by_schedule(
        lambda step: jnp.where(step < cutoff, 1.0, 0.0))
    transforms = {REST: base(1.0), BN_BIAS: base(o.bias_lr_scale),
                  WHITEN_BIAS: optax.chain(base(1.0), until_cutoff),
                  FROZEN: optax.set_to_zero()}
    return optax.multi_transform(transforms,
                                 lambda params: param_labels(params, frozen_whiten))
