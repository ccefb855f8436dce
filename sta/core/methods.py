"""Token-reduction methods behind one interface (:mod:`sta.core.reduction`), placed at STA's stages.

Equal budget: unless a method's name says otherwise, it runs at STA's three
stages (after blocks ``0``, ``depth // 3``, ``2 * depth // 3``) and leaves
exactly STA's token count after each, so at one r every method runs the blocks
on the same number of tokens and costs the same up to its own scoring, which
the FLOPs counter counts too (``docs/methods.md``).

- ``sta``: Semantic-aware Temporal Accumulation (the default; exact release behaviour).
- ``temporal``: STA's accumulation without the semantic term (sigma = rho).
- ``norm``: per group, the tokens with the largest L1 norm: STA's semantic term alone.
- ``random``: per group a uniformly random set; the pattern is fixed by
  ``RANDOM_SEED`` and the stage, the same for every clip.
- ``tome``: ToMe's bipartite soft matching inside each group, size-weighted
  averages, size-proportional attention afterwards (Bolya et al., ICLR 2023).
- ``rlt``: Run-Length Tokenization's pixel change (:mod:`sta.core.rlt`) at a fixed
  budget: before block 0 the most changing tokens are kept (stage 0's count, slice
  0 first), and stages 1 and 2 keep the most changing live tokens.
- ``rlt-threshold``: RLT as its authors run it: before block 0 drop every static
  token (change <= 0.1), nothing else; the count varies per clip (r > 0 only turns it on).
- ``evs``: Efficient Video Sampling's dissimilarity to the previous slice
  (:mod:`sta.core.evs`), the most dissimilar tokens of the clip at each stage.
- ``evs-q``: EVS's own schedule: one cut at the first stage to ``max(S, k)`` tokens,
  ``k`` = STA's count after the last stage (pruning rate ``q = 1 - k / N``).
- ``repshift``: Representation Shift (:mod:`sta.core.repshift`): the tokens the stage
  block changed most.
- ``vidtldr``: vid-TLDR (:mod:`sta.core.vidtldr`): saliency-weighted bipartite merging
  over the clip, ``G * r`` merges per stage, from the stage block's attention map.
- ``oracle``: the tokens with the highest GradNorm of the unpruned model's predicted
  class, given by the caller: an upper bound for analysis, not an inference method.

Exact ties are broken by original position, lowest first, in every method (issue #19).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from sta.core.evs import evs_live_dissimilarity
from sta.core.prune import normalize_keys, sta_keep_indices
from sta.core.reduction import Method, Needs, Reducer, ReductionState, StageInputs
from sta.core.repshift import repshift_scores
from sta.core.rlt import rlt_change_scores, rlt_keep_mask
from sta.core.schedule import PruneStage
from sta.core.select import gather_tokens, keep_top, keep_top_per_group, rank
from sta.core.vidtldr import vidtldr_saliency, weighted_merge
from sta.errors import InvalidInput

__all__ = ["METHODS", "RANDOM_SEED", "Method", "Needs", "ReductionState", "StageInputs", "check_method",
           "check_method_use", "method_refusal"]

RANDOM_SEED = 0
USES = ("export", "predict", "bench")  # what method_refusal knows


def _drop(inp: StageInputs) -> int:
    """Tokens a stage removes: ``r`` per group."""
    return inp.stage.num_groups * inp.stage.r


def _keep(inp: StageInputs, state: ReductionState, idx: Tensor) -> Tensor:
    state.keep(idx)
    return gather_tokens(inp.x, idx)


# --------------------------------------------------------------------------------- per-group selections


def sta_indices(inp: StageInputs, state: ReductionState, semantic: bool = True) -> Tensor:
    # Score in float32 whatever the model runs in: a bf16 L1 norm would blur the ranking.
    s = inp.stage
    return sta_keep_indices(inp.x.float(), inp.keys.float(), s.num_groups, s.r, s.reverse, semantic=semantic,
                            positions=state.positions)


def norm_indices(inp: StageInputs, state: ReductionState) -> Tensor:
    """Per group the ``n - r`` largest-L1 tokens, in sequence order."""
    return keep_top_per_group(inp.x.float().abs().sum(-1), inp.stage.num_groups, inp.stage.r, state.positions)


def random_indices(inp: StageInputs, state: ReductionState) -> Tensor:
    """Per group a uniformly random ``n - r`` tokens, seeded by stage, shared by every clip."""
    B, L, _ = inp.x.shape
    G, r = inp.stage.num_groups, inp.stage.r
    keep = _random_pattern(RANDOM_SEED, inp.stage.block, G, L // G, r).to(inp.x.device)
    return keep.expand(B, -1)


@functools.lru_cache(maxsize=256)
def _random_pattern(seed: int, block: int, num_groups: int, n: int, r: int) -> Tensor:
    """``random``'s kept indices for one stage. Cached: an exported graph (traced after an eager run) holds it as a
    constant instead of a generator, which ONNX cannot express."""
    with torch.inference_mode(False), torch.no_grad():  # a normal tensor, whichever mode the first call ran in
        gen = torch.Generator().manual_seed(seed * 1000 + block)
        keep = torch.rand(num_groups, n, generator=gen).argsort(dim=-1, stable=True)[:, : n - r].sort(dim=-1).values
        return (keep + torch.arange(num_groups)[:, None] * n).flatten()


def tome_merge(inp: StageInputs, state: ReductionState) -> Tensor:
    """ToMe bipartite soft matching inside each group: ``B x L x C`` -> ``B x G*(n-r) x C``."""
    x = inp.x
    B, L, C = x.shape
    G, r = inp.stage.num_groups, inp.stage.r
    n = L // G
    if state.sizes is None:
        state.sizes = x.new_ones(B, L, 1, dtype=torch.float32)

    def split(t: Tensor) -> tuple[Tensor, Tensor]:
        t = t.reshape(B * G, n, -1)
        return t[:, ::2], t[:, 1::2]

    m = normalize_keys(inp.keys.float()).view(B * G, n, -1)
    a, b = m[:, ::2], m[:, 1::2]  # alternate tokens: a may merge into b
    best, match = (a @ b.transpose(-1, -2)).max(dim=-1)  # each a token's most similar b token
    pa, pb = split(state.positions[..., None])
    order = rank(best, descending=True, positions=pa[..., 0])
    merged, unmerged = order[:, :r], order[:, r:]  # the r most redundant a tokens merge
    dest = match.gather(1, merged)
    size_a, size_b = split(state.sizes)
    xa, xb = split(x.float() * state.sizes)  # size-weighted sums, averaged after merging
    xb = xb.scatter_add(1, dest[..., None].expand(-1, -1, C), gather_tokens(xa, merged))
    size_b = size_b.scatter_add(1, dest[..., None], gather_tokens(size_a, merged))
    out = torch.cat([gather_tokens(xa, unmerged), xb], dim=1)  # per group: kept a tokens, then every b token
    sizes = torch.cat([gather_tokens(size_a, unmerged), size_b], dim=1)
    # a merged group is shown at its destination token's position
    state.positions = torch.cat([gather_tokens(pa, unmerged), pb], dim=1).view(B, -1)
    state.sizes = sizes.view(B, -1, 1)
    return (out / sizes).view(B, -1, C).to(x.dtype)


# ------------------------------------------------------------------------------ whole-clip selections


def _rlt_scores(state: ReductionState) -> Tensor:
    """The clip's per-position pixel change, computed once per forward."""
    if state.scores is None:
        grid = state.grid
        state.scores = rlt_change_scores(state.clips, grid.tubelet_size, grid.patch_size)
    return state.scores


