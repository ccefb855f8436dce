"""The ``sta`` command: parses arguments and calls library functions, nothing more.

Errors caused by what the user passed (options, files, videos) print one line
and exit with status 2; ``--debug`` (or ``STA_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import dataclass

import torch

from sta import __version__
from sta.core.methods import METHODS
from sta.core.schedule import format_r
from sta.data import ListFileError, VideoDecodeError
from sta.deploy.runners import BACKENDS
from sta.evaluate import DATASETS, ResumeMismatch
from sta.models.checkpoint import CheckpointError
from sta.models.vit import MODEL_CONFIGS

# Errors caused by what the user passed (options, files): one line, exit code 2, no traceback.
USER_ERRORS = (ValueError, OSError, ImportError, CheckpointError, ResumeMismatch, VideoDecodeError, ListFileError)
# Model options an --hf-model directory decides itself (from its config.json).
HF_DECIDES = ("model", "ckpt_path", "nb_classes", "num_frames", "input_size", "tubelet_size")
DEFAULTS = dict(model="vit_base_patch16_224", num_frames=16, input_size=224, tubelet_size=2)
BUNDLED_SAMPLING_RATE = 1  # the demo model's clips are 16 consecutive frames


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Bad options are one line naming the option, not the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


# --------------------------------------------------------------------------- option types

def int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value

    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def device_name(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:1``, ``mps``: refused here when torch does not know the device type."""
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda, cuda:N or mps") from None
    return text


