"""House rule: no function in jconv/ over 60 lines (docstring and decorators included)."""
from __future__ import annotations

import ast
import pathlib

import jconv

ROOT = pathlib.Path(jconv.__file__).parent
# Owned by other helpers for now; the lead widens the scan after merging.
EXCLUDED = ("testing/", "fold_graph.py", "bn_fold.py")
# Known offenders still to split (issue 30); the scan fails on any other, and on these
# once they are removed from the list but still long.
KNOWN_LONG = {("_pallas.py", "_weight_grad_impl"), ("_auto.py", "measure_choice")}
LIMIT = 60


def _long_functions() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(EXCLUDED) or rel in EXCLUDED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - first + 1
                if length > LIMIT:
                    found.append((rel, node.name, length))
    return found


def test_no_function_over_60_lines():
    offenders = [f for f in _long_functions() if (f[0], f[1]) not in KNOWN_LONG]
    assert not offenders, f"functions over {LIMIT} lines: {offenders}"


def test_known_long_list_is_current():
    still_long = {(rel, name) for rel, name, _ in _long_functions()}
    assert KNOWN_LONG <= still_long, f"now short, drop from KNOWN_LONG: {KNOWN_LONG - still_long}"
