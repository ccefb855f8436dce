"""Option types and the option groups several commands share, and their translation into library requests."""

from __future__ import annotations

import argparse

import torch

from sta.cli.output import print_notes
from sta.core import schedule
from sta.core.methods import METHODS
from sta.data.datasets import CUSTOM, DATASETS, Dataset, with_protocol
from sta.data.proxies import DEFAULT_PROXY, PROXY_NAMES
from sta.deploy.runners import BACKENDS
from sta.factory import RELEASE_DEFAULTS, ModelRequest, PruningRequest, pick_r
from sta.models.vit import MODEL_CONFIGS

DEFAULT_DATASET = "Kinetics-400"  # sampling and class names when --data-set is not given

# --------------------------------------------------------------------------- types


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


def int_between(low: int, high: int):
    """An integer in ``low..high``: every count a command takes is bounded, so none can ask for the impossible."""
    at_least = int_at_least(low)

    def parse(text: str) -> int:
        value = at_least(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


MAX_BATCH = 1024  # clips or views per forward (sta.evaluate.run.MAX_BATCH)
MAX_CLIPS = 4800  # generated proxy clips, held in memory (sta.data.synthetic.MAX_CLIPS)
batch_size, clip_count, rounds = int_between(1, MAX_BATCH), int_between(1, MAX_CLIPS), int_between(0, 1000)
frames, pixels, worker_count = int_between(1, 4096), int_between(1, 8192), int_between(0, 256)
segments, crops = int_between(1, 100), int_between(1, 10)  # sta.data.sampling's bounds on views per video


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
        return schedule.parse_r(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_views(text: str) -> tuple[int, int]:
    """``5x3`` -> (5 segments, 3 crops)."""
    try:
        segments, crops = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"views are SEGMENTSxCROPS, e.g. 5x3 or 1x1; got {text!r}") from None
    if segments < 1 or crops < 1:
        raise argparse.ArgumentTypeError(f"views need at least 1x1, got {text!r}")
    return segments, crops


# --------------------------------------------------------------------------- groups


def add_model_args(p: argparse.ArgumentParser, weights: bool, proxy: bool = False) -> None:
    """Which model: a release size (+ checkpoint), or a Hugging Face directory; ``proxy``: the command falls back to
    a bundled model, and --proxy picks which."""
    g = p.add_argument_group("model")
    if proxy:
        add_proxy_arg(g)
    g.add_argument("--model", choices=sorted(MODEL_CONFIGS),
                   help=f"VideoMAE size (default: {RELEASE_DEFAULTS['model']}; vis, predict, export and gradnorm use "
                   "the bundled demo model when no model option is given)")
    if weights:
        g.add_argument("--ckpt-path", "--ckpt_path", "--finetune", help="VideoMAE release checkpoint (.pth); "
                       "a --model without one has random weights")
        g.add_argument("--allow-unsafe-checkpoint", action="store_true",
                       help="unpickle a checkpoint that needs arbitrary code (can run code: only for files you trust)")
    g.add_argument("--hf-model", help="local Hugging Face VideoMAE, ViViT or V-JEPA 2 classifier directory, "
                   "instead of --model" + (" and --ckpt-path" if weights else "")
                   + "; frames, size and classes come from its config")
    g.add_argument("--num-frames", "--num_frames", type=frames, help="frames per clip (default: 16)")
    g.add_argument("--input-size", "--input_size", type=pixels,
                   help="frame height = width fed to the model (default: 224)")
    g.add_argument("--tubelet-size", "--tubelet_size", type=int_between(1, 64), help="frames per token (default: 2)")
    g.add_argument("--nb-classes", "--nb_classes", type=int_between(1, 100_000),
                   help="classifier outputs (default: the dataset's, else 400)")


def add_proxy_arg(g) -> None:
    g.add_argument("--proxy", choices=PROXY_NAMES, help="with no model named: which bundled model and synthetic task "
                   f"(easy: large colour-coded shapes; hard: small handwritten digits among clutter, seen for a few "
                   f"frames) (default: {DEFAULT_PROXY})")


def add_pruning_args(p: argparse.ArgumentParser, sweep: bool, default_r: str = "0") -> None:
    g = p.add_argument_group("pruning")
    if sweep:
        g.add_argument("--r", type=parse_r, nargs="+",
                       help="tokens dropped per group; several values sweep (one row each); 64,32,16 sets each stage "
                       f"(default: {default_r})")
    else:
        g.add_argument("--r", type=parse_r, help=f"tokens dropped per group (one value; 64,32,16 sets each stage) "
                       f"(default: {default_r})")
    add_budget_args(g)
    g.add_argument("--method", choices=sorted(METHODS),
                   help="token reduction at STA's token counts (default: sta, the paper's; the rest are baselines)")


def add_budget_args(g) -> None:
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--flops-reduction", type=fraction,
                        help="instead of --r: the smallest r saving at least this fraction of FLOPs (e.g. 0.35)")
    budget.add_argument("--keep-ratio", type=fraction,
                        help="instead of --r: the smallest r leaving at most this fraction of tokens at the end")


