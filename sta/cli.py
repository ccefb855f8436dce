"""The ``sta`` command: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import argparse
import json
import sys

from .backbone import MODEL_CONFIGS, create_model


def parse_r(text: str) -> int | tuple[int, ...]:
    """``64`` -> 64 (every stage); ``64,32,16`` -> one value per stage."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"r must be an int or comma-separated ints, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def format_r(r) -> str:
    return ",".join(map(str, r)) if isinstance(r, (tuple, list)) else str(r)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vit_base_patch16_224", choices=sorted(MODEL_CONFIGS))
    p.add_argument("--num-frames", "--num_frames", type=int, default=16)
    p.add_argument("--input-size", "--input_size", type=int, default=224)
    p.add_argument("--tubelet-size", "--tubelet_size", type=int, default=2)
    p.add_argument("--nb-classes", "--nb_classes", type=int, default=400)
    p.add_argument("--r", type=parse_r, nargs="+", default=[0],
                   help="tokens dropped per group; several values sweep; 64,32,16 sets each stage")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of a table")


def build_model(args, device: str = "meta"):
    import torch

    with torch.device(device):
        return create_model(args.model, num_classes=args.nb_classes, num_frames=args.num_frames,
                            img_size=args.input_size, tubelet_size=args.tubelet_size)


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format spec)."""
    cells = [[format(row[key], spec) if spec else str(row[key]) for key, _, spec in columns] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h, _) in enumerate(columns)]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))


def cmd_flops(args) -> None:
    from .flops import flops_report

    model = build_model(args)
    rows = []
    for r in args.r:
        model.r = r
        rep = flops_report(model)
        rows.append(dict(r=r, tokens=list(rep.tokens), gflops=rep.gflops, flops=rep.flops))
    base = rows[0]["gflops"] if args.r[0] == 0 else _unpruned_gflops(model)
    for row in rows:
        row["reduction"] = 1 - row["gflops"] / base
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{args.model}, {args.num_frames}x{args.input_size}x{args.input_size} per view; "
          "GFLOPs = 1e9 multiply-adds (the paper's convention)")
    table = [dict(row, r=format_r(row["r"]), tokens=" -> ".join(map(str, row["tokens"]))) for row in rows]
    print_table(table, [("r", "r", ""), ("tokens", "tokens after stages 1/2/3", ""),
                        ("gflops", "GFLOPs/view", ".2f"), ("reduction", "reduction", ".1%")])


def _unpruned_gflops(model) -> float:
    from .flops import flops_report

    saved, model.r = model.r, 0
    try:
        return flops_report(model).gflops
    finally:
        model.r = saved


def cmd_bench(args) -> None:
    from .speed import benchmark

    model = build_model(args, device="cpu").eval()
    rows = benchmark(model, args.r, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
                     warmup=args.warmup, repeats=args.repeats)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{args.model}, batch {args.batch_size}, {args.dtype} on {rows[0]['device']}; "
          f"median of {args.repeats} runs after {args.warmup} warm-up")
    table = [dict(row, r=format_r(row["r"])) for row in rows]
    print_table(table, [("r", "r", ""), ("ms_per_clip", "ms/clip", ".1f"), ("clips_per_s", "clips/s", ".2f"),
                        ("speedup", f"speed-up vs r={format_r(rows[0]['r'])}", ".2f")])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sta", description="STA token pruning for VideoMAE video transformers")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("flops", help="GFLOPs per view and tokens per stage at each r")
    add_model_args(p)
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("bench", help="forward speed (ms/clip, clips/s) at each r")
    add_model_args(p)
    p.add_argument("--batch-size", "--batch_size", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as err:  # bad option values reach here from the library, worded for users
        print(f"sta {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
