"""CLI: ``python -m jconv.bench [--mode quick|full] ...``; writes CSV/JSON/PNG.

The training benchmark (a whole train step per implementation) is ``python -m train.bench``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import jax

from .._registry import CONV_IMPLS
from .._auto import measuring_enabled
from .report import format_table, layer_chart, write_files
from .run import run_layers
from .suite import suite
from .timing import EIGEN_SUFFIX, matmul_peak_gflops
from .torch_ref import load_torch

DEFAULT_IMPLS = "lax,im2col,loops,auto,lax+eigen,auto+eigen"
IMPL_LABELS = tuple(CONV_IMPLS) + tuple(i + EIGEN_SUFFIX for i in CONV_IMPLS)


def _csv_list(value: str, allowed: Sequence[str], name: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{name} must be a comma list from {tuple(allowed)}, "
                                         f"got {value!r}")
    return items


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jconv.bench", description=__doc__)
    p.add_argument("--mode", choices=("quick", "full"), default="quick",
                   help="quick: 3 tiny layers, seconds (CI); full: the suite of docs/performance.md")
    p.add_argument("--impls", default=DEFAULT_IMPLS,
                   help="comma list of jconv impls, each optionally with +eigen (compiled "
                        "with jconv.conv_compiler_options('eigen')); lax is always added; "
                        f"default {DEFAULT_IMPLS}")
    p.add_argument("--formats", default="NCHW,NHWC", help="comma list of NCHW,NHWC")
    p.add_argument("--suites", default="cifar,resnet18,special",
                   help="full mode: comma list of cifar,resnet18,special")
    p.add_argument("--reps", type=int, default=None,
                   help="timed repetitions per case after warm-up (default quick 3, full 7)")
    p.add_argument("--no-torch", action="store_true", help="leave out the PyTorch column")
    p.add_argument("--out", type=Path, default=Path("docs/bench"), help="output folder")
    args = p.parse_args(argv)
    try:
        impls = _csv_list(args.impls, IMPL_LABELS, "--impls")
        args.formats = _csv_list(args.formats.upper(), ("NCHW", "NHWC"), "--formats")
        args.suites = _csv_list(args.suites, ("cifar", "resnet18", "special"), "--suites")
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
                auto_measure=measuring_enabled())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    peak = matmul_peak_gflops(size=512 if args.mode == "quick" else 1024)
    meta = _meta(args, peak)
    print(f"# jconv bench ({args.mode}): {meta['device']}, {meta['cpu_count']} CPUs, "
          f"jax {meta['jax']}, torch {meta['torch']}, XLA matmul {peak:.1f} GFLOP/s at start "
          f"(per layer: matmul_gflops), "
          f"{meta['statistic']}")
    layers = suite(args.mode)
    if args.mode == "full":
        layers = [layer for layer in layers if layer.suite in args.suites]
    rows = run_layers(layers, args.impls, args.formats, args.reps, not args.no_torch,
                      matmul_size=256 if args.mode == "quick" else 1024)
    print(format_table(rows))
    paths = write_files(args.out, f"layers_{args.mode}", rows, meta)
    paths.append(layer_chart(rows, args.out / f"layers_{args.mode}.png",
                             f"jconv fwd+bwd speedup over lax ({args.mode})"))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
