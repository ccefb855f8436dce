"""The model that ships with the package: a depth-12 VideoMAE ViT trained on the synthetic proxy task.

It lets every command run without a download (``sta demo``, and ``predict``,
``vis``, ``export``, ``gradnorm`` when no model is named). The task is
:mod:`sta.data.synthetic`; the file, its training command and its accuracy are
described in ``sta/models/assets/README.md``.
"""

from __future__ import annotations

from pathlib import Path

from sta.core.schedule import RSpec
from sta.data.synthetic import CLASS_NAMES, SAMPLING_RATE
from sta.models.checkpoint import CheckpointError, extract_state_dict, read_checkpoint
from sta.models.vit import VisionTransformer, create_model

__all__ = ["BUNDLED_CHECKPOINT", "CLASS_NAMES", "SAMPLING_RATE", "bundled_model_available", "load_bundled_model"]

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "proxy_vit.pth"
ARCHITECTURE_KEYS = ("model", "num_classes", "num_frames", "img_size", "tubelet_size", "patch_size", "embed_dim",
                     "depth", "num_heads")


def bundled_model_available() -> bool:
    """Whether the package carries its model file (a source tree without its assets does not)."""
    return BUNDLED_CHECKPOINT.is_file()


def load_bundled_model(r: RSpec = 0, path: str | Path | None = None) -> VisionTransformer:
    """The bundled proxy ViT, float32, in eval mode, pruning with ``r``.

    The architecture is rebuilt from the checkpoint's ``args`` (width, depth,
    heads, classes, frames, size, patch), so the file alone defines the model.
    """
    path = Path(path) if path is not None else BUNDLED_CHECKPOINT
    ckpt = read_checkpoint(path)
    args = ckpt.get("args") if isinstance(ckpt, dict) else None
    if not isinstance(args, dict) or any(key not in args for key in ARCHITECTURE_KEYS):
        raise CheckpointError(f"{path} is not a proxy checkpoint (no 'args' dict with the model config)")
    name, sizes = args["model"], {key: args[key] for key in ARCHITECTURE_KEYS[1:]}
    model = create_model(name, r=r, **sizes)
    state = {k: v.float() for k, v in extract_state_dict(ckpt).items()}
    model.load_state_dict(state, strict=True)
    return model.eval()
