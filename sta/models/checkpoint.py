"""Reading VideoMAE release checkpoints safely and loading them with clear errors."""

from __future__ import annotations

import argparse
import os
import re
import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from sta.errors import InvalidInput, StaError
from sta.models.heads import K400, K710, K710_TO_K400, is_k710_head, k710_to_k400_head
from sta.utils.files import first_line

# Objects release checkpoints carry besides tensors: training args and numpy
# scalars (e.g. best accuracy). None of them runs code when unpickled. Files
# written with numpy 1.x name numpy's internals `numpy.core`, 2.x `numpy._core`.
SAFE_GLOBALS: list = [argparse.Namespace]
try:
    import numpy as np

    _multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    for _fn in (_multiarray._reconstruct, _multiarray.scalar):
        SAFE_GLOBALS += [(_fn, f"numpy.{core}.multiarray.{_fn.__name__}") for core in ("core", "_core")]
    SAFE_GLOBALS += [np.ndarray, np.dtype]
    SAFE_GLOBALS += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "bool")]
except (ImportError, AttributeError):  # numpy moved these again; tensors alone still load
    pass

ZIP_MAGIC = b"PK\x03\x04"  # torch.save since 1.6
PICKLE_PROTO = b"\x80"  # the legacy format: pickles start with the PROTO opcode
WRAPPER_KEYS = ("model", "module", "state_dict", "model_state")
# Key prefixes stripped when every key has one: DDP, torch.compile, and the two that
# VideoMAE V2's fine-tuning loader strips from the files it starts from.
KEY_PREFIXES = ("module.", "_orig_mod.", "backbone.", "encoder.")
COMPILE_PREFIX = "_orig_mod."  # torch.compile's: VideoMAE V2 strips it from each key that has it


