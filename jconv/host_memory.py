"""Host memory that a jitted step reuses instead of mapping afresh.

XLA:CPU takes each execution's temporaries from ``malloc`` in one block (for a CIFAR train
step, hundreds of MiB). glibc serves a block that large with ``mmap`` and returns it with
``munmap`` when the execution ends, so every step page-faults its whole working set in
again, each fault handing the kernel a page to zero (docs/performance.md measures it: a
large share of the step's CPU time on two cores). glibc's ``mmap`` threshold cannot be
raised past 32 MiB, but ``mallopt`` can stop it from using ``mmap`` at all and keep freed
memory: :func:`reuse_host_memory` does that, process-wide.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

from .xla_options import _backends_initialized

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# The largest trim threshold mallopt takes (an int): freed memory below it stays mapped.
_NEVER_TRIM = 2**31 - 1


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None on a C library without ``mallopt`` (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name or "libc.so.6")
        lib.gnu_get_libc_version  # noqa: B018 — only glibc has it
        return lib if hasattr(lib, "mallopt") else None
    except (OSError, AttributeError):
        return None


_applied = False


def reuse_host_memory() -> bool:
    """Make every later large allocation of this process come from glibc's main heap and
    keep the memory it frees there, so that a jitted step reuses its temporaries instead of
    page-faulting them in again every time. Returns True when the setting is in force, False
    where the C library is not glibc (nothing changes).

    It is process-wide (PyTorch, NumPy and everything else in the process get it too) and
    lasts until the process ends; the process keeps its peak heap mapped (resident memory
    does not shrink after a large computation). Threads pick their malloc arena on their
    first allocation, and XLA starts its threads with its backend: so call it before the
    first JAX computation, as :func:`jconv.set_default_conv_backend`; later it raises a
    ``RuntimeError``. ``python -m train`` calls it when ``train.reuse_host_memory`` is true.

    Example (in a fresh process)::

        import jconv
        jconv.reuse_host_memory()   # before any JAX computation
    """
    global _applied
    if _applied:
        return True
    if _backends_initialized():
        raise RuntimeError("jconv.reuse_host_memory() must be called before the first JAX "
                           "computation: XLA's threads already have their malloc arenas "
                           "(call it right after the imports)")
    libc = _libc()
    if libc is None:
        return False
    ok = all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM)))
    _applied = ok
    return ok
