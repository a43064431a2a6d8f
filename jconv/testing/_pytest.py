"""Pytest integration: the case lists as parametrisations, one test per case."""

from __future__ import annotations

from typing import Any

from ._grids import GRIDS


def case_id(case: Any) -> str:
    """A short, stable test id: ``"03-stride-pair-pad-pair"``-style (index added by caller)."""
    return case.name or type(case).__name__


def pytest_cases(kind: str = "quick", op: str = "conv2d", n: int | None = None,
                 seed: int = 0) -> list[Any]:
    """The cases of ``op`` (any op of ``GRIDS``: ``"conv1d"``, ``"conv2d"``, ``"conv3d"``,
    ``"conv_transpose2d"``, a pooling function of ``POOL_FUNCTIONS``, ``"unfold"``,
    ``"fold"``) as ``pytest.param`` objects with readable ids, for
    ``@pytest.mark.parametrize("case", ...)``: the very list ``check_<op>(fn, cases=kind)``
    runs. Pass the case on to the op's ``assert_*`` (``cases=[case]``). ``n`` overrides the
    number of random draws. pytest is imported only when this is called.

    >>> ids = [p.id for p in pytest_cases("quick")]
    >>> ids[:2]
    ['00-everything', '01-stride-pair-pad-pair']
    >>> [p.id for p in pytest_cases("quick", op="avg_pool2d")][:2]
    ['00-2x2', '01-3x3-s2-p1']
    """
    import pytest

    if op not in GRIDS:
        raise ValueError(f"op must be one of {tuple(GRIDS)}, got {op!r}")
    return [pytest.param(c, id=f"{i:02d}-{case_id(c)}")
            for i, c in enumerate(GRIDS[op][0](kind, n=n, seed=seed))]
