"""Every dataset the release evaluates (UCF101, HMDB51 beside Kinetics and SSv2), and one's own: `--data-set custom`.

A 4-class checkpoint evaluated end to end on its own list (with a skipped video and a resume), predicted with
its names, compared; a head and a named dataset that disagree are still refused.
"""

from __future__ import annotations

import json

import pytest
import torch

from sta import labels
from sta.cli import main
from sta.data.datasets import DATASETS, check_label_space, dataset, with_protocol
from sta.errors import InvalidInput
from tests.videos import solid_video

NAMES = ["pour", "stir", "chop", "serve"]


@pytest.fixture(scope="module")
def four_class(tmp_path_factory):
    """A 4-class ViT-S checkpoint (32 px input), its class names, and a list of 4 videos plus a broken one."""
    from sta import create_model

    root = tmp_path_factory.mktemp("own")
    torch.manual_seed(0)
    model = create_model("vit_small_patch16_224", num_classes=4, img_size=32)
    torch.save({"model": model.state_dict()}, root / "own.pth")
    (root / "names.txt").write_text("\n".join(NAMES) + "\n")
    lines = []
    for c, grey in enumerate((30, 90, 150, 210)):
        solid_video(root / f"v{c}.mp4", grey, num_frames=40)
        lines.append(f"v{c}.mp4 {c}")
    (root / "broken.mp4").write_bytes(b"\x00" * 500)
    (root / "test.csv").write_text("\n".join(lines + ["broken.mp4 1"]) + "\n")
    return root


def model_args(root) -> list[str]:
    return ["--model", "vit_small_patch16_224", "--input-size", "32", "--nb-classes", "4",
            "--ckpt-path", str(root / "own.pth")]


def test_the_table_has_the_release_datasets_with_their_names():
    assert DATASETS["UCF101"].num_classes == len(labels.load("UCF101")) == 101
    assert DATASETS["HMDB51"].num_classes == len(labels.load("hmdb51")) == 51
    assert labels.load("ucf101")[0] == "ApplyEyeMakeup" and labels.load("ucf101")[-1] == "YoYo"
    assert labels.load("hmdb51")[:3] == ["brush_hair", "cartwheel", "catch"]
    assert DATASETS["UCF101"].protocol == DATASETS["HMDB51"].protocol == "kinetics"  # the release's loader
    assert dataset("ucf").name == "UCF101" and dataset("HMDB-51").name == "HMDB51"
    with pytest.raises(InvalidInput, match="no class names ship"):
        labels.load("custom")


def test_custom_takes_any_head_and_chooses_its_protocol_named_ones_do_not():
    check_label_space(DATASETS["custom"], 4)
    with pytest.raises(InvalidInput, match="`data_set` custom"):
        check_label_space(DATASETS["UCF101"], 4)
    assert with_protocol(DATASETS["custom"], "ssv2").protocol == "ssv2"
    with pytest.raises(InvalidInput, match="custom only"):
        with_protocol(DATASETS["UCF101"], "ssv2")


def eval_summary(root, out, *extra) -> dict:
    code = main(["eval", *model_args(root), "--data-path", str(root), "--data-set", "custom", "--output-dir",
                 str(out), "--test-num-segment", "2", "--test-num-crop", "1", "--num-workers", "0", "--json",
                 "--no-progress", *extra])
    assert code == 0
    return json.loads((out / "summary.json").read_text())


def test_eval_custom_skips_a_bad_video_and_resumes(four_class, tmp_path, capsys):
    first = eval_summary(four_class, tmp_path / "o")
    assert first["videos"] == 4 and [s["video"] for s in first["skipped"]] == ["broken.mp4"]
    again = eval_summary(four_class, tmp_path / "o")
    assert again["resumed_views"] == 8 and again["top1"] == first["top1"]
    assert again["computed_videos"] == 1  # only the broken video is tried again
    ssv2 = eval_summary(four_class, tmp_path / "s", "--protocol", "ssv2")
    assert ssv2["protocol"] != first["protocol"]  # segments spread over the video: other views


def test_a_named_dataset_that_disagrees_with_the_head_is_refused(four_class, tmp_path, capsys):
    code = main(["eval", *model_args(four_class), "--data-path", str(four_class), "--data-set", "UCF101",
                 "--output-dir", str(tmp_path / "o"), "--no-progress"])
    assert code == 2 and "--data-set custom" in capsys.readouterr().err


def test_a_label_beyond_the_class_count_names_the_file_and_line(four_class, tmp_path, capsys):
    (tmp_path / "test.csv").write_text(f"{four_class / 'v0.mp4'} 0\n{four_class / 'v1.mp4'} 4\n")
    code = main(["eval", *model_args(four_class), "--data-path", str(tmp_path), "--data-set", "custom",
                 "--output-dir", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "test.csv" in err and "line 2" in err and len(err.strip().splitlines()) == 1


def test_predict_names_the_classes_from_a_file_else_class_n(four_class, capsys):
    video = str(four_class / "v2.mp4")
    common = ["predict", video, *model_args(four_class), "--data-set", "custom", "--views", "1x1", "--json",
              "--no-progress"]
    assert main([*common, "--labels", str(four_class / "names.txt")]) == 0
    named = json.loads(capsys.readouterr().out.splitlines()[0])
    assert {row["name"] for row in named["top"]} <= set(NAMES)
    assert main(common) == 0
    numbered = json.loads(capsys.readouterr().out.splitlines()[0])
    assert {row["name"] for row in numbered["top"]} <= {f"class_{i}" for i in range(4)}


def test_compare_runs_on_the_custom_list(four_class, tmp_path, capsys):
    code = main(["compare", *model_args(four_class), "--data-path", str(four_class), "--data-set", "custom",
                 "--methods", "sta", "random", "--r", "1", "--test-num-segment", "1", "--test-num-crop", "1",
                 "--num-workers", "0", "--timing-rounds", "0", "--out", str(tmp_path / "c"), "--no-progress"])
    assert code == 0
    lines = [json.loads(line) for line in (tmp_path / "c" / "compare.jsonl").read_text().splitlines()]
    rows = [row for row in lines if "method" in row]
    assert {row["method"] for row in rows} >= {"sta", "random"} and all(row["clips"] == 4 for row in rows)
    assert [row["skipped"] for row in lines if "skipped" in row] == ["broken.mp4"]  # named in the JSONL too
