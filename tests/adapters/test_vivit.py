"""STA (and every comparison method) inside Hugging Face ViViT, patched in place. Tiny random models, no network."""

import pytest
import torch

pytest.importorskip("transformers")

from transformers import VivitModel  # noqa: E402
from transformers.modeling_outputs import BaseModelOutputWithPooling  # noqa: E402

from sta import patch_hf, tokens_after_stages  # noqa: E402
from sta.adapters.hf import forward_with_trace  # noqa: E402
from sta.core.methods import METHODS, Needs  # noqa: E402
from tests.adapters.tiny_hf import (  # noqa: E402
    SLICES,
    SPATIAL,
    assert_positions_equal,
    hf_pixels,
    logit_close,
    method_inputs,
    method_reference,
    tiny_vivit,
    vivit_config,
    vivit_reference,
)
from tests.helpers import randomize_  # noqa: E402


def test_sixteen_slices_as_in_the_released_model():
    """32 frames, tubelet 2: T = 16, STA's groups are 16, 8 and 4 slices."""
    model = tiny_vivit(seed=3, frames=32, num_hidden_layers=6)
    x = hf_pixels(2, seed=3, frames=32)
    ref_logits, ref_positions = vivit_reference(model, x, 5, slices=16)
    patch_hf(model, r=5)
    assert [s.num_groups for s in model.stages] == [16, 8, 4]
    assert [s.block for s in model.stages] == [0, 2, 4]
    with torch.no_grad():
        out, trace = forward_with_trace(model, x)
    assert_positions_equal(trace.positions, ref_positions)
    logit_close(out.logits, ref_logits)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_matches_the_method_reference_and_keeps_cls_first(method):
    model = tiny_vivit(seed=4)
    x, scores = method_inputs(method, seed=4)
    r = (5, 4, 3)
    ref_logits, ref_positions = method_reference(model, x, r, method, scores)
    patch_hf(model, r=r, method=method)
    assert model.method == method
    with torch.no_grad():
        out, trace = forward_with_trace(model, x, token_scores=scores, output_hidden_states=True)
    counts = [p.shape[1] for p in ref_positions]
    if METHODS[method].equal_budget:
        assert counts == list(tokens_after_stages(SLICES, SPATIAL, r))
    assert [h.shape[1] for h in out.hidden_states] == [1 + SLICES * SPATIAL, *(1 + n for n in counts)]
    for mine, theirs in zip(trace.positions, ref_positions):
        assert torch.equal(mine, theirs)
    logit_close(out.logits, ref_logits)


def test_cls_is_never_scored_or_dropped():
    """A zero CLS token is the smallest-norm token: the norm method would drop it first if it were scored."""
    model = tiny_vivit(seed=5)
    with torch.no_grad():
        model.vivit.embeddings.cls_token.zero_()
        model.vivit.embeddings.position_embeddings[:, 0].zero_()
    for method in METHODS:
        x, scores = method_inputs(method, seed=5)
        patch_hf(model, r=(6, 6, 6), method=method)
        with torch.no_grad():
            out, trace = forward_with_trace(model, x, token_scores=scores, output_hidden_states=True)
            embedded = model.vivit.embeddings(x)
            if METHODS[method].entry is not None:  # RLT drops tokens before the first layer: it sees the kept ones
                kept = 1 + trace.positions[0][..., None].expand(-1, -1, embedded.shape[-1])
                embedded = torch.cat([embedded[:, :1], embedded.gather(1, kept)], dim=1)
            first = model.vivit.layers[0](embedded, None)
        if Needs.ATTENTION in METHODS[method].needs:  # explicit attention at the stage layer: float-close only
            torch.testing.assert_close(out.hidden_states[1][:, 0], first[:, 0], rtol=1e-5, atol=1e-5)
        else:
            assert torch.equal(out.hidden_states[1][:, 0], first[:, 0]), method  # the CLS row after the first stage
        assert all(int(p.min()) >= 0 and int(p.max()) < SLICES * SPATIAL for p in trace.positions)


@pytest.mark.parametrize("pooler", [True, False])
def test_bare_model_keeps_its_output_type_and_pooler(pooler):
    bare = randomize_(VivitModel(vivit_config(), add_pooling_layer=pooler), seed=7).eval()
    x = hf_pixels(seed=7)
    with torch.no_grad():
        plain = bare(x)
        patch_hf(bare, r=0)
        assert torch.equal(bare(x).last_hidden_state, plain.last_hidden_state)
        bare.r = 4
        out = bare(x)
        as_tuple = bare(x, return_dict=False)
    assert isinstance(out, BaseModelOutputWithPooling)
    assert out.last_hidden_state.shape == (2, 1 + tokens_after_stages(SLICES, SPATIAL, 4)[-1], 32)
    assert (out.pooler_output is not None) == pooler
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.last_hidden_state)


def test_labels_loss_attentions_and_tuples():
    model = patch_hf(tiny_vivit(seed=8), r=4)
    x, labels = hf_pixels(seed=8), torch.tensor([1, 3])
    with torch.no_grad():
        out = model(x, labels=labels, output_attentions=True)
        plain = model(x, labels=labels)
        as_tuple = model(x, labels=labels, return_dict=False)
    counts = tokens_after_stages(SLICES, SPATIAL, 4)
    assert [a.shape[-1] for a in out.attentions] == [1 + n for n in (128, *counts[:2])]
    torch.testing.assert_close(out.logits, plain.logits, rtol=1e-5, atol=1e-5)  # explicit attention for that call
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    assert torch.equal(as_tuple[0], plain.loss) and torch.equal(as_tuple[1], plain.logits)


def test_refusals_leave_the_model_unchanged():
    model = tiny_vivit()
    with pytest.raises(ValueError):
        patch_hf(model, r=16)  # groups of 16 tokens at stage 0
    assert not hasattr(model, "r")
    patch_hf(model, r=2)
    with pytest.raises(ValueError, match="tome"):
        model.set_pruning(r=9, method="tome")  # ToMe merges at most half of a group
    assert model.r == (2, 2, 2) and model.method == "sta"
    with pytest.raises(ValueError, match="unknown method"):
        model.method = "magic"
    with pytest.raises(ValueError, match="attention_mask"):
        model.vivit(hf_pixels(), attention_mask=torch.zeros(2, 1, 129, 129))
    odd = tiny_vivit(frames=12)  # T = 6: not divisible by 4
    patch_hf(odd, r=0)
    with pytest.raises(ValueError, match="divisible by 4"):
        odd.r = 2
