"""``sta demo``: `sta compare`'s quick form: the bundled model on held-out synthetic clips, every method at the same
token counts."""

from __future__ import annotations

import sys

from sta.cli.options import add_budget_args, add_proxy_arg, clip_count, parse_r, rounds
from sta.cli.output import print_notes
from sta.core.methods import METHODS
from sta.data.proxies import DEFAULT_PROXY
from sta.demo.run import DEMO_METHODS, DEMO_RS, run_demo, write_outputs
from sta.evaluate.compare import table
from sta.factory import PruningRequest, pick_r
from sta.models.bundled import load_bundled_model

NAME = "demo"
HELP = "the bundled trained proxy model: top-1 vs GFLOPs of every method (no download)"
DESCRIPTION = ("Runs the ViT that ships with sta-prune (trained on a synthetic 12-class motion task, see README) on "
               "held-out clips, for every method at the same token counts, and prints `sta compare`'s table: top-1 "
               "with its interval, GFLOPs, interleaved speed and a paired test against random dropping; writes "
               "compare.md, compare.jsonl and compare.png.")


def add_arguments(p) -> None:
    add_proxy_arg(p)
    p.add_argument("--method", nargs="+", choices=sorted(METHODS), help=f"methods to compare (default: "
                   f"{' '.join(DEMO_METHODS)}: those that prune at STA's stages with its token counts)")
    p.add_argument("--r", type=parse_r, nargs="+",
                   help="tokens dropped per group; several values sweep (default: 16 32 48,16,8 56,8,4 60,2,1)")
    add_budget_args(p)
    p.add_argument("--clips", type=clip_count, default=240, help="held-out clips (20 per class by default)")
    p.add_argument("--out", default="demo_out", help="output folder")
    p.add_argument("--timing-rounds", type=rounds, default=3, help="interleaved timing rounds (0: none)")
    p.add_argument("--no-progress", action="store_true", help="accepted; the demo prints no progress bar")


def run(args) -> None:
    rs = tuple(args.r) if args.r else DEMO_RS
    budget = PruningRequest(flops_reduction=args.flops_reduction, keep_ratio=args.keep_ratio)
    if budget.given:
        r, note = pick_r(load_bundled_model(proxy=args.proxy or DEFAULT_PROXY), budget)
        print_notes(NAME, [note])
        rs = (r,)
    print("sta demo: the bundled ViT trained on the synthetic proxy task (see README); every method keeps the same "
          "number of tokens for a given r (`sta compare` matches GFLOPs budgets instead)", file=sys.stderr)
    result = run_demo(methods=args.method, rs=rs, num_clips=args.clips, timing_rounds=args.timing_rounds,
                      proxy=args.proxy or DEFAULT_PROXY)
    print(table(result))
    for key, path in write_outputs(result, args.out).items():
        print(f"  {key:<6}{path}")
