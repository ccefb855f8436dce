"""Representation Shift (sta.core.repshift) on hand-made shifts, and against the method re-stated here."""

import torch

from sta.core.methods import METHODS, ReductionState, StageInputs
from sta.core.repshift import repshift_keep_indices, repshift_scores
from sta.core.schedule import PruneStage


def paper_scores(layer_input: torch.Tensor, layer_output: torch.Tensor) -> torch.Tensor:
    """A token's shift, as the paper defines it: the Euclidean distance between what the layer gave and took."""
    B, L, _ = layer_input.shape
    return torch.tensor([[float(((layer_output[b, i].double() - layer_input[b, i].double()) ** 2).sum().sqrt())
                          for i in range(L)] for b in range(B)])


def test_hand_made_shifts():
    x_in = torch.zeros(1, 5, 2)
    x_out = torch.tensor([[[3.0, 4.0], [0.0, 1.0], [6.0, 8.0], [0.0, 0.0], [1.0, 0.0]]])
    assert repshift_scores(x_in, x_out).tolist() == [[5.0, 1.0, 10.0, 0.0, 1.0]]
    assert repshift_keep_indices(x_in, x_out, 2).tolist() == [[0, 2]]  # the two largest, in sequence order
    assert repshift_keep_indices(x_in, x_out, 3).tolist() == [[0, 1, 2]]  # 1.0 ties: the lower position


def test_an_unchanged_token_is_dropped_whatever_its_size():
    big = torch.full((1, 3, 4), 100.0)
    out = big.clone()
    out[0, 1] += 0.5
    assert repshift_keep_indices(big, out, 1).tolist() == [[1]]  # not the token's norm: its change


def test_ties_follow_original_positions_not_the_sequence():
    x_in, x_out = torch.zeros(1, 4, 3), torch.ones(1, 4, 3)  # every token shifted alike
    assert repshift_keep_indices(x_in, x_out, 2, torch.tensor([[9, 2, 7, 4]])).tolist() == [[1, 3]]


def test_matches_the_method_restated():
    gen = torch.Generator().manual_seed(0)
    x_in, x_out = torch.randn(3, 40, 16, generator=gen), torch.randn(3, 40, 16, generator=gen)
    theirs = paper_scores(x_in, x_out)
    torch.testing.assert_close(repshift_scores(x_in, x_out).double(), theirs.double())
    expected = theirs.argsort(dim=1, descending=True)[:, :25].sort(dim=1).values
    assert torch.equal(repshift_keep_indices(x_in, x_out, 25), expected)


def test_the_method_keeps_stas_count_over_the_clip():
    gen = torch.Generator().manual_seed(1)
    x_in, x_out = torch.randn(2, 24, 8, generator=gen), torch.randn(2, 24, 8, generator=gen)
    stage = PruneStage(block=3, num_groups=4, r=2, reverse=False, tokens_in=24, tokens_out=16)
    state = ReductionState(torch.arange(24).expand(2, -1))
    out = METHODS["repshift"].reduce(StageInputs(x_out, stage, (stage,), mlp_input=x_in), state)
    assert out.shape == (2, 16, 8)
    assert torch.equal(state.positions, repshift_keep_indices(x_in, x_out, 16))
    assert torch.equal(out, x_out.gather(1, state.positions[..., None].expand(-1, -1, 8)))
