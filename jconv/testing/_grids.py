"""Every case grid (hand-picked argument forms plus seeded random draws over the whole
space) and ``GRIDS``, the one table op -> (grid, case type) that every ``check_*``,
``pytest_cases`` and the CLI read."""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import numpy as np

from ._cases import (POOL_FUNCTIONS, AvgPool2dCase, Conv2dCase, ConvNdCase,
                     ConvTranspose2dCase, ConvTransposeNdCase, FoldCase, MaxPool2dCase,
                     PoolCase, UnfoldCase)
from ._oracle import conv_pads

KINDS: tuple[str, ...] = ("quick", "default", "full")
PADDING_MODES: tuple[str, ...] = ("zeros", "reflect", "replicate", "circular")
NDIMS: tuple[int, ...] = (1, 2, 3)
_RANDOM_DRAWS = {"quick": 2, "default": 24, "full": 200}
# Random draws per kind for the N-D conv, transposed-conv and 2-D pooling lists (smaller
# spaces than conv2d).
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


def _transpose_forms(ndim: int) -> list[tuple[Any, ...]]:
    """(name, x_shape, w_shape, bias, stride, padding, output_padding, groups, dilation) of
    the 1-D and 3-D transposed convs: the 2-D list's forms, unequal sizes per axis."""
    sp, k = (5, 4, 3)[:ndim], (3, 2, 2)[:ndim]
    return [
        ("basic", (2, 4, *sp), (4, 3, *k), True, 1, 1, 0, 1, 1),
        ("upsample-2x", (2, 4, *sp), (4, 3, *k), True, 2, 1, 1, 1, 1),
        ("per-dim-grouped", (2, 4, *sp), (4, 3, *k), True, (2, 3, 1)[:ndim],
         (0, 1, 1)[:ndim], (1, 2, 0)[:ndim], 2, (1, 2, 2)[:ndim]),
        ("unbatched", (4, *sp), (4, 2, *k), False, 2, 1, 0, 2, 1),
    ]


def _random_transpose(rng: np.random.Generator, ndim: int, seed: int,
                      j: int) -> ConvTransposeNdCase:
    groups = int(rng.choice([1, 1, 2]))
    k = tuple(int(v) for v in rng.integers(1, 4, ndim))
    s = tuple(int(v) for v in rng.integers(1, 3, ndim))
    d = tuple(int(v) for v in rng.integers(1, 3, ndim))
    out_pad = tuple(int(rng.integers(0, max(ss, dd))) for ss, dd in zip(s, d))
    # Padding crops the output; keep it where the output stays positive.
    pad = tuple(int(rng.integers(0, 2)) if dd * (kk - 1) >= 2 else 0 for kk, dd in zip(k, d))
    size = tuple(int(v) for v in rng.integers(2, 5, ndim))
    cig = int(rng.integers(1, 3))
    x_shape = (groups * cig, *size) if rng.random() < 0.1 else (
        int(rng.integers(1, 3)), groups * cig, *size)
    return ConvTransposeNdCase(x_shape, (groups * cig, int(rng.integers(1, 3)), *k),
                               bool(rng.random() < 0.7), s, pad, out_pad, groups, d,
                               seed=seed * 100_000 + 1000 + j, name=f"random-{j}")


def conv_transpose_cases(ndim: int = 2, kind: str = "default", n: int | None = None,
                         seed: int = 0) -> list[ConvTransposeNdCase]:
    """The transposed-conv cases of ``kind`` with ``ndim`` spatial dims: for 2,
    :func:`conv_transpose2d_cases`; for 1 and 3, 4 forms (3 for ``"quick"``) plus ``n``
    random draws (default: 0 quick, 8 default, 60 full).

    >>> [len(conv_transpose_cases(3, k)) for k in KINDS]
    [3, 12, 64]
    """
    if ndim not in NDIMS:
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")
    if ndim == 2:
        return conv_transpose2d_cases(kind, n, seed)
    draws = _check_kind(kind, n, _SMALL_DRAWS)
    forms = _transpose_forms(ndim)[1 if kind == "quick" else 0:]
    cases = [ConvTransposeNdCase(*f[1:], seed=seed * 100_000 + i, name=f[0])
             for i, f in enumerate(forms)]
    rng = np.random.default_rng(seed * 10 + ndim + 7)
    return cases + [_random_transpose(rng, ndim, seed, j) for j in range(draws)]


