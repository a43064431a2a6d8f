"""``python -m jconv.testing package.module:function [--op conv2d] [--cases quick|default|full]
[--seed N] [--dtypes float64,float32] [--no-grads] [--fail-fast]``: check a function and
print the report; exit 1 if it failed, 2 on bad input."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable, Sequence

from ._api import (DTYPES, check_avg_pool2d, check_conv2d, check_conv_transpose2d,
                   check_max_pool2d)
from ._grids import KINDS

_CHECKS = {"conv2d": check_conv2d, "conv_transpose2d": check_conv_transpose2d,
           "max_pool2d": check_max_pool2d, "avg_pool2d": check_avg_pool2d}


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jconv.testing",
                                     description="Check a convolution against PyTorch's "
                                                 "definition, gradients included.")
    parser.add_argument("target", help="package.module:function to check")
    parser.add_argument("--op", choices=tuple(_CHECKS), default="conv2d")
    parser.add_argument("--cases", choices=KINDS, default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtypes", default=",".join(DTYPES),
                        help="comma-separated, e.g. float64,float32")
    parser.add_argument("--no-grads", action="store_true", help="check the forward pass only")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failing case")
    args = parser.parse_args(argv)
    try:
        fn = load_target(args.target)
        report = _CHECKS[args.op](fn, cases=args.cases, seed=args.seed,
                                  dtypes=tuple(args.dtypes.split(",")), grads=not args.no_grads,
                                  fail_fast=args.fail_fast)
    except (ValueError, TypeError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
