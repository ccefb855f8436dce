"""Two ways to a faster int8 graph that `sta export --quantize int8` does not take, measured: why not.

1. ``softmax·V`` in 8 bits too. NNCF's transformer preset keeps the matmul after attention's
   softmax float (its ``MULTIHEAD_ATTENTION_OUTPUT`` ignored pattern); with that pattern dropped
   it is quantized like q·kᵀ. Prints the guard's numbers on the bundled proxy at every r of
   `sta demo` (300 calibration clips, the 240 held-out clips), and the speed.
2. The float parts in bf16. OpenVINO's bf16 inference hint on the int8 IR, with STA's scoring
   nodes (everything outside the transformer blocks, and the keys' head mean) marked ``precise``
   (OpenVINO's ``disable_fp16_compression`` runtime attribute, written into the IR): prints the
   precision each scoring MatMul ran in (OpenVINO's PERF_COUNT) and the speed.

Speed: ViT-B/16 (random weights) at r, batch 8, ms per clip (median of 3 after a warm-up),
int8 graphs calibrated on 8 random clips (speed only), next to the float graph in bf16.

    python benchmarks/int8_alternatives.py [--model vit_base_patch16_224] [--r 64] [--skip-proxy]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import torch
from backends import machine_header  # benchmarks/backends.py
from int8_profile import timed  # benchmarks/int8_profile.py
from nncf.common.graph.patterns.patterns import IgnoredPatternNames
from nncf.openvino.quantization.ignored_patterns import OPENVINO_IGNORED_PATTERNS

from sta import create_model
from sta.core.schedule import format_r
from sta.demo.run import DEMO_RS
from sta.deploy.export import export_model
from sta.deploy.metadata import model_info
from sta.deploy.quantize import proxy_calibration, proxy_guard, quantize_file, quantize_model, random_calibration
from sta.models.bundled import load_bundled_model

BATCH, REPEATS = 8, 3


@contextlib.contextmanager
def softmax_v_quantized():
    """NNCF without the ignored pattern that keeps attention's softmax·V float."""
    patterns = OPENVINO_IGNORED_PATTERNS.registry_dict
    kept = patterns.pop(IgnoredPatternNames.MULTIHEAD_ATTENTION_OUTPUT)
    try:
        yield
    finally:
        patterns[IgnoredPatternNames.MULTIHEAD_ATTENTION_OUTPUT] = kept


def scoring_nodes(float_onnx: Path) -> set[str]:
    """ONNX node names of STA's scoring: nodes outside the transformer blocks, and the keys' mean over heads."""
    names = set()
    for node in onnx.load(str(float_onnx), load_external_data=False).graph.node:
        hierarchy = {p.key: p.value for p in node.metadata_props}.get("pkg.torch.onnx.class_hierarchy", "")
        if "Block'" not in hierarchy or "aten.mean." in hierarchy:
            names.add(node.name)
    return names


def mark_precise(xml: Path, names: set[str], out: Path) -> int:
    """Copy the IR ``xml`` to ``out`` with the layers made from ``names`` marked ``precise``; returns how many."""
    tree, marked = ET.parse(xml), 0
    for layer in tree.getroot().iter("layer"):
        if layer.get("type") not in ("Parameter", "Result", "Const") and layer.get("name").split("/")[0] in names:
            rt_info = layer.find("rt_info")
            rt_info = ET.SubElement(layer, "rt_info") if rt_info is None else rt_info
            ET.SubElement(rt_info, "attribute", name="precise", version="0")
            marked += 1
    tree.write(out)
    out.with_suffix(".bin").write_bytes(xml.with_suffix(".bin").read_bytes())
    return marked


def proxy_rows(calibration_clips: int) -> None:
    print("\n1. softmax·V 8-bit: the guard on the bundled proxy (needs top-1 >= 99%, kept positions >= 95%)")
    guard = proxy_guard()
    for r in DEMO_RS:
        model = load_bundled_model(r=r)
        with tempfile.TemporaryDirectory() as tmp, softmax_v_quantized():
            check = quantize_model(model, Path(tmp) / "m.xml", model_info(model, "bundled proxy model"),
                                   proxy_calibration(calibration_clips), guard, force=True, progress=False)
        print(f"  r={format_r(r):<8} {'passed' if check.ok else 'FAILED'}: {check.describe()}", flush=True)


def speed_rows(name: str, r: int) -> None:
    model = create_model(name, r=r).eval()
    cfg = model.cfg
    clips = np.random.default_rng(0).standard_normal(
        (BATCH, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_model(model, tmp / "float.onnx", model_info(model, name), ordered=False)
        quantize_file(tmp / "float.onnx", tmp / "int8.xml", "openvino", random_calibration(model, 8),
                      progress=False)
        with softmax_v_quantized():
            quantize_file(tmp / "float.onnx", tmp / "sv.xml", "openvino", random_calibration(model, 8),
                          progress=False)
        scoring = scoring_nodes(tmp / "float.onnx")
        marked = mark_precise(tmp / "int8.xml", scoring, tmp / "precise.xml")
        bf16, _ = timed(tmp / "float.onnx", "bf16", clips, REPEATS)
        precise_ms, precise = timed(tmp / "precise.xml", "bf16", clips, REPEATS, perf_count=True)
        rows = {"float graph, bf16": bf16,
                "int8 IR, float parts f32 (what --quantize writes)": timed(tmp / "int8.xml", "f32", clips, REPEATS)[0],
                "1. int8 IR + softmax·V 8-bit, f32": timed(tmp / "sv.xml", "f32", clips, REPEATS)[0],
                f"2. int8 IR, bf16 hint, {marked} scoring layers precise": precise_ms}
    print(f"\nspeed: {name} r={r}, batch {BATCH}, ms per clip (ratio to the float graph in bf16)")
    for label, ms in rows.items():
        print(f"  {label:<58}{ms:8.1f}  {bf16 / ms:5.2f}x")
    matmuls = [e for e in precise.profiling_info if e.node_type == "MatMul" and e.node_name.split("/")[0] in scoring]
    kinds = sorted({e.exec_type for e in matmuls})
    print(f"  2.: STA's {len(matmuls)} scoring MatMuls (marked precise) ran as {', '.join(kinds)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--r", type=int, default=64)
    parser.add_argument("--calibration-clips", type=int, default=300)
    parser.add_argument("--skip-proxy", action="store_true", help="speed rows only")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    print(machine_header(), flush=True)
    if not args.skip_proxy:
        proxy_rows(args.calibration_clips)
    speed_rows(args.model, args.r)


if __name__ == "__main__":
    main()
