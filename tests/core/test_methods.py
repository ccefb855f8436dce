"""The comparison methods: same token counts as STA, each doing what its name says."""

import pytest
import torch

from sta.core.methods import METHODS, ReductionState, norm_indices, random_indices, tome_merge
from sta.core.prune import sta_keep_indices
from sta.core.schedule import PruneStage
from tests.helpers import tiny_clips, tiny_model

STAGE = PruneStage(block=0, num_groups=2, r=2, reverse=False, tokens_in=12, tokens_out=8)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_keeps_stas_token_counts_within_groups(method):
    model = tiny_model(r=(6, 5, 4), method=method)
    with torch.no_grad():
        logits, trace = model(tiny_clips(2), return_trace=True)
    assert [p.shape[1] for p in trace.positions] == [8 * 10, 4 * 15, 2 * 26]
    assert torch.isfinite(logits).all()
    for b in range(2):  # after stage 0 slice t's group holds only slice t's tokens
        assert torch.equal(trace.positions[0][b] // 16, torch.arange(8).repeat_interleave(10))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_methods_cost_the_same_flops_up_to_scoring(method):
    from sta import count_flops

    sta_flops = count_flops(tiny_model(r=4))
    assert count_flops(tiny_model(r=4, method=method)) == pytest.approx(sta_flops, rel=0.02)


def test_norm_keeps_largest_l1_in_sequence_order():
    x = torch.tensor([[[1.0], [5.0], [-3.0], [0.5], [2.0], [-9.0], [4.0], [0.1], [7.0], [1.0], [1.5], [-2.0]]])
    assert norm_indices(x, x, PruneStage(0, 2, 2, False, 12, 8)).tolist() == [[1, 2, 4, 5, 6, 8, 10, 11]]


def test_random_is_fixed_per_stage_and_the_same_for_every_clip():
    x = torch.randn(3, 12, 4)
    idx = random_indices(x, x, STAGE)
    assert torch.equal(idx, random_indices(torch.randn(5, 12, 4), x, STAGE)[:3])
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
    state = ReductionState(positions=torch.arange(4)[None], sizes=torch.tensor([[[1.0], [1.0], [3.0], [1.0]]]))
    out = tome_merge(x, keys, PruneStage(0, 1, 1, False, 4, 3), state)
    assert out[0, :, 0].tolist() == pytest.approx([1.0, 2.0, (3 * 10 + 20) / 4])
    assert state.sizes[0, :, 0].tolist() == [1.0, 1.0, 4.0]
    assert state.positions.tolist() == [[0, 1, 3]]


def test_tome_cannot_merge_more_than_half_a_group():
    with pytest.raises(ValueError, match="tome merges at most half"):
        tiny_model(r=9, method="tome")
    model = tiny_model(r=9)
    with pytest.raises(ValueError):
        model.method = "tome"
    with pytest.raises(ValueError, match="unknown method"):
        model.method = "magic"
