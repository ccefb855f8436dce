"""Reading, writing and converting VideoMAE release files and HF directories (sta/models/convert.py). Tiny models only,
no network."""

import argparse
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")

from transformers import VideoMAEForVideoClassification, VideoMAEModel  # noqa: E402

from sta.models.checkpoint import read_checkpoint  # noqa: E402
from sta.models.convert import (  # noqa: E402
    backbone_from_hf,
    convert_checkpoint,
    hf_model_from_release,
    load_hf_as_backbone,
    load_hf_model,
    read_hf_config,
)
from sta.models.hf_mapping import hf_config_from_release  # noqa: E402
from tests.helpers import randomize_, tiny_clips, tiny_model  # noqa: E402
from tests.models.test_hf_mapping import TINY_CFG, assert_same_tensors, random_hf_classifier  # noqa: E402


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


def test_biases_a_transformers_release_dropped_are_refused(tmp_path, monkeypatch):
    """transformers 5.0 up to its fix loaded VideoMAE 4.x directories with q/v biases at zero, saying only that
    q_bias / v_bias were unexpected: such a model is refused, not run."""
    from transformers import VideoMAEForVideoClassification

    random_hf_classifier().save_pretrained(tmp_path / "hf")
    load = VideoMAEForVideoClassification.from_pretrained.__func__

    def buggy(cls, *args, **kwargs):
        model, info = load(cls, *args, **kwargs)
        info["unexpected_keys"] = {"videomae.encoder.layer.0.attention.attention.q_bias",
                                   "videomae.encoder.layer.0.attention.attention.v_bias"}
        return model, info

    monkeypatch.setattr(VideoMAEForVideoClassification, "from_pretrained", classmethod(buggy))
    with pytest.raises(ValueError, match="did not load its attention biases .*q_bias.*upgrade transformers"):
        load_hf_as_backbone(tmp_path / "hf")


def test_convert_checkpoint_refusals_speak_in_library_terms(tmp_path):
    """What is wrong, in convert_checkpoint's own words: never a command-line flag."""
    random_hf_classifier().save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match="direction 'to-hf' converts a release checkpoint file") as err:
        convert_checkpoint(tmp_path / "hf", tmp_path / "out", direction="to-hf")
    assert "--" not in str(err.value)
    with pytest.raises(ValueError, match="direction must be one of auto, to-hf, to-release"):
        convert_checkpoint(tmp_path / "hf", tmp_path / "out", direction="sideways")
    torch.save({"model": tiny_model().state_dict()}, tmp_path / "release.pth")
    with pytest.raises(ValueError, match="not a local Hugging Face model directory"):
        convert_checkpoint(tmp_path / "release.pth", tmp_path / "out", direction="to-release")


def test_core_package_imports_without_transformers():
    code = ("import sys; sys.modules['transformers'] = None\n"
            "import sta, sta.models.convert, sta.models.hf_mapping, sta.adapters.hf, sta.adapters.directory\n"
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


def test_a_checkpoint_that_records_its_config_converts_with_it(tmp_path):
    """The bundled checkpoint's args say 64 px, 2 heads and class names: the HF directory keeps all three, and
    gives the same logits (checked before writing)."""
    from sta.data.synthetic import CLASS_NAMES
    from sta.models.bundled import BUNDLED_CHECKPOINT, load_bundled_model

    assert convert_checkpoint(BUNDLED_CHECKPOINT, tmp_path / "hf") == "to-hf"
    hf = load_hf_model(tmp_path / "hf")
    assert (hf.config.image_size, hf.config.num_attention_heads) == (64, 2)
    assert [hf.config.id2label[i] for i in range(len(CLASS_NAMES))] == list(CLASS_NAMES)
    clips = torch.randn(2, 3, 16, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(hf(clips.transpose(1, 2)).logits, load_bundled_model(proxy="easy")(clips), rtol=1e-4,
                                   atol=1e-4)


def test_converting_onto_the_source_is_refused(tmp_path):
    torch.save({"model": tiny_model().state_dict()}, tmp_path / "release.pth")
    with pytest.raises(ValueError, match="is the model being converted"):
        convert_checkpoint(tmp_path / "release.pth", tmp_path / "release.pth")
    (tmp_path / "taken").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file: a Hugging Face model is written as a directory"):
        convert_checkpoint(tmp_path / "release.pth", tmp_path / "taken", direction="to-hf")
