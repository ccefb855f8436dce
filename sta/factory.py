"""The one place that turns what a user named into a model or a runner, with every rule about options.

A user names a model in one of four ways (:class:`ModelRequest`):

- a release size, with or without a checkpoint (``model``, ``ckpt_path``): our
  :class:`~sta.models.vit.VisionTransformer`; without a checkpoint its weights are
  random (seed 0, so runs are repeatable) and it says so;
- a local Hugging Face directory (``hf_model``): VideoMAE as our ViT, ViViT and
  V-JEPA 2 as :class:`~sta.adapters.wrapper.HFVideoClassifier`; frames, size,
  classes and normalisation come from the directory;
- a file written by ``sta export`` (``exported``): a runner of that graph, whose
  r, method, frames, size and classes are fixed by the file;
- nothing, where a command allows it: the model that ships with the package
  (:mod:`sta.models.bundled`).

Options that the chosen source decides itself are refused, naming them, rather
than silently overridden. How strongly to prune is a :class:`PruningRequest`:
an r, or a budget (``flops_reduction`` / ``keep_ratio``) that picks the smallest r meeting it.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field

import torch

from sta.core.contract import ClipClassifier
from sta.core.methods import METHODS, Needs, check_method_use
from sta.core.schedule import R, RSpec, normalize_r
from sta.data.datasets import CUSTOM
from sta.data.proxies import DEFAULT_PROXY
from sta.deploy.metadata import ModelInfo, model_info
from sta.deploy.runners import Runner, open_exported
from sta.errors import InvalidInput
from sta.measure.gradnorm import oracle_scorer
from sta.models.bundled import SAMPLING_RATE as BUNDLED_SAMPLING_RATE
from sta.models.bundled import bundled_model_available, load_bundled_model
from sta.models.bundled import class_names as bundled_class_names
from sta.models.checkpoint import load_weights
from sta.models.vit import create_model

__all__ = ["RELEASE_DEFAULTS", "LoadedModel", "ModelRequest", "Prepared", "PruningRequest", "build_architecture",
           "class_names", "file_sha256", "load_model", "open_runner", "pick_r", "sampling_rate"]

# A release model's clip when the user does not say: VideoMAE's fine-tuning setting.
RELEASE_DEFAULTS = dict(model="vit_base_patch16_224", num_frames=16, img_size=224, tubelet_size=2, num_classes=400)
RELEASE_SAMPLING_RATE = 4  # Kinetics frame stride of the release's test protocol
EXPORTED_BACKENDS = {".pt2": "torch", ".xml": "openvino", ".onnx": "onnxruntime"}  # what runs a file by default
CLIP_OPTIONS = ("model", "ckpt_path", "num_classes", "num_frames", "img_size", "tubelet_size")  # a source's own


@dataclass(frozen=True)
class ModelRequest:
    """What the user named. ``None`` means "not given" (a value of 0 or False is given)."""

    model: str | None = None  # release size, e.g. vit_base_patch16_224
    ckpt_path: str | None = None  # release checkpoint (.pth)
    hf_model: str | None = None  # local Hugging Face directory
    exported: str | None = None  # file written by `sta export`
    num_frames: int | None = None
    img_size: int | None = None
    tubelet_size: int | None = None
    num_classes: int | None = None
    allow_unsafe: bool = False  # unpickle checkpoints that need arbitrary code
    dataset_classes: int | None = None  # the dataset's class count: a release head's size when num_classes is not given
    verify: bool = True  # check an exported file's digest (False: the user edited the graph on purpose)
    proxy: str | None = None  # which bundled model, "easy" or "hard" (None: DEFAULT_PROXY), when nothing else is named

    @property
    def source(self) -> str:
        """``"exported"``, ``"hf"``, ``"release"`` or ``"bundled"`` (nothing named)."""
        if self.exported is not None:
            return "exported"
        if self.hf_model is not None:
            return "hf"
        return "release" if self.model is not None or self.ckpt_path is not None else "bundled"

    def given(self, names: tuple[str, ...] = CLIP_OPTIONS) -> list[str]:
        return [name for name in names if getattr(self, name) is not None]


@dataclass(frozen=True)
class PruningRequest:
    """How to prune: ``r`` (an int, or one per stage), or a budget that picks the smallest single r."""

    r: RSpec | None = None
    method: str | None = None  # None: "sta"
    flops_reduction: float | None = None  # save at least this fraction of the unpruned FLOPs
    keep_ratio: float | None = None  # keep at most this fraction of the tokens after the last stage

    def __post_init__(self) -> None:
        chosen = [name for name in ("r", "flops_reduction", "keep_ratio") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise InvalidInput(f"give one of `{'`, `'.join(chosen)}`, not several", param=chosen[-1])

    @property
    def given(self) -> list[str]:
        return [name for name in ("r", "method", "flops_reduction", "keep_ratio") if getattr(self, name) is not None]


@dataclass
class LoadedModel:
    """A live model and what identifies it."""

    model: ClipClassifier
    name: str  # release name, HF directory or "bundled proxy model"
    desc: dict  # names the weights (path and sha256): evaluation fingerprints and summaries
    class_names: list[str] | None = None  # names the source itself carries
    bundled: bool = False
    random_weights: bool = False
    sampling_rate: int | None = None  # frame stride the model expects, when it is not the release's
    notes: list[str] = field(default_factory=list)  # what was decided for the user (a budget's r), to show them
    proxy: str | None = None  # the bundled model's task ("easy" / "hard"); None for any other model


@dataclass
class Prepared:
    """What a command runs: a runner (any backend), what it computes, and what identifies its weights."""

    runner: Runner
    info: ModelInfo
    desc: dict
    bundled: bool = False
    random_weights: bool = False
    notes: list[str] = field(default_factory=list)
    proxy: str | None = None  # the bundled model's task, as in LoadedModel


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_request(request: ModelRequest, pruning: PruningRequest | None = None, allow_bundled: bool = False) -> str:
    """The request's source, once the options it decides itself are refused (``InvalidInput`` naming them)."""
    source = request.source
    if request.proxy is not None and source != "bundled":
        raise InvalidInput(f"`proxy` picks a bundled model, and a model is named ({source}): drop `proxy` or the "
                           "model options", param="proxy")
    if source == "exported":
        fixed = request.given((*CLIP_OPTIONS, "hf_model")) + (pruning.given if pruning else [])
        if fixed:
            raise InvalidInput(f"`exported` brings its own model, r and method: drop {_spell(fixed)}",
                               param=fixed[0])
    elif source == "hf" and (fixed := request.given()):
        raise InvalidInput(f"`hf_model` takes frames, size, classes and weights from its config: drop {_spell(fixed)}",
                           param=fixed[0])
    elif (source == "bundled" and allow_bundled and bundled_model_available(request.proxy or DEFAULT_PROXY)
          and (fixed := request.given())):
        raise InvalidInput(f"the bundled demo model has its own frames, size and classes: drop {_spell(fixed)} "
                           "(or name a model with `model` / `hf_model`)", param=fixed[0])
    return source


