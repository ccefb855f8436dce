"""The loop and patching machinery every family shares (sta/adapters/loop.py). No network."""

import copy
import io
import json

import pytest
import torch

pytest.importorskip("transformers")

from transformers import VivitForVideoClassification  # noqa: E402

from sta import patch_hf, tokens_after_stages  # noqa: E402
from sta.adapters.hf import FAMILIES, forward_with_trace  # noqa: E402
from sta.adapters.loop import LayerOutput, run_layers, size_bias  # noqa: E402
from sta.core.methods import METHODS  # noqa: E402
from sta.core.schedule import build_stages  # noqa: E402
from sta.models.convert import hf_model_from_release  # noqa: E402
from tests.adapters.tiny_hf import hf_pixels, method_inputs, tiny_vivit, tiny_vjepa2  # noqa: E402
from tests.helpers import tiny_model  # noqa: E402


@pytest.mark.parametrize("method", sorted(METHODS))
def test_videomae_runs_every_method_as_the_core_backbone(method):
    """The shared loop on HF VideoMAE against sta.models.vit, method by method (merged sizes included)."""
    r = (5, 4, 3)
    core = tiny_model(r=r, method=method, seed=11)
    hf = patch_hf(hf_model_from_release(core.state_dict(), core.cfg), r=r, method=method)
    pixels, scores = method_inputs(method, seed=11)
    clips = pixels.transpose(1, 2)
    with torch.no_grad():
        ref, ref_trace = core(clips, return_trace=True, token_scores=scores)
        out, trace = forward_with_trace(hf, pixels, token_scores=scores)
    torch.testing.assert_close(out.logits, ref, rtol=1e-4, atol=1e-4)  # HF's fc_norm eps is 1e-5, the release's 1e-6
    assert all(torch.equal(a, b) for a, b in zip(trace.positions, ref_trace.positions))


def test_prefix_tokens_stay_first_and_positions_follow_the_patch_tokens():
    B, prefix, T, S, C = 2, 2, 4, 6, 8
    stages = build_stages(3, T, S, (2, 1, 1))
    x = torch.randn(B, prefix + T * S, C, generator=torch.Generator().manual_seed(0))
    seen = []

    def step(layer, h, inp):  # an identity layer that records what the loop hands it
        seen.append((h.shape[1], inp.positions.shape[1], inp.need_keys))
        return LayerOutput(h, h.flip(-1)[..., :4])

    out = run_layers([None] * 3, x, step, stages, "sta", prefix=prefix, output_hidden_states=True)
    assert torch.equal(out.x[:, :prefix], x[:, :prefix])
    counts = tokens_after_stages(T, S, (2, 1, 1))
    assert [h.shape[1] for h in out.hidden_states] == [prefix + T * S, *(prefix + n for n in counts)]
    assert seen == [(prefix + T * S, T * S, True), (prefix + counts[0], counts[0], True),
                    (prefix + counts[1], counts[1], True)]
    with pytest.raises(ValueError, match="patch tokens"):
        run_layers([None] * 3, x[:, :-1], step, stages, prefix=prefix)


def test_tome_sizes_become_a_log_bias_with_zero_for_prefix_tokens():
    sizes = torch.tensor([[[1.0], [3.0]], [[2.0], [1.0]]])
    bias = size_bias(sizes, 1, torch.float32)
    assert bias.shape == (2, 1, 1, 3)
    torch.testing.assert_close(bias[:, 0, 0], torch.tensor([[1.0, 1.0, 3.0], [1.0, 2.0, 1.0]]).log())
    assert size_bias(None, 1, torch.float32) is None


def test_refuses_other_models_naming_the_supported_ones():
    with pytest.raises(TypeError, match="Vivit.*VJEPA2"):
        patch_hf(torch.nn.Linear(2, 2))
    assert set(FAMILIES) == {"videomae", "vivit", "vjepa2"}


@pytest.mark.parametrize("build", [tiny_vivit, tiny_vjepa2], ids=["vivit", "vjepa2"])
def test_pickling_and_deepcopy_keep_the_patch_r_and_method(build):
    model = patch_hf(build(seed=12), r=(2, 5, 3), method="temporal")
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    copies = [torch.load(buffer, weights_only=False), copy.deepcopy(model)]
    x = hf_pixels(seed=12)
    with torch.no_grad():
        ref = model(x).logits
        for other in copies:
            assert type(other) is type(model)
            assert other.r == (2, 5, 3) and other.method == "temporal"
            assert torch.equal(other(x).logits, ref)


def test_save_pretrained_writes_the_original_class_and_reloads_plain(tmp_path):
    model = patch_hf(tiny_vivit(seed=13), r=4, method="random")
    x = hf_pixels(seed=13)
    with torch.no_grad():
        pruned = model(x).logits
        model.r = 0
        plain = model(x).logits
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["VivitForVideoClassification"]
    loaded = VivitForVideoClassification.from_pretrained(tmp_path, local_files_only=True).eval()
    assert not hasattr(loaded, "r")
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, plain)
        patch_hf(loaded, r=4, method="random")
        assert torch.equal(loaded(x).logits, pruned)


def test_set_pruning_checks_r_and_method_together():
    model = patch_hf(tiny_vivit(), r=9)
    with pytest.raises(ValueError, match="tome"):
        model.method = "tome"  # r=9 > half of a 16-token group
    model.set_pruning(r=4, method="tome")  # fits together
    assert model.r == (4, 4, 4) and model.method == "tome"
    with pytest.raises(ValueError):
        model.set_pruning(r=-1)
    assert model.r == (4, 4, 4)


@pytest.mark.parametrize("build", [tiny_vivit, tiny_vjepa2], ids=["vivit", "vjepa2"])
def test_trace_at_r0_lists_every_patch_position(build):
    model = patch_hf(build(seed=14), r=0)
    with torch.no_grad():
        _, trace = forward_with_trace(model, hf_pixels())
    assert len(trace.positions) == 3
    assert all(torch.equal(p, torch.arange(128).expand(2, -1)) for p in trace.positions)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_our_names_shadow_nothing_in_the_transformers_classes(family):
    """r / method / stages / set_pruning / pruning are ours on a patched model: no HF class may already have one."""
    for cls in FAMILIES[family].classes():
        taken = [name for name in ("r", "method", "stages", "set_pruning", "pruning") if hasattr(cls, name)]
        assert not taken, f"{cls.__name__} already has {taken}"


@pytest.mark.parametrize("build", [tiny_vivit, tiny_vjepa2], ids=["vivit", "vjepa2"])
def test_pruning_context_restores_r_and_method_even_on_an_error(build):
    model = patch_hf(build(seed=15), r=(4, 2, 1), method="norm")
    x = hf_pixels(seed=15)
    with torch.no_grad():
        pruned = model(x).logits
        with model.pruning(r=0, method="sta") as same:
            assert same is model and model.r == (0, 0, 0) and model.method == "sta" and model.stages == ()
            plain = model(x).logits
        for target in (model, model.base_model):  # the classifier and its bare model
            with pytest.raises(RuntimeError), target.pruning(r=2):
                assert model.r == (2, 2, 2)
                raise RuntimeError("inside the block")
            assert model.r == (4, 2, 1) and model.method == "norm"
        assert torch.equal(model(x).logits, pruned) and not torch.allclose(plain, pruned)


def test_the_0_3_names_are_gone():
    model = patch_hf(tiny_vivit(), r=2)
    for name in ("sta_r", "sta_method", "sta_stages", "set_sta"):
        assert not hasattr(model, name) and not hasattr(model.vivit, name)
