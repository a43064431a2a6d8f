"""PyTorch reference of the train/ networks and optimisers, for speed comparisons only.

:func:`make_torch_step` builds, from the same config as ``python -m train``, the network of
``model.arch`` in PyTorch (``airbench``: airbench94's own modules — frozen 2x2 whitening
conv, three ConvGroups of conv -> max pool -> BN -> GELU -> conv -> BN -> GELU, a max-pooled
bias-free head; ``vgg``: :class:`train.model.CifarCNN`'s conv-BN-act stages), float32 and
``channels_last`` when ``model.data_format`` is NHWC, and one eager training step with
airbench94's optimiser — SGD with Nesterov momentum, its parameter groups, learning-rate and
weight-decay units, summed loss and Lookahead every 5 steps — or AdamW for ``optim.name:
adamw``. ``python -m train.bench`` times it interleaved with jconv's jitted step; the
accuracy of PyTorch's runs is not the point here (docs/airbench.md has those).

``torch`` is imported lazily (:func:`load_torch`), so the rest of train/ never needs it.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any, Callable

import numpy as np

from .config import Config
from .model import WHITEN_KERNEL, WHITEN_WIDTH
from .optim import airbench_units
from .steps import LOOKAHEAD_BASE, LOOKAHEAD_EVERY


def load_torch() -> ModuleType | None:
    """``torch``, or None when it is not installed. Unless the user set it,
    ``OMP_WAIT_POLICY=PASSIVE`` is set first: by default PyTorch's OpenMP workers busy-wait
    after each op and steal the cores from whatever JAX runs next in the same process."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        return None
    return torch


def _airbench_net(torch: ModuleType, cfg: Config) -> Any:
    nn, m = torch.nn, cfg.model

    def bn(c: int) -> Any:
        # model.bn_momentum is in PyTorch's meaning; airbench's weight is frozen at 1
        norm = nn.BatchNorm2d(c, eps=m.bn_eps, momentum=m.bn_momentum)
        norm.weight.requires_grad = m.bn_scale
        return norm

    def conv(c_in: int, c_out: int) -> Any:
        c = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        if m.dirac_init:
            nn.init.dirac_(c.weight.data[:c_in])
        return c

    class ConvGroup(nn.Module):
        def __init__(self, c_in: int, c_out: int):
            super().__init__()
            self.conv1, self.pool, self.norm1 = conv(c_in, c_out), nn.MaxPool2d(2), bn(c_out)
            self.conv2, self.norm2 = conv(c_out, c_out), bn(c_out)
            self.activ = nn.GELU()

        def forward(self, x: Any) -> Any:
            x = self.activ(self.norm1(self.pool(self.conv1(x))))
            return self.activ(self.norm2(self.conv2(x)))

    layers, c_in, hw = [nn.Conv2d(3, WHITEN_WIDTH, WHITEN_KERNEL, bias=True), nn.GELU()], \
        WHITEN_WIDTH, 32 - WHITEN_KERNEL + 1
    layers[0].weight.requires_grad = not m.whiten
    for width in m.widths:
        layers.append(ConvGroup(c_in, width))
        c_in, hw = width, hw // 2
    layers += [nn.MaxPool2d(hw), nn.Flatten(), nn.Linear(c_in, 10, bias=False)]
    return nn.Sequential(*layers)


def _vgg_net(torch: ModuleType, cfg: Config) -> Any:
    nn, m = torch.nn, cfg.model
    act = nn.GELU if m.act == "gelu" else nn.ReLU
    layers, c_in = [], 3
    for width in m.widths:
        for i in range(m.convs_per_stage):
            if m.pool_first and i == 1:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width, eps=m.bn_eps, momentum=m.bn_momentum), act()]
            c_in = width
        if not (m.pool_first and m.convs_per_stage > 1):
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 10)]
    return nn.Sequential(*layers)


