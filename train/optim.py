"""Optax optimiser and learning-rate schedule from the ``optim`` config section."""

from __future__ import annotations

from typing import Any

import jax
import optax


def make_schedule(optim_cfg: Any, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
    """Learning rate per step: linear warm-up from 0 over ``warmup_epochs``, then

    - ``onecycle``: linear decay to 0 at ``total_steps`` (a triangular one-cycle),
    - ``cosine``: cosine decay to 0 at ``total_steps``,
    - ``constant``: the peak ``lr`` until the end.

    Example:
      >>> from types import SimpleNamespace as NS
      >>> s = make_schedule(NS(lr=1.0, schedule="onecycle", warmup_epochs=1), 4, 2)
      >>> [float(s(i)) for i in range(5)]
      [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    warm = min(round(optim_cfg.warmup_epochs * steps_per_epoch), total_steps - 1)
    lr = optim_cfg.lr
    if optim_cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warm, total_steps, end_value=0.0)
    rest = total_steps - warm
    after = (optax.linear_schedule(lr, 0.0, rest) if optim_cfg.schedule == "onecycle"
             else optax.constant_schedule(lr))
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm])


def decay_mask(params: Any) -> Any:
    """Weight decay only on conv and linear kernels (ndim >= 2), not on biases or BN scales.

    Example:
      >>> import jax.numpy as jnp
      >>> decay_mask({"w": jnp.ones((2, 3)), "b": jnp.ones(3)})
      {'b': False, 'w': True}
    """
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim_cfg: Any, schedule: optax.Schedule) -> optax.GradientTransformation:
    """``adamw`` (decoupled weight decay, beta1 = ``momentum``) or ``sgd`` (weight decay added
    to the gradient, Nesterov momentum when ``nesterov``).

    Example:
      >>> from types import SimpleNamespace as NS
      >>> cfg = NS(name="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4)
      >>> tx = make_optimizer(cfg, optax.constant_schedule(0.1))
      >>> isinstance(tx, optax.GradientTransformation)
      True
    """
    if optim_cfg.name == "adamw":
        return optax.adamw(schedule, b1=optim_cfg.momentum, weight_decay=optim_cfg.weight_decay,
                           mask=decay_mask)
    return optax.chain(
        optax.add_decayed_weights(optim_cfg.weight_decay, mask=decay_mask),
        optax.sgd(schedule, momentum=optim_cfg.momentum, nesterov=optim_cfg.nesterov))
