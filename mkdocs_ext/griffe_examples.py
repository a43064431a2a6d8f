"""Griffe extension for the docs build: jconv's docstrings head their doctests with
``Example:`` (or ``Example (what it shows):``), which griffe's Google parser reads as an
admonition, not as an examples section, so the ``>>>`` lines would render as prose. This
renames such headings to ``Examples:`` when griffe loads the code (the source is untouched).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_HEADING = re.compile(r"^(\s*)Example(?: \([^)\n]*\))?:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Turn ``Example:`` headings into Google-style ``Examples:`` sections."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _HEADING.sub(r"\1Examples:", obj.docstring.value)
