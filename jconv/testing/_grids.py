"""The conv case lists: hand-picked argument forms plus seeded random draws over the whole
space (the pooling lists are in :mod:`jconv.testing._nd_cases`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._cases import Conv2dCase, ConvTranspose2dCase

KINDS: tuple[str, ...] = ("quick", "default", "full")
_RANDOM_DRAWS = {"quick": 2, "default": 24, "full": 200}
# Random draws per kind for the transposed-conv and pooling lists (smaller spaces than conv).
_SMALL_DRAWS = {"quick": 0, "default": 8, "full": 60}

# (name, x_shape, w_shape, bias, stride, padding, dilation, groups). Together: every argument
# form conv2d accepts, and the edge shapes where implementations go wrong.
_CONV_FORMS: list[tuple[Any, ...]] = [
    ("everything", (2, 4, 9, 8), (6, 2, 3, 2), True, (2, 1), ((1, 0), (2, 1)), (1, 2), 2),
    ("basic", (2, 3, 6, 7), (4, 3, 3, 3), True, 1, 0, 1, 1),
    ("stride-int-pad-int", (2, 3, 9, 9), (4, 3, 3, 3), True, 2, 1, 1, 1),
    ("stride-pair-pad-pair", (1, 2, 10, 9), (3, 2, 3, 3), False, (1, 3), (2, 1), 1, 1),
    ("asymmetric-pad", (2, 2, 7, 8), (3, 2, 3, 3), True, 1, ((2, 0), (0, 1)), 1, 1),
    ("asymmetric-pad-strided", (2, 2, 9, 7), (2, 2, 2, 3), False, 2, ((0, 1), (2, 0)), 1, 1),
    ("valid", (2, 3, 7, 6), (2, 3, 4, 3), True, 1, "valid", 1, 1),
    ("same-odd-kernel", (2, 3, 7, 8), (4, 3, 3, 5), True, 1, "same", 1, 1),
    ("same-even-kernel", (2, 2, 6, 7), (3, 2, 2, 4), True, 1, "same", 1, 1),
    ("same-dilated", (1, 2, 8, 9), (2, 2, 2, 3), False, 1, "same", (3, 2), 1),
    ("dilation-int", (2, 2, 10, 9), (3, 2, 3, 2), True, 1, 1, 2, 1),
    ("dilation-pair-strided", (2, 2, 9, 10), (3, 2, 2, 3), True, (2, 1), 0, (1, 3), 1),
    ("groups", (2, 6, 7, 7), (9, 2, 3, 3), True, 1, 1, 1, 3),
    ("depthwise", (2, 4, 8, 7), (4, 1, 3, 3), True, 1, 1, 1, 4),
    ("depthwise-multiplier", (2, 3, 9, 8), (6, 1, 3, 2), False, (2, 1), (1, 0), 1, 3),
    ("rectangular", (1, 3, 13, 6), (4, 3, 5, 2), True, (2, 1), (2, 0), 1, 1),
    ("unbatched", (3, 7, 8), (4, 3, 3, 3), True, 1, 1, 1, 1),
    ("unbatched-same-groups", (4, 6, 6), (4, 2, 2, 2), False, 1, "same", 1, 2),
    ("output-1x1", (2, 3, 3, 3), (4, 3, 3, 3), True, 1, "valid", 1, 1),
    ("kernel-equals-padded-input", (2, 2, 4, 5), (3, 2, 6, 7), True, 1, 1, 1, 1),
    ("1x1-kernel-strided", (2, 4, 7, 8), (5, 4, 1, 1), False, 2, 0, 1, 1),
    ("stride-over-kernel", (2, 2, 11, 10), (3, 2, 2, 2), True, 3, 1, 1, 1),
    ("single-channel", (3, 1, 6, 6), (1, 1, 3, 3), True, 1, 2, 1, 1),
    ("groups-dilated-asymmetric", (1, 4, 12, 11), (4, 2, 3, 3), True, (1, 2), ((3, 1), (0, 2)),
     (3, 2), 2),
    # Realistic size: XLA:CPU turns a grouped contraction into a real batched dot only from
    # C_in/groups >= 4 and C_out/groups >= 2 on (below, into multiplies and adds), and the
    # bfloat16 one of those crashed jconv's loops (issue 21); the small forms never get there.
    ("groups-realistic-size", (8, 16, 16, 16), (32, 8, 3, 3), True, 1, 1, 1, 2),
]
# The quick list: the forms where a plausible bug shows (asymmetric and 'same' padding,
# unequal strides, dilation, grouped channels, unbatched input, the kernel filling the input).
_QUICK = ("everything", "stride-pair-pad-pair", "asymmetric-pad", "same-even-kernel",
          "dilation-pair-strided", "depthwise-multiplier", "unbatched",
          "kernel-equals-padded-input")


def _check_kind(kind: str, n: int | None, defaults: dict[str, int] = _RANDOM_DRAWS) -> int:
    """The number of random draws: ``n``, or the ``defaults`` of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise ValueError(f"n must be a non-negative int or None, got {n!r}")
    return defaults[kind] if n is None else n


def _random_pair(rng: np.random.Generator, hi: int, p_equal: float = 0.5) -> Any:
    a = int(rng.integers(1, hi + 1))
    if rng.random() < p_equal:
        return a if rng.random() < 0.5 else (a, a)
    return (a, int(rng.integers(1, hi + 1)))


