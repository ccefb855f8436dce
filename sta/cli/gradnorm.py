"""``sta gradnorm``: how much of the unpruned model's GradNorm each method keeps, over a set of videos."""

from __future__ import annotations

import json
import os
import sys

from sta.cli.options import (
    add_device_args,
    add_model_args,
    add_sampling_args,
    batch_size,
    clip_count,
    dataset_of,
    model_request,
    parse_r,
)
from sta.cli.output import format_r, print_notes
from sta.core.methods import METHODS
from sta.data import read_list_file
from sta.demo.run import DEMO_RS
from sta.errors import InvalidInput, RunFailed
from sta.evaluate.sources import clip_views, folder_source, list_file_source, proxy_source
from sta.factory import load_model, sampling_rate
from sta.measure.gradnorm import TARGETS, run_gradnorm
from sta.vis.gradnorm_plots import write_gradnorm

NAME = "gradnorm"
HELP = "how much of the model's GradNorm each method keeps, over a set of videos"
DESCRIPTION = ("The STA paper's GradNorm evidence, measured: per clip (one view: one segment, centre crop) the "
               "GradNorm of each token on the unpruned model, then for each method and r the share of it kept after "
               "the last stage (mean, 95% CI over clips) and the share of the top-10% tokens kept. Without a model: "
               "the bundled demo model on its held-out proxy clips. Writes gradnorm.json, gradnorm_map.png (mean map "
               "per slice) and gradnorm_share.png.")
DEFAULT_RS = (32, 64, 96)  # a sixth, a third and a half of a ViT-B group (196 tokens)


def add_arguments(p) -> None:
    add_model_args(p, weights=True, proxy=True)
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
    g.add_argument("--clips", type=clip_count, help="held-out proxy clips, when no videos are given (default: 240)")
    g = p.add_argument_group("run")
    g.add_argument("--target", choices=TARGETS, default="predicted",
                   help="whose logit's gradient: the unpruned model's predicted class, or the clip's label")
    g.add_argument("--batch-size", "--batch_size", type=batch_size, default=8, help="clips per forward/backward")
    add_device_args(g, dtype=False)
    g.add_argument("--out", default="gradnorm_out", help="output folder")
    g.add_argument("--json", action="store_true", help="print one JSON row per (method, r) instead of a table")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> None:
    if args.data_path and args.folder:
        raise InvalidInput("give --data-path (a list file's folder) or --folder, not both")
    videos = bool(args.data_path or args.folder)
    if videos and args.clips is not None:
        raise InvalidInput("--clips counts the bundled model's proxy clips; with --data-path / --folder every video "
                           "is used")
    loaded = load_model(model_request(args), default_r=None, allow_bundled=True)
    print_notes(NAME, loaded.notes)
    rs = args.r or (DEMO_RS if loaded.bundled else DEFAULT_RS)
    check_something_runs(loaded.model, args.method or list(METHODS), rs)
    result = run_gradnorm(loaded.model, clip_source(args, loaded), methods=args.method, rs=rs, target=args.target,
                          batch_size=args.batch_size, device=args.device, progress=not args.no_progress)
    for skipped in result.skipped:
        print(f"  skipped {skipped.name}: {skipped.reason}", file=sys.stderr)
    if result.clips == 0:
        raise RunFailed(f"no clip was scored ({len(result.skipped)} skipped, see above)")
    if len(result.rows) < 2:
        raise RunFailed("no (method, r) could run on this model (see above)")
    if args.json:
        for row in result.to_rows():
            print(json.dumps(row))
    else:
        print(result.table())
    for key, path in write_gradnorm(result, args.out).items():
        print(f"  {key:<6}{path}", file=sys.stderr if args.json else sys.stdout)


def check_something_runs(model, methods, rs) -> None:
    """Before any GradNorm is computed: at least one (method, r) must fit the model, else say why each does not."""
    reasons = []
    for method in methods:
        for r in rs:
            try:
                with model.pruning(r, method):
                    return
            except ValueError as err:
                reasons.append(f"{method} r={format_r(r)}: {err}")
    raise InvalidInput("no (method, r) can run on this model: " + "; ".join(reasons[:4])
                       + (" ..." if len(reasons) > 4 else ""), param="r")


def clip_source(args, loaded):
    """The bundled model's held-out proxy clips, or one view of each video of a folder or a list file."""
    if not (args.data_path or args.folder):
        if not loaded.bundled:
            raise InvalidInput("give the videos: --data-path (folder with test.csv / val.csv) or --folder")
        if args.sampling_rate or args.data_set is not None:
            raise InvalidInput("the proxy clips are generated, not sampled: drop --sampling-rate / --data-set, or "
                               "give videos with --folder / --data-path")
        return proxy_source(args.clips, task=loaded.proxy)
    views = clip_views(loaded.model, dataset_of(args).protocol, sampling_rate(args.sampling_rate, loaded))
    if args.folder:
        return folder_source(args.folder, views)
    entries = read_list_file(os.path.join(args.data_path, f"{args.split}.csv"), data_root=args.data_root,
                             num_classes=loaded.model.cfg.num_classes)
    return list_file_source(entries, views)
