"""Self-checks of tests/reference.py that do not need the `sta` package."""

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.reference import (  # noqa: E402
    reference_forward,
    reference_position_table,
    reference_prune_stage,
    reference_select_group,
)

D, DEPTH, HEADS, NUM_CLASSES = 32, 3, 2, 5
PATCH, TUBELET = 8, 2
FRAMES, SIZE = 16, 32  # -> T = 8, S = 16
T, S = FRAMES // TUBELET, (SIZE // PATCH) ** 2


def make_state_dict(seed=0, depth=DEPTH, dim=D, mlp_ratio=4, num_classes=NUM_CLASSES):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=0.1):
        return torch.randn(*shape, generator=g) * std

    sd = {
        "patch_embed.proj.weight": rnd(dim, 3, TUBELET, PATCH, PATCH, std=0.05),
        "patch_embed.proj.bias": rnd(dim),
        "fc_norm.weight": 1 + rnd(dim),
        "fc_norm.bias": rnd(dim),
        "head.weight": rnd(num_classes, dim),
        "head.bias": rnd(num_classes),
    }
    hidden = mlp_ratio * dim
    for i in range(depth):
        p = f"blocks.{i}."
        sd[p + "norm1.weight"] = 1 + rnd(dim)
        sd[p + "norm1.bias"] = rnd(dim)
        sd[p + "attn.qkv.weight"] = rnd(3 * dim, dim, std=0.3)
        sd[p + "attn.q_bias"] = rnd(dim)
        sd[p + "attn.v_bias"] = rnd(dim)
        sd[p + "attn.proj.weight"] = rnd(dim, dim)
        sd[p + "attn.proj.bias"] = rnd(dim)
        sd[p + "norm2.weight"] = 1 + rnd(dim)
        sd[p + "norm2.bias"] = rnd(dim)
        sd[p + "mlp.fc1.weight"] = rnd(hidden, dim)
        sd[p + "mlp.fc1.bias"] = rnd(hidden)
        sd[p + "mlp.fc2.weight"] = rnd(dim, hidden)
        sd[p + "mlp.fc2.bias"] = rnd(dim)
    return sd


def make_clip(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, FRAMES, SIZE, SIZE, generator=g)


def run(sd, clip, r):
    return reference_forward(sd, clip, patch_size=PATCH, tubelet_size=TUBELET, num_heads=HEADS, r=r)


