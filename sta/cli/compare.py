"""``sta compare``: every token reducer at the same compute budgets, with the `sta eval` protocol and a paired test."""

from __future__ import annotations

import os
import sys

from sta.cli.options import (
    add_device_args,
    add_model_args,
    add_sampling_args,
    batch_size,
    clip_count,
    crops,
    dataset_of,
    fraction,
    model_request,
    parse_r,
    rounds,
    segments,
    worker_count,
)
from sta.cli.output import print_notes
from sta.core.methods import METHODS
from sta.data import ViewProtocol, read_list_file
from sta.data.synthetic import HELD_OUT_SEED
from sta.errors import InvalidInput, RunFailed
from sta.evaluate import compare
from sta.evaluate.run import EvalSettings
from sta.evaluate.sources import clip_views, list_file_source, proxy_source
from sta.factory import load_model, sampling_rate
from sta.measure.speed import random_clips
from sta.utils.device import parse_dtype

NAME = "compare"
HELP = "every token reducer at the same GFLOPs budgets: top-1 with intervals, speed, a paired test against random"
DESCRIPTION = ("Sets each method to the r nearest each budget (a fraction of the unpruned model's GFLOPs per view; "
               "or --r: STA's token counts, which every method keeps), evaluates every configuration with the "
               "`sta eval` protocol (resumable, torchrun), tests each method against random dropping on the same "
               "videos (exact McNemar), and writes compare.md, compare.jsonl and compare.png. Without a model and "
               "data: the bundled model on its held-out synthetic clips.")


def add_arguments(p) -> None:
    add_model_args(p, weights=True, proxy=True)
    g = p.add_argument_group("methods and budgets")
    g.add_argument("--methods", nargs="+", choices=sorted(METHODS), help="methods to compare (default: all)")
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--budgets", type=fraction, nargs="+", help="fractions of the unpruned GFLOPs per view "
                        f"(default: {' '.join(map(str, compare.DEFAULT_BUDGETS))})")
    budget.add_argument("--r", type=parse_r, nargs="+", help="instead of budgets: these r, for every method")
    g = p.add_argument_group("data and protocol")
    g.add_argument("--data-path", "--data_path", help="folder holding test.csv / val.csv (as sta eval); default: "
                   "the bundled model's held-out synthetic clips")
    g.add_argument("--split", default="test", help="list file name without .csv")
    g.add_argument("--data-root", "--data_root", help="prefix for relative paths in the list")
    add_sampling_args(g)
    g.add_argument("--test-num-segment", "--test_num_segment", type=segments, help="as sta eval")
    g.add_argument("--test-num-crop", "--test_num_crop", type=crops, help="as sta eval (default: 3)")
    g = p.add_argument_group("run")
    g.add_argument("--out", default="compare_out", help="output folder (one eval folder per configuration inside)")
    g.add_argument("--batch-size", "--batch_size", type=batch_size, default=8, help="views per forward")
    g.add_argument("--num-workers", "--num_workers", type=worker_count, default=2, help="decoding processes")
    add_device_args(g, int8=False)
    g.add_argument("--timing-rounds", type=rounds, default=5, help="interleaved timing rounds (0: none)")
    g.add_argument("--gradnorm", action="store_true", help="also the share of the unpruned model's GradNorm that "
                   "each configuration's kept tokens carry (one backward per video)")
    g.add_argument("--clips", type=clip_count, help=f"the bundled model's held-out synthetic clips, without "
                   f"--data-path (default: {compare.PROXY_CLIPS})")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> None:
    loaded = load_model(model_request(args), default_r=None, allow_bundled=True)
    print_notes(NAME, loaded.notes)
    model = loaded.model
    configs, not_run = compare.plan(model, args.methods or list(METHODS), args.budgets, args.r)
    for method, where, why in not_run:
        print(f"sta compare: {method} at {where} left out: {why}", file=sys.stderr)
    if len(configs) < 2:
        raise RunFailed("no method can run at these budgets on this model (see above)")
    found = score(args, loaded, configs)
    if found is None:  # a torchrun rank other than 0: rank 0 reports
        return
    hits, skipped = found
    data = f"{loaded.proxy} proxy, held-out seed {HELD_OUT_SEED}" if args.data_path is None else args.data_path
    run_settings = dict(model=loaded.name, data=data, dtype=args.dtype, device=args.device)
    result = compare.Comparison(compare.tabulate(hits), not_run, skipped, run_settings)
    if not result.rows[0].clips:
        raise RunFailed(f"no video was scored ({len(skipped)} skipped); see {args.out}/runs/unpruned")
    if args.timing_rounds:
        clips = random_clips(model, args.batch_size, parse_dtype(args.dtype), "cpu")
        ms = compare.time_configs(model, configs, clips, args.dtype, args.device, args.timing_rounds)
        for row in result.rows:
            row.ms_per_clip = ms.get(row.config)
    if args.gradnorm:
        add_gradnorm(args, loaded, result)
    for item in skipped:
        print(f"  skipped {item['video']}: {item['reason']}", file=sys.stderr)
    print(compare.table(result))
    files = compare.write_outputs(result, args.out, title=f"{loaded.name}: top-1 vs GFLOPs per view, every method")
    for key, path in files.items():
        print(f"  {key:<6}{path}")


def score(args, loaded, configs):
    """Hits per configuration: the bundled model on its held-out clips in memory, or `sta eval` on a list file."""
    if args.data_path is None:
        if not loaded.bundled:
            raise InvalidInput("give the videos: --data-path (a folder with test.csv / val.csv); without a model and "
                               "data, the bundled model runs on its synthetic clips")
        return compare.score_proxy(loaded.model, configs, loaded.proxy, args.clips or compare.PROXY_CLIPS,
                                   args.batch_size, args.dtype, args.device), []
    if args.clips is not None:
        raise InvalidInput("--clips counts the bundled model's synthetic clips; with --data-path every video is used")
    cfg = loaded.model.cfg
    entries = read_list_file(os.path.join(args.data_path, f"{args.split}.csv"), data_root=args.data_root,
                             num_classes=cfg.num_classes)
    views = ViewProtocol.for_dataset(dataset_of(args).protocol, num_frames=cfg.num_frames,
                                     sampling_rate=sampling_rate(args.sampling_rate, loaded),
                                     num_segments=args.test_num_segment, num_crops=args.test_num_crop or 3,
                                     crop_size=cfg.img_size, mean=cfg.mean, std=cfg.std)
    settings = EvalSettings(views=views, dtype=args.dtype, batch_size=args.batch_size, num_workers=args.num_workers,
                            device=args.device)

    def announce(config):
        print(f"sta compare: {config.name} ({config.share:.1%} of the unpruned GFLOPs)", file=sys.stderr)

    return compare.run_configs(loaded.model, configs, entries, settings, args.out, loaded.desc,
                               progress=not args.no_progress, on_start=announce)


def add_gradnorm(args, loaded, result) -> None:
    """Each row's share of the unpruned model's GradNorm that its kept tokens carry (one view per video)."""
    if args.data_path is None:
        source = proxy_source(args.clips or compare.PROXY_CLIPS, task=loaded.proxy)
    else:
        entries = read_list_file(os.path.join(args.data_path, f"{args.split}.csv"), data_root=args.data_root,
                                 num_classes=loaded.model.cfg.num_classes)
        views = clip_views(loaded.model, dataset_of(args).protocol, sampling_rate(args.sampling_rate, loaded))
        source = list_file_source(entries, views)
    compare.add_gradnorm(loaded.model, result, source, args.batch_size, args.device, not args.no_progress)
