"""`sta export --quantize int8`: 8-bit layer matmuls, STA's scoring in float, a guard before anything is written."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from sta.cli import main
from sta.deploy import quantize
from sta.deploy.export import export_model
from sta.deploy.metadata import ModelInfo, model_info, read_info
from sta.deploy.quantize import Clips, QuantizationRefused, heavy_nodes, quantize_model, random_calibration
from sta.deploy.runners import open_exported
from sta.errors import InvalidInput
from tests.deploy.graphs import fx_targets
from tests.helpers import tiny_clips, tiny_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytestmark = pytest.mark.slow  # each quantization exports and calibrates a graph: seconds on 2 cores


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(r=(3, 2, 1), seed=5)


@pytest.fixture(scope="module")
def tiny_info(tiny) -> ModelInfo:
    return model_info(tiny, "tiny", class_names=[f"c{i}" for i in range(5)], random_weights=True)


def clips(n: int, seed: int) -> Clips:
    return Clips(f"tiny clips (seed {seed})", [tiny_clips(n, seed=seed)], n)


@pytest.fixture(scope="module")
def forced(tiny, tiny_info, tmp_path_factory):
    """The tiny model's int8 IR written past a guard no graph can pass (``force``), and that guard's check."""
    out = tmp_path_factory.mktemp("forced") / "tiny_int8.xml"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quantize, "MIN_KEPT", 1.01)
        check = quantize_model(tiny, out, tiny_info, clips(8, 1), clips(8, 2), force=True, progress=False)
    return out, check


def test_a_failed_guard_writes_nothing_and_force_writes_it_recorded(tiny, tiny_info, forced, tmp_path, monkeypatch):
    monkeypatch.setattr(quantize, "MIN_KEPT", 1.01)  # no graph can pass: the guard must refuse

    def reuse(float_onnx, staged, backend, calibration, progress=True):  # the forced graph: no second calibration
        for suffix in (".xml", ".bin"):
            staged.with_suffix(suffix).write_bytes(forced[0].with_suffix(suffix).read_bytes())
        return {k: v for k, v in read_info(forced[0]).quantization.items() if k != "guard"}

    monkeypatch.setattr(quantize, "quantize_file", reuse)
    with pytest.raises(QuantizationRefused, match=r"fails its guard: top-1 agreement .*kept positions .*max \|logit"):
        quantize_model(tiny, tmp_path / "tiny_int8.xml", tiny_info, clips(8, 1), clips(8, 2), progress=False)
    assert list(tmp_path.iterdir()) == []
    out, check = forced
    assert not check.ok and sorted(p.name for p in out.parent.iterdir()) == ["tiny_int8.bin", "tiny_int8.xml"]
    q = read_info(out).quantization
    assert q["forced"] is True and q["guard"]["kept_agreement"] == pytest.approx(check.kept_agreement)
    assert q["calibration"] == "tiny clips (seed 1)" and q["clips"] == 8


def test_onnxruntime_writes_a_qdq_file_with_only_layer_matmuls_quantized(tiny, tiny_info, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "tiny_int8.onnx"
    quantize_model(tiny, out, tiny_info, clips(8, 1), clips(8, 2), force=True, progress=False)
    info = read_info(out)
    assert (info.dtype, info.quantization["tool"], info.quantization["backend"]) == ("int8", "onnxruntime",
                                                                                     "onnxruntime")
    proto = onnx.load(str(out))
    dequantized = {t: n for n in proto.graph.node if n.op_type == "DequantizeLinear" for t in n.output}
    readers = {n.name for n in proto.graph.node if set(n.input) & set(dequantized) and n.op_type != "Shape"}
    export_model(tiny, tmp_path / "float.onnx", tiny_info)
    targets = fx_targets(onnx.load(str(tmp_path / "float.onnx")))
    assert readers and all(targets.get(name, "").startswith(quantize.LAYER_TARGETS) for name in readers)
    runner = open_exported(out, "onnxruntime", "int8")
    assert runner(tiny_clips(3, seed=4)).shape == (3, 5)
    with pytest.raises(InvalidInput, match="is an int8 graph"):
        open_exported(out, "onnxruntime", "float32")


def test_changed_ir_weights_or_metadata_are_refused(forced, tmp_path):
    out = tmp_path / "t.xml"
    out.write_bytes(forced[0].read_bytes())
    out.with_suffix(".bin").write_bytes(forced[0].with_suffix(".bin").read_bytes())
    read_info(out)  # a copy under another name verifies
    weights = out.with_suffix(".bin")
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match="digest does not match"):
        read_info(out)
    weights.unlink()
    with pytest.raises(InvalidInput, match="t.bin is missing"):
        read_info(out)


def test_quantization_record_is_validated():
    base = dict(model="m", r=[1, 1, 1], method="sta", num_frames=16, img_size=32, num_classes=2,
                tokens_per_stage=[1, 1, 1], gflops_per_view=1.0)
    record = dict(tool="nncf", version="3.4.0", calibration="proxy", clips=300, forced=False)
    ModelInfo.from_json(json.dumps(dict(base, dtype="int8", quantization=record)), "x")  # valid
    for data, message in [(dict(base, dtype="int8"), "must carry a quantization record"),
                          (dict(base, quantization=record), "must not carry"),
                          (dict(base, dtype="int8", quantization=dict(record, clips="300")), "clips must be int"),
                          (dict(base, dtype="int8", quantization=dict(record, extra=1)), "quantization must hold")]:
        with pytest.raises(InvalidInput, match=message):
            ModelInfo.from_json(json.dumps(data), "x")
    info = ModelInfo.from_json(json.dumps(base), "x")
    assert "quantization" not in json.loads(info.to_json())  # float files keep their JSON, and so their digest
    assert replace(info, dtype="int8", quantization=record).to_json().count('"quantization"') == 1


def test_heavy_nodes_are_layer_matmuls_and_bench_says_speed_only(tiny, tiny_info, tmp_path, capsys):
    export_model(tiny, tmp_path / "t.onnx", tiny_info)
    proto = onnx.load(str(tmp_path / "t.onnx"))
    targets = fx_targets(proto)
    heavy = set(heavy_nodes(proto))
    assert heavy == {n for n, t in targets.items() if t.startswith(quantize.HEAVY_TARGETS)}
    assert not {n for n, t in targets.items() if t.startswith("aten.matmul")} & heavy
    assert set(heavy_nodes(proto, attention=False)) == {n for n, t in targets.items()
                                                        if t.startswith(quantize.LAYER_TARGETS)}
    assert main(["bench", "--model", "vit_small_patch16_224", "--input-size", "32", "--r", "0", "--backend",
                 "openvino", "--dtype", "int8", "--warmup", "0", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "int8 on cpu (openvino)" in out and "speed only" in out
    assert random_calibration(tiny, 2).count == 2


def test_calibration_from_videos_holds_the_next_ones_out_for_the_guard(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from sta.data.proxies import write_videos

    write_videos(tmp_path / "videos", 10, task="easy")
    out = tmp_path / "v_int8.onnx"
    assert main(["export", "--proxy", "easy", "--quantize", "int8", "--calibration",
                 str(tmp_path / "videos" / "test.csv"), "--calibration-clips", "6", "--out", str(out), "--no-progress",
                 "--force"]) == 0
    err = capsys.readouterr().err
    assert "test.csv: videos 1-6 of 10, one view each" in err and "videos 7-10 of 10" in err
    q = read_info(out).quantization
    assert (q["tool"], q["clips"], q["guard"]["clips"]) == ("onnxruntime", 6, 4) and "videos 1-6" in q["calibration"]
    assert main(["export", "--quantize", "int8", "--calibration", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "--calibration" in capsys.readouterr().err
