"""Hand-made clips whose answer is known: a static background with one moving patch, identical slices."""

from __future__ import annotations

import torch


def moving_patch_clips(batch: int = 2, frames: int = 16, size: int = 32, patch: int = 8, tubelet: int = 2,
                       seed: int = 0, step: int = 1) -> torch.Tensor:
    """``B x 3 x F x H x W``: each clip a still random image, plus one bright ``patch x patch`` square that jumps
    ``step`` patches to the right (wrapping to the next row) at every tubelet. Clip ``b`` starts at patch ``b``."""
    gen = torch.Generator().manual_seed(seed)
    clips = torch.randn(batch, 3, 1, size, size, generator=gen).repeat(1, 1, frames, 1, 1)
    side = size // patch
    for b in range(batch):
        for f in range(frames):
            cell = (b + step * (f // tubelet)) % (side * side)
            row, col = divmod(cell, side)
            clips[b, :, f, row * patch : (row + 1) * patch, col * patch : (col + 1) * patch] = 3.0
    return clips


def moving_cells(batch: int, frames: int = 16, size: int = 32, patch: int = 8, tubelet: int = 2, step: int = 1
                 ) -> list[set[int]]:
    """Per clip of :func:`moving_patch_clips`, the token positions whose tubelet differs from the one before it."""
    side = size // patch
    S, T = side * side, frames // tubelet
    out = []
    for b in range(batch):
        moved = set()
        for t in range(1, T):
            before, now = (b + step * (t - 1)) % S, (b + step * t) % S
            if before != now:
                moved |= {t * S + before, t * S + now}
        out.append(moved)
    return out