def _optimizer(torch: ModuleType, cfg: Config, net: Any) -> Any:
    o, bs = cfg.optim, cfg.train.batch_size
    trained = [(k, p) for k, p in net.named_parameters() if p.requires_grad]
    if o.name == "adamw":
        return torch.optim.AdamW([p for _, p in trained], lr=o.lr, betas=(o.momentum, 0.999),
                                 weight_decay=o.weight_decay)
    lr, wd = o.lr, o.weight_decay
    if o.scaling == "airbench":  # PyTorch SGD on the summed loss, as airbench94 sets it
        lr_mean, decay = airbench_units(o.lr, o.weight_decay, o.momentum, bs)
        lr, wd = lr_mean / bs, decay * bs
    is_bn_bias = [("norm" in k or isinstance(dict(net.named_modules()).get(
        k.rpartition(".")[0]), torch.nn.BatchNorm2d)) and k.endswith("bias") for k, _ in trained]
    groups = [dict(params=[p for (_, p), b in zip(trained, is_bn_bias) if b],
                   lr=lr * o.bias_lr_scale, weight_decay=wd / o.bias_lr_scale),
              dict(params=[p for (_, p), b in zip(trained, is_bn_bias) if not b],
                   lr=lr, weight_decay=wd)]
    return torch.optim.SGD([g for g in groups if g["params"]], momentum=o.momentum,
                           nesterov=o.nesterov)


class TorchStep:
    """One eager PyTorch training step of the config's network: ``step(images (B,32,32,3)
    float32 NHWC numpy, labels (B,) int numpy) -> loss``. ``total_steps`` sets the Lookahead
    decay's schedule (``optim.lookahead``).

    Example:
      >>> import pytest; torch = pytest.importorskip("torch")
      >>> from train.config import load_config
      >>> cfg = load_config("cifar.yaml", ["model.widths=[8,8,8]", "train.batch_size=4"])
      >>> step = TorchStep(cfg, total_steps=10)
      >>> loss = step(*step.inputs(np.zeros((4, 32, 32, 3), np.float32), np.zeros(4, np.int64)))
      >>> round(loss / 4, 2)  # zero images: every logit ~0, the loss ~ln(10) per image
      2.3
    """

    def __init__(self, cfg: Config, total_steps: int, torch: ModuleType | None = None):
        torch = torch or load_torch()
        if torch is None:
            raise ImportError("the PyTorch reference needs torch (pip install torch)")
        self.torch, self.cfg, self.total_steps = torch, cfg, total_steps
        torch.manual_seed(cfg.seed)
        net = _airbench_net(torch, cfg) if cfg.model.arch == "airbench" else _vgg_net(torch, cfg)
        self.fmt = (torch.channels_last if cfg.model.data_format == "NHWC"
                    else torch.contiguous_format)
        self.net = net.to(memory_format=self.fmt).train()
        self.scale = cfg.model.head_scale
        self.opt = _optimizer(torch, cfg, self.net)
        # airbench sums the loss (its lr units); AdamW and plain SGD take the batch mean
        self.reduction = "sum" if cfg.optim.scaling == "airbench" else "mean"
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing,
                                                 reduction=self.reduction)
        self.ema = ({k: v.clone() for k, v in self.net.state_dict().items()}
                    if cfg.optim.lookahead else None)
        self.steps = 0
        # model.dtype=bfloat16 is what torch.autocast("cpu", dtype=torch.bfloat16) does for a
        # PyTorch user: bfloat16 convs and matmuls, float32 parameters, optimiser and
        # BatchNorm statistics
        self.autocast = cfg.model.dtype == "bfloat16"

    def inputs(self, images: np.ndarray, labels: np.ndarray) -> tuple[Any, Any]:
        """NHWC numpy batch -> (NCHW-shaped tensor in the net's memory format, labels)."""
        x = self.torch.from_numpy(np.array(images, np.float32)).permute(0, 3, 1, 2)
        return x.contiguous(memory_format=self.fmt), self.torch.from_numpy(np.array(labels)).long()

    def _lookahead(self, decay: float) -> None:
        with self.torch.no_grad():
            for ema, p in zip(self.ema.values(), self.net.state_dict().values()):
                if p.dtype.is_floating_point:
                    ema.lerp_(p, 1 - decay)
                    p.copy_(ema)

    def __call__(self, x: Any, y: Any) -> float:
        """One step on a batch from :meth:`inputs`; returns the loss (a Python float)."""
        with self.torch.autocast("cpu", dtype=self.torch.bfloat16, enabled=self.autocast):
            loss = self.loss_fn(self.net(x).float() * self.scale, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1
        if self.ema is not None and self.steps % LOOKAHEAD_EVERY == 0:
            with self.torch.profiler.record_function("lookahead"):  # train.profile's label
                self._lookahead(LOOKAHEAD_BASE * (self.steps / self.total_steps) ** 3)
        return loss.item()


def make_torch_step(cfg: Config, total_steps: int = 1000) -> Callable[[Any, Any], float] | None:
    """A :class:`TorchStep` for ``cfg``, or None when torch is not installed."""
    torch = load_torch()
    return None if torch is None else TorchStep(cfg, total_steps, torch)