def _random_conv(rng: np.random.Generator, seed: int, j: int) -> Conv2dCase:
    groups = int(rng.choice([1, 1, 1, 2, 3, 4]))
    cg = 1 if rng.random() < 0.25 else int(rng.integers(1, 4))
    c_out = groups * int(rng.integers(1, 4))
    k = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    dil = _random_pair(rng, 3, p_equal=0.6)
    stride = _random_pair(rng, 3, p_equal=0.6)
    d2 = (dil, dil) if isinstance(dil, int) else dil
    s2 = (stride, stride) if isinstance(stride, int) else stride
    forms = ["int", "pair", "asym", "valid"] + (["same"] if s2 == (1, 1) else [])
    form = forms[int(rng.integers(len(forms)))]
    p = [int(v) for v in rng.integers(0, 4, size=4)]
    padding: Any = {"int": p[0], "pair": (p[0], p[1]), "asym": ((p[0], p[1]), (p[2], p[3])),
                    "valid": "valid", "same": "same"}[form]
    tot = {"int": (2 * p[0],) * 2, "pair": (2 * p[0], 2 * p[1]),
           "asym": (p[0] + p[1], p[2] + p[3])}.get(form, (0, 0))
    hw = [max(1, d2[i] * (k[i] - 1) + 1 - tot[i]) + int(rng.integers(0, 7)) for i in range(2)]
    n = int(rng.integers(1, 4))
    x_shape = (groups * cg, *hw) if rng.random() < 0.1 else (n, groups * cg, *hw)
    return Conv2dCase(x_shape, (c_out, cg, *k), bool(rng.random() < 0.7), stride, padding,
                      dil, groups, seed=seed * 100_000 + 1000 + j, name=f"random-{j}")


def conv2d_cases(kind: str = "default", n: int | None = None, seed: int = 0) -> list[Conv2dCase]:
    """The conv2d cases of ``kind``: ``"quick"`` (8 hand-picked forms + 2 random draws),
    ``"default"`` (all 25 forms + 24 draws) or ``"full"`` (25 forms + 200 draws).

    The forms cover stride int/pair, padding int/pair/((t, b), (l, r))/'valid'/'same' with odd
    and even effective kernels, dilation, groups (depthwise, channel multipliers), bias or
    not, rectangular inputs and kernels, unbatched input, 1x1 outputs and a kernel as large
    as the padded input, and one grouped layer of realistic size ((8, 16, 16, 16) -> 32
    channels), big enough for XLA to run its grouped contraction as a real dot. ``n``
    overrides the number of random draws; ``seed`` picks them (and every case's data).

    >>> [len(conv2d_cases(k)) for k in ("quick", "default", "full")]
    [10, 49, 225]
    >>> conv2d_cases("quick")[0]
    Conv2dCase(x_shape=(2, 4, 9, 8), w_shape=(6, 2, 3, 2), bias=True, stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2), groups=2, seed=0, name='everything')
    """
    draws = _check_kind(kind, n)
    forms = [Conv2dCase(*f[1:], seed=seed * 100_000 + i, name=f[0])
             for i, f in enumerate(_CONV_FORMS) if kind != "quick" or f[0] in _QUICK]
    rng = np.random.default_rng(seed)
    return forms + [_random_conv(rng, seed, j) for j in range(draws)]


_TRANSPOSE_FORMS: list[tuple[Any, ...]] = [
    # (name, x_shape, w_shape, bias, stride, padding, output_padding, groups, dilation)
    ("basic", (2, 4, 5, 4), (4, 3, 3, 3), True, 1, 1, 0, 1, 1),
    ("upsample-2x", (2, 4, 5, 4), (4, 3, 3, 3), True, 2, 1, 1, 1, 1),
    ("rectangular-grouped", (2, 4, 5, 4), (4, 3, 3, 2), True, (2, 3), (0, 1), (1, 2), 2, (1, 2)),
    ("output-padding-below-dilation", (2, 4, 5, 4), (4, 3, 3, 3), False, 2, 0, 2, 1, 3),
    ("depthwise", (2, 4, 5, 4), (4, 1, 2, 2), True, 1, 0, 0, 4, 1),
    ("unbatched", (4, 5, 4), (4, 2, 4, 4), False, 2, 1, 0, 2, 1),
]


def conv_transpose2d_cases(kind: str = "default", n: int | None = None,
                           seed: int = 0) -> list[ConvTranspose2dCase]:
    """conv_transpose2d cases: 6 forms (stride/padding/output_padding/groups/dilation, pairs,
    unbatched) plus ``n`` random draws (default: 0 quick, 8 default, 60 full).

    >>> [len(conv_transpose2d_cases(k)) for k in KINDS]
    [3, 14, 66]
    """
    draws = _check_kind(kind, n, _SMALL_DRAWS)
    cases = [ConvTranspose2dCase(*f[1:], seed=seed * 100_000 + i, name=f[0])
             for i, f in enumerate(_TRANSPOSE_FORMS)]
    if kind == "quick":
        cases = cases[1:3] + cases[5:]
    rng = np.random.default_rng(seed + 7)
    for j in range(draws):
        groups = int(rng.choice([1, 1, 2]))
        k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        s, d = _random_pair(rng, 3), _random_pair(rng, 2)
        s2 = (s, s) if isinstance(s, int) else s
        d2 = (d, d) if isinstance(d, int) else d
        op = tuple(int(rng.integers(0, max(s2[i], d2[i]))) for i in range(2))
        # Padding crops the output; keep it where the output stays positive.
        pad = tuple(int(rng.integers(0, 2)) if d2[i] * (k[i] - 1) >= 2 else 0
                    for i in range(2))
        hw = tuple(int(rng.integers(2, 6)) for _ in range(2))
        cig = int(rng.integers(1, 3))
        cases.append(ConvTranspose2dCase((int(rng.integers(1, 3)), groups * cig, *hw),
                                         (groups * cig, int(rng.integers(1, 3)), *k),
                                         bool(rng.random() < 0.7), s, pad, op, groups, d,
                                         seed=seed * 100_000 + 1000 + j, name=f"random-{j}"))
    return cases
