"""``sta export``: the pruned model as one static graph (ONNX or torch.export), checked before it is written;
``--quantize int8``: an 8-bit graph for OpenVINO (IR) or ONNX Runtime (QDQ ONNX), guarded before it is written."""

from __future__ import annotations

import os
import sys

from sta.cli.options import (
    add_dataset_arg,
    add_model_args,
    add_pruning_args,
    add_sampling_args,
    clip_count,
    dataset_of,
    model_request,
    pruning_request,
)
from sta.cli.output import format_r, format_tokens, print_notes, spell_flags
from sta.data.datasets import check_label_space
from sta.deploy.export import export_model, format_for
from sta.deploy.metadata import model_info
from sta.errors import InvalidInput
from sta.evaluate.calibration import GUARD_VIDEOS, calibration_sets
from sta.factory import class_names, load_model, sampling_rate
from sta.models.bundled import BUNDLED_R

NAME = "export"
HELP = "write the pruned model as one static graph: ONNX, torch.export (.pt2), or int8 (--quantize)"
DESCRIPTION = ("Exports the model at its r and method with a dynamic batch dimension, runs the exported graph next "
               "to the eager model on random clips, and writes the file only if logits, top-1 and kept positions "
               "agree. The file records r, method, input format and class names for `sta predict --exported` and "
               "`sta eval --exported`. Without a model: the bundled demo model. --quantize int8 writes an 8-bit "
               "graph (OpenVINO IR .xml + .bin through NNCF, or a QDQ .onnx for ONNX Runtime) whose matmuls are "
               "8-bit while STA's scoring and selection stay float32, calibrated on --calibration clips and written "
               "only if, on held-out clips, top-1 agrees with the float model on >= 99% and >= 95% of the kept "
               "positions are the same (--force: anyway, and recorded).")
INT8_OPTIONS = ("backend", "calibration", "data_root", "sampling_rate", "force")


def add_arguments(p) -> None:
    add_model_args(p, weights=True, proxy=True)
    add_pruning_args(p, sweep=False, default_r=f"0 ({BUNDLED_R} for the bundled model)")
    p.add_argument("--format", choices=["onnx", "pt2"], help="default: from the --out suffix")
    p.add_argument("--out", required=True, help="file to write (.onnx or .pt2; --quantize int8: .xml or .onnx)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="pt2 only: the graph's precision (ONNX is float32; OpenVINO runs it in bf16 on request)")
    add_dataset_arg(p, "class count and the class names recorded in the file")
    p.add_argument("--labels", help="class names file to record instead (one per line)")
    g = p.add_argument_group("int8")
    g.add_argument("--quantize", choices=["int8"], help="write an 8-bit graph (post-training static quantization)")
    g.add_argument("--backend", choices=["openvino", "onnxruntime"],
                   help="what runs the int8 graph: openvino (NNCF, an IR .xml + .bin) or onnxruntime (a QDQ .onnx) "
                   "(default: by the --out suffix)")
    g.add_argument("--calibration", help="calibration videos: a VideoMAE list file (`path label` lines), a folder of "
                   "videos, or `proxy` (the bundled task's clips; the default for the bundled model)")
    g.add_argument("--calibration-clips", type=clip_count, default=300,
                   help="calibration clips (one view per video, as `sta eval` samples it; the next videos, up to "
                   f"{GUARD_VIDEOS}, are the guard's held-out clips)")
    g.add_argument("--data-root", "--data_root", help="prefix for relative video paths in the calibration list")
    add_sampling_args(g, data_set=False)
    g.add_argument("--force", action="store_true", help="write the int8 graph even when it fails its guard (the "
                   "file records that it did)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines or bars")


def run(args) -> None:
    if args.quantize is None:
        given = [name for name in INT8_OPTIONS if getattr(args, name) not in (None, False)]
        if given:
            raise InvalidInput(f"--{given[0].replace('_', '-')} applies to --quantize int8")
    else:
        from sta.deploy.quantize import backend_for

        if args.format is not None or args.dtype != "float32":
            raise InvalidInput("--quantize int8 writes the graph its --backend loads: drop --format / --dtype")
        backend_for(args.out, args.backend)  # a wrong suffix fails before the model loads
    fmt = None if args.quantize else format_for(args.out, args.format)
    request = model_request(args)
    loaded = load_model(request, pruning_request(args), allow_bundled=True, bundled_r=BUNDLED_R, use="export")
    print_notes(NAME, loaded.notes)
    model = loaded.model
    name = os.path.basename(request.ckpt_path) if request.ckpt_path else loaded.name
    names = class_names(model.cfg.num_classes, args.labels, args.hf_model, args.data_set, carried=loaded.class_names)
    if args.data_set is not None:
        check_label_space(dataset_of(args), model.cfg.num_classes)
    recorded = dict(name=args.data_set, protocol=dataset_of(args).protocol) if args.data_set else None
    info = model_info(model, name, names, sampling_rate=loaded.sampling_rate, random_weights=loaded.random_weights,
                      dataset=recorded)
    if args.quantize:
        return run_quantize(args, loaded, info)
    check = export_model(model, args.out, info, fmt=fmt, dtype=args.dtype)
    print(f"sta export: {args.out} ({fmt}, {args.dtype}): {info.method} r={format_r(info.r)}, tokens "
          f"{format_tokens(info.tokens_per_stage)}, {info.gflops_per_view:.2f} GFLOPs/view; checked against the "
          f"eager model: max |logit diff| {check.max_abs_diff:.2g}, same top-1 and kept positions on {check.clips} "
          f"clips" + (f" ({check.rounding_decided} left out: float rounding decides their near-tied kept tokens)"
                      if check.rounding_decided else ""))


def run_quantize(args, loaded, info) -> None:
    from sta.deploy.quantize import backend_for, quantize_model
    from sta.deploy.runners import open_exported

    backend = backend_for(args.out, args.backend)
    views = dict(protocol=dataset_of(args).protocol, sampling_rate=sampling_rate(args.sampling_rate, loaded))
    calibration, guard = calibration_sets(loaded.model, args.calibration, args.calibration_clips, loaded.proxy,
                                          data_root=args.data_root, report=report, **views)
    print(f"sta export: int8 for {backend}: calibrating on {calibration.description}; guard on "
          f"{guard.description}", file=sys.stderr)
    check = quantize_model(loaded.model, args.out, info, calibration, guard, backend=backend, force=args.force,
                           progress=not args.no_progress)
    written = open_exported(args.out, backend, "int8").info.quantization  # read back, verified
    tool = f"{written['tool']} {written['version']}"
    print(f"sta export: {args.out} (int8, {backend}, {tool}): {info.method} r={format_r(info.r)}, tokens "
          f"{format_tokens(info.tokens_per_stage)}; {written['quantized_nodes']} matmuls 8-bit, "
          f"{written['float_nodes']} float32 (STA's scoring among them); calibrated on {written['clips']} clips")
    verdict = "passed" if check.ok else "FAILED, written anyway (--force; recorded in the file)"
    print(f"sta export: guard {verdict}: {check.describe()}")


def report(message: str) -> None:
    print(f"sta export: {spell_flags(message)}", file=sys.stderr)
