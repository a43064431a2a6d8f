"""The ``impl="auto"`` disk cache: per user by default, ``JCONV_AUTO_CACHE`` names another
file or switches it off; concurrent processes merge their entries, and a file that cannot
serve as the cache gives one warning, never an error."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jconv
from jconv import _auto, _auto_cache

REPO = Path(__file__).resolve().parents[1]
X, W = jnp.ones((1, 3, 6, 6)), jnp.ones((4, 3, 3, 3))


pytestmark = pytest.mark.usefixtures("fresh_auto")


def _measured(monkeypatch) -> None:
    """Measuring on, with a fake instant measurement (the disk cache stores only those)."""
    monkeypatch.setattr(_auto, "measure_choice", lambda *a, **k: _auto.AutoChoice(
        "loops", "im2col", "lax", source="measured"))
    jconv.set_auto_measure(True)


def _conv() -> jnp.ndarray:
    return jconv.conv2d(X, W, padding=1, impl="auto")


BROKEN = {  # name -> (make the file at path, words of the warning)
    "garbage": (lambda p: p.write_text("{not json"), "the cache file is not valid JSON"),
    "empty": (lambda p: p.write_text(""), "the cache file is an empty file"),
    "directory": (lambda p: p.mkdir(), r"cannot read the cache file \(IsADirectoryError"),
    "list": (lambda p: p.write_text("[1, 2]"),
             "the cache file holds a JSON list, expected an object"),
    "bad entries": (lambda p: p.write_text(json.dumps({"k1": 3, "k2": ["lax", "nope", "lax"],
                                                       "k3": ["lax"] * 3})),
                    r"ignoring 2 bad entries \(expected \[fwd, dx, dw\] names from "
                    r"\('lax', 'im2col', 'loops', 'onednn'\)\), e.g. 'k1': 3"),
}


@pytest.mark.parametrize("name", BROKEN)
@pytest.mark.parametrize("measure", [False, True])
def test_broken_cache_file_warns_once_and_auto_carries_on(monkeypatch, tmp_path, name,
                                                          measure):
    path = tmp_path / "auto.json"
    make, words = BROKEN[name]
    make(path)
    before = path.read_text() if path.is_file() else None
    monkeypatch.setenv(_auto_cache.CACHE_ENV, str(path))
    if measure:
        _measured(monkeypatch)
    with pytest.warns(RuntimeWarning, match=rf"JCONV_AUTO_CACHE={re.escape(str(path))}: {words}") as got:
        y = _conv()
        _conv()
        jconv.conv2d(X[:, :2], W[:, :2], impl="auto")  # another key: another save
    assert len(got) == 1
    np.testing.assert_allclose(y, jconv.conv2d(X, W, padding=1), rtol=1e-6)
    if name == "bad entries":
        if measure:  # the bad entries are dropped, the good one and ours are written
            saved = {k for k, c in _auto._MEMORY.items() if c.source != "heuristic"}
            assert set(json.loads(path.read_text())) == {"k3", *saved}
    elif before is not None:
        assert path.read_text() == before  # a file that is not a cache is never replaced


def test_unwritable_cache_warns_once_and_keeps_the_choice_in_memory(monkeypatch, tmp_path):
    path = tmp_path / "no" / "such" / "folder" / "auto.json"
    monkeypatch.setenv(_auto_cache.CACHE_ENV, str(path))
    _measured(monkeypatch)
    with pytest.warns(RuntimeWarning, match=rf"JCONV_AUTO_CACHE={re.escape(str(path))}: cannot write the "
                      r"cache file \(FileNotFoundError") as got:
        _conv()
        jconv.conv2d(X[:, :2], W[:, :2], impl="auto")
    assert len(got) == 1
    key = next(iter(_auto._MEMORY))
    assert _auto._MEMORY[key].source == "measured" and not path.parent.exists()


def test_good_cache_gives_no_warning_and_leaves_no_temporary_files(monkeypatch, tmp_path):
    path = tmp_path / "auto.json"
    monkeypatch.setenv(_auto_cache.CACHE_ENV, str(path))
    _measured(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _conv()
        jconv.conv2d(X[:, :2], W[:, :2], impl="auto")
    assert len(json.loads(path.read_text())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.json", "auto.json.lock"]


@pytest.fixture
def home(monkeypatch, tmp_path):
    """No ``JCONV_AUTO_CACHE`` (the default applies), HOME in a temp folder, no XDG."""
    monkeypatch.delenv(_auto_cache.CACHE_ENV)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_the_default_cache_is_per_user_and_made_on_first_save(monkeypatch, home):
    _measured(monkeypatch)
    path = home / ".cache" / "jconv" / "auto.json"
    assert _auto_cache.disk_cache_path() == path and not path.parent.exists()
    _conv()
    assert list(json.loads(path.read_text()).values()) == [["loops", "im2col", "lax"]]
    jconv.clear_auto_cache()  # a new process, as far as auto can tell
    jconv.set_auto_measure(False)
    assert jconv.auto_choice(X.shape, W.shape, X.dtype, _spec()).source == "disk"


def test_the_default_cache_follows_xdg_cache_home(monkeypatch, home, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _measured(monkeypatch)
    _conv()
    assert (tmp_path / "xdg" / "jconv" / "auto.json").is_file()
    assert not home.exists()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: absolute only
    assert _auto_cache.disk_cache_path() == home / ".cache" / "jconv" / "auto.json"


@pytest.mark.parametrize("value", ["off", "OFF", "", "0", "false", "no", "none"])
def test_the_disk_cache_switches_off(monkeypatch, home, value):
    monkeypatch.setenv(_auto_cache.CACHE_ENV, value)
    _measured(monkeypatch)
    assert _auto_cache.disk_cache_path() is None
    _conv()
    assert not home.exists()
    assert next(iter(_auto._MEMORY.values())).source == "measured"


def test_a_broken_default_cache_warns_how_to_switch_it_off(monkeypatch, home):
    path = home / ".cache" / "jconv" / "auto.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    _measured(monkeypatch)
    with pytest.warns(RuntimeWarning, match=re.escape(
            f"impl='auto' disk cache {path} (the per-user default; JCONV_AUTO_CACHE=off "
            "switches it off): the cache file is not valid JSON")) as got:
        _conv()
    assert len(got) == 1 and path.read_text() == "{not json"


def test_a_disk_entry_from_another_jax_or_device_is_not_used(monkeypatch, tmp_path):
    path = tmp_path / "auto.json"
    monkeypatch.setenv(_auto_cache.CACHE_ENV, str(path))
    key = _auto.cache_key(X.shape, W.shape, X.dtype, _spec())
    assert f"|jax {jax.__version__}|" in key
    path.write_text(json.dumps({key.replace(f"jax {jax.__version__}", "jax 0.0.1"):
                                ["loops", "loops", "loops"]}))
    assert jconv.auto_choice(X.shape, W.shape, X.dtype, _spec()).source == "heuristic"


def _spec():
    return jconv.conv_spec(X.shape, W.shape, padding=1)


WRITER = """
import sys
from pathlib import Path
from jconv import _auto
path, tag, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    _auto._MEMORY[f"{tag}-{i}"] = _auto.AutoChoice("lax", "im2col", "loops", "measured")
    _auto._save_disk(path)
"""


@pytest.mark.slow
def test_two_processes_saving_at_once_merge_all_entries(tmp_path):
    path, n = tmp_path / "auto.json", 60
    path.write_text(json.dumps({"old": ["lax", "lax", "lax"]}))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, str(n)],
                              cwd=REPO, env={"PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu",
                                             "PATH": ""},
                              stderr=subprocess.PIPE, text=True) for tag in "ab"]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    saved = json.loads(path.read_text())  # valid JSON, not a torn or interleaved write
    assert set(saved) == {"old"} | {f"{tag}-{i}" for tag in "ab" for i in range(n)}
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
