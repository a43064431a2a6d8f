"""``impl="auto"``'s disk cache: measured choices kept in a JSON file between processes.

The file maps a cache key (``jconv._auto.cache_key``) to the implementation names
``[fwd, dx, dw]`` or ``[fwd, dx, dw, fwd_only]``. Processes sharing a file merge their writes
under a file lock; a reader never sees half a file (writes are renamed into place); a file
that is not a cache is never overwritten. Every problem is one ``RuntimeWarning`` per path,
and ``auto`` goes on with the choices it holds in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Collection, Iterator, Mapping

CACHE_ENV = "JCONV_AUTO_CACHE"

# Paths already read, and "warned:<path>" markers: each is read, and warned about, once
# until forget().
_SEEN: set[str] = set()


def disk_cache_path() -> Path | None:
    """The JSON file named by ``JCONV_AUTO_CACHE``, or None (no disk cache)."""
    path = os.environ.get(CACHE_ENV)
    return Path(path) if path else None


def forget() -> None:
    """Read every file again on next use, and warn again about its problems."""
    _SEEN.clear()


def _problem(path: Path, problem: str) -> None:
    """Warn once per path (until :func:`forget`) that the disk cache is unusable."""
    marker = f"warned:{path}"
    if marker in _SEEN:
        return
    _SEEN.add(marker)
    warnings.warn(f"{CACHE_ENV}={path}: {problem}; impl='auto' goes on with the choices it "
                  "holds in memory", RuntimeWarning, stacklevel=5)


def read_entries(path: Path, names: Collection[str]) -> tuple[dict[str, list[str]] | None,
                                                              str | None]:
    """(the valid entries of the cache file, what is wrong with it or None). A missing file is
    an empty cache; a valid entry maps a key to three implementation names from ``names``
    (fwd, dx, dw) or four (then the fourth is ``fwd_only``); entries are None when the file is
    not a cache at all (unreadable, not JSON, not an object)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as e:
        return None, f"cannot read the cache file ({type(e).__name__}: {e})"
    try:
        data = json.loads(text)
    except ValueError as e:
        what = "an empty file" if not text.strip() else f"not valid JSON ({e})"
        return None, f"the cache file is {what}"
    if not isinstance(data, dict):
        return None, (f"the cache file holds a JSON {type(data).__name__}, expected an object "
                      "mapping keys to [fwd, dx, dw] implementation names")
    good = {k: v for k, v in data.items()
            if isinstance(v, list) and len(v) in (3, 4) and all(i in names for i in v)}
    bad = sorted(set(data) - set(good))
    if bad:
        return good, (f"ignoring {len(bad)} bad entries (expected [fwd, dx, dw] names from "
                      f"{tuple(names)}), e.g. {bad[0]!r}: {data[bad[0]]!r}")
    return good, None


def load_once(path: Path, names: Collection[str]) -> dict[str, list[str]]:
    """The valid entries of ``path`` the first time it is asked for (until :func:`forget`),
    ``{}`` afterwards; problems warn."""
    if str(path) in _SEEN:
        return {}
    _SEEN.add(str(path))
    entries, problem = read_entries(path, names)
    if problem:
        _problem(path, problem)
    return entries or {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the sidecar ``<path>.lock`` so that processes sharing a cache
    merge their read-modify-writes instead of overwriting each other's. Without ``fcntl``
    (Windows) writes stay atomic but are not merged."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def save(path: Path, ours: Mapping[str, list[str]], names: Collection[str]) -> None:
    """Merge ``ours`` into the file under its lock (the file's other entries are kept)."""
    tmp = None
    try:
        with _locked(path):
            entries, problem = read_entries(path, names)
            if entries is None:
                # Never replace a file that cannot be read as a cache: it may be something else.
                _problem(path, str(problem))
                return
            entries.update(ours)
            # A unique temporary name per writer, renamed over the file: atomic, so a reader
            # never sees half a file, and concurrent writers never share a temporary file.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
            tmp = None
    except OSError as e:
        _problem(path, f"cannot write the cache file ({type(e).__name__}: {e})")
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
