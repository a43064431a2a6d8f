"""Pytest integration: the case lists as parametrisations, one test per case."""

from __future__ import annotations

from typing import Any

from ._grids import avg_pool2d_cases, conv2d_cases, conv_transpose2d_cases, max_pool2d_cases

_GRIDS = {"conv2d": conv2d_cases, "conv_transpose2d": conv_transpose2d_cases,
          "max_pool2d": max_pool2d_cases, "avg_pool2d": avg_pool2d_cases}


def case_id(case: Any) -> str:
    """A short, stable test id: ``"03-stride-pair-pad-pair"``-style (index added by caller)."""
    return case.name or type(case).__name__


def pytest_cases(kind: str = "quick", op: str = "conv2d", n: int | None = None,
                 seed: int = 0) -> list[Any]:
    """The cases of ``op`` (``"conv2d"``, ``"conv_transpose2d"``, ``"max_pool2d"``,
    ``"avg_pool2d"``) as ``pytest.param`` objects with readable ids, for
    ``@pytest.mark.parametrize("case", ...)``; pass the case on to ``assert_conv2d``.
    pytest is imported only when this is called.

    >>> ids = [p.id for p in pytest_cases("quick")]
    >>> ids[:2]
    ['00-everything', '01-stride-pair-pad-pair']
    """
    import pytest

    if op not in _GRIDS:
        raise ValueError(f"op must be one of {tuple(_GRIDS)}, got {op!r}")
    return [pytest.param(c, id=f"{i:02d}-{case_id(c)}")
            for i, c in enumerate(_GRIDS[op](kind, n=n, seed=seed))]
