"""The methods behind one interface: STA's token counts, what each needs, exact ties, what each refuses."""

import pytest
import torch

from sta.core.methods import (
    METHODS,
    Needs,
    ReductionState,
    StageInputs,
    check_method_use,
    method_refusal,
    norm_indices,
    random_indices,
    tome_merge,
)
from sta.core.prune import sta_keep_indices
from sta.core.reduction import TokenGrid
from sta.core.schedule import PruneStage, build_stages, tokens_after_stages
from tests.core.clips import moving_patch_clips
from tests.helpers import tiny_clips, tiny_model

STAGE = PruneStage(block=0, num_groups=2, r=2, reverse=False, tokens_in=12, tokens_out=8)
GRID = TokenGrid(num_slices=8, tokens_per_slice=16, tubelet_size=2, patch_size=8)
PER_GROUP = ("sta", "temporal", "norm", "random", "tome")  # choose r tokens inside every group


def state_for(B: int, L: int, **fields) -> ReductionState:
    return ReductionState(torch.arange(L).expand(B, -1), **fields)


def run(method: str, r=(6, 5, 4), batch: int = 2, clips=None):
    """(logits, trace) of a tiny model with ``method``; oracle gets random scores."""
    model = tiny_model(r=r, method=method)
    clips = tiny_clips(batch) if clips is None else clips
    scores = torch.rand(clips.shape[0], 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(clips, return_trace=True, token_scores=scores)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_keeps_stas_token_counts_unless_it_says_otherwise(method):
    logits, trace = run(method, clips=moving_patch_clips(2, seed=2))
    counts = [p.shape[1] for p in trace.positions]
    assert torch.isfinite(logits).all()
    if METHODS[method].equal_budget:
        assert counts == list(tokens_after_stages(8, 16, (6, 5, 4)))
    if method in PER_GROUP:  # after stage 0 slice t's group holds only slice t's tokens
        for b in range(2):
            assert torch.equal(trace.positions[0][b] // 16, torch.arange(8).repeat_interleave(10))
    for b in range(2):
        for before, after in zip(trace.positions, trace.positions[1:]):
            alive = set(after[b].tolist()) - {-1}
            assert len(alive) == (after[b] >= 0).sum() and alive <= set(before[b].tolist())


def test_the_methods_that_leave_stas_counts_say_how():
    _, trace = run("evs-q", r=(6, 5, 4))  # one cut at the first stage, to STA's last count (at least a slice)
    assert [p.shape[1] for p in trace.positions] == [52, 52, 52]
    _, trace = run("rlt-threshold", batch=2, clips=moving_patch_clips(2, seed=0))
    # slice 0, and the two cells the square leaves and enters at every later slice
    assert [int((p[0] >= 0).sum()) for p in trace.positions] == [16 + 2 * 7] * 3


def test_registry_declares_needs_and_what_each_allows():
    assert list(METHODS)[:5] == ["sta", "temporal", "norm", "random", "tome"]
    assert {"rlt", "rlt-threshold", "evs", "evs-q", "repshift", "vidtldr", "oracle"} <= set(METHODS)
    assert Needs.KEYS in METHODS["sta"].needs and METHODS["norm"].needs == Needs.NOTHING
    assert Needs.ATTENTION in METHODS["vidtldr"].needs and Needs.MLP_INPUT in METHODS["repshift"].needs
    assert Needs.CLIPS in METHODS["rlt"].needs and Needs.SCORES in METHODS["oracle"].needs
    assert [m for m in METHODS if not METHODS[m].exportable] == ["rlt-threshold", "oracle"]
    assert [m for m in METHODS if not METHODS[m].equal_budget] == ["rlt-threshold", "evs-q"]
    assert all(METHODS[m].summary for m in METHODS)


@pytest.mark.parametrize("use", ["export", "predict", "bench"])
def test_oracle_is_refused_outside_analysis_and_rlt_threshold_by_export(use):
    assert "upper bound" in method_refusal("oracle", use)
    with pytest.raises(ValueError, match="backward pass"):
        check_method_use("oracle", use)
    assert (method_refusal("rlt-threshold", use) is None) == (use != "export")
    for method in METHODS:
        if method not in ("oracle", "rlt-threshold"):
            assert method_refusal(method, use) is None
            check_method_use(method, use)
    with pytest.raises(ValueError, match="use must be"):
        method_refusal("sta", "train")


def test_oracle_needs_its_scores_and_checks_them():
    model = tiny_model(r=4, method="oracle")
    with pytest.raises(ValueError, match="token_scores"):
        model(tiny_clips(2))
    with pytest.raises(ValueError, match="B x N = 2 x 128"):
        model(tiny_clips(2), token_scores=torch.rand(2, 100))
    model.r = 0  # unpruned: nothing to score
    assert model(tiny_clips(2)).shape == (2, 5)


def test_oracle_keeps_the_highest_scores_of_the_clip():
    scores = torch.rand(2, 128, generator=torch.Generator().manual_seed(3))
    _, trace = tiny_model(r=(6, 5, 4), method="oracle")(tiny_clips(2), return_trace=True, token_scores=scores)
    for k, count in enumerate(tokens_after_stages(8, 16, (6, 5, 4))):
        for b in range(2):
            best = scores[b].argsort(descending=True)[:count].sort().values
            assert torch.equal(trace.positions[k][b], best)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_exact_ties_keep_the_lowest_positions(method):
    """A sequence whose tokens are all the same: every score ties, so every selection keeps the lowest positions
    (per group, or of the clip), whatever order the live tokens are in (issue #19)."""
    B, G, n, r = 2, 4, 8, 3
    L = G * n
    x = torch.ones(B, L, 6)
    stage = PruneStage(block=4, num_groups=G, r=r, reverse=False, tokens_in=L, tokens_out=G * (n - r))
    stages = (PruneStage(0, 8, 1, False, 64, 56), stage)
    shuffled = torch.stack([torch.randperm(64, generator=torch.Generator().manual_seed(b))[:L] for b in range(B)])
    for positions in (torch.arange(L).expand(B, -1), shuffled):
        state = ReductionState(positions.clone(), TokenGrid(8, 8, 2, 8), clips=torch.zeros(B, 3, 16, 64, 64),
                               scores=torch.zeros(B, 64))
        inp = StageInputs(x, stage, stages, keys=torch.ones(B, L, 4), mlp_input=torch.zeros(B, L, 6),
                          attention=torch.full((B, 2, L, L), 1 / L))
        if method == "rlt-threshold":
            continue  # acts before block 0 only (tested with RLT's mask)
        METHODS[method].reduce(inp, state)
        kept = state.positions
        if method == "random":
            continue  # not a ranking
        if method in ("sta", "temporal"):  # first visited group: odd tokens, then the evens in position order
            by_group = positions.view(B, G, n)
            assert torch.equal(kept.view(B, G, -1)[:, 0, : n // 2], by_group[:, 0, 1::2])
        elif method in PER_GROUP:  # norm; tome: the merged a tokens are the lowest-position ones of each group
            if method == "norm":
                lowest = positions.view(B, G, n).sort(-1).values[..., : n - r]
                assert torch.equal(kept.view(B, G, -1).sort(-1).values, lowest)
        elif method == "evs-q":
            assert kept.shape[1] == L  # not its first stage: nothing happens
        elif method != "vidtldr":  # whole-clip rankings: the clip's lowest positions (kept in sequence order)
            for b in range(B):
                live = positions[b].tolist()
                # EVS: a token with no live token before it at its spatial position ranks first (+inf)
                first = {p for p in live if method == "evs" and not any(q % 8 == p % 8 and q < p for q in live)}
                expected = sorted(sorted(live, key=lambda p: (p not in first, p))[: L - G * r])
                assert sorted(kept[b].tolist()) == expected, (method, b)


def test_tome_and_vidtldr_tie_breaks_follow_positions_not_sequence_order():
    """Reversing the live order of identical tokens must not change which positions merge."""
    B, L = 1, 8
    x, keys = torch.ones(B, L, 4), torch.ones(B, L, 4)
    stage = PruneStage(block=4, num_groups=1, r=2, reverse=False, tokens_in=L, tokens_out=L - 2)
    for method in ("tome", "vidtldr"):
        kept = []
        for positions in (torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7]]), torch.tensor([[6, 7, 4, 5, 2, 3, 0, 1]])):
            state = ReductionState(positions)
            inp = StageInputs(x, stage, (stage,), keys=keys, attention=torch.full((B, 1, L, L), 1 / L))
            METHODS[method].reduce(inp, state)
            kept.append(sorted(state.positions[0].tolist()))
        assert kept[0] == kept[1], method  # the a tokens at positions 0 and 2 (4 and 6 reversed) merge first


def test_norm_keeps_largest_l1_in_sequence_order():
    x = torch.tensor([[[1.0], [5.0], [-3.0], [0.5], [2.0], [-9.0], [4.0], [0.1], [7.0], [1.0], [1.5], [-2.0]]])
    inp = StageInputs(x, PruneStage(0, 2, 2, False, 12, 8), ())
    assert norm_indices(inp, state_for(1, 12)).tolist() == [[1, 2, 4, 5, 6, 8, 10, 11]]


def test_random_is_fixed_per_stage_and_the_same_for_every_clip():
    x = torch.randn(3, 12, 4)
    idx = random_indices(StageInputs(x, STAGE, ()), state_for(3, 12))
    assert torch.equal(idx, random_indices(StageInputs(torch.randn(5, 12, 4), STAGE, ()), state_for(5, 12))[:3])
    assert torch.equal(idx[0], idx[2])
    assert (idx[0, :4] < 6).all() and (idx[0, 4:] >= 6).all()


def test_temporal_is_sta_without_the_semantic_term():
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 32, 5, generator=gen)
    flat = torch.randint(0, 2, (2, 32, 6), generator=gen).float() * 2 - 1  # every token has L1 norm 6: s = 0
    assert torch.equal(sta_keep_indices(flat, keys, 4, 3), sta_keep_indices(flat, keys, 4, 3, semantic=False))
    x = torch.randn(2, 32, 6, generator=gen)
    assert not torch.equal(sta_keep_indices(x, keys, 4, 3), sta_keep_indices(x, keys, 4, 3, semantic=False))


