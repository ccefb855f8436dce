"""One call signature for every backend: ``runner(clips) -> logits``.

``clips`` are ``B x 3 x F x H x W`` float32 (normalised frames, as
``sta.data.read_test_views`` makes them); ``logits`` come back as ``B x classes``
float32 on the CPU. Each runner carries a :class:`ModelInfo` saying what it
runs (r, method, input format, class names), so `sta eval` and `sta predict`
work from an exported file alone.

Backends:

- ``torch``: the eager model (``--compile``: ``torch.compile``), any device and dtype.
- ``onnxruntime``: an ONNX file, float32, CPU; ``int8``: a QDQ file written by
  ``sta export --quantize int8 --backend onnxruntime``.
- ``openvino``: an ONNX file through OpenVINO on the CPU; ``bfloat16`` uses its
  bf16 inference precision (AVX-512 BF16 / AMX CPUs), ``float32`` forces f32
  (OpenVINO would otherwise pick bf16 by itself on such CPUs); ``int8``: an
  OpenVINO IR (``.xml`` + ``.bin``) written by ``sta export --quantize int8``,
  its 8-bit matmuls in int8 and everything else (STA's scoring) in f32.

An int8 file runs only as ``int8`` and a float file never does (``InvalidInput`` saying which to use).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["BACKENDS", "INFO_KEY", "ModelInfo", "Runner", "model_info", "open_exported", "read_info"]

from sta.core.contract import ClipConfig
from sta.core.schedule import R
from sta.deploy.metadata import INFO_KEY, QUANTIZED_DTYPES, ModelInfo, model_info, read_info
from sta.errors import InvalidInput
from sta.utils.device import parse_dtype, resolve_device
from sta.utils.optional import require_backend
from sta.utils.progress import log, step

BACKENDS = ("torch", "onnxruntime", "openvino")
GRAPH_OUTPUTS = ("logits", "positions_0", "positions_1", "positions_2")  # what `sta export` graphs compute


class InfoRunner:
    """What every runner shares: the model contract's ``cfg`` / ``r`` / ``method``, read from its :class:`ModelInfo`.

    A runner's r and method are fixed (an exported graph cannot change them): there is no ``set_pruning``.
    """

    info: ModelInfo

    @property
    def cfg(self) -> ClipConfig:
        return self.info.cfg

    @property
    def r(self) -> R:
        return self.info.r

    @property
    def method(self) -> str:
        return self.info.method


class TorchRunner(InfoRunner):
    """The eager model on ``device`` in ``dtype`` (optionally ``torch.compile``-d)."""

    backend = "torch"

    def __init__(self, model: nn.Module, info: ModelInfo, dtype: str = "float32", device: str = "cpu",
                 compile: bool = False):
        self.info, self.dtype, self.device = info, parse_dtype(dtype), resolve_device(device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.forward = torch.compile(self.model) if compile else self.model
        if compile:
            log.info("torch.compile: the first batch compiles the model (a minute or more on a CPU)")

    @property
    def cfg(self) -> ClipConfig:
        return self.model.cfg  # the live model's own (exact also for runs of files exported before 0.3)

    def __call__(self, clips: Tensor) -> Tensor:
        with torch.inference_mode():
            return self.forward(clips.to(device=self.device, dtype=self.dtype)).float().cpu()


class ExportedProgramRunner(InfoRunner):
    """A ``torch.export`` file (``.pt2``) on the CPU, in the dtype it was exported in."""

    backend = "torch"

    def __init__(self, path: str | Path, info: ModelInfo):
        self.info, self.dtype = info, parse_dtype(info.dtype)
        self.module = torch.export.load(str(path)).module()  # exported programs have no train/eval switch

    def __call__(self, clips: Tensor) -> Tensor:
        with torch.inference_mode():
            return self.module(clips.to(self.dtype))[0].float()  # outputs: logits, then kept positions


class OnnxRuntimeRunner(InfoRunner):
    """An exported ONNX graph on ONNX Runtime's CPU provider (float32)."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, info: ModelInfo, dtype: str = "float32"):
        if dtype not in ("float32", *QUANTIZED_DTYPES):
            raise InvalidInput("onnxruntime runs the float32 graph on the CPU; for bfloat16 use `backend` openvino",
                               param="dtype")
        check_precision(path, info, dtype)
        ort = require_backend("onnxruntime", "onnx")
        self.info, self.dtype = info, dtype
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, clips: Tensor) -> Tensor:
        logits = self.session.run(["logits"], {self.input: _as_numpy(clips)})[0]
        return torch.from_numpy(logits).float()

    def outputs(self, clips: Tensor) -> tuple[Tensor, ...]:
        """Logits and the kept positions after each stage (``GRAPH_OUTPUTS``)."""
        return tuple(torch.from_numpy(v) for v in self.session.run(list(GRAPH_OUTPUTS), {self.input: _as_numpy(clips)}))


