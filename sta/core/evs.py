"""Efficient Video Sampling (NVIDIA, arXiv 2510.14624) as plain tensor functions.

EVS (vLLM ``vllm/multimodal/evs.py``, ``compute_retention_mask``) scores every
token by how much it differs from the token at the same grid position in the
previous temporal slice, ``1 - cos(x_(t,h,w), x_(t-1,h,w))``; the first slice
has no predecessor and ranks above everything (always kept while the budget
allows). It keeps the ``k = max(S, int(T*S*(1 - q)))`` most dissimilar tokens
of the whole video (``q``: the pruning rate), equal scores in position order
(a stable sort), and returns them as a mask in ``(t, h, w)`` order.

Inside a pruned classifier the grid thins out after the first stage, so
:func:`evs_live_dissimilarity` compares a live token with the **nearest earlier
live** token at its spatial position (the one that stands for the dropped run in
between, as in run-length coding); on a full grid that is exactly EVS's rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sta.core.select import gather_tokens, rank


def evs_keep_count(tokens_per_slice: int, num_slices: int, q: float) -> int:
    """Tokens EVS keeps at pruning rate ``q``: ``max(S, int(T * S * (1 - q)))`` (never less than one slice)."""
    return max(tokens_per_slice, int(tokens_per_slice * num_slices * (1 - q)))


def evs_dissimilarity(tokens: Tensor, grid: tuple[int, int, int]) -> Tensor:
    """``B x N x C`` tokens on a full ``(T, H, W)`` grid -> ``B x N`` dissimilarity (``+inf`` for slice 0).

    Computed in the tokens' dtype with :func:`torch.nn.functional.cosine_similarity`, as EVS does.
    """
    T, H, W = grid
    B, N, C = tokens.shape
    x = tokens.reshape(B, T, H * W, C)
    dissimilarity = 1 - F.cosine_similarity(x[:, 1:], x[:, :-1], dim=-1)  # B x T-1 x S
    head = torch.full_like(dissimilarity[:, :1], torch.inf)
    return torch.cat([head, dissimilarity], dim=1).flatten(1)


def evs_keep_mask(tokens: Tensor, grid: tuple[int, int, int], q: float) -> Tensor:
    """``B x N x C`` tokens in ``(t, h, w)`` order, ``grid = (T', H', W')``, pruning rate ``q`` -> ``B x N`` bool.

    True for the ``max(H'W', int(N (1 - q)))`` most dissimilar tokens of each clip (slice 0 first; exact ties:
    lowest position first).
    """
    T, H, W = grid
    scores = evs_dissimilarity(tokens, grid)
    keep = rank(scores, descending=True)[:, : evs_keep_count(H * W, T, q)]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, keep, True)


def evs_live_dissimilarity(x: Tensor, positions: Tensor, num_slices: int, tokens_per_slice: int) -> Tensor:
    """EVS's score for live tokens: ``B x L x C`` features at ``B x L`` original positions -> ``B x L``.

    A token's reference is the live token at the same spatial position in the
    latest earlier slice; a token with none ranks first (``+inf``). Static
    shapes: the live tokens are scattered onto the full ``T x S`` grid.
    """
    B, L, C = x.shape
    T, S = num_slices, tokens_per_slice
    grid = x.new_zeros(B, T * S, C).scatter(1, positions[..., None].expand(-1, -1, C), x)
    alive = torch.zeros(B, T * S, dtype=torch.bool, device=x.device).scatter(1, positions, True).view(B, T, S)
    slices = torch.arange(T, device=x.device)
    candidates = torch.where(alive, slices[:, None], -1)  # B x T x S: the slice where alive, else -1
    earlier = slices[:, None] > slices[None, :]  # T x T: [t, t'] is t' < t
    previous = torch.where(earlier[None, :, :, None], candidates[:, None], -1).amax(dim=2)  # B x T x S
    reference = previous.clamp(min=0) * S + torch.arange(S, device=x.device)
    similarity = F.cosine_similarity(grid, gather_tokens(grid, reference.view(B, -1)), dim=-1)  # B x N
    scores = torch.where(previous.view(B, -1) >= 0, 1 - similarity, torch.inf)
    return scores.gather(1, positions)
