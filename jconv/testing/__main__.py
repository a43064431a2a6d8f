"""``python -m jconv.testing package.module:function [options]``: check a function (or, with
``--layer``, a layer factory) and print the report; exit 1 if it failed, 2 with one
``Error:`` line on bad input. ``--help`` lists the options and their defaults."""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from typing import Any, Callable, NoReturn, Sequence

from ._adapters import from_layer, from_nhwc
from ._api import DTYPES, GRIDS, check_conv2d, check_conv_transpose2d
from ._grids import KINDS
from ._nd_api import check_avg_pool2d, check_max_pool2d
from ._report import DEFAULT_TOLERANCES
from ._tolerance import TOLERANCE_MODES

_CHECKS = {"conv2d": check_conv2d, "conv_transpose2d": check_conv_transpose2d,
           "max_pool2d": check_max_pool2d, "avg_pool2d": check_avg_pool2d}
_CONV_OPS = ("conv2d", "conv_transpose2d")
_EXAMPLES = """examples:
  python -m jconv.testing mypackage.convs:my_conv --cases quick
  python -m jconv.testing jconv:max_pool2d --op max_pool2d --dtypes float64,float32
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


def load_target(target: str) -> Callable[..., Any]:
    """``"package.module:function"`` (the function may be dotted: ``module:Class.method``)
    -> the callable; ValueError with a one-line reason otherwise."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
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


def _case_counts() -> str:
    """How many cases each kind holds per --op, counted from the grids (so --help never
    drifts from them): ``"quick 10/3/6/6, default ... for conv2d/conv_transpose2d/..."``."""
    counts = ", ".join(f"{kind} " + "/".join(str(len(GRIDS[op][0](kind))) for op in _CHECKS)
                       for kind in KINDS)
    return f"{counts} for --op {'/'.join(_CHECKS)}"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m jconv.testing",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Check a convolution or pooling against PyTorch's "
                                 "definition, gradients included.", epilog=_EXAMPLES)
    parser.add_argument("target", help="package.module:function to check (with --layer: "
                                       "package.module:make, a layer factory)")
    parser.add_argument("--op", choices=tuple(_CHECKS), default="conv2d",
                        help="which torch.nn.functional op TARGET implements (default: "
                             "%(default)s)")
    parser.add_argument("--cases", choices=KINDS, default="default",
                        help=f"case list: {_case_counts()} (default: %(default)s)")
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


def _adapted(fn: Callable[..., Any], args: argparse.Namespace) -> Callable[..., Any]:
    """``fn`` behind the adapters the flags ask for; ValueError on a combination that makes
    no sense."""
    if (args.layer or args.unbatched) and args.op not in _CONV_OPS:
        raise ValueError(f"--layer and --unbatched are for --op {' or '.join(_CONV_OPS)}, "
                         f"got --op {args.op}")
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
        fn = _adapted(load_target(args.target), args)
        report = _CHECKS[args.op](fn, cases=args.cases, seed=args.seed,
                                  dtypes=tuple(args.dtypes.split(",")), grads=not args.no_grads,
                                  fail_fast=args.fail_fast, tolerances=tolerances or None,
                                  tolerance_mode=args.tolerance_mode)
    except (ValueError, TypeError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
