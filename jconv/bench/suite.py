"""The one conv-layer type, :class:`Layer`, and the benchmark's layer suites: CIFAR CNN,
ResNet-18 at 224x224, and special-case layers. ``python -m jconv.check_device`` checks its
cases as ``Layer`` s too."""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from .._spec import PaddingLike
from ..cost import conv2d_flops


@dataclass(frozen=True)
class Layer:
    """One conv layer to time or check: input (n, c_in, hw, hw) in NCHW terms (see
    :meth:`x_shape` for NHWC), weights OIHW (c_out, c_in/groups, kernel, kernel).

    Example:
      >>> layer = Layer("demo", "3x3", n=2, c_in=4, c_out=8, hw=10, groups=2)
      >>> layer.x_shape("NHWC"), layer.w_shape
      ((2, 10, 10, 4), (8, 2, 3, 3))
      >>> [a.shape for a in layer.arrays("NCHW")]
      [(2, 4, 10, 10), (8, 2, 3, 3)]
    """

    suite: str
    name: str
    n: int
    c_in: int
    c_out: int
    hw: int
    kernel: int = 3
    stride: int = 1
    padding: PaddingLike = 1
    dilation: int = 1
    groups: int = 1

    def x_shape(self, data_format: str) -> tuple[int, int, int, int]:
        if data_format == "NCHW":
            return (self.n, self.c_in, self.hw, self.hw)
        return (self.n, self.hw, self.hw, self.c_in)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.c_out, self.c_in // self.groups, self.kernel, self.kernel)

    @property
    def conv_kwargs(self) -> dict[str, PaddingLike]:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def arrays(self, data_format: str, dtype: object = jnp.float32,
               seed: int = 0) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(x, w) from NumPy's normal generator: x standard normal in ``data_format``, w scaled
        by 1/sqrt(fan-in) so that outputs stay of order one."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.n, self.c_in, self.hw, self.hw))
        if data_format == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        w = rng.standard_normal(self.w_shape)
        return jnp.asarray(x, dtype), jnp.asarray(w / np.sqrt(w[0].size), dtype)

    @property
    def fwd_flops(self) -> int:
        """Multiply-adds x 2 of the forward pass; the backward pass is twice that (dx, dw)."""
        return conv2d_flops((self.n, self.c_in, self.hw, self.hw), self.c_out, self.kernel,
                            stride=self.stride, padding=self.padding, dilation=self.dilation,
                            groups=self.groups)


def cifar_layers(n: int) -> list[Layer]:
    """The six 3x3 convs of a 32/64/128 two-convs-per-stage CIFAR CNN (pool after a stage)."""
    spec = [(3, 32, 32), (32, 32, 32), (32, 64, 16), (64, 64, 16), (64, 128, 8), (128, 128, 8)]
    return [Layer("cifar", f"c{i + 1} {ci}->{co} @{hw}", n, ci, co, hw)
            for i, (ci, co, hw) in enumerate(spec)]


def resnet18_layers(n: int) -> list[Layer]:
    """One conv of each distinct shape in ResNet-18 at 224x224 (stem, 3x3 stages, strided)."""
    return [
        Layer("resnet18", "stem 7x7/2 3->64 @224", n, 3, 64, 224, kernel=7, stride=2, padding=3),
        Layer("resnet18", "l1 64->64 @56", n, 64, 64, 56),
        Layer("resnet18", "l2 64->128 /2 @56", n, 64, 128, 56, stride=2),
        Layer("resnet18", "l2 128->128 @28", n, 128, 128, 28),
        Layer("resnet18", "l3 256->256 @14", n, 256, 256, 14),
        Layer("resnet18", "l4 512->512 @7", n, 512, 512, 7),
    ]


def special_layers(n: int) -> list[Layer]:
    """Strided, dilated, grouped and depthwise layers."""
    return [
        Layer("special", "strided 64->64 /2 @32", n, 64, 64, 32, stride=2),
        Layer("special", "dilated 64->64 d2 @32", n, 64, 64, 32, padding=2, dilation=2),
        Layer("special", "grouped g4 64->64 @32", n, 64, 64, 32, groups=4),
        Layer("special", "depthwise 64 @32", n, 64, 64, 32, groups=64),
    ]


def suite(mode: str) -> list[Layer]:
    """``"full"``: batch 128 CIFAR + batch 8 ResNet-18 + batch 32 special layers.
    ``"quick"``: two tiny CIFAR layers and a depthwise one at batch 4, for CI smoke runs."""
    if mode == "quick":
        return [cifar_layers(4)[0], cifar_layers(4)[3], special_layers(4)[3]]
    if mode == "full":
        return cifar_layers(128) + resnet18_layers(8) + special_layers(32)
    raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")