class CheckpointError(StaError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def read_checkpoint(path: str | os.PathLike, allow_unsafe: bool = False) -> dict:
    """Unpickle a checkpoint file with ``weights_only=True`` (plus the allow-list above).

    A file that needs arbitrary code is refused, naming what it would run,
    unless ``allow_unsafe=True`` (CLI: ``--allow-unsafe-checkpoint``), which
    only makes sense for files you trust.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory; for a Hugging Face model folder use `hf_model`",
                              param="ckpt_path")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if not (magic.startswith(ZIP_MAGIC) or magic[:1] == PICKLE_PROTO):
        raise CheckpointError(f"{path!r} is not a PyTorch checkpoint (neither a torch.save zip nor a pickle)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it then reads fine
            if allow_unsafe:
                return torch.load(path, map_location="cpu", weights_only=False)
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        text = str(err)
        if "Unsupported global" in text or "Weights only load failed" in text and magic.startswith(ZIP_MAGIC):
            culprits = _unsafe_globals(path) or re.findall(r"Unsupported global: GLOBAL (\S+)", text)
            if culprits:
                raise CheckpointError(
                    f"checkpoint {path!r} holds objects that run code when unpickled ({', '.join(culprits[:5])}): "
                    "loading it can execute arbitrary code. Only if you trust where the file comes from, pass "
                    "`allow_unsafe`."
                ) from err
        if not magic.startswith(ZIP_MAGIC):
            raise CheckpointError(f"{path!r} is not a PyTorch checkpoint that loads safely: a pickle holding "
                                  "objects other than tensors. If it is a legacy checkpoint you trust, pass "
                                  "`allow_unsafe` (it may run arbitrary code).") from err
        detail = re.search(r"WeightsUnpickler error: \s*(.+)", text)
        reason = detail.group(1).strip() if detail else first_line(err)
        raise CheckpointError(f"checkpoint {path!r} is not a readable PyTorch file (truncated or damaged?): "
                              f"{reason}") from err


def _unsafe_globals(path: str) -> list[str]:
    """Names of the code-running globals a zip checkpoint refers to, beyond the allow-list."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # damaged beyond reading its pickle: the caller reports that instead
        return []
    allowed = {name for entry in SAFE_GLOBALS if isinstance(entry, tuple) for name in entry[1:]}
    allowed |= {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS if not isinstance(g, tuple)}
    return [name for name in found if name not in allowed]


def extract_state_dict(obj: Mapping) -> dict[str, Tensor]:
    """The model weights inside a release checkpoint, whichever wrapper it uses.

    Accepts ``{"model": sd}``, ``{"module": sd}``, a bare state dict, and strips
    the key prefixes of :data:`KEY_PREFIXES` (DistributedDataParallel's ``module.``,
    ``torch.compile``'s ``_orig_mod.``, VideoMAE V2's ``backbone.`` / ``encoder.``),
    each only when every tensor key carries it, repeatedly (``_orig_mod.module.x``);
    ``_orig_mod.`` also key by key, as VideoMAE V2's loader does (a file where only some keys
    carry it loads there, so it loads here).
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict in the checkpoint, found {type(obj).__name__}")
    for key in WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise CheckpointError(f"no tensors found in the checkpoint (top-level keys: {sorted(obj)[:10]})")
    while True:
        state = _strip_each(state, COMPILE_PREFIX)
        prefix = next((p for p in KEY_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            return state
        state = {k[len(prefix):]: v for k, v in state.items()}


def _strip_each(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """``prefix`` removed from every key that has it; a key that would then clash with another is an error."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key[len(prefix):] if key.startswith(prefix) else key
        if name in out:
            raise CheckpointError(f"checkpoint holds both {name!r} and {prefix}{name!r}: two weights for one "
                                  "parameter")
        out[name] = value
    return out


# Parameters of VideoMAE V2 options that its released fine-tuned checkpoints leave off
# (models/modeling_finetune.py): layer scale multiplies each branch by a learned
# per-channel gamma; cosine attention normalises q and k and learns a per-head logit
# scale (``attn.scale``); ``use_mean_pooling=False`` replaces fc_norm with ``norm``.
UNSUPPORTED_KEYS = (
    (re.compile(r"blocks\.\d+\.gamma_[12]$"), "layer scale (init_values > 0)"),
    (re.compile(r"blocks\.\d+\.attn\.scale$"), "cosine attention (cos_attn=True)"),
    (re.compile(r"norm\.(weight|bias)$"), "first-token pooling through `norm` (use_mean_pooling=False)"),
)


def unsupported_features(state: Mapping[str, Tensor]) -> dict[str, list[str]]:
    """``{feature: keys}`` for the weights of VideoMAE V2 options this model does not implement."""
    found: dict[str, list[str]] = {}
    for pattern, feature in UNSUPPORTED_KEYS:
        keys = sorted((k for k in state if pattern.match(k)), key=_natural)
        if keys:
            found[feature] = keys
    return found


def _natural(key: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def refuse_unsupported(state: Mapping[str, Tensor]) -> None:
    """Raise ``CheckpointError`` naming the keys of options the model cannot run (see :data:`UNSUPPORTED_KEYS`)."""
    found = unsupported_features(state)
    if found:
        parts = [f"{feature}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''} ({len(keys)} keys)"
                 for feature, keys in found.items()]
        raise CheckpointError("checkpoint uses model options sta-prune does not support (VideoMAE V2's released "
                              "fine-tuned checkpoints have none of them):\n  " + "\n  ".join(parts))


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Raise ``CheckpointError`` listing missing, unexpected and mis-shaped keys, if any.

    Weights of unsupported VideoMAE V2 options (layer scale, cosine attention) are
    refused first, by name, rather than listed as unexpected.
    """
    refuse_unsupported(state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or misshaped:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
                 if keys]
        raise CheckpointError(f"checkpoint does not fit the model ({_mismatch_hint(expected, state)}):\n  "
                              + "\n  ".join(parts))


def _mismatch_hint(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str:
    """Say what differs in the user's terms: the model size, the class count, or the layout."""
    def size(sd: Mapping[str, Tensor]) -> tuple[int | None, int]:
        weight = sd.get("patch_embed.proj.weight")
        depth = len({m.group(1) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
        return (weight.shape[0] if weight is not None else None), depth

    (want_width, want_depth), (got_width, got_depth) = size(expected), size(state)
    if got_width is not None and (got_width, got_depth) != (want_width, want_depth):
        return (f"the checkpoint is a different model size: width {got_width}, depth {got_depth}; the model has "
                f"width {want_width}, depth {want_depth}; pick the matching `model`")
    head, got_head = expected.get("head.weight"), state.get("head.weight")
    if head is not None and got_head is not None and head.shape != got_head.shape:
        extra = (f" (a Kinetics-710 head maps only to {K400} classes)"
                 if got_head.shape[0] == K710 and head.shape[0] != K400 else "")
        return (f"the checkpoint's head has {got_head.shape[0]} classes, the model {head.shape[0]}: "
                f"check `num_classes`{extra}")
    if any(k.startswith("decoder.") for k in state) or any(k.startswith("encoder.") for k in state):
        return "this looks like a pre-training checkpoint (encoder + decoder, no classifier): use fine-tuned weights"
    return "different parameter names or shapes"


def load_checkpoint(model: nn.Module, path: str | os.PathLike, allow_unsafe: bool = False,
                    head_map: str | None = "auto") -> nn.Module:
    """Load a VideoMAE (V1 or V2) release checkpoint file into ``model`` (strict), returning the model.

    ``head_map="auto"`` (default): a file whose head has 710 rows (Kinetics-710, e.g.
    VideoMAE V2's distilled ViT-S/B) loaded into a 400-class model gets the 400 rows of
    the Kinetics-400 classes (:func:`sta.models.heads.k710_to_k400_head`), with a
    warning. ``head_map=None``: never; such a file is then a class-count mismatch.
    """
    load_weights(model, path, allow_unsafe=allow_unsafe, head_map=head_map, stacklevel=3)
    return model


def load_weights(model: nn.Module, path: str | os.PathLike, allow_unsafe: bool = False,
                 head_map: str | None = "auto", stacklevel: int = 2) -> str | None:
    """:func:`load_checkpoint`, returning the head mapping applied (``"k710->k400"``) or None."""
    if head_map not in HEAD_MAPS:
        raise InvalidInput(f"head_map must be one of {', '.join(map(repr, HEAD_MAPS))}, got {head_map!r}")
    state = extract_state_dict(read_checkpoint(path, allow_unsafe))
    refuse_unsupported(state)
    applied = None
    if head_map == "auto" and is_k710_head(state) and _num_classes(model) == K400:
        state, applied = k710_to_k400_head(state), K710_TO_K400
        warnings.warn(f"{os.fspath(path)}: the checkpoint's head has {K710} classes (Kinetics-710); using its "
                      f"{K400} Kinetics-400 rows (head_map={K710_TO_K400!r})", stacklevel=stacklevel)
    check_state_dict(model, state)
    model.load_state_dict(state, strict=True)
    return applied


HEAD_MAPS = ("auto", None)


def _num_classes(model: nn.Module) -> int | None:
    head = model.state_dict().get("head.weight")
    return None if head is None else head.shape[0]