def _forms(ndim: int) -> list[tuple[Any, ...]]:
    """(name, x_shape, w_shape, bias, stride, padding, dilation, groups, padding_mode):
    every argument form per dim, unequal sizes per axis (an axis swap shows), and each
    padding mode with padding at both ends (a mode mixed up, or a wrap off by one, shows)."""
    sp, k = (9, 7, 6)[:ndim], (3, 2, 3)[:ndim]
    per_dim = (2, 1, 1)[:ndim]
    pairs = ((2, 1), (0, 2), (1, 0))[:ndim]
    return [
        ("everything", (2, 4, *sp), (6, 2, *k), True, per_dim, pairs, (1, 2, 1)[:ndim], 2,
         "zeros"),
        ("reflect", (2, 3, *sp), (4, 3, *k), True, 1, 2, 1, 1, "reflect"),
        ("replicate-pairs", (1, 2, *sp), (3, 2, *k), False, 1, pairs, 1, 1, "replicate"),
        ("circular-same", (2, 2, *sp), (2, 1, *k), True, 1, "same", (2, 1, 1)[:ndim], 2,
         "circular"),
        ("circular-wraps-whole", (1, 2, *(3, 3, 2)[:ndim]), (2, 2, *(3, 2, 2)[:ndim]), True,
         1, (3, 3, 2)[:ndim], 1, 1, "circular"),
        ("reflect-strided-dilated", (2, 2, *sp), (3, 2, *k), True, per_dim,
         (1, 2, 1)[:ndim], (2, 1, 2)[:ndim], 1, "reflect"),
        ("valid-depthwise", (2, 3, *sp), (6, 1, *k), False, 1, "valid", 1, 3, "zeros"),
        ("unbatched-replicate", (2, *sp), (4, 2, *k), True, 1, 1, 1, 1, "replicate"),
    ]


def _random_case(rng: np.random.Generator, ndim: int, seed: int, j: int,
                 modes: Sequence[str]) -> ConvNdCase:
    groups = int(rng.choice([1, 1, 2, 3]))
    cg, c_out = int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    k = tuple(int(v) for v in rng.integers(1, 4 if ndim < 3 else 3, ndim))
    d = tuple(int(v) for v in rng.integers(1, 3, ndim))
    s = tuple(int(v) for v in rng.integers(1, 3, ndim)) if rng.random() < 0.5 else (1,) * ndim
    mode = str(rng.choice(list(modes)))
    forms = ["int", "tuple", "pairs", "valid"] + (["same"] if s == (1,) * ndim else [])
    form = str(rng.choice(forms))
    p = [int(v) for v in rng.integers(0, 3, 2 * ndim)]
    padding: Any = {"int": p[0], "tuple": tuple(p[:ndim]), "valid": "valid", "same": "same",
                    "pairs": tuple((p[2 * i], p[2 * i + 1]) for i in range(ndim))}[form]
    pads = conv_pads(padding, k, d, s)
    # Big enough for the kernel and for reflect padding (< the size).
    size = tuple(max(dd * (kk - 1) + 1 - lo - hi, max(lo, hi) + 1) + int(rng.integers(0, 3))
                 for kk, dd, (lo, hi) in zip(k, d, pads))
    n = int(rng.integers(1, 3))
    x_shape = (groups * cg, *size) if rng.random() < 0.1 else (n, groups * cg, *size)
    return ConvNdCase(x_shape, (c_out, cg, *k), bool(rng.random() < 0.7), s, padding, d,
                      groups, mode, seed=seed * 100_000 + 1000 + j, name=f"random-{j}")


