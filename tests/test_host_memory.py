"""jconv.reuse_host_memory: in a fresh process, a jitted step stops page-faulting its
temporaries in again; after the first JAX computation it refuses, saying why."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import jconv

STEP_FAULTS = textwrap.dedent("""
    import resource, sys
    import jconv
    if sys.argv[1] == "1":
        assert jconv.reuse_host_memory()
    import jax, jax.numpy as jnp
    # 64 MiB of temporaries, above glibc's largest mmap threshold (32 MiB)
    f = jax.jit(lambda x: (jnp.sin(x) * 2.0 + jnp.cos(x)).sum())
    x = jnp.ones((4096, 4096))
    for _ in range(3):
        f(x).block_until_ready()
    for _ in range(15):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x).block_until_ready()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(reuse: bool, processes: int = 1) -> int:
    """The fewest page faults of one of 15 executions, over ``processes`` fresh processes
    (stopping at one with an execution that faulted nothing). Without reuse every execution
    faults its temporaries in again. With it most do not, but in bursts of consecutive
    executions glibc grows the heap by 128 MiB of fresh pages instead of reusing the freed
    block (about a third of them here, docs/performance.md), now and then through a whole
    short run: hence several processes."""
    fewest = None
    for _ in range(processes):
        out = subprocess.run([sys.executable, "-c", STEP_FAULTS, str(int(reuse))], check=True,
                             capture_output=True, text=True, timeout=120,
                             env={"JAX_PLATFORMS": "cpu", "PATH": ""})
        n = min(int(n) for n in out.stdout.split())
        fewest = n if fewest is None else min(fewest, n)
        if fewest == 0:
            break
    return fewest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reused_host_memory_stops_the_page_faults_of_each_execution():
    from jconv.host_memory import _libc

    if _libc() is None:
        pytest.skip("not glibc")
    plain, reused = _faults(False), _faults(True, processes=3)
    # an execution of 64 MiB of temporaries: thousands of 4 KiB pages faulted in afresh,
    # or next to none
    assert plain > 1000 and reused < plain / 20, (plain, reused)


def test_after_the_first_computation_it_refuses():
    import jax.numpy as jnp

    jnp.ones(2).block_until_ready()
    from jconv import host_memory

    if host_memory._applied:
        pytest.skip("already applied in this process")
    with pytest.raises(RuntimeError, match=r"must be called before the first JAX computation"):
        jconv.reuse_host_memory()
