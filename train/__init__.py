"""Train a jconv CNN on CIFAR-10 with Optax: ``python -m train --config configs/cifar.yaml``.

Modules: ``config`` (typed YAML + CLI config), ``data`` (TFDS / python folder / synthetic,
grain batches), ``model`` (the CNNs, built from ``ModelOptions``), ``norm`` (BatchNorm with
PyTorch's passes, for the ReLU network), ``optim`` (Optax
optimiser and schedule), ``steps`` (the training state and the jitted train/eval steps),
``parallel`` (the device mesh and shardings), ``experiment`` (one run built from its config:
every entry point below builds from it), ``checkpoint`` (Orbax), ``report`` (metrics, plots,
summaries), ``workdir`` (the run's folder and the ``--resume`` checks), ``loop`` (the
training run), ``cli`` (command line), ``check`` (cross-impl
gradient check), ``bench`` (training throughput per conv implementation) and ``export``
(folded ``jax.export`` artifact and predictions), ``profile`` (where a train step's time
goes, beside PyTorch's), ``race`` (whole runs against airbench94's PyTorch code, side by
side) and ``torch_ref`` (the PyTorch reference of the same networks).
"""
