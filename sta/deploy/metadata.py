"""What an exported file says about itself (:class:`ModelInfo`), checked before anything trusts it.

``sta export`` records a :class:`ModelInfo` in the file (ONNX: a metadata entry;
``.pt2``: an extra file; an OpenVINO IR ``.xml``: an ``rt_info`` entry, its
weights in the ``.bin`` beside it), with a ``digest``: the sha256 of the graph,
its weights and the metadata itself. On load the metadata is validated field by field and the
digest recomputed, so a file whose bytes changed after export (weights edited, a
truncated ``NAME.onnx.data``, a hand-edited metadata block) is refused with the file
named, instead of answering differently without a word. ``verify=False`` (the CLI's
``--skip-verify``) is for people who edit graphs on purpose.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from xml.etree import ElementTree

from torch import nn

from sta.core.contract import IMAGENET_MEAN, IMAGENET_STD, ClipConfig
from sta.core.methods import METHODS
from sta.core.schedule import R, normalize_r, tokens_after_stages
from sta.data.datasets import DATASETS, PROTOCOLS
from sta.errors import InvalidInput
from sta.utils.device import DTYPES
from sta.utils.optional import require_backend

INFO_KEY = "sta"  # ONNX metadata key / torch.export extra file holding ModelInfo as JSON
INFO_VERSION = 2  # 2: grid, digest, random_weights
GRID_FIELDS = ("patch_size", "tubelet_size", "in_chans", "depth", "embed_dim", "num_heads")
PT2_UNSEALED = ("extra/", ".data/serialization_id")  # archive members that change between two saves of one graph
QUANTIZED_DTYPES = ("int8",)  # graphs written by `sta export --quantize`: 8-bit matmuls, the rest float32
QUANTIZATION_FIELDS = {"tool": str, "version": str, "calibration": str, "clips": int, "forced": bool}  # required
QUANTIZATION_OPTIONAL = {"backend": str, "guard": dict, "float_nodes": int, "quantized_nodes": int}


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
    random_weights: bool = False  # exported from a model without trained weights: its answers mean nothing
    # int8 files only (None otherwise, and then absent from the JSON): tool, version, calibration set and count,
    # the guard's numbers, whether `force` wrote it past a failed guard (sta.deploy.quantize)
    quantization: dict | None = None
    digest: str | None = None  # sha256 of graph + weights + this metadata (without the digest); None before 0.3
    version: int = INFO_VERSION
    # The dataset the file was exported for, {"name": ..., "protocol": ...} (None: not named; absent from the JSON)
    dataset: dict | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "r", normalize_r(self.r))

    def to_json(self) -> str:
        data = asdict(self)
        for optional in ("quantization", "dataset"):  # absent when unset: older files keep their JSON and digest
            if data[optional] is None:
                del data[optional]
        return json.dumps(data)

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
        """The metadata of ``source``, every field checked (``InvalidInput`` naming the file and the field)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidInput(f"{source}: its sta metadata is not JSON ({err}); export it again") from None
        if not isinstance(data, dict):
            raise InvalidInput(f"{source}: its sta metadata is not a JSON object; export it again")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown or any(name not in data for name in REQUIRED):
            raise InvalidInput(f"{source}: its sta metadata has unknown or missing fields "
                               f"({', '.join(unknown or [n for n in REQUIRED if n not in data])}); export it again")
        if problem := _problem(data):
            raise InvalidInput(f"{source}: its sta metadata is invalid: {problem}; export it again")
        return cls(**data)


REQUIRED = ("model", "r", "method", "num_frames", "img_size", "num_classes", "tokens_per_stage", "gflops_per_view")


