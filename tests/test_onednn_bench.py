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
    assert ("--nets must be a comma list from ('airbench_subset', 'vgg', 'conv1d', 'conv3d', "
            "'transposed'), got 'resnet'") in capsys.readouterr().err


@pytest.mark.parametrize("net,layer", [
    ("conv1d", Layer("conv1d", "k2 d2 4 @9", 2, 4, 4, 9, kernel=2, padding="same",
                     dilation=2, ndim=1)),
    ("conv3d", Layer("conv3d", "4->4 @4^3", 1, 4, 4, 4, ndim=3)),
    ("transposed", Layer("transposed", "up2d 4->2 @4", 1, 4, 2, 4, kernel=4, stride=2,
                         padding=1, transposed=True)),
])
def test_nd_and_transposed_nets_print_onednn_lax_and_torch(monkeypatch, capsys, net, layer):
    monkeypatch.setitem(bench.NETS, net, lambda: [layer])
    bench.main(["--nets", net, "--impls", "lax,onednn", "--reps", "1", "--format", "NCHW"])
    out = capsys.readouterr().out
    assert f"{net} {layer.name}" in out and "onednn/torch" in out
    assert "geo-mean time / PyTorch's: lax" in out and "onednn" in out.splitlines()[-2]
