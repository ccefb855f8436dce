"""Reading VideoMAE release checkpoints safely and loading them with clear errors."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

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

WRAPPER_KEYS = ("model", "module", "state_dict", "model_state")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def read_checkpoint(path: str | os.PathLike, allow_unsafe: bool = False) -> dict:
    """Unpickle a checkpoint file with ``weights_only=True`` (plus the allow-list above).

    A file that needs arbitrary code is refused unless ``allow_unsafe=True``
    (CLI: ``--allow-unsafe-checkpoint``), which only makes sense for files you trust.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if allow_unsafe:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        text = str(err)
        if "Unsupported global" in text:
            culprit = re.search(r"Unsupported global: GLOBAL (\S+)", text)
            raise CheckpointError(
                f"checkpoint {path!r} holds an object that needs arbitrary code to unpickle"
                f"{f' ({culprit.group(1)})' if culprit else ''}. If you trust the file, pass "
                "--allow-unsafe-checkpoint (Python: allow_unsafe=True)."
            ) from err
        detail = re.search(r"WeightsUnpickler error: \s*(.+)", text)
        first_line = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        reason = detail.group(1).strip() if detail else first_line
        raise CheckpointError(f"checkpoint {path!r} is not a readable PyTorch file: {reason}") from err


def extract_state_dict(obj: Mapping) -> dict[str, Tensor]:
    """The model weights inside a release checkpoint, whichever wrapper it uses.

    Accepts ``{"model": sd}``, ``{"module": sd}``, a bare state dict, and strips
    a ``module.`` prefix left by DistributedDataParallel.
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
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Raise ``CheckpointError`` listing missing, unexpected and mis-shaped keys, if any."""
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
        hint = ""
        if any(k.startswith("head.") for k in misshaped):
            hint = " (head shape differs: check --nb_classes / num_classes)"
        raise CheckpointError("checkpoint does not fit the model" + hint + ":\n  " + "\n  ".join(parts))


def load_checkpoint(model: nn.Module, path: str | os.PathLike, allow_unsafe: bool = False) -> nn.Module:
    """Load a VideoMAE release checkpoint file into ``model`` (strict), returning the model."""
    state = extract_state_dict(read_checkpoint(path, allow_unsafe))
    check_state_dict(model, state)
    model.load_state_dict(state, strict=True)
    return model
