"""Tiny models shared by the tests: 16 frames of 32x32, patch 8 -> 8 slices of 16 tokens."""

from __future__ import annotations

from pathlib import Path

import torch

from sta import create_model

# Real clips that ship with the repository (examples/videos/README.md says where they come from).
SAMPLE_VIDEOS = Path(__file__).resolve().parents[1] / "examples" / "videos"
TINY = dict(num_classes=5, num_frames=16, img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Give every parameter (biases and norm weights too) random values, so no term is trivially zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen) * std
            p.copy_(noise + 1 if "norm" in name and name.endswith("weight") else noise)
    return model


def tiny_model(r=0, seed: int = 0, **overrides) -> torch.nn.Module:
    return randomize_(create_model("vit_small_patch16_224", r=r, **{**TINY, **overrides}), seed).eval()


def tiny_clips(batch: int = 2, seed: int = 0, frames: int = 16, size: int = 32) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))
