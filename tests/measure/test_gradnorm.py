"""The GradNorm study: GradNorm against explicit autograd, kept shares against hand computation, JSON and table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import sta.core.methods
from sta.core.methods import METHODS, Needs
from sta.measure.gradnorm import (
    GradNormClip,
    SkippedInput,
    batch_gradnorm,
    kept_mask,
    kept_share,
    run_gradnorm,
    token_gradnorm,
    top_count,
    top_kept,
    top_tokens,
    write_gradnorm_json,
)
from tests.helpers import tiny_clips, tiny_model

N = 8 * 16  # tiny model: 8 slices of 4 x 4 tokens
R = 4  # tokens kept: 8 x 12 -> 4 x 20 -> 2 x 36 = 72


@pytest.fixture(scope="module")
def model():
    return tiny_model(r=0, seed=11)


@pytest.fixture(scope="module")
def clips():
    return tiny_clips(batch=7, seed=12)


def as_source(clips, labels=None):
    return [GradNormClip(f"clip{i}", clip, None if labels is None else int(labels[i])) for i, clip in enumerate(clips)]


def explicit_gradnorm(model, clip, target=None):
    """GradNorm by hand: a leaf patch-embedding tensor fed through the blocks, torch.autograd.grad of one logit."""
    leaf = model.patch_embed(clip[None]).detach().requires_grad_(True)
    x = leaf + model.pos_embed
    for block in model.blocks:
        x = block(x)[0]
    logits = model.head(model.fc_norm(x.mean(1)))[0]
    target = int(logits.argmax()) if target is None else target
    (grad,) = torch.autograd.grad(logits[target], leaf)
    return grad[0].norm(dim=-1), target


def hand_shares(model, clips, method, r, gradnorms):
    """Per clip: GradNorm share and top-10% share of the tokens in the pruned forward's trace, with numpy."""
    scores = torch.stack(gradnorms) if Needs.SCORES in METHODS[method].needs else None  # oracle: the GradNorm
    with model.pruning(r, method), torch.no_grad():
        _, trace = model(clips, return_trace=True, token_scores=scores)
    shares, tops = [], []
    for b, g in enumerate(gradnorms):
        g = g.double().numpy()
        kept = trace.positions[-1][b].numpy()
        kept = kept[kept >= 0]  # a clip of a variable-count method keeps fewer: its row is padded with -1
        assert len(set(kept.tolist())) == len(kept)  # positions are distinct, ToMe's included (destinations)
        shares.append(g[kept].sum() / g.sum())
        top = np.argsort(-g)[: math.ceil(0.1 * len(g))]
        tops.append(np.isin(top, kept).mean())
    return np.array(shares), np.array(tops)


def test_gradnorm_equals_explicit_autograd(model, clips):
    values, targets, logits, _ = batch_gradnorm(model, clips[:3])
    assert values.shape == (3, N)
    for b in range(3):
        expected, target = explicit_gradnorm(model, clips[b])
        assert int(targets[b]) == target
        torch.testing.assert_close(values[b], expected)
    # a given target (the "label" mode): the gradient of that class's logit
    labels = torch.tensor([1, 4, 0])
    values, targets, _, _ = batch_gradnorm(model, clips[:3], labels)
    assert targets.tolist() == [1, 4, 0]
    for b in range(3):
        torch.testing.assert_close(values[b], explicit_gradnorm(model, clips[b], int(labels[b]))[0])
    assert all(p.grad is None for p in model.parameters())  # parameters' gradients untouched


