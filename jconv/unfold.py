"""``unfold`` (sliding blocks -> columns) and ``fold`` (columns -> image, overlaps summed),
``torch.nn.functional.unfold``/``fold`` semantics. ``fold`` is the exact linear transpose of
``unfold`` (``jax.linear_transpose``), so the two can never disagree about block order."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ._spec import IntOrPair, Pair, _check_float, prod, to_tuple
from ._spec import output_size as blocks_along
from ._windows import pad_hw, tap_windows


@dataclass(frozen=True)
class _Blocks:
    """The sliding-block geometry of one (H, W) image."""

    kernel: Pair
    dilation: Pair
    padding: Pair
    stride: Pair
    size: Pair
    blocks: Pair

    def describe(self) -> str:
        return (f"kernel_size={self.kernel}, dilation={self.dilation}, "
                f"padding={self.padding}, stride={self.stride}")


def _blocks(size: Pair, kernel_size: IntOrPair, dilation: IntOrPair, padding: IntOrPair,
            stride: IntOrPair, what: str) -> _Blocks:
    k = to_tuple(kernel_size, "kernel_size", 2, minimum=1, broadcast=False)
    d = to_tuple(dilation, "dilation", 2, minimum=1, broadcast=False)
    p = to_tuple(padding, "padding", 2, minimum=0, broadcast=False)
    s = to_tuple(stride, "stride", 2, minimum=1, broadcast=False)
    blocks = tuple(blocks_along(n, kk, ss, (pp, pp), dd)
                   for n, kk, ss, pp, dd in zip(size, k, s, p, d))
    geo = _Blocks(k, d, p, s, size, blocks)  # type: ignore[arg-type]
    if min(blocks) < 1:
        raise ValueError(f"no sliding block fits: {what} {size} with {geo.describe()} gives "
                         f"{blocks} blocks per (H, W); each must be at least 1")
    return geo


def _unfold(x: jnp.ndarray, geo: _Blocks) -> jnp.ndarray:
    """(N, C, H, W) -> (N, C*kH*kW, L): taps row-major inside each channel, as PyTorch."""
    # Each channel as its own one-channel channels-last image: (N*C, H, W, 1) is a free
    # reshape, and stacking its tap windows on axis 1 gives PyTorch's row order (c, tap).
    xp = pad_hw(x.reshape(-1, *x.shape[2:], 1), tuple((p, p) for p in geo.padding))
    cols = jnp.stack(list(tap_windows(xp, geo.kernel, geo.stride, geo.dilation, geo.blocks)),
                     axis=1)
    return cols.reshape(x.shape[0], x.shape[1] * prod(geo.kernel), prod(geo.blocks))


def unfold(x: jnp.ndarray, kernel_size: IntOrPair, dilation: IntOrPair = 1,
           padding: IntOrPair = 0, stride: IntOrPair = 1) -> jnp.ndarray:
    """Extract sliding blocks as columns, ``torch.nn.functional.unfold`` semantics.

    x: (N, C, H, W) or (C, H, W) -> (N, C*kH*kW, L) or (C*kH*kW, L), with

      L = prod_d ((size_d + 2*padding_d - dilation_d*(k_d-1) - 1) // stride_d + 1)

    Row ``c*kH*kW + i*kW + j`` holds tap (i, j) of channel c; column ``l`` is the block at
    (l // W_blocks, l % W_blocks). Zero padding. ``conv2d(x, w)`` equals
    ``w.reshape(C_out, -1) @ unfold(x, k)`` reshaped.

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.arange(9.0).reshape(1, 1, 3, 3)
      >>> jconv.unfold(x, 2)[0].tolist()
      [[0.0, 1.0, 3.0, 4.0], [1.0, 2.0, 4.0, 5.0], [3.0, 4.0, 6.0, 7.0], [4.0, 5.0, 7.0, 8.0]]
    """
    _check_float(x, "x")
    if x.ndim not in (3, 4) or 0 in x.shape[-3:]:
        raise ValueError("x must be 4-D (N, C, H, W) or 3-D (C, H, W) with non-zero C, H, W, "
                         f"got shape {tuple(x.shape)}")
    geo = _blocks(tuple(x.shape[-2:]), kernel_size, dilation, padding, stride,  # type: ignore[arg-type]
                  "input (H, W)")
    if x.ndim == 3:
        return _unfold(x[None], geo)[0]
    return _unfold(x, geo)


def fold(cols: jnp.ndarray, output_size: IntOrPair, kernel_size: IntOrPair,
         dilation: IntOrPair = 1, padding: IntOrPair = 0, stride: IntOrPair = 1) -> jnp.ndarray:
    """Sum columns of sliding blocks back into an image, ``torch.nn.functional.fold``
    semantics: the linear transpose of :func:`unfold`, so overlapping blocks add up.

    cols: (N, C*kH*kW, L) or (C*kH*kW, L) -> (N, C, H, W) or (C, H, W) with
    ``(H, W) = output_size``; ``L`` must be the number of blocks :func:`unfold` gives for
    ``output_size``, and the second-to-last dim a multiple of ``kH*kW``.

    Example (2x2 blocks with stride 1 overlap: the centre pixel is in all four):
      >>> import jax.numpy as jnp, jconv
      >>> jconv.fold(jnp.ones((1, 4, 4)), (3, 3), 2)[0, 0].tolist()
      [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """
    _check_float(cols, "cols")
    if cols.ndim not in (2, 3) or 0 in cols.shape[-2:]:
        raise ValueError("cols must be 3-D (N, C*kH*kW, L) or 2-D (C*kH*kW, L) with non-zero "
                         f"C*kH*kW and L, got shape {tuple(cols.shape)}")
    size = to_tuple(output_size, "output_size", 2, minimum=1, broadcast=False)
    geo = _blocks(size, kernel_size, dilation, padding, stride, "output_size")
    rows, length = cols.shape[-2:]
    taps = prod(geo.kernel)
    if rows % taps:
        raise ValueError(f"cols.shape[-2] = {rows} must be divisible by the product of "
                         f"kernel_size {geo.kernel} = {taps}")
    if length != prod(geo.blocks):
        raise ValueError(f"cols.shape[-1] = {length} must equal the number of sliding blocks, "
                         f"{geo.blocks[0]} * {geo.blocks[1]} = {prod(geo.blocks)}, for "
                         f"output_size={size} with {geo.describe()}")
    batched = cols if cols.ndim == 3 else cols[None]
    image = jax.ShapeDtypeStruct((batched.shape[0], rows // taps, *size), cols.dtype)
    (y,) = jax.linear_transpose(lambda x: _unfold(x, geo), image)(batched)
    return y if cols.ndim == 3 else y[0]
