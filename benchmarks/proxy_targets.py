"""Does a bundled proxy discriminate? Prints the targets the hard proxy was made for, measured.

1. Unpruned top-1 on 480 held-out clips: 85-97% on the first seed's (the training script's final evaluation),
   and within 3 points of that on every other seed's (the band belongs to the task, not to one test set).
2. From a `sta compare` run's ``compare.jsonl`` (default: run one, no arguments, into ``--out``): at half the
   unpruned GFLOPs, the best and the worst method at least 5 points apart, and at least one method 3 or more
   points from random dropping with exact McNemar p < 0.01; every method's curve monotone in GFLOPs within its
   intervals (no point above the upper end of a costlier point's interval).

    python benchmarks/proxy_targets.py [--proxy hard] [--compare compare_out/compare.jsonl]
    python benchmarks/proxy_targets.py --figure docs/proxy_hard_clips.png   # 3 held-out clips, every frame
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from sta.data.proxies import make_clips
from sta.measure.speed import cpu_description
from sta.models.bundled import load_bundled_model

SEEDS = (0, 1234, 7, 2026)  # 0: the training script's final evaluation; 1234: sta demo / compare / gradnorm


def top1(model, proxy: str, seed: int, n: int = 480, batch: int = 48) -> float:
    clips, labels = make_clips(proxy, n, seed=seed, split="test")
    with torch.inference_mode():
        predicted = torch.cat([model(clips[i : i + batch]).argmax(1) for i in range(0, n, batch)])
    return 100 * (predicted == labels).float().mean().item()


def check_compare(rows: list[dict], budget: float = 0.5) -> list[tuple[str, bool, str]]:
    at = [r for r in rows if r.get("method") and r.get("budget") == budget]
    best, worst = max(at, key=lambda r: r["top1"]), min(at, key=lambda r: r["top1"])
    random = next(r for r in at if r["method"] == "random")
    far = [r for r in at if r["method"] != "random" and abs(r["top1"] - random["top1"]) >= 3
           and r["p_vs_random"] is not None and r["p_vs_random"] < 0.01]
    checks = [("best - worst >= 5 points at half the GFLOPs",
               best["top1"] - worst["top1"] >= 5,
               f"{best['method']} {best['top1']:.1f} - {worst['method']} {worst['top1']:.1f} = "
               f"{best['top1'] - worst['top1']:.1f}"),
              (">= 1 method 3+ points from random, p < 0.01", bool(far),
               ", ".join(f"{r['method']} {r['top1'] - random['top1']:+.1f} (p {r['p_vs_random']:.2g})" for r in far)
               or "none")]
    base = next(r for r in rows if r.get("method") is None and "top1" in r)
    bad = []
    for method in sorted({r["method"] for r in rows if r.get("method")}):
        points = sorted([base] + [r for r in rows if r.get("method") == method], key=lambda r: r["gflops"])
        for cheap, costly in zip(points, points[1:]):
            if cheap["top1"] > costly["top1_ci95"][1]:
                bad.append(f"{method}: {cheap['top1']:.1f} at {cheap['gflops']:.3f} > {costly['top1_ci95'][1]:.1f}")
    checks.append(("every curve monotone in GFLOPs within its intervals", not bad, "; ".join(bad) or "all"))
    return checks


def write_figure(proxy: str, path: str, clips: int = 3) -> None:
    """``clips`` held-out clips, one row each, every frame side by side."""
    import cv2
    import numpy as np

    from sta.data.sampling import to_uint8_frames

    made, labels = make_clips(proxy, clips, seed=3, split="test")
    rows = [np.concatenate(list(np.asarray(to_uint8_frames(clip))), axis=1) for clip in made]
    cv2.imwrite(path, np.concatenate(rows, axis=0)[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    from sta.data.proxies import get_task

    print(f"wrote {path}: rows are " + ", ".join(get_task(proxy).class_names[int(y)] for y in labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", default="hard")
    parser.add_argument("--compare", help="a compare.jsonl to check (default: run `sta compare` into --out)")
    parser.add_argument("--out", default="compare_out")
    parser.add_argument("--figure", help="only write a picture of held-out clips to this PNG")
    args = parser.parse_args()
    if args.figure:
        return write_figure(args.proxy, args.figure)
    torch.set_num_threads(2)
    print(f"cpu {cpu_description()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    model = load_bundled_model(proxy=args.proxy)
    scores = {seed: top1(model, args.proxy, seed) for seed in SEEDS}
    first = scores[SEEDS[0]]
    for seed, score in scores.items():
        print(f"unpruned top-1, 480 held-out clips, seed {seed:>4}: {score:.1f}%")
    ok = 85 <= first <= 97 and all(abs(s - first) <= 3 for s in scores.values())
    print(f"[{'met' if ok else 'NOT met'}] unpruned 85-97% on seed {SEEDS[0]} ({first:.1f}%), every other seed within "
          f"3 points of it (largest gap {max(abs(s - first) for s in scores.values()):.1f})")
    path = Path(args.compare) if args.compare else Path(args.out) / "compare.jsonl"
    if not args.compare:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sta", "compare", "--proxy", args.proxy, "--out", args.out],
                       check=True)
        print(f"sta compare (no other arguments) took {(time.perf_counter() - start) / 60:.1f} min")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for what, met, detail in check_compare(rows):
        print(f"[{'met' if met else 'NOT met'}] {what}: {detail}")


if __name__ == "__main__":
    main()