def test_tome_merges_the_most_similar_pair_by_size_weighted_mean():
    # one group of 4: a = tokens 0, 2; b = tokens 1, 3. Token 2 duplicates token 3's direction.
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [0.6, 0.8]]])
    x = torch.tensor([[[1.0], [2.0], [10.0], [20.0]]])
    state = ReductionState(torch.arange(4)[None], sizes=torch.tensor([[[1.0], [1.0], [3.0], [1.0]]]))
    out = tome_merge(StageInputs(x, PruneStage(0, 1, 1, False, 4, 3), (), keys=keys), state)
    assert out[0, :, 0].tolist() == pytest.approx([1.0, 2.0, (3 * 10 + 20) / 4])
    assert state.sizes[0, :, 0].tolist() == [1.0, 1.0, 4.0]
    assert state.positions.tolist() == [[0, 1, 3]]


@pytest.mark.parametrize("method", ["tome", "vidtldr"])
def test_merging_at_most_half_a_group(method):
    with pytest.raises(ValueError, match=f"{method} merges at most half"):
        tiny_model(r=9, method=method)
    model = tiny_model(r=9)
    with pytest.raises(ValueError):
        model.method = method
    with pytest.raises(ValueError, match="unknown method"):
        model.method = "magic"


def test_stages_without_stage_zero_still_run_every_method():
    """r = 0 at stage 0: RLT's first cut is then at stage 1, EVS-q's too."""
    for method in METHODS:
        if method == "rlt-threshold":
            continue
        _, trace = run(method, r=(0, 7, 3))
        counts = [p.shape[1] for p in trace.positions]
        expected = list(tokens_after_stages(8, 16, (0, 7, 3)))
        assert counts == (expected if METHODS[method].equal_budget else [128, expected[-1], expected[-1]]), method
    assert [s.block for s in build_stages(3, 8, 16, (0, 7, 3))] == [1, 2]