def conv_cases(ndim: int = 2, kind: str = "default", n: int | None = None, seed: int = 0,
               padding_modes: Sequence[str] = PADDING_MODES) -> list[ConvNdCase]:
    """The N-D conv cases of ``kind`` (``ndim`` spatial dims): ``"quick"`` (4 hand-picked
    forms, no draws), ``"default"`` (8 forms + 8 random draws) or ``"full"`` (8 + 60),
    keeping only those whose ``padding_mode`` is in ``padding_modes``.

    >>> [len(conv_cases(1, k)) for k in ("quick", "default", "full")]
    [4, 16, 68]
    >>> conv_cases(3, "quick")[0].w_shape
    (6, 2, 3, 2, 3)
    """
    if ndim not in NDIMS:
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim!r}")
    bad = [m for m in padding_modes if m not in PADDING_MODES]
    if bad or not padding_modes or isinstance(padding_modes, str):
        raise ValueError(f"padding_modes must be a non-empty sequence of {PADDING_MODES}, "
                         f"got {padding_modes!r}")
    draws = _check_kind(kind, n, _SMALL_DRAWS)
    forms = _forms(ndim)[:4] if kind == "quick" else _forms(ndim)
    cases = [ConvNdCase(*f[1:], seed=seed * 100_000 + i, name=f[0])
             for i, f in enumerate(forms) if f[8] in padding_modes]
    rng = np.random.default_rng(seed * 10 + ndim)
    return cases + [_random_case(rng, ndim, seed, j, padding_modes) for j in range(draws)]


_COUNTS = {"quick": 3, "default": 6, "full": 16}


_MAX_FORMS: list[tuple[Any, ...]] = [
    # (name, x_shape, kernel_size, stride, padding, dilation, ceil_mode)
    ("2x2", (2, 3, 7, 9), 2, None, 0, 1, False),
    ("3x3-s2-p1", (2, 3, 7, 9), 3, 2, 1, 1, False),
    ("rect-ceil", (2, 3, 7, 9), (3, 2), (2, 1), (1, 0), 1, True),
    ("dilated-ceil", (2, 3, 7, 9), 3, 2, 1, (2, 1), True),
    ("rect-strides-dilated", (2, 3, 7, 9), (2, 3), (3, 2), (0, 1), (1, 2), True),
    ("unbatched-overlap", (3, 8, 8), 3, 1, 0, 1, False),
]
_AVG_FORMS: list[tuple[Any, ...]] = [
    # (name, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad)
    ("2x2", (2, 3, 7, 9), 2, None, 0, False, True),
    ("3x3-s2-p1", (2, 3, 7, 9), 3, 2, 1, False, True),
    ("3x3-s2-p1-exclude-pad", (2, 3, 7, 9), 3, 2, 1, False, False),
    ("rect-ceil", (2, 3, 7, 9), (3, 2), (2, 1), 1, True, True),
    ("rect-ceil-exclude-pad", (2, 3, 7, 9), (3, 2), (2, 1), 1, True, False),
    ("unbatched-strides", (3, 7, 9), (2, 3), (3, 2), (1, 0), True, True),
]


def _pool_draw(rng: np.random.Generator) -> tuple[Any, ...]:
    k = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    s = _random_pair(rng, 3)
    pad = (int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1)))
    hw = (int(rng.integers(k[0] * 2, 10)), int(rng.integers(k[1] * 2, 10)))
    return (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *hw), k, s, pad


def max_pool2d_cases(kind: str = "default", n: int | None = None,
                     seed: int = 0) -> list[MaxPool2dCase]:
    """max_pool2d cases: 6 forms (stride default/int/pair, padding, dilation, ceil mode,
    unbatched) plus ``n`` random draws (default: 0 quick, 8 default, 60 full).

    >>> [len(max_pool2d_cases(k)) for k in KINDS]
    [6, 14, 66]
    """
    draws = _check_kind(kind, n, _SMALL_DRAWS)
    cases = [MaxPool2dCase(*f[1:], seed=seed * 100_000 + i, name=f[0])
             for i, f in enumerate(_MAX_FORMS)]
    rng = np.random.default_rng(seed + 11)
    for j in range(draws):
        x_shape, k, s, pad = _pool_draw(rng)
        d = (int(rng.integers(1, 3)), 1)
        cases.append(MaxPool2dCase(x_shape, k, s, pad, d, bool(rng.random() < 0.5),
                                   seed=seed * 100_000 + 1000 + j, name=f"random-{j}"))
    return cases


