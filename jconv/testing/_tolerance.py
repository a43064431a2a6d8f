"""Tolerance modes: ``"pytorch"`` (the default) holds half precisions to a float32-accumulated
result rounded once, as PyTorch computes it; ``"half-sum"`` also accepts a bias gradient
summed in the half precision itself, within the bound :func:`half_sum_tolerance` derives."""

from __future__ import annotations

import numpy as np

TOLERANCE_MODES: tuple[str, ...] = ("pytorch", "half-sum")
# Unit roundoff u = 2**-p of round-to-nearest with a p-bit significand.
UNIT_ROUNDOFF: dict[str, float] = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}
# lambda of the probabilistic bound: a channel exceeds it with probability at most
# 2 exp(-lambda**2 / 2) = 7.5e-6 under the model, so a whole "full" run (a few thousand
# channels) is very unlikely to fail by chance.
HALF_SUM_LAMBDA = 5.0


def half_sum_tolerance(ct: np.ndarray, db: np.ndarray, dtype: str,
                       channel_axis: int) -> float | None:
    """How far a bias gradient summed in ``dtype`` may be from the exact ``db``, in the
    checks' error measure (divided by ``max(1, max|db|)``); ``None`` unless ``dtype`` is a
    half precision.

    ``db[c]`` sums the cotangent ``ct`` over every axis but ``channel_axis``: M terms
    (M = N * H_out * W_out for conv2d). Summed one term after another in precision u, the
    computed sum is off by ``e = sum_k delta_k * s_k`` to first order, where ``s_k`` are the
    partial sums (k = 2..M) and ``|delta_k| <= u`` the rounding errors. Modelling the
    ``delta_k`` as independent with mean zero (Higham & Mary, "A new approach to
    probabilistic rounding error analysis", SIAM J. Sci. Comput. 2019), Hoeffding's
    inequality gives ``|e| <= lambda * u * sqrt(sum_k s_k**2)`` with probability at least
    ``1 - 2 exp(-lambda**2 / 2)``; lambda = :data:`HALF_SUM_LAMBDA`. The partial sums are
    taken in row-major order (a sequential loop's); a pairwise or blocked sum has smaller
    ones. The bound is the largest over the channels.

    >>> ct = np.ones((1, 2, 4, 4))  # 16 ones per channel: partial sums 2, 3, ..., 16
    >>> round(half_sum_tolerance(ct, ct.sum(axis=(0, 2, 3)), "bfloat16", 1), 4)
    0.0472
    """
    u = UNIT_ROUNDOFF.get(dtype)
    if u is None:
        return None
    terms = np.moveaxis(ct, channel_axis, 0).reshape(ct.shape[channel_axis], -1)
    partial = np.cumsum(terms, axis=1)[:, 1:]
    spread = float(np.sqrt((partial ** 2).sum(axis=1)).max(initial=0.0))
    return HALF_SUM_LAMBDA * u * spread / max(1.0, float(np.abs(db).max(initial=0.0)))
