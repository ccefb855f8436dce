"""The figures of `sta gradnorm`: the mean GradNorm map per temporal slice, and GradNorm kept vs tokens kept.

They draw a :class:`~sta.measure.gradnorm.GradNormResult` (the study is :mod:`sta.measure.gradnorm`);
:func:`write_gradnorm` writes its JSON and, with matplotlib, both figures.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from sta.measure.gradnorm import GradNormResult, write_gradnorm_json
from sta.utils.optional import require_matplotlib


def plot_mean_map(result: GradNormResult, out: str | Path) -> Path:
    """The mean GradNorm distribution: one heat map per temporal slice, in units of the uniform share (1/N)."""
    plt = require_matplotlib()
    T, h, w = result.grid
    N = T * h * w
    values = result.mean_map.reshape(T, h, w) * N
    cols = T if T <= 8 else math.ceil(T / 2)
    rows = math.ceil(T / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 1.0, 1.8 * rows + 0.5), dpi=120, squeeze=False,
                             layout="constrained")
    vmax = float(values.max()) if values.size and values.max() > 0 else 1.0  # one scale for every slice
    image = None
    for t, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if t >= T:
            ax.axis("off")
            continue
        image = ax.imshow(values[t], cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"slice {t}", fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9, label="× uniform (1/N)")
    fig.suptitle(f"Mean GradNorm distribution over {result.clips} clips (each clip's map sums to 1)", fontsize=9)
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def plot_kept_share(result: GradNormResult, out: str | Path) -> Path:
    """GradNorm mass kept vs tokens kept, one line per method (with 95% CI bars); dashed: the token fraction."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    base = [row for row in result.rows if row.method is None]  # the unpruned model: every curve starts there
    methods = list(dict.fromkeys(row.method for row in result.rows if row.method is not None))
    for method in methods:
        points = sorted([row for row in result.rows if row.method == method] + base, key=lambda p: p.tokens_kept)
        ax.errorbar([p.tokens_kept for p in points], [100 * p.kept_share for p in points],
                    yerr=[100 * (p.ci95 if math.isfinite(p.ci95) else 0) for p in points],
                    marker="o", capsize=2, label=method)
    total = result.rows[0].tokens_total if result.rows else 1
    ax.plot([0, total], [0, 100], "k--", lw=0.8, alpha=0.6, label="kept fraction of tokens")
    ax.set_xlabel(f"tokens kept after the last stage (of {total})")
    ax.set_ylabel("GradNorm mass kept (%)")
    ax.set_title(f"GradNorm kept vs tokens kept ({result.clips} clips)")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def write_gradnorm(result: GradNormResult, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """``gradnorm.json`` always; ``gradnorm_map.png`` and ``gradnorm_share.png`` with matplotlib.

    Without matplotlib the JSON is still written and a note says how to get the
    figures (as ``sta demo`` does). Returns kind -> path of what was written.
    """
    out_dir = Path(out_dir)
    files = {"json": write_gradnorm_json(result, out_dir)}
    if plots:
        try:
            files["map"] = plot_mean_map(result, out_dir / "gradnorm_map.png")
            files["share"] = plot_kept_share(result, out_dir / "gradnorm_share.png")
        except ImportError as err:
            print(f"note: no figures written ({err})", file=sys.stderr)
    return files
