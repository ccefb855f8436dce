"""Token-reduction methods behind one interface, all at STA's token counts.

Every method cuts the sequence into the same contiguous groups as STA at each
stage and removes exactly ``r`` tokens per group, so for a given r every
method runs the blocks on the same number of tokens (equal FLOPs up to its
own scoring cost, which the FLOPs counter counts too).

- ``sta``: Semantic-aware Temporal Accumulation (the default; exact release behaviour).
- ``temporal``: STA's accumulation without the semantic term (sigma = rho).
- ``norm``: keep the tokens with the largest L1 norm: STA's semantic term alone.
- ``random``: drop a uniformly random set per group; the pattern is fixed by
  ``RANDOM_SEED`` and the stage, the same for every clip (results do not depend on the batch).
- ``tome``: ToMe's bipartite soft matching inside each group: the r most similar
  alternate tokens are merged (size-weighted average) into their best match, and
  attention is size-proportional afterwards (Bolya et al., ICLR 2023).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from sta.core.prune import gather_tokens, normalize_keys, sta_keep_indices
from sta.core.schedule import PruneStage
from sta.errors import InvalidInput

RANDOM_SEED = 0


@dataclass
class ReductionState:
    """What one forward carries from stage to stage (fresh for every forward)."""

    positions: Tensor | None = None  # B x L original positions of the live tokens, when traced
    sizes: Tensor | None = None  # B x L x 1 tokens merged into each live token (ToMe), else None

    def keep(self, idx: Tensor) -> None:
        """Follow a selection ``idx`` (``B x L'``) of the live tokens."""
        if self.positions is not None:
            self.positions = self.positions.gather(1, idx)
        if self.sizes is not None:
            self.sizes = gather_tokens(self.sizes, idx)


# A reducer: (block output B x L x C, that block's head-averaged keys B x L x K, stage, state) -> B x L' x C.
Reducer = Callable[[Tensor, Tensor, PruneStage, ReductionState], Tensor]


def _select(indices_fn: Callable[[Tensor, Tensor, PruneStage], Tensor]) -> Reducer:
    """A reducer that keeps tokens by index (drops, never merges)."""

    def reduce(x: Tensor, keys: Tensor, stage: PruneStage, state: ReductionState) -> Tensor:
        keep = indices_fn(x, keys, stage)
        state.keep(keep)
        return gather_tokens(x, keep)

    return reduce


def sta_indices(x: Tensor, keys: Tensor, stage: PruneStage, semantic: bool = True) -> Tensor:
    # Score in float32 whatever the model runs in: a bf16 L1 norm would blur the ranking.
    return sta_keep_indices(x.float(), keys.float(), stage.num_groups, stage.r, stage.reverse, semantic=semantic)


def temporal_indices(x: Tensor, keys: Tensor, stage: PruneStage) -> Tensor:
    return sta_indices(x, keys, stage, semantic=False)


def norm_indices(x: Tensor, keys: Tensor, stage: PruneStage) -> Tensor:
    """Per group the ``n - r`` largest-L1 tokens, in sequence order."""
    B, L, _ = x.shape
    G, n = stage.num_groups, L // stage.num_groups
    l1 = x.float().abs().sum(-1).view(B, G, n)
    keep = l1.topk(n - stage.r, dim=-1).indices.sort(dim=-1).values
    return (keep + torch.arange(G, device=x.device)[:, None] * n).flatten(1)


def random_indices(x: Tensor, keys: Tensor, stage: PruneStage) -> Tensor:
    """Per group a uniformly random ``n - r`` tokens, seeded by stage, shared by every clip."""
    B, L, _ = x.shape
    G, n = stage.num_groups, L // stage.num_groups
    gen = torch.Generator().manual_seed(RANDOM_SEED * 1000 + stage.block)
    keep = torch.rand(G, n, generator=gen).argsort(dim=-1)[:, : n - stage.r].sort(dim=-1).values
    keep = (keep + torch.arange(G)[:, None] * n).flatten().to(x.device)
    return keep.expand(B, -1)


def tome_merge(x: Tensor, keys: Tensor, stage: PruneStage, state: ReductionState) -> Tensor:
    """ToMe bipartite soft matching inside each group: ``B x L x C`` -> ``B x G*(n-r) x C``."""
    B, L, C = x.shape
    G, n, r = stage.num_groups, L // stage.num_groups, stage.r
    if state.sizes is None:
        state.sizes = x.new_ones(B, L, 1, dtype=torch.float32)
    m = normalize_keys(keys.float()).view(B * G, n, -1)
    a, b = m[:, ::2], m[:, 1::2]  # alternate tokens: a may merge into b
    best, match = (a @ b.transpose(-1, -2)).max(dim=-1)  # each a token's most similar b token
    order = best.argsort(dim=-1, descending=True)
    merged, unmerged = order[:, :r], order[:, r:]  # the r most redundant a tokens merge
    dest = match.gather(1, merged)

    def split(t: Tensor) -> tuple[Tensor, Tensor]:
        t = t.reshape(B * G, n, -1)
        return t[:, ::2], t[:, 1::2]

    size_a, size_b = split(state.sizes)
    xa, xb = split(x.float() * state.sizes)  # size-weighted sums, averaged after merging
    xb = xb.scatter_add(1, dest[..., None].expand(-1, -1, C), gather_tokens(xa, merged))
    size_b = size_b.scatter_add(1, dest[..., None], gather_tokens(size_a, merged))
    out = torch.cat([gather_tokens(xa, unmerged), xb], dim=1)  # per group: kept a tokens, then every b token
    sizes = torch.cat([gather_tokens(size_a, unmerged), size_b], dim=1)
    if state.positions is not None:  # a merged group is shown at its destination token's position
        pa, pb = split(state.positions[..., None])
        state.positions = torch.cat([gather_tokens(pa, unmerged), pb], dim=1).view(B, -1)
    state.sizes = sizes.view(B, -1, 1)
    return (out / sizes).view(B, -1, C).to(x.dtype)


METHODS: dict[str, Reducer] = {
    "sta": _select(sta_indices),
    "temporal": _select(temporal_indices),
    "norm": _select(norm_indices),
    "random": _select(random_indices),
    "tome": tome_merge,
}


def check_method(method: str, stages: tuple[PruneStage, ...]) -> None:
    """Raise ``ValueError`` for an unknown method or an r the method cannot reach."""
    if method not in METHODS:
        raise InvalidInput(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "tome":
        for stage in stages:
            n = stage.tokens_in // stage.num_groups
            if stage.r > n // 2:
                raise InvalidInput(f"tome merges at most half of each group: r={stage.r} after block {stage.block} "
                                   f"exceeds {n // 2} (groups of {n} tokens)")
