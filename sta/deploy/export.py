"""`sta export`: a pruned model as one static graph file, checked against the eager model before it is written.

Formats:

- ``onnx``: ``torch.onnx.export(dynamo=True)``, float32, batch size dynamic;
  runs on ONNX Runtime and OpenVINO (which can execute it in bf16).
- ``pt2``: ``torch.export`` (``torch.export.save``), in the model's dtype;
  ``torch.export.load(path).module()`` gives it back.

The graph's outputs are ``logits`` (``B x classes``) and ``positions_0..2``
(``B x L_k`` int64: the original positions alive after each stage, as
``TokenTrace.positions``). The file carries a :class:`~sta.deploy.metadata.ModelInfo`
(r, method, input format, class names, whether the weights were random) as
metadata, sealed with a digest of the graph, the weights and the metadata (checked
on every load). Before anything is written, the exported graph runs on random clips
next to the eager model: the file is refused unless the logits are finite and agree
to float tolerance, the top-1 classes match and every kept position is the same.
A clip whose selection float rounding decides (a float64 run, on the clip or on the
clip nudged by rounding-sized noise, keeps other positions than the model in its own
dtype: two near-tied scores, common with random weights) says nothing about the graph:
it is left out of the comparison, and said so, as long as another clip remains.

8-bit graphs (``--quantize int8``: an OpenVINO IR or a QDQ ONNX file) are written by
:mod:`sta.deploy.quantize`, from the float ONNX graph this module exports.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from sta.core.attention import fused_only
from sta.deploy.metadata import content_digest, read_info, seal
from sta.deploy.runners import (
    BACKENDS,
    GRAPH_OUTPUTS,
    INFO_KEY,
    ModelInfo,
    OnnxRuntimeRunner,
    OpenVinoRunner,
    Runner,
    TorchRunner,
)
from sta.errors import InvalidInput
from sta.measure.speed import random_clips
from sta.utils.device import parse_dtype
from sta.utils.files import first_line
from sta.utils.optional import require_backend
from sta.utils.progress import log, step

FORMATS = ("onnx", "pt2")
OUTPUTS = GRAPH_OUTPUTS  # logits, positions_0..2
ONNX_SINGLE_FILE_LIMIT = 1_800_000_000  # bytes, under protobuf's 2 GB
CHECK_BATCH = 6  # random clips the exported graph must agree on (batch > 1: it is dynamic); with random weights
# float rounding decides many clips' kept tokens, and the check needs some left that it does not
ROUNDING_NUDGES = 2  # nudged float64 runs that look for near-tied kept tokens when the graph's differ
ROUNDING_NOISE = 1e-5  # their size, relative to the clip's spread: float32 rounding accumulated over a forward


def format_for(out: str | os.PathLike, fmt: str | None = None) -> str:
    """The file format: ``fmt`` when given (and ``out`` must end in it), else ``out``'s suffix."""
    out = os.fspath(out)
    fmt = fmt or (os.path.splitext(out)[1].lstrip(".") or None)
    if fmt not in FORMATS:
        raise InvalidInput(f"say `format` onnx or pt2 (or give the output a .onnx / .pt2 name), got {out!r}",
                           param="format")
    if not out.endswith(f".{fmt}"):
        raise InvalidInput(f"the output {out} must end in .{fmt} for format {fmt}", param="out")
    return fmt


class ExportError(InvalidInput):
    """The exported graph does not reproduce the eager model: nothing was written."""


