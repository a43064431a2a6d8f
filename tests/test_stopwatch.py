"""jconv.stopwatch: the one stopwatch's rounds, rotation and statistics."""

from __future__ import annotations

import pytest

from jconv import stopwatch


def test_rounds_rotate_the_starting_function() -> None:
    calls: list[str] = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    samples = stopwatch.interleaved_samples(fns, reps=4)
    assert calls == list("abc" "bca" "cab" "abc")
    assert {k: len(v) for k, v in samples.items()} == {"a": 4, "b": 4, "c": 4}


def test_median_and_minimum_of_the_same_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    times = iter([5.0, 1.0, 3.0])
    monkeypatch.setattr(stopwatch, "wall_ms", lambda fn: next(times))
    assert stopwatch.interleaved_medians({"f": lambda: None}, reps=3) == {"f": 3.0}
    times = iter([5.0, 1.0, 3.0])
    assert stopwatch.interleaved_minima({"f": lambda: None}, reps=3) == {"f": 1.0}


def test_tuple_keys_and_no_functions() -> None:
    assert list(stopwatch.interleaved_minima({("lax", 0): lambda: None}, 1)) == [("lax", 0)]
    assert stopwatch.interleaved_medians({}, reps=3) == {}


@pytest.mark.parametrize("reps", [0, -1, 2.5, True])
def test_bad_reps(reps: object) -> None:
    with pytest.raises(ValueError, match=r"reps must be an int >= 1, got"):
        stopwatch.interleaved_samples({"f": lambda: None}, reps)  # type: ignore[arg-type]
