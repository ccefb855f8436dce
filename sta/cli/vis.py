"""``sta vis``: pictures of the tokens a method keeps, and of the GradNorm map, for one video."""

from __future__ import annotations

import os

from sta.cli.options import (
    add_model_args,
    add_pruning_args,
    add_sampling_args,
    dataset_of,
    model_request,
    pruning_request,
)
from sta.cli.output import format_r, format_tokens, print_notes
from sta.errors import InvalidInput
from sta.factory import load_model, sampling_rate
from sta.models.bundled import BUNDLED_R
from sta.vis.tokens import visualize

NAME = "vis"
HELP = "pictures of the tokens a method keeps and of the GradNorm map, for one video"
DESCRIPTION = ("Samples the video as `sta eval` does (one clip, centre crop) and writes kept_tokens.png, "
               "gradnorm.png, kept_tokens.gif and tokens.json. Without --model/--ckpt-path/--hf-model it uses the "
               "bundled demo model (64x64 frames).")
DEFAULT_R = 64  # a third of a ViT-B group (196 tokens)


def add_arguments(p) -> None:
    p.add_argument("video", help="a video file")
    add_model_args(p, weights=True, proxy=True)
    add_pruning_args(p, sweep=False, default_r=f"{DEFAULT_R} ({BUNDLED_R} for the bundled model)")
    add_sampling_args(p)
    p.add_argument("--out", default="sta_vis", help="output folder")


def run(args) -> None:
    if os.path.isdir(args.video):
        raise InvalidInput(f"{args.video} is a folder: sta vis draws one video (sta predict takes folders)")
    if not os.path.isfile(args.video):
        raise InvalidInput(f"{args.video}: no such video file")
    loaded = load_model(model_request(args), pruning_request(args), default_r=DEFAULT_R, allow_bundled=True,
                        bundled_r=BUNDLED_R)
    print_notes(NAME, loaded.notes)
    result = visualize(loaded.model, args.video, args.out, protocol=dataset_of(args).protocol,
                       sampling_rate=sampling_rate(args.sampling_rate, loaded),
                       note="RANDOM WEIGHTS: the GradNorm map means nothing" if loaded.random_weights else None)
    print(f"{result.method} r={format_r(result.r)}: tokens kept {format_tokens(result.tokens_per_stage)} of "
          f"{result.tokens_total}, {result.gflops_per_view:.2f} GFLOPs/view; keeps "
          f"{result.gradnorm_kept_share:.1%} of the GradNorm mass")
    for key, file in result.files.items():
        print(f"  {key:<9}{os.path.join(args.out, file)}")
