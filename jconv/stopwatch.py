"""The one stopwatch: wall-clock times of blocking calls, taken in interleaved rounds.

Everything in jconv and ``train/`` that compares the speed of alternatives times them here:
``impl="auto"`` choosing an implementation, ``python -m jconv.bench``, ``python -m
train.bench`` and ``python -m train.export``'s throughput. It depends on nothing else in
jconv, so any module (``jconv._auto`` included) can use it without an import cycle.

Why interleaved and rotated: on a shared machine the load changes while a benchmark runs, so
each round calls every candidate once and load changes hit them alike. The starting
candidate rotates every round: with a fixed order the first one always ran right after the
last (e.g. PyTorch, whose OpenMP threads keep spinning after a call) and was measured slow
(by how much: docs/performance.md).
"""

from __future__ import annotations

import time
from typing import Callable, Hashable, Mapping, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)
Fn = Callable[[], object]


def wall_ms(fn: Fn) -> float:
    """One call of ``fn`` (which must block until its result is ready), in milliseconds."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def interleaved_samples(fns: Mapping[K, Fn], reps: int) -> dict[K, list[float]]:
    """``reps`` wall times in ms per function, calling them in turn ``reps`` rounds with the
    starting function rotating every round (see the module docstring for why).

    fns: name -> a call without arguments that blocks until its result is ready (wrap jax
    calls in ``jax.block_until_ready``); compile and warm them up before timing.

    Example:
      >>> samples = interleaved_samples({"a": lambda: None, "b": lambda: None}, reps=3)
      >>> {k: len(v) for k, v in samples.items()}
      {'a': 3, 'b': 3}
    """
    if not isinstance(reps, int) or isinstance(reps, bool) or reps < 1:
        raise ValueError(f"reps must be an int >= 1, got {reps!r}")
    samples: dict[K, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for r in range(reps if keys else 0):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            samples[k].append(wall_ms(fns[k]))
    return samples


def interleaved_medians(fns: Mapping[K, Fn], reps: int) -> dict[K, float]:
    """Median ms per function over :func:`interleaved_samples`: the benchmarks' statistic.

    Example:
      >>> ms = interleaved_medians({"sum": lambda: sum(range(1000))}, reps=3)
      >>> list(ms), ms["sum"] >= 0
      (['sum'], True)
    """
    return {k: float(np.median(v)) for k, v in interleaved_samples(fns, reps).items()}


def interleaved_minima(fns: Mapping[K, Fn], reps: int) -> dict[K, float]:
    """Minimum ms per function over :func:`interleaved_samples`: ``impl="auto"``'s statistic
    (it chooses on few rounds, and on a shared machine noise only ever adds time).

    Example:
      >>> ms = interleaved_minima({"sum": lambda: sum(range(1000))}, reps=3)
      >>> list(ms), ms["sum"] >= 0
      (['sum'], True)
    """
    return {k: float(np.min(v)) for k, v in interleaved_samples(fns, reps).items()}