def parse_r(text: str) -> int | tuple[int, ...]:
    """``64`` -> 64 (every stage); ``64,32,16`` -> one value per stage."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"r must be an int or comma-separated ints, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"r must be 0 or more, got {text!r}")
    return values[0] if len(values) == 1 else values


# --------------------------------------------------------------------------- shared options

def add_model_args(p: argparse.ArgumentParser, weights: bool) -> None:
    """Which model: a release size (+ checkpoint), or a Hugging Face directory."""
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=sorted(MODEL_CONFIGS),
                   help=f"VideoMAE size (default: {DEFAULTS['model']}; vis, predict, export and gradnorm use the "
                   "bundled demo model when no model option is given)")
    if weights:
        g.add_argument("--ckpt-path", "--ckpt_path", "--finetune", help="VideoMAE release checkpoint (.pth); "
                       "a --model without one has random weights")
        g.add_argument("--allow-unsafe-checkpoint", action="store_true",
                       help="unpickle a checkpoint that needs arbitrary code (can run code: only for files you trust)")
    g.add_argument("--hf-model", help="local Hugging Face VideoMAE, ViViT or V-JEPA 2 classifier directory, "
                   "instead of --model"
                   + (" and --ckpt-path" if weights else "") + "; frames, size and classes come from its config")
    g.add_argument("--num-frames", "--num_frames", type=positive_int, help="frames per clip (default: 16)")
    g.add_argument("--input-size", "--input_size", type=positive_int,
                   help="frame height = width fed to the model (default: 224)")
    g.add_argument("--tubelet-size", "--tubelet_size", type=positive_int, help="frames per token (default: 2)")
    g.add_argument("--nb-classes", "--nb_classes", type=positive_int,
                   help="classifier outputs (default: the dataset's, else 400)")


def add_pruning_args(p: argparse.ArgumentParser, sweep: bool, default_r: str = "0") -> None:
    g = p.add_argument_group("pruning")
    if sweep:
        g.add_argument("--r", type=parse_r, nargs="+",
                       help="tokens dropped per group; several values sweep (one row each); 64,32,16 sets each stage "
                       f"(default: {default_r})")
    else:
        g.add_argument("--r", type=parse_r, help=f"tokens dropped per group (one value; 64,32,16 sets each stage) "
                       f"(default: {default_r})")
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--flops-reduction", type=fraction,
                        help="instead of --r: the smallest r saving at least this fraction of FLOPs (e.g. 0.35)")
    budget.add_argument("--keep-ratio", type=fraction,
                        help="instead of --r: the smallest r leaving at most this fraction of tokens at the end")
    g.add_argument("--method", default="sta", choices=sorted(METHODS),
                   help="token reduction at STA's token counts (sta is the paper's; the rest are baselines)")


def resolve_model_args(args) -> None:
    """Refuse options that --hf-model or --exported would silently override; fill the defaults otherwise."""
    given = lambda names: [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) not in (None, False)]
    if getattr(args, "exported", None):
        flags = given((*HF_DECIDES, "hf_model", "r", "flops_reduction", "keep_ratio"))
        if flags or args.method != "sta":
            raise ValueError(f"--exported brings its own model, r and method: drop {', '.join(flags or ['--method'])}")
        return
    if args.hf_model:
        if flags := given(HF_DECIDES):
            raise ValueError(f"--hf-model takes frames, size, classes and weights from its config: drop "
                             f"{', '.join(flags)}")
        return
    for name, value in DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)


def build_model(args, device: str = "meta"):
    """The architecture the options name (no weights), for commands that only count or time it."""
    from sta.models.vit import create_model

    resolve_model_args(args)
    with torch.device(device):
        if args.hf_model:
            from sta.adapters.directory import hf_architecture

            return hf_architecture(args.hf_model, method=args.method, device=device)
        return create_model(args.model, num_classes=args.nb_classes or 400, num_frames=args.num_frames,
                            img_size=args.input_size, tubelet_size=args.tubelet_size, method=args.method)


def load_weighted_model(args, num_classes: int, method: str | None = None):
    """The model with its weights (release checkpoint, HF directory, or seeded random) and its description."""
    from sta.models.loading import ModelSpec, load_model

    resolve_model_args(args)
    spec = ModelSpec(name=args.model or DEFAULTS["model"], ckpt_path=getattr(args, "ckpt_path", None),
                     hf_model=args.hf_model, num_classes=num_classes, num_frames=args.num_frames or 16,
                     img_size=args.input_size or 224, tubelet_size=args.tubelet_size or 2,
                     allow_unsafe=getattr(args, "allow_unsafe_checkpoint", False))
    return load_model(spec, r=0, method=method or args.method)


def add_device_args(p, dtype: bool = True) -> None:
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:1, ...")
    if dtype:
        p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                       help="precision of weights and activations (STA scores in float32 whatever this is)")


def add_run_args(g, workers: int, json_help: str) -> None:
    """How views are decoded and run, and how results are printed (eval, predict)."""
    g.add_argument("--batch-size", "--batch_size", type=positive_int, default=8, help="views per forward")
    g.add_argument("--num-workers", "--num_workers", type=non_negative_int, default=workers,
                   help="decoding processes (0 = decode in the main process)")
    add_device_args(g)
    g.add_argument("--json", action="store_true", help=json_help)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_sampling_args(p, data_set: bool = True, sampling_rate: bool = True) -> None:
    """Which dataset's frame sampling (and class count / names); Kinetics' stride."""
    if data_set:
        p.add_argument("--data-set", "--data_set", default="Kinetics-400", choices=sorted(DATASETS),
                       help="frame sampling (Kinetics: every n-th frame; SSV2: segments), class count and names")
    if sampling_rate:
        p.add_argument("--sampling-rate", "--sampling_rate", type=positive_int,
                       help="Kinetics: take every n-th frame; SSV2 spreads frames over the video instead "
                       "(default: 4; 1 for the bundled demo model, whose clips are consecutive frames)")


def add_backend_args(p: argparse.ArgumentParser, exported: bool = True) -> None:
    g = p.add_argument_group("backend")
    g.add_argument("--backend", choices=BACKENDS,
                   help="what computes the logits: torch (eager), onnxruntime or openvino (the model exported "
                   "to ONNX on the fly, or --exported) (default: torch; for --exported, by its file type)")
    if exported:
        g.add_argument("--exported", help="a file written by `sta export` (.onnx / .pt2) instead of a model: "
                       "r, method, input format and class names come from it")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (--backend torch)")


@dataclass
class Prepared:
    """What a command runs: a runner, what it computes, and the description that names its weights."""

    runner: object  # sta.deploy.runners.Runner
    info: object  # sta.deploy.runners.ModelInfo
    desc: dict
    bundled: bool = False  # the demo model that ships with the package


def prepare_runner(args, num_classes: int, default_r, bundled_r=None) -> Prepared:
    """--exported file, or a model from the model options (with --r / a budget), on --backend."""
    from sta.deploy.export import runner_for
    from sta.deploy.runners import model_info, open_exported
    from sta.models.loading import file_sha256

    if getattr(args, "exported", None):
        resolve_model_args(args)
        if args.compile:
            raise ValueError("--compile applies to a model run by torch, not to an exported file")
        if getattr(args, "device", "cpu") != "cpu":
            raise ValueError("exported files run on the CPU here; for a GPU give the model (--model/--hf-model) "
                             "with --backend torch")
        backend = args.backend or ("torch" if args.exported.endswith(".pt2") else "onnxruntime")
        runner = open_exported(args.exported, backend, args.dtype)
        desc = dict(exported=os.path.abspath(args.exported), exported_sha256=file_sha256(args.exported),
                    name=runner.info.model)
        return Prepared(runner, runner.info, desc)
    model, desc, class_names, bundled = model_from_args(args, num_classes, default_r, bundled_r)
    info = model_info(model, args.hf_model or desc.get("name", "model"), class_names,
                      sampling_rate=BUNDLED_SAMPLING_RATE if bundled else None)
    runner = runner_for(model, info, args.backend or "torch", args.dtype, getattr(args, "device", "cpu"),
                        args.compile)
    return Prepared(runner, info, desc, bundled)


def model_from_args(args, num_classes: int, default_r, bundled_r=None):
    """``(model, description, class names or None, bundled?)`` at the r the options ask for.

    With ``bundled_r`` and no model options, the demo model that ships with the package (at ``bundled_r``).
    ``default_r=None``: the command sweeps r itself; the model stays at r=0.
    """
    no_model = not (args.model or getattr(args, "ckpt_path", None) or args.hf_model)  # before defaults fill in
    if bundled_r is not None and no_model and bundled_model_available():
        from sta.demo.proxy import CLASS_NAMES, load_proxy_model

        if given := [f"--{n.replace('_', '-')}" for n in HF_DECIDES if getattr(args, n, None) not in (None, False)]:
            raise ValueError(f"the bundled demo model has its own frames, size and classes: drop {', '.join(given)} "
                             "(or name a model with --model / --hf-model)")

        print(f"sta {args.command}: no model given: using the bundled demo model (synthetic proxy task)",
              file=sys.stderr)
        model = load_proxy_model()
        if default_r is not None:
            model.method = args.method
            set_single_r(args, model, default=bundled_r)
        return model, dict(name="bundled proxy model"), list(CLASS_NAMES), True
    model, desc = load_weighted_model(args, num_classes, method=None if default_r is not None else "sta")
    if default_r is not None:
        set_single_r(args, model, default=default_r)
    return model, desc, None, False


def sampling_rate(args, info) -> int:
    """--sampling-rate, else the stride the model records (the bundled model: 1), else the release's 4."""
    return args.sampling_rate or info.sampling_rate or 4


