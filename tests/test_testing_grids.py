"""jconv.testing's one table of case grids: the 2-D pool cases, grids and checks agree (either
check takes either case type), the counts docs/testing.md states are the grids' lengths,
and the documented pytest recipe runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import jconv
from jconv import testing
from jconv.testing._grids import GRIDS

DOC = Path(__file__).resolve().parents[1] / "docs" / "testing.md"
POOLS_2D = [("max_pool2d", testing.check_max_pool2d, testing.max_pool2d_cases, jconv.max_pool2d,
             testing.MaxPool2dCase),
            ("avg_pool2d", testing.check_avg_pool2d, testing.avg_pool2d_cases, jconv.avg_pool2d,
             testing.AvgPool2dCase)]
FAST = dict(dtypes=("float32",), grads=False)


@pytest.mark.parametrize("op,check,grid,fn,case_type", POOLS_2D, ids=[p[0] for p in POOLS_2D])
def test_2d_pool_grids_cases_and_checks_agree(op, check, grid, fn, case_type):
    cases = grid("quick")
    assert all(type(c) is case_type and isinstance(c, testing.PoolCase) for c in cases)
    # The grid's own list, the kind's name and check_pool all run the same cases.
    given = check(fn, cases=cases, **FAST)
    by_kind = check(fn, cases="quick", **FAST)
    by_pool = testing.check_pool(fn, op, cases="quick", **FAST)
    assert given.passed and by_kind.passed and by_pool.passed
    assert given.n_cases == by_kind.n_cases == by_pool.n_cases == len(cases)
    assert ([r.case for r in by_kind.results] == [r.case for r in by_pool.results]
            == [r.case for r in given.results])
    # A PoolCase of the same function is a case of the 2-D check, and the reverse.
    random = testing.pool_cases(op, "quick")
    assert check(fn, cases=random, **FAST).passed
    assert testing.check_pool(fn, op, cases=cases, **FAST).passed


def test_a_case_of_another_op_is_a_type_error():
    with pytest.raises(TypeError, match=r"cases must be one of \('quick', 'default', 'full'\) "
                                        r"or a non-empty list of PoolCase of max_pool3d, got "
                                        r"MaxPool2dCase\(x_shape=\(2, 3, 7, 9\)"):
        testing.check_pool(jconv.max_pool3d, "max_pool3d",
                           cases=testing.max_pool2d_cases("quick"))
    with pytest.raises(TypeError, match=r"non-empty list of PoolCase of avg_pool2d, got "
                                        r"MaxPool2dCase\("):
        testing.check_avg_pool2d(jconv.avg_pool2d, cases=testing.max_pool2d_cases("quick"))


def test_2d_case_repr_is_a_runnable_repro():
    case = testing.avg_pool2d_cases("quick")[3]
    assert eval(repr(case), vars(testing)) == case
    assert case.repro("float32").startswith("from jconv.testing import AvgPool2dCase\n")
    assert testing.AvgPool2dCase((1, 1, 4, 4), 2, divisor_override=3).kwargs[
        "divisor_override"] == 3


def _doc_table() -> tuple[list[str], dict[str, list[str]]]:
    """The header and the rows (by kind) of docs/testing.md's "The cases" table."""
    text = DOC.read_text().split("## The cases", 1)[1]
    lines = [ln for ln in text.splitlines() if ln.startswith("|")][:5]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return cells[0][1:], {row[0].strip('`"'): row[1:] for row in cells[2:]}


def _grid_ops(column: str) -> list[str]:
    named = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
             "conv_transpose3d", "max_pool2d", "avg_pool2d")
    if column == "other pools, unfold, fold":
        return [op for op in GRIDS if op not in named]
    return column.split(", ")


def test_the_documented_counts_are_the_grids_lengths():
    header, rows = _doc_table()
    assert set(rows) == set(testing.KINDS)
    checked = set()
    for kind, row in rows.items():
        for column, cell in zip(header, row):
            total, forms, draws = re.fullmatch(
                r"(\d+) \((?:(\d+) forms)?(?: \+ )?(?:(\d+) random|random)?\)", cell).groups()
            for op in _grid_ops(column):
                cases = GRIDS[op][0](kind)
                n_random = sum(1 for c in cases if not c.name or c.name.startswith("random-")
                               or "#" in c.name)
                assert len(cases) == int(total), (op, kind)
                assert len(cases) - n_random == int(forms or 0), (op, kind)
                checked.add(op)
    assert checked == set(GRIDS)  # every op the checks take is in the table


def test_documented_pytest_recipe_runs_each_case():
    params = testing.pytest_cases("quick", op="avg_pool2d")
    assert [p.values[0] for p in params] == testing.avg_pool2d_cases("quick")
    for p in params[:2]:
        testing.assert_avg_pool2d(jconv.avg_pool2d, cases=[p.values[0]], check_grads_cases=0,
                                  dtypes=("float32",))
    ids = [p.id for p in testing.pytest_cases("quick", op="max_pool3d")]
    assert len(ids) == len(testing.pool_cases("max_pool3d", "quick")) == len(set(ids))
    assert len(testing.pytest_cases("quick", op="fold", n=5)) == 5
    with pytest.raises(ValueError, match=r"op must be one of \('conv1d', 'conv2d', .* got 'pool'"):
        testing.pytest_cases(op="pool")


def test_check_op_is_each_check_by_name():
    by_name = testing._api.check_op(jconv.conv3d, "conv3d", cases="quick", **FAST)
    by_check = testing.check_conv3d(jconv.conv3d, cases="quick", **FAST)
    assert by_name.passed and [r.case for r in by_name.results] == [
        r.case for r in by_check.results]
    with pytest.raises(ValueError, match=r"op must be one of \('conv1d', .*'fold'\), "
                                         r"got 'conv4d'"):
        testing._api.check_op(jconv.conv3d, "conv4d")
