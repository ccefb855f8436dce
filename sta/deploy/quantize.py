"""`sta export --quantize int8`: the pruned graph with 8-bit matmuls, STA's decisions in float, guarded before writing.

Backends and files:

- ``openvino``: NNCF post-training static quantization (``ModelType.TRANSFORMER``:
  SmoothQuant, min-max activation ranges over all clips, fast bias correction) of the
  float ONNX graph :mod:`sta.deploy.export` writes, saved as an OpenVINO IR
  (``NAME.xml`` + ``NAME.bin``, float parts in float32).
- ``onnxruntime``: ONNX Runtime's static quantization in QDQ form (int8 per-channel
  weights, uint8 activations, min-max ranges, matmul outputs left float), saved as
  ``NAME.onnx``; its attention matmuls stay float (8-bit attention scores cost the
  proxy 4 points of kept-position agreement there).

What is 8-bit (:func:`heavy_nodes`): the matmuls of the model's layers, picked by
where the exporter says each ONNX node came from (``pkg.torch.onnx.fx_node``):
``aten.linear`` / ``addmm`` (qkv, attention projection, MLP, head), ``aten.conv*``
(patch embedding) and, for OpenVINO, the matmuls of
``aten.scaled_dot_product_attention`` (and ``aten.matmul`` inside a module named
``*Attention``: Hugging Face eager attention); NNCF leaves the softmax-times-values
matmul in float itself (its transformer preset).
Everything else stays float32: the key normalisation and L1 norms, the similarity
and accumulation matmuls, their softmaxes, the rankings (comparisons, sums,
scatters) and the gathers, i.e. every op that decides which tokens survive.
NNCF gets them as its ignored scope, ONNX Runtime quantizes only the heavy nodes,
and both results are checked to carry no 8-bit tensor into any other node.

The guard: before anything is written, the quantized graph runs next to the float
eager model on held-out clips (never the calibration clips); the file is refused
unless top-1 agrees on at least 99% of them and at least 95% of the kept positions
(per clip and stage, as sets, pooled over the three stages) are the float model's.
``force`` writes it anyway and records that it did. The file carries
:class:`~sta.deploy.metadata.ModelInfo` with ``dtype`` ``int8`` and a
``quantization`` record (tool, version, calibration set and count, guard numbers).
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from sta.core.attention import fused_only
from sta.deploy.export import ExportError, GraphForward, export_model, write_onnx_info
from sta.deploy.metadata import ModelInfo, content_digest, read_info, seal, write_ir_info
from sta.deploy.runners import OnnxRuntimeRunner, OpenVinoRunner
from sta.errors import InvalidInput
from sta.utils.optional import require_backend
from sta.utils.progress import Progress, step

INT8 = "int8"
SUFFIXES = {"openvino": ".xml", "onnxruntime": ".onnx"}  # the file each backend loads best
TOOLS = {"openvino": "nncf", "onnxruntime": "onnxruntime"}
MIN_TOP1, MIN_KEPT = 0.99, 0.95  # the guard: top-1 agreement, share of kept positions identical
DEFAULT_CALIBRATION_CLIPS = 300
HEAVY_OPS = ("MatMul", "Gemm", "Conv")
LAYER_TARGETS = ("aten.linear.", "aten.addmm.", "aten.conv", "aten._convolution.")
ATTENTION_TARGET = "aten.scaled_dot_product_attention."
HEAVY_TARGETS = (*LAYER_TARGETS, ATTENTION_TARGET)
ATTENTION_MATMULS = ("aten.matmul.", "aten.bmm.")  # heavy only inside an attention module (HF eager attention)
GUARD_BATCH = 16
CALIBRATION_SEED = 20231  # proxy calibration clips: the training stream at a seed training never reached (4822 steps)


class QuantizationRefused(ExportError):
    """The quantized graph failed its guard: nothing was written."""


@dataclass(frozen=True)
class Clips:
    """Normalised clips (``B x 3 x F x H x W`` float32 batches) and what they are, for calibration or the guard.

    ``batches`` is iterated once; ``count``: how many clips it should give (for the progress bar); ``labels``
    (optional, in clip order) adds each model's top-1 accuracy to the guard's numbers.
    """

    description: str
    batches: Iterable[Tensor]
    count: int = 0
    labels: Tensor | None = None


@dataclass(frozen=True)
class QuantCheck:
    """How the quantized graph compared with the float model on the guard's held-out clips."""

    clips: int
    top1_agreement: float  # share of clips with the float model's top-1
    kept_agreement: float  # share of the float model's kept positions the int8 graph keeps too (stages pooled)
    kept_per_stage: tuple[float, ...]
    max_abs_diff: float  # largest |logit difference|
    float_top1: float | None = None  # accuracy, when the clips are labelled
    int8_top1: float | None = None

    @property
    def ok(self) -> bool:
        return math.isfinite(self.max_abs_diff) and self.top1_agreement >= MIN_TOP1 and self.kept_agreement >= MIN_KEPT

    def record(self) -> dict[str, float]:
        numbers = dict(clips=self.clips, top1_agreement=self.top1_agreement, kept_agreement=self.kept_agreement,
                       **{f"kept_agreement_{i}": v for i, v in enumerate(self.kept_per_stage)})
        if math.isfinite(self.max_abs_diff):  # else the int8 logits were not finite: no number to record
            numbers.update(max_abs_logit_diff=self.max_abs_diff)
        if self.float_top1 is not None:
            numbers.update(float_top1=self.float_top1, int8_top1=self.int8_top1)
        return numbers

    def describe(self) -> str:
        stages = "/".join(f"{100 * v:.1f}" for v in self.kept_per_stage)
        text = (f"top-1 agreement {100 * self.top1_agreement:.1f}% (needs {100 * MIN_TOP1:.0f}%), kept positions "
                f"{100 * self.kept_agreement:.1f}% identical (needs {100 * MIN_KEPT:.0f}%; per stage {stages}), "
                f"max |logit diff| {self.max_abs_diff:.3g}, on {self.clips} held-out clips")
        if self.float_top1 is not None:
            text += f"; top-1 float {100 * self.float_top1:.1f}%, int8 {100 * self.int8_top1:.1f}%"
        return text