def class_names_for(args, num_classes: int) -> list[str] | None:
    """--labels FILE, else an --hf-model's id2label, else the dataset's shipped names when the class count fits,
    else any shipped set that fits."""
    from sta import labels

    if getattr(args, "labels", None):
        names = labels.read_label_file(args.labels)
        if len(names) != num_classes:
            raise ValueError(f"{args.labels}: {len(names)} class names for a model with {num_classes} classes")
        return names
    if getattr(args, "hf_model", None):  # a fine-tuned HF model names its own classes
        from sta.adapters.directory import read_class_names

        names = read_class_names(args.hf_model)
        if names and len(names) == num_classes:
            return names
    dataset = getattr(args, "data_set", None)
    if dataset:
        names = labels.load(dataset)
        if len(names) == num_classes:
            return names
    return labels.for_num_classes(num_classes)


def budget_r(args, model):
    """With --flops-reduction / --keep-ratio: the r that meets it (said on stderr); else None."""
    if args.flops_reduction is None and args.keep_ratio is None:
        return None
    from sta.measure.flops import flops_report, r_for_budget

    r = r_for_budget(model, flops_reduction=args.flops_reduction, keep_ratio=args.keep_ratio)
    with model.pruning(r=r):
        report = flops_report(model)
    budget = (f"--flops-reduction {args.flops_reduction}" if args.flops_reduction is not None
              else f"--keep-ratio {args.keep_ratio}")
    print(f"{budget}: picked r={r} ({' -> '.join(map(str, report.tokens))} tokens, {report.gflops:.2f} GFLOPs/view)",
          file=sys.stderr)
    return r


