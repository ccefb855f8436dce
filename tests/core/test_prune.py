"""The pure STA functions: hand-made cases and invariants, no model involved."""

import torch

from sta.core.prune import gather_tokens, reorder_first_group, semantic_scores, sta_keep_indices


def unit(rows):
    t = torch.tensor(rows, dtype=torch.float32)
    return t / t.norm(dim=-1, keepdim=True)


def test_semantic_scores_min_max_per_group_and_flat_group_is_zero():
    # L1 norms: 2 3 2 | 10 10 10
    x = torch.tensor([[[1.0, -1.0], [3.0, 0.0], [0.0, 2.0], [5.0, 5.0], [5.0, -5.0], [-5.0, 5.0]]])
    s = semantic_scores(x, num_groups=2)
    assert torch.allclose(s[0, 0], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(s[0, 1], torch.zeros(3))  # zero range: no NaN


def test_first_group_keeps_odd_tokens_then_least_redundant_evens():
    # positions 0..5; evens 0, 2, 4; odds 1, 3, 5. Token 4 duplicates 1, token 0 is close to 3, token 2 is unique.
    m = unit([[1, 0.2, 0], [1, 0, 0], [0, 0, 1], [1, 0.1, 0], [1, 0, 0.001], [0, 1, 0]])[None]
    order = reorder_first_group(m)
    assert order.tolist() == [[1, 3, 5, 2, 0, 4]]


def test_keep_indices_are_group_ordered_and_unique():
    gen = torch.Generator().manual_seed(0)
    B, G, n, C, K, r = 3, 4, 10, 6, 5, 3
    x, keys = torch.randn(B, G * n, C, generator=gen), torch.randn(B, G * n, K, generator=gen)
    for reverse in (False, True):
        idx = sta_keep_indices(x, keys, G, r, reverse)
        assert idx.shape == (B, G * (n - r))
        for b in range(B):
            groups = idx[b].view(G, n - r) // n
            assert torch.equal(groups, torch.arange(G)[:, None].expand(G, n - r))  # group order 0..G-1
            assert len(set(idx[b].tolist())) == G * (n - r)


def test_keep_indices_do_not_mix_clips():
    gen = torch.Generator().manual_seed(1)
    x, keys = torch.randn(4, 32, 8, generator=gen), torch.randn(4, 32, 4, generator=gen)
    together = sta_keep_indices(x, keys, 4, 2, reverse=True)
    alone = torch.cat([sta_keep_indices(x[i : i + 1], keys[i : i + 1], 4, 2, reverse=True) for i in range(4)])
    assert torch.equal(together, alone)


def test_r_zero_keeps_everything_in_order():
    x, keys = torch.randn(2, 12, 3), torch.randn(2, 12, 3)
    assert torch.equal(sta_keep_indices(x, keys, 3, 0), torch.arange(12).expand(2, 12))


def test_gather_tokens_rows():
    x = torch.arange(24.0).view(2, 4, 3)
    idx = torch.tensor([[3, 0], [1, 1]])
    assert torch.equal(gather_tokens(x, idx), torch.stack([x[0, [3, 0]], x[1, [1, 1]]]))
