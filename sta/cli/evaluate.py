"""``sta eval``: top-1 / top-5 with the VideoMAE multi-view test protocol, resumable, one process or many."""

from __future__ import annotations

import json
import os
import sys

from sta.cli.options import (
    add_backend_args,
    add_model_args,
    add_pruning_args,
    add_run_args,
    add_sampling_args,
    crops,
    dataset_of,
    model_request,
    pixels,
    pruning_request,
    segments,
)
from sta.cli.output import format_r, print_notes
from sta.data import ViewProtocol, read_list_file
from sta.data.datasets import CUSTOM, DATASETS, check_label_space, with_protocol
from sta.errors import InvalidInput, RunFailed
from sta.evaluate import EvalSettings, evaluate
from sta.factory import check_request, open_runner, sampling_rate
from sta.models.bundled import BUNDLED_R
from sta.utils.device import resolve_device
from sta.utils.distributed import distributed

NAME = "eval"
HELP = "top-1/top-5 with the VideoMAE multi-view test protocol (torchrun for many processes)"
DESCRIPTION = ("Evaluate on a VideoMAE list file ({data_path}/{split}.csv: `path label` per line) with the "
               "release's test views (Kinetics: 5 clips x 3 crops; SSv2: 2 x 3). Predictions are appended to "
               "--output-dir as they finish: rerun the same command to resume. Without a model: the bundled demo "
               "model (try it on the clips `sta.data.proxies.write_videos` writes).")


def add_arguments(p) -> None:
    add_model_args(p, weights=True, proxy=True)
    add_pruning_args(p, sweep=False, default_r=f"0 ({BUNDLED_R} for the bundled model)")
    g = p.add_argument_group("data and protocol")
    g.add_argument("--data-path", "--data_path", required=True, help="folder holding test.csv / val.csv")
    g.add_argument("--split", default="test", help="list file name without .csv (test, val)")
    g.add_argument("--data-root", "--data_root", help="prefix for relative video paths in the list")
    add_sampling_args(g, sampling_rate=False)
    g.add_argument("--test-num-segment", "--test_num_segment", type=segments,
                   help="temporal clips per video (default: Kinetics 5, SSV2 2; SSV2 allows 1 or 2)")
    g.add_argument("--test-num-crop", "--test_num_crop", type=crops, default=3,
                   help="spatial crops along the long side (1 = centre)")
    add_sampling_args(g, data_set=False)
    g.add_argument("--short-side-size", "--short_side_size", type=pixels,
                   help="accepted for run_inference.py users; must equal the input size")
    g = p.add_argument_group("run")
    g.add_argument("--output-dir", "--output_dir", default="eval_out",
                   help="predictions.jsonl and summary.json go here; rerun to resume")
    g.add_argument("--log-dir", "--log_dir", help="also write TensorBoard scalars here (needs tensorboard)")
    add_run_args(g, workers=2, json_help="print the summary as JSON")
    g.add_argument("--dist-eval", "--dist_eval", action="store_true",
                   help="accepted for run_inference.py users; under torchrun the split is automatic")
    add_backend_args(p)


NAMED_CLASS_COUNTS = {d.num_classes for d in DATASETS.values() if not d.custom}


def run(args) -> None:
    request, pruning = model_request(args), pruning_request(args)
    check_request(request, pruning, allow_bundled=True)  # options a source decides fail before anything is read
    dataset = dataset_of(args)
    list_file = os.path.join(args.data_path, f"{args.split}.csv")
    if not os.path.isfile(list_file):
        raise InvalidInput(f"list file {list_file} not found (--data-path holds {args.split}.csv)")
    resolve_device(args.device)  # a missing GPU fails before any model or video is loaded
    prepared = open_runner(request, pruning, args.backend, args.dtype, args.device, args.compile, allow_bundled=True,
                           bundled_r=BUNDLED_R)
    print_notes(NAME, prepared.notes)
    info = prepared.info  # an --hf-model or --exported file brings its own frames, size and classes
    if args.data_set is not None and info.dataset is not None and args.data_set != info.dataset["name"]:
        raise InvalidInput(f"--exported {args.exported} was exported for --data-set {info.dataset['name']}, not "
                           f"{args.data_set}: drop --data-set, or export the model again")
    if args.data_set is None and info.dataset is not None:  # an exported file records the dataset it was made for
        dataset = with_protocol(DATASETS[info.dataset["name"]], info.dataset["protocol"])
        print(f"sta eval: {args.exported} was exported for --data-set {dataset.name} ({dataset.protocol} sampling)",
              file=sys.stderr)
    elif args.data_set is None and request.source == "hf" and info.num_classes not in NAMED_CLASS_COUNTS:
        print(f"sta eval: the head's {info.num_classes} classes match no named dataset: evaluating as --data-set "
              f"{CUSTOM} (Kinetics-style sampling), the list's labels against the directory's own classes",
              file=sys.stderr)
    if args.data_set is not None:  # a named dataset's labels must be the head's; else the list's labels are its own
        check_label_space(dataset, info.num_classes)
    if (args.short_side_size or info.img_size) != info.img_size:
        raise InvalidInput(f"--short-side-size {args.short_side_size} must equal the input size {info.img_size}: "
                           "the test protocol crops windows of the short side, which are the model's input")
    views = ViewProtocol.for_dataset(dataset.protocol, num_frames=info.num_frames,
                                     sampling_rate=sampling_rate(args.sampling_rate, info),
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
    if summary is None:  # not rank 0
        return
    for skipped in summary.skipped:
        print(f"  skipped {skipped['video']}: {skipped['reason']}", file=sys.stderr)
    summary_file = os.path.join(args.output_dir, "summary.json")
    if summary.videos == 0:
        raise RunFailed(f"no video was scored ({len(summary.skipped)} of {summary.videos_in_list} skipped, see "
                        f"above); summary: {summary_file}")
    if args.json:
        print(json.dumps(summary.to_dict()))
        return
    if summary.resumed_views:
        print(f"sta eval: resumed {summary.resumed_views} views from {args.output_dir}; computed the views of "
              f"{summary.computed_videos} videos", file=sys.stderr)
    print(f"top-1 {summary.top1:.2f}%  top-5 {summary.top5:.2f}%  on {summary.videos} videos ({summary.views} views); "
          f"skipped {len(summary.skipped)}; {summary.gflops_per_view:.2f} GFLOPs/view; {summary.wall_time_s:.1f}s")
    print(f"summary: {summary_file}")