def set_single_r(args, model, default) -> None:
    """Commands that run one configuration: --r (or a budget) -> ``model.r``."""
    picked = budget_r(args, model)
    model.r = picked if picked is not None else args.r if args.r is not None else default


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (key, header, format spec)."""
    cells = [[format(row[key], spec) if spec else str(row[key]) for key, _, spec in columns] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h, _) in enumerate(columns)]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))


# --------------------------------------------------------------------------- commands

def cmd_flops(args) -> None:
    from sta.measure.flops import flops_report

    model = build_model(args)
    rs = [r] if (r := budget_r(args, model)) is not None else args.r or [0]
    rows = []
    for r in rs:
        with model.pruning(r=r):
            rep = flops_report(model)
        rows.append(dict(r=r, method=args.method, tokens=list(rep.tokens), gflops=rep.gflops, flops=rep.flops))
    with model.pruning(r=0):
        base = flops_report(model).gflops
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


def cmd_bench(args) -> None:
    from sta.measure.speed import benchmark

    if args.exported:
        return bench_exported(args)
    model = build_model(args, device="cpu").eval()
    rs = [r] if (r := budget_r(args, model)) is not None else args.r or [0]
    backend = args.backend or "torch"
    make_runner = None
    if backend != "torch" or args.compile:
        from sta.deploy.export import runner_for
        from sta.deploy.runners import model_info

        def make_runner(m):
            return runner_for(m, model_info(m, args.hf_model or args.model), backend, args.dtype, args.device,
                              args.compile)

    rows = benchmark(model, rs, batch_size=args.batch_size, dtype=args.dtype, device=args.device,
                     warmup=args.warmup, repeats=args.repeats, make_runner=make_runner)
    if args.json:
        print(json.dumps([row.to_dict() for row in rows]))
        return
    engine = backend + (", compiled" if args.compile else "")
    print(f"{args.hf_model or args.model}, method {args.method}, batch {args.batch_size}, {args.dtype} on "
          f"{rows[0].device} ({engine}); median of {args.repeats} runs after {args.warmup} warm-up")
    table = [dict(row.to_dict(), r=format_r(row.r)) for row in rows]
    print_table(table, [("r", "r", ""), ("ms_per_clip", "ms/clip", ".1f"), ("clips_per_s", "clips/s", ".2f"),
                        ("speedup", "speed-up vs r=0", ".2f")])


def bench_exported(args) -> None:
    """One exported graph's speed; there is no r=0 graph beside it to compare with."""
    from sta.deploy.runners import open_exported
    from sta.measure.speed import time_forward

    resolve_model_args(args)
    if args.compile or args.device != "cpu":
        raise ValueError("exported files run on the CPU, without --compile")
    runner = open_exported(args.exported, args.backend or ("torch" if args.exported.endswith(".pt2") else
                                                           "onnxruntime"), args.dtype)
    info = runner.info
    gen = torch.Generator().manual_seed(0)
    clips = torch.randn(args.batch_size, 3, info.num_frames, info.img_size, info.img_size, generator=gen)
    timing = time_forward(runner, clips, args.warmup, args.repeats)
    row = dict(exported=args.exported, backend=runner.backend, dtype=args.dtype, r=info.r, method=info.method,
               batch_size=args.batch_size, ms_per_clip=timing.ms_per_clip, clips_per_s=timing.clips_per_s,
               gflops_per_view=info.gflops_per_view)
    if args.json:
        print(json.dumps([row]))
        return
    print(f"{args.exported} ({info.model}, {info.method} r={format_r(info.r)}), batch {args.batch_size}, "
          f"{args.dtype} on {runner.backend}: {timing.ms_per_clip:.1f} ms/clip, {timing.clips_per_s:.2f} clips/s "
          f"(median of {args.repeats} after {args.warmup} warm-up)")


def cmd_eval(args) -> None:
    from sta.data import ViewProtocol, read_list_file
    from sta.evaluate import EvalSettings, evaluate
    from sta.utils.device import resolve_device
    from sta.utils.distributed import distributed

    resolve_model_args(args)
    protocol, dataset_classes = DATASETS[args.data_set]
    list_file = os.path.join(args.data_path, f"{args.split}.csv")
    if not os.path.isfile(list_file):
        raise ValueError(f"list file {list_file} not found (--data_path holds {args.split}.csv)")
    resolve_device(args.device)  # a missing GPU fails before any model or video is loaded
    prepared = prepare_runner(args, args.nb_classes or dataset_classes, default_r=0)
    info = prepared.info  # an --hf-model or --exported file brings its own frames, size and classes
    short_side = args.short_side_size or info.img_size
    if short_side != info.img_size:
        raise ValueError(f"--short_side_size {short_side} must equal the input size {info.img_size}: the test "
                         "protocol crops windows of the short side, which are the model's input")
    views = ViewProtocol.for_dataset(protocol, num_frames=info.num_frames, sampling_rate=sampling_rate(args, info),
                                     num_segments=args.test_num_segment, num_crops=args.test_num_crop,
                                     crop_size=info.img_size, mean=info.mean, std=info.std)
    settings = EvalSettings(views=views, dtype=args.dtype, batch_size=args.batch_size, num_workers=args.num_workers,
                            device=args.device)
    entries = read_list_file(list_file, data_root=args.data_root, num_classes=info.num_classes)
    with distributed(args.device) as (rank, world):
        if rank == 0:
            print(f"sta eval: {len(entries)} videos from {list_file}, {views.num_segments}x{views.num_crops} views "
                  f"each, {info.method} r={format_r(info.r)}, {prepared.runner.backend}, {world} process(es)",
                  file=sys.stderr)
        summary = evaluate(prepared.runner, entries, settings, args.output_dir, prepared.desc,
                           log_dir=args.log_dir, progress=not args.no_progress)
    if summary is None:
        return
    for s in summary.skipped:
        print(f"  skipped {s['video']}: {s['reason']}", file=sys.stderr)
    if summary.videos == 0:
        raise EvalFailed(f"no video was scored ({len(summary.skipped)} of {summary.videos_in_list} skipped, "
                         f"see above); summary: {os.path.join(args.output_dir, 'summary.json')}")
    if args.json:
        print(json.dumps(summary.to_dict()))
        return
    print(f"top-1 {summary.top1:.2f}%  top-5 {summary.top5:.2f}%  on {summary.videos} videos "
          f"({summary.views} views); skipped {len(summary.skipped)}; "
          f"{summary.gflops_per_view:.2f} GFLOPs/view; {summary.wall_time_s:.1f}s")
    print(f"summary: {os.path.join(args.output_dir, 'summary.json')}")


