"""vid-TLDR (sta.core.vidtldr) on hand-made attention and tokens, and against the method re-stated here."""

import math

import pytest
import torch

from sta.core.vidtldr import merge_count, vidtldr_merge, vidtldr_saliency


def paper_saliency(attn: torch.Tensor) -> torch.Tensor:
    """vid-TLDR's saliency as the paper states it, per clip in float64: the negative entropy of each token's
    head-averaged attention row, min-max normalised; below the mean is background (0), the rest is centred on
    the mean and divided by its largest value."""
    out = []
    for a in attn.double().mean(1):
        e = torch.tensor([sum(float(p) * math.log(float(p)) for p in row if p > 0) for row in a], dtype=torch.float64)
        s = (e - e.min()) / (e.max() - e.min())
        centred = s - s.mean()
        out.append(torch.where(s < s.mean(), torch.zeros_like(s), centred / centred.max()))
    return torch.stack(out)[..., None]


def paper_merge(x: torch.Tensor, saliency: torch.Tensor, size: torch.Tensor, r: int):
    """Bipartite soft matching as the paper states it, token by token: A = even tokens, B = odd ones; the r A tokens
    whose best cosine to B is highest merge into that B token, weighted by saliency x size; the unmerged A tokens
    (in order) then every B token."""
    outs, sizes = [], []
    for xb, sb, zb in zip(x.double(), saliency.double(), size.double()):
        A, B = list(range(0, len(xb), 2)), list(range(1, len(xb), 2))
        unit = xb / xb.norm(dim=-1, keepdim=True)
        best = {a: max(B, key=lambda b: (float(unit[a] @ unit[b]), -b)) for a in A}
        value = {a: float(unit[a] @ unit[best[a]]) for a in A}
        merged = sorted(A, key=lambda a: (-value[a], a))[:r]
        total = {b: zb[b, 0] * xb[b] for b in B}
        weight = {b: zb[b, 0] for b in B}
        for a in merged:
            w = sb[a, 0] * zb[a, 0]
            total[best[a]] = total[best[a]] + w * xb[a]
            weight[best[a]] = weight[best[a]] + w
        keep = [a for a in A if a not in merged]
        outs.append(torch.stack([xb[a] for a in keep] + [total[b] / weight[b] for b in B]))
        sizes.append(torch.stack([zb[a, 0] for a in keep] + [weight[b] for b in B])[:, None])
    return torch.stack(outs), torch.stack(sizes)


def random_attention(B, H, N, gen):
    logits = torch.randn(B, H, N, N, generator=gen) * torch.rand(B, 1, N, 1, generator=gen) * 4
    return logits.softmax(dim=-1)


def test_saliency_of_hand_made_rows():
    uniform, peaked, half = [0.25] * 4, [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]
    attn = torch.tensor([[[peaked, uniform, half, uniform]]])
    # negentropy 0, -log 4, -log 2, -log 4 -> min-max 1, 0, .5, 0 -> mean .375 -> (s - .375) / .625 above it
    assert vidtldr_saliency(attn)[0, :, 0].tolist() == pytest.approx([1.0, 0.0, 0.2, 0.0])


def test_saliency_averages_heads_first_and_a_flat_map_is_all_background():
    heads = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]]])  # averaged: both rows uniform
    assert vidtldr_saliency(heads).tolist() == [[[0.0], [0.0]]]  # no contrast: 0, not NaN


def test_saliency_matches_the_paper_restated():
    gen = torch.Generator().manual_seed(0)
    attn = random_attention(2, 3, 12, gen)
    torch.testing.assert_close(vidtldr_saliency(attn).double(), paper_saliency(attn), rtol=1e-5, atol=1e-6)


def test_merge_of_a_hand_made_pair_weights_the_source_by_saliency():
    # a = tokens 0, 2; b = tokens 1, 3. Token 2 points like token 3: it merges there (r = 1).
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 10.0], [1.0, 2.0]]])
    attn = torch.tensor([[[[0.25] * 4, [0.25] * 4, [0.5, 0.5, 0.0, 0.0], [0.25] * 4]]])  # token 2: saliency 1
    attn[0, 0, 0] = torch.tensor([0.4, 0.3, 0.2, 0.1])
    s = paper_saliency(attn)[0, 2, 0].item()
    out, size = vidtldr_merge(x, attn, torch.tensor([[[1.0], [1.0], [2.0], [3.0]]]), 1)
    expected = (3 * torch.tensor([1.0, 2.0]) + s * 2 * torch.tensor([5.0, 10.0])) / (3 + 2 * s)
    torch.testing.assert_close(out[0], torch.stack([x[0, 0], x[0, 1], expected]))
    assert size[0, :, 0].tolist() == pytest.approx([1.0, 1.0, 3 + 2 * s])


@pytest.mark.parametrize("r", [1, 5, 10])
@pytest.mark.parametrize("with_size", [False, True])
def test_merge_matches_the_paper_restated(r, with_size):
    gen = torch.Generator().manual_seed(r)
    x = torch.randn(2, 21, 6, generator=gen)
    attn = random_attention(2, 2, 21, gen)
    size = torch.rand(2, 21, 1, generator=gen) * 3 + 1 if with_size else None
    out, new_size = vidtldr_merge(x, attn, size, r)
    ref, ref_size = paper_merge(x, paper_saliency(attn), size if with_size else torch.ones(2, 21, 1), r)
    assert out.shape == (2, 21 - r, 6)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(new_size.double(), ref_size, rtol=1e-5, atol=1e-6)


def test_how_many_merge():
    assert merge_count(20, 4) == 4
    assert merge_count(20, 0.25) == 5  # a fraction of the tokens
    assert merge_count(21, 15) == 10  # at most half
    x = torch.randn(1, 6, 3)
    out, size = vidtldr_merge(x, torch.full((1, 1, 6, 6), 1 / 6), None, 0)
    assert torch.equal(out, x) and torch.equal(size, torch.ones(1, 6, 1))


def test_identical_tokens_merge_the_lowest_positions_first():
    x = torch.ones(1, 8, 3)
    attn = torch.full((1, 1, 8, 8), 1 / 8)
    out, size = vidtldr_merge(x, attn, None, 2)  # a tokens 0 and 2 merge into b token 1 (their first best match)
    assert torch.equal(out, torch.ones(1, 6, 3))
    assert size[0, :, 0].tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # saliency 0 everywhere: they add no size
