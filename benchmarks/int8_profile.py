"""Where an int8 graph spends its time: OpenVINO's per-op profile of the int8 IR next to the float graph in bf16.

Exports the model (random weights) at r, quantizes it as `sta export --quantize int8` does (calibrated on 8
random clips: speed only), runs both graphs with OpenVINO's PERF_COUNT on one batch of random clips after a
warm-up, and prints ms per clip and, per OpenVINO node type and kernel, the time summed over the batch:
which ops the 8-bit matmuls speed up and which stay float.

    python benchmarks/int8_profile.py [--model vit_base_patch16_224] [--r 64] [--batch 8] [--top 12]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov
from backends import machine_header  # benchmarks/backends.py

from sta import create_model
from sta.deploy.export import export_model
from sta.deploy.metadata import model_info
from sta.deploy.quantize import quantize_file, random_calibration


def timed(path: Path, precision: str, clips: np.ndarray, repeats: int, perf_count: bool = False):
    """(median ms per clip, the infer request after its last run: with ``perf_count``, its ``profiling_info``)."""
    config = {"INFERENCE_PRECISION_HINT": precision, **({"PERF_COUNT": "YES"} if perf_count else {})}
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    request.infer({0: clips})  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer({0: clips})
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)) / len(clips), request


def profile(path: Path, precision: str, clips: np.ndarray, repeats: int) -> tuple[float, collections.Counter]:
    """(median ms per clip, ms per (node type, kernel) over the last run's batch)."""
    ms, request = timed(path, precision, clips, repeats, perf_count=True)
    per_op = collections.Counter()
    for entry in request.profiling_info:
        per_op[(entry.node_type, entry.exec_type)] += entry.real_time.total_seconds() * 1e3
    return ms, per_op


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--r", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=12, help="rows per graph")
    args = parser.parse_args()
    print(machine_header(), flush=True)
    model = create_model(args.model, r=args.r).eval()
    cfg = model.cfg
    clips = np.random.default_rng(0).standard_normal(
        (args.batch, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        float_onnx, int8_xml = Path(tmp) / "float.onnx", Path(tmp) / "int8.xml"
        export_model(model, float_onnx, model_info(model, args.model), ordered=False)
        quantize_file(float_onnx, int8_xml, "openvino", random_calibration(model, 8), progress=False)
        runs = {"float graph, bf16": profile(float_onnx, "bf16", clips, args.repeats),
                "int8 IR (float parts f32)": profile(int8_xml, "f32", clips, args.repeats)}
    reference = next(iter(runs.values()))[0]
    for name, (ms, per_op) in runs.items():
        total = sum(per_op.values())
        print(f"\n{args.model} r={args.r} batch {args.batch}, {name}: {ms:.1f} ms/clip ({reference / ms:.2f}x the "
              f"first); ms over the batch by node type and kernel:")
        for (node, kernel), t in per_op.most_common(args.top):
            print(f"  {node:<36}{kernel:<28}{t:9.1f}  {100 * t / total:5.1f}%")


if __name__ == "__main__":
    main()