class GraphForward(nn.Module):
    """The model as the exported graph computes it: ``clips -> (logits, positions_0, positions_1, positions_2)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, clips: Tensor) -> tuple[Tensor, ...]:
        logits, trace = self.model(clips, return_trace=True)
        return (logits, *trace.positions)


@dataclass(frozen=True)
class ExportCheck:
    """How the exported graph compared with the eager model on random clips."""

    max_abs_diff: float  # largest |logit difference|
    tolerance: float
    same_top1: bool
    same_positions: bool
    clips: int = CHECK_BATCH  # clips compared
    rounding_decided: int = 0  # clips left out: their selection depends on float rounding (near-tied scores)

    @property
    def ok(self) -> bool:
        return self.clips > 0 and self.max_abs_diff <= self.tolerance and self.same_top1 and self.same_positions

    @property
    def undecided(self) -> bool:
        """Nothing disagreed, but nothing was compared: float rounding decides every check clip's kept tokens."""
        return self.clips == 0 and self.rounding_decided > 0

    def describe(self) -> str:
        text = (f"max |logit diff| {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}), same top-1: "
                f"{self.same_top1}, same kept positions: {self.same_positions}, on {self.clips} clips")
        if self.rounding_decided:
            text += (f" ({self.rounding_decided} more left out: float rounding decides their kept tokens, which "
                     "float64 runs of the eager model itself, on the clip or nudged by rounding-sized noise, change)")
        return text


def export_model(model: nn.Module, out: str | os.PathLike, info: ModelInfo, fmt: str | None = None,
                 dtype: str = "float32", ordered: bool = True, speed_only: bool = False) -> ExportCheck:
    """Export ``model`` (at its current r and method) to ``out``; returns the check that allowed writing it.

    ``fmt`` defaults to the suffix of ``out`` (``.onnx`` / ``.pt2``). ``dtype``:
    the precision of a ``pt2`` graph (an ONNX graph is always float32; pick
    bf16 at run time with OpenVINO). Raises :class:`ExportError`, leaving no
    file behind, when the graph disagrees with the eager model. ``ordered=False``
    (the float graph `sta export --quantize` starts from) compares each stage's
    kept positions as sets: two near-tied kept tokens may swap places. A check that cannot decide (float
    rounding decides the kept tokens of every check clip, as random weights make it) refuses the file, unless
    ``speed_only`` (a graph only timed, `sta bench`): then it is written and a line says the answers went unchecked.
    """
    out = Path(out)
    fmt = fmt or out.suffix.lstrip(".")
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)} (or an .onnx / .pt2 file name), got {fmt!r}")
    if fmt == "onnx" and dtype != "float32":
        raise InvalidInput("ONNX files are exported in float32; run them in bf16 with `backend` openvino and "
                           "`dtype` bfloat16", param="dtype")
    model = model.to(dtype=parse_dtype(dtype)).eval()
    info = replace(info, dtype=dtype)
    graph = GraphForward(model).eval()
    clips = check_clips(model, parse_dtype(dtype))
    with torch.inference_mode(), fused_only():  # the graph's attention kernel, so bf16 compares like with like
        expected = graph(clips)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the target, renamed over it only once checked: a refused export leaves nothing behind.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".sta-export-") as tmp:
        staged = Path(tmp) / out.name
        try:
            with step(f"{fmt} export of {info.model} ({'torch.onnx.export' if fmt == 'onnx' else 'torch.export'}), "
                      f"then a run of the graph on {len(clips)} check clips"):
                got = (_export_onnx if fmt == "onnx" else _export_pt2)(graph, clips, staged, info)
        except (ImportError, ExportError):
            raise
        except Exception as err:  # the exporters raise many types; the user needs what failed, in one line
            raise ExportError(f"{fmt} export of this model failed ({type(err).__name__}: {first_line(err)}); "
                              f"{out} was not written") from err
        if not torch.isfinite(expected[0]).all():
            raise ExportError(f"the model's logits are not finite (NaN or inf) on the check clips: its weights or "
                              f"precision are broken; {out} was not written")
        check = compare(expected, got, dtype, ordered)
        if not check.ok and math.isfinite(check.max_abs_diff):  # near-ties? a float64 run of the eager model says
            with step("the graph's kept tokens differ: a float64 run of the eager model looks for near-ties"):
                decided = rounding_decided(model, clips, expected)
            check = compare(expected, got, dtype, ordered, skip=decided)
        if check.undecided and speed_only:
            log.warning("the exported graph's answers are unchecked: float rounding decides the kept tokens of all "
                        "%d check clips (random weights tie many scores); timing it, not trusting its answers",
                        check.rounding_decided)
        elif check.undecided:
            raise ExportError(
                f"the exported graph cannot be checked: float rounding decides the kept tokens of all "
                f"{check.rounding_decided} check clips (random weights tie many scores), so nothing disagreed but "
                f"nothing was proven; {out} was not written. Export trained weights (a checkpoint)")
        elif not check.ok:
            raise ExportError(
                f"the exported graph disagrees with the eager model ({check.describe()}); {out} was not written. "
                "This is a bug in exporting this model: please report it with the command you ran")
        for file in Path(tmp).iterdir():  # the graph, and its weights file if it has one (> 2 GB)
            os.replace(file, out.parent / file.name)
    return check


