"""Bench output: a text table on stdout, CSV and JSON files, and PNG charts."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

COLUMNS = ("suite", "layer", "batch", "format", "impl", "compile_s", "fwd_ms", "fwd_bwd_ms",
           "fwd_gflops", "fwd_bwd_gflops", "matmul_gflops", "pct_peak", "fwd_speedup",
           "fwd_bwd_speedup", "peak_mb", "choice")


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """Left-aligned plain-text table of ``rows`` (dicts) restricted to ``columns``.

    Example:
      >>> print(format_table([{"impl": "lax", "fwd_ms": 1.5}], ["impl", "fwd_ms"]))
      impl  fwd_ms
      lax   1.5
    """
    cells = [[str(c) for c in columns]] + [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip()
                     for row in cells)


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
            vals = {r["layer"]: r["fwd_bwd_speedup"] for r in rows
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
