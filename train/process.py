"""What a training process sets up around a run: JAX's persistent compilation cache, the
host-memory reuse of ``train.reuse_host_memory``, and the signal handling that turns
SIGTERM into a clean stop that never interrupts a checkpoint being written."""

from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

import jax

import jconv

from .config import Config


def compilation_cache_dir() -> Path:
    """Where :func:`use_compilation_cache` keeps compiled programs: the user's choice
    (``JAX_COMPILATION_CACHE_DIR``, or ``jax.config``) if any, else ``xla`` in
    :func:`jconv.user_cache_dir`.

    Example:
      >>> compilation_cache_dir().parts[-2:] == ("jconv", "xla") or bool(
      ...     jax.config.jax_compilation_cache_dir)
      True
    """
    chosen = jax.config.jax_compilation_cache_dir
    return Path(chosen) if chosen else jconv.user_cache_dir() / "xla"


def use_compilation_cache() -> None:
    """Keep XLA's compiled programs across runs (JAX's persistent compilation cache, in
    :func:`compilation_cache_dir`), so a run of a config compiled before skips compiling
    its model initialiser and its steps. Every program is kept, not only those that took
    JAX's default second to compile: besides those, a run compiles some thirty quick ones,
    which together cost seconds of start-up."""
    jax.config.update("jax_compilation_cache_dir", str(compilation_cache_dir()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def use_host_memory_reuse(cfg: Config) -> None:
    """:func:`jconv.reuse_host_memory` when ``cfg.train.reuse_host_memory``: called before
    the process's first JAX computation by the trainer, ``train.bench`` and
    ``train.profile``. In a process that has already computed with JAX (a test, a notebook)
    it cannot take effect and says so in a ``RuntimeWarning`` instead."""
    if not cfg.train.reuse_host_memory:
        return
    try:
        jconv.reuse_host_memory()
    except RuntimeError as e:
        warnings.warn(f"train.reuse_host_memory not applied: {e}", RuntimeWarning,
                      stacklevel=2)


class Terminated(KeyboardInterrupt):
    """The run got SIGTERM (a batch scheduler's preemption, ``kill``): it stops as on
    Ctrl-C, saying how to resume, and the command exits with 143 (128 + SIGTERM)."""


class Signals:
    """SIGTERM raises :class:`Terminated` as Ctrl-C raises KeyboardInterrupt; while a
    checkpoint is being saved (:meth:`deferred`) both wait until it is on disk, so a stop
    never interrupts Orbax's writer threads half-way."""

    def __init__(self) -> None:
        self.saving = False
        self.pending: BaseException | None = None

    def handler(self, signum: int, frame: Any) -> None:
        stop = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        if self.saving:
            self.pending = self.pending or stop
            return
        raise stop

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The handlers, for the block (main thread only: elsewhere the defaults stay)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self.handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.saving = True
        try:
            yield
        finally:
            self.saving = False
        if self.pending is not None:
            stop, self.pending = self.pending, None
            raise stop


SIGNALS = Signals()
