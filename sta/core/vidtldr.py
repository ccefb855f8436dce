"""vid-TLDR (Choi et al., CVPR 2024, arXiv 2403.13347) as plain tensor functions.

The release (``mlvlab/vid-TLDR``, ``multi_modality/utils/vid_TLDR.py``) merges
tokens in two steps:

1. **Saliency** from the attention map of the merging layer (probabilities
   without the size bias): average over heads, ``e_i = sum_j a_ij log a_ij`` (the
   negative entropy of token i's attention row), min-max normalised over the
   tokens; tokens below the mean are background and get 0 ("background
   removing"); the rest are centred on the mean and divided by the largest
   centred value ("foreground sharpening").
2. **Bipartite soft matching** (ToMe's) on the L2-normalised hidden states:
   alternate tokens ``A = x[0::2]`` may merge into ``B = x[1::2]``; each A token's
   best match is its most similar B token (similarity mapped to ``(s + 1) / 2``),
   and the ``r`` A tokens with the best matches merge. A merged source is
   weighted by its saliency, in the sum and in the size alike, so a destination
   becomes ``sum(w_i size_i x_i) / sum(w_i size_i)`` (``w = 1`` for itself) and
   its size ``sum(w_i size_i)``. Later attention is size-proportional.

Output order, as the release: the unmerged A tokens by index, then every B token.
Deviations, both where the release gives NaN: ``0 log 0`` counts as 0, and a
normalisation by a zero range divides by 1 instead. Exact ties among the best
matches go to the lowest original position (the release's sort is unstable).

Shapes: ``B`` clips, ``N`` tokens, ``C`` channels, ``H`` heads, ``M`` keys.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sta.core.select import gather_tokens, rank


def _safe(t: Tensor) -> Tensor:
    """A divisor that is 1 wherever it would be 0 (a flat distribution has no contrast: 0, not 0/0)."""
    return torch.where(t != 0, t, torch.ones_like(t))


def vidtldr_saliency(attn: Tensor) -> Tensor:
    """``B x H x N x M`` attention probabilities (row i: token i's query) -> ``B x N x 1`` saliency in [0, 1]."""
    a = attn.mean(dim=1)
    negentropy = torch.where(a > 0, a * a.log(), torch.zeros_like(a)).sum(dim=-1, keepdim=True)  # B x N x 1
    s = negentropy - negentropy.amin(dim=1, keepdim=True)
    s = s / _safe(s.amax(dim=1, keepdim=True))
    background = s < s.mean(dim=1, keepdim=True)
    s = s - s.mean(dim=1, keepdim=True)
    s = s / _safe(s.amax(dim=1, keepdim=True))
    return s.masked_fill(background, 0.0)


def weighted_merge(metric: Tensor, x: Tensor, weights: Tensor, sizes: Tensor, r: int,
                   positions: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Bipartite matching on ``metric`` and saliency-weighted merging of ``x``: the work of :func:`vidtldr_merge`.

    ``metric``, ``x``: ``B x N x .``; ``weights``, ``sizes``: ``B x N x 1``; ``positions``: ``B x N`` original
    positions (ties; a merged token is then listed at its destination's) or None. Returns
    ``(B x (N-r) x C, B x (N-r) x 1 sizes, B x (N-r) positions or None)``.
    """
    with torch.no_grad():
        m = metric / metric.norm(dim=-1, keepdim=True)
        a, b = m[:, ::2], m[:, 1::2]
        best, match = ((a @ b.transpose(-1, -2) + 1) / 2).max(dim=-1)  # B x |A|: each A token's closest B token
        order = rank(best, descending=True, positions=positions[:, ::2] if positions is not None else None)
        merged = order[:, :r]
        kept = order[:, r:].sort(dim=-1).values  # the unmerged A tokens, in index order
        dest = match.gather(1, merged)
        source_weight = gather_tokens(weights[:, ::2], merged)  # B x r x 1

    def merge(t: Tensor) -> Tensor:
        dtype, t = t.dtype, t.float()
        src, dst = t[:, ::2], t[:, 1::2]
        moved = gather_tokens(src, merged) * source_weight
        dst = dst.scatter_reduce(1, dest[..., None].expand(-1, -1, t.shape[-1]), moved, reduce="sum")
        return torch.cat([gather_tokens(src, kept), dst], dim=1).to(dtype)

    largest = sizes.amax(dim=1, keepdim=True)  # sizes are scaled by their largest while summed, as the release
    out = merge(x * (sizes / largest))
    new_sizes = merge(sizes)
    out = out / (new_sizes / largest)
    new_positions = None
    if positions is not None:
        new_positions = torch.cat([positions[:, ::2].gather(1, kept), positions[:, 1::2]], dim=1)
    return out.to(x.dtype), new_sizes, new_positions


def merge_count(num_tokens: int, r: float) -> int:
    """Tokens merged for ``r``: a count, or a fraction of ``num_tokens`` when below 1; at most half the tokens."""
    count = int(num_tokens * r) if r < 1 else int(r)
    return max(min(count, num_tokens // 2), 0)


def vidtldr_merge(x: Tensor, attn: Tensor, size: Tensor | None, r: float) -> tuple[Tensor, Tensor]:
    """Merge ``r`` tokens of ``x`` (``B x N x C``) the vid-TLDR way -> ``(B x (N-r) x C, B x (N-r) x 1 sizes)``.

    ``attn``: ``B x heads x N x N`` attention probabilities of the layer; ``size``: ``B x N x 1`` tokens merged
    into each (None: all ones). ``r`` below 1 is a fraction of ``N``; at most ``N // 2`` tokens merge.
    """
    sizes = torch.ones_like(x[..., :1], dtype=torch.float32) if size is None else size
    count = merge_count(x.shape[1], r)
    if count == 0:
        return x, sizes
    out, new_sizes, _ = weighted_merge(x, x, vidtldr_saliency(attn), sizes, count)
    return out, new_sizes
