"""Train a jconv CNN on CIFAR-10 with Optax: ``python -m train --config configs/cifar.yaml``.

Modules: ``config`` (typed YAML + CLI config), ``data`` (TFDS / python folder / synthetic,
grain batches), ``model`` (the CNN), ``optim`` (Optax optimiser and schedule), ``steps``
(jitted train/eval steps), ``checkpoint`` (Orbax), ``report`` (metrics, plots, summaries),
``loop`` (the training run), ``cli`` (command line) and ``check`` (cross-impl gradient check).
"""
