"""Helpers shared by several test files (import as ``from helpers import ...``; pytest puts
this folder on ``sys.path``)."""

from __future__ import annotations

from typing import Iterator

import jax.numpy as jnp
import numpy as np
import pytest

import jconv


def normal(seed: int, *shapes: tuple[int, ...], dtype=jnp.float32):
    """NumPy-generated normal arrays: no per-shape compilation of JAX's PRNG in the tests.
    One shape gives one array, several give a tuple."""
    rng = np.random.default_rng(seed)
    arrays = tuple(jnp.asarray(rng.normal(size=s), dtype) for s in shapes)
    return arrays[0] if len(arrays) == 1 else arrays


def onednn_dtypes() -> tuple[str, ...]:
    """The dtypes ``impl="onednn"`` computes on this CPU: bfloat16 only where oneDNN has
    bfloat16 kernels for it (avx512_bf16 or AMX). Elsewhere bfloat16 raises at trace, as
    documented; tests/test_onednn.py checks that error with the probe monkeypatched."""
    from jconv import _onednn

    return ("float32", "bfloat16") if _onednn._bf16_kernel() else ("float32",)


def assert_close_global(got, want, tol: float = 1e-5) -> None:
    """Max abs error relative to the largest reference value, max(1, max|want|): the error
    of Winograd and FFT convolution is spread over a tile or the whole output, so an
    elementwise rtol would be the wrong yardstick."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max())


@pytest.fixture
def heuristic_auto() -> Iterator[None]:
    """``impl="auto"`` uses its fixed heuristic (no timing) and a fresh cache."""
    jconv.clear_auto_cache()
    jconv.set_auto_measure(False)
    yield
    jconv.set_auto_measure(None)
    jconv.clear_auto_cache()
