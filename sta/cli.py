"""The ``sta`` command: parses arguments and calls library functions, nothing more."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import torch

from sta.core.methods import METHODS
from sta.core.schedule import format_r
from sta.evaluate import DATASETS, ResumeMismatch
from sta.models.checkpoint import CheckpointError
from sta.models.vit import MODEL_CONFIGS, create_model

# Errors caused by what the user passed (options, files): one line, exit code 2, no traceback.
USER_ERRORS = (ValueError, OSError, ImportError, CheckpointError, ResumeMismatch)


def parse_r(text: str) -> int | tuple[int, ...]:
    """``64`` -> 64 (every stage); ``64,32,16`` -> one value per stage."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"r must be an int or comma-separated ints, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vit_base_patch16_224", choices=sorted(MODEL_CONFIGS))
    p.add_argument("--num-frames", "--num_frames", type=int, default=16)
    p.add_argument("--input-size", "--input_size", type=int, default=224)
    p.add_argument("--tubelet-size", "--tubelet_size", type=int, default=2)
    p.add_argument("--nb-classes", "--nb_classes", type=int, default=400)
    p.add_argument("--hf-model", help="local Hugging Face VideoMAE directory instead of --model (and --ckpt_path)")
    p.add_argument("--r", type=parse_r, nargs="+", default=[0],
                   help="tokens dropped per group; several values sweep; 64,32,16 sets each stage")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--flops-reduction", type=float,
                        help="pick the smallest r saving at least this fraction of FLOPs (e.g. 0.35); replaces --r")
    budget.add_argument("--keep-ratio", type=float,
                        help="pick the smallest r leaving at most this fraction of tokens after the last stage")
    p.add_argument("--method", default="sta", choices=sorted(METHODS),
                   help="token reduction at STA's token counts (sta is the paper's; the rest are baselines)")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of a table")


def build_model(args, device: str = "meta"):
    with torch.device(device):
        if args.hf_model:  # the architecture from config.json; flops and bench need no weights
            from sta.models.convert import read_hf_config
            from sta.models.vit import VisionTransformer

            return VisionTransformer(read_hf_config(args.hf_model), method=args.method)
        return create_model(args.model, num_classes=args.nb_classes, num_frames=args.num_frames,
                            img_size=args.input_size, tubelet_size=args.tubelet_size, method=args.method)


def apply_budget(args, model) -> None:
    """With --flops-reduction / --keep-ratio, replace args.r by the r that meets it, and say which."""
    if args.flops_reduction is None and args.keep_ratio is None:
        return
    from sta.measure.flops import flops_report, r_for_budget

    r = r_for_budget(model, flops_reduction=args.flops_reduction, keep_ratio=args.keep_ratio)
    saved, model.r = model.r, r
    report = flops_report(model)
    model.r = saved
    budget = (f"--flops-reduction {args.flops_reduction}" if args.flops_reduction is not None
              else f"--keep-ratio {args.keep_ratio}")
    print(f"{budget}: picked r={r} ({' -> '.join(map(str, report.tokens))} tokens, {report.gflops:.2f} GFLOPs/view)",
          file=sys.stderr)
    args.r = [r]


def model_spec(args, name: str, num_classes: int):
    from sta.models.loading import ModelSpec

    return ModelSpec(name=name, ckpt_path=args.ckpt_path, hf_model=args.hf_model, num_classes=num_classes,
                     num_frames=args.num_frames, img_size=args.input_size, tubelet_size=args.tubelet_size,
                     allow_unsafe=args.allow_unsafe_checkpoint)


