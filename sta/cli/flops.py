"""``sta flops``: GFLOPs per view and tokens after each stage, for each r (on the meta device)."""

from __future__ import annotations

import json

from sta.cli.options import add_model_args, add_pruning_args, model_request, pruning_request, swept_rs
from sta.cli.output import format_r, format_tokens, print_table, r_for_json
from sta.factory import build_architecture
from sta.measure.flops import flops_table

NAME = "flops"
HELP = "GFLOPs per view and tokens after each stage, for each r"
DESCRIPTION = ("GFLOPs per view (1 multiply-add = 1 FLOP, the paper's convention), counted on the meta device: "
               "no weights and no memory needed, even for ViT-H.")


def add_arguments(p) -> None:
    add_model_args(p, weights=False)
    add_pruning_args(p, sweep=True)
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of a table")


def run(args) -> None:
    request, pruning = model_request(args), pruning_request(args)
    model = build_architecture(request, method=pruning.method)
    rs = swept_rs(args, model, pruning)
    rows = flops_table(model, rs)
    if args.json:
        print(json.dumps([dict(row.to_dict(), r=r_for_json(row.r)) for row in rows]))
        return
    cfg = model.cfg
    print(f"{request.hf_model or request.model or 'vit_base_patch16_224'}, method {model.method}, "
          f"{cfg.num_frames}x{cfg.img_size}x{cfg.img_size} per view; GFLOPs = 1e9 multiply-adds (the paper's "
          "convention)")
    table = [dict(row.to_dict(), r=format_r(row.r), tokens=format_tokens(row.tokens)) for row in rows]
    print_table(table, [("r", "r", ""), ("tokens", "tokens after stages 1/2/3", ""),
                        ("gflops", "GFLOPs/view", ".2f"), ("reduction", "reduction", ".1%")])