def rlt_entry(x: Tensor, state: ReductionState, stages: tuple[PruneStage, ...]) -> Tensor:
    """Before block 0: the ``stages[0].tokens_out`` most changing tokens (when stage 0 prunes after block 0)."""
    if stages[0].block != 0:
        return x
    idx = keep_top(_rlt_scores(state), stages[0].tokens_out)  # slice 0 (+inf) first
    state.keep(idx)
    return gather_tokens(x, idx)


def rlt_reduce(inp: StageInputs, state: ReductionState) -> Tensor:
    if inp.stage.block == 0:  # done before the block
        return inp.x
    _rlt_scores(state)
    return _keep(inp, state, keep_top(state.live_scores(), inp.x.shape[1] - _drop(inp), state.positions))


def rlt_threshold_entry(x: Tensor, state: ReductionState, stages: tuple[PruneStage, ...]) -> Tensor:
    """Before block 0: every token that changes by more than the threshold; one clip at a time."""
    if x.shape[0] != 1:
        raise InvalidInput("rlt-threshold keeps a different number of tokens in every clip: run one clip at a "
                           "time (our models and HFVideoClassifier do it for you)")
    if state.clips.is_meta:  # no pixels to test (FLOPs counting): every token moves, the upper bound of its cost
        return x
    grid = state.grid
    mask = rlt_keep_mask(state.clips, grid.tubelet_size, grid.patch_size)
    idx = mask[0].nonzero()[:, 0][None]
    state.keep(idx)
    return gather_tokens(x, idx)


def unchanged(inp: StageInputs, state: ReductionState) -> Tensor:
    return inp.x


def evs_reduce(inp: StageInputs, state: ReductionState, keep: int | None = None) -> Tensor:
    grid = state.grid
    scores = evs_live_dissimilarity(inp.x.float(), state.positions, grid.num_slices, grid.tokens_per_slice)
    keep = inp.x.shape[1] - _drop(inp) if keep is None else keep
    return _keep(inp, state, keep_top(scores, keep, state.positions))


def evs_q_reduce(inp: StageInputs, state: ReductionState) -> Tensor:
    """One cut, at the first stage, to ``max(S, tokens after the last stage)``."""
    if inp.stage != inp.stages[0]:
        return inp.x
    keep = min(inp.x.shape[1], max(state.grid.tokens_per_slice, inp.stages[-1].tokens_out))
    return evs_reduce(inp, state, keep)


