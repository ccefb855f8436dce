"""Deterministic ranking (sta.core.select): exact ties go to the lowest original position, eager or exported."""

import pytest
import torch

from sta.core.select import keep_top, keep_top_per_group, rank, rank_by_counting


def test_ties_go_to_the_lowest_position_both_ways():
    scores = torch.tensor([[1.0, 3.0, 1.0, 3.0, 2.0]])
    assert rank(scores).tolist() == [[0, 2, 4, 1, 3]]
    assert rank(scores, descending=True).tolist() == [[1, 3, 4, 0, 2]]
    positions = torch.tensor([[40, 30, 20, 10, 0]])  # now the later tokens have the lower positions
    assert rank(scores, positions=positions).tolist() == [[2, 0, 4, 3, 1]]
    assert rank(scores, descending=True, positions=positions).tolist() == [[3, 1, 4, 2, 0]]


@pytest.mark.parametrize("descending", [False, True])
def test_counting_is_the_same_total_order(descending):
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (3, 2, 30), generator=gen).float()  # many exact ties
    positions = torch.stack([torch.randperm(100, generator=gen)[:30] for _ in range(6)]).view(3, 2, 30)
    for pos in (None, positions):
        assert torch.equal(rank_by_counting(scores, descending, pos), rank(scores, descending, pos))
    distinct = torch.randn(4, 50, generator=gen)
    assert torch.equal(rank_by_counting(distinct, descending), distinct.argsort(dim=-1, descending=descending))


def test_keep_top_returns_sequence_order():
    scores = torch.tensor([[0.5, 0.9, 0.1, 0.9, 0.3]])
    assert keep_top(scores, 3).tolist() == [[0, 1, 3]]
    assert keep_top(scores, 2, largest=False).tolist() == [[2, 4]]


def test_keep_top_per_group_offsets_the_groups():
    scores = torch.tensor([[5.0, 1.0, 5.0, 0.0, 2.0, 2.0]])  # two groups of 3, drop one each
    assert keep_top_per_group(scores, 2, 1).tolist() == [[0, 2, 4, 5]]
    assert keep_top_per_group(torch.ones(1, 6), 2, 2).tolist() == [[0, 3]]  # ties: the lowest position per group


def test_an_exported_graph_ranks_exact_ties_as_eager_code_does():
    """Under torch.export the ranking is counted, not sorted (ONNX has no stable sort): same order, no sort op."""

    class Ranker(torch.nn.Module):
        def forward(self, scores, positions):
            return rank(scores, descending=True, positions=positions)

    scores = torch.tensor([[2.0, 1.0, 2.0, 2.0, 0.0, 1.0]])
    positions = torch.tensor([[5, 0, 3, 1, 2, 4]])
    program = torch.export.export(Ranker(), (scores, positions))
    assert "sort.stable" not in str(program.graph)
    assert torch.equal(program.module()(scores, positions), Ranker()(scores, positions))
    assert Ranker()(scores, positions).tolist() == [[3, 2, 0, 1, 5, 4]]
