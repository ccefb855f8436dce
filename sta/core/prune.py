"""STA token selection as plain tensor functions (no model classes).

Semantic-aware Temporal Accumulation (Ding et al., ICCV 2023, arXiv 2308.04549),
exactly as ``docs/algorithm.md`` defines it. One call prunes one
stage for a whole batch: the Python loop runs over the (at most T) groups,
never over clips. Every tensor op mirrors the authors' release op for op, so
the default mode keeps the same tokens in the same order.

Exact ties (a static video) are broken by original position, lowest first,
through :func:`sta.core.select.rank`'s stable sort (issue #19); where scores
differ the order is the release's.

Shapes: ``B`` clips, ``L`` tokens, ``C`` channels, ``G`` groups of ``n = L / G``
tokens, ``K`` key channels (one head's width).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sta.core.select import gather_tokens, rank

__all__ = ["accumulate", "gather_tokens", "normalize_keys", "reorder_first_group", "semantic_scores",
           "sta_keep_indices"]


def normalize_keys(keys: Tensor) -> Tensor:
    """``B x L x K`` head-averaged keys -> unit vectors (the similarity feature ``m``)."""
    return keys / keys.norm(dim=-1, keepdim=True)


def semantic_scores(x: Tensor, num_groups: int) -> Tensor:
    """Min-max normalised L1 norm of each token inside its group.

    x: ``B x L x C`` block output. Returns ``s``: ``B x G x n`` in [0, 1].
    """
    B, L, C = x.shape
    l1 = x.abs().sum(-1).view(B, num_groups, L // num_groups)  # a_i = sum_c |x_ic|
    lo = l1.min(dim=-1, keepdim=True)[0]
    hi = l1.max(dim=-1, keepdim=True)[0]
    # A group whose tokens all have the same norm has no semantic contrast: s = 0 (not 0/0).
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return (l1 - lo) / span


def reorder_first_group(m: Tensor, positions: Tensor | None = None) -> Tensor:
    """Redundancy inside the first visited group, ToMe-style.

    m: ``B x n x K`` unit keys. Returns ``B x n`` within-group positions: all odd
    positions in order, then even positions by ascending max similarity to any
    odd token (the most redundant even tokens go last, where they are dropped);
    equal similarities: lowest original position first (``positions``: ``B x n``,
    None = the group is in position order).
    """
    B, n, _ = m.shape
    even, odd = m[:, ::2], m[:, 1::2]
    closest = (even @ odd.transpose(-1, -2)).max(dim=-1)[0]  # c_a = max_b <m_a, m_b>   B x ceil(n/2)
    even_pos = positions[:, ::2] if positions is not None else None
    even_order = rank(closest, descending=False, positions=even_pos)  # least redundant first
    odd_pos = torch.arange(1, n, 2, device=m.device).expand(B, -1)
    return torch.cat([odd_pos, even_order * 2], dim=1)


def accumulate(m_cur: Tensor, m_prev: Tensor, rho_prev: Tensor | None) -> Tensor:
    """Temporal accumulation: how much of the current group the previous one already showed.

    m_cur: ``B x n x K`` current group; m_prev: ``B x p x K`` previous tokens;
    rho_prev: ``B x p x 1`` their normalised scores, or None when every previous
    token carries weight 1 (second visited group). Returns ``rho``: ``B x n x 1``.
    """
    similarity = m_cur @ m_prev.transpose(-1, -2)  # P_ij = <m_i, m_j>   B x n x p
    weights = similarity.softmax(dim=1)  # each previous token spreads one unit over the current group
    if rho_prev is None:
        return weights.sum(dim=-1, keepdim=True)  # rho_i = sum_j W_ij
    return weights @ rho_prev  # rho_i = sum_j W_ij rho'_j


def sta_keep_indices(x: Tensor, keys: Tensor, num_groups: int, r: int, reverse: bool = False,
                     semantic: bool = True, positions: Tensor | None = None) -> Tensor:
    """Indices of the tokens STA keeps at one stage, in the order it keeps them.

    x: ``B x L x C`` block output; keys: ``B x L x K`` that block's keys averaged
    over heads; ``num_groups`` contiguous groups, each loses ``r`` tokens;
    ``reverse`` visits groups last-to-first (stage 1). Returns ``B x G*(n-r)``
    int64 indices into ``L``: group 0's kept tokens first (whatever the visit
    order), each group's in STA order (first visited: odd tokens then least
    redundant evens; later: ascending score). ``semantic=False`` drops the
    semantic term (sigma = rho), an ablation, not the default. ``positions``
    (``B x L``, the tokens' original positions; None = ``0..L-1``) break exact
    score ties, lowest position first.
    """
    B, L, _ = x.shape
    G, n = num_groups, L // num_groups
    if r <= 0:
        return torch.arange(L, device=x.device).expand(B, L)
    m = normalize_keys(keys).view(B, G, n, -1)  # B x G x n x K
    s = semantic_scores(x, G) if semantic else x.new_zeros(B, G, n)  # B x G x n
    pos = positions.reshape(B, G, n) if positions is not None else None
    visit = range(G - 1, -1, -1) if reverse else range(G)

    kept: list[Tensor | None] = [None] * G  # per group: B x (n - r) within-group positions
    m_prev = rho_prev = None
    for step, g in enumerate(visit):
        if step == 0:
            order = reorder_first_group(m[:, g], pos[:, g] if pos is not None else None)  # B x n
            kept[g] = order[:, : n - r]
            m_prev = gather_tokens(m[:, g], order)  # the whole reordered group is "previous" for the next visit
            continue
        rho = accumulate(m[:, g], m_prev, rho_prev)  # B x n x 1
        sigma = rho[..., 0] * (1 - s[:, g])  # seen before and semantically weak -> high -> dropped
        keep = rank(sigma, positions=pos[:, g] if pos is not None else None)[:, : n - r]  # ascending sigma
        kept[g] = keep
        m_prev = gather_tokens(m[:, g], keep)
        rho_prev = rho.gather(1, keep[..., None])
        rho_prev = rho_prev / rho_prev.sum(dim=1, keepdim=True)  # rho' sums to 1 over kept tokens

    offsets = torch.arange(G, device=x.device)[:, None] * n  # group g's tokens start at g * n
    return (torch.stack(kept, dim=1) + offsets).flatten(1)