def repshift_reduce(inp: StageInputs, state: ReductionState) -> Tensor:
    scores = repshift_scores(inp.mlp_input, inp.x)
    return _keep(inp, state, keep_top(scores, inp.x.shape[1] - _drop(inp), state.positions))


def vidtldr_reduce(inp: StageInputs, state: ReductionState) -> Tensor:
    """vid-TLDR over the whole clip: ``G * r`` merges, so the stage leaves STA's count."""
    x = inp.x
    sizes = state.sizes if state.sizes is not None else x.new_ones(*x.shape[:2], 1, dtype=torch.float32)
    saliency = vidtldr_saliency(inp.attention.float())
    out, state.sizes, state.positions = weighted_merge(x.float(), x, saliency, sizes, _drop(inp), state.positions)
    return out


def oracle_reduce(inp: StageInputs, state: ReductionState) -> Tensor:
    return _keep(inp, state, keep_top(state.live_scores(), inp.x.shape[1] - _drop(inp), state.positions))


# ---------------------------------------------------------------------------------------- registry


def _at_most_half(name: str):
    def check(stages: tuple[PruneStage, ...]) -> None:
        for stage in stages:
            n = stage.tokens_in // stage.num_groups
            if stage.r > n // 2:
                raise InvalidInput(f"{name} merges at most half of each group: r={stage.r} after block "
                                   f"{stage.block} exceeds {n // 2} (groups of {n} tokens)")

    return check


def _select(indices_fn) -> Reducer:
    """A reducer that keeps tokens by index (drops, never merges)."""
    return lambda inp, state: _keep(inp, state, indices_fn(inp, state))


METHODS: dict[str, Method] = {
    "sta": Method(_select(sta_indices), "Semantic-aware Temporal Accumulation (Ding et al., ICCV 2023)", Needs.KEYS),
    "temporal": Method(_select(lambda inp, state: sta_indices(inp, state, semantic=False)),
                       "STA's temporal accumulation without its semantic term", Needs.KEYS),
    "norm": Method(_select(norm_indices), "largest L1 norm per group (STA's semantic term alone)"),
    "random": Method(_select(random_indices), "a random set per group, the same for every clip"),
    "tome": Method(tome_merge, "ToMe bipartite merging inside each group (Bolya et al., ICLR 2023)", Needs.KEYS,
                   check=_at_most_half("tome")),
    "rlt": Method(rlt_reduce, "Run-Length Tokenization's pixel change at a fixed budget (Choudhury et al., "
                  "NeurIPS 2024)", Needs.CLIPS | Needs.GRID, entry=rlt_entry),
    "rlt-threshold": Method(unchanged, "RLT as its authors run it: static tokens dropped before block 0",
                            Needs.CLIPS | Needs.GRID, entry=rlt_threshold_entry, equal_budget=False,
                            variable_count=True),
    "evs": Method(evs_reduce, "Efficient Video Sampling's dissimilarity to the previous slice (NVIDIA, 2025)",
                  Needs.GRID),
    "evs-q": Method(evs_q_reduce, "EVS's own schedule: one cut at the first stage", Needs.GRID, equal_budget=False),
    "repshift": Method(repshift_reduce, "Representation Shift: what the block changed most (Choi et al., ICCV 2025)",
                       Needs.MLP_INPUT),
    "vidtldr": Method(vidtldr_reduce, "vid-TLDR saliency-weighted merging (Choi et al., CVPR 2024)",
                      Needs.ATTENTION, check=_at_most_half("vidtldr")),
    "oracle": Method(oracle_reduce, "the unpruned model's highest-GradNorm tokens (an upper bound)", Needs.SCORES,
                     inference=False),
}


def check_method(method: str, stages: tuple[PruneStage, ...]) -> None:
    """Raise ``ValueError`` for an unknown method or an r the method cannot reach."""
    if method not in METHODS:
        raise InvalidInput(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    check = METHODS[method].check
    if check is not None:
        check(stages)


def method_refusal(method: str, use: str) -> str | None:
    """Why ``method`` cannot serve ``use`` (``"export"``, ``"predict"`` or ``"bench"``), or None when it can."""
    if use not in USES:
        raise InvalidInput(f"use must be one of {', '.join(USES)}, got {use!r}")
    spec = METHODS[method]
    if not spec.inference:
        return (f"{method} keeps the tokens with the highest GradNorm of the unpruned model, which takes a backward "
                f"pass on every clip: it is an upper bound for `sta compare` and `sta gradnorm`, not a method to "
                f"{use} with")
    if use == "export" and spec.variable_count:
        return (f"{method} keeps a different number of tokens in every clip, which no static graph can hold; export "
                f"`rlt` (the same test at a fixed token budget) instead")
    return None


def check_method_use(method: str, use: str) -> None:
    """``ValueError`` (``InvalidInput``) with the reason when ``method`` cannot serve ``use``."""
    reason = method_refusal(method, use)
    if reason is not None:
        raise InvalidInput(reason, param="method")
