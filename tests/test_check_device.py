"""python -m jconv.check_device: PASS on this backend, FAIL (exit 1) on a broken
implementation, a one-line error on bad arguments."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
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
    header = next(l for l in out.splitlines() if l.startswith("check "))
    assert header.split() == ["check", "impl", "case", "y", "dx", "dw", "bf16", "f16",
                              "status", "note"]
    assert [l for l in out.splitlines() if "loops" in l and "realistic size" in l]
    assert "train   loops" in out and "FAIL" not in out and "PASS: all" in out


def test_a_wrong_exact_implementation_fails(monkeypatch, capsys):
    lax_conv = _registry.conv_impl("lax")
    wrong = _registry.Implementation(
        "off_by_tap", lambda x, w, spec: lax_conv(x, w.at[:, :, 0, 0].multiply(1.001), spec),
        "lax with one tap 0.1% heavy", exact=True)
    monkeypatch.setitem(_registry._REGISTRY, "off_by_tap", wrong)
    monkeypatch.setattr(check_device, "QUICK_CASES", check_device.QUICK_CASES[:1])  # fast
    assert check_device.main(["--quick", "--no-bench", "--no-train",
                              "--impls", "off_by_tap"]) == 1
    out = capsys.readouterr().out
    assert "conv2d  off_by_tap" in out and "FAIL: " in out.splitlines()[-1]


def test_a_crashing_implementation_is_a_failure_not_a_crash(monkeypatch, capsys):
    def broken(x, w, spec):
        raise RuntimeError("kernel exploded")

    monkeypatch.setitem(_registry._REGISTRY, "broken",
                        _registry.Implementation("broken", broken, "raises", exact=True))
    monkeypatch.setattr(check_device, "QUICK_CASES", check_device.QUICK_CASES[:1])  # fast
    assert check_device.main(["--quick", "--no-bench", "--no-train", "--impls", "broken"]) == 1
    assert "RuntimeError: kernel exploded" in capsys.readouterr().out


def test_deprecated_impl_names_are_accepted_with_a_warning(monkeypatch, capsys):
    """--impls winograd2 checks winograd_f2x2 (jconv's deprecated alias), warning as jconv does."""
    monkeypatch.setattr(check_device, "QUICK_CASES", check_device.CASES[:1])
    monkeypatch.setattr(check_device, "check_pools", lambda impls: [])
    with pytest.warns(DeprecationWarning, match="impl='winograd2' is deprecated; use "
                                                "impl='winograd_f2x2'"):
        rc = check_device.main(["--quick", "--no-bench", "--no-train", "--impls", "winograd2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert [l.split()[1] for l in out.splitlines() if l.startswith("conv2d")] == [
        "lax", "winograd_f2x2"]


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


def test_the_cases_include_a_grouped_layer_of_realistic_size():
    """Past XLA:CPU's threshold for a real grouped dot (C_in/groups >= 4, C_out/groups >= 2),
    where bfloat16 crashed loops; in the --quick list too."""
    def realistic(layer):
        groups = layer.groups
        return 1 < groups < layer.c_in and layer.c_in // groups >= 4 and layer.c_out // groups >= 2

    assert any(realistic(layer) for layer, _ in check_device.QUICK_CASES)
    assert any(realistic(layer) and layer.n >= 8 and layer.hw >= 16
               for layer, _ in check_device.CASES)


def test_na_notes_are_the_whole_error_message():
    by_name = {layer.name: (layer, fmt) for layer, fmt in check_device.CASES}
    cases = [by_name["stride 2, asym pad"], by_name["NHWC 5x5"]]
    rows = check_device.check_convs(["winograd_f4x4"], cases)
    for row, (layer, fmt) in zip(rows, cases):
        x, w = layer.arrays(fmt)
        with pytest.raises(ValueError) as err:
            jconv.conv2d(x, w, impl="winograd_f4x4", data_format=fmt, **layer.conv_kwargs)
        assert row["status"] == "n/a" and row["note"] == str(err.value)
    assert rows[1]["note"].endswith("got kernel_size (kH, kW) = (5, 5); use impl='lax' or "
                                    "impl='fft'")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _half_wrong_dw(x, w, spec):
    return _registry.conv_impl("lax")(x, w, spec)


def _half_wrong_dw_fwd(x, w, spec):
    return _half_wrong_dw(x, w, spec), (x, w)


def _half_wrong_dw_bwd(spec, res, dy):
    x, w = res
    _, vjp = jax.vjp(lambda a, b: _registry.conv_impl("lax")(a, b, spec), x, w)
    dx, dw = vjp(dy)
    # Right in float32, 10% off in the weight gradient of half-precision inputs only.
    return dx, dw * (1.1 if jnp.dtype(w.dtype).itemsize < 4 else 1.0)


_half_wrong_dw.defvjp(_half_wrong_dw_fwd, _half_wrong_dw_bwd)


@pytest.mark.parametrize("dtype_col", ["bf16", "f16"])
def test_a_wrong_half_precision_gradient_fails(monkeypatch, dtype_col):
    monkeypatch.setitem(_registry._REGISTRY, "half_wrong_dw", _registry.Implementation(
        "half_wrong_dw", _half_wrong_dw, "lax, weight gradient 10% off in half precision",
        exact=True))
    (row,) = check_device.check_convs(["half_wrong_dw"], [check_device.QUICK_CASES[-1]])
    assert max(row["y"], row["dx"], row["dw"]) <= check_device.TOL_EXACT
    assert row[dtype_col] > 0.05 and row["status"] == "FAIL"
