"""Run the layer suite: every impl (and PyTorch) timed in the same process, interleaved."""

from __future__ import annotations

import gc
import math
from typing import Any

import jax.numpy as jnp

from .._auto import AutoChoice, auto_choice, compiler_options_scope
from .._spec import conv_spec
from ..xla_options import conv_compiler_options
from .suite import Layer
from .timing import MATMUL_SIZE, ConvCase, interleaved_medians, matmul_case, split_label
from .torch_ref import TorchCase, load_torch


def _auto_choice(layer: Layer, data_format: str, conv_backend: str) -> AutoChoice:
    """What ``auto`` chose for this layer under ``conv_backend``'s compiler options (the
    choice its case measured while compiling, now cached)."""
    x_shape = layer.x_shape(data_format)
    spec = conv_spec(x_shape, layer.w_shape, data_format=layer.data_format(data_format),
                     **layer.conv_kwargs)
    with compiler_options_scope(conv_compiler_options(conv_backend)):
        return auto_choice(x_shape, layer.w_shape, jnp.float32, spec)


def run_layers(layers: list[Layer], impls: list[str], formats: list[str], reps: int,
               with_torch: bool, matmul_size: int = MATMUL_SIZE,
               start_gflops: float = 0.0) -> list[dict[str, Any]]:
    """One row per (layer, data format, impl label — see ``split_label``), with the columns of
    :data:`jconv.bench.report.COLUMN_HELP`.

    A ``matmul_size``-cubed matmul is timed inside each layer's interleaved fwd+bwd loop
    (``matmul_gflops``); ``pct_matmul`` compares with the best of those rates and
    ``start_gflops`` (the same matmul timed before the run). The best, not the layer's own:
    under load a layer's matmul median can be slowed more than its much shorter conv calls,
    and convs then showed more than 100%."""
    torch = load_torch() if with_torch else None
    matmul, matmul_flops = matmul_case(matmul_size)
    rows: list[dict[str, Any]] = []
    mm_rates = [start_gflops]
    for layer in layers:
        for fmt in formats:
            cases: dict[str, Any] = {impl: ConvCase(layer, impl, fmt) for impl in impls}
            if torch is not None:
                cases["torch"] = TorchCase(torch, layer, fmt)
            fwd = interleaved_medians({k: c.fwd for k, c in cases.items()}, reps)
            fb = interleaved_medians({"__matmul__": matmul,
                                      **{k: c.fwd_bwd for k, c in cases.items()}}, reps)
            mm_gflops = matmul_flops / (fb.pop("__matmul__") * 1e6)
            mm_rates.append(mm_gflops)
            for name, case in cases.items():
                impl, conv_backend = split_label(name)
                fb_gflops = 3 * layer.fwd_flops / (fb[name] * 1e6)
                choice = _auto_choice(layer, fmt, conv_backend) if impl == "auto" else None
                rows.append(dict(
                    suite=layer.suite, layer=layer.name, batch=layer.n,
                    format=layer.data_format(fmt), impl=name,
                    compile_s=round(case.compile_s, 3), fwd_ms=round(fwd[name], 3),
                    fwd_bwd_ms=round(fb[name], 3),
                    fwd_gflops=round(layer.fwd_flops / (fwd[name] * 1e6), 2),
                    fwd_bwd_gflops=round(fb_gflops, 2),
                    matmul_gflops=round(mm_gflops, 1),
                    pct_matmul=fb_gflops,  # replaced once the best matmul rate is known
                    fwd_vs_lax=round(fwd["lax"] / fwd[name], 3) if "lax" in fwd else math.nan,
                    fwd_bwd_vs_lax=round(fb["lax"] / fb[name], 3) if "lax" in fb else math.nan,
                    fwd_bwd_vs_torch=(round(fb[name] / fb["torch"], 3) if "torch" in fb
                                      else math.nan),
                    mem_mb=round(case.peak_mb, 1),
                    auto_fwd_only=choice.inference if choice else "",
                    auto_fwd_dx_dw="/".join(choice.impls) if choice else ""))
            del cases
            gc.collect()
    best = max(mm_rates)
    for r in rows:
        r["pct_matmul"] = round(100 * r["pct_matmul"] / best, 1)
    return rows
