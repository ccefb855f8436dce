"""The VideoMAE backbone with STA against the slow independent reference (tests/reference.py)."""

import pytest
import torch

from sta import MODEL_CONFIGS, create_model
from sta.core.methods import METHODS
from tests.core.clips import moving_patch_clips
from tests.helpers import tiny_clips, tiny_model
from tests.reference import reference_forward

RELEASE_KEYS_BLOCK = {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.q_bias", "attn.v_bias",
                      "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                      "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"}


def run_both(model, clips, r):
    with torch.no_grad():
        logits, trace = model(clips, return_trace=True)
    cfg = model.cfg
    ref_logits, ref_positions = reference_forward(model.state_dict(), clips, patch_size=cfg.patch_size,
                                                  tubelet_size=cfg.tubelet_size, num_heads=cfg.num_heads, r=r)
    return logits, trace, ref_logits, ref_positions


@pytest.mark.parametrize(
    "r", [(0, 0, 0), (4, 4, 4), (1, 1, 1), (7, 7, 7), (4, 0, 9), (0, 10, 0), (15, 1, 1), (0, 0, 63)])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_tokens_and_logits(r, seed):
    model = tiny_model(r=r, seed=seed)
    logits, trace, ref_logits, ref_positions = run_both(model, tiny_clips(2, seed), r)
    for b in range(2):
        for k in range(3):
            assert trace.positions[k][b].tolist() == ref_positions[b][k], f"clip {b} stage {k}"
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("frames,depth", [(8, 3), (24, 6), (32, 4)])  # T = 4, 12, 16 slices
def test_other_frame_counts_and_depths_match_reference(frames, depth):
    r = (2, 3, 2)
    model = tiny_model(r=r, num_frames=frames, depth=depth)
    logits, trace, ref_logits, ref_positions = run_both(model, tiny_clips(2, 3, frames=frames), r)
    assert [p[0].tolist() for p in trace.positions] == ref_positions[0]
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)


def test_results_do_not_depend_on_batch_size():
    model = tiny_model(r=5)
    clips = tiny_clips(5, seed=7)
    with torch.no_grad():
        batch_logits, batch_trace = model(clips, return_trace=True)
        for i in range(5):
            logits, trace = model(clips[i : i + 1], return_trace=True)
            torch.testing.assert_close(logits[0], batch_logits[i], rtol=1e-5, atol=1e-5)
            for k in range(3):
                assert torch.equal(trace.positions[k][0], batch_trace.positions[k][i])