class EvalFailed(RuntimeError):
    """A run that finished without a number to report (exit status 1)."""


def cmd_predict(args) -> None:
    from sta.data import ViewProtocol
    from sta.evaluate.predict import expand_inputs, predict_videos

    videos = expand_inputs(args.videos)
    protocol, dataset_classes = DATASETS[args.data_set]
    num_classes = args.nb_classes or dataset_classes
    prepared = prepare_runner(args, num_classes, default_r=0, bundled_r=16)
    info = prepared.info  # --labels first, then the names an exported file or the bundled model carry
    names = class_names_for(args, info.num_classes) if args.labels else (
        info.class_names or class_names_for(args, info.num_classes))
    segments, crops = args.views or (None, None)
    views = ViewProtocol.for_dataset(protocol, num_frames=info.num_frames, sampling_rate=sampling_rate(args, info),
                                     num_segments=segments, num_crops=crops, crop_size=info.img_size,
                                     mean=info.mean, std=info.std)
    random_weights = not (prepared.bundled or prepared.desc.get("checkpoint") or prepared.desc.get("hf_model")
                          or prepared.desc.get("exported"))
    header = (f"{info.model}, {info.method} r={format_r(info.r)}: tokens kept "
              f"{' -> '.join(map(str, info.tokens_per_stage))}, {info.gflops_per_view:.2f} GFLOPs/view, "
              f"{views.num_segments}x{views.num_crops} views, {prepared.runner.backend}")
    print(header + ("  [RANDOM WEIGHTS: these predictions mean nothing]" if random_weights else ""),
          file=sys.stderr)
    failed = 0
    for prediction in predict_videos(prepared.runner, videos, views, names, top_k=args.top_k,
                                     batch_size=args.batch_size, num_workers=args.num_workers,
                                     progress=not args.no_progress):
        failed += prediction.error is not None
        if args.json:
            print(json.dumps(prediction.to_dict()), flush=True)
        elif prediction.error is not None:
            print(f"{prediction.video}: error: {prediction.error}", flush=True)
        else:
            best = "  ".join(f"{name} {p:.1%}" for _, name, p in prediction.top)
            print(f"{prediction.video}: {best}", flush=True)
    if failed:
        raise EvalFailed(f"{failed} of {len(videos)} videos could not be read (see above)")


def parse_views(text: str) -> tuple[int, int]:
    """``5x3`` -> (5 temporal clips, 3 crops)."""
    try:
        segments, crops = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"views are SEGMENTSxCROPS, e.g. 5x3 or 1x1; got {text!r}") from None
    if segments < 1 or crops < 1:
        raise argparse.ArgumentTypeError(f"views need at least 1x1, got {text!r}")
    return segments, crops


def cmd_export(args) -> None:
    from sta.deploy.export import export_model
    from sta.deploy.runners import model_info

    out = args.out
    fmt = args.format or (os.path.splitext(out)[1].lstrip(".") or None)
    if fmt not in ("onnx", "pt2"):
        raise ValueError(f"say --format onnx or pt2 (or give --out a .onnx / .pt2 name), got {out!r}")
    if not out.endswith(f".{fmt}"):
        raise ValueError(f"--out {out} must end in .{fmt} for --format {fmt}")
    protocol, dataset_classes = DATASETS[args.data_set]
    num_classes = args.nb_classes or dataset_classes
    model, desc, names, bundled = model_from_args(args, num_classes, default_r=0, bundled_r=16)
    name = args.hf_model or os.path.basename(args.ckpt_path or "") or desc.get("name", "model")
    info = model_info(model, name, names or class_names_for(args, model.cfg.num_classes),
                      sampling_rate=BUNDLED_SAMPLING_RATE if bundled else None)
    check = export_model(model, out, info, fmt=fmt, dtype=args.dtype)
    print(f"sta export: {out} ({fmt}, {args.dtype}): {info.method} r={format_r(info.r)}, tokens "
          f"{' -> '.join(map(str, info.tokens_per_stage))}, {info.gflops_per_view:.2f} GFLOPs/view; checked against "
          f"the eager model: max |logit diff| {check.max_abs_diff:.2g}, same top-1 and kept positions")


def cmd_vis(args) -> None:
    from sta.vis.tokens import visualize

    if not os.path.isfile(args.video):
        raise ValueError(f"{args.video}: no such video file")
    protocol, dataset_classes = DATASETS[args.data_set]
    # 64 of a ViT's 196 tokens per group; 16 of the bundled model's 64
    model, _, _, _ = model_from_args(args, args.nb_classes or dataset_classes, default_r=64, bundled_r=16)
    result = visualize(model, args.video, args.out, protocol=protocol, sampling_rate=args.sampling_rate or 4)
    print(f"{result.method} r={format_r(result.r)}: tokens kept {' -> '.join(map(str, result.tokens_per_stage))} "
          f"of {result.tokens_total}, {result.gflops_per_view:.2f} GFLOPs/view; keeps "
          f"{result.gradnorm_kept_share:.1%} of the GradNorm mass")
    for key, file in result.files.items():
        print(f"  {key:<9}{os.path.join(args.out, file)}")