class OpenVinoRunner(InfoRunner):
    """An exported ONNX graph (or an int8 IR) compiled by OpenVINO for the CPU, at the requested inference precision."""

    backend = "openvino"
    # int8: the quantized matmuls run in 8 bits whatever the hint; f32 keeps every other op, STA's scoring included,
    # in float32 (bf16 would round the similarities and flip near-ties, see the README's INT8 section).
    PRECISION = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "int8": "f32"}

    def __init__(self, path: str | Path, info: ModelInfo, dtype: str = "float32"):
        ov = require_backend("openvino", "openvino")
        if dtype not in QUANTIZED_DTYPES:
            parse_dtype(dtype)
        check_precision(path, info, dtype)
        self.info, self.dtype = info, dtype
        # Set explicitly: on bf16-capable CPUs OpenVINO picks bf16 unless told f32.
        with step(f"OpenVINO compiles {Path(path).name} for the CPU ({dtype})"):
            self.compiled = ov.Core().compile_model(str(path), "CPU",
                                                    {"INFERENCE_PRECISION_HINT": self.PRECISION[dtype]})
        self.output = self.compiled.output("logits")

    def __call__(self, clips: Tensor) -> Tensor:
        return torch.from_numpy(np.asarray(self.compiled(_as_numpy(clips))[self.output])).float()

    def outputs(self, clips: Tensor) -> tuple[Tensor, ...]:
        """Logits and the kept positions after each stage (``GRAPH_OUTPUTS``)."""
        result = self.compiled(_as_numpy(clips))
        return tuple(torch.from_numpy(np.asarray(result[self.compiled.output(name)])) for name in GRAPH_OUTPUTS)


Runner = TorchRunner | ExportedProgramRunner | OnnxRuntimeRunner | OpenVinoRunner  # each a VideoClassifier


def check_precision(path: str | Path, info: ModelInfo, dtype: str) -> None:
    """``InvalidInput`` unless ``dtype`` is int8 exactly when the graph is (an int8 file runs only as int8)."""
    if (dtype in QUANTIZED_DTYPES) == (info.dtype in QUANTIZED_DTYPES):
        return
    if info.dtype in QUANTIZED_DTYPES:
        raise InvalidInput(f"{path} is an {info.dtype} graph: run it with `dtype` {info.dtype}", param="dtype")
    raise InvalidInput(f"{path} is a {info.dtype} graph: `dtype` {dtype} runs a file written by `sta export "
                       f"--quantize {dtype}`", param="dtype")


def open_exported(path: str | Path, backend: str = "onnxruntime", dtype: str = "float32", verify: bool = True
                  ) -> Runner:
    """A runner for a file written by `sta export`: ``.onnx`` on onnxruntime or openvino, ``.pt2`` on torch, an int8
    OpenVINO IR (``.xml``) on openvino, an int8 (QDQ) ``.onnx`` on onnxruntime.

    The file's metadata is validated and (``verify``) its digest checked first: see :mod:`sta.deploy.metadata`.
    """
    info, path = read_info(path, verify=verify), Path(path)
    check_precision(path, info, dtype)
    if info.quantization is not None and backend != info.quantization.get("backend", backend):
        raise InvalidInput(f"{path} was quantized for {info.quantization['backend']} (and checked there): run it with "
                           f"`backend` {info.quantization['backend']}", param="backend")
    if path.suffix == ".xml":
        return OpenVinoRunner(path, info, dtype)
    if path.suffix == ".pt2":
        if dtype != info.dtype:
            raise InvalidInput(f"{path} was exported in {info.dtype}: run it with `dtype` {info.dtype}, or export "
                               f"it again in {dtype}")
        if backend != "torch":
            raise InvalidInput(f"{path} is a torch.export file: run it with `backend` torch (ONNX files go to "
                               "onnxruntime / openvino)")
        return ExportedProgramRunner(path, info)
    if backend == "torch":
        raise InvalidInput(f"{path} is an ONNX file: run it with `backend` onnxruntime or openvino",
                           param="backend")
    return (OnnxRuntimeRunner if backend == "onnxruntime" else OpenVinoRunner)(path, info, dtype)


def _as_numpy(clips: Tensor) -> np.ndarray:
    return np.ascontiguousarray(clips.detach().float().cpu().numpy())
