"""`sta predict`: top-k names per video with the evaluation's views; bad videos reported, the rest go on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sta.cli import main
from sta.data import ViewProtocol
from sta.data.proxies import write_videos
from sta.data.synthetic_hard import CLASS_NAMES  # the default bundled model's (the hard proxy's)
from sta.evaluate.predict import expand_inputs, predict_videos, top_classes


@pytest.fixture(scope="module")
def proxy_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("proxy")
    return folder, write_videos(folder, 12)


def test_bundled_model_names_the_proxy_clips(proxy_videos, capsys):
    folder, paths = proxy_videos
    assert main(["predict", str(folder), "--sampling-rate", "1", "--views", "1x1", "--json", "--no-progress"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["video"] for row in rows] == [str(p) for p in paths]
    hits = sum(row["top"][0]["name"] == path.stem.split("_", 1)[1] for row, path in zip(rows, paths))
    assert hits >= 9  # the hard bundled model: 94% on its 240 demo clips, 9 of these 12; lossless video
    assert all(len(row["top"]) == 5 and row["views"] == 1 for row in rows)


def test_bad_videos_are_reported_and_exit_status_says_so(proxy_videos, tmp_path, capsys):
    _, paths = proxy_videos
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    code = main(["predict", str(paths[0]), str(tmp_path / "broken.mp4"), str(tmp_path / "absent.mp4"),
                 "--sampling-rate", "1", "--views", "1x1", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1 and "2 of 3 videos could not be read" in err
    assert out.count(": error: ") == 2 and out.splitlines()[0].startswith(str(paths[0]))


def test_random_weights_are_announced(sample_videos, capsys):
    assert main(["predict", str(sample_videos / "bikes.mp4"), "--model", "vit_small_patch16_224", "--input-size",
                 "32", "--views", "1x1", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "RANDOM WEIGHTS" in captured.err and "bikes.mp4: abseiling" not in captured.out  # names are K400's
    assert captured.out.startswith(str(sample_videos / "bikes.mp4"))


def test_labels_file_and_views(tmp_path, proxy_videos):
    folder, paths = proxy_videos
    (tmp_path / "names.txt").write_text("\n".join(f"my_{n}" for n in CLASS_NAMES))
    from sta.models.bundled import load_bundled_model

    model = load_bundled_model(r=16)
    views = ViewProtocol("kinetics", num_frames=16, sampling_rate=1, num_segments=2, num_crops=1, crop_size=64)
    (pred,) = predict_videos(lambda clips: model(clips), [str(paths[0])], views, class_names=CLASS_NAMES, top_k=3,
                             progress=False)
    assert pred.views == 2 and len(pred.top) == 3 and pred.top[0][2] >= pred.top[1][2] >= pred.top[2][2]
    assert abs(sum(p for _, _, p in top_classes(np.full(4, 0.25), None, 4)) - 1.0) < 1e-9


def test_expand_inputs(tmp_path, proxy_videos):
    folder, paths = proxy_videos
    assert expand_inputs([str(folder)]) == [str(p) for p in paths]  # test.csv is not a video
    assert expand_inputs([str(folder / "00*.mp4")]) == [str(p) for p in paths[:10]]
    with pytest.warns(UserWarning, match="no videos there"), pytest.raises(ValueError, match="no videos in"):
        expand_inputs([str(tmp_path)])


def test_expand_inputs_lists_each_video_file_once(tmp_path, proxy_videos):
    folder, paths = proxy_videos
    (tmp_path / "dir.mp4").mkdir()  # a folder with a video's name is not a video
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)  # ** would walk it again and again
    (tmp_path / "a.mp4").write_bytes(paths[0].read_bytes())
    (tmp_path / "link.mp4").symlink_to(tmp_path / "a.mp4")
    found = expand_inputs([str(tmp_path), str(tmp_path / "**" / "*.mp4"), str(tmp_path / "a.mp4")])
    assert found == [str(tmp_path / "a.mp4")]
    with pytest.warns(UserWarning, match="nothing_here"):  # an empty glob is said, and the others still run
        assert expand_inputs([str(tmp_path / "nothing_here*.mp4"), str(paths[1])]) == [str(paths[1])]


@pytest.mark.slow
def test_exported_file_alone_predicts_and_evaluates(proxy_videos, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    folder, paths = proxy_videos
    assert main(["export", "--out", str(tmp_path / "proxy.onnx"), "--r", "16"]) == 0
    assert "checked against the eager model" in capsys.readouterr().out
    assert main(["predict", str(paths[0]), "--exported", str(tmp_path / "proxy.onnx"), "--sampling-rate", "1",
                 "--views", "1x1", "--top-k", "1", "--no-progress"]) == 0
    line = capsys.readouterr().out.strip()  # the file alone names the class (the clip's own here) and its probability
    assert line.startswith(f"{paths[0]}: {paths[0].stem.split('_', 1)[1]} ") and line.endswith("%")
    assert main(["eval", "--exported", str(tmp_path / "proxy.onnx"), "--data-path", str(folder), "--data-root",
                 str(folder), "--sampling-rate", "1", "--test-num-segment", "1", "--test-num-crop", "1",
                 "--num-workers", "0", "--no-progress", "--json", "--output-dir", str(tmp_path / "eval")]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["top1"] >= 75 and summary["protocol"]["backend"] == "onnxruntime"  # 9 of 12 at r=0 eager
    assert summary["model"]["r"] == [16, 16, 16] and summary["gflops_per_view"] > 0
    assert main(["eval", "--exported", str(tmp_path / "proxy.onnx"), "--r", "8", "--data-path", str(folder)]) == 2
    assert "--exported brings its own model, r and method: drop --r" in capsys.readouterr().err


def test_non_finite_logits_are_an_error_not_a_class(proxy_videos):
    """A NaN ranks first in an argsort: it must not come out as class 0 at 'nan%'."""
    _, paths = proxy_videos
    views = ViewProtocol("kinetics", num_frames=16, sampling_rate=1, num_segments=1, num_crops=1, crop_size=64)
    nan_runner = lambda clips: torch.full((clips.shape[0], len(CLASS_NAMES)), float("nan"))
    (pred,) = predict_videos(nan_runner, [str(paths[0])], views, class_names=CLASS_NAMES, progress=False)
    assert pred.top == [] and "not finite" in pred.error
    json.dumps(pred.to_dict(), allow_nan=False)  # valid JSON
