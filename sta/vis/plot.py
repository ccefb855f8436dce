"""Accuracy vs GFLOPs curves from `sta eval` summaries (or any rows with the same keys)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from sta.errors import InvalidInput
from sta.utils.optional import require_matplotlib


def read_summaries(paths: list[str | Path]) -> list[dict]:
    """``summary.json`` files (or folders holding one) -> rows with method, r, gflops_per_view, top1."""
    rows = []
    for path in map(Path, paths):
        file = path / "summary.json" if path.is_dir() else path
        try:
            summary = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInput(f"{file}: not found") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InvalidInput(f"{file}: not valid JSON ({err})") from None
        numbers = ("top1", "gflops_per_view")
        if not isinstance(summary, dict) or not all(
                type(summary.get(k)) in (int, float) and math.isfinite(summary[k]) for k in numbers):
            raise InvalidInput(f"{file}: not an `sta eval` summary with finite numbers for top1 and gflops_per_view "
                               "(a run that scored no video has none to plot)")
        model = summary.get("model") if isinstance(summary.get("model"), dict) else {}
        rows.append(dict(method=model.get("method", "sta"), r=model.get("r"), top1=summary["top1"],
                         gflops_per_view=summary["gflops_per_view"], source=str(file)))
    return rows


def plot_accuracy_vs_gflops(rows: list[dict], out: str | Path, title: str = "top-1 vs GFLOPs per view") -> Path:
    """One line per ``method``, points sorted by GFLOPs; writes ``out`` (PNG, SVG or PDF by suffix)."""
    plt = require_matplotlib()
    lines: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        lines[row["method"]].append(row)
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for method, points in sorted(lines.items()):
        points.sort(key=lambda p: p["gflops_per_view"])
        ax.plot([p["gflops_per_view"] for p in points], [p["top1"] for p in points], marker="o", label=method)
    ax.set_xlabel("GFLOPs per view (1 multiply-add = 1 FLOP)")
    ax.set_ylabel("top-1 (%)")
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, min(top, 100.5))  # no room above 100%: a percentage ends there
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
