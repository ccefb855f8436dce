"""STA (and every comparison method) inside Hugging Face V-JEPA 2, patched in place. Tiny random models, no network."""

import pytest
import torch

pytest.importorskip("transformers")

from transformers import VJEPA2Model  # noqa: E402

from sta import patch_hf, tokens_after_stages  # noqa: E402
from sta.adapters.hf import forward_with_trace  # noqa: E402
from sta.adapters.loop import LayerInput  # noqa: E402
from sta.adapters.vjepa2 import layer_step  # noqa: E402
from sta.core.methods import METHODS  # noqa: E402
from tests.adapters.tiny_hf import (  # noqa: E402
    SLICES,
    SPATIAL,
    hf_pixels,
    logit_close,
    method_inputs,
    method_reference,
    tiny_vjepa2,
    vjepa2_config,
    vjepa2_reference,
)
from tests.helpers import randomize_  # noqa: E402


def test_original_positions_reach_every_later_rotary_embedding():
    """Without carrying positions (RoPE at 0..L'-1 after pruning) the logits differ: positions matter here."""
    model = tiny_vjepa2(seed=3)
    x = hf_pixels(2, seed=3)
    carried, _ = vjepa2_reference(model, x, 5)
    renumbered, _ = vjepa2_reference(model, x, 5, carry_positions=False)
    patch_hf(model, r=5)
    with torch.no_grad():
        logits = model(x).logits
    logit_close(logits, carried)
    assert not torch.allclose(logits, renumbered, atol=1e-3)


def test_layer_step_is_hfs_layer_at_any_positions():
    model = tiny_vjepa2(seed=4)
    layer = model.vjepa2.encoder.layer[1]
    x = torch.randn(2, 40, 32, generator=torch.Generator().manual_seed(4))
    positions = torch.stack([torch.randperm(128, generator=torch.Generator().manual_seed(s))[:40] for s in (1, 2)])
    with torch.no_grad():
        theirs = layer(x, position_mask=positions)[0]
        out = layer_step(layer, x, LayerInput(positions, None, True, False, 0.0))
        mine, keys = out.x, out.keys
        # the similarity keys are the content keys, before the rotary embedding
        expected = layer.attention.key(layer.norm1(x)).view(2, 40, 2, 16).mean(2)
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(keys, expected)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_and_matches_the_method_reference(method):
    model = tiny_vjepa2(seed=5)
    x, scores = method_inputs(method, seed=5)
    r = (5, 4, 3)
    patch_hf(model, r=r, method=method)
    with torch.no_grad():
        out, trace = forward_with_trace(model, x, token_scores=scores, output_hidden_states=True)
    counts = [p.shape[1] for p in trace.positions]
    if METHODS[method].equal_budget:
        assert counts == list(tokens_after_stages(SLICES, SPATIAL, r))
    assert [h.shape[1] for h in out.hidden_states] == [SLICES * SPATIAL, *counts]
    assert torch.isfinite(out.logits).all()
    assert all(int(p.min()) >= 0 and int(p.max()) < SLICES * SPATIAL for p in trace.positions)
    if method in ("tome", "vidtldr"):  # V-JEPA 2 layers take no attention mask: proportional attention has no twin
        return
    model.r = 0
    ref_logits, ref_positions = method_reference(model, x, r, method, scores)
    for mine, theirs in zip(trace.positions, ref_positions):
        assert torch.equal(mine, theirs)
    logit_close(out.logits, ref_logits)


def test_bare_model_runs_the_encoder_only_while_pruning():
    bare = randomize_(VJEPA2Model(vjepa2_config()), seed=7).eval()
    x = hf_pixels(seed=7)
    with torch.no_grad():
        plain = bare(x)  # with the predictor
        patch_hf(bare, r=0)
        same = bare(x)
        assert torch.equal(same.last_hidden_state, plain.last_hidden_state)
        assert torch.equal(same.predictor_output.last_hidden_state, plain.predictor_output.last_hidden_state)
        bare.r = 4
        out, trace = forward_with_trace(bare, x, skip_predictor=True)
        features = bare.get_vision_features(x)
        with pytest.raises(ValueError, match="skip_predictor=True"):
            bare(x)
        with pytest.raises(ValueError, match="context_mask"):
            bare(x, context_mask=[torch.arange(10)[None]], skip_predictor=True)
    tokens = tokens_after_stages(SLICES, SPATIAL, 4)[-1]
    assert out.last_hidden_state.shape == (2, tokens, 32) and out.predictor_output is None
    assert torch.equal(features, out.last_hidden_state) and trace.positions[-1].shape == (2, tokens)


def test_input_with_another_token_count_is_refused_while_pruning():
    model = patch_hf(tiny_vjepa2(), r=2)
    with pytest.raises(ValueError, match="patch tokens"):
        model(hf_pixels(frames=8))
    model.r = 0
    assert model(hf_pixels(frames=8)).logits.shape == (2, 5)  # HF's own forward takes any length
