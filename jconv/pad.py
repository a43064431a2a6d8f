"""``jconv.pad``: ``torch.nn.functional.pad`` in JAX (constant, reflect, replicate and
circular padding of the trailing dims; negative pads crop).

The padding itself is ``lax.pad`` (constant; it crops for negative pads too) and ``jnp.pad``
(the other modes, under the names the convolutions' ``padding_mode`` uses); this module adds
PyTorch's argument rules, so whatever PyTorch rejects is a ValueError or TypeError here.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from ._spec import _is_int, check_mode_padding
from ._windows import _JNP_PAD_MODES
from .conv import _as_array

PAD_MODES: tuple[str, ...] = ("constant", "reflect", "replicate", "circular")


def _check_pad(pad: object, ndim: int) -> list[tuple[int, int]]:
    """The (left, right) pairs of ``pad``, the last dim's first, validated for an ``ndim``-D
    input."""
    if not isinstance(pad, (tuple, list)) or not all(_is_int(p) for p in pad):
        raise TypeError(f"pad must be a tuple or list of ints ((left, right) pairs from the "
                        f"last dim), got {pad!r}")
    if len(pad) % 2:
        raise ValueError(f"pad must have an even length ((left, right) pairs from the last "
                         f"dim), got {len(pad)} values {tuple(pad)}")
    if len(pad) > 2 * ndim:
        raise ValueError(f"pad pads {len(pad) // 2} dims but input has {ndim}: len(pad) must "
                         f"be <= 2 * input.ndim = {2 * ndim}, got pad={tuple(pad)}")
    return [(int(pad[i]), int(pad[i + 1])) for i in range(0, len(pad), 2)]


def _check_mode_and_value(mode: object, value: object) -> str:
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, one of {PAD_MODES}, got {mode!r}")
    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}")
    is_scalar_array = hasattr(value, "shape") and hasattr(value, "dtype") and value.shape == ()
    if not (value is None or isinstance(value, numbers.Number) or is_scalar_array):
        raise TypeError(f"value must be a number (or a 0-d array) or None, got {value!r}")
    if mode != "constant" and value is not None and not (
            isinstance(value, numbers.Number) and value == 0):
        raise ValueError(f"mode={mode!r} takes no value (only 'constant' padding fills with "
                         f"one; PyTorch allows 0 or None), got value={value!r}")
    return mode


def _check_mode_rank(mode: str, shape: tuple[int, ...], n: int) -> None:
    """PyTorch's ranks for reflect/replicate/circular: the last 1, 2 or 3 dims of an input
    with one channel dim, or a batch and a channel dim, in front of them."""
    if n not in (1, 2, 3) or len(shape) not in (n + 1, n + 2):
        raise ValueError(f"mode={mode!r} supports len(pad) 2 with a 2-D or 3-D input, 4 with "
                         f"a 3-D or 4-D input, 6 with a 4-D or 5-D input (PyTorch rule), got "
                         f"len(pad)={2 * n} for a {len(shape)}-D input of shape {shape}")
    if mode != "circular" and 0 in shape[len(shape) - n - 1:]:
        raise ValueError(f"mode={mode!r} needs a non-empty input in every dim except the batch "
                         f"dim of a {n + 2}-D input (PyTorch rule), got shape {shape}")


def _check_sizes(mode: str, shape: tuple[int, ...], pads: Sequence[tuple[int, int]],
                 axes: Sequence[int]) -> None:
    """Each padded dim's output size is one PyTorch can make, in ``mode``."""
    for (lo, hi), d in zip(pads, axes):
        size = shape[d]
        out, cropped = size + lo + hi, size + min(lo, 0) + min(hi, 0)
        got = f"got pad ({lo}, {hi}) for dim {d} of size {size}"
        if mode == "constant" and cropped < 0:
            raise ValueError(f"negative pads may crop at most the whole dim (PyTorch rule), "
                             f"{got}")
        if mode in ("reflect", "replicate") and out < 1:
            raise ValueError(f"mode={mode!r} needs an output size >= 1 (PyTorch rule), {got}, "
                             f"which gives size {out}")
        if mode == "circular" and out < 0:
            raise ValueError(f"mode='circular' needs an output size >= 0 (PyTorch rule), {got}, "
                             f"which gives size {out}")
        if mode == "circular" and max(lo, hi) > cropped:
            raise ValueError(f"mode='circular' wraps the input its negative pads leave, so each "
                             f"pad must be <= that size, {got} ({max(cropped, 0)} after "
                             f"cropping)")


