"""The documentation site builds with warnings as errors (``mkdocs build --strict``), so a
broken link, a missing page in the nav or a docstring griffe cannot parse fails CI. The
examples in ``docs/*.md`` are doctested separately (``--doctest-glob=*.md``)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NEEDED = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _missing() -> list[str]:
    missing = []
    for name in NEEDED:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name)
    return missing


@pytest.mark.skipif(bool(_missing()), reason="docs tools not installed (pip install -e '.[dev]')")
def test_docs_site_builds_strict(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    # The API page is generated from the docstrings, and their doctests render as
    # highlighted code (mkdocs_ext/griffe_examples.py), not as prose.
    start = api.index('id="jconv.conv2d"')
    section = api[start:api.index('id="jconv.conv_transpose2d"')]
    assert '<span class="gp">&gt;&gt;&gt; </span>' in section