def set_single_r(args, model, default=None) -> None:
    """Commands that run one configuration: --r (or a budget) -> ``model.r``."""
    args.r = args.r or [default]
    apply_budget(args, model)
    if len(args.r) != 1:
        raise ValueError(f"sta {args.command} takes one --r (one int, or one per stage as 64,32,16)")
    model.r = args.r[0]


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format spec)."""
    cells = [[format(row[key], spec) if spec else str(row[key]) for key, _, spec in columns] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h, _) in enumerate(columns)]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))


def cmd_flops(args) -> None:
    from sta.measure.flops import flops_report

    model = build_model(args)
    apply_budget(args, model)
    rows = []
    for r in args.r:
        model.r = r
        rep = flops_report(model)
        rows.append(dict(r=r, method=args.method, tokens=list(rep.tokens), gflops=rep.gflops, flops=rep.flops))
    base = rows[0]["gflops"] if args.r[0] == 0 else _unpruned_gflops(model)
    for row in rows:
        row["reduction"] = 1 - row["gflops"] / base
    if args.json:
        print(json.dumps(rows))
        return
    cfg = model.cfg
    print(f"{args.hf_model or args.model}, method {args.method}, {cfg.num_frames}x{cfg.img_size}x{cfg.img_size} "
          "per view; GFLOPs = 1e9 multiply-adds (the paper's convention)")
    table = [dict(row, r=format_r(row["r"]), tokens=" -> ".join(map(str, row["tokens"]))) for row in rows]
    print_table(table, [("r", "r", ""), ("tokens", "tokens after stages 1/2/3", ""),
                        ("gflops", "GFLOPs/view", ".2f"), ("reduction", "reduction", ".1%")])


def _unpruned_gflops(model) -> float:
    from sta.measure.flops import flops_report

    saved, model.r = model.r, 0
    try:
        return flops_report(model).gflops
    finally:
        model.r = saved


def cmd_bench(args) -> None:
    from sta.measure.speed import benchmark

    model = build_model(args, device="cpu").eval()
    apply_budget(args, model)
    rows = benchmark(model, args.r, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
                     warmup=args.warmup, repeats=args.repeats)
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{args.hf_model or args.model}, method {args.method}, batch {args.batch_size}, {args.dtype} on "
          f"{rows[0]['device']}; median of {args.repeats} runs after {args.warmup} warm-up")
    table = [dict(row, r=format_r(row["r"])) for row in rows]
    print_table(table, [("r", "r", ""), ("ms_per_clip", "ms/clip", ".1f"), ("clips_per_s", "clips/s", ".2f"),
                        ("speedup", "speed-up vs r=0", ".2f")])


def cmd_eval(args) -> None:
    from sta.data import read_list_file
    from sta.evaluate import EvalSettings, evaluate
    from sta.models.loading import load_model
    from sta.utils.distributed import init_distributed

    protocol, default_classes, default_segments = DATASETS[args.data_set]
    num_classes = args.nb_classes or default_classes
    short_side = args.short_side_size or args.input_size
    if short_side != args.input_size:
        raise ValueError(f"--short_side_size {short_side} must equal --input_size {args.input_size}: the test "
                         "protocol crops windows of the short side, which are the model's input")
    rank, world = init_distributed(args.device)
    model, desc = load_model(model_spec(args, args.model, num_classes), r=0, method=args.method)
    set_single_r(args, model)
    cfg = model.cfg  # an --hf-model brings its own frames, size and classes
    list_file = os.path.join(args.data_path, f"{args.split}.csv")
    entries = read_list_file(list_file, data_root=args.data_root, num_classes=cfg.num_classes)
    settings = EvalSettings(protocol=protocol, num_frames=cfg.num_frames, sampling_rate=args.sampling_rate,
                            num_segments=args.test_num_segment or default_segments, num_crops=args.test_num_crop,
                            crop_size=cfg.img_size, dtype=args.dtype, batch_size=args.batch_size,
                            num_workers=args.num_workers, device=args.device)
    if rank == 0:
        print(f"sta eval: {len(entries)} videos from {list_file}, {settings.num_segments}x{settings.num_crops} "
              f"views each, r={format_r(args.r[0])}, {world} process(es)")
    summary = evaluate(model, entries, settings, args.output_dir, desc, log_dir=args.log_dir,
                       progress=not args.no_progress)
    if summary is None:
        return
    if args.json:
        print(json.dumps(summary))
        return
    print(f"top-1 {summary['top1']:.2f}%  top-5 {summary['top5']:.2f}%  on {summary['videos']} videos "
          f"({summary['views']} views); skipped {len(summary['skipped'])}; "
          f"{summary['gflops_per_view']:.2f} GFLOPs/view; {summary['wall_time_s']:.1f}s")
    for s in summary["skipped"]:
        print(f"  skipped {s['video']}: {s['reason']}")
    print(f"summary: {os.path.join(args.output_dir, 'summary.json')}")


def cmd_vis(args) -> None:
    from sta.models.loading import load_model
    from sta.vis.tokens import visualize

    if args.model is None and args.ckpt_path is None and args.hf_model is None and bundled_model_available():
        from sta.demo.proxy import load_proxy_model

        print("sta vis: no --model/--ckpt_path given: using the bundled demo model (synthetic proxy task)")
        model, protocol = load_proxy_model(), "kinetics"
        model.method = args.method
        set_single_r(args, model, default=16)  # 16 of each slice's 64 tokens
    else:
        spec = model_spec(args, args.model or "vit_base_patch16_224", args.nb_classes)
        model, _ = load_model(spec, r=0, method=args.method)
        set_single_r(args, model, default=64)
        protocol = DATASETS_PROTOCOL[args.data_set]
    summary = visualize(model, args.video, args.out, protocol=protocol, sampling_rate=args.sampling_rate)
    print(f"tokens kept {' -> '.join(map(str, summary['tokens_per_stage']))} of {summary['tokens_total']}, "
          f"{summary['gflops_per_view']:.2f} GFLOPs/view; STA keeps {summary['gradnorm_kept_share']:.1%} of the "
          f"GradNorm mass")
    for key, file in summary["files"].items():
        print(f"  {key:<9}{os.path.join(args.out, file)}")
    print(f"  {'json':<9}{os.path.join(args.out, 'tokens.json')}")


def bundled_model_available() -> bool:
    from sta.demo.proxy import DEFAULT_CHECKPOINT

    return DEFAULT_CHECKPOINT.is_file()


DATASETS_PROTOCOL = {name: protocol for name, (protocol, _, _) in DATASETS.items()}


def cmd_demo(args) -> None:
    from sta.demo.run import DEMO_RS, print_rows, run_demo, write_outputs

    rs = tuple(args.r) if args.r else DEMO_RS
    if args.flops_reduction is not None or args.keep_ratio is not None:
        from sta.demo.proxy import load_proxy_model

        apply_budget(args, load_proxy_model())
        rs = tuple(args.r)
    print("sta demo: the bundled ViT trained on the synthetic proxy task (see README); every method keeps the "
          "same number of tokens for a given r")
    rows = run_demo(methods=args.method, rs=rs, num_clips=args.clips, progress=not args.no_progress)
    print_rows(rows)
    for key, path in write_outputs(rows, args.out).items():
        print(f"  {key:<5}{path}")


def cmd_convert(args) -> None:
    from sta.models.convert import convert_checkpoint

    direction = convert_checkpoint(args.src, args.dst, args.direction, num_frames=args.num_frames,
                                   img_size=args.input_size, num_heads=args.num_heads,
                                   allow_unsafe=args.allow_unsafe_checkpoint)
    print(f"sta convert: {args.src} -> {args.dst} ({direction})")


def cmd_plot(args) -> None:
    from sta.vis.plot import plot_accuracy_vs_gflops, read_summaries

    out = plot_accuracy_vs_gflops(read_summaries(args.summaries), args.out, title=args.title)
    print(f"wrote {out}")


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

    p = sub.add_parser("eval", help="top-1/top-5 with the VideoMAE multi-view test protocol (torchrun for many)")
    add_model_args(p)
    p.add_argument("--data-path", "--data_path", required=True, help="folder holding test.csv / val.csv")
    p.add_argument("--split", default="test", help="list file name without .csv (test, val)")
    p.add_argument("--data-root", "--data_root", help="prefix for relative video paths in the list")
    p.add_argument("--data-set", "--data_set", default="Kinetics-400", choices=["Kinetics-400", "SSV2"])
    p.add_argument("--ckpt-path", "--ckpt_path", "--finetune", help="VideoMAE release checkpoint (.pth)")
    p.add_argument("--allow-unsafe-checkpoint", action="store_true",
                   help="unpickle a checkpoint that needs arbitrary code (only for files you trust)")
    p.add_argument("--output-dir", "--output_dir", default="eval_out")
    p.add_argument("--log-dir", "--log_dir", help="TensorBoard scalars (needs tensorboard)")
    p.add_argument("--batch-size", "--batch_size", type=int, default=8, help="views per forward")
    p.add_argument("--test-num-segment", "--test_num_segment", type=int, help="K400: 5, SSV2: 2")
    p.add_argument("--test-num-crop", "--test_num_crop", type=int, default=3)
    p.add_argument("--sampling-rate", "--sampling_rate", type=int, default=4)
    p.add_argument("--short-side-size", "--short_side_size", type=int)
    p.add_argument("--num-workers", "--num_workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--dist-eval", "--dist_eval", action="store_true",
                   help="accepted for run_inference.py users; under torchrun the split is automatic")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval, nb_classes=None)

    p = sub.add_parser("vis", help="PNGs, a GIF and JSON of the tokens STA keeps and the GradNorm map for a video")
    p.add_argument("video")
    add_model_args(p)
    p.add_argument("--ckpt-path", "--ckpt_path", help="VideoMAE release checkpoint (.pth)")
    p.add_argument("--allow-unsafe-checkpoint", action="store_true")
    p.add_argument("--data-set", "--data_set", default="Kinetics-400", choices=sorted(DATASETS_PROTOCOL),
                   help="frame sampling to use")
    p.add_argument("--sampling-rate", "--sampling_rate", type=int, default=4)
    p.add_argument("--out", default="sta_vis")
    p.set_defaults(func=cmd_vis, model=None, r=None)  # r: 64 for the release sizes, 16 for the bundled model

    p = sub.add_parser("demo", help="the bundled trained proxy model: top-1 vs GFLOPs of every method (no network)")
    p.add_argument("--method", nargs="+", choices=sorted(METHODS), help="methods to compare (default: all)")
    p.add_argument("--r", type=parse_r, nargs="+", help="tokens dropped per group (default: sta.demo.run.DEMO_RS)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--flops-reduction", type=float, help="pick r for this FLOPs saving instead of --r")
    budget.add_argument("--keep-ratio", type=float, help="pick r for this fraction of tokens kept instead of --r")
    p.add_argument("--clips", type=int, default=240, help="held-out clips (20 per class by default)")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("convert", help="VideoMAE release checkpoint <-> Hugging Face model directory")
    p.add_argument("src", help="release .pth file, or a Hugging Face model directory")
    p.add_argument("dst", help="output: HF directory (from a .pth) or .pth file (from a directory)")
    p.add_argument("--direction", choices=["auto", "to-hf", "to-release"], default="auto",
                   help="auto: a directory converts to a release .pth, a file to an HF directory")
    p.add_argument("--num-frames", "--num_frames", type=int, help="default: the checkpoint's args, else 16")
    p.add_argument("--input-size", "--input_size", type=int, help="default: the checkpoint's args, else 224")
    p.add_argument("--num-heads", "--num_heads", type=int, help="only for widths that are not a release size")
    p.add_argument("--allow-unsafe-checkpoint", action="store_true")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("plot", help="top-1 vs GFLOPs curves from eval summary.json files")
    p.add_argument("summaries", nargs="+", help="summary.json files or the output folders holding them")
    p.add_argument("--out", default="accuracy_vs_gflops.png")
    p.add_argument("--title", default="top-1 vs GFLOPs per view")
    p.set_defaults(func=cmd_plot)
    return parser


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"sta: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = show_warning
    # Trained models' attention underflows to denormal floats, which slow x86 matmuls up to 10x: flush them.
    torch.set_flush_denormal(True)
    try:
        args.func(args)
    except USER_ERRORS as err:  # bad input reaches here from the library, worded for users
        print(f"sta {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
