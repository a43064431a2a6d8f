"""Smoke tests of the benchmark harness (quick mode). Nothing here asserts a timing."""

from __future__ import annotations

import csv
import json

import jax
import pytest

import jconv
from jconv.bench import __main__ as cli
from jconv.bench.suite import Layer, suite


@pytest.fixture(autouse=True)
def _no_measuring():
    jconv.set_auto_measure(False)  # the heuristic: fast and deterministic
    yield
    jconv.set_auto_measure(None)


def test_quick_run_writes_table_csv_json_and_chart(tmp_path, capsys):
    rc = cli.main(["--mode", "quick", "--impls", "auto,auto+eigen", "--formats", "NCHW",
                   "--reps", "1", "--no-torch", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "XLA matmul" in out and "fwd_bwd_speedup" in out
    rows = list(csv.DictReader((tmp_path / "layers_quick.csv").open()))
    assert len(rows) == len(suite("quick")) * 3  # lax is always added as the baseline
    assert {r["impl"] for r in rows} == {"lax", "auto", "auto+eigen"}
    for r in rows:
        assert float(r["fwd_ms"]) > 0 and float(r["fwd_bwd_ms"]) > 0
        assert float(r["matmul_gflops"]) > 0
        if r["impl"] == "lax":
            assert float(r["fwd_bwd_speedup"]) == 1.0
        else:
            assert r["choice"].count("/") == 2
    meta = json.loads((tmp_path / "layers_quick.json").read_text())["meta"]
    assert meta["matmul_peak_gflops"] > 0 and meta["auto_measure"] is False
    assert (tmp_path / "layers_quick.png").stat().st_size > 1000


def test_split_label_and_eigen_case_compile_options():
    """"+eigen" labels compile with the Eigen conv options; plain ones with XLA's defaults."""
    from jconv.bench.timing import ConvCase, split_label

    assert split_label("lax+eigen") == ("lax", "eigen")
    assert split_label("im2col") == ("im2col", "xla_default")
    layer = suite("quick")[1]  # c4 64->64: wide enough for XLA:CPU to consider YNNPACK
    plain, eigen = ConvCase(layer, "lax", "NHWC"), ConvCase(layer, "lax+eigen", "NHWC")
    assert plain.fwd().shape == eigen.fwd().shape
    if jax.default_backend() == "cpu":
        assert "ynn_fusion" in plain._fwd.as_text()  # positive control
        assert "ynn_fusion" not in eigen._fwd.as_text()


def test_layer_flops_formula():
    layer = Layer("t", "t", n=2, c_in=4, c_out=8, hw=10, stride=2, groups=2)
    # 2 * N * H_out * W_out * C_out * (C_in/groups) * kH * kW, H_out = (10 + 2 - 3)//2 + 1 = 5
    assert layer.fwd_flops == 2 * 2 * 5 * 5 * 8 * 2 * 9
    assert layer.x_shape("NHWC") == (2, 10, 10, 4) and layer.w_shape == (8, 2, 3, 3)


def test_full_suite_covers_required_layers():
    layers = suite("full")
    assert {layer.suite for layer in layers} == {"cifar", "resnet18", "special"}
    assert any(layer.stride > 1 for layer in layers)
    assert any(layer.dilation > 1 for layer in layers)
    assert any(1 < layer.groups < layer.c_in for layer in layers)
    assert any(layer.groups == layer.c_in > 1 for layer in layers)


def test_suite_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode must be 'quick' or 'full', got 'medium'"):
        suite("medium")


@pytest.mark.parametrize("argv,message", [
    (["--impls", "nope"], "--impls must be a comma list from"),
    (["--impls", "lax,nope+eigen"], "got 'lax,nope+eigen'"),
    (["--formats", "NCWH"], "--formats must be a comma list from"),
    (["--reps", "0"], "--reps must be >= 1, got 0"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(argv)
    assert message in capsys.readouterr().err