def build_architecture(request: ModelRequest, method: str | None = None, device: str = "meta") -> ClipClassifier:
    """The architecture the request names, without weights (``sta flops`` on meta, ``sta bench`` on a device)."""
    source = check_request(request)
    if source == "exported":
        raise InvalidInput("an exported file is a graph, not an architecture to rebuild", param="exported")
    method = method or "sta"
    if source == "hf":
        from sta.adapters.directory import hf_architecture

        return hf_architecture(request.hf_model, method=method, device=device)
    clip = _release_clip(request)
    with torch.device(device):
        return create_model(clip.pop("model"), method=method, **clip)


def load_model(request: ModelRequest, pruning: PruningRequest | None = None, default_r: RSpec | None = 0,
               allow_bundled: bool = False, bundled_r: RSpec = 0, use: str | None = None) -> LoadedModel:
    """The model with its weights, at the r ``pruning`` asks for (else ``default_r``; the bundled model: ``bundled_r``).

    ``default_r=None``: the caller sweeps r itself; the model stays unpruned (and ``pruning`` must be empty).
    ``allow_bundled``: with nothing named, the bundled model (else a random-weight release model, as before).
    ``use`` (``"export"``, ``"predict"``, ``"bench"``): refuse a method that cannot serve it, saying why.
    """
    source = check_request(request, allow_bundled=allow_bundled)
    if source == "exported":
        raise InvalidInput("an exported file runs through `open_runner`, not as a live model", param="exported")
    pruning = pruning or PruningRequest()
    proxy = request.proxy or DEFAULT_PROXY
    if source == "bundled" and allow_bundled and bundled_model_available(proxy):
        name = f"bundled proxy model ({proxy})"
        loaded = LoadedModel(load_bundled_model(proxy=proxy), name, dict(name=name, proxy=proxy),
                             list(bundled_class_names(proxy)), bundled=True, sampling_rate=BUNDLED_SAMPLING_RATE,
                             notes=[f"no model given: using the bundled demo model ({proxy} synthetic proxy task)"],
                             proxy=proxy)
        default_r = bundled_r if default_r is not None else None
    elif source == "hf":
        loaded = _load_hf(request.hf_model)
    else:
        loaded = _load_release(request)
    loaded.model.set_pruning(method=pruning.method or "sta")
    # `oracle` keeps the tokens with the highest GradNorm of the unpruned model: whatever runs this model gets it.
    loaded.model.use_scorer(oracle_scorer(loaded.model))
    if use is not None:
        check_method_use(loaded.model.method, use)
    if default_r is not None:
        r, note = pick_r(loaded.model, pruning, default_r)
        loaded.model.set_pruning(r=r)
        loaded.notes += [note] if note else []
    return loaded


