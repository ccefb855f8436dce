"""What a newcomer reads: errors that name the file once and say what to do, notes where a number could mislead."""

from __future__ import annotations

import pytest

from sta.cli import main


def test_an_unknown_word_points_at_the_commands_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["flops", "--r", "16", "--bogus"])
    assert exit_.value.code == 2
    assert "see: sta flops --help" in capsys.readouterr().err


def test_a_file_that_is_not_a_video_is_named_once_without_errno(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a video\n")
    assert main(["predict", str(tmp_path / "notes.txt"), "--views", "1x1", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert out.count("notes.txt") == 1 and "Errno" not in out and "cannot open as a video" in out


def test_vis_on_a_folder_says_what_it_takes(tmp_path, capsys):
    assert main(["vis", str(tmp_path)]) == 2
    assert "is a folder: sta vis draws one video" in capsys.readouterr().err


def test_a_hub_id_says_a_local_directory_is_needed_and_how(capsys):
    pytest.importorskip("transformers")
    assert main(["flops", "--hf-model", "MCG-NJU/videomae-base-finetuned-kinetics"]) == 2
    err = capsys.readouterr().err
    assert "looks like a Hugging Face hub id" in err and "huggingface-cli download" in err


def test_the_bundled_model_says_it_only_knows_its_task(sample_videos, capsys):
    assert main(["predict", str(sample_videos / "bikes.mp4"), "--views", "1x1", "--no-progress"]) == 0
    assert "knows only its synthetic task" in capsys.readouterr().err


def test_eval_says_what_it_resumed(tmp_path, capsys):
    from sta.data.proxies import write_videos

    write_videos(tmp_path / "v", 2)
    argv = ["eval", "--data-path", str(tmp_path / "v"), "--model", "vit_small_patch16_224", "--input-size", "32",
            "--nb-classes", "12", "--num-frames", "16", "--sampling-rate", "1", "--test-num-segment", "1",
            "--test-num-crop", "1", "--num-workers", "0", "--output-dir", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 0
    assert "sta eval: resumed" not in capsys.readouterr().err
    assert main(argv) == 0
    assert "resumed 2 views" in capsys.readouterr().err


@pytest.mark.parametrize(("method", "reason"), [("oracle", "backward pass on every clip"),
                                                ("rlt-threshold", "no static graph can hold")])
def test_export_refuses_methods_no_graph_can_run_up_front(tmp_path, method, reason, capsys):
    assert main(["export", "--method", method, "--out", str(tmp_path / "m.onnx")]) == 2
    assert reason in capsys.readouterr().err and not list(tmp_path.iterdir())
