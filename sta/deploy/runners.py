"""One call signature for every backend: ``runner(clips) -> logits``.

``clips`` are ``B x 3 x F x H x W`` float32 (normalised frames, as
``sta.data.read_test_views`` makes them); ``logits`` come back as ``B x classes``
float32 on the CPU. Each runner carries a :class:`ModelInfo` saying what it
runs (r, method, input format, class names), so `sta eval` and `sta predict`
work from an exported file alone.

Backends:

- ``torch``: the eager model (``--compile``: ``torch.compile``), any device and dtype.
- ``onnxruntime``: an ONNX file, float32, CPU.
- ``openvino``: an ONNX file through OpenVINO on the CPU; ``bfloat16`` uses its
  bf16 inference precision (AVX-512 BF16 / AMX CPUs), ``float32`` forces f32
  (OpenVINO would otherwise pick bf16 by itself on such CPUs).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from sta.core.contract import IMAGENET_MEAN, IMAGENET_STD, ClipConfig
from sta.core.schedule import R, normalize_r, tokens_after_stages
from sta.errors import InvalidInput
from sta.utils.device import parse_dtype, resolve_device
from sta.utils.optional import require_backend

BACKENDS = ("torch", "onnxruntime", "openvino")
INFO_KEY = "sta"  # ONNX metadata key / torch.export extra file holding ModelInfo as JSON
INFO_VERSION = 1
GRID_FIELDS = ("patch_size", "tubelet_size", "in_chans", "depth", "embed_dim", "num_heads")


@dataclass(frozen=True)
class ModelInfo:
    """What a model or an exported graph computes, enough to feed it and to read its output."""

    model: str  # release name or Hugging Face directory it came from
    r: R  # per stage (a list in JSON)
    method: str
    num_frames: int
    img_size: int
    num_classes: int
    tokens_per_stage: list[int]
    gflops_per_view: float | None
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    class_names: list[str] | None = None
    dtype: str = "float32"  # the graph's own precision (an ONNX file: float32)
    sampling_rate: int | None = None  # frame stride the model expects, when it is not the release's 4
    # The token grid (files written before 0.3 lack it): with the fields above, the graph's ClipConfig.
    grid: dict[str, int] | None = None  # patch_size, tubelet_size, in_chans, depth, embed_dim, num_heads
    version: int = INFO_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "r", normalize_r(self.r))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @property
    def cfg(self) -> ClipConfig:
        """The :class:`ClipConfig` of the graph (``InvalidInput`` for files exported before the grid was recorded)."""
        if self.grid is None:
            raise InvalidInput(f"{self.model}: this export predates sta 0.3 and does not record its token grid; "
                               "export it again", param="exported")
        return ClipConfig(num_frames=self.num_frames, img_size=self.img_size, num_classes=self.num_classes,
                          mean=tuple(self.mean), std=tuple(self.std), **self.grid)

    @classmethod
    def from_json(cls, text: str, source: str) -> ModelInfo:
        try:
            data = json.loads(text)
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as err:
            raise InvalidInput(f"{source}: its sta metadata is unreadable ({err}); re-export it with `sta export`"
                               ) from None


def model_info(model: nn.Module, name: str, class_names: list[str] | None = None,
               sampling_rate: int | None = None) -> ModelInfo:
    """The :class:`ModelInfo` of a live model (our ViT or an adapter with the same interface)."""
    from sta.measure.flops import flops_report

    cfg = model.cfg
    grid = {key: getattr(cfg, key) for key in GRID_FIELDS}
    return ModelInfo(model=name, r=model.r, method=model.method, num_frames=cfg.num_frames,
                     img_size=cfg.img_size, num_classes=cfg.num_classes,
                     tokens_per_stage=list(tokens_after_stages(cfg.num_slices, cfg.tokens_per_slice, model.r)),
                     gflops_per_view=flops_report(model).gflops, mean=list(cfg.mean), std=list(cfg.std),
                     class_names=class_names, sampling_rate=sampling_rate, grid=grid)


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
        if dtype != "float32":
            raise InvalidInput("onnxruntime runs the float32 graph on the CPU; for bfloat16 use `backend` openvino",
                               param="dtype")
        ort = require_backend("onnxruntime", "onnx")
        self.info = info
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, clips: Tensor) -> Tensor:
        logits = self.session.run(["logits"], {self.input: _as_numpy(clips)})[0]
        return torch.from_numpy(logits).float()


class OpenVinoRunner(InfoRunner):
    """An exported ONNX graph compiled by OpenVINO for the CPU, at the requested inference precision."""

    backend = "openvino"
    PRECISION = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}

    def __init__(self, path: str | Path, info: ModelInfo, dtype: str = "float32"):
        ov = require_backend("openvino", "openvino")
        parse_dtype(dtype)
        self.info = info
        # Set explicitly: on bf16-capable CPUs OpenVINO picks bf16 unless told f32.
        self.compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": self.PRECISION[dtype]})
        self.output = self.compiled.output("logits")

    def __call__(self, clips: Tensor) -> Tensor:
        return torch.from_numpy(np.asarray(self.compiled(_as_numpy(clips))[self.output])).float()


Runner = TorchRunner | ExportedProgramRunner | OnnxRuntimeRunner | OpenVinoRunner  # each a VideoClassifier


def read_info(path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` stored in an exported ``.onnx`` or ``.pt2`` file by `sta export`."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such exported model file")
    if path.suffix == ".onnx":
        onnx = require_backend("onnx", "onnx")
        try:
            graph = onnx.load(str(path), load_external_data=False)
        except Exception as err:  # protobuf DecodeError and friends
            raise InvalidInput(f"{path}: not a readable ONNX file ({err})") from None
        text = {p.key: p.value for p in graph.metadata_props}.get(INFO_KEY)
    elif path.suffix == ".pt2":
        extra = {f"{INFO_KEY}.json": ""}
        try:
            torch.export.load(str(path), extra_files=extra)
        except Exception as err:
            raise InvalidInput(f"{path}: not a readable torch.export file ({err})") from None
        text = extra[f"{INFO_KEY}.json"] or None
    else:
        raise InvalidInput(f"{path}: expected an .onnx or .pt2 file written by `sta export`")
    if not text:
        raise InvalidInput(f"{path}: has no sta metadata; export it with `sta export`")
    return ModelInfo.from_json(text, str(path))


def open_exported(path: str | Path, backend: str = "onnxruntime", dtype: str = "float32") -> Runner:
    """A runner for a file written by `sta export`: ``.onnx`` on onnxruntime or openvino, ``.pt2`` on torch."""
    info, path = read_info(path), Path(path)
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