def open_runner(request: ModelRequest, pruning: PruningRequest | None = None, backend: str | None = None,
                dtype: str = "float32", device: str = "cpu", compile: bool = False, default_r: RSpec = 0,
                allow_bundled: bool = False, bundled_r: RSpec = 0, use: str | None = None) -> Prepared:
    """A runner for the request on ``backend`` (default: torch; an exported file: by its suffix); ``use`` as in
    :func:`load_model`."""
    from sta.deploy.export import runner_for

    if request.source == "exported":
        check_request(request, pruning)
        if compile:
            raise InvalidInput("`compile` applies to a model run by torch, not to an exported file", param="compile")
        if device != "cpu":
            raise InvalidInput("exported files run on the CPU here; for a GPU name the model (`model` / "
                               "`hf_model`) with `backend` torch", param="device")
        backend = backend or EXPORTED_BACKENDS.get(os.path.splitext(request.exported)[1], "onnxruntime")
        runner = open_exported(request.exported, backend, dtype, verify=request.verify)
        desc = dict(exported=os.path.abspath(request.exported), exported_sha256=file_sha256(request.exported),
                    name=runner.info.model)
        return Prepared(runner, runner.info, desc, random_weights=runner.info.random_weights)
    loaded = load_model(request, pruning, default_r, allow_bundled, bundled_r, use)
    if (compile or (backend or "torch") != "torch") and Needs.SCORES in METHODS[loaded.model.method].needs:
        raise InvalidInput(f"{loaded.model.method} scores every clip with a backward pass of the eager model: run it "
                           "with `backend` torch, without `compile`", param="method")
    info = model_info(loaded.model, loaded.name, loaded.class_names, sampling_rate=loaded.sampling_rate,
                      random_weights=loaded.random_weights)
    runner = runner_for(loaded.model, info, backend or "torch", dtype, device, compile)
    return Prepared(runner, info, loaded.desc, loaded.bundled, loaded.random_weights, loaded.notes, loaded.proxy)


