"""What ``train.bench`` and ``train.profile`` share: the config and data they load, the
real batches they time, and the implementation labels (``lax+eigen``) they take, spelled
as ``python -m jconv.bench`` spells them."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from .config import Config, load_config
from .experiment import Experiment, RunData

EIGEN_SUFFIX = "+eigen"


def split_label(label: str) -> tuple[str, str]:
    """An implementation label -> (jconv impl, conv_backend): ``"lax+eigen"`` is
    ``impl="lax"`` compiled with ``jconv.conv_compiler_options("eigen")``, a bare name
    compiled with XLA's default kernels.

    Example:
      >>> split_label("lax+eigen"), split_label("im2col")
      (('lax', 'eigen'), ('im2col', 'xla_default'))
    """
    if label.endswith(EIGEN_SUFFIX):
        return label[:-len(EIGEN_SUFFIX)], "eigen"
    return label, "xla_default"


def load_inputs(config: str, overrides: list[str]) -> tuple[Config, RunData]:
    """The config and its data (a :class:`~train.errors.ConfigError` or
    :class:`~train.errors.DataError` when either cannot be used). With
    ``train.reuse_host_memory`` the process reuses its freed host memory as the trainer's
    does (:func:`jconv.reuse_host_memory`; PyTorch's side, in the same process, gets it
    too)."""
    cfg = load_config(config, overrides)
    from .process import use_host_memory_reuse

    use_host_memory_reuse(cfg)
    return cfg, RunData.load(cfg)


def bench_batches(exp: Experiment, steps: int) -> list[tuple[Any, Any]]:
    """The first ``steps`` training batches of ``exp``'s first epoch as (images (B,32,32,3),
    labels (B,)) device arrays, augmented and normalised as ``python -m train`` feeds them."""
    batches = exp.batches(0)
    return [(jnp.asarray(b["image"]), jnp.asarray(b["label"])) for b in
            (batches[i] for i in range(min(steps, len(batches))))]


