"""``sta export``: the pruned model as one static graph (ONNX or torch.export), checked before it is written."""

from __future__ import annotations

import os

from sta.cli.options import add_dataset_arg, add_model_args, add_pruning_args, model_request, pruning_request
from sta.cli.output import format_r, format_tokens, print_notes
from sta.deploy.export import export_model, format_for
from sta.deploy.metadata import model_info
from sta.factory import class_names, load_model

NAME = "export"
HELP = "write the pruned model as one static graph: ONNX or torch.export (.pt2)"
DESCRIPTION = ("Exports the model at its r and method with a dynamic batch dimension, runs the exported graph next "
               "to the eager model on random clips, and writes the file only if logits, top-1 and kept positions "
               "agree. The file records r, method, input format and class names for `sta predict --exported` and "
               "`sta eval --exported`. Without a model: the bundled demo model.")
BUNDLED_R = 16  # the bundled model's groups hold 64 tokens


def add_arguments(p) -> None:
    add_model_args(p, weights=True)
    add_pruning_args(p, sweep=False, default_r=f"0 ({BUNDLED_R} for the bundled model)")
    p.add_argument("--format", choices=["onnx", "pt2"], help="default: from the --out suffix")
    p.add_argument("--out", required=True, help="file to write (.onnx or .pt2)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="pt2 only: the graph's precision (ONNX is float32; OpenVINO runs it in bf16 on request)")
    add_dataset_arg(p, "class count and the class names recorded in the file")
    p.add_argument("--labels", help="class names file to record instead (one per line)")


def run(args) -> None:
    fmt = format_for(args.out, args.format)
    request = model_request(args)
    loaded = load_model(request, pruning_request(args), allow_bundled=True, bundled_r=BUNDLED_R, use="export")
    print_notes(NAME, loaded.notes)
    model = loaded.model
    name = os.path.basename(request.ckpt_path) if request.ckpt_path else loaded.name
    names = class_names(model.cfg.num_classes, args.labels, args.hf_model, args.data_set, carried=loaded.class_names)
    info = model_info(model, name, names, sampling_rate=loaded.sampling_rate, random_weights=loaded.random_weights)
    check = export_model(model, args.out, info, fmt=fmt, dtype=args.dtype)
    print(f"sta export: {args.out} ({fmt}, {args.dtype}): {info.method} r={format_r(info.r)}, tokens "
          f"{format_tokens(info.tokens_per_stage)}, {info.gflops_per_view:.2f} GFLOPs/view; checked against the "
          f"eager model: max |logit diff| {check.max_abs_diff:.2g}, same top-1 and kept positions")
