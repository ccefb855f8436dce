"""Run-Length Tokenization's static-token test as plain tensor functions.

RLT (Choudhury et al., NeurIPS 2024, arXiv 2411.05222; code ``rccchoudhury/rlt``,
``src/models/static_token_utils.py``) removes, before the first block, every
patch tubelet that repeats the one before it at the same place. A tubelet at
slice ``t >= 1`` changes by

    ``d = mean over channels of (mean over its patch pixels of |last frame of tubelet t - first frame of tubelet t-1|)``

on the frames exactly as the model receives them (normalised); slice 0 has
nothing before it and is always kept (its change is ``+inf`` here). A tubelet
is static when ``d <= threshold`` (authors' default 0.1 on normalised frames).
The kept tokens keep their original positions (the position embedding of the
token they are, not of their rank).

Shapes: ``B`` clips of ``3 x F x H x W``; ``T = F / tubelet`` slices of
``S = (H / patch)(W / patch)`` tokens, ``N = T * S`` in ``(t, h, w)`` order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_THRESHOLD = 0.1  # the authors' drop_param on ImageNet-normalised frames


def rlt_change_scores(clips: Tensor, tubelet_size: int, patch_size: int) -> Tensor:
    """``B x 3 x F x H x W`` clips -> ``B x N`` float32 change of every token (``+inf`` for slice 0)."""
    B, _, frames, H, W = clips.shape
    T = frames // tubelet_size
    x = clips.float()
    last = x[:, :, 2 * tubelet_size - 1 : T * tubelet_size : tubelet_size]  # last frame of tubelets 1..T-1
    first = x[:, :, 0 : (T - 1) * tubelet_size : tubelet_size]  # first frame of tubelets 0..T-2
    per_channel = F.avg_pool3d((last - first).abs(), (1, patch_size, patch_size))  # B x 3 x T-1 x H' x W'
    change = per_channel.mean(dim=1)  # channels averaged after the pixels, as the release does
    head = torch.full_like(change[:, :1], torch.inf)
    return torch.cat([head, change], dim=1).flatten(1)


def rlt_keep_mask(clips: Tensor, tubelet_size: int, patch_size: int, threshold: float = DEFAULT_THRESHOLD) -> Tensor:
    """``B x 3 x F x H x W`` -> ``B x N`` bool, True where a token is kept (changes by more than ``threshold``).

    ``(t, h, w)`` token order; every token of slice 0 is kept. The number kept varies per clip.
    """
    return rlt_change_scores(clips, tubelet_size, patch_size) > threshold
