"""Shared fixtures: float64 mode, and a record of the worst error seen per dtype and impl,
printed at the end of the run so every CI log states the suite's measured accuracy.

The suite runs with ``impl="auto"``'s disk cache off (``JCONV_AUTO_CACHE=off``, inherited by
the subprocesses tests start): it never writes into the user's home, and no test depends on
choices an earlier run left on disk. Tests of the cache point it at their own temp folder."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections import defaultdict

import jax
import numpy as np
import pytest

_WORST: dict[str, float] = defaultdict(float)


def pytest_configure(config):
    # Set in the controller before xdist starts its workers; they inherit it and leave their
    # numbers there.
    if "JCONV_ERROR_DIR" not in os.environ:
        os.environ["JCONV_ERROR_DIR"] = tempfile.mkdtemp(prefix="jconv-errors-")
    os.environ["JCONV_AUTO_CACHE"] = "off"


@pytest.fixture
def x64():
    """Run a test with 64-bit floats enabled, restoring the previous mode afterwards."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def fresh_auto(monkeypatch):
    """``impl="auto"`` with an empty cache, measuring off (the heuristic) and no disk cache;
    everything restored afterwards."""
    import jconv
    from jconv import _auto_cache

    monkeypatch.setenv(_auto_cache.CACHE_ENV, "off")
    jconv.clear_auto_cache()
    jconv.set_auto_measure(False)
    yield
    jconv.set_auto_measure(None)
    jconv.clear_auto_cache()


@pytest.fixture
def record_error():
    """``record_error(kind, dtype, impl, got, want)`` -> max relative error, also logged;
    ``record_error(kind, dtype, impl, err)`` logs an error already measured (jconv.testing)."""

    def record(kind: str, dtype: str, impl: str, got, want=None) -> float:
        if want is None:
            err = float(got)
            if err != err:  # nothing measured
                return err
        else:
            got = np.asarray(got, np.float64)
            want = np.asarray(want, np.float64)
            scale = max(1.0, float(np.abs(want).max()))
            err = float(np.abs(got - want).max()) / scale
        key = f"{kind:<8} {dtype:<9} {impl:<8}"
        _WORST[key] = max(_WORST[key], err)
        return err

    return record


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    # xdist workers hand their numbers to the controller through a file.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and _WORST and "JCONV_ERROR_DIR" in os.environ:
        with open(os.path.join(os.environ["JCONV_ERROR_DIR"], f"{worker}.json"), "w") as f:
            json.dump(_WORST, f)


def pytest_terminal_summary(terminalreporter):
    if "PYTEST_XDIST_WORKER" in os.environ:
        return
    worst = dict(_WORST)
    folder = os.environ.get("JCONV_ERROR_DIR")
    if folder and os.path.isdir(folder):
        for path in glob.glob(os.path.join(folder, "*.json")):
            with open(path) as f:
                for key, err in json.load(f).items():
                    worst[key] = max(worst.get(key, 0.0), err)
        shutil.rmtree(folder, ignore_errors=True)
    if worst:
        terminalreporter.section("worst error vs the NumPy oracle (max |err| / max(1, max |ref|))")
        for key, err in sorted(worst.items()):
            terminalreporter.write_line(f"{key} {err:.3e}")
