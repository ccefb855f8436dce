"""HFVideoClassifier (our backbone's interface around a patched HF classifier) and loading HF directories."""

import json

import pytest
import torch

pytest.importorskip("transformers")

from transformers import VJEPA2Model  # noqa: E402

from sta import TokenTrace, VisionTransformer, tokens_after_stages  # noqa: E402
from sta.adapters.directory import hf_architecture, load_hf_directory, read_normalization  # noqa: E402
from sta.adapters.family import normalization  # noqa: E402
from sta.adapters.hf import FAMILIES, forward_with_trace  # noqa: E402
from sta.adapters.wrapper import HFVideoClassifier  # noqa: E402
from sta.data.sampling import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from sta.measure.flops import count_flops, flops_report  # noqa: E402
from sta.models.convert import hf_model_from_release  # noqa: E402
from tests.adapters.tiny_hf import SLICES, SPATIAL, hf_pixels, tiny_vivit, tiny_vjepa2, vjepa2_config  # noqa: E402
from tests.helpers import randomize_, tiny_model  # noqa: E402

BUILDERS = {"vivit": tiny_vivit, "vjepa2": tiny_vjepa2}


def clips(batch=2, seed=0):
    """Our layout: B x 3 x F x H x W."""
    return hf_pixels(batch, seed).transpose(1, 2)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_forward_trace_and_cfg_follow_the_hf_model(family):
    hf = BUILDERS[family](seed=1)
    model = HFVideoClassifier(hf, r=4)
    cfg = model.cfg
    assert (cfg.family, cfg.num_frames, cfg.img_size, cfg.tubelet_size, cfg.patch_size) == (family, 16, 32, 2, 8)
    assert (cfg.num_slices, cfg.tokens_per_slice, cfg.num_classes, cfg.in_chans, cfg.depth) == (8, 16, 5, 3, 3)
    x = clips(seed=1)
    with torch.no_grad():
        logits = model(x)
        logits2, trace = model(x, return_trace=True)
        theirs, their_trace = forward_with_trace(hf, x.transpose(1, 2))
    assert logits.shape == (2, 5) and torch.equal(logits, theirs.logits) and torch.equal(logits2, logits)
    assert isinstance(trace, TokenTrace)
    assert all(torch.equal(a, b) for a, b in zip(trace.positions, their_trace.positions))
    assert [p.shape[1] for p in trace.positions] == list(tokens_after_stages(SLICES, SPATIAL, 4))
    with pytest.raises(ValueError, match="B x 3 x 16 x 32 x 32"):
        model(x.transpose(1, 2))


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_r_method_set_pruning_and_context_manager(family):
    model = HFVideoClassifier(BUILDERS[family](seed=2))
    assert model.r == (0, 0, 0) and model.method == "sta"
    model.r = (3, 2, 1)
    assert model.hf.r == (3, 2, 1)
    with pytest.raises(ValueError):
        model.r = 16
    with pytest.raises(ValueError, match="unknown method"):
        model.method = "magic"
    assert model.r == (3, 2, 1) and model.method == "sta"
    model.set_pruning(r=9, method="norm")
    with pytest.raises(ValueError, match="tome"):
        model.set_pruning(method="tome")  # r=9 is too large for ToMe
    model.set_pruning(r=4, method="tome")  # but fine together
    x = clips(seed=2)
    with torch.no_grad():
        pruned = model(x)
        with model.pruning(r=0, method="sta") as same:
            assert same is model and model.r == (0, 0, 0)
            plain = model(x)
            assert torch.equal(plain, model.hf(x.transpose(1, 2)).logits)
        assert model.r == (4, 4, 4) and model.method == "tome"
        assert torch.equal(model(x), pruned)
    assert not torch.allclose(plain, pruned)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_patch_embed_gives_the_patch_tokens_for_gradnorm_maps(family):
    """What sta vis does: swap the patch embeddings for a leaf and differentiate a logit through the pruned model."""
    model = HFVideoClassifier(BUILDERS[family](seed=3), r=2)
    captured = {}

    def swap_in_leaf(module, inputs, output):
        captured["leaf"] = output.detach().requires_grad_(True)
        return captured["leaf"]

    handle = model.get_submodule("patch_embed").register_forward_hook(swap_in_leaf)
    try:
        with torch.enable_grad():
            logits = model(clips(1, seed=3))
            (grad,) = torch.autograd.grad(logits[0, 0], captured["leaf"])
    finally:
        handle.remove()
    assert grad.shape == (1, SLICES * SPATIAL, 32) and grad.norm(dim=-1).gt(0).all()


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_flops_on_weighted_and_meta_models(family):
    model = HFVideoClassifier(BUILDERS[family](seed=4))
    meta = model.meta_copy()
    assert all(p.is_meta for p in meta.parameters()) and meta.cfg == model.cfg
    base = count_flops(model)  # sta.measure.flops' own meta copy (a deep copy moved to meta)
    assert count_flops(meta) == base > 0
    with model.pruning(r=6), meta.pruning(r=6):
        report = flops_report(model)
        assert count_flops(meta) == report.flops < base
    assert report.tokens == tokens_after_stages(SLICES, SPATIAL, 6)


