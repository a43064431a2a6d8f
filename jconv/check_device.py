"""``python -m jconv.check_device``: what to run first on a new GPU/TPU (or CPU) machine.

On whatever backend JAX finds, it checks every registered convolution implementation
against ``impl="lax"`` — forward, input gradient and weight gradient, in float32 at
``precision="highest"`` (so a GPU's TF32 cannot hide or fake an error), in bfloat16 and in
float16 — over a small grid of argument forms, one of them a grouped layer of realistic
size; the pooling implementations the same way; a
few SGD steps of a small CNN per exact implementation (finite, decreasing, and the same
losses as ``lax``); and the quick benchmark. It prints a PASS/FAIL table and exits 1 on any
FAIL (2 on bad arguments).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import nn
from ._registry import CONV_IMPLS, POOL_IMPLS
from .bench.suite import Layer, suite
from .bench.timing import current_label
from .conv import conv2d
from .pool import avg_pool2d, max_pool2d

# Relative to max(1, max |reference|). Exact implementations differ from lax only by
# float32 summation order; the fast algorithms add their own rounding; half-precision
# inputs (and output cotangents) are rounded before both sides see them, the results differ
# by accumulation order and one final rounding (bfloat16: 8-bit mantissa, float16: 11-bit;
# the tolerances of jconv.testing's gradients).
TOL_EXACT = 1e-4
TOL_FAST = 2e-3
TOL_HALF = {"bfloat16": 3e-2, "float16": 4e-3}
TOL_TRAIN = 1e-3


# (layer, data format) pairs: every argument form once, at sizes that check in seconds.
CASES: tuple[tuple[Layer, str], ...] = (
    (Layer("check", "3x3 pad 1", 4, 8, 16, 12), "NCHW"),
    (Layer("check", "stride 2, asym pad", 4, 8, 16, 13, stride=2,
           padding=((1, 0), (2, 1))), "NCHW"),
    (Layer("check", "dilation 2, same", 2, 8, 8, 12, dilation=2, padding="same"), "NCHW"),
    (Layer("check", "groups 4", 2, 8, 16, 10, groups=4), "NCHW"),
    (Layer("check", "depthwise", 2, 16, 16, 10, groups=16), "NCHW"),
    (Layer("check", "NHWC 5x5", 2, 6, 12, 11, kernel=5, padding=2), "NHWC"),
    (Layer("check", "1x1", 4, 16, 8, 9, kernel=1, padding=0), "NCHW"),
    # XLA:CPU contracts groups as a real dot only from C_in/groups >= 4 and C_out/groups >= 2
    # (smaller ones become multiplies and adds): the size where bfloat16 crashed loops.
    (Layer("check", "groups 2, realistic size", 8, 16, 32, 16, groups=2), "NCHW"),
)
QUICK_CASES = (*CASES[:3], CASES[-1])


def rel_err(got: Any, want: Any) -> float:
    """max |got - want| / max(1, max |want|), in float64 (inf when shapes differ or NaN)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape or not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.abs(got - want).max(initial=0.0)) / max(1.0, float(np.abs(want).max()))


def _conv_fns(impl: str, layer: Layer, data_format: str,
              precision: Any) -> Callable[..., tuple]:
    def run(x: jnp.ndarray, w: jnp.ndarray, dy: jnp.ndarray) -> tuple:
        def f(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
            return conv2d(a, b, impl=impl, data_format=data_format, precision=precision,
                          **layer.conv_kwargs)
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(dy))

    return jax.jit(run)


