"""`sta export --quantize int8` on the bundled model, as the README runs it: guard, float scoring, int8-only files,
`sta eval` within 0.5 points of float."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from sta.cli import main
from sta.deploy import quantize
from sta.deploy.metadata import read_info
from tests.deploy.graphs import eight_bit_consumers, fx_targets

onnx = pytest.importorskip("onnx")
pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytestmark = pytest.mark.slow  # a quantization of the bundled model, calibrated on 300 clips and guarded on 240


@pytest.fixture(scope="module")
def proxy_int8(tmp_path_factory):
    """The bundled model exported as the README says: `sta export --quantize int8 --out proxy_int8.xml`."""
    out = tmp_path_factory.mktemp("int8") / "proxy_int8.xml"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export", "--proxy", "easy", "--quantize", "int8", "--out", str(out), "--no-progress"]) == 0
    (out.parent / "printed.txt").write_text(printed.getvalue())  # what it said (capsys cannot see a module fixture)
    return out


@pytest.fixture(scope="module")
def proxy_float(tmp_path_factory):
    """The bundled model's float32 ONNX export at the same r: `sta export --out proxy.onnx`."""
    out = tmp_path_factory.mktemp("float") / "proxy.onnx"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", "--proxy", "easy", "--out", str(out), "--no-progress"]) == 0
    return out


def test_the_bundled_model_passes_its_guard_and_records_it(proxy_int8):
    out = (proxy_int8.parent / "printed.txt").read_text()
    assert "guard passed: top-1 agreement" in out and "kept positions" in out and "max |logit diff|" in out
    info = read_info(proxy_int8)  # digest of xml + bin + metadata verified
    q = info.quantization
    assert info.dtype == "int8" and (q["tool"], q["backend"], q["clips"], q["forced"]) == ("nncf", "openvino", 300,
                                                                                          False)
    assert q["version"] and "proxy task train clips" in q["calibration"]
    assert q["guard"]["top1_agreement"] >= 0.99 and q["guard"]["kept_agreement"] >= 0.95
    assert q["guard"]["clips"] == 240 and q["guard"]["int8_top1"] >= q["guard"]["float_top1"] - 0.005
    assert (info.r, info.method, info.num_frames, info.img_size, len(info.class_names)) == ((16, 16, 16), "sta", 16,
                                                                                           64, 12)
    assert proxy_int8.with_suffix(".bin").is_file()


def test_scoring_nodes_stay_float_in_the_written_graph(proxy_int8, proxy_float):
    targets = fx_targets(onnx.load(str(proxy_float), load_external_data=False))
    consumers = eight_bit_consumers(proxy_int8)
    base = {name.split("/")[0] for name in consumers}
    assert set(consumers.values()) <= {"MatMul", "Convolution"}  # 8-bit tensors feed layer matmuls only
    assert all(targets[name].startswith(quantize.HEAVY_TARGETS) for name in base)
    scoring = [name for name, target in targets.items() if target.startswith("aten.matmul")]
    assert scoring and not base & set(scoring)  # similarity / accumulation matmuls: float32
    linears = [name for name, target in targets.items() if target.startswith("aten.linear")]
    assert set(linears) <= base  # every linear layer (qkv, projection, MLP, head) is 8-bit


def test_int8_files_run_only_as_int8_and_float_files_never(proxy_int8, proxy_float, tmp_path, sample_videos, capsys):
    video = ["predict", str(sample_videos / "bikes.mp4"), "--views", "1x1", "--no-progress", "--json"]
    assert main([*video, "--exported", str(proxy_int8), "--backend", "openvino", "--dtype", "int8"]) == 0
    assert len(json.loads(capsys.readouterr().out.splitlines()[-1])["top"]) == 5
    for argv, message in [
        ([*video, "--exported", str(proxy_int8), "--backend", "openvino"],
         "is an int8 graph: run it with --dtype int8"),
        ([*video, "--exported", str(proxy_int8), "--backend", "onnxruntime", "--dtype", "int8"],
         "was quantized for openvino (and checked there): run it with --backend openvino"),
        (["bench", "--exported", str(proxy_int8), "--backend", "openvino", "--dtype", "bfloat16"],
         "is an int8 graph: run it with --dtype int8"),
    ]:
        assert main(argv) == 2
        (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
        assert message in line
    (tmp_path / "test.csv").write_text(f"{sample_videos / 'bikes.mp4'} 0\n")
    for argv in ([*video, "--exported", str(proxy_float), "--dtype", "int8"],
                 ["bench", "--exported", str(proxy_float), "--backend", "openvino", "--dtype", "int8"],
                 ["eval", "--exported", str(proxy_float), "--backend", "openvino", "--dtype", "int8",
                  "--data-path", str(tmp_path), "--output-dir", str(tmp_path / "eval")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "is a float32 graph: --dtype int8 runs a file written by `sta export --quantize int8`" in err, argv
    assert main([*video, "--dtype", "int8", "--backend", "openvino"]) == 2  # a live model: export it first
    assert "--dtype int8 runs a file written by `sta export --quantize int8`" in capsys.readouterr().err


def test_eval_scores_an_int8_file_like_the_float_model(proxy_int8, proxy_float, tmp_path, capsys):
    from sta.data.proxies import write_videos

    write_videos(tmp_path / "videos", 24, task="easy")
    args = ["eval", "--data-path", str(tmp_path / "videos"), "--test-num-segment", "1", "--test-num-crop", "1",
            "--no-progress", "--json", "--num-workers", "0"]
    assert main([*args, "--exported", str(proxy_int8), "--backend", "openvino", "--dtype", "int8",
                 "--output-dir", str(tmp_path / "int8")]) == 0
    int8 = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert main([*args, "--exported", str(proxy_float), "--output-dir", str(tmp_path / "fp32")]) == 0
    assert abs(int8["top1"] - json.loads(capsys.readouterr().out.splitlines()[-1])["top1"]) <= 0.5
