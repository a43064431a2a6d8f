"""Smoke tests of the benchmark harness (quick mode). Nothing here asserts a timing."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest

import jconv
from jconv.bench import __main__ as cli
from jconv.bench import report, run
from jconv.bench.suite import Layer, suite


@pytest.fixture(autouse=True)
def _no_measuring():
    jconv.set_auto_measure(False)  # the heuristic: fast and deterministic
    yield
    jconv.set_auto_measure(None)


def test_quick_run_writes_table_csv_json_and_chart(tmp_path, capsys, monkeypatch):
    sizes = []
    real_case = run.matmul_case
    monkeypatch.setattr(run, "matmul_case", lambda size: sizes.append(size) or real_case(size))
    rc = cli.main(["--mode", "quick", "--impls", "auto,auto+eigen", "--formats", "NCHW",
                   "--reps", "1", "--no-torch", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "XLA 1024^3 float32 matmul" in out and "fwd_bwd_vs_lax" in out
    # Readable in a terminal; auto's choices are listed under the table, not in a column.
    assert max(len(line) for line in out.splitlines()) <= 120
    assert "auto's choices (forward-only call; fwd/dx/dw under differentiation):" in out
    assert sizes == [1024]  # the reference matmul is 1024^3 in quick mode too, not 256^3
    rows = list(csv.DictReader((tmp_path / "layers_quick.csv").open()))
    assert len(rows) == len(suite("quick")) * 3  # lax is always added as the baseline
    assert {r["impl"] for r in rows} == {"lax", "auto", "auto+eigen"}
    assert list(rows[0]) == list(report.COLUMNS)
    for r in rows:
        assert float(r["fwd_ms"]) > 0 and float(r["fwd_bwd_ms"]) > 0
        assert float(r["matmul_gflops"]) > 0
        if r["impl"] == "lax":
            assert float(r["fwd_bwd_vs_lax"]) == 1.0
            assert r["auto_fwd_only"] == r["auto_fwd_dx_dw"] == ""
        else:
            assert r["auto_fwd_dx_dw"].count("/") == 2
            assert r["auto_fwd_only"] in jconv.CONV_IMPLS
            assert f"{r['layer']} NCHW {r['impl']}: {r['auto_fwd_only']}; " in out
    meta = json.loads((tmp_path / "layers_quick.json").read_text())["meta"]
    assert meta["matmul_peak_gflops"] > 0 and meta["auto_measure"] is False
    assert set(meta["columns"]) == set(report.COLUMNS)
    assert (tmp_path / "layers_quick.png").stat().st_size > 1000


def test_default_output_folder_is_ignored_by_git():
    """A plain run must not dirty the checkout (it used to write into docs/bench)."""
    out = cli.parse_args([]).out
    assert out == Path("bench_out")
    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    probe = out / "layers_quick.csv"
    done = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=root)
    assert done.returncode == 0, f"{probe} is not ignored by .gitignore"


def test_help_explains_every_column_and_states_durations(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    text = capsys.readouterr().out
    for name in report.COLUMNS:
        assert f"  {name}  " in text or f"  {name} " in text, name
    assert "seconds" not in text.split("--impls")[0]  # --mode no longer promises seconds
    assert "minutes" in text and "bench_out/" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_printed_table_fits_120_columns_for_the_longest_full_layer():
    layer = max((layer.name for layer in suite("full")), key=len)
    row = dict(layer=layer, format="NDHWC", impl="auto+eigen", compile_s=123.456,
               fwd_ms=1234.567, fwd_bwd_ms=12345.678, fwd_vs_lax=0.123, fwd_bwd_vs_lax=12.345,
               fwd_bwd_vs_torch=12.345, pct_matmul=100.0, mem_mb=1234.5)
    assert max(len(line) for line in report.format_table([row]).splitlines()) <= 120


def test_pct_matmul_is_against_the_best_matmul_rate_of_the_run(monkeypatch):
    """Each layer's own matmul median was the reference before; under load it could be slower
    than the layer's convs (pct above 100). Fixed fake timings, nothing measured."""
    matmul_ms = iter([400.0, 200.0])  # layer 1's matmul ran at half the rate of layer 2's

    def fake_medians(fns, reps):
        return {k: next(matmul_ms) if k == "__matmul__" else 1.0 for k in fns}

    monkeypatch.setattr(run, "interleaved_medians", fake_medians)
    layers = suite("quick")[:2]
    rows = run.run_layers(layers, ["lax"], ["NHWC"], 1, with_torch=False, start_gflops=1.0)
    best = 2 * 1024 ** 3 / (200.0 * 1e6)
    assert [r["matmul_gflops"] for r in rows] == [round(best / 2, 1), round(best, 1)]
    for layer, r in zip(layers, rows):
        assert r["pct_matmul"] == round(100 * (3 * layer.fwd_flops / 1e6) / best, 1)


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