def _note(err: BaseException) -> str:
    """The error's first line, whole: the implementation's own words (XLA's errors go on for
    many lines, jconv's ValueErrors are one line with what to use instead)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def check_convs(impls: Sequence[str],
                cases: Sequence[tuple[Layer, str]]) -> list[dict[str, Any]]:
    """One row per (impl, case): worst float32 error of y, dx, dw against ``lax`` at
    ``precision="highest"``, and the worst of y, dx, dw in bfloat16 and in float16 (against
    float32 ``lax`` on the same rounded inputs); ``status`` PASS, FAIL or n/a (an argument
    the implementation documents it rejects)."""
    rows = []
    for layer, fmt in cases:
        x, w = layer.arrays(fmt)
        lax_fwd = jax.jit(lambda a, b, layer=layer, fmt=fmt: conv2d(
            a, b, data_format=fmt, precision="highest", **layer.conv_kwargs))
        y_ref = lax_fwd(x, w)
        dy = jnp.asarray(np.random.default_rng(1).standard_normal(y_ref.shape), jnp.float32)
        ref = _conv_fns("lax", layer, fmt, "highest")(x, w, dy)
        half = {d: tuple(a.astype(d) for a in (x, w, dy)) for d in TOL_HALF}
        half_ref = {d: _conv_fns("lax", layer, fmt, "highest")(
            *(a.astype(jnp.float32) for a in args))
                    for d, args in half.items()}
        for impl in impls:
            row = {"check": "conv2d", "impl": impl, "case": layer.name}
            tol = TOL_EXACT if CONV_IMPLS[impl].exact else TOL_FAST
            try:
                got = _conv_fns(impl, layer, fmt, "highest")(x, w, dy)
                got_half = {d: _conv_fns(impl, layer, fmt, None)(*args)
                            for d, args in half.items()}
            except ValueError as err:
                if CONV_IMPLS[impl].exact:
                    row.update(status="FAIL", note=f"ValueError: {err}")
                else:
                    row.update(status="n/a", note=_note(err))
                rows.append(row)
                continue
            except Exception as err:  # noqa: BLE001 — any crash on a valid case is a FAIL
                row.update(status="FAIL", note=f"{type(err).__name__}: {_note(err)}")
                rows.append(row)
                continue
            errs = [rel_err(g, r) for g, r in zip(got, ref)]
            e_half = {d: max(rel_err(g, r) for g, r in zip(got_half[d], half_ref[d]))
                      for d in TOL_HALF}
            bad_dtype = [d for d in TOL_HALF if any(g.dtype != d for g in got_half[d])]
            ok = (max(errs) <= tol and all(e_half[d] <= TOL_HALF[d] for d in TOL_HALF)
                  and not bad_dtype)
            note = (f"tol {tol:g} / bf16 {TOL_HALF['bfloat16']:g} / f16 {TOL_HALF['float16']:g}"
                    + (f"; {', '.join(bad_dtype)} in, another dtype out" if bad_dtype else ""))
            row.update(y=errs[0], dx=errs[1], dw=errs[2], bf16=e_half["bfloat16"],
                       f16=e_half["float16"], status="PASS" if ok else "FAIL", note=note)
            rows.append(row)
    return rows


def check_pools(impls: Sequence[str]) -> list[dict[str, Any]]:
    """Max and average pooling (forward and gradient) of each impl against ``lax``."""
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 4, 11, 11)), jnp.float32)
    pools = {
        "max 3/2 pad 1": lambda a, impl: max_pool2d(a, 3, 2, 1, impl=impl),
        "max 2 dil 2": lambda a, impl: max_pool2d(a, 2, 1, dilation=2, impl=impl),
        "avg 3/2 ceil": lambda a, impl: avg_pool2d(a, 3, 2, 1, ceil_mode=True, impl=impl),
    }
    rows = []
    for name, pool in pools.items():
        def value_grad(a: jnp.ndarray, impl: str, pool: Callable = pool) -> tuple:
            y, vjp = jax.vjp(lambda b: pool(b, impl), a)
            return y, vjp(jnp.cos(y))[0]

        ref = jax.jit(value_grad, static_argnums=1)(x, "lax")
        for impl in impls:
            got = jax.jit(value_grad, static_argnums=1)(x, impl)
            e_y, e_dx = rel_err(got[0], ref[0]), rel_err(got[1], ref[1])
            ok = max(e_y, e_dx) <= TOL_EXACT
            rows.append({"check": "pool", "impl": impl, "case": name, "y": e_y, "dx": e_dx,
                         "status": "PASS" if ok else "FAIL", "note": f"tol {TOL_EXACT:g}"})
    return rows


def check_training(impls: Sequence[str], steps: int = 8) -> list[dict[str, Any]]:
    """``steps`` SGD steps of a small conv/pool/conv CNN on one fixed random batch per impl,
    from the same initial parameters: losses finite, decreasing, and equal to lax's."""
    import optax
    from flax import nnx

    rng = np.random.default_rng(3)
    images = jnp.asarray(rng.standard_normal((16, 3, 16, 16)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, 16))

    def losses(impl: str) -> list[float]:
        rngs = nnx.Rngs(0)
        model = nnx.Sequential(nn.Conv2d(3, 16, 3, padding=1, impl=impl, rngs=rngs),
                               nn.MaxPool2d(2, impl=impl if impl in POOL_IMPLS else "lax"),
                               nn.Conv2d(16, 16, 3, padding=1, groups=4, impl=impl, rngs=rngs),
                               nn.GlobalAvgPool2d(), nnx.Linear(16, 10, rngs=rngs))
        graphdef, params = nnx.split(model)
        tx = optax.sgd(0.1, momentum=0.9)
        opt = tx.init(params)

        @jax.jit
        def step(params: Any, opt: Any) -> tuple:
            def loss_fn(p: Any) -> jnp.ndarray:
                logits = nnx.merge(graphdef, p)(jax.nn.relu(images))
                return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt = tx.update(grads, opt, params)
            return optax.apply_updates(params, updates), opt, loss

        out = []
        with jax.default_matmul_precision("highest"):
            for _ in range(steps):
                params, opt, loss = step(params, opt)
                out.append(float(loss))
        return out

    ref = losses("lax")
    rows = []
    for impl in impls:
        got = ref if impl == "lax" else losses(impl)
        err = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(got, ref))
        ok = bool(np.all(np.isfinite(got))) and got[-1] < got[0] and err <= TOL_TRAIN
        rows.append({"check": "train", "impl": impl, "case": f"{steps} SGD steps",
                     "y": err, "status": "PASS" if ok else "FAIL",
                     "note": f"loss {got[0]:.4f} -> {got[-1]:.4f}"})
    return rows


