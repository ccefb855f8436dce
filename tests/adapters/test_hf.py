"""STA on Hugging Face VideoMAE models (sta/adapters/hf.py) against the core backbone. No network."""

import copy
import io
import json

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from transformers import VideoMAEForVideoClassification, VideoMAEModel  # noqa: E402
from transformers.modeling_outputs import BaseModelOutput, ImageClassifierOutput  # noqa: E402

from sta import tokens_after_stages  # noqa: E402
from sta.adapters.hf import forward_with_trace, patch_hf  # noqa: E402
from sta.adapters.videomae import pruned_forward  # noqa: E402
from sta.models.convert import hf_model_from_release  # noqa: E402
from sta.models.hf_mapping import hf_config_from_release  # noqa: E402
from tests.helpers import randomize_, tiny_clips, tiny_model  # noqa: E402

# older transformers (4.40 checked) have no SDPA for VideoMAE, only eager attention
IMPLS = ["eager", "sdpa"] if getattr(VideoMAEForVideoClassification, "_supports_sdpa", False) else ["eager"]
DEFAULT_IMPL = IMPLS[-1]


def hf_twin(core, impl=DEFAULT_IMPL):
    """The HF classifier holding the core model's (release-format) weights."""
    return hf_model_from_release(core.state_dict(), core.cfg, attn_implementation=impl)


def hf_clips(batch=2, seed=0):
    return tiny_clips(batch, seed).transpose(1, 2)  # HF: B x T x C x H x W


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("r", [0, 4, (4, 0, 9), (15, 1, 1), (0, 10, 0)])
def test_same_logits_and_kept_positions_as_core_backbone(impl, r):
    core = tiny_model(r=r, seed=1)
    hf = patch_hf(hf_twin(core, impl), r=r)
    assert hf.config._attn_implementation == impl and hf.r == core.r
    clips = tiny_clips(3, seed=1)
    with torch.no_grad():
        ref, ref_trace = core(clips, return_trace=True)
        out, trace = forward_with_trace(hf, clips.transpose(1, 2))
    assert isinstance(out, ImageClassifierOutput)
    # HF's fc_norm eps is 1e-5 (release: 1e-6); everything else is the same computation
    torch.testing.assert_close(out.logits, ref, rtol=1e-4, atol=1e-4)
    assert len(trace.positions) == 3
    for mine, theirs in zip(trace.positions, ref_trace.positions):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize("impl", IMPLS)
def test_r0_after_patching_is_exactly_the_unpatched_model(impl):
    hf = hf_twin(tiny_model(seed=2), impl)
    x = hf_clips(seed=2)
    with torch.no_grad():
        plain = hf(x, output_hidden_states=True)
        patch_hf(hf, r=0)
        patched = hf(x, output_hidden_states=True)
        hf.r = 5
        pruned = hf(x).logits
        hf.r = 0
        again = hf(x).logits
    assert torch.equal(patched.logits, plain.logits) and torch.equal(again, plain.logits)
    assert len(patched.hidden_states) == len(plain.hidden_states) == 4
    assert all(torch.equal(a, b) for a, b in zip(patched.hidden_states, plain.hidden_states))
    assert not torch.allclose(pruned, plain.logits)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pooling", [True, False])
def test_own_forward_without_pruning_reproduces_hf(impl, pooling):
    """Our loop over HF's submodules, with no stage, against HF's own forward (bare model, both poolings)."""
    cfg = hf_config_from_release(tiny_model().cfg, attn_implementation=impl, use_mean_pooling=pooling)
    bare = randomize_(VideoMAEModel(cfg), seed=3).eval()
    assert (bare.layernorm is None) == pooling
    x = hf_clips(seed=3)
    with torch.no_grad():
        theirs = bare(x).last_hidden_state
        mine = pruned_forward(bare, x, stages=()).last_hidden_state
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", [True, False])
def test_bare_videomae_model(pooling):
    cfg = hf_config_from_release(tiny_model().cfg, use_mean_pooling=pooling)
    bare = randomize_(VideoMAEModel(cfg), seed=4).eval()
    x = hf_clips(seed=4)
    with torch.no_grad():
        plain = bare(x).last_hidden_state
        assert patch_hf(bare, r=0) is bare
        assert torch.equal(bare(x).last_hidden_state, plain)
        bare.r = 4
        out, trace = forward_with_trace(bare, x)
    assert isinstance(out, BaseModelOutput)
    tokens = tokens_after_stages(8, 16, 4)[-1]
    assert out.last_hidden_state.shape == (2, tokens, 32) and trace.positions[-1].shape == (2, tokens)