def avg_pool2d_cases(kind: str = "default", n: int | None = None,
                     seed: int = 0) -> list[AvgPool2dCase]:
    """avg_pool2d cases: 6 forms (stride default/int/pair, padding, ceil mode,
    ``count_include_pad`` both ways, unbatched) plus ``n`` random draws (0/8/60).

    >>> [len(avg_pool2d_cases(k)) for k in KINDS]
    [6, 14, 66]
    """
    draws = _check_kind(kind, n, _SMALL_DRAWS)
    cases = [AvgPool2dCase(*f[1:], seed=seed * 100_000 + i, name=f[0])
             for i, f in enumerate(_AVG_FORMS)]
    rng = np.random.default_rng(seed + 13)
    for j in range(draws):
        x_shape, k, s, pad = _pool_draw(rng)
        cases.append(AvgPool2dCase(x_shape, k, s, pad, bool(rng.random() < 0.5),
                                   bool(rng.random() < 0.5), seed=seed * 100_000 + 1000 + j,
                                   name=f"random-{j}"))
    return cases


def _draw_pool(function: str, rng: np.random.Generator, seed: int, index: int) -> PoolCase:
    nd = int(function[-2])
    kind = function[:-2]
    high = 6 if nd == 3 else 10  # bfloat16 holds distinct integers only up to 512
    size = tuple(int(v) for v in rng.integers(3, high, nd))
    channels = 2
    # Every third case is unbatched (C, *spatial).
    x_shape = (channels, *size) if index % 3 == 2 else (2, channels, *size)
    k = tuple(int(v) for v in rng.integers(1, 4, nd))
    common = dict(function=function, x_shape=x_shape, seed=seed + index,
                  name=f"{function} #{index}")
    if kind.startswith("adaptive"):
        out = [int(v) for v in rng.integers(1, 6, nd)]
        if index % 4 == 3 and nd > 1:  # PyTorch's 1-D adaptive pools take no None
            out[0] = None  # type: ignore[call-overload]  # None keeps that input size
        return PoolCase(**common, output_size=tuple(out))
    stride = None if index % 3 == 0 else tuple(int(v) for v in rng.integers(1, 4, nd))
    ceil_mode = bool(index % 2)
    if kind == "lp_pool":
        return PoolCase(**common, kernel_size=k, stride=stride, ceil_mode=ceil_mode,
                        norm_type=float(rng.choice([1.0, 2.0, 3.0, 1.5])))
    padding = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
    if kind == "max_pool":
        return PoolCase(**common, kernel_size=k, stride=stride, padding=padding,
                        dilation=tuple(int(v) for v in rng.integers(1, 3, nd)),
                        ceil_mode=ceil_mode)
    divisor = int(rng.integers(1, 5)) if nd > 1 and index % 4 == 1 else None
    return PoolCase(**common, kernel_size=k, stride=stride, padding=padding,
                    ceil_mode=ceil_mode, count_include_pad=bool(index % 3 != 1),
                    divisor_override=divisor)


def pool_cases(function: str, kind: str = "default", n: int | None = None, *,
               seed: int = 0) -> list[PoolCase]:
    """Random valid configurations of ``function`` (e.g. ``"max_pool3d"``) over its whole
    argument space: kernel, stride (and its default), padding up to half the kernel,
    dilation, ceil_mode, count_include_pad, divisor_override, norm_type, output sizes with
    ``None``, batched and unbatched. ``kind``: ``"quick"``, ``"default"`` or ``"full"``
    (counts below); ``n`` overrides the count. This is the grid ``check_pool`` runs for
    every function but ``max_pool2d`` and ``avg_pool2d``, whose grids are
    :func:`max_pool2d_cases` and :func:`avg_pool2d_cases` (hand-picked forms first); for
    those two, these are extra random configurations to pass as ``cases=``.

    >>> [len(pool_cases("max_pool1d", k)) for k in KINDS]
    [3, 6, 16]
    >>> [c.x_shape for c in pool_cases("max_pool1d", "quick")]
    [(2, 2, 8), (2, 2, 5), (2, 4)]
    """
    if function not in POOL_FUNCTIONS:
        raise ValueError(f"function must be one of {POOL_FUNCTIONS}, got {function!r}")
    count = _check_kind(kind, n, _COUNTS)
    rng = np.random.default_rng(seed)
    cases: list[PoolCase] = []
    while len(cases) < count:
        case = _draw_pool(function, rng, seed, len(cases))
        try:  # a draw whose window does not fit is not a valid call: draw again
            case.reference(*case.inputs())
        except ValueError:
            continue
        cases.append(case)
    return cases