def test_trace_positions_follow_the_token_counts():
    model = tiny_model(r=4)
    with torch.no_grad():
        _, trace = model(tiny_clips(1), return_trace=True)
    assert [p.shape[1] for p in trace.positions] == [8 * 12, 4 * (24 - 4), 2 * (40 - 4)]
    for before, after in zip(trace.positions, trace.positions[1:]):
        assert set(after[0].tolist()) <= set(before[0].tolist())
    # after stage 0 every slice keeps exactly 16 - 4 of its own tokens, slices in order
    assert torch.equal(trace.positions[0][0] // 16, torch.arange(8).repeat_interleave(12))


def test_r_zero_is_plain_videomae_and_r_can_change():
    model = tiny_model(r=0)
    clips = tiny_clips(2)
    with torch.no_grad():
        plain = model(clips)
        model.r = 6
        pruned = model(clips)
        model.r = 0
        again = model(clips)
    assert not torch.allclose(plain, pruned)
    assert torch.equal(plain, again)


def test_state_dict_uses_release_keys():
    keys = set(tiny_model().state_dict())
    expected = {"patch_embed.proj.weight", "patch_embed.proj.bias", "fc_norm.weight", "fc_norm.bias",
                "head.weight", "head.bias"}
    expected |= {f"blocks.{i}.{k}" for i in range(3) for k in RELEASE_KEYS_BLOCK}
    assert keys == expected


@pytest.mark.parametrize("r", [16, (0, 0, 64), (15, 2, 0), -1, (1, 2), 2.5])
def test_r_that_cannot_fit_is_a_value_error(r):
    with pytest.raises(ValueError):
        tiny_model(r=r)
    model = tiny_model()
    with pytest.raises(ValueError):
        model.r = r
    assert model.r == (0, 0, 0)  # a refused r leaves the model as it was


def test_largest_fitting_r_works():
    model = tiny_model(r=(15, 1, 1))  # every group keeps exactly one token at every stage
    with torch.no_grad():
        _, trace = model(tiny_clips(1), return_trace=True)
    assert [p.shape[1] for p in trace.positions] == [8, 4, 2]


@pytest.mark.parametrize("frames", [12, 20])  # T = 6, 10: not divisible by 4
def test_slices_not_divisible_by_four_are_refused_when_pruning(frames):
    with pytest.raises(ValueError, match="divisible by 4"):
        tiny_model(r=2, num_frames=frames)


def test_wrong_clip_shape_is_a_value_error():
    model = tiny_model(r=2)
    with pytest.raises(ValueError, match="expected clips of shape"):
        model(torch.zeros(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="expected clips of shape"):
        model(torch.zeros(3, 16, 32, 32))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("vit_tiny")


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_registry_sizes_build_on_meta(name):
    with torch.device("meta"):
        model = create_model(name, r=64)
    cfg = model.cfg
    S = {16: 196, 14: 256}[cfg.patch_size]  # ViT-g (VideoMAE V2) has 14x14 patches
    assert (cfg.num_slices, cfg.tokens_per_slice) == (8, S)
    assert [s.block for s in model.stages] == [0, cfg.depth // 3, 2 * cfg.depth // 3]
    after0 = 8 * (S - 64)
    after1 = 4 * (after0 // 4 - 64)
    assert [s.tokens_out for s in model.stages] == [after0, after1, 2 * (after1 // 2 - 64)]
    if S == 196:
        assert [s.tokens_out for s in model.stages] == [1056, 800, 672]


@pytest.mark.parametrize("bad", [dict(img_size=30), dict(num_frames=15), dict(embed_dim=33)])
def test_shapes_that_cannot_be_tokenised_fail_at_creation(bad):
    with pytest.raises(ValueError):
        tiny_model(**bad)


def test_unpruned_model_takes_any_frame_count():
    model = tiny_model(r=0, num_frames=12)  # T = 6: no STA layout, but plain VideoMAE works
    with torch.no_grad():
        assert model(tiny_clips(1, frames=12)).shape == (1, 5)
    with pytest.raises(ValueError, match="divisible by 4"):
        model.r = 1


# ------------------------------------------------------------------------------------------ every method


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_gives_a_clip_the_same_result_in_any_batch(method):
    model = tiny_model(r=(5, 4, 3), method=method)
    clips = torch.cat([moving_patch_clips(2, seed=8), tiny_clips(2, seed=8)])  # counts differ for rlt-threshold
    scores = torch.rand(4, 128, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        logits, trace = model(clips, return_trace=True, token_scores=scores)
        for i in range(4):
            one, single = model(clips[i : i + 1], return_trace=True, token_scores=scores[i : i + 1])
            torch.testing.assert_close(one[0], logits[i], rtol=1e-5, atol=1e-5)
            for k in range(3):
                width = single.positions[k].shape[1]
                assert torch.equal(single.positions[k][0], trace.positions[k][i, :width])
                assert (trace.positions[k][i, width:] == -1).all()
    if METHODS[method].equal_budget:
        assert [p.shape[1] for p in trace.positions] == [8 * 11, 4 * 18, 2 * 33]


def test_oracle_takes_its_scores_from_a_scorer_or_the_call():
    from sta.measure.gradnorm import oracle_scorer, oracle_scores

    model = tiny_model(r=(5, 4, 3), method="oracle")
    clips = tiny_clips(3, seed=9)
    scores = oracle_scores(model, clips)
    assert model.r == (5, 4, 3) and scores.shape == (3, 128)
    with torch.no_grad():
        given, given_trace = model(clips, return_trace=True, token_scores=scores)
        with model.scored_by(oracle_scorer(model)):
            scored, scored_trace = model(clips, return_trace=True)
    torch.testing.assert_close(scored, given)
    assert all(torch.equal(a, b) for a, b in zip(scored_trace.positions, given_trace.positions))
    assert model._token_scorer is None and model.r == (5, 4, 3)  # the block leaves the model as it was
    top = scores.argsort(dim=1, descending=True)[:, :66].sort(dim=1).values
    assert torch.equal(given_trace.positions[-1], top)  # the unpruned model's highest-GradNorm tokens


def test_methods_read_only_what_they_declare():
    """A method that needs no keys or attention map runs every block fused; vidtldr's stage blocks are explicit."""
    calls = []
    model = tiny_model(r=2, method="norm", depth=6)
    for block in model.blocks:
        block.attn.register_forward_hook(lambda mod, args, out: calls.append((out[1] is None, out[2] is None)))
    with torch.no_grad():
        model(tiny_clips(1))
        model.method = "vidtldr"
        model(tiny_clips(1))
    assert calls[:6] == [(True, True)] * 6
    assert calls[6:] == [(True, block not in (0, 2, 4)) for block in range(6)]


def test_a_failed_set_pruning_changes_nothing():
    """0.3: set_pruning(r=bad, method="tome") raised but left the method at "sta", so later forwards ran STA."""
    model = tiny_model(r=(3, 2, 1))
    model.set_pruning(method="norm")
    for bad in (dict(r=999, method="tome"), dict(r=(3, 2, 1), method="no-such-method"), dict(r=-1)):
        with pytest.raises(ValueError):
            model.set_pruning(**bad)
        assert (model.r, model.method, len(model.stages)) == ((3, 2, 1), "norm", 3), bad
    model.set_pruning(r=2, method="tome")  # a pair that fits is taken in one step, whatever the order
    assert (model.r, model.method) == ((2, 2, 2), "tome")