def test_refuses_bare_models():
    with pytest.raises(TypeError, match="classifier"):
        HFVideoClassifier(randomize_(VJEPA2Model(vjepa2_config())))


# --------------------------------------------------------------------------------------------- directories


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_load_hf_directory_round_trip(tmp_path, family):
    hf = BUILDERS[family](seed=5)
    hf.save_pretrained(tmp_path)
    model = load_hf_directory(tmp_path, r=3, method="temporal")
    assert isinstance(model, HFVideoClassifier) and not model.training
    assert model.r == (3, 3, 3) and model.method == "temporal"
    x = clips(seed=5)
    with torch.no_grad():
        mine = model(x)
        HFVideoClassifier(hf, r=3, method="temporal")
        assert torch.equal(mine, hf(x.transpose(1, 2)).logits)
    default_mean = {"vivit": (0.75,) * 3, "vjepa2": IMAGENET_MEAN}[family]
    torch.testing.assert_close(torch.tensor(model.cfg.mean), torch.tensor(default_mean))
    arch = hf_architecture(tmp_path, r=3)
    assert all(p.is_meta for p in arch.parameters()) and arch.cfg == model.cfg
    with model.pruning(method="sta"):
        assert count_flops(arch) == count_flops(model)
    random = hf_architecture(tmp_path, r=3, device="cpu")  # what sta bench times
    assert not any(p.is_meta for p in random.parameters()) and random(x).shape == (2, 5)


def test_videomae_directory_gives_our_backbone_with_the_directory_normalisation(tmp_path):
    core = tiny_model(seed=6)
    hf_model_from_release(core.state_dict(), core.cfg).save_pretrained(tmp_path)
    model = load_hf_directory(tmp_path, r=2)
    assert isinstance(model, VisionTransformer) and model.r == (2, 2, 2)
    assert model.cfg.mean == (0.5,) * 3  # VideoMAEImageProcessor's default when the directory has no processor
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "VideoMAEImageProcessor", "image_mean": list(IMAGENET_MEAN),
         "image_std": list(IMAGENET_STD), "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True}))
    model = load_hf_directory(tmp_path, method="norm")
    torch.testing.assert_close(torch.tensor(model.cfg.mean), torch.tensor(IMAGENET_MEAN))
    assert model.method == "norm"
    arch = hf_architecture(tmp_path, r=2)
    assert isinstance(arch, VisionTransformer) and all(p.is_meta for p in arch.parameters())
    assert arch.cfg.mean == model.cfg.mean and arch.r == (2, 2, 2)


def test_processor_settings_fold_into_mean_and_std():
    vivit = FAMILIES["vivit"]
    # ViViT: p / 127.5 - 1, then (x - 0.5) / 0.5 -> (u - 0.75) / 0.25 on u = p / 255
    mean, std = normalization({}, vivit)
    torch.testing.assert_close(torch.tensor(mean + std), torch.tensor((0.75,) * 3 + (0.25,) * 3))
    mean, std = normalization({"offset": False, "rescale_factor": 1 / 255, "image_mean": [0.4, 0.5, 0.6],
                               "image_std": 0.2}, vivit)
    torch.testing.assert_close(torch.tensor(mean + std), torch.tensor((0.4, 0.5, 0.6, 0.2, 0.2, 0.2)))
    mean, std = normalization({"do_normalize": False}, FAMILIES["vjepa2"])
    assert mean == (0.0,) * 3 and std == (1.0,) * 3
    u = torch.rand(3, 4)  # check the algebra on values: what the processor computes from pixels p = 255 u
    mean, std = normalization({}, vivit)
    processor = ((u * 255) / 127.5 - 1 - 0.5) / 0.5
    torch.testing.assert_close((u - mean[0]) / std[0], processor)


def test_processor_file_is_read(tmp_path):
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1, 0.2, 0.3]}))
    mean, std = read_normalization(tmp_path, "vjepa2")
    torch.testing.assert_close(torch.tensor(mean + std), torch.tensor((0.1, 0.2, 0.3) + IMAGENET_STD))


def test_unknown_family_and_broken_directories_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "timesformer"}))
    for fn in (load_hf_directory, hf_architecture):
        with pytest.raises(ValueError, match=r"config.json: model_type 'timesformer' is not supported "
                                             r"\(supported: 'videomae', 'vivit', 'vjepa2'\)"):
            fn(tmp_path)
    with pytest.raises(ValueError, match="not a local Hugging Face model directory"):
        load_hf_directory(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_hf_directory(tmp_path)


def test_a_directory_without_classifier_weights_is_refused(tmp_path):
    randomize_(VJEPA2Model(vjepa2_config())).save_pretrained(tmp_path)  # a pre-training encoder + predictor
    with pytest.raises(ValueError, match="VJEPA2ForVideoClassification; missing weights"):
        load_hf_directory(tmp_path)