def _block_draws(kind: str, n: int | None,
                 seed: int) -> list[tuple[int, tuple[int, ...], dict[str, Any]]]:
    """(index, image (H, W), block arguments) for the unfold/fold grids: random kernels,
    dilations, paddings and strides, redrawn until at least one block fits."""
    count = _check_kind(kind, n, _COUNTS)
    rng = np.random.default_rng(seed)
    draws: list[tuple[int, tuple[int, ...], dict[str, Any]]] = []
    while len(draws) < count:
        size = tuple(int(v) for v in rng.integers(3, 9, 2))
        kw = dict(kernel_size=tuple(int(v) for v in rng.integers(1, 4, 2)),
                  dilation=tuple(int(v) for v in rng.integers(1, 3, 2)),
                  padding=tuple(int(v) for v in rng.integers(0, 3, 2)),
                  stride=tuple(int(v) for v in rng.integers(1, 4, 2)))
        if all(n + 2 * p - d * (k - 1) - 1 >= 0 for n, k, d, p in
               zip(size, kw["kernel_size"], kw["dilation"], kw["padding"])):
            draws.append((len(draws), size, kw))
    return draws


def unfold_cases(kind: str = "default", n: int | None = None, *,
                 seed: int = 0) -> list[UnfoldCase]:
    """Random valid ``unfold`` configurations (overlapping and gapped blocks, dilation,
    padding, rectangular kernels), every third unbatched; counts as :func:`pool_cases`.

    >>> [len(unfold_cases(k)) for k in KINDS]
    [3, 6, 16]
    """
    return [UnfoldCase((2, *size) if i % 3 == 2 else (2, 2, *size), **kw, seed=seed + i,
                       name=f"unfold #{i}") for i, size, kw in _block_draws(kind, n, seed)]


def fold_cases(kind: str = "default", n: int | None = None, *,
               seed: int = 0) -> list[FoldCase]:
    """Random valid ``fold`` configurations (as :func:`unfold_cases`), every third
    unbatched.

    >>> [c.batch for c in fold_cases("quick")]
    [2, 2, None]
    """
    return [FoldCase(size, 2, **kw, batch=None if i % 3 == 2 else 2, seed=seed + i,
                     name=f"fold #{i}") for i, size, kw in _block_draws(kind, n, seed)]


# op -> (its grid, grid(kind, n=None, seed=0) -> cases; the type its cases have). The one
# table: every check_<op> (check_conv(ndim=1/3), check_conv_transpose, check_pool(fn, op)),
# pytest_cases(op=op) and the CLI read it, so a case list, its documented counts and the check
# that takes it cannot disagree. conv2d is torch.nn.functional.conv2d (zero padding;
# check_conv(ndim=2), for ConvNd's padding modes, runs conv_cases(2)). The 2-D max and avg
# pools have hand-picked forms besides random draws: those grids are theirs under either name
# (MaxPool2dCase and AvgPool2dCase are PoolCases).
GRIDS: dict[str, tuple[Callable[..., list[Any]], type]] = {
    "conv1d": (functools.partial(conv_cases, 1), ConvNdCase),
    "conv2d": (conv2d_cases, Conv2dCase),
    "conv3d": (functools.partial(conv_cases, 3), ConvNdCase),
    "conv_transpose1d": (functools.partial(conv_transpose_cases, 1), ConvTransposeNdCase),
    "conv_transpose2d": (conv_transpose2d_cases, ConvTranspose2dCase),
    "conv_transpose3d": (functools.partial(conv_transpose_cases, 3), ConvTransposeNdCase),
    **{f: (functools.partial(pool_cases, f), PoolCase) for f in POOL_FUNCTIONS},
    "max_pool2d": (max_pool2d_cases, PoolCase),
    "avg_pool2d": (avg_pool2d_cases, PoolCase),
    "unfold": (unfold_cases, UnfoldCase),
    "fold": (fold_cases, FoldCase),
}
