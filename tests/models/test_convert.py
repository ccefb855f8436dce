"""Release <-> Hugging Face VideoMAE conversion (sta/convert.py). Tiny models only, no network."""

import argparse
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")

from transformers import VideoMAEForVideoClassification, VideoMAEModel  # noqa: E402

from sta import ViTConfig, create_model  # noqa: E402
from sta.models.checkpoint import read_checkpoint  # noqa: E402
from sta.models.convert import (  # noqa: E402
    backbone_from_hf,
    convert_checkpoint,
    hf_config_from_release,
    hf_model_from_release,
    hf_to_release,
    infer_release_config,
    installed_bias_layout,
    load_hf_as_backbone,
    read_hf_config,
    release_config_from_hf,
    release_to_hf,
)
from tests.helpers import TINY, randomize_, tiny_clips, tiny_model  # noqa: E402

TINY_CFG = ViTConfig(**{k: v for k, v in TINY.items() if k != "num_classes"}, num_classes=5)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


def random_hf_classifier(seed: int = 0, **overrides) -> VideoMAEForVideoClassification:
    return randomize_(VideoMAEForVideoClassification(hf_config_from_release(TINY_CFG, **overrides)), seed).eval()


@pytest.mark.parametrize("layout", ["auto", "linear", "legacy"])
def test_release_to_hf_to_release_is_lossless(layout):
    state = tiny_model(seed=3).state_dict()
    hf_state = release_to_hf(state, bias_layout=layout)
    q_key = "videomae.encoder.layer.0.attention.attention." + ("q_bias" if layout == "legacy" else "query.bias")
    if layout != "auto":
        assert q_key in hf_state
    assert_same_tensors(hf_to_release(hf_state), state)


def test_hf_to_release_to_hf_is_lossless():
    state = random_hf_classifier(seed=4).state_dict()
    assert_same_tensors(release_to_hf(hf_to_release(state)), state)


def test_release_state_dict_fits_the_installed_transformers_exactly():
    model = VideoMAEForVideoClassification(hf_config_from_release(TINY_CFG))
    assert sorted(release_to_hf(tiny_model().state_dict())) == sorted(model.state_dict())
    assert installed_bias_layout() in ("linear", "legacy")


def test_qkv_is_split_in_query_key_value_order():
    state = tiny_model(seed=1).state_dict()
    hf_state = release_to_hf(state, bias_layout="linear")
    qkv = state["blocks.2.attn.qkv.weight"]
    prefix = "videomae.encoder.layer.2.attention.attention."
    for i, name in enumerate(("query", "key", "value")):
        assert torch.equal(hf_state[prefix + name + ".weight"], qkv[32 * i: 32 * (i + 1)])
    assert torch.equal(hf_state[prefix + "query.bias"], state["blocks.2.attn.q_bias"])
    assert torch.equal(hf_state[prefix + "value.bias"], state["blocks.2.attn.v_bias"])
    assert torch.equal(hf_state["classifier.weight"], state["head.weight"])
    assert torch.equal(hf_state["fc_norm.bias"], state["fc_norm.bias"])


def test_configs_round_trip_and_use_the_release_eps():
    hf_config = hf_config_from_release(TINY_CFG)
    assert hf_config.layer_norm_eps == 1e-6 and hf_config.use_mean_pooling and hf_config.hidden_act == "gelu"
    assert getattr(hf_config, "qv_bias", getattr(hf_config, "qkv_bias", None)) is True
    assert (hf_config.image_size, hf_config.num_frames, hf_config.tubelet_size, hf_config.patch_size,
            hf_config.num_labels, hf_config.intermediate_size) == (32, 16, 2, 8, 5, 128)
    assert release_config_from_hf(hf_config) == TINY_CFG


def test_hf_configs_the_backbone_cannot_express_are_refused():
    for bad in (dict(use_mean_pooling=False), dict(hidden_act="relu"), dict(image_size=[32, 48])):
        with pytest.raises(ValueError, match="does not fit|square"):
            release_config_from_hf(hf_config_from_release(TINY_CFG, **bad))


def test_infer_release_config_from_shapes():
    assert infer_release_config(tiny_model().state_dict(), num_frames=16, img_size=32, num_heads=2) == TINY_CFG
    with torch.device("meta"):
        base = create_model("vit_base_patch16_224", num_classes=174)
    assert infer_release_config(base.state_dict()) == base.cfg  # heads from the release size table


def test_converted_model_matches_release_backbone_logits():
    core = tiny_model(seed=2)
    hf = hf_model_from_release(core.state_dict(), core.cfg)
    clips = tiny_clips(2, seed=2)
    with torch.no_grad():
        ref = core(clips)
        out = hf(clips.transpose(1, 2)).logits  # HF takes B x T x C x H x W
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)  # fc_norm eps: 1e-5 in HF, 1e-6 in the release