def test_nd_layer_shapes_formats_and_flops():
    wave = Layer("t", "t", n=2, c_in=4, c_out=8, hw=20, kernel=2, padding=0, dilation=4,
                 ndim=1)
    # 2 * N * L_out * C_out * C_in * k, L_out = 20 - 4*(2-1) = 16
    assert wave.fwd_flops == 2 * 2 * 16 * 8 * 4 * 2
    assert wave.data_format("NCHW") == "NCL" and wave.data_format("NHWC") == "NLC"
    assert wave.x_shape("NLC") == (2, 20, 4) and wave.w_shape == (8, 4, 2)
    vol = Layer("t", "t", n=1, c_in=6, c_out=6, hw=5, groups=6, ndim=3)
    assert vol.fwd_flops == 2 * 1 * 5 ** 3 * 6 * 1 * 27
    assert vol.data_format("NCHW") == "NCDHW" and vol.x_shape("NHWC") == (1, 5, 5, 5, 6)
    x_first, w = vol.arrays("NCDHW")
    x_last, w_last = vol.arrays("NDHWC")
    assert x_first.shape == (1, 6, 5, 5, 5) and w.shape == (6, 1, 3, 3, 3)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(x_first), 1, -1), x_last)
    np.testing.assert_array_equal(w, w_last)


