"""Bench output: a text table on stdout, CSV and JSON files, and PNG charts."""

from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path
from typing import Any, Sequence

# Every column of the CSV/JSON rows and what it means: the one source for --help, the JSON's
# meta and docs/performance.md's method section.
COLUMN_HELP = {
    "suite": "layer suite: cifar, resnet18, special, conv1d, conv3d or transposed",
    "layer": "C_in->C_out @H(=W) input size (@L in 1-D, @D^3 in 3-D); /2 stride, "
             "d2 dilation, g4 groups; up1d/up2d/up3d: conv_transpose, 2x upsampling",
    "batch": "batch size N",
    "format": "layout of x and y (weights are always (O, I, *kernel)); --formats "
              "NCHW/NHWC mean NCL/NLC in 1-D and NCDHW/NDHWC in 3-D",
    "impl": "jconv impl; +eigen: compiled with jconv.conv_compiler_options('eigen'); "
            "torch: PyTorch eager",
    "compile_s": "seconds to compile fwd and fwd+bwd; for auto this includes measuring its "
                 "candidates (first trace of a shape)",
    "fwd_ms": "median ms of y = conv(x, w)",
    "fwd_bwd_ms": "median ms of y and both gradients (dx, dw) for a given dy, as in training",
    "fwd_gflops": "forward conv FLOPs (2 x multiply-adds) per second",
    "fwd_bwd_gflops": "forward+backward FLOPs (3 x forward) per second",
    "matmul_gflops": "rate of an XLA float32 1024x1024x1024 matmul timed in the same "
                     "interleaved loop (same load)",
    "pct_matmul": "fwd_bwd_gflops as % of the best matmul rate of the run (the highest "
                  "matmul_gflops, or the one timed at start): a practical peak, not the "
                  "hardware's; under load both rates drop",
    "fwd_vs_lax": "lax's fwd_ms / this fwd_ms: above 1 is faster than XLA's conv",
    "fwd_bwd_vs_lax": "lax's fwd_bwd_ms / this fwd_bwd_ms",
    "fwd_bwd_vs_torch": "this fwd_bwd_ms / PyTorch's (below 1 is faster than PyTorch; nan "
                        "without the torch column); the table's last line is its geo-mean "
                        "over the layers per impl",
    "mem_mb": "XLA's compiled fwd+bwd memory: arguments + outputs + temporaries (nan: torch)",
    "auto_fwd_only": "auto rows: the impl a call without derivatives runs (the fastest "
                     "forward timed alone)",
    "auto_fwd_dx_dw": "auto rows: the impls of the forward, input-gradient and weight-gradient "
                      "passes under differentiation (the fastest forward+backward together)",
}
COLUMNS = tuple(COLUMN_HELP)
# The stdout table: one line per case within ~120 characters; the rest (fwd_vs_lax, mem_mb,
# ...) is in the files.
PRINTED = ("layer", "format", "impl", "compile_s", "fwd_ms", "fwd_bwd_ms", "fwd_bwd_vs_lax",
           "fwd_bwd_vs_torch", "pct_matmul")


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = PRINTED) -> str:
    """Left-aligned plain-text table of ``rows`` (dicts) restricted to ``columns``; floats to
    4 significant digits (the files keep every digit).

    Example:
      >>> print(format_table([{"impl": "lax", "fwd_ms": 1234.567}], ["impl", "fwd_ms"]))
      impl  fwd_ms
      lax   1235
    """
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [list(columns)] + [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
                     for row in cells)


def format_torch_geomean(rows: Sequence[dict[str, Any]]) -> str:
    """The geo-mean of ``fwd_bwd_vs_torch`` per impl over the rows that have it ("" if none).

    Example:
      >>> format_torch_geomean([{"impl": "onednn", "fwd_bwd_vs_torch": 0.5},
      ...                       {"impl": "onednn", "fwd_bwd_vs_torch": 2.0},
      ...                       {"impl": "lax", "fwd_bwd_vs_torch": 4.0}])
      "geo-mean fwd+bwd time / PyTorch's: onednn 1.00x, lax 4.00x"
    """
    logs: dict[str, list[float]] = {}
    for r in rows:
        v = r.get("fwd_bwd_vs_torch", math.nan)
        if r["impl"] != "torch" and v == v and v > 0:
            logs.setdefault(r["impl"], []).append(math.log(v))
    if not logs:
        return ""
    return "geo-mean fwd+bwd time / PyTorch's: " + ", ".join(
        f"{i} {math.exp(sum(v) / len(v)):.2f}x" for i, v in logs.items())


def format_auto_choices(rows: Sequence[dict[str, Any]]) -> str:
    """One line per ``auto`` row: what it runs without and with derivatives ("" if none).

    Example:
      >>> print(format_auto_choices([{"layer": "dw", "format": "NHWC", "impl": "auto",
      ...                             "auto_fwd_only": "loops",
      ...                             "auto_fwd_dx_dw": "im2col/im2col/im2col"}]))
      auto's choices (forward-only call; fwd/dx/dw under differentiation):
        dw NHWC auto: loops; im2col/im2col/im2col
    """
    lines = [f"  {r['layer']} {r['format']} {r['impl']}: {r['auto_fwd_only']}; "
             f"{r['auto_fwd_dx_dw']}" for r in rows if r.get("auto_fwd_only")]
    if not lines:
        return ""
    return "\n".join(["auto's choices (forward-only call; fwd/dx/dw under differentiation):",
                      *lines])


def columns_help(line_width: int = 100) -> str:
    """The column glossary printed by ``--help``: ``name  meaning``, wrapped to ``line_width``.

    Example:
      >>> columns_help().splitlines()[0].split()[:2]
      ['suite', 'layer']
    """
    width = max(map(len, COLUMN_HELP))
    return "\n".join(textwrap.fill(text, line_width, initial_indent=f"  {name.ljust(width)}  ",
                                   subsequent_indent=" " * (width + 4))
                     for name, text in COLUMN_HELP.items())


def write_files(out_dir: Path, stem: str, rows: Sequence[dict[str, Any]],
                meta: dict[str, Any]) -> list[Path]:
    """``<stem>.csv`` (rows) and ``<stem>.json`` (meta + rows) under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps({"meta": meta, "rows": list(rows)}, indent=1))
    return [csv_path, json_path]


def layer_chart(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Bar chart of forward+backward speedup over ``lax`` per layer, one panel per format."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    formats = sorted({r["format"] for r in rows})
    impls = [i for i in dict.fromkeys(r["impl"] for r in rows) if i != "lax"]
    fig, axes = plt.subplots(len(formats), 1, figsize=(12, 4.2 * len(formats)), squeeze=False)
    for ax, fmt in zip(axes[:, 0], formats):
        layers = list(dict.fromkeys(r["layer"] for r in rows if r["format"] == fmt))
        width = 0.8 / max(1, len(impls))
        for k, impl in enumerate(impls):
            vals = {r["layer"]: r["fwd_bwd_vs_lax"] for r in rows
                    if r["format"] == fmt and r["impl"] == impl}
            ax.bar([i + k * width for i in range(len(layers))],
                   [vals.get(name, 0.0) for name in layers], width, label=impl)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(layers))])
        ax.set_xticklabels(layers, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("fwd+bwd speedup vs lax (x)")
        ax.set_title(f"{title} — {fmt}")
        ax.legend(fontsize=8, ncol=len(impls))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
