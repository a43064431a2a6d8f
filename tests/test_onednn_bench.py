"""python -m jconv.bench.onednn: the table on a tiny layer, and its argument errors."""

from __future__ import annotations

import pytest

from jconv.bench import onednn as bench
from jconv.bench.suite import Layer


def test_prints_medians_and_ratios(monkeypatch, capsys):
    monkeypatch.setitem(bench.NETS, "vgg", lambda: [Layer("vgg", "4->4 @6", 2, 4, 4, 6)])
    bench.main(["--nets", "vgg", "--impls", "lax,onednn", "--threads", "0,1", "--reps", "1"])
    out = capsys.readouterr().out
    assert "onednn/t0" in out and "onednn/t1" in out and "vgg 4->4 @6" in out
    assert "geo-mean time / PyTorch's: lax" in out


def test_unknown_net_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--nets", "resnet"])
    assert "--nets must be a comma list from ('airbench_subset', 'vgg'), got 'resnet'" in \
        capsys.readouterr().err