@dataclass
class _Tally:
    clips: int = 0
    agree: int = 0
    kept: list[int] = field(default_factory=lambda: [0, 0, 0])
    total: list[int] = field(default_factory=lambda: [0, 0, 0])
    max_diff: float = 0.0
    predictions: list[Tensor] = field(default_factory=list)  # float, int8 top-1 per batch

    def add(self, want: tuple[Tensor, ...], got: tuple[Tensor, ...]) -> None:
        a, b = want[0].float(), got[0].float()
        self.clips += len(a)
        self.max_diff = max(self.max_diff, float((a - b).abs().max()) if torch.isfinite(b).all() else math.inf)
        self.agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        self.predictions.append(torch.stack([a.argmax(-1), b.argmax(-1)]))
        for stage, (p, q) in enumerate(zip(want[1:], got[1:])):
            self.kept[stage] += sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(p, q))
            self.total[stage] += p.numel()

    def check(self, labels: Tensor | None) -> QuantCheck:
        if self.clips == 0:
            raise InvalidInput("the guard got no clip to compare on", param="calibration")
        per_stage = tuple(k / t for k, t in zip(self.kept, self.total))
        float_top1 = int8_top1 = None
        if labels is not None:
            float_pred, int8_pred = torch.cat(self.predictions, dim=1)
            float_top1 = float((float_pred == labels[: self.clips]).float().mean())
            int8_top1 = float((int8_pred == labels[: self.clips]).float().mean())
        return QuantCheck(self.clips, self.agree / self.clips, sum(self.kept) / sum(self.total), per_stage,
                          self.max_diff, float_top1, int8_top1)


def proxy_calibration(n: int = DEFAULT_CALIBRATION_CLIPS, task: str | None = None) -> Clips:
    """Calibration clips of a bundled model's proxy task (``task``: ``"easy"`` / ``"hard"``, default the default
    proxy): ``n`` of its training stream (never its test clips)."""
    from sta.data.proxies import DEFAULT_PROXY, make_clips

    task = task or DEFAULT_PROXY
    clips, _ = make_clips(task, n, seed=CALIBRATION_SEED, split="train")
    return Clips(f"{task} proxy task train clips (seed {CALIBRATION_SEED})", [clips], n)