def test_batched_equals_per_clip(model, clips):
    batched, targets, _, _ = batch_gradnorm(model, clips)
    for b in range(len(clips)):
        single, target = token_gradnorm(model, clips[b])
        assert target == int(targets[b])
        torch.testing.assert_close(batched[b], single, rtol=1e-4, atol=1e-6)
    one = run_gradnorm(model, as_source(clips), ["sta", "tome"], [R], batch_size=1, progress=False)
    many = run_gradnorm(model, as_source(clips), ["sta", "tome"], [R], batch_size=3, progress=False)
    assert [(r.method, r.r, r.tokens_kept, r.clips) for r in one.rows] == \
           [(r.method, r.r, r.tokens_kept, r.clips) for r in many.rows]
    for a, b in zip(one.rows, many.rows):
        assert a.kept_share == pytest.approx(b.kept_share, abs=1e-5)
        assert a.top10_kept == pytest.approx(b.top10_kept, abs=1e-9)
    np.testing.assert_allclose(one.mean_map, many.mean_map, atol=1e-6)


def test_kept_share_is_exactly_one_without_pruning(model, clips):
    result = run_gradnorm(model, as_source(clips), rs=[0], batch_size=4, progress=False)
    # the unpruned baseline (method None, r = 0) first, then every method at r = 0
    assert [(row.method, row.r) for row in result.rows] == [(None, (0, 0, 0))] + [(m, (0, 0, 0)) for m in METHODS]
    for row in result.rows:
        assert (row.kept_share, row.top10_kept, row.ci95, row.tokens_kept) == (1.0, 1.0, 0.0, N)


def test_shares_equal_hand_computation(model, clips):
    """Against numpy on each clip's trace: mean, CI and top-10% of every method, ToMe's destinations included."""
    gradnorms = [explicit_gradnorm(model, clip)[0] for clip in clips]
    result = run_gradnorm(model, as_source(clips), rs=[R, (2, 6, 1)], batch_size=4, progress=False)
    n = len(clips)
    assert result.clips == n
    for row in result.rows[1:]:
        shares, tops = hand_shares(model, clips, row.method, row.r, gradnorms)
        assert row.clips == n
        assert row.kept_share == pytest.approx(shares.mean(), abs=1e-6)
        assert row.kept_share_std == pytest.approx(shares.std(ddof=1), abs=1e-6)
        assert row.ci95 == pytest.approx(2.4469 * shares.std(ddof=1) / math.sqrt(n), abs=1e-6)
        assert row.top10_kept == pytest.approx(tops.mean(), abs=1e-12)
        if METHODS[row.method].equal_budget:
            assert row.tokens_kept == (72 if row.r == (R, R, R) else 86)  # 8 x 14 -> 4 x 22 -> 2 x 43
    expected_map = np.mean([(g / g.sum()).double().view(8, 16).numpy() for g in gradnorms], axis=0)
    np.testing.assert_allclose(result.mean_map, expected_map, atol=1e-7)
    assert result.mean_map.sum() == pytest.approx(1.0)


def test_share_of_a_crafted_kept_set():
    g = torch.tensor([[1.0, 2.0, 3.0, 4.0, 10.0], [5.0, 0.0, 0.0, 0.0, 5.0]])
    mask = kept_mask(torch.tensor([[1, 3], [4, 0]]), 5)
    assert mask.tolist() == [[False, True, False, True, False], [True, False, False, False, True]]
    assert kept_share(g, mask).tolist() == [6 / 20, 1.0]
    assert top_count(5) == 1 and top_count(128) == 13 and top_count(10) == 1 and top_count(512) == 52
    assert top_kept(mask, top_tokens(g)).tolist() == [0.0, 1.0]  # clip 0's top token (10) was dropped


def test_random_keeps_the_kept_fraction_of_gradnorm_on_average(model, clips, monkeypatch):
    """`random`'s pattern is fixed by RANDOM_SEED and shared by all clips, so average over patterns (seeds).

    At every stage each group of equal size keeps a uniformly random subset, so
    every original token survives with probability tokens_kept / N whatever
    its GradNorm: for any fixed map, E_seed[share] = tokens_kept / N. Over 150
    seeds the mean must lie within 4 standard errors (of the seed average).
    """
    g = torch.stack([explicit_gradnorm(model, clip)[0] for clip in clips[:4]])
    shares = []
    for seed in range(150):
        monkeypatch.setattr(sta.core.methods, "RANDOM_SEED", seed)
        with model.pruning(R, "random"), torch.no_grad():
            _, trace = model(clips[:4], return_trace=True)
        shares.append(kept_share(g, kept_mask(trace.positions[-1], N)).numpy())
    shares = np.array(shares)  # seeds x clips
    assert len({tuple(s) for s in shares}) > 100  # the seeds do give different patterns
    fraction = 72 / N
    per_seed = shares.mean(1)
    se = per_seed.std(ddof=1) / math.sqrt(len(per_seed))
    assert abs(per_seed.mean() - fraction) < 4 * se, (per_seed.mean(), fraction, se)
    assert se < 0.01  # the tolerance is tight: a bias of a few points would fail


