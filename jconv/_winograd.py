"""``impl="winograd"`` / ``impl="winograd2"``: Winograd minimal filtering for 3x3, stride-1
convolutions (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).

F(m x m, 3 x 3) computes an m x m output tile from an (m+2) x (m+2) input tile d as

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise, per channel pair)

so the per-tile channel contraction needs (m+2)^2 multiplies instead of 9 m^2:
F(2x2,3x3) ("winograd2") saves 2.25x, F(4x4,3x3) ("winograd") 4x. The transforms are
exact in real arithmetic but their larger constants amplify rounding, F(4,3) more than
F(2,3); the README reports the measured error per dtype. Output sizes that are not a
multiple of m are handled by padding the input on the bottom/right and cropping.
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp
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


def _winograd(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec, tile: int,
              name: str) -> jnp.ndarray:
    check_winograd(spec, name)
    bt, g_mat, at = winograd_matrices(tile)
    alpha = tile + 2
    ct = accum_dtype(x.dtype)
    bt, g_mat, at = (jnp.asarray(m, ct) for m in (bt, g_mat, at))
    n, groups = x.shape[0], spec.groups
    (ho, wo), c_out, cg = spec.out_hw, w.shape[0], w.shape[1]
    th, tw = -(-ho // tile), -(-wo // tile)

    # Pad so that th x tw full tiles fit; the surplus rows/cols are cropped at the end.
    (pt, pb), (pl, pr) = spec.padding
    extra_h = th * tile + 2 - (spec.in_hw[0] + pt + pb)
    extra_w = tw * tile + 2 - (spec.in_hw[1] + pl + pr)
    xp = pad_hw(to_nhwc(x, spec.data_format).astype(ct), ((pt, pb + extra_h), (pl, pr + extra_w)))

    # Overlapping alpha x alpha input tiles with stride `tile`: (N, th, tw, a, a, C_in).
    rows = [lax.slice_in_dim(xp, i, i + tile * (th - 1) + 1, tile, axis=1) for i in range(alpha)]
    d = jnp.stack([jnp.stack([lax.slice_in_dim(r, j, j + tile * (tw - 1) + 1, tile, axis=2)
                              for j in range(alpha)], axis=3) for r in rows], axis=3)
    d = d.reshape(n, th, tw, alpha, alpha, groups, cg)

    v = jnp.einsum("ai,ntsijgc,bj->ntsabgc", bt, d, bt, precision=_HIGHEST)
    wg = w.astype(ct).reshape(groups, c_out // groups, cg, 3, 3)
    u = jnp.einsum("ai,gocij,bj->abgco", g_mat, wg, g_mat, precision=_HIGHEST)
    # The only O(C_in * C_out) work: one batched matmul per transformed-tile position (a, b).
    m = jnp.einsum("ntsabgc,abgco->ntsabgo", v, u, precision=spec.precision,
                   preferred_element_type=ct)
    y = jnp.einsum("ia,ntsabgo,jb->ntisjgo", at, m, at, precision=_HIGHEST)
    y = y.reshape(n, th * tile, tw * tile, c_out)[:, :ho, :wo]
    return from_nhwc(y.astype(x.dtype), spec.data_format)


def conv_winograd(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """F(4x4, 3x3) Winograd conv; batched, in ``spec.data_format``, OIHW weights."""
    return _winograd(x, w, spec, 4, "winograd")


def conv_winograd2(x: jnp.ndarray, w: jnp.ndarray, spec: ConvSpec) -> jnp.ndarray:
    """F(2x2, 3x3) Winograd conv; batched, in ``spec.data_format``, OIHW weights."""
    return _winograd(x, w, spec, 2, "winograd2")
