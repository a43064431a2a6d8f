"""House rule: no function in jconv/ over 60 lines (docstring and decorators included);
train/'s functions are held to the same by tests/test_train_seam.py."""
from __future__ import annotations

import ast
import pathlib

import jconv

ROOT = pathlib.Path(jconv.__file__).parent
LIMIT = 60


def _long_functions() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - first + 1
                if length > LIMIT:
                    found.append((rel, node.name, length))
    return found


def test_no_function_over_60_lines():
    offenders = _long_functions()
    assert not offenders, f"functions over {LIMIT} lines: {offenders}"


def test_the_scan_sees_every_module():
    """The scan reads jconv/ and its subpackages (testing/, bench/), so a long function
    anywhere in them fails the test above."""
    scanned = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")}
    assert {"conv.py", "testing/_api.py", "bench/__main__.py"} <= scanned