def test_skip_records_in_the_source_are_named_in_the_result(model, clips):
    source = [SkippedInput("bad.mp4", "VideoDecodeError: cut short"), *as_source(clips[:3]),
              SkippedInput("gone.mp4", "FileNotFoundError: gone")]
    result = run_gradnorm(model, source, ["sta"], [R], batch_size=2, progress=False)
    assert result.clips == 3 and [s.name for s in result.skipped] == ["bad.mp4", "gone.mp4"]


def test_json_and_table(model, clips, tmp_path):
    result = run_gradnorm(model, as_source(clips, labels=[0, 1, 2, 3, 4, 0, 1]), ["sta", "random", "tome"],
                          [R, (9, 1, 1)], target="label", batch_size=4, progress=False)
    assert [(row.method, row.r) for row in result.rows] == [
        (None, (0, 0, 0)), ("sta", (4, 4, 4)), ("sta", (9, 1, 1)), ("random", (4, 4, 4)), ("random", (9, 1, 1)),
        ("tome", (4, 4, 4))]
    assert result.not_run == [dict(method="tome", r=(9, 1, 1), reason=result.not_run[0]["reason"])]
    path = write_gradnorm_json(result, tmp_path / "out")
    on_disk = json.loads(path.read_text())
    assert path.name == "gradnorm.json"
    assert on_disk["rows"] == json.loads(json.dumps(result.to_rows()))
    # r as the CLI spells it; the unpruned baseline is method null at r "0"
    assert [(row["method"], row["r"]) for row in on_disk["rows"]] == [
        (None, "0"), ("sta", "4"), ("sta", "9,1,1"), ("random", "4"), ("random", "9,1,1"), ("tome", "4")]
    assert on_disk["not_run"] == [dict(method="tome", r="9,1,1", reason=result.not_run[0]["reason"])]
    assert on_disk["clips"] == 7 and on_disk["grid"] == [8, 4, 4] and on_disk["ci"].startswith("95%")
    assert np.allclose(on_disk["mean_map"], result.mean_map)
    assert all(row["top1"] is not None for row in on_disk["rows"])
    out = result.table()
    assert "tome" in out and "not run: tome r=9,1,1" in out and "72/128" in out
    baseline = out.splitlines()[2]  # after the title and the header
    assert baseline.startswith(f"{'unpruned':<10}{'0':>9}  128/128") and "none" not in out


def test_model_settings_restored(model, clips):
    model.set_pruning((2, 6, 1), "norm")
    try:
        run_gradnorm(model, as_source(clips[:2]), ["sta", "tome"], [R], progress=False)
        assert (model.r, model.method) == ((2, 6, 1), "norm")
    finally:
        model.set_pruning(0, "sta")


@pytest.mark.cuda
def test_cuda_matches_cpu(clips):
    cpu_model = tiny_model(r=0, seed=11)
    cpu = run_gradnorm(cpu_model, as_source(clips), ["sta", "norm"], [R], progress=False)
    gpu = run_gradnorm(tiny_model(r=0, seed=11), as_source(clips), ["sta", "norm"], [R], device="cuda",
                       progress=False)
    for a, b in zip(cpu.rows, gpu.rows):
        assert (a.method, a.tokens_kept) == (b.method, b.tokens_kept)
        assert a.kept_share == pytest.approx(b.kept_share, abs=1e-3)