def add_device_args(p, dtype: bool = True, int8: bool = True) -> None:
    """--device, and --dtype (``int8``: for the commands that run exported int8 files)."""
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda, cuda:1, ...")
    if dtype and not int8:
        p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                       help="precision of weights and activations (STA scores in float32 whatever this is)")
    elif dtype:
        p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "int8"],
                       help="precision of weights and activations (STA scores in float32 whatever this is); int8: "
                       "--backend openvino / onnxruntime with an --exported file `sta export --quantize int8` wrote "
                       "(sta bench also quantizes a model on the fly, for speed only)")


def add_run_args(g, workers: int, json_help: str) -> None:
    """How views are decoded and run, and how results are printed (eval, predict)."""
    g.add_argument("--batch-size", "--batch_size", type=batch_size, default=8, help="views per forward")
    g.add_argument("--num-workers", "--num_workers", type=worker_count, default=workers,
                   help="decoding processes (0 = decode in the main process)")
    add_device_args(g)
    g.add_argument("--json", action="store_true", help=json_help)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_dataset_arg(p, help: str) -> None:
    p.add_argument("--data-set", "--data_set", choices=sorted(DATASETS), help=f"{help}; {CUSTOM}: a dataset of your "
                   f"own classes (the model's class count, names from --labels, else class_N) (default: "
                   f"{DEFAULT_DATASET})")
    p.add_argument("--protocol", choices=("kinetics", "ssv2"), help=f"with --data-set {CUSTOM}: sample frames as "
                   "Kinetics does (every n-th frame, the default) or spread segments over the video as SSv2 does")


def dataset_of(args: argparse.Namespace) -> Dataset:
    """The --data-set row (with --protocol for `custom`), or the default's (Kinetics-400) when none was named."""
    return with_protocol(DATASETS[getattr(args, "data_set", None) or DEFAULT_DATASET], getattr(args, "protocol", None))


def add_sampling_args(p, data_set: bool = True, sampling_rate: bool = True) -> None:
    """Which dataset's frame sampling (and class count / names); Kinetics' stride."""
    if data_set:
        add_dataset_arg(p, "frame sampling (Kinetics: every n-th frame; SSV2: segments), class count and names")
    if sampling_rate:
        p.add_argument("--sampling-rate", "--sampling_rate", type=int_between(1, 1000),
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
        g.add_argument("--skip-verify", action="store_true",
                       help="run an exported file whose digest does not match (for graphs you edited on purpose)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (--backend torch)")


# --------------------------------------------------------------------------- requests


def model_request(args: argparse.Namespace) -> ModelRequest:
    """The model options as the factory takes them (absent options stay None); --data-set sizes a release head."""
    get = lambda name: getattr(args, name, None)
    data_set = get("data_set")
    return ModelRequest(model=get("model"), ckpt_path=get("ckpt_path"), hf_model=get("hf_model"),
                        exported=get("exported"), num_frames=get("num_frames"), img_size=get("input_size"),
                        tubelet_size=get("tubelet_size"), num_classes=get("nb_classes"),
                        allow_unsafe=bool(get("allow_unsafe_checkpoint")), verify=not get("skip_verify"),
                        dataset_classes=DATASETS[data_set].num_classes or None if data_set else None,
                        proxy=get("proxy"))


def swept_rs(args: argparse.Namespace, model, pruning: PruningRequest) -> list:
    """A sweeping command's values of r: --r's list (default: 0), or the one r a budget picks (said on stderr)."""
    if pruning.flops_reduction is None and pruning.keep_ratio is None:
        return args.r or [0]
    r, note = pick_r(model, pruning)
    print_notes(args.command, [note])
    return [r]


def pruning_request(args: argparse.Namespace) -> PruningRequest:
    """--r, --method and a budget (--r and a budget exclude each other). A sweeping command's --r is its list of
    values: it runs them itself and uses the request for the method, the budget and what was given."""
    return PruningRequest(r=getattr(args, "r", None), method=getattr(args, "method", None),
                          flops_reduction=getattr(args, "flops_reduction", None),
                          keep_ratio=getattr(args, "keep_ratio", None))
