"""`sta demo`: accuracy vs cost of STA and its alternatives on the bundled, actually trained proxy model.

No network needed: the model ships inside the package (:mod:`sta.models.bundled`)
and the held-out clips are generated from a seed (:mod:`sta.data.synthetic`).
Every method runs at the same token counts for a given r, so the GFLOPs column
is equal up to each method's own scoring cost. The unpruned model is the row at
r = 0 (method None, printed ``unpruned``). This is a synthetic proxy; the
paper's Kinetics / SSv2 numbers need the release checkpoints and ``sta eval``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sta.core.schedule import UNPRUNED, R, RSpec, format_r, normalize_r
from sta.data.synthetic import HELD_OUT_CLIPS, HELD_OUT_SEED, PROXY_TASK, make_clips
from sta.errors import RunFailed
from sta.measure.flops import flops_report
from sta.models.bundled import load_bundled_model
from sta.utils.progress import Progress

# Tokens dropped per group (one r, or one per stage). Stage 0 groups hold 64 tokens; the last three
# schedules keep 48, 32 and 22 of the 512 tokens, where the methods part ways. ToMe merges at most
# half a group, so it runs only the first two.
DEMO_RS: tuple[RSpec, ...] = (16, 32, (48, 16, 8), (56, 8, 4), (60, 2, 1))
# Methods that prune at STA's three stages with STA's token counts, so one r is one cost for all of them (rlt
# prunes before block 0 and is cheaper at the same r; oracle needs a backward pass): `sta compare` matches budgets.
DEMO_METHODS = ("sta", "temporal", "norm", "random", "tome", "evs", "vidtldr", "repshift")
DEMO_SEED = HELD_OUT_SEED  # held-out clips: the test stream, never seen in training
DEMO_CLIPS = HELD_OUT_CLIPS  # 20 per class


@dataclass(frozen=True)
class DemoRow:
    """One (method, r) on the held-out clips; the unpruned model is the row with ``r == (0, 0, 0)``, method None."""

    method: str | None
    r: R  # written "16" or "48,16,8" (format_r)
    tokens: tuple[int, ...]  # alive after each stage
    gflops: float  # per clip, paper convention
    top1: float  # percent
    ms_per_clip: float


def run_demo(methods: list[str] | None = None, rs: tuple[RSpec, ...] = DEMO_RS, num_clips: int = DEMO_CLIPS,
             seed: int = DEMO_SEED, batch_size: int = 16, progress: bool = True) -> list[DemoRow]:
    """Top-1, GFLOPs and speed of each method at each r (plus the unpruned model) on held-out proxy clips.

    A (method, r) the method cannot run (ToMe beyond half a group) is left out.
    """
    methods = methods or list(DEMO_METHODS)
    model = load_bundled_model()
    clips, labels = make_clips(PROXY_TASK, num_clips, seed=seed, split="test")
    configs = [(None, UNPRUNED)] + [(m, normalize_r(r)) for m in methods for r in rs if _runs(model, m, r)]
    bar = Progress(total=len(configs) * num_clips, unit="clips", enabled=progress, desc="sta demo")
    rows = []
    for method, r in configs:
        model.set_pruning(r, "sta" if method is None else method)  # at r = 0 every method is the plain model
        correct, seconds = 0, 0.0
        with torch.inference_mode():
            for _ in range(2):  # warm-up for this configuration's shapes
                model(clips[:batch_size])
            for start in range(0, num_clips, batch_size):
                batch = clips[start : start + batch_size]
                t0 = time.perf_counter()
                logits = model(batch)
                seconds += time.perf_counter() - t0
                if not torch.isfinite(logits).all():  # a NaN argmax is class 0: never count it as an answer
                    raise RunFailed(f"the bundled model's logits are not finite (NaN or inf) at {method} r={r}")
                correct += int((logits.argmax(-1) == labels[start : start + batch_size]).sum())
                bar.update(len(batch))
        report = flops_report(model)
        rows.append(DemoRow(method, r, report.tokens, report.gflops, 100.0 * correct / num_clips,
                            1e3 * seconds / num_clips))
    bar.close()
    return rows


def _runs(model, method: str, r: RSpec) -> bool:
    return _why_not(model, method, r) is None


def _why_not(model, method: str, r: RSpec) -> str | None:
    """Why the bundled model cannot run ``method`` at ``r`` (e.g. ToMe beyond half a group), or None."""
    try:
        with model.pruning(r, method):
            return None
    except ValueError as err:
        return str(err)


def configs_not_run(methods: list[str] | None = None, rs: tuple[RSpec, ...] = DEMO_RS) -> list[tuple[str, R, str]]:
    """The (method, r, reason) that :func:`run_demo` leaves out, so that a caller can say why."""
    model = load_bundled_model()
    found = ((m, normalize_r(r), _why_not(model, m, r)) for m in methods or list(DEMO_METHODS) for r in rs)
    return [(m, r, why) for m, r, why in found if why is not None]


def print_rows(rows: list[DemoRow]) -> None:
    """The rows as a text table; the unpruned row is named ``unpruned`` in the method column."""
    print(f"{'method':<10}{'r':>9}  {'tokens after stages':<22}{'GFLOPs/clip':>12}{'top-1 %':>9}{'ms/clip':>9}")
    for row in rows:
        tokens = " -> ".join(map(str, row.tokens))
        method = row.method if row.method is not None else "unpruned"
        print(f"{method:<10}{format_r(row.r):>9}  {tokens:<22}{row.gflops:>12.3f}{row.top1:>9.1f}"
              f"{row.ms_per_clip:>9.1f}")


def write_outputs(rows: list[DemoRow], out_dir: str | Path) -> dict[str, Path]:
    """``demo.json`` always; ``demo.png`` (top-1 vs GFLOPs, one line per method) when matplotlib is there.

    In the JSON, r is written as the CLI spells it (``format_r``) and the unpruned row's method is null.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "demo.json"}
    with open(files["json"], "w") as f:
        json.dump([row.__dict__ | {"tokens": list(row.tokens), "r": format_r(row.r)} for row in rows], f, indent=1)
    try:
        from sta.vis.plot import plot_accuracy_vs_gflops

        baseline = [row for row in rows if row.method is None]
        points = [dict(method=row.method, top1=row.top1, gflops_per_view=row.gflops)
                  for row in rows if row.method is not None]
        for method in {p["method"] for p in points}:  # every curve starts at the unpruned model
            points += [dict(method=method, top1=b.top1, gflops_per_view=b.gflops) for b in baseline]
        files["plot"] = plot_accuracy_vs_gflops(points, out_dir / "demo.png",
                                                title="Proxy task (synthetic): top-1 vs GFLOPs per clip")
    except ImportError as err:
        print(f"note: no plot written ({err})")
    return files
