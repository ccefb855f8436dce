"""``sta predict``: the top-k classes of the user's own videos (files, folders, globs)."""

from __future__ import annotations

import json
import sys

from sta.cli.options import (
    add_backend_args,
    add_model_args,
    add_pruning_args,
    add_run_args,
    add_sampling_args,
    dataset_of,
    int_between,
    model_request,
    parse_views,
    pruning_request,
)
from sta.cli.output import format_r, format_tokens, print_notes
from sta.data import ViewProtocol
from sta.errors import RunFailed
from sta.evaluate.predict import expand_inputs, predict_videos
from sta.factory import class_names, open_runner, sampling_rate
from sta.models.bundled import BUNDLED_R

NAME = "predict"
HELP = "top-k classes of your own videos (files, folders, globs)"
DESCRIPTION = ("Labels videos with the evaluation's views (Kinetics 5x3, SSv2 2x3; --views 1x1 for speed): the "
               "mean of the views' softmaxes, top-k class names and probabilities. Class names ship for "
               "Kinetics-400/710 and SSv2 (--labels FILE for others). Without a model: the bundled demo model. "
               "Exit status 1 if any video could not be read.")


def add_arguments(p) -> None:
    p.add_argument("videos", nargs="+", help="video files, folders (every video inside) or glob patterns")
    add_model_args(p, weights=True, proxy=True)
    add_pruning_args(p, sweep=False, default_r=f"0 ({BUNDLED_R} for the bundled model)")
    g = p.add_argument_group("views and names")
    add_sampling_args(g)
    g.add_argument("--views", type=parse_views, help="SEGMENTSxCROPS, e.g. 1x1 (default: the protocol's, 5x3 / 2x3)")
    g.add_argument("--labels", help="class names file: one per line, line i = class i")
    g.add_argument("--top-k", type=int_between(1, 1000), default=5, help="classes shown per video")
    g = p.add_argument_group("run")
    add_run_args(g, workers=0, json_help="one JSON line per video")
    add_backend_args(p)


def run(args) -> None:
    videos = expand_inputs(args.videos)
    prepared = open_runner(model_request(args), pruning_request(args), args.backend, args.dtype, args.device,
                           args.compile, allow_bundled=True, bundled_r=BUNDLED_R, use="predict")
    print_notes(NAME, prepared.notes)
    info = prepared.info
    names = class_names(info.num_classes, args.labels, args.hf_model, args.data_set, carried=info.class_names)
    segments, crops = args.views or (None, None)
    views = ViewProtocol.for_dataset(dataset_of(args).protocol, num_frames=info.num_frames,
                                     sampling_rate=sampling_rate(args.sampling_rate, info), num_segments=segments,
                                     num_crops=crops, crop_size=info.img_size, mean=info.mean, std=info.std)
    header = (f"{info.model}, {info.method} r={format_r(info.r)}: tokens kept {format_tokens(info.tokens_per_stage)}, "
              f"{info.gflops_per_view:.2f} GFLOPs/view, {views.num_segments}x{views.num_crops} views, "
              f"{prepared.runner.backend}")
    warning = "  [RANDOM WEIGHTS: these predictions mean nothing]" if prepared.random_weights else ""
    print(header + warning, file=sys.stderr)
    if prepared.bundled:
        print("sta predict: the bundled model knows only its synthetic task (12 shape x direction classes): on any "
              "other video its answer means nothing; name a model (--model/--ckpt-path, --hf-model) for real videos",
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
        raise RunFailed(f"{failed} of {len(videos)} videos could not be read (see above)")