def _fmt(v: Any) -> str:
    return f"{v:.1e}" if isinstance(v, float) else ("" if v is None else str(v))


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The PASS/FAIL table: one line per check, errors relative to max(1, |reference|)
    (``bf16``/``f16``: the worst of y, dx and dw in that dtype).

    Example:
      >>> print(format_rows([{"check": "pool", "impl": "loops", "case": "max", "y": 0.0,
      ...                     "status": "PASS"}]))
      check  impl   case  y        dx  dw  bf16  f16  status  note
      pool   loops  max   0.0e+00                     PASS
    """
    cols = ["check", "impl", "case", "y", "dx", "dw", "bf16", "f16", "status", "note"]
    cells = [cols] + [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
                     for row in cells)


def environment() -> str:
    """One line: backend, devices, versions, host."""
    import jaxlib
    devs = jax.devices()
    kinds = sorted({d.device_kind for d in devs})
    return (f"backend {jax.default_backend()} ({len(devs)} x {', '.join(kinds)}), "
            f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, "
            f"python {platform.python_version()}, host {platform.node()}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jconv.check_device", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impls", default=",".join(CONV_IMPLS),
                   help="comma list of implementations to check (default: all registered)")
    p.add_argument("--quick", action="store_true",
                   help=f"{len(QUICK_CASES)} conv cases instead of {len(CASES)}")
    p.add_argument("--no-bench", action="store_true", help="skip the quick benchmark")
    p.add_argument("--no-train", action="store_true", help="skip the training steps")
    args = p.parse_args(argv)
    impls = [current_label(i.strip()) for i in args.impls.split(",") if i.strip()]
    unknown = [i for i in impls if i not in CONV_IMPLS]
    if unknown or not impls:
        print(f"Error: --impls must be a comma list from {tuple(CONV_IMPLS)}, got "
              f"{args.impls!r}", file=sys.stderr)
        return 2
    if "lax" not in impls:
        impls.insert(0, "lax")
    print(f"jconv device check: {environment()}", flush=True)
    start = time.perf_counter()
    rows = check_convs(impls, QUICK_CASES if args.quick else CASES)
    rows += check_pools([i for i in impls if i in POOL_IMPLS])
    if not args.no_train:
        rows += check_training([i for i in impls if CONV_IMPLS[i].exact])
    print(format_rows(rows), flush=True)
    failed = [r for r in rows if r["status"] == "FAIL"]
    if not args.no_bench:
        from .bench.report import format_table
        from .bench.run import run_layers

        bench_impls = [i for i in impls if CONV_IMPLS[i].exact]
        print("\nquick benchmark (median ms; speedup = lax time / impl time):", flush=True)
        bench = run_layers(suite("quick"), bench_impls, ["NHWC"], reps=3, with_torch=False)
        print(format_table(bench, ["layer", "impl", "fwd_ms", "fwd_bwd_ms", "fwd_bwd_speedup",
                                   "choice"]))
    verdict = (f"FAIL: {len(failed)} of {len(rows)} checks" if failed
               else f"PASS: all {len(rows)} checks")
    print(f"\n{verdict} ({time.perf_counter() - start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
