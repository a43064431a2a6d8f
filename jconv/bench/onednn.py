"""``python -m jconv.bench.onednn [--reps N] [--nets airbench_subset,vgg,conv1d,conv3d,transposed]
[--threads 0,1] [--format NHWC|NCHW]``: the convolutions of the two CIFAR training networks
(and, with ``--nets``, the 1-D, 3-D and transposed layers of ``python -m jconv.bench``'s full
suite), forward + backward, float32 (channels last, NLC/NHWC/NDHWC, unless ``--format NCHW``:
NCL/NCHW/NCDHW),
``impl="onednn"`` against XLA's convolution (``lax``, ``lax+eigen``) and PyTorch, interleaved
in one process; prints medians (ms) and ratios to PyTorch's time, with the load average.
``--threads`` times ``onednn`` once per oneDNN thread count (0: OpenMP's default), each
column ``onednn/tN``, with the same compiled function.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Sequence

from .._onednn import set_num_threads
from .suite import Layer, conv1d_layers, conv3d_layers, transposed_layers
from .timing import ConvCase, interleaved_medians
from .torch_ref import TorchCase, load_torch


def airbench_subset_layers(n: int = 256) -> list[Layer]:
    """configs/cifar_subset.yaml's convs: the airbench network at widths 48/192/192 (32 -> 31
    after the 2x2 whitening conv, each group pools after its first conv)."""
    spec = [(24, 48, 31), (48, 48, 15), (48, 192, 15), (192, 192, 7), (192, 192, 7),
            (192, 192, 3)]
    return [Layer("airbench_subset", f"{ci}->{co} @{hw}", n, ci, co, hw) for ci, co, hw in spec]


def vgg_yaml_layers(n: int = 128) -> list[Layer]:
    """configs/vgg.yaml's convs (widths 48/96/192, two per stage, pool after a stage)."""
    spec = [(3, 48, 32), (48, 48, 32), (48, 96, 16), (96, 96, 16), (96, 192, 8), (192, 192, 8)]
    return [Layer("vgg", f"{ci}->{co} @{hw}", n, ci, co, hw) for ci, co, hw in spec]


NETS = {"airbench_subset": airbench_subset_layers, "vgg": vgg_yaml_layers,
        "conv1d": lambda: conv1d_layers(4), "conv3d": lambda: conv3d_layers(2),
        "transposed": lambda: transposed_layers(4)}
DEFAULT_NETS = ("airbench_subset", "vgg")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jconv.bench.onednn", description=__doc__)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--nets", default=",".join(DEFAULT_NETS),
                   help=f"comma list from {tuple(NETS)} (default {','.join(DEFAULT_NETS)})")
    p.add_argument("--impls", default="lax,lax+eigen,onednn")
    p.add_argument("--threads", default="0")
    p.add_argument("--format", choices=("NHWC", "NCHW"), default="NHWC")
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    nets = [s.strip() for s in args.nets.split(",")]
    if any(n not in NETS for n in nets):
        p.error(f"--nets must be a comma list from {tuple(NETS)}, got {args.nets!r}")
    impls = [s.strip() for s in args.impls.split(",")]
    columns = [f"{i}/t{t}" if i == "onednn" and len(threads) > 1 else i
               for i in impls for t in (threads if i == "onednn" else [0])]
    torch = load_torch()
    ratios: dict[str, list[float]] = {c: [] for c in columns}
    print(f"load average at start: {os.getloadavg()}")
    header = "".join(f"{c:>12}" for c in columns) + f"{'torch':>10}  " + \
        "  ".join(f"{c}/torch" for c in columns)
    print(f"{f'layer ({args.format} f32, fwd+bwd ms)':32}{header}")
    for net in nets:
        for layer in NETS[net]():
            cases = {i: ConvCase(layer, i, args.format) for i in impls}
            fns = {}
            for col in columns:
                case, t = cases[col.split("/")[0]], int(col.split("/t")[1]) if "/t" in col else 0

                def run(case: ConvCase = case, t: int = t) -> object:
                    set_num_threads(t)
                    return case.fwd_bwd()
                fns[col] = run
            if torch is not None:
                fns["torch"] = TorchCase(torch, layer, args.format).fwd_bwd
            ms = interleaved_medians(fns, args.reps)
            ref = ms.get("torch", float("nan"))
            for c in columns:
                ratios[c].append(ms[c] / ref)
            print(f"{net + ' ' + layer.name:32}" + "".join(f"{ms[c]:12.1f}" for c in columns)
                  + f"{ref:10.1f}  " + "  ".join(f"{ms[c] / ref:9.2f}" for c in columns),
                  flush=True)
    geo = {i: math.exp(sum(map(math.log, r)) / len(r)) for i, r in ratios.items()}
    print("geo-mean time / PyTorch's: " + ", ".join(f"{i} {g:.2f}x" for i, g in geo.items()))
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