def test_r_changed_afterwards_matches_a_fresh_patch():
    core = tiny_model(seed=5)
    x = hf_clips(seed=5)
    late = patch_hf(hf_twin(core), r=0)
    late.r = (3, 6, 2)
    fresh = patch_hf(hf_twin(core), r=(3, 6, 2))
    core.r = (3, 6, 2)
    with torch.no_grad():
        a, b = late(x).logits, fresh(x).logits
        torch.testing.assert_close(a, core(x.transpose(1, 2)), rtol=1e-4, atol=1e-4)
    assert late.r == (3, 6, 2) and torch.equal(a, b)
    assert [s.tokens_out for s in late.stages] == list(tokens_after_stages(8, 16, (3, 6, 2)))
    assert patch_hf(late, r=1) is late and late.r == (1, 1, 1)  # re-patching only sets r


@pytest.mark.parametrize("r", [16, (0, 0, 64), -1, (1, 2), 2.5, "4"])
def test_invalid_r_is_a_value_error_and_changes_nothing(r):
    hf = hf_twin(tiny_model())
    with pytest.raises(ValueError):
        patch_hf(hf, r=r)
    assert not hasattr(hf, "r")  # refused before the model was touched
    patch_hf(hf, r=2)
    with pytest.raises(ValueError):
        hf.r = r
    assert hf.r == (2, 2, 2)


def test_labels_give_hf_loss_and_return_dict_false_gives_tuples():
    hf = patch_hf(hf_twin(tiny_model(seed=6)), r=4)
    x, labels = hf_clips(seed=6), torch.tensor([1, 4])
    with torch.no_grad():
        out = hf(x, labels=labels)
        as_tuple = hf(x, labels=labels, return_dict=False)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
    assert torch.equal(as_tuple[0], out.loss) and torch.equal(as_tuple[1], out.logits)


def test_hidden_states_and_attentions_follow_the_pruning():
    hf = patch_hf(hf_twin(tiny_model(seed=7)), r=4)
    with torch.no_grad():
        out = hf(hf_clips(seed=7), output_hidden_states=True, output_attentions=True)
        plain = hf(hf_clips(seed=7)).logits
    counts = tokens_after_stages(8, 16, 4)
    assert [h.shape[1] for h in out.hidden_states] == [128, *counts]
    assert [a.shape for a in out.attentions] == [(2, 2, n, n) for n in (128, *counts[:2])]
    torch.testing.assert_close(out.logits, plain, rtol=1e-5, atol=1e-5)  # explicit attention for that call


def test_save_and_load_pretrained(tmp_path):
    hf = patch_hf(hf_twin(tiny_model(seed=8), "eager"), r=4)
    x = hf_clips(seed=8)
    with torch.no_grad():
        pruned = hf(x).logits
        hf.r = 0
        plain = hf(x).logits
    hf.r = 4
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["VideoMAEForVideoClassification"] and config["layer_norm_eps"] == 1e-6
    loaded = VideoMAEForVideoClassification.from_pretrained(tmp_path, local_files_only=True,
                                                            attn_implementation="eager").eval()
    assert not hasattr(loaded, "r")  # the patch is not saved: plain VideoMAE until patched again
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, plain)
        patch_hf(loaded, r=4)
        assert torch.equal(loaded(x).logits, pruned)


def test_pickling_and_deepcopy_keep_the_patch():
    hf = patch_hf(hf_twin(tiny_model(seed=9)), r=(2, 5, 3))
    buffer = io.BytesIO()
    torch.save(hf, buffer)
    buffer.seek(0)
    copies = [torch.load(buffer, weights_only=False), copy.deepcopy(hf)]
    x = hf_clips(seed=9)
    with torch.no_grad():
        ref = hf(x).logits
        for other in copies:
            assert type(other) is type(hf) and type(other.videomae) is type(hf.videomae)
            assert other.r == (2, 5, 3) and torch.equal(other(x).logits, ref)


def test_forward_with_trace_at_r0_lists_every_position():
    hf = patch_hf(hf_twin(tiny_model()), r=0)
    _, trace = forward_with_trace(hf, hf_clips())
    assert len(trace.positions) == 3
    assert all(torch.equal(p, torch.arange(128).expand(2, -1)) for p in trace.positions)


def test_refusals():
    with pytest.raises(TypeError, match="VideoMAEForVideoClassification"):
        patch_hf(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="patch_hf"):
        forward_with_trace(hf_twin(tiny_model()), hf_clips())
    first_token = randomize_(VideoMAEForVideoClassification(
        hf_config_from_release(tiny_model().cfg, use_mean_pooling=False))).eval()
    with pytest.raises(ValueError, match="mean-pooling"):
        patch_hf(first_token, r=4)
    patch_hf(first_token, r=0)
    with pytest.raises(ValueError, match="mean-pooling"):
        first_token.videomae.r = 4
    hf = patch_hf(hf_twin(tiny_model()), r=4)
    with pytest.raises(ValueError, match="bool_masked_pos"):
        hf.videomae(hf_clips(), bool_masked_pos=torch.zeros(2, 128, dtype=torch.bool))
