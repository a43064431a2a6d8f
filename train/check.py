"""End-to-end check that every conv implementation trains the real model identically.

    python -m train.check --config configs/cifar.yaml data.source=cifar10_dir \\
        data.dir=/path/to/cifar-10-batches-py

For each name in ``jconv.CONV_IMPLS`` the run of the config is built as the trainer builds
it (:class:`train.experiment.Experiment`: the same seed, so identical parameters, the
whitening conv, the optimiser with its Lookahead) as a run of ``--steps`` epochs of one
batch of ``--batch-size`` each, and fed the same real, augmented training batches:

1. float32: loss and gradient of one train-mode step at the initial parameters, compared
   per parameter tensor with the float64 gradient of ``--reference`` (default ``lax``) at
   the same parameters and batch, as max |g - g64| / max |g64|. A tensor passes within
   ``--tol32`` or within ``FLOAT32_SLACK`` times the reference's own float32 error on it:
   in a max-pooling network float32 rounding flips some pool argmaxes and moves gradient
   between pixels, so the reference itself can be 1e-2 off on late conv kernels while every
   other tensor agrees to 1e-6 (the worst tensor is reported);
2. float64: that run's ``--steps`` training steps (the trainer's step: optimiser, schedule
   and Lookahead); the loss at every step and the final parameters are compared the same
   way, tolerance ``--tol64``.

It prints a PASS/FAIL table and exits 1 if any implementation fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

import jax
import numpy as np

from .config import Config, load_config, override
from .errors import ConfigError, command
from .experiment import Experiment, RunData


def max_rel_err(tree: Any, ref: Any) -> float:
    """Worst over leaves of max |a - r| / max |r| (0 when both are all zeros).

    Example:
      >>> round(max_rel_err({"a": np.array([1.0, 2.1])}, {"a": np.array([1.0, 2.0])}), 6)
      0.05
    """
    return max(tensor_errors(tree, ref).values(), default=0.0)


def check_config(cfg: Config, steps: int, batch_size: int) -> Config:
    """``cfg`` as the run the check replays: ``steps`` epochs of one batch of
    ``batch_size`` (its schedule and Lookahead span those steps)."""
    return override(cfg, [f"train.epochs={steps}", "train.max_steps_per_epoch=1",
                          f"train.batch_size={batch_size}"])


def _experiment(cfg: Config, data: RunData, impl: str, dtype: str) -> Experiment:
    return Experiment.from_config(
        override(cfg, [f"model.conv_impl={impl}", f"model.dtype={dtype}"]), data=data)


# A float32 gradient tensor may be this many times further from the float64 gradient than
# the reference's own float32 one: implementations round differently, and where rounding
# flips a max-pool argmax the error is set by the flips, not by the convolution.
FLOAT32_SLACK = 3.0


def grads(cfg: Config, data: RunData, impl: str, batch: dict, dtype: str = "float32",
          start: Any = None) -> tuple[float, Any, Any]:
    """(loss, gradient pytree, (params, batch_stats) it was taken at) of one train-mode step
    in ``dtype``: at the initial parameters, or at ``start`` (cast to ``dtype``)."""
    exp = _experiment(cfg, data, impl, dtype)
    params, stats = exp.state.params, exp.state.batch_stats
    if start is not None:
        params, stats = jax.tree.map(lambda a: np.asarray(a, dtype), start)
    loss, g = exp.grad_fn()(params, stats, batch["image"].astype(dtype), batch["label"])
    return float(loss), jax.device_get(g), jax.device_get((params, stats))


def tensor_errors(tree: Any, ref: Any) -> dict[str, float]:
    """max |a - r| / max |r| for each leaf, keyed by its path (|a - r| where r is all zeros).

    Example:
      >>> tensor_errors({"a": np.array([1.0, 2.1])}, {"a": np.array([1.0, 2.0])})
      {"['a']": 0.05...}
    """
    out = {}
    for (path, a), r in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(ref)):
        a, r = np.asarray(a, np.float64), np.asarray(r, np.float64)
        scale, diff = np.abs(r).max(), np.abs(a - r).max()
        out[jax.tree_util.keystr(path)] = float(diff / scale) if scale > 0 else float(diff)
    return out


def trajectory_f64(cfg: Config, data: RunData, impl: str,
                   batches: list[dict]) -> tuple[np.ndarray, Any]:
    """(loss per step (S,), final parameters) of the run's len(batches) float64 training
    steps."""
    exp = _experiment(cfg, data, impl, "float64")
    state, step = exp.state, exp.train_step()
    losses = []
    for b in batches:
        state, metrics = step(state, b["image"].astype(np.float64), b["label"])
        losses.append(float(metrics["loss"]))
    return np.array(losses), jax.device_get(state.params)


def run_check(cfg: Any, impls: list[str], reference: str, steps: int, batch_size: int,
              tol32: float, tol64: float, log: Callable[[str], None] = print) -> bool:
    """Run both comparisons for ``impls`` against ``reference``; prints the table, returns
    True when every implementation is within tolerance."""
    cfg = check_config(cfg, steps, batch_size)
    data = RunData.load(cfg)
    first = Experiment.from_config(cfg, data=data)
    batches = [first.batches(epoch)[0] for epoch in range(steps)]  # as the trainer feeds them
    log(f"model widths {list(cfg.model.widths)} x {cfg.model.convs_per_stage}, "
        f"{cfg.model.data_format}; {len(batches)} real batches of {batch_size} "
        f"({cfg.data.source}); reference impl {reference}")
    order = [reference] + [i for i in impls if i != reference]
    f32, f64 = {}, {}
    for impl in order:
        t0 = time.perf_counter()
        f32[impl] = grads(cfg, data, impl, batches[0])
        log(f"  {impl}: float32 gradient done ({time.perf_counter() - t0:.1f} s)")
    jax.config.update("jax_enable_x64", True)
    try:
        t0 = time.perf_counter()
        _, truth, _ = grads(cfg, data, reference, batches[0], "float64",
                            start=f32[reference][2])
        log(f"  {reference}: float64 gradient done ({time.perf_counter() - t0:.1f} s)")
        for impl in order:
            t0 = time.perf_counter()
            f64[impl] = trajectory_f64(cfg, data, impl, batches)
            log(f"  {impl}: float64 trajectory done ({time.perf_counter() - t0:.1f} s)")
    finally:
        jax.config.update("jax_enable_x64", False)

    ok_all = True
    w = max([10, *map(len, order)])  # winograd_f4x4 and friends are 13 wide
    head = (f"{'impl':<{w}} {'f32 loss':>10} {'f32 grad err':>13} {'allowed':>9} "
            f"{'f64 loss err':>13} {'f64 param err':>14}  result  worst f32 tensor")
    log("")
    log(head)
    log("-" * len(head))
    floor = tensor_errors(f32[reference][1], truth)
    ref_losses, ref_params = f64[reference]
    for impl in order:
        loss32, g, _ = f32[impl]
        losses, params = f64[impl]
        errs = tensor_errors(g, truth)
        allowed = {k: max(tol32, FLOAT32_SLACK * floor[k]) for k in errs}
        worst = max(errs, key=lambda k: errs[k] / allowed[k])
        e_l = float(np.max(np.abs(losses - ref_losses) / np.abs(ref_losses)))
        e_p = max_rel_err(params, ref_params)
        ok = all(errs[k] <= allowed[k] for k in errs) and e_l <= tol64 and e_p <= tol64
        ok_all &= ok
        label = "ref" if impl == reference else ("PASS" if ok else "FAIL")
        log(f"{impl:<{w}} {loss32:>10.5f} {errs[worst]:>13.2e} {allowed[worst]:>9.1e} "
            f"{e_l:>13.2e} {e_p:>14.2e}  {label:<6}  {worst}")
    log(f"\nfloat32 gradient: error against {reference}'s float64 gradient at the same "
        f"parameters, allowed max({tol32:g}, {FLOAT32_SLACK:g} x {reference}'s own float32 "
        f"error) per tensor; float64 loss and parameters: tolerance {tol64:g} against "
        f"{reference} (all relative to the largest entry of each tensor); float64 trajectory "
        f"of {len(batches)} steps, losses {', '.join(f'{x:.6f}' for x in ref_losses)}")
    log("PASS: all implementations agree" if ok_all else "FAIL: see the table above")
    return ok_all


@command
def main(argv: list[str] | None = None) -> int:
    from jconv import CONV_IMPLS

    p = argparse.ArgumentParser(prog="python -m train.check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--impls", default=",".join(CONV_IMPLS),
                   help="comma-separated conv implementations (default: all registered)")
    p.add_argument("--reference", default="lax")
    p.add_argument("--steps", type=int, default=4, help="float64 training steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tol32", type=float, default=1e-3)
    p.add_argument("--tol64", type=float, default=1e-9)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    impls = [i for i in args.impls.split(",") if i]
    unknown = [i for i in impls + [args.reference] if i not in CONV_IMPLS]
    if unknown:
        raise ConfigError(f"--impls/--reference {unknown} not in {tuple(CONV_IMPLS)}")
    if args.steps < 1 or args.batch_size < 1:
        raise ConfigError("--steps and --batch-size must be >= 1")
    cfg = load_config(args.config, args.overrides)
    ok = run_check(cfg, impls, args.reference, args.steps, args.batch_size, args.tol32,
                   args.tol64)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