def test_release_file_to_hf_dir_and_back(tmp_path):
    core = tiny_model(seed=5)
    src = tmp_path / "release.pth"
    args = argparse.Namespace(num_frames=16, input_size=32, nb_classes=5, model="vit_small_patch16_224")
    torch.save({"module": core.state_dict(), "args": args}, src)
    # heads are not in the weights: a tiny width matches no release size, so name them
    assert convert_checkpoint(src, tmp_path / "hf", num_heads=2) == "to-hf"
    hf = VideoMAEForVideoClassification.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert (hf.config.num_frames, hf.config.image_size, hf.config.num_attention_heads) == (16, 32, 2)
    assert hf.config.layer_norm_eps == 1e-6

    assert convert_checkpoint(tmp_path / "hf", tmp_path / "back.pth") == "to-release"
    back = read_checkpoint(tmp_path / "back.pth")
    assert_same_tensors(back["model"], core.state_dict())
    assert (back["args"].num_frames, back["args"].input_size, back["args"].nb_classes) == (16, 32, 5)

    clips = tiny_clips(2, seed=5)
    backbone = load_hf_as_backbone(tmp_path / "hf", r=3)
    assert backbone.r == (3, 3, 3) and backbone.cfg == read_hf_config(tmp_path / "hf")
    core.r = 3
    with torch.no_grad():
        torch.testing.assert_close(backbone(clips), core(clips), rtol=1e-4, atol=1e-4)
        backbone.r = 0
        torch.testing.assert_close(backbone(clips), hf(clips.transpose(1, 2)).logits, rtol=1e-5, atol=1e-5)


def test_backbone_from_hf_reproduces_the_hf_model():
    hf = random_hf_classifier(seed=6)
    clips = tiny_clips(2, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(backbone_from_hf(hf)(clips), hf(clips.transpose(1, 2)).logits,
                                   rtol=1e-5, atol=1e-5)


def test_hf_directory_without_classifier_is_refused(tmp_path):
    randomize_(VideoMAEModel(hf_config_from_release(TINY_CFG))).save_pretrained(tmp_path / "bare")
    with pytest.raises(ValueError, match="missing weights"):
        load_hf_as_backbone(tmp_path / "bare")
    with pytest.raises(ValueError, match="not a local Hugging Face model directory"):
        load_hf_as_backbone(tmp_path / "nowhere")


def test_bad_state_dicts_are_value_errors():
    state = tiny_model().state_dict()
    with pytest.raises(ValueError, match="pre-training"):
        release_to_hf({**state, "encoder.blocks.0.norm1.weight": torch.ones(32)})
    hf_state = release_to_hf(state)
    with pytest.raises(ValueError, match="key bias"):
        hf_to_release({**hf_state, "videomae.encoder.layer.0.attention.attention.key.bias": torch.ones(32)})
    with pytest.raises(ValueError, match="no release counterpart"):
        hf_to_release({**hf_state, "decoder.head.weight": torch.ones(2, 2)})
    with pytest.raises(ValueError, match="bias_layout"):
        release_to_hf(state, bias_layout="fused")


def test_fixed_pos_embed_is_dropped_and_learned_one_refused():
    core = tiny_model()
    state = core.state_dict()
    assert_same_tensors(release_to_hf({**state, "pos_embed": core.pos_embed.clone()}), release_to_hf(state))
    with pytest.raises(ValueError, match="sin-cos"):
        release_to_hf({**state, "pos_embed": torch.randn_like(core.pos_embed)})


def test_core_package_imports_without_transformers():
    code = ("import sys; sys.modules['transformers'] = None\n"
            "import sta, sta.models.convert, sta.adapters.hf\n"
            "assert sta.create_model('vit_small_patch16_224') is not None\n")
    subprocess.run([sys.executable, "-c", code], check=True)



def test_cli_convert_then_flops_and_eval_with_hf_model(tmp_path, capsys, sample_videos):
    import json

    from sta.cli import main

    torch.save({"model": tiny_model(seed=6).state_dict()}, tmp_path / "release.pth")
    assert main(["convert", str(tmp_path / "release.pth"), str(tmp_path / "hf"), "--num-heads", "2",
                 "--input-size", "32"]) == 0
    assert "to-hf" in capsys.readouterr().out
    processor = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.485, 0.456, 0.406] and processor["image_std"] == [0.229, 0.224, 0.225]
    from sta.adapters.directory import load_hf_directory

    assert load_hf_directory(tmp_path / "hf").cfg.mean == (0.485, 0.456, 0.406)  # what eval normalises with
    assert main(["flops", "--hf-model", str(tmp_path / "hf"), "--r", "0", "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[1]["tokens"] == [8 * 12, 4 * 20, 2 * 36] and rows[1]["gflops"] < rows[0]["gflops"]
    (tmp_path / "test.csv").write_text("bikes.mp4 2\n")
    assert main(["eval", "--hf-model", str(tmp_path / "hf"), "--data-path", str(tmp_path), "--data-root",
                 str(sample_videos), "--r", "4", "--output-dir", str(tmp_path / "out"), "--num-workers", "0",
                 "--test-num-segment", "1", "--test-num-crop", "1", "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["views"] == 1 and summary["model"]["hf_model"].endswith("hf") and summary["model"]["r"] == [4] * 3
