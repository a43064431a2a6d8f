"""``impl="winograd_f4x4"`` / ``impl="winograd_f2x2"``: Winograd minimal filtering for 3x3, stride-1
convolutions (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).

F(m x m, 3 x 3) computes an m x m output tile from an (m+2) x (m+2) input tile d as

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise, per channel pair)

so the per-tile channel contraction needs (m+2)^2 multiplies instead of 9 m^2:
F(2x2,3x3) ("winograd_f2x2") saves 2.25x, F(4x4,3x3) ("winograd_f4x4") 4x. The transforms are
exact in real arithmetic but their larger constants amplify rounding, F(4,3) more than
F(2,3); docs/performance.md reports the measured error per dtype. Output sizes that are not a
multiple of m are handled by padding the input on the bottom/right and cropping.

Error table (vs a float64 reference, per dtype): ``python -m jconv.bench.winograd_error --errors``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._spec import ConvSpec, accum_dtype
from ._windows import from_nhwc, pad_hw, to_nhwc

# Transform matrices (B^T, G, A^T) for interpolation points {0, 1, -1} (m=2) and
# {0, 1, -1, 2, -2} (m=4), both with the point at infinity.
_TRANSFORMS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
    2: (np.array([[1, 0, -1, 0],
                  [0, 1, 1, 0],
                  [0, -1, 1, 0],
                  [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0],
                  [1 / 2, 1 / 2, 1 / 2],
                  [1 / 2, -1 / 2, 1 / 2],
                  [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0],
                  [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0],
                  [0, -4, -4, 1, 1, 0],
                  [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0],
                  [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0],
                  [-1 / 6, -1 / 6, -1 / 6],
                  [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6],
                  [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0],
                  [0, 1, -1, 2, -2, 0],
                  [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float64)),
}

# The transforms are a handful of small constant matmuls; run them at full precision so
# accelerators that default to reduced-precision float32 matmuls do not add error there.
_HIGHEST = lax.Precision.HIGHEST


def winograd_matrices(tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T, G, A^T) of F(tile x tile, 3 x 3): shapes (a, a), (a, 3), (tile, a), a = tile+2."""
    if tile not in _TRANSFORMS:
        raise ValueError(f"tile must be one of {tuple(_TRANSFORMS)}, got {tile!r}")
    return _TRANSFORMS[tile]


def check_winograd(spec: ConvSpec, name: str) -> None:
    """Winograd here is F(m x m, 3 x 3): reject every other geometry with the argument named."""
    if spec.kernel != (3, 3):
        raise ValueError(f"impl={name!r} supports only 3x3 kernels: w must be (C_out, C_in/groups,"
                         f" 3, 3), got kernel_size (kH, kW) = {spec.kernel}; use impl='lax' or "
                         f"impl='fft'")
    if spec.stride != (1, 1):
        raise ValueError(f"impl={name!r} supports only stride=1, got stride={spec.stride}; "
                         f"use impl='lax'")
    if spec.dilation != (1, 1):
        raise ValueError(f"impl={name!r} supports only dilation=1, got dilation={spec.dilation}; "
                         f"use impl='lax'")


def _tiles(x: jnp.ndarray, axis: int, tile: int) -> jnp.ndarray:
    """Split ``axis`` (length (T+1)*tile) into T overlapping windows of tile+2, stride tile:
    the axis becomes (T, tile+2). Reshape + slices + concat, no gather: cheap to compile
    and to differentiate."""
    shape = x.shape
    blocks = x.reshape(*shape[:axis], shape[axis] // tile, tile, *shape[axis + 1:])
    head = lax.slice_in_dim(blocks, 0, blocks.shape[axis] - 1, axis=axis)
    tail = lax.slice_in_dim(lax.slice_in_dim(blocks, 1, blocks.shape[axis], axis=axis), 0, 2,
                            axis=axis + 1)
    return jnp.concatenate([head, tail], axis=axis + 1)


# One compiled computation per geometry: run eagerly, the ~50 small slices and transforms
# would each be dispatched (and compiled) on their own.
@partial(jax.jit, static_argnums=(2, 3))
def _winograd(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec, tile: int) -> jnp.ndarray:
    bt, g_mat, at = winograd_matrices(tile)
    alpha = tile + 2
    ct = accum_dtype(x.dtype)
    bt, g_mat, at = (jnp.asarray(m, ct) for m in (bt, g_mat, at))
    n, groups = x.shape[0], spec.groups
    (ho, wo), c_out, cg = spec.out_size, w.shape[0], w.shape[1]
    th, tw = -(-ho // tile), -(-wo // tile)

    # Pad to (th+1)*tile rows/cols (>= th*tile + 2 since tile >= 2): th x tw full tiles fit
    # and the surplus rows/cols, zeros, only feed outputs that are cropped at the end.
    (pt, pb), (pl, pr) = spec.padding
    extra_h = (th + 1) * tile - (spec.in_size[0] + pt + pb)
    extra_w = (tw + 1) * tile - (spec.in_size[1] + pl + pr)
    xp = pad_hw(to_nhwc(x, spec.data_format).astype(ct), ((pt, pb + extra_h), (pl, pr + extra_w)))
    d = _tiles(_tiles(xp, 1, tile), 3, tile)  # (N, th, a, tw, a, C_in)
    d = d.reshape(n, th, alpha, tw, alpha, groups, cg)

    v = jnp.einsum("ai,ntisjgc,bj->ntsabgc", bt, d, bt, precision=_HIGHEST)
    wg = w.astype(ct).reshape(groups, c_out // groups, cg, 3, 3)
    u = jnp.einsum("ai,gocij,bj->abgco", g_mat, wg, g_mat, precision=_HIGHEST)
    # The only O(C_in * C_out) work: one batched matmul per transformed-tile position (a, b).
    m = jnp.einsum("ntsabgc,abgco->ntsabgo", v, u, precision=spec.precision,
                   preferred_element_type=ct)
    y = jnp.einsum("ia,ntsabgo,jb->ntisjgo", at, m, at, precision=_HIGHEST)
    y = y.reshape(n, th * tile, tw * tile, c_out)[:, :ho, :wo]
    return from_nhwc(y.astype(x.dtype), spec.data_format)


def conv_winograd_f4x4(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """F(4x4, 3x3) Winograd conv; batched, in ``spec.data_format``, OIHW weights."""
    check_winograd(spec, "winograd_f4x4")  # outside jit: a plain traceback for the user
    return _winograd(x, w, spec, 4)


def conv_winograd_f2x2(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """F(2x2, 3x3) Winograd conv; batched, in ``spec.data_format``, OIHW weights."""
    check_winograd(spec, "winograd_f2x2")
    return _winograd(x, w, spec, 2)
