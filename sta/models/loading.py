"""A ready-to-run model from user-facing options: release name + checkpoint, or a Hugging Face directory.

Returns the model together with a description (name, checkpoint and its hash,
r) that identifies it in evaluation fingerprints and summaries.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass

import torch

from sta.core.schedule import RSpec
from sta.models.checkpoint import load_weights
from sta.models.vit import VisionTransformer, create_model


@dataclass(frozen=True)
class ModelSpec:
    name: str = "vit_base_patch16_224"
    ckpt_path: str | None = None
    hf_model: str | None = None  # local Hugging Face model directory (replaces name + ckpt_path)
    num_classes: int = 400
    num_frames: int = 16
    img_size: int = 224
    tubelet_size: int = 2
    allow_unsafe: bool = False


def file_sha256(path: str, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_model(spec: ModelSpec, r: RSpec = 0, method: str = "sta") -> tuple[VisionTransformer, dict]:
    """Build the backbone ``spec`` names, with weights, at pruning strength ``r``; plus its description.

    The description names the weights; ``sta.evaluate`` adds the model's r and method itself.
    A checkpoint with a Kinetics-710 head loaded for 400 classes keeps the head's
    Kinetics-400 rows (warned, and recorded as ``desc["head"] = "k710->k400"``).
    """
    if spec.hf_model:
        from sta.adapters.directory import load_hf_directory

        model = load_hf_directory(spec.hf_model, r=r, method=method)
        weights = sorted(f for f in os.listdir(spec.hf_model) if f.endswith((".safetensors", ".bin")))
        desc = dict(hf_model=os.path.abspath(spec.hf_model),
                    weights_sha256={f: file_sha256(os.path.join(spec.hf_model, f)) for f in weights})
    else:
        with torch.random.fork_rng():  # without a checkpoint: the same random weights every run (resumable)
            torch.manual_seed(0)
            model = create_model(spec.name, num_classes=spec.num_classes, num_frames=spec.num_frames,
                                 img_size=spec.img_size, tubelet_size=spec.tubelet_size, r=r)
        desc = dict(name=spec.name, num_classes=spec.num_classes, num_frames=spec.num_frames,
                    img_size=spec.img_size, tubelet_size=spec.tubelet_size)
        if spec.ckpt_path:
            # A Kinetics-710 head (VideoMAE V2) with num_classes=400: its K400 rows, with a warning.
            head_map = load_weights(model, spec.ckpt_path, allow_unsafe=spec.allow_unsafe, stacklevel=3)
            desc.update(checkpoint=os.path.abspath(spec.ckpt_path), checkpoint_sha256=file_sha256(spec.ckpt_path))
            if head_map:
                desc.update(head=head_map)
        else:
            warnings.warn(f"no checkpoint given: {spec.name} has random weights (seed 0), its accuracy means "
                          "nothing", stacklevel=2)
            desc.update(checkpoint=None, random_init_seed=0)
    model.method = method
    return model.eval(), desc
