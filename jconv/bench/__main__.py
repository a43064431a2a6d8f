"""CLI: ``python -m jconv.bench [--mode quick|full] ...``; prints a table, writes CSV/JSON/PNG
to ``--out`` (default ``bench_out/``, ignored by git).

The training benchmark (a whole train step per implementation) is ``python -m train.bench``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax

from .._registry import CONV_IMPLS
from .._auto import measuring_enabled
from .._onednn import available as onednn_available
from .report import (COLUMN_HELP, columns_help, format_auto_choices, format_table,
                     format_torch_geomean, layer_chart, write_files)
from .run import run_layers
from .suite import SUITES, suite
from .timing import EIGEN_SUFFIX, MATMUL_SIZE, current_label, matmul_peak_gflops
from .torch_ref import load_torch

# onednn where its extension loads (CPU hosts with the built extension).
DEFAULT_IMPLS = "lax,im2col,loops,auto,lax+eigen,auto+eigen" + (
    ",onednn" if onednn_available() else "")
DEFAULT_OUT = Path("bench_out")  # ignored by git: a run never dirties the checkout
IMPL_LABELS = tuple(CONV_IMPLS) + tuple(i + EIGEN_SUFFIX for i in CONV_IMPLS)


def _csv_list(value: str, allowed: Sequence[str], name: str,
              rename: Callable[[str], str] = str) -> list[str]:
    items = [rename(v.strip()) for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{name} must be a comma list from {tuple(allowed)}, "
                                         f"got {value!r}")
    return items


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m jconv.bench",
        description="Time every conv implementation on a suite of layers, interleaved in one\n"
                    "process; print a table and write CSV, JSON and a PNG chart to --out.\n"
                    "The training benchmark is python -m train.bench.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="columns of the CSV/JSON rows (the printed table shows the main ones; auto's\n"
               "choices are listed below it):\n" + columns_help())
    p.add_argument("--mode", choices=("quick", "full"), default="quick",
                   help="quick (default): 3 small layers at batch 4, NCHW and NHWC; a few "
                        "minutes on a 2-core CPU (compiling, and auto measuring each new "
                        "shape, take most of it), longer under load. full: the suite of "
                        "docs/performance.md (CIFAR batch 128, ResNet-18 batch 8, special "
                        "batch 32, 1-D batch 4, 3-D batch 2); for cifar,resnet18,special its "
                        "compile and timed calls alone add up to ~7 min on a quiet 2-core CPU")
    p.add_argument("--impls", default=DEFAULT_IMPLS,
                   help="comma list of jconv impls, each optionally with +eigen (compiled "
                        "with jconv.conv_compiler_options('eigen')); lax is always added; "
                        "the deprecated winograd/winograd2 mean winograd_f4x4/f2x2; "
                        f"default {DEFAULT_IMPLS}")
    p.add_argument("--formats", default="NCHW,NHWC", help="comma list of NCHW,NHWC")
    p.add_argument("--suites", default=",".join(SUITES),
                   help=f"full mode: comma list of {','.join(SUITES)} (conv1d: a WaveNet-"
                        "style dilated stack and a depthwise conv at length 4000; conv3d: a "
                        "24^3 volume, dense and depthwise 3x3x3; transposed: 2x upsampling "
                        "conv_transpose1d/2d/3d)")
    p.add_argument("--reps", type=int, default=None,
                   help="timed repetitions per case after warm-up (default quick 3, full 7)")
    p.add_argument("--no-torch", action="store_true", help="leave out the PyTorch column")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"folder for layers_<mode>.csv/.json/.png (default {DEFAULT_OUT}/, "
                        "ignored by git; docs/bench holds the published runs)")
    args = p.parse_args(argv)
    try:
        impls = _csv_list(args.impls, IMPL_LABELS, "--impls", rename=current_label)
        args.formats = _csv_list(args.formats.upper(), ("NCHW", "NHWC"), "--formats")
        args.suites = _csv_list(args.suites, SUITES, "--suites")
    except argparse.ArgumentTypeError as err:
        p.error(str(err))
    args.impls = ["lax"] + [i for i in impls if i != "lax"]
    if args.reps is None:
        args.reps = 3 if args.mode == "quick" else 7
    if args.reps < 1:
        p.error(f"--reps must be >= 1, got {args.reps}")
    return args


def _meta(args: argparse.Namespace, peak: float) -> dict[str, Any]:
    torch = None if args.no_torch else load_torch()
    return dict(date_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), mode=args.mode,
                reps=args.reps, statistic=f"median of {args.reps} after warm-up",
                jax=jax.__version__, backend=jax.default_backend(),
                device=str(jax.devices()[0]), cpu_count=os.cpu_count(),
                cpu=platform.processor() or platform.machine(),
                torch=getattr(torch, "__version__", None), matmul_peak_gflops=round(peak, 1),
                auto_measure=measuring_enabled(), columns=COLUMN_HELP)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    peak = matmul_peak_gflops()
    meta = _meta(args, peak)
    print(f"# jconv bench ({args.mode}): {meta['device']}, {meta['cpu_count']} CPUs, "
          f"jax {meta['jax']}, torch {meta['torch']}; {meta['statistic']}\n"
          f"# XLA {MATMUL_SIZE}^3 float32 matmul {peak:.1f} GFLOP/s at start; "
          "column meanings: --help")
    layers = suite(args.mode)
    if args.mode == "full":
        layers = [layer for layer in layers if layer.suite in args.suites]
    rows = run_layers(layers, args.impls, args.formats, args.reps, not args.no_torch,
                      start_gflops=peak)
    print(format_table(rows))
    geomean = format_torch_geomean(rows)
    if geomean:
        print(geomean)
    choices = format_auto_choices(rows)
    if choices:
        print(choices)
    paths = write_files(args.out, f"layers_{args.mode}", rows, meta)
    paths.append(layer_chart(rows, args.out / f"layers_{args.mode}.png",
                             f"jconv fwd+bwd speedup over lax ({args.mode})"))
    print("wrote " + "\n      ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
