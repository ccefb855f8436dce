"""Is an evaluation on this machine bound by data loading or by the model?

Prints decode + preprocess throughput (views/s: PyAV decoding, resize, crops,
normalisation, exactly as `sta eval` does it) with 0, 1 and 2 loader workers,
once with the release-exact OpenCV resize `sta eval` uses and once with the
float bilinear resize it used before (torch ``interpolate`` + rounding, off by
one grey level at ~10% of pixels), next to the model's forward throughput
(views/s) at r=0 and r=64.

    python benchmarks/eval_throughput.py [--videos DIR] [--repeat 3] [--models vit_small_patch16_224 ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F

from sta import create_model
from sta.data import VideoEntry, ViewProtocol
from sta.data.sampling import resized_hw
from sta.evaluate.run import ViewDataset, iterate_views
from sta.measure.speed import random_clips, time_forward

SAMPLE_VIDEOS = Path(__file__).resolve().parents[1] / "examples" / "videos"


def torch_bilinear_resize(frames, size: int = 224) -> np.ndarray:
    """The resize `sta eval` used before it matched the release: float bilinear, rounded to uint8."""
    x = torch.from_numpy(np.asarray(frames))
    height, width = x.shape[1:3]
    if min(height, width) == size:
        return x.numpy()
    out = F.interpolate(x.permute(0, 3, 1, 2).float(), size=resized_hw(height, width, size), mode="bilinear",
                        align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def loader_views_per_s(entries: list[VideoEntry], views: ViewProtocol, workers: int) -> float:
    jobs = [(i, e, set()) for i, e in enumerate(entries)]
    start, count = time.perf_counter(), 0
    for item in iterate_views(ViewDataset(jobs, views), workers):
        if item.error:
            raise RuntimeError(item.error)
        count += len(item.keys)
    return count / (time.perf_counter() - start)


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
    views = ViewProtocol.for_dataset(args.protocol)
    print(f"{len(entries)} videos ({', '.join(p.name for p in files)}), {views.num_segments}x"
          f"{views.num_crops} views of 16x224x224 each; torch threads {torch.get_num_threads()}\n")
    print(f"{'stage':<56}{'views/s':>10}")
    for label, patch in (("OpenCV resize (release-exact)", None), ("torch float resize (before)", True)):
        for workers in (0, 1, 2):
            with mock.patch("sta.data.sampling.resize_short_side", torch_bilinear_resize) if patch else \
                    mock.patch.dict({}):
                rate = loader_views_per_s(entries, views, workers)
            print(f"{f'decode + preprocess, {label}, {workers} workers':<56}{rate:>10.2f}", flush=True)
    for name in args.models:
        model = create_model(name).eval()
        clips = random_clips(model, args.batch_size, torch.float32, torch.device("cpu"))
        for r in (0, 64):
            model.r = r
            rate = time_forward(model, clips, warmup=1, repeats=3).clips_per_s
            print(f"{f'{name} forward, r={r}, fp32, batch {args.batch_size}':<56}{rate:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