def proxy_guard(n: int | None = None, task: str | None = None) -> Clips:
    """The guard's clips for a bundled model: the held-out test clips `sta demo` scores, labelled."""
    from sta.data.proxies import DEFAULT_PROXY, make_clips
    from sta.data.synthetic import HELD_OUT_CLIPS, HELD_OUT_SEED

    n, task = n or HELD_OUT_CLIPS, task or DEFAULT_PROXY
    clips, labels = make_clips(task, n, seed=HELD_OUT_SEED, split="test")
    return Clips(f"{task} proxy task held-out test clips (seed {HELD_OUT_SEED})", [clips], n, labels)


def random_calibration(model: nn.Module, n: int = 8, seed: int = 0) -> Clips:
    """Random clips shaped for ``model``: calibration for speed only (`sta bench`), or a guard's last resort."""
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)
    clips = torch.randn(n, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size, generator=gen)
    return Clips(f"{n} random clips (seed {seed})", [clips], n)


def backend_for(out: str | os.PathLike, backend: str | None = None) -> str:
    """The backend a quantized file is for: ``backend``, else by the suffix of ``out`` (``.xml``: openvino)."""
    suffix = Path(out).suffix
    backend = backend or next((b for b, s in SUFFIXES.items() if s == suffix), None)
    if backend not in SUFFIXES:
        raise InvalidInput(f"an int8 graph is an OpenVINO IR (.xml, `backend` openvino) or a QDQ ONNX file (.onnx, "
                           f"`backend` onnxruntime); got {out}", param="out")
    if suffix != SUFFIXES[backend]:
        raise InvalidInput(f"`backend` {backend} loads an int8 graph as a {SUFFIXES[backend]} file: name the output "
                           f"NAME{SUFFIXES[backend]}, not {out}", param="out")
    return backend


def quantize_model(model: nn.Module, out: str | os.PathLike, info: ModelInfo, calibration: Clips, guard: Clips,
                   backend: str | None = None, force: bool = False, progress: bool = True) -> QuantCheck:
    """Quantize ``model`` (at its r and method) to ``out`` and return the guard's numbers.

    Raises :class:`QuantizationRefused`, leaving nothing behind, when the guard fails (``force``: written anyway,
    recorded as forced). ``out``: ``NAME.xml`` (openvino, with ``NAME.bin``) or ``NAME.onnx`` (onnxruntime).
    """
    out = Path(out)
    backend = backend_for(out, backend)
    _require(backend)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".sta-quantize-") as tmp:
        float_onnx, staged = Path(tmp) / "float.onnx", Path(tmp) / "out" / out.name
        staged.parent.mkdir()
        export_model(model.eval(), float_onnx, info, ordered=False)  # the float graph, checked against the model
        record = quantize_file(float_onnx, staged, backend, calibration, progress)
        runner = _runner(staged, backend, replace(info, dtype=INT8, quantization=record))
        check = run_guard(model, runner, guard, progress)
        if not check.ok and not force:
            raise QuantizationRefused(f"the int8 graph fails its guard: {check.describe()}; {out} was not written "
                                      "(`force` writes it anyway)")
        record.update(forced=not check.ok, guard=check.record())
        info = replace(info, dtype=INT8, quantization=record)
        del runner
        _seal(staged, info)
        read_info(staged)  # read back and verified, as a user's load will
        for file in staged.parent.iterdir():  # the graph and its weights file
            os.replace(file, out.parent / file.name)
    return check


def quantized_runner(model: nn.Module, info: ModelInfo, backend: str, calibration: Clips):
    """An unguarded int8 runner quantized on the fly: for speed only (`sta bench`), nothing is written."""
    if backend not in SUFFIXES:
        raise InvalidInput("`dtype` int8 runs on `backend` openvino or onnxruntime", param="backend")
    _require(backend)
    with tempfile.TemporaryDirectory(prefix="sta-int8-") as tmp:
        export_model(model.eval(), Path(tmp) / "float.onnx", info, ordered=False)
        staged = Path(tmp) / f"model{SUFFIXES[backend]}"
        record = quantize_file(Path(tmp) / "float.onnx", staged, backend, calibration, progress=False)
        # Both backends read the file while opening it, so the folder can go afterwards.
        return _runner(staged, backend, replace(info, dtype=INT8, quantization=record))


