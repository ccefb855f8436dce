"""``sta convert``: a VideoMAE release checkpoint <-> a Hugging Face model directory."""

from __future__ import annotations

from sta.cli.options import frames, int_between, pixels
from sta.models.convert import convert_checkpoint

NAME = "convert"
HELP = "VideoMAE release checkpoint <-> Hugging Face model directory"
DESCRIPTION = HELP


def add_arguments(p) -> None:
    p.add_argument("src", help="release .pth file, or a Hugging Face model directory")
    p.add_argument("dst", help="output: HF directory (from a .pth) or .pth file (from a directory)")
    p.add_argument("--direction", choices=["auto", "to-hf", "to-release"], default="auto",
                   help="auto: a directory converts to a release .pth, a file to an HF directory")
    p.add_argument("--num-frames", "--num_frames", type=frames, help="default: the checkpoint's args, else 16")
    p.add_argument("--input-size", "--input_size", type=pixels, help="default: the checkpoint's args, else 224")
    p.add_argument("--num-heads", "--num_heads", type=int_between(1, 1024),
                   help="only for widths that are not a release size")
    p.add_argument("--allow-unsafe-checkpoint", action="store_true",
                   help="unpickle a checkpoint that needs arbitrary code (only for files you trust)")


def run(args) -> None:
    direction = convert_checkpoint(args.src, args.dst, args.direction, num_frames=args.num_frames,
                                   img_size=args.input_size, num_heads=args.num_heads,
                                   allow_unsafe=args.allow_unsafe_checkpoint)
    print(f"sta convert: {args.src} -> {args.dst} ({direction})")
