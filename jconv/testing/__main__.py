"""``python -m jconv.testing package.module:function [options]``: check a function (or, with
``--layer``, a layer factory) and print the report; exit 1 if it failed, 2 with one
``Error:`` line on bad input. ``--op`` is any op of the grid table (``GRIDS``), several
(comma-separated) or ``all``; a module TARGET (no ``:function``) is checked as
``TARGET.<op>`` for each. ``--help`` lists the options, the ops and their case counts."""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from typing import Any, Callable, NoReturn, Sequence

from ._adapters import from_layer, from_nhwc
from ._api import DTYPES, check_op
from ._grids import GRIDS, KINDS
from ._report import DEFAULT_TOLERANCES
from ._tolerance import TOLERANCE_MODES

# The adapters are written for 2-D convs (from_layer) and 2-D channels-last arrays (from_nhwc).
_LAYER_OPS = ("conv2d", "conv_transpose2d")
_NHWC_OPS = tuple(op for op in GRIDS if op.endswith("2d"))
_EXAMPLES = """examples:
  python -m jconv.testing mypackage.convs:my_conv --cases quick
  python -m jconv.testing jconv:max_pool2d --op max_pool2d --dtypes float64,float32
  python -m jconv.testing jconv --op all --cases quick     # jconv.<op> for every op
  python -m jconv.testing mymodule --op conv1d,conv3d      # mymodule.conv1d, .conv3d
  python -m jconv.testing mymodule:make_eqx_conv --layer --unbatched     # an Equinox layer
  python -m jconv.testing mymodule:make_nnx_conv --layer --nhwc --weight HWIO  # Flax nnx.Conv
  python -m jconv.testing mymodule:my_conv --dtypes bfloat16 --tolerance-mode half-sum

--layer: TARGET is make(w, b, *, stride, padding, dilation, groups) returning a layer that
holds weight w (C_out, C_in/groups, kH, kW) and bias b; see docs/testing.md."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``Error:`` line (exit status 2), like every other
    bad input of this command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"Error: {message} (see --help)\n")


def load_target(target: str, op: str | None = None) -> Callable[..., Any]:
    """``"package.module:function"`` (the function may be dotted: ``module:Class.method``)
    -> the callable; a bare ``"package.module"`` names its attribute ``op``. ValueError with
    a one-line reason otherwise."""
    module_name, sep, attr = target.partition(":")
    if not sep and op is not None:
        attr = op
    if not module_name or not attr:
        raise ValueError(f"target must look like 'package.module:function' (or "
                         f"'package.module' to check package.module.<op>), got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{target!r} is not callable (got {type(obj).__name__})")
    return obj


def parse_tolerance(text: str) -> tuple[str, tuple[float, float]]:
    """``"bfloat16=2e-2,3e-2"`` -> ``("bfloat16", (0.02, 0.03))``; ValueError otherwise."""
    dtype, sep, values = text.partition("=")
    try:
        fwd, grad = (float(v) for v in values.split(","))
    except ValueError:  # not numbers, or not two of them
        fwd = grad = -1.0
    if not sep or dtype not in DEFAULT_TOLERANCES or not (fwd >= 0 and grad >= 0):
        raise ValueError(f"--tolerance must look like DTYPE=FORWARD,GRAD with DTYPE one of "
                         f"{tuple(DEFAULT_TOLERANCES)} and non-negative numbers (e.g. "
                         f"bfloat16=2e-2,3e-2), got {text!r}")
    return dtype, (fwd, grad)


def parse_ops(text: str) -> list[str]:
    """``"all"`` or comma-separated op names -> the ops; ValueError naming the bad one."""
    ops = list(GRIDS) if text == "all" else text.split(",")
    bad = [op for op in ops if op not in GRIDS]
    if bad or not ops:
        raise ValueError(f"--op must be 'all' or comma-separated ops of {', '.join(GRIDS)}, "
                         f"got {text!r}")
    return ops


def _case_counts() -> str:
    """Each op with its case counts per kind, counted from the grids (so --help never
    drifts from them): ``"conv1d 4/16/68, conv2d 10/49/225, ..."``."""
    return ", ".join(f"{op} " + "/".join(str(len(grid(kind))) for kind in KINDS)
                     for op, (grid, _) in GRIDS.items())


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m jconv.testing",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Check a convolution or pooling against PyTorch's "
                                 "definition, gradients included.", epilog=_EXAMPLES)
    parser.add_argument("target", help="package.module:function to check (with --layer: "
                                       "package.module:make, a layer factory), or "
                                       "package.module to check package.module.<op>")
    parser.add_argument("--op", default="conv2d", metavar="OP[,OP...]|all",
                        help="which torch.nn.functional op(s) TARGET implements, with their "
                             f"{'/'.join(KINDS)} case counts: {_case_counts()} (default: "
                             "%(default)s)")
    parser.add_argument("--cases", "--grid", choices=KINDS, default="default",
                        help="case list (counts per --op above) (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random cases (default: %(default)s)")
    parser.add_argument("--dtypes", default=",".join(DTYPES),
                        help="comma-separated, from " + ", ".join(DEFAULT_TOLERANCES)
                        + " (default: %(default)s)")
    parser.add_argument("--no-grads", action="store_true", help="check the forward pass only")
    parser.add_argument("--fail-fast", action="store_true",
                        help="stop at the first failing case")
    adapters = parser.add_argument_group("adapters (for functions and layers of other "
                                         "conventions)")
    adapters.add_argument("--layer", action="store_true",
                          help="TARGET is make(w, b, **conv_kwargs) returning a layer called "
                               "as layer(x) (testing.from_layer)")
    adapters.add_argument("--unbatched", action="store_true",
                          help="with --layer: the layer takes one example (C, H, W), as "
                               "Equinox's do; a batch is mapped with jax.vmap")
    adapters.add_argument("--nhwc", action="store_true",
                          help="TARGET takes and returns channels-last arrays "
                               "(testing.from_nhwc)")
    adapters.add_argument("--weight", choices=("OIHW", "HWIO"), default="OIHW",
                          help="with --nhwc: the kernel layout TARGET expects, HWIO for "
                               "Flax/TF (default: %(default)s)")
    tolerances = parser.add_argument_group("tolerances")
    tolerances.add_argument("--tolerance-mode", choices=TOLERANCE_MODES, default="pytorch",
                            help="pytorch: half precisions as PyTorch computes them (float32 "
                                 "accumulation); half-sum: also accept a bias gradient summed "
                                 "in the half precision itself (a plain y + b in bfloat16) "
                                 "(default: %(default)s)")
    tolerances.add_argument("--tolerance", action="append", default=[], metavar="DTYPE=FWD,GRAD",
                            help="override one dtype's (forward, gradient) tolerances, e.g. "
                                 "bfloat16=2e-2,3e-2; repeatable (default: the table in "
                                 "docs/testing.md)")
    return parser


def _class_message(target: str) -> str:
    return (f"{target!r} is a class, not a conv function: build the layer and use from_layer. "
            f"Write make(w, b, *, stride, padding, dilation, groups) returning the layer with "
            f"weight w and bias b, then run: python -m jconv.testing yourmodule:make --layer "
            f"(add --unbatched for a layer taking (C, H, W), --nhwc --weight HWIO for "
            f"channels-last)")


def _adapted(fn: Callable[..., Any], op: str, args: argparse.Namespace) -> Callable[..., Any]:
    """``fn`` behind the adapters the flags ask for; ValueError on a combination that makes
    no sense."""
    if (args.layer or args.unbatched) and op not in _LAYER_OPS:
        raise ValueError(f"--layer and --unbatched are for --op {' or '.join(_LAYER_OPS)}, "
                         f"got --op {op}")
    if args.nhwc and op not in _NHWC_OPS:
        raise ValueError(f"--nhwc is for the ops with two spatial dims "
                         f"({', '.join(_NHWC_OPS)}), got --op {op}")
    if args.unbatched and not args.layer:
        raise ValueError("--unbatched needs --layer (it describes the layer's input)")
    if args.weight != "OIHW" and not args.nhwc:
        raise ValueError(f"--weight {args.weight} needs --nhwc")
    if inspect.isclass(fn) and not args.layer:
        raise ValueError(_class_message(args.target))
    if args.layer:
        fn = from_layer(fn, batched=not args.unbatched)
    return from_nhwc(fn, weight=args.weight) if args.nhwc else fn


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        tolerances = dict(parse_tolerance(t) for t in args.tolerance)
        ops = parse_ops(args.op)
        if len(ops) > 1 and ":" in args.target:
            raise ValueError(f"several ops need a module TARGET (checked as TARGET.<op>), "
                             f"got {args.target!r}")
        fns = {op: _adapted(load_target(args.target, op), op, args) for op in ops}
        reports = [check_op(fn, op, cases=args.cases, seed=args.seed,
                            dtypes=tuple(args.dtypes.split(",")), grads=not args.no_grads,
                            fail_fast=args.fail_fast, tolerances=tolerances or None,
                            tolerance_mode=args.tolerance_mode) for op, fn in fns.items()]
    except (ValueError, TypeError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print("\n\n".join(str(r) for r in reports))
    failed = [r.op for r in reports if not r.passed]
    if len(reports) > 1:
        print(f"\n{len(reports) - len(failed)} of {len(reports)} ops passed"
              + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