def pad(input: ArrayLike, pad: Sequence[int], mode: str = "constant",
        value: float | ArrayLike | None = None) -> jnp.ndarray:
    """Pad (negative values: crop) the last ``len(pad) // 2`` dims of ``input``, with
    ``torch.nn.functional.pad``'s signature and semantics.

    ``pad`` is flat (left, right) pairs starting from the LAST dim: ``(left, right)`` pads
    W, ``(left, right, top, bottom)`` pads W and H, ``(left, right, top, bottom, front,
    back)`` W, H and D. Shapes, e.g. with four values:

      input (*, H, W) -> output (*, H + top + bottom, W + left + right)

    and in general each padded dim of size S becomes S + its left + its right pad.

    Modes (PyTorch's rules, each broken rule a ValueError or TypeError naming the argument):
      ``"constant"``: fill with ``value`` (default 0, cast to the input's dtype); any number
        of dims (``len(pad) // 2 <= input.ndim``); a negative pad may crop at most the dim.
      ``"reflect"``: mirror at the edge without repeating it; each pad < the dim's size.
      ``"replicate"``: repeat the edge element.
      ``"circular"``: wrap around; each pad <= the dim's size. Negative pads crop first
        and the wrap copies what is left, so a pad must also be <= that cropped size.
      The last three pad 1, 2 or 3 trailing dims (len(pad) 2, 4 or 6) of an input with one
      or two more dims ((C, *) or (N, C, *)), take no ``value`` (0 or None), and give sizes
      >= 1 (circular: >= 0); reflect and replicate need every dim but N non-empty.

    Differentiable to any order and jit-able (``pad`` and ``mode`` are static Python
    values; ``value`` may be a traced 0-d array).

    Example:
      >>> import jax.numpy as jnp, jconv
      >>> x = jnp.arange(4.0).reshape(1, 1, 4)
      >>> jconv.pad(x, (2, 1), mode="reflect").tolist()
      [[[2.0, 1.0, 0.0, 1.0, 2.0, 3.0, 2.0]]]
      >>> jconv.pad(x, (1, -2), value=9.0).tolist()  # pad left, crop right
      [[[9.0, 0.0, 1.0]]]
      >>> jconv.pad(jnp.ones((2, 3, 8, 8)), (1, 1, 2, 0), mode="replicate").shape
      (2, 3, 10, 10)
    """
    x = jnp.asarray(_as_array(input, "input"))
    pairs = _check_pad(pad, x.ndim)
    mode = _check_mode_and_value(mode, value)
    n, shape = len(pairs), tuple(x.shape)
    axes = list(range(len(shape) - 1, len(shape) - 1 - n, -1))  # the last dim's pair first
    if mode != "constant":
        _check_mode_rank(mode, shape, n)
        check_mode_padding(mode, pairs, [shape[d] for d in axes], [f"dim {d}" for d in axes],
                           arg="mode")
    _check_sizes(mode, shape, pairs, axes)
    per_dim = [(0, 0)] * (len(shape) - n) + pairs[::-1]
    fill = jnp.asarray(0 if value is None else value).astype(x.dtype)
    if mode == "constant":
        return lax.pad(x, fill, [(lo, hi, 0) for lo, hi in per_dim])
    grow = [(max(lo, 0), max(hi, 0)) for lo, hi in per_dim]
    crop = [(min(lo, 0), min(hi, 0), 0) for lo, hi in per_dim]
    if mode == "circular":  # PyTorch crops, then wraps what is left
        return jnp.pad(lax.pad(x, fill, crop), grow, mode="wrap")
    # Reflect and replicate read the whole input: PyTorch pads, then crops.
    return lax.pad(jnp.pad(x, grow, mode=_JNP_PAD_MODES[mode]), fill, crop)


__all__ = ["PAD_MODES", "pad"]
