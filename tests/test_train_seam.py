"""The seam between train/ and jconv: train/ uses only jconv's public API (names exported
from ``jconv/__init__.py``), and one function, ``train.steps.jit_step``, compiles every
step with the same options. Also the house rule of no function over 60 lines in train/."""

from __future__ import annotations

import ast
from pathlib import Path

import jax.numpy as jnp
import pytest

import jconv

TRAIN = Path(__file__).resolve().parents[1] / "train"
PUBLIC = set(jconv.__all__)
MAX_LINES = 60  # the house rule: def line to last line, docstring included


def _uses() -> list[tuple[str, int, str]]:
    """(file, line, dotted jconv name) of every jconv import and ``jconv.X`` access."""
    out = []
    for file in sorted(TRAIN.rglob("*.py")):
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and \
                    node.module and node.module.split(".")[0] == "jconv":
                out += [(file.name, node.lineno, f"{node.module}.{a.name}") for a in node.names]
            elif isinstance(node, ast.Import):
                out += [(file.name, node.lineno, a.name) for a in node.names
                        if a.name.startswith("jconv.")]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id == "jconv":
                out.append((file.name, node.lineno, f"jconv.{node.attr}"))
    return out


def test_train_uses_only_names_jconv_exports():
    uses = _uses()
    assert uses, "the scan found no jconv use at all"
    private = [u for u in uses if u[2].split(".")[1] not in PUBLIC]
    assert private == []


def test_only_jit_step_calls_jconv_jit():
    calls = [(f, line) for f, line, name in _uses() if name == "jconv.jit"]
    assert calls == [("steps.py", calls[0][1])] if calls else False


def test_jit_step_compiles_with_the_step_options(monkeypatch):
    from train import steps

    seen = {}
    real = jconv.jit

    def spy(fun, **kwargs):
        seen.update(kwargs)
        return real(fun, **kwargs)

    monkeypatch.setattr(jconv, "jit", spy)
    assert steps.jit_step(lambda x: x + 1, "eigen")(jnp.zeros(2)).tolist() == [1.0, 1.0]
    assert seen["conv_backend"] == "eigen"
    assert seen["compiler_options"] == steps.step_compiler_options("eigen")


def test_the_public_onednn_check_names_the_dtype():
    with pytest.raises(ValueError, match=r"impl='onednn' supports dtypes .* got float64"):
        jconv.check_onednn("float64")


def test_the_public_impl_check():
    assert jconv.check_conv_impl("im2col") == "im2col"
    with pytest.raises(ValueError, match="nope"):
        jconv.check_conv_impl("nope")


def _function_lengths() -> list[tuple[int, str]]:
    """(lines, file:name) of every function and method in train/, nested ones included."""
    out = []
    for file in sorted(TRAIN.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1,
                            f"{file.relative_to(TRAIN)}:{node.name}"))
    return out


def test_no_function_in_train_is_over_60_lines():
    lengths = _function_lengths()
    assert len(lengths) > 100, "the scan found too few functions"
    assert [(n, name) for n, name in lengths if n > MAX_LINES] == []
