"""The paper's throughput table on a GPU: ViT-S/B/L, 16 x 224, r = 0 and the pruned r, batch 32 and 1, bf16 and fp16.

For each configuration: ms per clip and clips/s (median of timed forwards, each
timed with CUDA events), the speed-up over r = 0 of the same model, batch and
dtype (measured in the same run), the GFLOPs share it comes from (our counter,
``sta flops``), and the peak GPU memory of the forward. Weights are random: speed
does not depend on them, and tokens are kept by STA whatever the weights.

    python benchmarks/gpu_throughput.py                   # on cuda, the full table
    python benchmarks/gpu_throughput.py --dry-run         # the same code on the CPU, tiny sizes

``benchmarks/gpu_check.sh`` runs it after the ``cuda`` tests.
"""

from __future__ import annotations

import argparse
import json

import torch

from sta import create_model, flops_report
from sta.measure.speed import random_clips, time_forward
from sta.utils.device import parse_dtype, resolve_device

MODELS = ("vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224")
RS = (0, 32, 64, 96)  # 0: unpruned; 64 drops a third of each 196-token group (1568 -> 1056 -> 800 -> 672)
TINY = dict(num_frames=16, img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)  # --dry-run


def peak_memory_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def measure(model, r: int, batch: int, dtype: str, device: torch.device, warmup: int, repeats: int) -> dict:
    """One row: ``model`` (already on ``device`` in ``dtype``) pruning with ``r`` for the time of the row."""
    with model.pruning(r=r):
        flops = flops_report(model).flops
        clips = random_clips(model, batch, parse_dtype(dtype), device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        timing = time_forward(model, clips, warmup=warmup, repeats=repeats)
    return dict(r=r, batch=batch, dtype=dtype, ms_per_clip=timing.ms_per_clip, clips_per_s=timing.clips_per_s,
                flops=flops, peak_mb=peak_memory_mb(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--r", type=int, nargs="+", default=list(RS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 1])
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--dry-run", action="store_true", help="cpu, a tiny ViT-S-shaped model, batch 2, 1 repeat")
    args = parser.parse_args()
    sizes = {}
    if args.dry_run:
        args.device, args.models, args.r, args.batch_sizes = "cpu", ["vit_small_patch16_224"], [0, 3], [2]
        args.warmup, args.repeats, sizes = 1, 1, TINY
    if 0 not in args.r:
        parser.error("--r must include 0: every speed-up is over r = 0, measured in the same run")
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {where}"
          + (f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if device.type == "cuda" else ""))
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, **sizes).eval()  # random weights: speed does not depend on them
        for dtype in args.dtypes:
            model = model.to(device=device, dtype=parse_dtype(dtype))
            for batch in args.batch_sizes:
                base = None
                for r in sorted(args.r):
                    row = dict(model=name, **measure(model, r, batch, dtype, device, args.warmup, args.repeats))
                    base = base or row
                    row.update(speedup=base["ms_per_clip"] / row["ms_per_clip"],
                               flops_share=row["flops"] / base["flops"])
                    rows.append(row)
        del model
    print(f"{'model':<24}{'batch':>6}{'dtype':>10}{'r':>5}{'ms/clip':>10}{'clips/s':>10}{'speed-up':>10}"
          f"{'GFLOPs':>9}{'share':>8}{'peak MiB':>10}")
    for row in rows:
        peak = f"{row['peak_mb']:.0f}" if row["peak_mb"] is not None else "-"
        print(f"{row['model']:<24}{row['batch']:>6}{row['dtype']:>10}{row['r']:>5}{row['ms_per_clip']:>10.3f}"
              f"{row['clips_per_s']:>10.1f}{row['speedup']:>9.2f}x{row['flops'] / 1e9:>9.1f}{row['flops_share']:>8.1%}"
              f"{peak:>10}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