def check_clips(model: nn.Module, dtype: torch.dtype) -> Tensor:
    """What the exported graph must agree on: random clips, a static clip (every frame the same: every score
    ties) and one whose frames each repeat (a short video's sampling), where only tie-breaking decides."""
    noise = random_clips(model, CHECK_BATCH, dtype, torch.device("cpu"), seed=1)
    static = noise[:1, :, :1].expand_as(noise[:1])
    repeated = noise[1:2].repeat_interleave(2, dim=2)[:, :, : noise.shape[2]]
    return torch.cat([noise, static, repeated]).contiguous()


def compare(expected: tuple[Tensor, ...], got: tuple[Tensor, ...], dtype: str = "float32", ordered: bool = True,
            skip: Tensor | None = None) -> ExportCheck:
    """Logits within tolerance (relative to their scale), identical top-1 and identical kept positions (in the same
    order, or with ``ordered=False`` the same set after each stage), over the clips ``skip`` (``B`` bool) leaves."""
    compared = torch.ones(len(expected[0]), dtype=torch.bool) if skip is None else ~skip
    expected, got = tuple(t[compared] for t in expected), tuple(t[compared] for t in got)
    want, have = expected[0].float(), got[0].float()
    left_out = int((~compared).sum())
    if not (torch.isfinite(want).all() and torch.isfinite(have).all()):  # NaN compares false, argmax takes it
        return ExportCheck(math.inf, 0.0, False, False, len(want), left_out)
    scale = max(1.0, float(want.abs().max())) if len(want) else 1.0
    tolerance = (1e-4 if dtype == "float32" else 5e-2) * scale
    return ExportCheck(max_abs_diff=float((want - have).abs().max()) if len(want) else 0.0, tolerance=tolerance,
                       same_top1=bool(torch.equal(want.argmax(-1), have.argmax(-1))),
                       same_positions=all(torch.equal(*(_sorted(a, b) if not ordered else (a, b.to(a.dtype))))
                                          for a, b in zip(expected[1:], got[1:])),
                       clips=len(want), rounding_decided=left_out)


def rounding_decided(model: nn.Module, clips: Tensor, expected: tuple[Tensor, ...], nudges: int = ROUNDING_NUDGES,
                     noise: float = ROUNDING_NOISE) -> Tensor:
    """``B`` bool: the clips whose kept positions (in order) float rounding decides, so that no graph can be held to
    one answer: a float64 copy of ``model`` keeps other positions than ``expected`` (the model in its own dtype) on
    the clip, or on the clip nudged by noise the size of the rounding a float32 forward accumulates (``noise``,
    relative to the clip's spread; ``nudges`` draws). A graph computes in another order than the eager model, so
    where two scores are closer than its rounding it may take either: float64 alone catches only the near-ties that
    the eager model's own rounding flips. Each nudge is the same on every frame: repeated frames stay repeated and
    their exact ties (which tie-breaking decides, and every graph must reproduce) stay exact."""
    reference = GraphForward(copy.deepcopy(model).to(torch.float64)).eval()
    exact = clips.to(torch.float64)
    step, gen = noise * float(exact.std()), torch.Generator().manual_seed(0)
    frame = (*exact.shape[:2], 1, *exact.shape[3:])  # one nudge per clip, broadcast over its frames
    decided = torch.zeros(len(clips), dtype=torch.bool)
    with torch.inference_mode():
        for draw in range(nudges + 1):  # draw 0: the clip itself
            x = exact if draw == 0 else exact + step * torch.randn(frame, generator=gen, dtype=torch.float64)
            for a, b in zip(expected[1:], reference(x)[1:]):
                decided |= (a != b.to(a.dtype)).any(dim=-1)
    return decided


