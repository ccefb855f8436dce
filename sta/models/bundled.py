"""The model that ships with the package: a depth-12 VideoMAE ViT trained on the synthetic proxy task.

It lets every command run without a download (``sta demo``, and ``predict``,
``vis``, ``export``, ``gradnorm`` when no model is named). The task is
:mod:`sta.data.synthetic`; the file, its training command and its accuracy are
described in ``sta/models/assets/README.md``.
"""

from __future__ import annotations

from pathlib import Path

from sta.core.schedule import RSpec
from sta.data.proxies import DEFAULT_PROXY, PROXY_NAMES, get_task
from sta.data.synthetic import CLASS_NAMES, SAMPLING_RATE
from sta.errors import InvalidInput
from sta.models.checkpoint import CheckpointError, extract_state_dict, read_checkpoint
from sta.models.vit import VisionTransformer, create_model

__all__ = ["BUNDLED_CHECKPOINT", "CLASS_NAMES", "SAMPLING_RATE", "bundled_model_available", "checkpoint_path",
           "class_names", "load_bundled_model"]

ASSETS = Path(__file__).resolve().parent / "assets"
CHECKPOINTS = {"easy": ASSETS / "proxy_vit.pth", "hard": ASSETS / "proxy_vit_hard.pth"}  # one model per proxy task
BUNDLED_CHECKPOINT = CHECKPOINTS["easy"]  # 0.3's name for the (easy) bundled file
BUNDLED_R = 16  # every command's r for a bundled model when none is given: a quarter of its 64-token groups
ARCHITECTURE_KEYS = ("model", "num_classes", "num_frames", "img_size", "tubelet_size", "patch_size", "embed_dim",
                     "depth", "num_heads")


def checkpoint_path(proxy: str = DEFAULT_PROXY) -> Path:
    """The bundled file of the proxy task ``proxy`` (``"easy"`` or ``"hard"``)."""
    if proxy not in CHECKPOINTS:
        raise InvalidInput(f"unknown proxy {proxy!r}: choose one of {', '.join(PROXY_NAMES)}", param="proxy")
    return CHECKPOINTS[proxy]


def class_names(proxy: str = DEFAULT_PROXY) -> tuple[str, ...]:
    """The class names of the proxy task ``proxy``."""
    return get_task(proxy).class_names


def bundled_model_available(proxy: str = DEFAULT_PROXY) -> bool:
    """Whether the package carries the model file of ``proxy`` (a source tree without its assets does not)."""
    return checkpoint_path(proxy).is_file()


def load_bundled_model(r: RSpec = 0, path: str | Path | None = None, proxy: str = DEFAULT_PROXY) -> VisionTransformer:
    """The bundled proxy ViT of task ``proxy`` (or the file ``path``), float32, in eval mode, pruning with ``r``.

    The architecture is rebuilt from the checkpoint's ``args`` (width, depth,
    heads, classes, frames, size, patch), so the file alone defines the model.
    """
    path = Path(path) if path is not None else checkpoint_path(proxy)
    ckpt = read_checkpoint(path)
    args = ckpt.get("args") if isinstance(ckpt, dict) else None
    if not isinstance(args, dict) or any(key not in args for key in ARCHITECTURE_KEYS):
        raise CheckpointError(f"{path} is not a proxy checkpoint (no 'args' dict with the model config)")
    name, sizes = args["model"], {key: args[key] for key in ARCHITECTURE_KEYS[1:]}
    model = create_model(name, r=r, **sizes)
    state = {k: v.float() for k, v in extract_state_dict(ckpt).items()}
    model.load_state_dict(state, strict=True)
    return model.eval()
