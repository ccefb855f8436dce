"""``sta plot``: top-1 vs GFLOPs curves from the summaries ``sta eval`` wrote."""

from __future__ import annotations

from sta.vis.plot import plot_accuracy_vs_gflops, read_summaries

NAME = "plot"
HELP = "top-1 vs GFLOPs curves from `sta eval` summary.json files"
DESCRIPTION = HELP


def add_arguments(p) -> None:
    p.add_argument("summaries", nargs="+", help="summary.json files or the output folders holding them")
    p.add_argument("--out", default="accuracy_vs_gflops.png", help="image file (.png, .svg or .pdf)")
    p.add_argument("--title", default="top-1 vs GFLOPs per view", help="plot title")


def run(args) -> None:
    out = plot_accuracy_vs_gflops(read_summaries(args.summaries), args.out, title=args.title)
    print(f"wrote {out}")