def _sorted(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    return a.sort(dim=-1).values, b.to(a.dtype).sort(dim=-1).values


def _export_onnx(graph: GraphForward, clips: Tensor, path: Path, info: ModelInfo) -> tuple[Tensor, ...]:
    require_backend("onnx", "onnx")
    require_backend("onnxscript", "onnx")
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on torchvision ops we do not use
        torch.onnx.export(graph, (clips,), str(path), dynamo=True, input_names=["clips"], output_names=list(OUTPUTS),
                          dynamic_shapes={"clips": {0: batch}}, verbose=False)
    write_onnx_info(path, info)
    return OnnxRuntimeRunner(path, read_info(path)).outputs(clips)  # read back and verified, as a user's load will


def write_onnx_info(path: Path, info: ModelInfo) -> None:
    """Rewrite the ONNX file at ``path`` sealed: its weights beside it when over 2 GB, ``info`` with its digest."""
    onnx = require_backend("onnx", "onnx")
    proto = onnx.load(str(path))  # the exporter may have put the weights in a side file: this reads them back
    for side_file in path.parent.glob(f"{path.name}.*"):
        side_file.unlink()
    # Protobuf caps one file at 2 GB (ViT-g's weights are 4): larger graphs keep their weights in NAME.data.
    large = proto.ByteSize() > ONNX_SINGLE_FILE_LIMIT
    onnx.save(proto, str(path), save_as_external_data=large, location=f"{path.name}.data")
    # Seal: the digest of what was written, then the metadata (with it) added without rewriting the weights.
    info = replace(info, digest=seal(info, content_digest(path)))
    proto = onnx.load(str(path), load_external_data=False)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = INFO_KEY, info.to_json()
    onnx.save(proto, str(path))


def _export_pt2(graph: GraphForward, clips: Tensor, path: Path, info: ModelInfo) -> tuple[Tensor, ...]:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(graph, (clips,), dynamic_shapes={"clips": {0: batch}})
    torch.export.save(program, str(path))  # saved twice: the digest covers what the first save wrote
    info = replace(info, digest=seal(info, content_digest(path)))
    torch.export.save(program, str(path), extra_files={f"{INFO_KEY}.json": info.to_json()})
    read_info(path)  # the second save wrote the same graph and weights: verified as a user's load will
    with torch.inference_mode():
        return tuple(torch.export.load(str(path)).module()(clips))


def runner_for(model: nn.Module, info: ModelInfo, backend: str = "torch", dtype: str = "float32",
               device: str = "cpu", compile: bool = False, speed_only: bool = False) -> Runner:
    """A runner for a live model: itself on ``torch``, or exported on the fly (checked) for an ONNX backend;
    ``speed_only`` as in :func:`export_model`.

    ``dtype`` int8 is refused: its answers are those of a guarded file (`sta export --quantize int8`, then
    ``exported``); `sta bench` times an unguarded one with :func:`sta.deploy.quantize.quantized_runner`.
    """
    if backend not in BACKENDS:
        raise InvalidInput(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if dtype == "int8":
        raise InvalidInput("`dtype` int8 runs a file written by `sta export --quantize int8` (pass it as `exported`, "
                           "with `backend` openvino or onnxruntime)", param="dtype")
    if backend == "torch":
        return TorchRunner(model, info, dtype=dtype, device=device, compile=compile)
    if compile:
        raise InvalidInput("`compile` is for `backend` torch; ONNX backends compile the graph themselves",
                           param="compile")
    if device != "cpu":
        raise InvalidInput(f"`backend` {backend} runs on the CPU here; use `backend` torch for `device` {device}",
                           param="device")
    with tempfile.TemporaryDirectory(prefix="sta-onnx-") as tmp:
        export_model(model, Path(tmp) / "model.onnx", info, speed_only=speed_only)
        # Both backends read the file while opening it, so the folder can go afterwards.
        return (OnnxRuntimeRunner if backend == "onnxruntime" else OpenVinoRunner)(Path(tmp) / "model.onnx", info,
                                                                                   dtype)