@pytest.mark.parametrize("ndim,fmt", [(1, "NHWC"), (3, "NCHW")])
def test_nd_layers_run_through_the_bench_and_torch(ndim, fmt):
    """A 1-D and a 3-D layer through run_layers with the PyTorch column: the rows name the
    layer's own format, and the bench's compiled conv is jconv's N-D conv of those arrays."""
    from jconv.bench.timing import ConvCase

    layer = Layer("t", "t", n=1, c_in=4, c_out=4, hw=12 if ndim == 1 else 5, kernel=2,
                  padding="same", dilation=2, groups=2, ndim=ndim)
    rows = run.run_layers([layer], ["lax", "im2col"], [fmt], 1, with_torch=True)
    want_fmt = layer.data_format(fmt)
    assert want_fmt == ("NLC" if ndim == 1 else "NCDHW")
    assert {r["format"] for r in rows} == {want_fmt}
    impls = {r["impl"] for r in rows}
    assert impls >= {"lax", "im2col"} and impls <= {"lax", "im2col", "torch"}
    for r in rows:
        assert r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0
    case = ConvCase(layer, "im2col", fmt)
    want = jconv.convnd(case.x, case.w, data_format=want_fmt, precision="highest",
                        **layer.conv_kwargs)
    np.testing.assert_allclose(case.fwd(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ndim,fmt", [(1, "NCHW"), (3, "NHWC")])
def test_transposed_layers_run_through_the_bench_and_torch(ndim, fmt):
    """A transposed layer's case is conv_transpose{n}d of its arrays (weights (C_in,
    C_out/groups, *k)); its rows carry PyTorch's conv_transpose time and the ratio to it."""
    from jconv.bench.timing import ConvCase
    from jconv.bench.torch_ref import TorchCase, load_torch

    layer = Layer("t", "up", n=1, c_in=4, c_out=6, hw=5, kernel=4, stride=2, padding=1,
                  groups=2, ndim=ndim, transposed=True)
    assert layer.w_shape == (4, 3, *(4,) * ndim)
    rows = run.run_layers([layer], ["lax"], [fmt], 1, with_torch=True)
    lax_row = next(r for r in rows if r["impl"] == "lax")
    assert lax_row["fwd_bwd_vs_torch"] > 0
    assert report.format_torch_geomean(rows).startswith("geo-mean fwd+bwd time / PyTorch's: lax")
    case = ConvCase(layer, "lax", fmt)
    fn = {1: jconv.conv_transpose1d, 3: jconv.conv_transpose3d}[ndim]
    want = fn(case.x, case.w, data_format=layer.data_format(fmt), precision="highest",
              **layer.conv_kwargs)
    assert case.fwd().shape == want.shape == (
        (1, 6, 10) if ndim == 1 else (1, 10, 10, 10, 6))
    np.testing.assert_allclose(case.fwd(), want, rtol=1e-4, atol=1e-4)
    torch_case = TorchCase(load_torch(), layer, fmt)  # channels first or channels_last_3d
    x, w = (t.detach().numpy() for t in (torch_case.x, torch_case.w))
    np.testing.assert_allclose(torch_case.fwd().numpy(),
                               fn(x, w, precision="highest", **layer.conv_kwargs),
                               rtol=1e-4, atol=1e-4)


def test_full_suite_covers_required_layers():
    layers = suite("full")
    assert {layer.suite for layer in layers} == {"cifar", "resnet18", "special", "conv1d",
                                                 "conv3d", "transposed"}
    assert {layer.ndim for layer in layers if layer.transposed} == {1, 2, 3}
    assert {layer.suite for layer in layers if layer.transposed} == {"transposed"}
    assert {layer.ndim for layer in layers if layer.suite == "conv1d"} == {1}
    assert {layer.ndim for layer in layers if layer.suite == "conv3d"} == {3}
    assert {layer.dilation for layer in layers if layer.suite == "conv1d"} >= {1, 2, 4, 8}
    for nd_suite in ("conv1d", "conv3d"):  # dense and depthwise in each
        nd = [layer for layer in layers if layer.suite == nd_suite]
        assert any(layer.groups == 1 for layer in nd)
        assert any(layer.groups == layer.c_in > 1 for layer in nd)
    assert {layer.ndim for layer in suite("quick")} == {2}  # quick stays quick
    assert any(layer.stride > 1 for layer in layers)
    assert any(layer.dilation > 1 for layer in layers)
    assert any(1 < layer.groups < layer.c_in for layer in layers)
    assert any(layer.groups == layer.c_in > 1 for layer in layers)


def test_suite_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode must be 'quick' or 'full', got 'medium'"):
        suite("medium")


def test_cli_suites_include_the_nd_layers():
    assert cli.parse_args(["--mode", "full", "--suites", "conv1d,conv3d"]).suites == [
        "conv1d", "conv3d"]
    assert cli.parse_args([]).suites == ["cifar", "resnet18", "special", "conv1d", "conv3d",
                                         "transposed"]


def test_cli_accepts_deprecated_impl_names_with_a_warning():
    with pytest.warns(DeprecationWarning) as record:
        args = cli.parse_args(["--impls", "winograd,winograd2+eigen,auto"])
    assert [str(w.message).split(";")[0] for w in record] == [
        "impl='winograd' is deprecated", "impl='winograd2' is deprecated"]
    assert args.impls == ["lax", "winograd_f4x4", "winograd_f2x2+eigen", "auto"]


@pytest.mark.parametrize("argv,message", [
    (["--impls", "nope"], "--impls must be a comma list from"),
    (["--impls", "lax,nope+eigen"], "got 'lax,nope+eigen'"),
    (["--formats", "NCWH"], "--formats must be a comma list from"),
    (["--suites", "conv2d"], "--suites must be a comma list from"),
    (["--reps", "0"], "--reps must be >= 1, got 0"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(argv)
    assert message in capsys.readouterr().err
