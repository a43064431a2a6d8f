"""python -m jconv.check_device: PASS on this backend, FAIL (exit 1) on a broken
implementation, a one-line error on bad arguments."""

from __future__ import annotations

import pytest

import jconv
from jconv import _registry, check_device


pytestmark = pytest.mark.usefixtures("fresh_auto")


@pytest.mark.slow
def test_every_check_passes_here(capsys):
    assert check_device.main(["--quick", "--no-bench", "--impls", "loops,winograd_f4x4"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("jconv device check: backend ")
    winograd_strided = [l for l in out.splitlines() if "winograd_f4x4" in l and "stride 2" in l]
    assert winograd_strided and "n/a" in winograd_strided[0]
    for impl in ("lax", "loops", "winograd_f4x4"):
        assert f"conv2d  {impl}" in out
    assert "train   loops" in out and "FAIL" not in out and "PASS: all" in out


def test_a_wrong_exact_implementation_fails(monkeypatch, capsys):
    lax_conv = _registry.conv_impl("lax")
    wrong = _registry.Implementation(
        "off_by_tap", lambda x, w, spec: lax_conv(x, w.at[:, :, 0, 0].multiply(1.001), spec),
        "lax with one tap 0.1% heavy", exact=True)
    monkeypatch.setitem(_registry._REGISTRY, "off_by_tap", wrong)
    assert check_device.main(["--quick", "--no-bench", "--no-train",
                              "--impls", "off_by_tap"]) == 1
    out = capsys.readouterr().out
    assert "conv2d  off_by_tap" in out and "FAIL: " in out.splitlines()[-1]


def test_a_crashing_implementation_is_a_failure_not_a_crash(monkeypatch, capsys):
    def broken(x, w, spec):
        raise RuntimeError("kernel exploded")

    monkeypatch.setitem(_registry._REGISTRY, "broken",
                        _registry.Implementation("broken", broken, "raises", exact=True))
    assert check_device.main(["--quick", "--no-bench", "--no-train", "--impls", "broken"]) == 1
    assert "RuntimeError: kernel exploded" in capsys.readouterr().out


def test_unknown_impl_is_a_one_line_error(capsys):
    assert check_device.main(["--impls", "lax,nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: --impls must be a comma list from ('lax'") and "'lax,nope'" in err


@pytest.mark.parametrize("got, want, err", [
    ([1.0, 2.0], [1.0, 2.0], 0.0),
    ([0.5], [0.25], 0.25),          # absolute below |ref| = 1
    ([10.0], [20.0], 0.5),          # relative above
    ([float("nan")], [1.0], float("inf")),
    ([1.0, 2.0], [1.0], float("inf")),
])
def test_rel_err(got, want, err):
    assert check_device.rel_err(got, want) == err