def torch_nn_forward(sd, clip):
    """Unpruned forward with library ops (conv3d, layer_norm, SDPA, gelu)."""
    x = F.conv3d(clip, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"],
                 stride=(TUBELET, PATCH, PATCH))
    x = x.flatten(2).transpose(1, 2)  # B x N x D
    x = x + reference_position_table(x.shape[1], D)[None]
    B, N, _ = x.shape
    hd = D // HEADS
    for i in range(DEPTH):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros(D), sd[p + "attn.v_bias"]])
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], bias).reshape(B, N, 3, HEADS, hd).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        o = o.transpose(1, 2).reshape(B, N, D)
        x = x + F.linear(o, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(x, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                     sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        x = x + h
    x = F.layer_norm(x.mean(1), (D,), sd["fc_norm.weight"], sd["fc_norm.bias"], eps=1e-6)
    return F.linear(x, sd["head.weight"], sd["head.bias"])


# ---------------------------------------------------------------------------


def test_position_table_values():
    tab = reference_position_table(10, 6)
    assert tab.dtype == torch.float32
    for pos in (0, 3, 9):
        for j in range(6):
            angle = pos / 10000 ** (2 * (j // 2) / 6)
            want = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert abs(tab[pos, j].item() - want) < 1e-6


def test_no_pruning_keeps_everything_and_matches_library_ops():
    sd, clip = make_state_dict(), make_clip()
    logits, positions = run(sd, clip, (0, 0, 0))
    assert logits.shape == (2, NUM_CLASSES)
    assert logits.dtype == torch.float32
    for b in range(2):
        for k in range(3):
            assert positions[b][k] == list(range(T * S))
    torch.testing.assert_close(logits, torch_nn_forward(sd, clip), rtol=1e-4, atol=1e-5)


def test_wrapped_state_dict():
    sd, clip = make_state_dict(), make_clip(batch=1)
    a, pa = run(sd, clip, (2, 2, 2))
    b, pb = run({"module": sd}, clip, (2, 2, 2))
    assert torch.equal(a, b) and pa == pb


@pytest.mark.parametrize("r", [(4, 4, 4), (1, 3, 5), (0, 4, 0), (4, 0, 2)])
def test_token_counts_and_positions(r):
    sd, clip = make_state_dict(), make_clip()
    logits, positions = run(sd, clip, r)
    assert torch.isfinite(logits).all()
    n0 = T * (S - r[0])
    n1 = (T // 2) * (2 * (S - r[0]) - r[1])
    n2 = (T // 4) * (2 * (2 * (S - r[0]) - r[1]) - r[2])
    for b in range(2):
        p0, p1, p2 = positions[b]
        assert [len(p0), len(p1), len(p2)] == [n0, n1, n2]
        for p in (p0, p1, p2):
            assert len(set(p)) == len(p)
        assert set(p1) <= set(p0) and set(p2) <= set(p1)
        # Stage 0 groups are whole temporal slices: group g keeps S - r tokens of slice g.
        n = S - r[0]
        for g in range(T):
            assert all(pos // S == g for pos in p0[g * n:(g + 1) * n])
        # A stage with r == 0 changes nothing.
        if r[1] == 0:
            assert p1 == p0
        if r[2] == 0:
            assert p2 == p1


def test_doc_example_counts():
    """The reference, run at ViT-B's real layout (T = 8, S = 196, r = 64), keeps the counts docs/algorithm.md states."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "algorithm.md").read_text()
    stated = [int(v) for v in re.findall(r"^\| [012] \| `[^`]+` \| (\d+) \|$", doc, flags=re.M)]
    assert stated == [1056, 800, 672]
    g = torch.Generator().manual_seed(0)
    length, counts = 8 * 196, []
    for k in range(3):
        m = F.normalize(torch.randn(length, 16, generator=g), dim=-1)
        x = torch.randn(length, 32, generator=g)
        length = len(reference_prune_stage(m, x, 64, num_groups=8 // 2**k, backward=k == 1))
        counts.append(length)
    assert counts == stated


def test_batch_independence():
    sd, clip = make_state_dict(), make_clip(batch=3)
    logits, positions = run(sd, clip, (3, 3, 3))
    for b in range(3):
        lb, pb = run(sd, clip[b:b + 1], (3, 3, 3))
        assert torch.equal(lb[0], logits[b])
        assert pb[0] == positions[b]


# ---------------------------------------------------------------------------
# hand-made selection cases
# ---------------------------------------------------------------------------


def unit(c):
    """Unit vector in 3-D with first coordinate c (second fills the norm)."""
    return torch.tensor([c, math.sqrt(1 - c * c), 0.0])


def test_first_group_rule_by_hand():
    e1 = torch.tensor([1.0, 0.0, 0.0])
    # local indices: A (even) = 0, 2, 4; B (odd) = 1, 3, 5 all equal e1.
    # c_0 = 0.9, c_2 = 0.1, c_4 = 0.5.
    m = torch.stack([unit(0.9), e1, unit(0.1), e1, unit(0.5), e1])
    a = torch.arange(6, dtype=torch.float32)  # ignored for the first group
    kept, (carry_m, carry_w) = reference_select_group(m, a, r=2)
    # reordering: B in order, then A by ascending c -> [1, 3, 5, 2, 4, 0]
    assert kept == [1, 3, 5, 2]
    assert carry_w is None
    assert torch.equal(carry_m, m[[1, 3, 5, 2, 4, 0]])
    # r larger than |A|: B is cut too.
    kept, _ = reference_select_group(m, a, r=4)
    assert kept == [1, 3]


def test_later_group_rule_by_hand():
    e1 = torch.tensor([1.0, 0.0, 0.0])
    e2 = torch.tensor([0.0, 1.0, 0.0])
    prev_m = torch.stack([e1, e1])
    m = torch.stack([e1, e1, e2, e2])
    a = torch.tensor([0.0, 2.0, 0.0, 1.0])  # s = [0, 1, 0, 0.5]
    e = math.e
    # W column = [e, e, 1, 1] / (2e + 2); two previous tokens of weight 1.
    rho = torch.tensor([2 * e, 2 * e, 2, 2]) / (2 * e + 2)
    # sigma = rho * (1 - s) = [2e, 0, 2, 1] / (2e + 2) -> ascending 1, 3, 2, 0
    kept, (carry_m, carry_w) = reference_select_group(m, a, r=1, prev=(prev_m, None))
    assert kept == [1, 3, 2]
    torch.testing.assert_close(carry_w, rho[[1, 3, 2]] / rho[[1, 3, 2]].sum())
    assert torch.equal(carry_m, m[[1, 3, 2]])
    # Weighted previous tokens: all weight on a previous e2 token flips the picture.
    prev_m2 = torch.stack([e1, e2])
    kept, _ = reference_select_group(m, a, r=1, prev=(prev_m2, torch.tensor([0.0, 1.0])))
    # rho = W[:, 1] = [1, 1, e, e] / (2 + 2e); sigma ∝ [1, 0, e, e/2] -> 1, 0, 3, 2
    assert kept == [1, 0, 3]


def test_equal_norms_give_zero_semantic():
    e1 = torch.tensor([1.0, 0.0, 0.0])
    e2 = torch.tensor([0.0, 1.0, 0.0])
    m = torch.stack([e1, e2, e1, e2])
    a = torch.full((4,), 3.0)
    kept, (_, w) = reference_select_group(m, a, r=2, prev=(torch.stack([e1]), None))
    # s = 0; rho = softmax([1, 0, 1, 0]) -> e2 tokens have the smaller sigma
    assert kept == [1, 3]
    torch.testing.assert_close(w, torch.tensor([0.5, 0.5]))


def test_stage_backward_visit_and_group_order():
    e1 = torch.tensor([1.0, 0.0, 0.0])
    e2 = torch.tensor([0.0, 1.0, 0.0])
    # Two groups of 4. Group 1 (tokens 4..7) is visited first when backward:
    # local 0, 1, 3 = e1, local 2 = e2 -> c_0 = 1, c_2 = 0 -> reorder [1, 3, 2, 0], drop local 0.
    # Group 0 (tokens 0..3): m = e1, e1, e2, e2, a = [0, 2, 0, 1] -> s = [0, 1, 0, .5].
    # Previous = whole reordered group 1 (three e1, one e2), weight 1 each:
    # rho ∝ [3e+1, 3e+1, 3+e, 3+e]; sigma ∝ [3e+1, 0, 3+e, (3+e)/2] -> order 1, 3, 2, 0.
    m = torch.stack([e1, e1, e2, e2, e1, e1, e2, e1])
    a = torch.tensor([0.0, 2.0, 0.0, 1.0, 5.0, 5.0, 5.0, 5.0])
    x = a[:, None]  # L1 norm of each token = a
    assert reference_prune_stage(m, x, r=1, num_groups=2, backward=True) == [1, 3, 2, 5, 7, 6]
    # Forward visit makes group 0 the seed instead: c_0 = c_2 = 1 (tie, stable) ->
    # reorder [1, 3, 0, 2], keep [1, 3, 0].
    fwd = reference_prune_stage(m, x, r=1, num_groups=2, backward=False)
    assert fwd[:3] == [1, 3, 0]
    assert reference_prune_stage(m, x, r=0, num_groups=2, backward=True) == list(range(8))
