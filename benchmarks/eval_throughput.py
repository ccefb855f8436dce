"""Is an evaluation on this machine bound by data loading or by the model?

Prints decode + preprocess throughput (views/s: PyAV decoding, resize, crops,
normalisation, exactly as `sta eval` does it) with 0, 1 and 2 loader workers,
next to the model's forward throughput (views/s) at r=0 and r=64.

    python benchmarks/eval_throughput.py [--videos DIR] [--repeat 3] [--models vit_small_patch16_224 ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sta import create_model
from sta.data import VideoEntry
from sta.evaluate.run import EvalSettings, VideoViews, iterate_views
from sta.measure.speed import random_clips, time_forward

SAMPLE_VIDEOS = Path(__file__).resolve().parents[1] / "examples" / "videos"


def loader_views_per_s(entries: list[VideoEntry], settings: EvalSettings, workers: int) -> float:
    jobs = [(i, e, set()) for i, e in enumerate(entries)]
    start, views = time.perf_counter(), 0
    for item in iterate_views(VideoViews(jobs, settings), workers):
        if item["error"]:
            raise RuntimeError(item["error"])
        views += len(item["keys"])
    return views / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, default=SAMPLE_VIDEOS)
    parser.add_argument("--repeat", type=int, default=3, help="each video is listed this many times")
    parser.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "vit_base_patch16_224"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--protocol", default="kinetics", choices=["kinetics", "ssv2"])
    args = parser.parse_args()

    files = sorted(p for p in args.videos.iterdir() if p.suffix in {".mp4", ".mkv", ".avi", ".webm"})
    entries = [VideoEntry(str(p), 0, i + 1, p.name) for i, p in enumerate(files * args.repeat)]
    settings = EvalSettings(protocol=args.protocol, num_segments=5 if args.protocol == "kinetics" else 2)
    print(f"{len(entries)} videos ({', '.join(p.name for p in files)}), {settings.num_segments}x"
          f"{settings.num_crops} views of 16x224x224 each; torch threads {torch.get_num_threads()}\n")
    print(f"{'stage':<48}{'views/s':>10}")
    for workers in (0, 1, 2):
        rate = loader_views_per_s(entries, settings, workers)
        print(f"{f'decode + preprocess, {workers} workers':<48}{rate:>10.2f}")
    for name in args.models:
        model = create_model(name).eval()
        clips = random_clips(model, args.batch_size, torch.float32, torch.device("cpu"))
        for r in (0, 64):
            model.r = r
            rate = time_forward(model, clips, warmup=1, repeats=3).clips_per_s
            print(f"{f'{name} forward, r={r}, fp32, batch {args.batch_size}':<48}{rate:>10.2f}")


if __name__ == "__main__":
    main()
