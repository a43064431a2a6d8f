"""Optional PyTorch column: the same layer through ``torch.nn.functional.conv1d/2d/3d`` (or
``conv_transpose1d/2d/3d``) on CPU."""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np

from .suite import Layer


def load_torch() -> ModuleType | None:
    """``torch`` if it is installed, else None (the column is then left out).

    Unless the user set it, ``OMP_WAIT_POLICY=PASSIVE`` is set first: by default PyTorch's
    OpenMP workers busy-wait after each op and steal the cores from whatever JAX runs next."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        return None
    return torch


class TorchCase:
    """PyTorch forward and forward+backward of one layer; channels last uses
    ``channels_last`` (2-D) or ``channels_last_3d`` (3-D). PyTorch has no channels-last
    memory format in 1-D, so a 1-D layer runs contiguous NCL in both formats."""

    def __init__(self, torch: ModuleType, layer: Layer, data_format: str):
        self.torch, self.layer = torch, layer
        rng = np.random.default_rng(0)
        last = {2: "channels_last", 3: "channels_last_3d"}.get(layer.ndim)
        channels_last = layer.data_format(data_format)[1] != "C" and last is not None
        fmt = getattr(torch, last) if channels_last else torch.contiguous_format
        x = torch.from_numpy(rng.standard_normal(layer.x_shape("NCHW")).astype(np.float32))
        self.x = x.contiguous(memory_format=fmt).requires_grad_(True)
        w = torch.from_numpy(0.1 * rng.standard_normal(layer.w_shape).astype(np.float32))
        self.w = w.requires_grad_(True)
        op = "conv_transpose" if layer.transposed else "conv"
        self._fn = getattr(torch.nn.functional, f"{op}{layer.ndim}d")
        self.dy = torch.ones_like(self._conv()).contiguous(memory_format=fmt)
        self.compile_s = 0.0  # eager: nothing to compile
        self.peak_mb = float("nan")
        self.fwd()
        self.fwd_bwd()

    def _conv(self) -> object:
        return self._fn(self.x, self.w, **self.layer.conv_kwargs)

    def fwd(self) -> object:
        with self.torch.no_grad():
            return self._conv()

    def fwd_bwd(self) -> object:
        self.x.grad = self.w.grad = None
        self._conv().backward(self.dy)
        return self.w.grad
