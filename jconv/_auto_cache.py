"""``impl="auto"``'s disk cache: measured choices kept in a JSON file between processes.

Per user by default (:func:`default_cache_path`); ``JCONV_AUTO_CACHE`` names another file or
switches it off (:func:`disk_cache_path`).

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
CACHE_OFF = ("", "0", "off", "false", "no", "none")

# Paths already read, and "warned:<path>" markers: each is read, and warned about, once
# until forget().
_SEEN: set[str] = set()


def user_cache_dir() -> Path:
    """The per-user folder jconv and its trainer keep caches in: ``$XDG_CACHE_HOME/jconv``
    (an absolute ``XDG_CACHE_HOME``, as the XDG spec requires), else ``~/.cache/jconv``.

    Example:
      >>> import jconv
      >>> jconv.user_cache_dir().name
      'jconv'
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "jconv"


def default_cache_path() -> Path:
    """The per-user disk cache: ``auto.json`` in :func:`user_cache_dir`."""
    return user_cache_dir() / "auto.json"


def disk_cache_path() -> Path | None:
    """Where ``impl="auto"`` keeps its measured choices between processes, or None for no
    disk cache: ``JCONV_AUTO_CACHE`` unset is :func:`default_cache_path`; set to ``off``,
    ``0``, ``false``, ``no``, ``none`` or empty it switches the disk cache off; any other
    value names the JSON file (whose folder must exist).

    Example:
      >>> default_cache_path().parts[-2:]
      ('jconv', 'auto.json')
    """
    value = os.environ.get(CACHE_ENV)
    if value is None:
        try:
            return default_cache_path()
        except RuntimeError:  # Path.home(): no HOME and no password entry — nowhere to keep it
            return None
    if value.strip().lower() in CACHE_OFF:
        return None
    return Path(value).expanduser()


def forget() -> None:
    """Read every file again on next use, and warn again about its problems."""
    _SEEN.clear()


def _problem(path: Path, problem: str) -> None:
    """Warn once per path (until :func:`forget`) that the disk cache is unusable."""
    marker = f"warned:{path}"
    if marker in _SEEN:
        return
    _SEEN.add(marker)
    where = (f"{CACHE_ENV}={path}" if CACHE_ENV in os.environ else
             f"impl='auto' disk cache {path} (the per-user default; {CACHE_ENV}=off switches "
             "it off)")
    warnings.warn(f"{where}: {problem}; impl='auto' goes on with the choices it "
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
        if CACHE_ENV not in os.environ:
            # Only the default's folder is made: a named file's missing folder is a typo.
            path.parent.mkdir(parents=True, exist_ok=True)
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
