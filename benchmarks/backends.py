"""Which backend runs a pruned ViT fastest on this machine? torch eager, ONNX Runtime and OpenVINO side by side.

For each model, r, batch size and dtype: ms per clip (16x224x224, median after
warm-up) on each backend, the speed-up over torch eager float32 at r=0 (same
model and batch), the speed-up over torch eager at the same r and dtype (int8:
over torch eager float32), over OpenVINO bf16 at the same r, and the achieved
GFLOP/s (2 per multiply-add) as a share of the best square GEMM of that dtype
measured in the same run. ONNX Runtime runs float32 and int8; OpenVINO runs the
same ONNX graph at f32 or bf16 inference precision, and int8.

int8 rows: the model quantized as `sta export --quantize int8` quantizes it (the
layer matmuls 8-bit, STA's scoring float32), calibrated on 8 random clips: speed
only, its answers are not read (benchmarks/backend_agreement.py checks those on
the trained proxy). The header names the CPU, its 8-bit / bf16 instruction sets
(/proc/cpuinfo) and OpenVINO's OPTIMIZATION_CAPABILITIES, and the load average
before and after (the machine may be shared).

    python benchmarks/backends.py [--models vit_small_patch16_224 vit_base_patch16_224] [--batches 1 8]
    python benchmarks/backends.py --models vit_base_patch16_224 --r 0 64 --batches 8 \\
        --configs torch:float32 openvino:bfloat16 openvino:int8 onnxruntime:int8
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from cpu_speed import gemm_peak  # benchmarks/cpu_speed.py

from sta import create_model
from sta.deploy.export import export_model
from sta.deploy.quantize import quantized_runner, random_calibration
from sta.deploy.runners import OnnxRuntimeRunner, OpenVinoRunner, TorchRunner, model_info
from sta.measure.speed import random_clips, time_forward
from sta.utils.device import parse_dtype

CONFIGS = [("torch", "float32"), ("onnxruntime", "float32"), ("openvino", "float32"),
           ("torch", "bfloat16"), ("openvino", "bfloat16"), ("onnxruntime", "int8"), ("openvino", "int8")]
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
CALIBRATION_CLIPS = 8


def machine_header() -> str:
    """CPU model, the instruction sets 8-bit and bf16 speed depend on, OpenVINO's view of them, versions, load."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    isa = " ".join(f"{flag}{'+' if flag in flags else '-'}" for flag in ISA_FLAGS)
    lines = [f"CPU: {model}, {os.cpu_count()} logical cores; ISA: {isa}"]
    try:
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        lines.append(f"OpenVINO {ov.__version__.split('-')[0]} OPTIMIZATION_CAPABILITIES: {' '.join(caps)}")
    except ImportError:
        lines.append("OpenVINO: not installed")
    versions = []
    for module in ("onnxruntime", "nncf"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            versions.append(f"{module}: not installed")
    lines.append(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {', '.join(versions)}; load average "
                 f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return "\n".join(lines)


def make_runner(name: str, r: int, backend: str, dtype: str, onnx: Path, info):
    if backend == "torch":
        return TorchRunner(create_model(name, r=r), info, dtype=dtype)
    if dtype == "int8":
        model = create_model(name, r=r).eval()
        return quantized_runner(model, info, backend, random_calibration(model, CALIBRATION_CLIPS))
    return (OnnxRuntimeRunner if backend == "onnxruntime" else OpenVinoRunner)(onnx, info, dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "vit_base_patch16_224"])
    parser.add_argument("--r", type=int, nargs="+", default=[0, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--configs", nargs="+", default=[f"{b}:{d}" for b, d in CONFIGS],
                        help="backend:dtype pairs to run (torch float32 at r=0 is the reference)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configs = [tuple(c.split(":")) for c in args.configs]
    torch.set_flush_denormal(True)
    device = torch.device("cpu")
    print(machine_header())
    peaks = {name: gemm_peak(parse_dtype(name), device) for name in ("float32", "bfloat16")}
    print(f"GEMM peak fp32 {peaks['float32'] / 1e9:.0f}, bf16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s (torch); int8 "
          f"rows: calibrated on {CALIBRATION_CLIPS} random clips, speed only", flush=True)
    print(f"{'model':<22}{'r':>3}{'batch':>6}  {'backend':<12}{'dtype':<9}{'ms/clip':>9}{'vs fp32 r=0':>12}"
          f"{'vs torch same r':>16}{'vs ov bf16':>11}{'of peak':>9}")
    for name in args.models:
        for r in args.r:
            run_model(name, r, args, configs, peaks, device)
    print(f"# load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def run_model(name: str, r: int, args, configs, peaks, device) -> None:
    model = create_model(name, r=r).eval()
    info = model_info(model, name)
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp) / "model.onnx"
        start = time.perf_counter()
        export_model(create_model(name, r=r).eval(), onnx, info, ordered=False)  # near-tied kept tokens may swap
        print(f"# {name} r={r}: exported and checked in {time.perf_counter() - start:.0f}s", flush=True)
        runners = {}
        for backend, dtype in configs:
            start = time.perf_counter()
            runners[(backend, dtype)] = make_runner(name, r, backend, dtype, onnx, info)
            if dtype == "int8":
                print(f"# {backend} int8: quantized in {time.perf_counter() - start:.0f}s", flush=True)
        for batch in args.batches:
            clips = random_clips(model, batch, torch.float32, device)
            measured = {}
            for backend, dtype in configs:
                ms = time_forward(runners[(backend, dtype)], clips, args.warmup, args.repeats).ms_per_clip
                measured[(backend, dtype)] = ms
                baselines.setdefault((name, batch), ms if (r, backend, dtype) == (0, "torch", "float32") else None)
                base = baselines[(name, batch)]
                eager = measured.get(("torch", "float32" if dtype == "int8" else dtype))
                ov_bf16 = measured.get(("openvino", "bfloat16"))
                peak = peaks.get(dtype)
                share = 2 * info.gflops_per_view * 1e9 / (ms / 1e3) / peak if peak else float("nan")
                print(f"{name:<22}{r:>3}{batch:>6}  {backend:<12}{dtype:<9}{ms:>9.1f}{ratio(base, ms):>12.2f}"
                      f"{ratio(eager, ms):>16.2f}{ratio(ov_bf16, ms):>11.2f}"
                      f"{format(share, '.0%') if share == share else '-':>9}", flush=True)
        del runners


def ratio(reference: float | None, ms: float) -> float:
    return reference / ms if reference else float("nan")


baselines: dict[tuple[str, int], float | None] = {}

if __name__ == "__main__":
    main()
