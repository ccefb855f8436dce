"""An exported file is not trusted blindly: its metadata is validated and its digest checked on every load."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace

import pytest
import torch

from sta.cli import main
from sta.deploy.export import export_model
from sta.deploy.metadata import INFO_KEY, ModelInfo, model_info, read_info
from sta.deploy.runners import open_exported
from sta.errors import InvalidInput
from tests.helpers import tiny_clips, tiny_model

onnx = pytest.importorskip("onnx")
pytestmark = pytest.mark.slow  # exports take seconds on 2 cores

NAMES = [f"c{i}" for i in range(5)]


@pytest.fixture(scope="module")
def model():
    return tiny_model(r=(3, 2, 1), seed=5)


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_model(model, path, model_info(model, "tiny", NAMES, random_weights=True))
    return path


@pytest.fixture(scope="module")
def pt2_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("pt2") / "tiny.pt2"
    export_model(model, path, model_info(model, "tiny", NAMES))
    return path


def _rewrite_metadata(src, dst, edit):
    proto = onnx.load(str(src))
    entry = next(p for p in proto.metadata_props if p.key == INFO_KEY)
    data = json.loads(entry.value)
    edit(data)
    entry.value = json.dumps(data)
    onnx.save(proto, str(dst))
    return dst


def test_a_sealed_file_verifies_and_records_random_weights(onnx_file, pt2_file):
    assert read_info(onnx_file).random_weights and read_info(onnx_file).digest
    assert not read_info(pt2_file).random_weights and read_info(pt2_file).digest


def test_changed_onnx_weights_are_refused_unless_skipped(model, onnx_file, tmp_path):
    proto = onnx.load(str(onnx_file))
    weight = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    weight.raw_data = bytes(len(weight.raw_data))  # zeroed weights: the graph would answer differently
    onnx.save(proto, str(tmp_path / "edited.onnx"))
    with pytest.raises(InvalidInput, match="changed after `sta export` wrote it") as err:
        open_exported(tmp_path / "edited.onnx")
    assert err.value.param == "skip_verify" and "edited.onnx" in str(err.value)
    runner = open_exported(tmp_path / "edited.onnx", verify=False)
    assert runner(tiny_clips(1)).shape == (1, 5)


def test_changed_pt2_weights_are_refused(pt2_file, tmp_path):
    edited = tmp_path / "tiny.pt2"
    with zipfile.ZipFile(pt2_file) as src, zipfile.ZipFile(edited, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if "/data/weights/" in item.filename and len(data) > 64:
                data = bytes(len(data))
            dst.writestr(item, data)
    with pytest.raises(InvalidInput, match="digest does not match"):
        read_info(edited)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(class_names=d["class_names"][:2]), "class_names must be one per class"),
    (lambda d: d.update(r="16"), "r must be 3 counts"),
    (lambda d: d.update(r=[9, 9, 9]), "keeps"),  # an r the graph does not run
    (lambda d: d.update(num_frames=0), "frames, size and classes"),
    (lambda d: d.update(method="magic"), "unknown method"),
    (lambda d: d.pop("num_classes"), "missing fields"),
])
def test_hand_edited_metadata_is_refused_with_the_field(onnx_file, tmp_path, edit, message):
    path = _rewrite_metadata(onnx_file, tmp_path / "m.onnx", edit)
    with pytest.raises(InvalidInput, match=message):
        read_info(path, verify=False)


def test_a_metadata_edit_that_stays_valid_breaks_the_digest(onnx_file, tmp_path):
    path = _rewrite_metadata(onnx_file, tmp_path / "m.onnx", lambda d: d.update(random_weights=False))
    with pytest.raises(InvalidInput, match="digest does not match"):
        read_info(path)
    assert not read_info(path, verify=False).random_weights


def test_missing_or_truncated_weights_file_is_named(model, tmp_path, monkeypatch):
    monkeypatch.setattr("sta.deploy.export.ONNX_SINGLE_FILE_LIMIT", 1000)  # force NAME.onnx.data on a tiny model
    path = tmp_path / "big.onnx"
    export_model(model, path, model_info(model, "tiny", NAMES))
    data = tmp_path / "big.onnx.data"
    assert data.is_file() and read_info(path).digest
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(InvalidInput, match="big.onnx.data is truncated"):
        read_info(path)
    data.unlink()
    with pytest.raises(InvalidInput, match="big.onnx.data is missing"):
        open_exported(path)


def test_files_without_a_digest_are_refused_unless_skipped(onnx_file, tmp_path):
    path = _rewrite_metadata(onnx_file, tmp_path / "old.onnx", lambda d: d.update(digest=None))
    with pytest.raises(InvalidInput, match="carries no digest"):
        read_info(path)


def test_cli_names_the_file_and_the_flag(onnx_file, tmp_path, sample_videos, capsys):
    path = _rewrite_metadata(onnx_file, tmp_path / "e.onnx", lambda d: d.update(model="other"))
    video = str(sample_videos / "bikes.mp4")
    assert main(["predict", video, "--exported", str(path), "--views", "1x1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "e.onnx: its graph, weights or metadata changed" in err and "--skip-verify" in err
    assert main(["predict", video, "--exported", str(path), "--views", "1x1", "--no-progress",
                 "--skip-verify"]) == 0
    assert "RANDOM WEIGHTS" in capsys.readouterr().err  # recorded at export, shown when the file is used


@pytest.mark.parametrize("given", [["--r", "0"], ["--r", "3,2,1"], ["--method", "sta"], ["--num-frames", "8"]])
def test_options_an_exported_file_fixes_are_refused_whatever_their_value(onnx_file, sample_videos, capsys, given):
    assert main(["predict", str(sample_videos / "bikes.mp4"), "--exported", str(onnx_file), *given]) == 2
    assert "--exported brings its own model, r and method: drop --" in capsys.readouterr().err


def test_non_finite_logits_are_never_exported(model, tmp_path):
    broken = tiny_model(r=(3, 2, 1), seed=5)
    with torch.no_grad():
        broken.head.bias.fill_(float("nan"))
    from sta.deploy.export import ExportError

    with pytest.raises(ExportError, match="not finite"):
        export_model(broken, tmp_path / "nan.onnx", model_info(broken, "nan"))
    assert not list(tmp_path.iterdir())


def test_model_info_round_trips_through_json():
    info = ModelInfo(model="m", r=(1, 2, 3), method="sta", num_frames=16, img_size=32, num_classes=2,
                     tokens_per_stage=[1, 2, 3], gflops_per_view=1.0, class_names=["a", "b"])
    assert ModelInfo.from_json(info.to_json(), "x") == info and replace(info, digest="d").digest == "d"
