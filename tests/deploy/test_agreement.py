"""The backends predict what torch predicts on a trained model (the bundled easy proxy: the faster), fp32 and bf16."""

from __future__ import annotations

import pytest

from sta.data.synthetic import PROXY_TASK, make_clips
from sta.deploy.export import export_model
from sta.deploy.runners import OnnxRuntimeRunner, OpenVinoRunner, TorchRunner, model_info
from sta.models.bundled import load_bundled_model

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow


def test_top1_agreement_on_held_out_proxy_clips(tmp_path):
    pytest.importorskip("openvino")
    clips, _ = make_clips(PROXY_TASK, 240, seed=1234, split="test")  # the demo's held-out clips
    bundled = lambda: load_bundled_model(r=16, proxy="easy")  # noqa: E731
    info = model_info(bundled(), "proxy")
    reference = TorchRunner(bundled(), info)(clips).argmax(-1)
    export_model(bundled(), tmp_path / "m.onnx", info)
    for runner, minimum in [(OnnxRuntimeRunner(tmp_path / "m.onnx", info), 1.0),
                            (OpenVinoRunner(tmp_path / "m.onnx", info, "float32"), 1.0),
                            (OpenVinoRunner(tmp_path / "m.onnx", info, "bfloat16"), 0.995),
                            (TorchRunner(bundled(), info, dtype="bfloat16"), 0.995)]:
        agree = float((runner(clips).argmax(-1) == reference).float().mean())
        assert agree >= minimum, (runner.backend, agree)
