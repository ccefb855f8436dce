"""Which backend runs a pruned ViT fastest on this machine? torch eager, ONNX Runtime and OpenVINO side by side.

For each model, r, batch size and dtype: ms per clip (16x224x224, median after
warm-up) on each backend, the speed-up over torch eager float32 at r=0 (same
model and batch), the speed-up over torch eager at the same r and dtype, and
the achieved GFLOP/s (2 per multiply-add) as a share of the best square GEMM of
that dtype measured in the same run. ONNX Runtime runs float32 only; OpenVINO
runs the same ONNX graph at f32 or bf16 inference precision.

    python benchmarks/backends.py [--models vit_small_patch16_224 vit_base_patch16_224] [--batches 1 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from cpu_speed import gemm_peak  # benchmarks/cpu_speed.py

from sta import create_model
from sta.deploy.export import export_model
from sta.deploy.runners import OnnxRuntimeRunner, OpenVinoRunner, TorchRunner, model_info
from sta.measure.speed import random_clips, time_forward
from sta.utils.device import parse_dtype

CONFIGS = [("torch", "float32"), ("onnxruntime", "float32"), ("openvino", "float32"),
           ("torch", "bfloat16"), ("openvino", "bfloat16")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "vit_base_patch16_224"])
    parser.add_argument("--r", type=int, nargs="+", default=[0, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    device = torch.device("cpu")
    peaks = {name: gemm_peak(parse_dtype(name), device) for name in ("float32", "bfloat16")}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; GEMM peak fp32 "
          f"{peaks['float32'] / 1e9:.0f}, bf16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s")
    print(f"{'model':<22}{'r':>3}{'batch':>6}  {'backend':<12}{'dtype':<9}{'ms/clip':>9}{'vs fp32 r=0':>12}"
          f"{'vs torch same r':>16}{'of peak':>9}")
    for name in args.models:
        for r in args.r:
            model = create_model(name, r=r).eval()
            info = model_info(model, name)
            with tempfile.TemporaryDirectory() as tmp:
                onnx = Path(tmp) / "model.onnx"
                start = time.perf_counter()
                export_model(create_model(name, r=r).eval(), onnx, info)
                print(f"# {name} r={r}: exported and checked in {time.perf_counter() - start:.0f}s", flush=True)
                for batch in args.batches:
                    clips = random_clips(model, batch, torch.float32, device)
                    eager = {}
                    for backend, dtype in CONFIGS:
                        if backend == "torch":
                            runner = TorchRunner(create_model(name, r=r), info, dtype=dtype)
                        else:
                            runner = (OnnxRuntimeRunner if backend == "onnxruntime" else OpenVinoRunner)(
                                onnx, info, dtype)
                        ms = time_forward(runner, clips, args.warmup, args.repeats).ms_per_clip
                        if backend == "torch":
                            eager[dtype] = ms
                        baselines.setdefault((name, batch), ms if (r, dtype) == (0, "float32") else None)
                        base = baselines[(name, batch)]
                        share = 2 * info.gflops_per_view * 1e9 / (ms / 1e3) / peaks[dtype]
                        print(f"{name:<22}{r:>3}{batch:>6}  {backend:<12}{dtype:<9}{ms:>9.1f}"
                              f"{(base / ms if base else float('nan')):>12.2f}{eager[dtype] / ms:>16.2f}"
                              f"{share:>9.0%}", flush=True)
                        del runner


baselines: dict[tuple[str, int], float | None] = {}

if __name__ == "__main__":
    main()