def quantize_file(float_onnx: Path, out: Path, backend: str, calibration: Clips, progress: bool = True) -> dict:
    """Quantize the float ONNX graph ``float_onnx`` into ``out``; returns the quantization record (without guard)."""
    onnx = require_backend("onnx", "onnx")
    proto = onnx.load(str(float_onnx), load_external_data=False)
    # ONNX Runtime's min-max ranges on attention scores cost more agreement than its QDQ attention saves: float there.
    heavy = heavy_nodes(proto, attention=backend == "openvino")
    if not heavy:
        raise ExportError("found no layer matmul to quantize in the exported graph (it carries no torch provenance)")
    bar = Progress(total=calibration.count, unit="clip", enabled=progress, desc="int8 calibration clips")
    items = _Replay(calibration.batches).drain(bar)  # read once, in order: every pass sees the same clips
    bar.close()
    if len(items) == 0:
        raise InvalidInput(f"no calibration clip could be read from {calibration.description}", param="calibration")
    quantize = _quantize_openvino if backend == "openvino" else _quantize_onnxruntime
    tool = TOOLS[backend]
    with step(f"{tool} quantizes {len(heavy)} matmuls to 8 bits, calibrated on {len(items)} clips"):
        counts = quantize(float_onnx, out, heavy, items)
    return dict(tool=tool, version=_version(tool), backend=backend, calibration=calibration.description,
                clips=len(items), forced=False, **counts)


def heavy_nodes(proto, attention: bool = True) -> list[str]:
    """Names of the ONNX nodes that run in 8 bits: the model's layer matmuls, by the torch op each came from
    (``attention``: the two attention matmuls too)."""
    names = []
    for node in proto.graph.node:
        if node.op_type not in HEAVY_OPS:
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        found = re.search(r"target=torch\.ops\.([\w.]+)", meta.get("pkg.torch.onnx.fx_node", ""))
        target = found.group(1) if found else ""
        in_attention = re.search(r"Attention'", meta.get("pkg.torch.onnx.class_hierarchy", "")) is not None
        attention_matmul = target.startswith(ATTENTION_TARGET) or (target.startswith(ATTENTION_MATMULS)
                                                                  and in_attention)
        if target.startswith(LAYER_TARGETS) or (attention and attention_matmul):
            names.append(node.name)
    return names


def run_guard(model: nn.Module, runner, guard: Clips, progress: bool = True) -> QuantCheck:
    """The quantized ``runner`` next to the float eager ``model`` on ``guard``'s clips."""
    graph, tally = GraphForward(model).eval(), _Tally()
    bar = Progress(total=guard.count, unit="clip", enabled=progress, desc="int8 guard")
    for batch in guard.batches:
        for clips in batch.split(GUARD_BATCH):
            with torch.inference_mode(), fused_only():  # the graph's attention kernel, as the float export check
                want = graph(clips.float())
            tally.add(want, runner.outputs(clips))
            bar.update(len(clips))
    bar.close()
    return tally.check(guard.labels)


# ------------------------------------------------------------------------------------------------ backends


class _Replay:
    """The calibration clips one at a time (``1 x 3 x F x H x W``), read from the source once and kept in memory:
    NNCF passes over them several times (SmoothQuant, ranges, bias correction), the same clips in the same order."""

    def __init__(self, batches: Iterable[Tensor]):
        self.source, self.clips = batches, []

    def drain(self, bar: Progress) -> _Replay:
        for batch in self.source:
            for clip in batch.float().split(1):
                self.clips.append(clip.contiguous())
                bar.update(1)
        return self

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.clips)

    def __len__(self) -> int:
        return len(self.clips)