def _problem(d: dict) -> str | None:
    """What is wrong with a metadata dict, or None (every check a hand edit could break)."""
    def count(v, low=1) -> bool:
        return type(v) is int and v >= low

    def floats(v, n) -> bool:
        return isinstance(v, list) and len(v) == n and all(type(x) in (int, float) and math.isfinite(x) for x in v)

    checks = [
        (isinstance(d["model"], str), "model must be text"),
        (isinstance(d["r"], list) and len(d["r"]) == 3 and all(count(v, 0) for v in d["r"]), "r must be 3 counts"),
        (d["method"] in METHODS, f"unknown method {d['method']!r}"),
        (all(count(d[k]) for k in ("num_frames", "img_size", "num_classes")), "frames, size and classes must be >= 1"),
        (isinstance(d["tokens_per_stage"], list) and len(d["tokens_per_stage"]) == 3
         and all(count(v) for v in d["tokens_per_stage"]), "tokens_per_stage must be 3 counts"),
        (d["gflops_per_view"] is None or type(d["gflops_per_view"]) in (int, float), "gflops_per_view: a number"),
        (floats(d.get("mean", [0] * 3), 3) and floats(d.get("std", [1] * 3), 3)
         and all(s > 0 for s in d.get("std", [1])), "mean and std must be 3 numbers (std > 0)"),
        (d.get("class_names") is None or isinstance(d["class_names"], list) and len(d["class_names"]) ==
         d["num_classes"] and all(isinstance(n, str) for n in d["class_names"]), "class_names must be one per class"),
        (d.get("dtype", "float32") in DTYPES or d.get("dtype") in QUANTIZED_DTYPES, "unknown dtype"),
        (d.get("sampling_rate") is None or count(d["sampling_rate"]), "sampling_rate must be >= 1"),
        (isinstance(d.get("random_weights", False), bool), "random_weights must be true or false"),
        (d.get("grid") is None or isinstance(d["grid"], dict) and set(d["grid"]) == set(GRID_FIELDS)
         and all(count(v) for v in d["grid"].values()), f"grid must hold {', '.join(GRID_FIELDS)}"),
        (d.get("dataset") is None or isinstance(d["dataset"], dict) and set(d["dataset"]) == {"name", "protocol"}
         and d["dataset"]["name"] in DATASETS and d["dataset"]["protocol"] in PROTOCOLS,
         "dataset must hold a known name and protocol"),
    ]
    if problem := next((why for ok, why in checks if not ok), None):
        return problem
    if problem := _quantization_problem(d.get("quantization"), d.get("dtype", "float32")):
        return problem
    grid = d.get("grid")
    # Methods held to STA's counts keep what its arithmetic says; the others (rlt, evs-q) keep their own counts,
    # which the graph's kept positions give (`sta export` records those).
    if (grid is not None and METHODS[d["method"]].equal_budget
            and d["num_frames"] % grid["tubelet_size"] == 0 and d["img_size"] % grid["patch_size"] == 0):
        tokens = tokens_after_stages(d["num_frames"] // grid["tubelet_size"],
                                     (d["img_size"] // grid["patch_size"]) ** 2, d["r"])
        if list(tokens) != d["tokens_per_stage"]:
            return f"r {d['r']} keeps {list(tokens)} tokens, not the recorded {d['tokens_per_stage']}"
    return None


def _quantization_problem(q, dtype: str) -> str | None:
    """What is wrong with the quantization record (None for a float file, a dict for an int8 one), or None."""
    if (q is not None) != (dtype in QUANTIZED_DTYPES):
        return f"a {dtype} file must {'not ' if q is not None else ''}carry a quantization record"
    if q is None:
        return None
    kinds = {**QUANTIZATION_FIELDS, **QUANTIZATION_OPTIONAL}
    if not isinstance(q, dict) or any(k not in q for k in QUANTIZATION_FIELDS) or set(q) - set(kinds):
        return (f"quantization must hold {', '.join(QUANTIZATION_FIELDS)} (and may hold "
                f"{', '.join(QUANTIZATION_OPTIONAL)})")
    if bad := next((k for k, v in q.items() if type(v) is not kinds[k]), None):  # type(): a bool is no count
        return f"quantization {bad} must be {kinds[bad].__name__}"
    if q["clips"] < 0 or q.get("float_nodes", 0) < 0 or q.get("quantized_nodes", 0) < 0:
        return "quantization counts must be >= 0"
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in q.get("guard", {}).values()):
        return "quantization guard must map names to finite numbers"
    return None


def model_info(model: nn.Module, name: str, class_names: list[str] | None = None,
               sampling_rate: int | None = None, random_weights: bool = False,
               dataset: dict | None = None) -> ModelInfo:
    """The :class:`ModelInfo` of a live model (any :class:`~sta.core.contract.ClipClassifier`).

    The token counts are the ones the model's own method keeps (a meta forward, as for its FLOPs), not STA's
    arithmetic: ``evs-q`` and ``rlt`` keep other counts at the same r."""
    from sta.measure.flops import flops_report

    cfg = model.cfg
    grid = {key: getattr(cfg, key) for key in GRID_FIELDS}
    report = flops_report(model)
    return ModelInfo(model=name, r=model.r, method=model.method, num_frames=cfg.num_frames,
                     img_size=cfg.img_size, num_classes=cfg.num_classes, tokens_per_stage=list(report.tokens),
                     gflops_per_view=report.gflops, mean=list(cfg.mean), std=list(cfg.std),
                     class_names=class_names, sampling_rate=sampling_rate, grid=grid, random_weights=random_weights,
                     dataset=dataset)


# ------------------------------------------------------------------------------------------------ reading


def read_info(path: str | Path, verify: bool = True) -> ModelInfo:
    """The :class:`ModelInfo` that `sta export` stored in an ``.onnx``, ``.pt2`` or OpenVINO ``.xml`` file, validated,
    and (``verify``) checked against the file's digest."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such exported model file", param="exported")
    if path.suffix == ".onnx":
        text = _onnx_metadata(_load_onnx(path))
    elif path.suffix == ".pt2":
        text = _pt2_metadata(path)
    elif path.suffix == ".xml":
        text = ir_metadata(path)
    else:
        raise InvalidInput(f"{path}: expected an .onnx, .pt2 or .xml (OpenVINO IR) file written by `sta export`",
                           param="exported")
    if not text:
        raise InvalidInput(f"{path}: has no sta metadata; export it with `sta export`", param="exported")
    info = ModelInfo.from_json(text, str(path))
    if verify:
        verify_digest(path, info)
    return info


def verify_digest(path: Path, info: ModelInfo) -> None:
    """``InvalidInput`` unless the file's graph, weights and metadata are those `sta export` wrote."""
    if info.digest is None:
        raise InvalidInput(f"{path}: exported before sta 0.3, it carries no digest to check it against; export it "
                           "again (or skip the check with `skip_verify`)", param="skip_verify")
    if seal(info, content_digest(path)) != info.digest:
        raise InvalidInput(f"{path}: its graph, weights or metadata changed after `sta export` wrote it (the digest "
                           "does not match); export it again, or skip the check with `skip_verify` if you edited it "
                           "on purpose", param="skip_verify")


def seal(info: ModelInfo, content: str) -> str:
    """The digest of a file: its content's sha256 and its metadata (without the digest itself)."""
    metadata = replace(info, digest=None).to_json()
    return hashlib.sha256(f"{content}\n{metadata}".encode()).hexdigest()


def content_digest(path: Path) -> str:
    """sha256 of everything in an exported file but its sta metadata (an ONNX graph's weights file included)."""
    digest = hashlib.sha256()
    if path.suffix == ".pt2":
        with _open_zip(path) as archive:
            for name in sorted(archive.namelist()):
                relative = name.split("/", 1)[-1]  # the archive's top folder is named after the file
                if not relative.startswith(PT2_UNSEALED):
                    digest.update(relative.encode() + b"\0" + archive.read(name))
        return digest.hexdigest()
    if path.suffix == ".xml":
        return _ir_content_digest(path)
    proto = _load_onnx(path)
    del proto.metadata_props[:]
    digest.update(proto.SerializeToString(deterministic=True))
    for data_file in _external_files(proto, path):
        with open(data_file, "rb") as f:
            while block := f.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()


def _load_onnx(path: Path):
    onnx = require_backend("onnx", "onnx")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError and friends
        raise InvalidInput(f"{path}: not a readable ONNX file ({err})", param="exported") from None


def _onnx_metadata(proto) -> str | None:
    return {p.key: p.value for p in proto.metadata_props}.get(INFO_KEY)


def _external_files(proto, path: Path) -> list[Path]:
    """The side files an ONNX graph keeps its weights in, checked to be there and long enough."""
    needed: dict[str, int] = {}
    for tensor in proto.graph.initializer:
        entries = {e.key: e.value for e in tensor.external_data}
        if "location" in entries:
            end = int(entries.get("offset", 0)) + int(entries.get("length", 0))
            needed[entries["location"]] = max(needed.get(entries["location"], 0), end)
    files = []
    for name, end in sorted(needed.items()):
        file = path.parent / name
        if not file.is_file():
            raise InvalidInput(f"{path}: its weights file {file} is missing (keep it next to the .onnx file)",
                               param="exported")
        if file.stat().st_size < end:
            raise InvalidInput(f"{path}: its weights file {file} is truncated ({file.stat().st_size} bytes, the "
                               f"graph needs {end})", param="exported")
        files.append(file)
    return files


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise InvalidInput(f"{path}: not a readable torch.export file ({err})", param="exported") from None


def _pt2_metadata(path: Path) -> str | None:
    with _open_zip(path) as archive:
        names = [n for n in archive.namelist() if n.split("/", 1)[-1] == f"extra/{INFO_KEY}.json"]
        try:
            return archive.read(names[0]).decode("utf-8") if names else None
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as err:
            raise InvalidInput(f"{path}: not a readable torch.export file ({err})", param="exported") from None


# ------------------------------------------------------------------------------------------------ OpenVINO IR
# An IR is NAME.xml (the graph) + NAME.bin (its weights). ModelInfo lives in the model's <rt_info> as
# <sta value="JSON"/>; the digest covers the XML without that element, the .bin, and the metadata.


def _ir_tree(path: Path) -> ElementTree.ElementTree:
    try:
        return ElementTree.parse(path)
    except (ElementTree.ParseError, OSError) as err:
        raise InvalidInput(f"{path}: not a readable OpenVINO IR file ({err})", param="exported") from None


def _ir_entry(root: ElementTree.Element) -> tuple[ElementTree.Element | None, ElementTree.Element | None]:
    """The model's ``<rt_info>`` and its ``<sta>`` child (either None when absent)."""
    rt_info = root.find("rt_info")
    return rt_info, (rt_info.find(INFO_KEY) if rt_info is not None else None)


def ir_metadata(path: Path) -> str | None:
    """The ``sta`` entry of an IR's ``<rt_info>``, or None."""
    root = _ir_tree(path).getroot()
    if root.tag != "net":
        raise InvalidInput(f"{path}: not an OpenVINO IR file (no <net> root)", param="exported")
    entry = _ir_entry(root)[1]
    return entry.get("value") if entry is not None else None


def write_ir_info(path: Path, text: str) -> None:
    """Store ``text`` as the IR's ``<rt_info><sta value=.../>`` (created if needed; nothing else changes)."""
    tree = _ir_tree(path)
    rt_info, entry = _ir_entry(tree.getroot())
    if rt_info is None:
        rt_info = ElementTree.SubElement(tree.getroot(), "rt_info")
    if entry is None:
        entry = ElementTree.SubElement(rt_info, INFO_KEY)
    entry.set("value", text)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def _ir_content_digest(path: Path) -> str:
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise InvalidInput(f"{path}: its weights file {weights} is missing (keep it next to the .xml file)",
                           param="exported")
    root = _ir_tree(path).getroot()
    rt_info, entry = _ir_entry(root)
    if entry is not None:
        rt_info.remove(entry)
    digest = hashlib.sha256(ElementTree.tostring(root, encoding="utf-8"))
    with open(weights, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()
