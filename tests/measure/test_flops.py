"""FLOPs counter against the paper's table (sta-algorithm.md), on meta tensors."""

import pytest
import torch

from sta import create_model, flops_report
from sta.measure.flops import FlopCounter, count_flops
from tests.helpers import tiny_clips, tiny_model

# GFLOPs per view (1 multiply-add = 1 FLOP), copied from docs/algorithm.md (the authors' code, counted by fvcore).
PAPER = {
    "vit_small_patch16_224": [56.95, 49.15, 41.81, 35.03, 28.80, 23.14, 18.04],
    "vit_base_patch16_224": [180.49, 157.90, 136.32, 115.86, 96.53, 78.31, 61.21],
    "vit_large_patch16_224": [597.22, 520.39, 446.66, 376.10, 308.74, 244.56, 183.56],
}
RS = [0, 16, 32, 48, 64, 80, 96]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_reproduces_paper_table_within_one_percent(name):
    with torch.device("meta"):
        model = create_model(name)
    for r, expected in zip(RS, PAPER[name]):
        model.r = r
        assert flops_report(model).gflops == pytest.approx(expected, rel=0.01), f"{name} r={r}"


def test_huge_counts_without_memory():
    with torch.device("meta"):
        model = create_model("vit_huge_patch16_224", r=64)
    report = flops_report(model)
    assert report.tokens == (1056, 800, 672)
    assert 500 < report.gflops < 1200  # r=0 ViT-H is ~1.19 TFLOPs (VideoMAE paper); pruning roughly halves it


def test_fused_cpu_attention_counts_like_the_meta_forward():
    """On a real CPU forward attention runs as one fused kernel; it must still cost its two matmuls."""
    model = tiny_model(r=3)
    counter = FlopCounter()
    with torch.no_grad(), counter:
        model(tiny_clips(1))
    assert counter.total == count_flops(model)
    assert any("scaled_dot_product" in op for op in counter.by_op)  # the fused kernel really ran


def test_counts_by_hand_for_one_block():
    """Unpruned tiny model: conv + per block (qkv, 2 attention products, proj, fc1, fc2, 2 LN) + fc_norm + head."""
    model = tiny_model(r=0)
    N, D, k = 8 * 16, 32, 3 * 8 * 8 * 2
    block = N * D * 3 * D + 2 * N * N * D + N * D * D + 2 * N * D * 4 * D + 2 * 5 * N * D
    expected = N * D * k + 3 * block + 5 * D + D * 5
    assert count_flops(model) == expected


def test_counting_leaves_the_model_untouched():
    model = tiny_model(r=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize("method", ["sta", "tome"])
def test_budget_picks_the_smallest_r_that_meets_it(method):
    from sta.measure.flops import r_for_budget

    with torch.device("meta"):
        model = create_model("vit_small_patch16_224", method=method)
    base = count_flops(model)
    r = r_for_budget(model, flops_reduction=0.35)
    assert model.r == (0, 0, 0)  # left as it was
    model.r = r
    assert count_flops(model) <= 0.65 * base
    model.r = r - 1
    assert count_flops(model) > 0.65 * base


def test_keep_ratio_budget_and_impossible_budgets():
    from sta.measure.flops import r_for_budget

    with torch.device("meta"):
        model = create_model("vit_small_patch16_224")
    from sta import tokens_after_stages

    r = r_for_budget(model, keep_ratio=0.5)
    assert tokens_after_stages(8, 196, r)[-1] <= 0.5 * 1568 < tokens_after_stages(8, 196, r - 1)[-1]
    with pytest.raises(ValueError):
        r_for_budget(model, flops_reduction=1.5)
    with pytest.raises(ValueError):
        r_for_budget(model, keep_ratio=0.0001)  # even the largest r keeps more


# --------------------------------------------------------------------- each method's own work, at one r

R3 = (6, 5, 4)  # tiny model (T = 8, S = 16): groups of 16, 20, 30 tokens; 128 -> 80 -> 60 -> 52


def tiny_block(N: int, D: int = 32) -> int:
    """One block of the tiny model on N tokens (see test_counts_by_hand_for_one_block)."""
    return N * D * 3 * D + 2 * N * N * D + N * D * D + 2 * N * D * 4 * D + 2 * 5 * N * D


def method_flops(method: str) -> int:
    return count_flops(tiny_model(r=R3, method=method))


def test_methods_without_scoring_products_cost_exactly_the_same():
    """norm, random, repshift (a norm of a difference) and oracle (its GradNorm backward is analysis, not
    inference: only the forward counts) multiply-add nothing of their own."""
    assert len({method_flops(m) for m in ("norm", "random", "repshift", "oracle")}) == 1


def test_merging_and_matching_are_counted():
    norm = method_flops("norm")
    K, C = 16, 32  # one head's width (STA's and ToMe's keys), the model's width (vid-TLDR matches hidden states)
    groups = [(8, 16), (4, 20), (2, 30)]  # (G, n) at each stage
    tome = sum(G * (n // 2) * (n - n // 2) * K for G, n in groups)  # a @ b^T inside every group
    vidtldr = sum((G * n // 2) * (G * n - G * n // 2) * C for G, n in groups)  # over the clip; its attention map
    assert method_flops("tome") - norm == tome  # replaces the fused kernel at the same two products
    assert method_flops("vidtldr") - norm == vidtldr
    assert method_flops("sta") > norm and method_flops("temporal") == method_flops("sta")


def test_evs_counts_its_cosines_and_rlt_its_smaller_first_block():
    norm = method_flops("norm")
    assert method_flops("evs") - norm == 3 * 128 * 32  # one cosine per grid token and channel, at each stage
    report = flops_report(tiny_model(r=R3, method="evs-q"))  # one cut after block 0, to the last count
    assert report.tokens == (52, 52, 52)
    assert norm - report.flops == tiny_block(80) + tiny_block(60) - 2 * tiny_block(52) - 128 * 32
    assert report.by_op["cosine_similarity"] == 128 * 32
    assert norm - method_flops("rlt") == tiny_block(128) - tiny_block(80)  # block 0 runs on the kept tokens
    assert flops_report(tiny_model(r=R3, method="rlt")).tokens == (80, 60, 52)


def test_rlt_threshold_counts_its_upper_bound():
    """On meta there are no pixels to test: every token moves, the cost of the unpruned model."""
    report = flops_report(tiny_model(r=R3, method="rlt-threshold"))
    assert report.tokens == (128, 128, 128)
    assert report.flops == count_flops(tiny_model(r=0))


def test_fused_cpu_attention_counts_like_the_meta_forward_for_every_method():
    from sta.core.methods import METHODS

    for method in METHODS:
        model = tiny_model(r=R3, method=method)
        counter = FlopCounter()
        with torch.no_grad(), counter:
            model(tiny_clips(1), token_scores=torch.rand(1, 128))
        if method != "rlt-threshold":  # real pixels: it keeps fewer tokens than its meta upper bound
            assert counter.total == count_flops(model), method


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad", "enable_grad"])
def test_the_count_and_a_budget_do_not_depend_on_the_grad_mode(mode):
    """Under inference mode, linear layers and the patch convolution used to reach the counter as ops it does not
    see: a ViT-B counted 45.32 GFLOPs instead of 180.49, and a 35% budget picked r=31 instead of 47."""
    from sta.measure.flops import r_for_budget

    with getattr(torch, mode)():
        model = create_model("vit_base_patch16_224", r=0)
        assert count_flops(model) == 180_489_404_160
        assert r_for_budget(model, flops_reduction=0.35) == 47