def pick_r(model: ClipClassifier, pruning: PruningRequest, default: RSpec = 0) -> tuple[R, str | None]:
    """The r to run: ``pruning.r``, else the smallest r meeting its budget (with a note saying so), else ``default``."""
    if pruning.flops_reduction is None and pruning.keep_ratio is None:
        return normalize_r(pruning.r if pruning.r is not None else default), None
    from sta.measure.flops import flops_report, r_for_budget

    r = r_for_budget(model, flops_reduction=pruning.flops_reduction, keep_ratio=pruning.keep_ratio)
    with model.pruning(r=r):
        report = flops_report(model)
    budget = (f"`flops_reduction` {pruning.flops_reduction}" if pruning.flops_reduction is not None
              else f"`keep_ratio` {pruning.keep_ratio}")
    note = f"{budget}: picked r={r} ({' -> '.join(map(str, report.tokens))} tokens, {report.gflops:.2f} GFLOPs/view)"
    return normalize_r(r), note


def sampling_rate(given: int | None, model: ModelInfo | LoadedModel) -> int:
    """The frame stride, decided here for every command: the one given, else the one the model records (the bundled
    model: 1, its clips are consecutive frames), else the release's 4."""
    return given or model.sampling_rate or RELEASE_SAMPLING_RATE


def class_names(num_classes: int, labels_file: str | None = None, hf_model: str | None = None,
                dataset: str | None = None, carried: list[str] | None = None) -> list[str] | None:
    """Names for the classes: a labels file, else those the model carries (an exported file, the bundled model, an HF
    directory's ``id2label``), else the dataset's shipped names when the count fits (``custom``: ``class_N``), else
    any shipped set that fits."""
    from sta import labels

    if labels_file is not None:
        if not os.path.isfile(labels_file):
            raise InvalidInput(f"`labels` file {labels_file} not found", param="labels")
        names = labels.read_label_file(labels_file)
        if len(names) != num_classes:
            raise InvalidInput(f"{labels_file}: {len(names)} class names for a model with {num_classes} classes",
                               param="labels")
        return names
    if carried:
        return list(carried)
    if hf_model is not None:
        from sta.adapters.directory import read_class_names

        names = read_class_names(hf_model)
        if names and len(names) == num_classes:
            return names
    if dataset == CUSTOM:  # one's own classes, named by no file: numbered
        return [f"class_{i}" for i in range(num_classes)]
    if dataset is not None and len(names := labels.load(dataset)) == num_classes:
        return names
    return labels.for_num_classes(num_classes)


def _release_clip(request: ModelRequest) -> dict:
    clip = {name: getattr(request, name) for name in ("model", "num_frames", "img_size", "tubelet_size",
                                                        "num_classes")}
    if clip["num_classes"] is None:
        clip["num_classes"] = request.dataset_classes
    return {name: RELEASE_DEFAULTS[name] if value is None else value for name, value in clip.items()}


def _load_release(request: ModelRequest) -> LoadedModel:
    """A release size with its checkpoint, or with random weights (seed 0: the same every run, so resumable)."""
    clip = _release_clip(request)
    name = clip.pop("model")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model(name, **clip)
    desc = dict(name=name, **clip)
    if request.ckpt_path is None:
        warnings.warn(f"no checkpoint given: {name} has random weights (seed 0), its accuracy means nothing",
                      stacklevel=3)
        desc.update(checkpoint=None, random_init_seed=0)
        return LoadedModel(model.eval(), name, desc, random_weights=True)
    # A Kinetics-710 head (VideoMAE V2) with num_classes=400: its K400 rows, with a warning.
    head_map = load_weights(model, request.ckpt_path, allow_unsafe=request.allow_unsafe, stacklevel=4)
    desc.update(checkpoint=os.path.abspath(request.ckpt_path), checkpoint_sha256=file_sha256(request.ckpt_path))
    if head_map:
        desc.update(head=head_map)
    return LoadedModel(model.eval(), os.path.basename(request.ckpt_path) or name, desc)


def _load_hf(path: str) -> LoadedModel:
    from sta.adapters.directory import load_hf_directory

    model = load_hf_directory(path)
    weights = sorted(f for f in os.listdir(path) if f.endswith((".safetensors", ".bin")))
    desc = dict(hf_model=os.path.abspath(path),
                weights_sha256={f: file_sha256(os.path.join(path, f)) for f in weights})
    return LoadedModel(model, path, desc)


def _spell(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)