def bundled_model_available() -> bool:
    from sta.demo.proxy import DEFAULT_CHECKPOINT

    return DEFAULT_CHECKPOINT.is_file()


def cmd_demo(args) -> None:
    from sta.demo.proxy import load_proxy_model
    from sta.demo.run import DEMO_RS, print_rows, run_demo, write_outputs

    rs = tuple(args.r) if args.r else DEMO_RS
    if (r := budget_r(args, load_proxy_model())) is not None:
        rs = (r,)
    print("sta demo: the bundled ViT trained on the synthetic proxy task (see README); every method keeps the "
          "same number of tokens for a given r", file=sys.stderr)
    rows = run_demo(methods=args.method, rs=rs, num_clips=args.clips, progress=not args.no_progress)
    print_rows(rows)
    for key, path in write_outputs(rows, args.out).items():
        print(f"  {key:<5}{path}")


def cmd_gradnorm(args) -> None:
    from sta.data import read_list_file
    from sta.demo.run import DEMO_RS
    from sta.vis.gradnorm import (
        clip_views,
        folder_source,
        list_file_source,
        print_table,
        proxy_source,
        run_gradnorm,
        write_gradnorm,
    )

    if args.data_path and args.folder:
        raise ValueError("give --data-path (a list file's folder) or --folder, not both")
    videos = bool(args.data_path or args.folder)
    if videos and args.clips is not None:
        raise ValueError("--clips counts the bundled model's proxy clips; with --data-path / --folder every video "
                         "is used")
    protocol, dataset_classes = DATASETS[args.data_set]
    model, _, _, bundled = model_from_args(args, args.nb_classes or dataset_classes, default_r=None, bundled_r=0)
    if not videos:
        if not bundled:
            raise ValueError("give the videos: --data-path (folder with test.csv / val.csv) or --folder")
        if args.sampling_rate or args.data_set != "Kinetics-400":
            raise ValueError("the proxy clips are generated, not sampled: drop --sampling-rate / --data-set, or "
                             "give videos with --folder / --data-path")
        source = proxy_source(args.clips)
    else:
        views = clip_views(model, protocol, args.sampling_rate or (BUNDLED_SAMPLING_RATE if bundled else 4))
        if args.folder:
            source = folder_source(args.folder, views)
        else:
            list_file = os.path.join(args.data_path, f"{args.split}.csv")
            source = list_file_source(read_list_file(list_file, data_root=args.data_root,
                                                     num_classes=model.cfg.num_classes), views)
    default_rs = DEMO_RS if bundled else (32, 64, 96)
    result = run_gradnorm(model, source, methods=args.method, rs=args.r or default_rs, target=args.target,
                          batch_size=args.batch_size, device=args.device, progress=not args.no_progress)
    for skipped in result.skipped:
        print(f"  skipped {skipped.name}: {skipped.reason}", file=sys.stderr)
    if result.clips == 0:
        raise EvalFailed(f"no clip was scored ({len(result.skipped)} skipped, see above)")
    if len(result.rows) < 2:
        raise EvalFailed("no (method, r) could run on this model (see above)")
    if args.json:
        for row in result.to_rows():
            print(json.dumps(row))
    else:
        print_table(result)
    for key, path in write_gradnorm(result, args.out).items():
        print(f"  {key:<6}{path}", file=sys.stderr if args.json else sys.stdout)


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


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sta", formatter_class=HelpFormatter,
                                     description="STA token pruning for VideoMAE video transformers")
    parser.add_argument("--version", action="version", version=f"sta-prune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks (also: STA_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)

    p = command("flops", "GFLOPs per view and tokens after each stage, for each r",
                "GFLOPs per view (1 multiply-add = 1 FLOP, the paper's convention), counted on the meta device: "
                "no weights and no memory needed, even for ViT-H.")
    add_model_args(p, weights=False)
    add_pruning_args(p, sweep=True)
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of a table")
    p.set_defaults(func=cmd_flops)

    p = command("bench", "forward speed (ms/clip, clips/s) at each r, with the speed-up over r=0",
                "Forward speed on random clips: the median of --repeats timed runs after --warmup untimed ones. "
                "r=0 is always measured, as the speed-up's reference.")
    add_model_args(p, weights=False)
    add_pruning_args(p, sweep=True)
    p.add_argument("--batch-size", "--batch_size", type=positive_int, default=1, help="clips per forward")
    add_device_args(p)
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed forwards first")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed forwards (the median is reported)")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of a table")
    add_backend_args(p)
    p.set_defaults(func=cmd_bench)

    p = command("eval", "top-1/top-5 with the VideoMAE multi-view test protocol (torchrun for many processes)",
                "Evaluate on a VideoMAE list file ({data_path}/{split}.csv: `path label` per line) with the "
                "release's test views (Kinetics: 5 clips x 3 crops; SSv2: 2 x 3). Predictions are appended to "
                "--output-dir as they finish: rerun the same command to resume.")
    add_model_args(p, weights=True)
    add_pruning_args(p, sweep=False)
    g = p.add_argument_group("data and protocol")
    g.add_argument("--data-path", "--data_path", required=True, help="folder holding test.csv / val.csv")
    g.add_argument("--split", default="test", help="list file name without .csv (test, val)")
    g.add_argument("--data-root", "--data_root", help="prefix for relative video paths in the list")
    add_sampling_args(g, sampling_rate=False)
    g.add_argument("--test-num-segment", "--test_num_segment", type=positive_int,
                   help="temporal clips per video (default: Kinetics 5, SSV2 2; SSV2 allows 1 or 2)")
    g.add_argument("--test-num-crop", "--test_num_crop", type=positive_int, default=3,
                   help="spatial crops along the long side (1 = centre)")
    add_sampling_args(g, data_set=False)
    g.add_argument("--short-side-size", "--short_side_size", type=positive_int,
                   help="accepted for run_inference.py users; must equal the input size")
    g = p.add_argument_group("run")
    g.add_argument("--output-dir", "--output_dir", default="eval_out",
                   help="predictions.jsonl and summary.json go here; rerun to resume")
    g.add_argument("--log-dir", "--log_dir", help="also write TensorBoard scalars here (needs tensorboard)")
    add_run_args(g, workers=2, json_help="print the summary as JSON")
    g.add_argument("--dist-eval", "--dist_eval", action="store_true",
                   help="accepted for run_inference.py users; under torchrun the split is automatic")
    add_backend_args(p)
    p.set_defaults(func=cmd_eval)

    p = command("predict", "top-k classes of your own videos (files, folders, globs)",
                "Labels videos with the evaluation's views (Kinetics 5x3, SSv2 2x3; --views 1x1 for speed): the "
                "mean of the views' softmaxes, top-k class names and probabilities. Class names ship for "
                "Kinetics-400/710 and SSv2 (--labels FILE for others). Without a model: the bundled demo model. "
                "Exit status 1 if any video could not be read.")
    p.add_argument("videos", nargs="+", help="video files, folders (every video inside) or glob patterns")
    add_model_args(p, weights=True)
    add_pruning_args(p, sweep=False)
    g = p.add_argument_group("views and names")
    add_sampling_args(g)
    g.add_argument("--views", type=parse_views, help="SEGMENTSxCROPS, e.g. 1x1 (default: the protocol's, 5x3 / 2x3)")
    g.add_argument("--labels", help="class names file: one per line, line i = class i")
    g.add_argument("--top-k", type=positive_int, default=5, help="classes shown per video")
    g = p.add_argument_group("run")
    add_run_args(g, workers=0, json_help="one JSON line per video")
    add_backend_args(p)
    p.set_defaults(func=cmd_predict)

    p = command("export", "write the pruned model as one static graph: ONNX or torch.export (.pt2)",
                "Exports the model at its r and method with a dynamic batch dimension, runs the exported graph "
                "next to the eager model on random clips, and writes the file only if logits, top-1 and kept "
                "positions agree. The file records r, method, input format and class names for `sta predict "
                "--exported` and `sta eval --exported`. Without a model: the bundled demo model.")
    add_model_args(p, weights=True)
    add_pruning_args(p, sweep=False)
    p.add_argument("--format", choices=["onnx", "pt2"], help="default: from the --out suffix")
    p.add_argument("--out", required=True, help="file to write (.onnx or .pt2)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="pt2 only: the graph's precision (ONNX is float32; OpenVINO runs it in bf16 on request)")
    p.add_argument("--data-set", "--data_set", default="Kinetics-400", choices=sorted(DATASETS),
                   help="class count and the class names recorded in the file")
    p.add_argument("--labels", help="class names file to record instead (one per line)")
    p.set_defaults(func=cmd_export)

    p = command("vis", "pictures of the tokens a method keeps and of the GradNorm map, for one video",
                "Samples the video as `sta eval` does (one clip, centre crop) and writes kept_tokens.png, "
                "gradnorm.png, kept_tokens.gif and tokens.json. Without --model/--ckpt-path/--hf-model it "
                "uses the bundled demo model (64x64 frames).")
    p.add_argument("video", help="a video file")
    add_model_args(p, weights=True)
    add_pruning_args(p, sweep=False, default_r="64 (16 for the bundled model)")
    add_sampling_args(p)
    p.add_argument("--out", default="sta_vis", help="output folder")
    p.set_defaults(func=cmd_vis)

    p = command("demo", "the bundled trained proxy model: top-1 vs GFLOPs of every method (no download)",
                "Runs the ViT that ships with sta-prune (trained on a synthetic 12-class motion task, see "
                "README) on held-out clips, for every method at the same token counts, and prints top-1, "
                "GFLOPs and speed; writes demo.json and demo.png.")
    p.add_argument("--method", nargs="+", choices=sorted(METHODS), help="methods to compare (default: all)")
    p.add_argument("--r", type=parse_r, nargs="+",
                   help="tokens dropped per group; several values sweep (default: 16 32 48,16,8 56,8,4 60,2,1)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--flops-reduction", type=fraction, help="pick r for this FLOPs saving instead of --r")
    budget.add_argument("--keep-ratio", type=fraction, help="pick r for this fraction of tokens kept instead of --r")
    p.add_argument("--clips", type=positive_int, default=240, help="held-out clips (20 per class by default)")
    p.add_argument("--out", default="demo_out", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = command("gradnorm", "how much of the model's GradNorm each method keeps, over a set of videos",
                "The STA paper's GradNorm evidence, measured: per clip (one view: one segment, centre crop) the "
                "GradNorm of each token on the unpruned model, then for each method and r the share of it kept "
                "after the last stage (mean, 95% CI over clips) and the share of the top-10% tokens kept. "
                "Without a model: the bundled demo model on its held-out proxy clips. Writes gradnorm.json, "
                "gradnorm_map.png (mean map per slice) and gradnorm_share.png.")
    add_model_args(p, weights=True)
    g = p.add_argument_group("pruning")
    g.add_argument("--method", nargs="+", choices=sorted(METHODS), help="methods to compare (default: all)")
    g.add_argument("--r", type=parse_r, nargs="+", help="tokens dropped per group; several values sweep "
                   "(default: 32 64 96; the bundled model: 16 32 48,16,8 56,8,4 60,2,1)")
    g = p.add_argument_group("videos")
    g.add_argument("--data-path", "--data_path", help="folder holding test.csv / val.csv (as sta eval)")
    g.add_argument("--split", default="test", help="list file name without .csv")
    g.add_argument("--data-root", "--data_root", help="prefix for relative video paths in the list")
    g.add_argument("--folder", help="instead of a list file: every video in this folder (unlabelled)")
    add_sampling_args(g)
    g.add_argument("--clips", type=positive_int, help="held-out proxy clips, when no videos are given (default: 240)")
    g = p.add_argument_group("run")
    g.add_argument("--target", choices=["predicted", "label"], default="predicted",
                   help="whose logit's gradient: the unpruned model's predicted class, or the clip's label")
    g.add_argument("--batch-size", "--batch_size", type=positive_int, default=8, help="clips per forward/backward")
    add_device_args(g, dtype=False)
    g.add_argument("--out", default="gradnorm_out", help="output folder")
    g.add_argument("--json", action="store_true", help="print one JSON row per (method, r) instead of a table")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_gradnorm)

    p = command("convert", "VideoMAE release checkpoint <-> Hugging Face model directory")
    p.add_argument("src", help="release .pth file, or a Hugging Face model directory")
    p.add_argument("dst", help="output: HF directory (from a .pth) or .pth file (from a directory)")
    p.add_argument("--direction", choices=["auto", "to-hf", "to-release"], default="auto",
                   help="auto: a directory converts to a release .pth, a file to an HF directory")
    p.add_argument("--num-frames", "--num_frames", type=positive_int, help="default: the checkpoint's args, else 16")
    p.add_argument("--input-size", "--input_size", type=positive_int, help="default: the checkpoint's args, else 224")
    p.add_argument("--num-heads", "--num_heads", type=positive_int, help="only for widths that are not a release size")
    p.add_argument("--allow-unsafe-checkpoint", action="store_true",
                   help="unpickle a checkpoint that needs arbitrary code (only for files you trust)")
    p.set_defaults(func=cmd_convert)

    p = command("plot", "top-1 vs GFLOPs curves from `sta eval` summary.json files")
    p.add_argument("summaries", nargs="+", help="summary.json files or the output folders holding them")
    p.add_argument("--out", default="accuracy_vs_gflops.png", help="image file (.png, .svg or .pdf)")
    p.add_argument("--title", default="top-1 vs GFLOPs per view", help="plot title")
    p.set_defaults(func=cmd_plot)
    return parser


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"sta: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("STA_DEBUG", "") not in ("", "0")
    warnings.showwarning = show_warning
    # Trained models' attention underflows to denormal floats, which slow x86 matmuls up to 10x: flush them.
    torch.set_flush_denormal(True)
    try:
        args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        resume = "; rerun the same command to resume" if args.command == "eval" else ""
        print(f"sta {args.command}: interrupted{resume}", file=sys.stderr)
        return 130
    except EvalFailed as err:
        print(f"sta {args.command}: {err}", file=sys.stderr)
        return 1
    except USER_ERRORS as err:  # bad input reaches here from the library, worded for users
        if debug:
            raise
        print(f"sta {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
