"""The one conv-layer type, :class:`Layer`, and the benchmark's layer suites: CIFAR CNN,
ResNet-18 at 224x224, special-case layers, a WaveNet-style 1-D stack, a 3-D volume and
transposed (upsampling) convs in 1-D, 2-D and 3-D. ``python -m jconv.check_device`` checks its
cases as ``Layer`` s too."""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from .._spec import CONV_DATA_FORMATS, PaddingLike
from ..cost import conv_flops


@dataclass(frozen=True)
class Layer:
    """One conv layer to time or check, with ``ndim`` = 1, 2 or 3 spatial dims, each of size
    ``hw``: input (n, c_in, *[hw] * ndim) channels first (see :meth:`x_shape` for channels
    last), weights (c_out, c_in/groups, *[kernel] * ndim) in every format; ``transposed``:
    ``conv_transpose{ndim}d`` from c_in to c_out channels, weights (c_in, c_out/groups,
    *[kernel] * ndim).

    Example:
      >>> layer = Layer("demo", "3x3", n=2, c_in=4, c_out=8, hw=10, groups=2)
      >>> layer.x_shape("NHWC"), layer.w_shape
      ((2, 10, 10, 4), (8, 2, 3, 3))
      >>> [a.shape for a in layer.arrays("NCHW")]
      [(2, 4, 10, 10), (8, 2, 3, 3)]
      >>> clip = Layer("demo", "3x3x3", n=2, c_in=4, c_out=8, hw=6, ndim=3)
      >>> clip.data_format("NHWC"), clip.x_shape("NHWC"), clip.w_shape
      ('NDHWC', (2, 6, 6, 6, 4), (8, 4, 3, 3, 3))
      >>> up = Layer("demo", "up", n=2, c_in=8, c_out=4, hw=5, kernel=4, stride=2, ndim=1,
      ...            transposed=True)
      >>> up.w_shape, up.fwd_flops   # 2 * N * L * C_in * C_out * k
      ((8, 4, 4), 2560)
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
    ndim: int = 2
    transposed: bool = False

    def data_format(self, data_format: str) -> str:
        """This layer's format on the side of ``data_format`` (channels first or last, named
        for any number of dims): the bench's ``--formats NCHW,NHWC`` mean ``NCL``/``NLC`` for a
        1-D layer and ``NCDHW``/``NDHWC`` for a 3-D one."""
        return CONV_DATA_FORMATS[self.ndim][data_format.upper().endswith("C")]

    def x_shape(self, data_format: str) -> tuple[int, ...]:
        spatial = (self.hw,) * self.ndim
        if self.data_format(data_format)[1] == "C":
            return (self.n, self.c_in, *spatial)
        return (self.n, *spatial, self.c_in)

    @property
    def w_shape(self) -> tuple[int, ...]:
        if self.transposed:
            return (self.c_in, self.c_out // self.groups, *(self.kernel,) * self.ndim)
        return (self.c_out, self.c_in // self.groups, *(self.kernel,) * self.ndim)

    @property
    def conv_kwargs(self) -> dict[str, PaddingLike]:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def arrays(self, data_format: str, dtype: object = jnp.float32,
               seed: int = 0) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(x, w) from NumPy's normal generator: x standard normal in ``data_format``, w scaled
        by 1/sqrt(fan-in) so that outputs stay of order one."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(self.x_shape("NCHW"))
        if self.data_format(data_format)[1] != "C":
            x = np.moveaxis(x, 1, -1)
        w = rng.standard_normal(self.w_shape)
        return jnp.asarray(x, dtype), jnp.asarray(w / np.sqrt(w[0].size), dtype)

    @property
    def fwd_flops(self) -> int:
        """Multiply-adds x 2 of the forward pass; the backward pass is twice that (dx, dw).
        A transposed conv does the multiply-adds of the conv it transposes: every input
        element times a C_out/groups x kernel weight block."""
        if self.transposed:
            return (2 * self.n * self.hw ** self.ndim * self.c_in * (self.c_out // self.groups)
                    * self.kernel ** self.ndim)
        return conv_flops(self.x_shape("NCHW"), self.c_out, self.kernel, stride=self.stride,
                          padding=self.padding, dilation=self.dilation, groups=self.groups,
                          ndim=self.ndim)


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


def conv1d_layers(n: int) -> list[Layer]:
    """A WaveNet-style stack at length 4000: kernel-2 convs with dilations 1, 2, 4, 8 over 64
    channels, and a depthwise kernel-3 conv. ``padding="same"``, not WaveNet's causal
    left-only padding: the same work and shapes, and PyTorch's column takes no per-side
    padding."""
    return [Layer("conv1d", f"wave k2 d{d} 64 @4000", n, 64, 64, 4000, kernel=2,
                  padding="same", dilation=d, ndim=1) for d in (1, 2, 4, 8)] + [
        Layer("conv1d", "dw k3 64 @4000", n, 64, 64, 4000, groups=64, ndim=1)]


def conv3d_layers(n: int) -> list[Layer]:
    """A small video / medical volume, a 24^3 cube of 16 channels (about the voxels of a
    16x32x32 clip; a :class:`Layer` is a cube): a 3x3x3 16->16 conv and a depthwise one."""
    return [Layer("conv3d", "3x3x3 16->16 @24^3", n, 16, 16, 24, ndim=3),
            Layer("conv3d", "dw 3x3x3 16 @24^3", n, 16, 16, 24, groups=16, ndim=3)]


def transposed_layers(n: int) -> list[Layer]:
    """Decoder-style 2x upsampling, kernel 4, stride 2, padding 1 (the output exactly twice
    the input): 1-D at length 1000, 2-D at 32x32, 3-D at 12^3, and a grouped 2-D one."""
    up = dict(kernel=4, stride=2, padding=1, transposed=True)
    return [Layer("transposed", "up1d 64->32 @1000", n, 64, 32, 1000, ndim=1, **up),
            Layer("transposed", "up2d 64->32 @32", n, 64, 32, 32, **up),
            Layer("transposed", "up2d g4 64->64 @32", n, 64, 64, 32, groups=4, **up),
            Layer("transposed", "up3d 16->16 @12^3", n, 16, 16, 12, ndim=3, **up)]


SUITES = ("cifar", "resnet18", "special", "conv1d", "conv3d", "transposed")


def suite(mode: str) -> list[Layer]:
    """``"full"``: batch 128 CIFAR + batch 8 ResNet-18 + batch 32 special layers + batch 4
    1-D and batch 2 3-D layers + batch 4 transposed layers (:data:`SUITES`, in that order).
    ``"quick"``: two tiny CIFAR layers and a depthwise one at batch 4, for CI smoke runs."""
    if mode == "quick":
        return [cifar_layers(4)[0], cifar_layers(4)[3], special_layers(4)[3]]
    if mode == "full":
        return (cifar_layers(128) + resnet18_layers(8) + special_layers(32) + conv1d_layers(4)
                + conv3d_layers(2) + transposed_layers(4))
    raise ValueError(f"mode must be 'quick' or 'full', got {mode!r}")
