"""impl="onednn": what the native side (jconv/_onednn.cc) does to the process around a call —
the calling thread's OpenMP team size, and the page faults of the buffers it writes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconv
from jconv import _onednn

pytestmark = pytest.mark.skipif(not _onednn.available(), reason="no oneDNN extension")

conv = functools.partial(jconv.conv2d, impl="onednn", data_format="NHWC", padding=1)
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _omp_max_threads() -> int:
    """The calling thread's OpenMP team size (libgomp, which libdnnl loaded)."""
    return ctypes.CDLL(ctypes.util.find_library("gomp") or "libgomp.so.1").omp_get_max_threads()


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def test_set_num_threads_leaves_the_calling_threads_openmp_setting_alone():
    """XLA runs the handler on the thread that launched the computation (here Python's main
    thread, which PyTorch shares): the team size applies to jconv's call only. It once stuck
    to the thread, so PyTorch then ran one thread and set_num_threads(0) restored nothing."""
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((4, 4, 3, 3))
    f = jax.jit(conv)
    before = _omp_max_threads()
    try:
        for n in (before + 1, 0):
            _onednn.set_num_threads(n)
            jax.block_until_ready(f(x, w))
            assert _omp_max_threads() == before, n
    finally:
        _onednn.set_num_threads(0)


@pytest.mark.skipif(not THP.exists() or "[never]" in THP.read_text(),
                    reason="needs transparent huge pages (madvise or always)")
def test_outputs_in_a_fresh_mapping_take_huge_pages():
    """Two 25 MiB conv outputs in one 48 MiB block of XLA temporaries, which glibc maps afresh
    for every call: with 4 KiB pages that is 12,288 faults a call (measured before the
    handler advised huge pages), with 2 MiB ones about 1,000 (the rest: the block's edges and
    the inputs)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((128, 32, 32, 3), np.float32))
    w1, w2 = (jnp.asarray(rng.random((48, 3, 3, 3), np.float32)) for _ in range(2))
    f = jax.jit(lambda x, w1, w2: jnp.sum(conv(x, w1) * conv(x, w2)))
    assert f.lower(x, w1, w2).compile().memory_analysis().temp_size_in_bytes > 32 << 20
    jax.block_until_ready(f(x, w1, w2))
    faults = []
    for _ in range(5):
        start = _minor_faults()
        jax.block_until_ready(f(x, w1, w2))
        faults.append(_minor_faults() - start)
    four_k_pages = 2 * 128 * 32 * 32 * 48 * 4 // 4096
    assert np.median(faults) < four_k_pages / 2, faults
