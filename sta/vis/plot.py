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


# Distinct at a glance for a dozen series: colour-blind-safe colours (Okabe-Ito, then Tol's) and one marker each.
PALETTE = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#882255",
           "#44AA99", "#999933", "#AA4499", "#6699CC", "#661100")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p", "d", "8")


def plot_comparison(series: dict[str, list[tuple[float, float, float, float]]], out: str | Path, title: str,
                    panels: int = 1) -> Path:
    """top-1 vs GFLOPs per view, one line per method with its 95% intervals as error bars.

    ``series``: method -> ``(gflops, top1, low, high)`` points (the unpruned model is a point of every line).
    Methods get distinct colours and markers in sorted order, the legend sits outside the axes, and with
    ``panels`` 2 the right panel zooms on the top of the range, where the best methods crowd together.
    """
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels + 2.2, 4.4), dpi=120, squeeze=False)
    tops = [p[1] for points in series.values() for p in points]
    for k, ax in enumerate(axes[0]):
        for i, (method, points) in enumerate(sorted(series.items())):
            points = sorted(points)
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            errors = [[y - p[2] for y, p in zip(ys, points)], [p[3] - y for y, p in zip(ys, points)]]
            ax.errorbar(xs, ys, yerr=errors, label=method, color=PALETTE[i % len(PALETTE)],
                        marker=MARKERS[i % len(MARKERS)], markersize=5, capsize=2, linewidth=1.2, alpha=0.9)
        ax.set_xlabel("GFLOPs per view (1 multiply-add = 1 FLOP)")
        ax.set_ylabel("top-1 (%) with 95% interval")
        ax.grid(alpha=0.3)
        if k == 1:  # the zoom: the upper quarter of the scores
            low = sorted(tops)[len(tops) * 3 // 4] if tops else 0
            ax.set_ylim(max(0.0, low - 3), 100.5)
            ax.set_title("zoom on the best", fontsize=9)
        else:
            bottom, top = ax.get_ylim()
            ax.set_ylim(bottom, min(top, 100.5))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / (5.2 * panels + 2.2), 1))
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
