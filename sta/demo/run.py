"""`sta demo`: accuracy vs cost of STA and its alternatives on the bundled, actually trained proxy model.

No network needed: the model ships inside the package (``sta/assets``) and the
held-out clips are generated from a seed (``sta.demo.proxy``). Every method runs at
the same token counts for a given r, so the GFLOPs column is equal up to each
method's own scoring cost. This is a synthetic proxy; the paper's Kinetics /
SSv2 numbers need the release checkpoints and ``sta eval``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sta.core.methods import METHODS
from sta.core.schedule import RSpec, format_r
from sta.demo.proxy import PROXY_TASK, load_proxy_model, make_clips
from sta.measure.flops import flops_report
from sta.utils.progress import Progress

# Tokens dropped per group (one r, or one per stage). Stage 0 groups hold 64 tokens; the last three
# schedules keep 48, 32 and 22 of the 512 tokens, where the methods part ways. ToMe merges at most
# half a group, so it runs only the first two.
DEMO_RS: tuple[RSpec, ...] = (16, 32, (48, 16, 8), (56, 8, 4), (60, 2, 1))
DEMO_SEED = 1234  # held-out clips: the test stream, never seen in training
DEMO_CLIPS = 240  # 20 per class


@dataclass(frozen=True)
class DemoRow:
    method: str
    r: RSpec
    tokens: tuple[int, ...]  # alive after each stage
    gflops: float  # per clip, paper convention
    top1: float  # percent
    ms_per_clip: float


def run_demo(methods: list[str] | None = None, rs: tuple[RSpec, ...] = DEMO_RS, num_clips: int = DEMO_CLIPS,
             seed: int = DEMO_SEED, batch_size: int = 16, progress: bool = True) -> list[DemoRow]:
    """Top-1, GFLOPs and speed of each method at each r (plus the unpruned model) on held-out proxy clips.

    A (method, r) the method cannot run (ToMe beyond half a group) is left out.
    """
    methods = methods or list(METHODS)
    model = load_proxy_model()
    clips, labels = make_clips(PROXY_TASK, num_clips, seed=seed, split="test")
    configs = [("none", 0)] + [(m, r) for m in methods for r in rs if _runs(model, m, r)]
    bar = Progress(total=len(configs) * num_clips, unit="clips", enabled=progress, desc="sta demo")
    rows = []
    for method, r in configs:
        model.set_pruning(r, "sta" if method == "none" else method)
        correct, seconds = 0, 0.0
        with torch.inference_mode():
            for _ in range(2):  # warm-up for this configuration's shapes
                model(clips[:batch_size])
            for start in range(0, num_clips, batch_size):
                batch = clips[start : start + batch_size]
                t0 = time.perf_counter()
                logits = model(batch)
                seconds += time.perf_counter() - t0
                correct += int((logits.argmax(-1) == labels[start : start + batch_size]).sum())
                bar.update(len(batch))
        report = flops_report(model)
        rows.append(DemoRow(method, r, report.tokens, report.gflops, 100.0 * correct / num_clips,
                            1e3 * seconds / num_clips))
    bar.close()
    return rows


def _runs(model, method: str, r: RSpec) -> bool:
    try:
        with model.pruning(r, method):
            return True
    except ValueError:
        return False


def print_rows(rows: list[DemoRow]) -> None:
    print(f"{'method':<10}{'r':>9}  {'tokens after stages':<22}{'GFLOPs/clip':>12}{'top-1 %':>9}{'ms/clip':>9}")
    for row in rows:
        tokens = " -> ".join(map(str, row.tokens))
        print(f"{row.method:<10}{format_r(row.r):>9}  {tokens:<22}{row.gflops:>12.3f}{row.top1:>9.1f}"
              f"{row.ms_per_clip:>9.1f}")


def write_outputs(rows: list[DemoRow], out_dir: str | Path) -> dict[str, Path]:
    """``demo.json`` always; ``demo.png`` (top-1 vs GFLOPs, one line per method) when matplotlib is there."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "demo.json"}
    with open(files["json"], "w") as f:
        json.dump([row.__dict__ | {"tokens": list(row.tokens), "r": format_r(row.r)} for row in rows], f, indent=1)
    try:
        from sta.vis.plot import plot_accuracy_vs_gflops

        baseline = [r for r in rows if r.method == "none"]
        points = [dict(method=row.method, top1=row.top1, gflops_per_view=row.gflops)
                  for row in rows if row.method != "none"]
        for method in {p["method"] for p in points}:  # every curve starts at the unpruned model
            points += [dict(method=method, top1=b.top1, gflops_per_view=b.gflops) for b in baseline]
        files["plot"] = plot_accuracy_vs_gflops(points, out_dir / "demo.png",
                                                title="Proxy task (synthetic): top-1 vs GFLOPs per clip")
    except ImportError as err:
        print(f"note: no plot written ({err})")
    return files
