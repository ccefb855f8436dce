"""Deterministic ranking and selection, shared by every method (issue #19).

Every ranking in the core goes through :func:`rank`: the order of the scores,
exact ties by original position (``slice * S + spatial``, lowest first). Eager
code uses a **stable** sort; while a graph is exported (ONNX has no stable
sort, and TopK's tie order differs between runtimes) the same total order is
computed by counting, for every token, the tokens that come before it: only
comparisons, a sum and a scatter, which eager, ``torch.export``, ONNX Runtime
and OpenVINO all execute exactly. Without ties any sort gives the same
permutation, so no result changes where scores differ.

Shapes: ``B`` clips, ``L`` live tokens, ``G`` groups of ``n = L / G`` tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """``x``: ``B x L x ...``, ``idx``: ``B x L'`` -> the rows of x at idx, ``B x L' x ...``."""
    if x.dim() == 2:
        return x.gather(1, idx)
    return x.gather(1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))


def rank(scores: Tensor, descending: bool = False, positions: Tensor | None = None) -> Tensor:
    """Indices that sort ``scores`` along the last dimension; exact ties go to the lowest original position.

    ``positions`` (same shape, distinct int values per row): the tokens' original
    positions; None when the tokens are already in position order (ties then go
    to the lowest index).
    """
    if torch.compiler.is_exporting():
        return rank_by_counting(scores, descending, positions)
    if positions is None:
        return scores.argsort(dim=-1, descending=descending, stable=True)
    by_position = positions.argsort(dim=-1)  # distinct values: one permutation, whatever the sort
    order = scores.gather(-1, by_position).argsort(dim=-1, descending=descending, stable=True)
    return by_position.gather(-1, order)


def rank_by_counting(scores: Tensor, descending: bool = False, positions: Tensor | None = None) -> Tensor:
    """:func:`rank` without a sort: token i's place is the number of tokens that come before it.

    ``L x L`` comparisons per row (for export: a static graph of elementwise ops, exact on every backend).
    """
    idx = torch.arange(scores.shape[-1], device=scores.device).expand_as(scores)
    pos = idx if positions is None else positions
    mine, other = scores[..., :, None], scores[..., None, :]  # [i, j]: token i against token j
    ahead = (other > mine) if descending else (other < mine)
    ahead = ahead | ((other == mine) & (pos[..., None, :] < pos[..., :, None]))
    place = ahead.sum(dim=-1)  # a permutation of 0..L-1: the order is total
    return torch.zeros_like(place).scatter(-1, place, idx)


def keep_top(scores: Tensor, k: int, positions: Tensor | None = None, largest: bool = True) -> Tensor:
    """Indices (last dimension) of the ``k`` largest (or smallest) scores, returned in sequence order."""
    return rank(scores, descending=largest, positions=positions)[..., :k].sort(dim=-1).values


def keep_top_per_group(scores: Tensor, num_groups: int, r: int, positions: Tensor | None = None) -> Tensor:
    """``B x L`` scores -> ``B x G*(n-r)`` indices into ``L``: each contiguous group keeps its ``n - r`` largest,
    groups in order, each group's tokens in sequence order."""
    B, L = scores.shape
    G, n = num_groups, L // num_groups
    pos = positions.reshape(B, G, n) if positions is not None else None
    keep = keep_top(scores.reshape(B, G, n), n - r, pos)
    return (keep + torch.arange(G, device=scores.device)[:, None] * n).flatten(1)
