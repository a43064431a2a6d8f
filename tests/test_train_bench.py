"""train.bench: the throughput table runs on a tiny model and rejects bad arguments (the
timings themselves are not tested)."""

from __future__ import annotations

import pytest

from train.bench import main

from train_helpers import TINY


def test_bench_prints_a_row_per_impl_and_format(capsys):
    pytest.importorskip("torch")
    assert main(["--config", "vgg.yaml", "--impls", "lax,im2col", "--formats", "NHWC,NCHW",
                 "--rounds", "1", "--steps", "1", "data.source=synthetic", *TINY]) == 0
    out = capsys.readouterr().out
    for name in ("lax/NHWC", "im2col/NHWC", "lax/NCHW", "im2col/NCHW", "torch/NHWC",
                 "torch/NCHW"):
        assert f"\n{name} " in out


def test_bench_defaults_to_the_configs_path_and_skips_a_missing_torch(capsys, monkeypatch):
    import train.torch_ref

    monkeypatch.setattr(train.torch_ref, "load_torch", lambda: None)
    assert main(["--config", "vgg.yaml", "--rounds", "1", "--steps", "1",
                 "data.source=synthetic", *TINY]) == 0
    out = capsys.readouterr().out
    assert "PyTorch is not installed: no PyTorch reference rows" in out
    assert "\nonednn " in out and "\ntorch" not in out  # vgg.yaml: onednn, xla_default


@pytest.mark.parametrize("args, match", [
    (["--impls", "nope"], r"--impls must name .*\['nope'\]"),
    (["--formats", "CHWN"], r"--formats must be NHWC and/or NCHW, got 'CHWN'"),
    (["--rounds", "0"], r"--rounds and --steps >= 1"),
])
def test_bench_argument_errors(capsys, args, match):
    assert main(["--config", "vgg.yaml", *args]) == 2
    assert __import__("re").search(match, capsys.readouterr().err)