def _quantize_openvino(float_onnx: Path, out: Path, heavy: list[str], items: _Replay) -> dict:
    ov, nncf = require_backend("openvino", "openvino"), require_backend("nncf", "openvino")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    model = ov.Core().read_model(str(float_onnx))
    # OpenVINO names the ops of an ONNX node after it ("node_linear_48/WithoutBiases" for a Gemm's matmul).
    names = set(heavy)
    is_heavy = lambda op: op.get_friendly_name().split("/")[0] in names and op.get_type_name() in (  # noqa: E731
        "MatMul", "Convolution")
    ignored = [op.get_friendly_name() for op in model.get_ordered_ops()  # a shape read is no value: not ignored
               if op.get_type_name() not in ("Parameter", "Result", "Constant", "ShapeOf") and not is_heavy(op)]
    logging.getLogger("nncf").setLevel(logging.WARNING)  # one INFO line per ignored node otherwise
    # Activation ranges: the min and max over every calibration clip (NNCF's default averages them per clip, which
    # clips the rare large values STA's scores are sensitive to: 94.1% vs 95.6% kept positions on the proxy, r=32).
    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    quantized = nncf.quantize(model, nncf.Dataset(items, lambda clip: clip.numpy()), subset_size=max(1, len(items)),
                              model_type=nncf.ModelType.TRANSFORMER, advanced_parameters=advanced,
                              ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))
    eight_bit = {consumer.get_node().get_friendly_name() for op in quantized.get_ordered_ops()
                 if op.get_type_name() == "FakeQuantize" for consumer in op.output(0).get_target_inputs()
                 if consumer.get_node().get_type_name() != "ShapeOf"}  # a shape is no value
    leaked = sorted(eight_bit - {op.get_friendly_name() for op in quantized.get_ordered_ops() if is_heavy(op)})
    if leaked:
        raise ExportError(f"NNCF quantized nodes that must stay float ({', '.join(leaked[:5])}); nothing was written")
    ov.save_model(quantized, str(out), compress_to_fp16=False)  # float parts stay float32
    matmuls = [op for op in quantized.get_ordered_ops() if op.get_type_name() in ("MatMul", "Convolution")]
    return dict(quantized_nodes=sum(op.get_friendly_name() in eight_bit for op in matmuls),
                float_nodes=sum(op.get_friendly_name() not in eight_bit for op in matmuls))


def _quantize_onnxruntime(float_onnx: Path, out: Path, heavy: list[str], items: _Replay) -> dict:
    require_backend("onnxruntime", "onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    onnx = require_backend("onnx", "onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.clips = iter(items)

        def get_next(self):
            clip = next(self.clips, None)
            return None if clip is None else {"clips": clip.numpy()}

    large = any(float_onnx.parent.glob(f"{float_onnx.name}.*"))  # its weights beside it: over protobuf's 2 GB
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process the graph goes to the root logger
    try:
        quantize_static(str(float_onnx), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_quantize=heavy,
                        op_types_to_quantize=list(HEAVY_OPS), use_external_data_format=large,
                        extra_options={"OpTypesToExcludeOutputQuantization": list(HEAVY_OPS)})  # float outputs
    finally:
        root.setLevel(level)
    proto = onnx.load(str(out), load_external_data=False)
    dequantized = {t for n in proto.graph.node if n.op_type == "DequantizeLinear" for t in n.output}
    readers = {n.name for n in proto.graph.node if n.op_type != "Shape" and set(n.input) & dequantized}
    eight_bit = {n.name for n in proto.graph.node if n.op_type in HEAVY_OPS} & readers
    if leaked := sorted(readers - set(heavy)):
        raise ExportError(f"ONNX Runtime quantized nodes that must stay float ({', '.join(leaked[:5])})")
    matmuls = [n for n in proto.graph.node if n.op_type in HEAVY_OPS]
    return dict(quantized_nodes=len(eight_bit), float_nodes=len(matmuls) - len(eight_bit))


def _runner(path: Path, backend: str, info: ModelInfo):
    return (OpenVinoRunner if backend == "openvino" else OnnxRuntimeRunner)(path, info, INT8)


def _seal(path: Path, info: ModelInfo) -> None:
    if path.suffix == ".xml":
        write_ir_info(path, info.to_json())  # the entry first: the digest covers the file without it
        write_ir_info(path, replace(info, digest=seal(info, content_digest(path))).to_json())
    else:
        write_onnx_info(path, info)


def _require(backend: str) -> None:
    if backend == "openvino":
        require_backend("openvino", "openvino")
        require_backend("nncf", "openvino")
    else:
        require_backend("onnxruntime", "onnx")
    require_backend("onnx", "onnx")


def _version(tool: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(tool)
    except PackageNotFoundError:
        return "unknown"
