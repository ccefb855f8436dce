"""Forward speed of ViT-S and ViT-B at r=0 and r=64, fp32 and bf16, against this machine's GEMM peak.

Prints, in one run: ms per clip (batch 1, 16x224x224, median after warm-up),
the pruned/unpruned speed-up next to the FLOPs ratio, the measured GEMM peak
(best of a few large square matmuls) and the model's achieved FLOP/s as a
fraction of that peak. FLOP/s here counts 2 FLOPs per multiply-add on both
sides (GEMM and model), so the fraction is like for like.

    python benchmarks/cpu_speed.py [--device cpu] [--repeats 5] [--models vit_small_patch16_224 ...]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sta import create_model, flops_report
from sta.measure.speed import random_clips, time_forward
from sta.utils.device import parse_dtype, resolve_device, synchronize


def gemm_peak(dtype: torch.dtype, device: torch.device, sizes=(1024, 2048, 3072), repeats: int = 5) -> float:
    """Best FLOP/s (2 per multiply-add) of ``n x n @ n x n`` over ``sizes``."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.mm(a, b)  # warm-up: oneDNN / cuBLAS pick their kernels
        synchronize(device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            synchronize(device)
            times.append(time.perf_counter() - start)
        best = max(best, 2 * n**3 / min(times))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "vit_base_patch16_224"])
    parser.add_argument("--r", type=int, default=64)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")

    peaks = {name: gemm_peak(parse_dtype(name), device) for name in args.dtypes}
    for name, peak in peaks.items():
        print(f"GEMM peak {name}: {peak / 1e9:.0f} GFLOP/s")

    rows = []
    print(f"\n{'model':<24}{'dtype':<10}{'r':>4}{'GFLOPs':>9}{'ms/clip':>10}{'GFLOP/s':>9}{'of peak':>9}"
          f"{'speed-up':>10}{'FLOPs ratio':>13}{'speed-up / FLOPs ratio':>24}")
    for model_name in args.models:
        for dtype_name in args.dtypes:
            dtype = parse_dtype(dtype_name)
            model = create_model(model_name).to(device=device, dtype=dtype).eval()
            clips = random_clips(model, args.batch_size, dtype, device)
            base = None
            for r in (0, args.r):
                model.r = r
                macs = flops_report(model).flops
                ms = time_forward(model, clips, args.warmup, args.repeats).ms_per_clip
                achieved = 2 * macs / (ms / 1e3)
                row = dict(model=model_name, dtype=dtype_name, r=r, gflops=macs / 1e9, ms_per_clip=ms,
                           achieved_gflop_per_s=achieved / 1e9, fraction_of_peak=achieved / peaks[dtype_name])
                if base is None:
                    base = row
                row["speedup"] = base["ms_per_clip"] / ms
                row["flops_ratio"] = base["gflops"] / row["gflops"]
                rows.append(row)
                print(f"{model_name:<24}{dtype_name:<10}{r:>4}{row['gflops']:>9.2f}{ms:>10.1f}"
                      f"{row['achieved_gflop_per_s']:>9.0f}{row['fraction_of_peak']:>9.0%}"
                      f"{row['speedup']:>10.2f}{row['flops_ratio']:>13.2f}{row['speedup'] / row['flops_ratio']:>24.2f}")
            del model, clips
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(peaks={k: v / 1e9 for k, v in peaks.items()}, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
