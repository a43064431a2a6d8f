"""Training-throughput benchmark: a six-conv 32/64/128 BatchNorm CNN, one SGD step per call.

The same network in PyTorch is the reference column when torch is installed.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import nn as jnn
from ..xla_options import jit as conv_jit
from .timing import interleaved_medians, split_label
from .torch_ref import load_torch

WIDTHS = (32, 64, 128)


class SixConvCNN(nnx.Module):
    """[conv3x3-BN-ReLU x2, maxpool2 (loops impl)] x (32, 64, 128) -> global mean -> linear(10).

    images (N, 3, 32, 32) (NCHW) or (N, 32, 32, 3) (NHWC) -> logits (N, 10).

    Example:
      >>> import jax.numpy as jnp
      >>> SixConvCNN("lax", "NCHW", nnx.Rngs(0))(jnp.zeros((2, 3, 32, 32))).shape
      (2, 10)
    """

    def __init__(self, impl: str, data_format: str, rngs: nnx.Rngs):
        layers: list[nnx.Module] = []
        c_in = 3
        for width in WIDTHS:
            for _ in range(2):
                layers += [jnn.Conv2d(c_in, width, 3, padding=1, bias=False, impl=impl,
                                      data_format=data_format, rngs=rngs),
                           jnn.BatchNorm2d(width, data_format=data_format, rngs=rngs)]
                c_in = width
            layers.append(jnn.MaxPool2d(2, impl="loops", data_format=data_format))
        self.layers = nnx.List(layers)
        self.pool = jnn.GlobalAvgPool2d(data_format=data_format)
        self.head = nnx.Linear(c_in, 10, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, jnn.BatchNorm2d):
                x = nnx.relu(x)
        return self.head(self.pool(x))


def jax_train_step(label: str, data_format: str, batch: int) -> Any:
    """A jitted SGD(momentum) step closure for one implementation label (``"auto+eigen"``:
    ``impl="auto"`` compiled with the Eigen conv options, see ``timing.split_label``);
    returns (step_fn, compile seconds)."""
    import optax

    impl, conv_backend = split_label(label)
    model = SixConvCNN(impl, data_format, nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.01, momentum=0.9), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    rng = np.random.default_rng(0)
    shape = (batch, 3, 32, 32) if data_format == "NCHW" else (batch, 32, 32, 3)
    images = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, batch))

    def step(state: nnx.State, images: jnp.ndarray,
             labels: jnp.ndarray) -> tuple[jnp.ndarray, nnx.State]:
        model, optimizer = nnx.merge(graphdef, state)

        def loss_fn(m: SixConvCNN) -> jnp.ndarray:
            logits = m(images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss, nnx.state((model, optimizer))

    # jconv.jit rather than nnx.jit: only jax.jit takes compiler_options.
    jitted = conv_jit(step, conv_backend=conv_backend, donate_argnums=0)
    holder = [state]

    def run() -> None:
        loss, holder[0] = jitted(holder[0], images, labels)
        jax.block_until_ready(loss)

    start = time.perf_counter()
    run()  # the first call traces, compiles (and lets impl="auto" measure) and runs once
    return run, time.perf_counter() - start


def torch_train_step(torch: Any, data_format: str, batch: int) -> Any:
    """The same network and SGD step in eager PyTorch (``channels_last`` for NHWC)."""
    nn = torch.nn
    layers: list[Any] = []
    c_in = 3
    for width in WIDTHS:
        for _ in range(2):
            layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU()]
            c_in = width
        layers.append(nn.MaxPool2d(2))
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 10))
    fmt = torch.channels_last if data_format == "NHWC" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    labels = torch.randint(0, 10, (batch,))

    def run() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        opt.step()

    run()
    return run, 0.0


def run_model(impls: list[str], formats: list[str], batch: int, reps: int,
              with_torch: bool) -> list[dict[str, Any]]:
    """Median train-step time and images/s per (implementation label, format), all
    interleaved."""
    torch = load_torch() if with_torch else None
    steps: dict[tuple[str, str], Any] = {}
    for fmt in formats:
        for impl in impls:
            steps[(impl, fmt)] = jax_train_step(impl, fmt, batch)
        if torch is not None:
            steps[("torch", fmt)] = torch_train_step(torch, fmt, batch)
    med = interleaved_medians({k: v[0] for k, v in steps.items()}, reps)
    lax_ms = {fmt: med.get(("lax", fmt)) for fmt in formats}
    rows = []
    for (impl, fmt), ms in med.items():
        rows.append(dict(impl=impl, format=fmt, batch=batch, step_ms=round(ms, 2),
                         images_per_s=round(batch / (ms / 1e3), 1),
                         speedup_vs_lax=round(lax_ms[fmt] / ms, 3) if lax_ms[fmt] else "",
                         compile_s=round(steps[(impl, fmt)][1], 2)))
    return rows
