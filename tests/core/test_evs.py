"""EVS (sta.core.evs) on tokens whose answer is known, and against the method re-stated here."""

import math

import pytest
import torch

from sta.core.evs import evs_dissimilarity, evs_keep_count, evs_keep_mask, evs_live_dissimilarity


def paper_mask(tokens: torch.Tensor, grid, q: float) -> torch.Tensor:
    """EVS as its paper states it, in float64 and plain Python: each token's dissimilarity is one minus its cosine
    with the token at the same place one slice earlier; the first slice goes first; the k = max(one slice,
    int(N (1 - q))) most dissimilar are kept, equal values in position order."""
    T, H, W = grid
    S = H * W
    B, N, _ = tokens.shape
    k = max(S, int(N * (1 - q)))
    mask = torch.zeros(B, N, dtype=torch.bool)
    for b in range(B):
        scores = []
        for i in range(N):
            if i < S:
                scores.append(math.inf)
                continue
            a, p = tokens[b, i].double(), tokens[b, i - S].double()
            scores.append(1 - float(a @ p) / (float(a.norm()) * float(p.norm())))
        for i in sorted(range(N), key=lambda i: (-scores[i], i))[:k]:
            mask[b, i] = True
    return mask


def test_keep_count():
    assert evs_keep_count(196, 8, 0.0) == 1568
    assert evs_keep_count(196, 8, 0.75) == 392
    assert evs_keep_count(196, 8, 0.99) == 196  # never less than one slice
    assert evs_keep_count(4, 3, 0.5) == 6


def test_identical_tokens_tie_and_keep_the_first_slice_then_the_lowest_positions():
    tokens = torch.ones(2, 4 * 6, 5)
    mask = evs_keep_mask(tokens, (4, 2, 3), q=0.5)  # keeps 12 of 24
    assert mask[:, :12].all() and not mask[:, 12:].any()
    d = evs_dissimilarity(tokens, (4, 2, 3))[:, 6:]
    assert (d == d[0, 0]).all() and d[0, 0] < 1e-6  # one value everywhere (1 - cos(x, x) rounds alike): a tie


def test_one_moving_token_on_a_still_background():
    T, S = 4, 9
    tokens = torch.zeros(1, T * S, 3)
    tokens[..., 0] = 1.0  # background direction
    for t in range(T):
        tokens[0, t * S + t, :] = torch.tensor([0.0, 1.0, 0.0])  # the moving token, one cell right per slice
    d = evs_dissimilarity(tokens, (T, 3, 3))[0]
    changed = {t * S + c for t in range(1, T) for c in (t - 1, t)}  # where it left and where it arrived
    assert {i for i in range(S, T * S) if d[i] > 0.5} == changed
    mask = evs_keep_mask(tokens, (T, 3, 3), q=0.5)[0]  # 18 kept: slice 0 (9), the 6 changes, then 3 lowest
    rest = sorted(set(range(S, T * S)) - changed)[:3]
    assert set(torch.nonzero(mask)[:, 0].tolist()) == set(range(S)) | changed | set(rest)


@pytest.mark.parametrize("q", [0.3, 0.6, 0.9])
def test_matches_the_method_restated(q):
    gen = torch.Generator().manual_seed(int(q * 10))
    tokens = torch.randn(3, 5 * 16, 8, generator=gen)
    assert torch.equal(evs_keep_mask(tokens, (5, 4, 4), q), paper_mask(tokens, (5, 4, 4), q))


def test_live_dissimilarity_is_evs_on_a_full_grid():
    tokens = torch.randn(2, 4 * 6, 5, generator=torch.Generator().manual_seed(1))
    full = evs_live_dissimilarity(tokens, torch.arange(24).expand(2, -1), 4, 6)
    assert torch.equal(full, evs_dissimilarity(tokens, (4, 2, 3)))


def test_live_dissimilarity_compares_with_the_latest_live_token_at_the_same_place():
    S = 2
    x = torch.randn(1, 8, 4, generator=torch.Generator().manual_seed(2))  # 4 slices of 2, as a full grid
    positions = torch.tensor([[0, 3, 4, 5, 7]])  # place 0: slices 0, 2; place 1: slices 1, 2, 3
    live = x[:, positions[0]]
    d = evs_live_dissimilarity(live, positions, 4, S)[0]
    cos = torch.nn.functional.cosine_similarity
    assert d[0].isinf() and d[1].isinf()  # position 0 (slice 0); position 3: no live token at place 1 before it
    assert d[2] == 1 - cos(x[0, 4], x[0, 0], dim=0)  # slice 2 place 0 against slice 0 (slice 1's was dropped)
    assert d[3] == 1 - cos(x[0, 5], x[0, 3], dim=0)
    assert d[4] == 1 - cos(x[0, 7], x[0, 5], dim=0)
