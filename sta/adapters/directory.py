"""A local Hugging Face model directory (``hf_model``) as a :class:`sta.core.contract.ClipClassifier`.

The family comes from ``config.json``'s ``model_type``:

- ``videomae``: our own :class:`sta.models.vit.VisionTransformer` with the
  directory's weights (:func:`sta.models.convert.load_hf_as_backbone`);
- ``vivit``, ``vjepa2``: the transformers video classifier, patched in place and
  wrapped in :class:`sta.adapters.wrapper.HFVideoClassifier`.

Anything else is refused by name. Frames, crop size and classes come from
``config.json``; the input normalisation from the directory's
``video_preprocessor_config.json`` or ``preprocessor_config.json`` when present,
else from the family's processor defaults. A processor's ``rescale_factor`` /
``offset`` / ``image_mean`` / ``image_std`` are folded into one mean and std for
clips in [0, 1], which is what our data pipeline feeds: e.g. ViViT's
``x * (1 / 127.5) - 1`` followed by ``(x - 0.5) / 0.5`` is mean 0.75, std 0.25.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import torch
from torch import nn

from sta.adapters.family import Family, normalization
from sta.adapters.hf import FAMILIES
from sta.adapters.wrapper import HFVideoClassifier, hf_model_config
from sta.core.schedule import RSpec
from sta.errors import InvalidInput
from sta.models.convert import load_hf_as_backbone, load_hf_classifier, read_hf_config
from sta.models.vit import VisionTransformer
from sta.utils.files import first_line, hf_model_type, read_json
from sta.utils.optional import require_transformers

__all__ = ["load_hf_directory", "hf_architecture", "read_class_names", "read_model_type",
           "read_normalization"]

PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")


def read_model_type(path: str | os.PathLike) -> str:
    """``config.json``'s ``model_type`` if it is a supported family; else a one-line ``ValueError``."""
    return hf_model_type(path, FAMILIES)


def read_class_names(path: str | os.PathLike) -> list[str] | None:
    """``config.json``'s ``id2label`` as a list (index = class), or None when it holds only placeholders."""
    config = read_json(os.path.join(os.fspath(path), "config.json"))
    labels = config.get("id2label") if isinstance(config, dict) else None
    if not isinstance(labels, dict) or not labels:
        return None
    try:
        names = [str(labels[key]) for key in sorted(labels, key=int)]
    except (TypeError, ValueError):
        return None
    if len(names) != len(set(map(int, labels))) or all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        return None  # transformers' defaults, not names
    return names


def read_normalization(path: str | os.PathLike, family: str | Family) -> tuple[tuple, tuple]:
    """(mean, std) for clips in [0, 1] that reproduce the directory's processor (or the family's defaults)."""
    family = FAMILIES[family] if isinstance(family, str) else family
    settings: dict[str, Any] = {}
    for name in PROCESSOR_FILES:
        file = os.path.join(os.fspath(path), name)
        if os.path.isfile(file):
            data = read_json(file)
            if not isinstance(data, dict):
                raise InvalidInput(f"{file}: expected a JSON object")
            settings = data
            break
    return normalization(settings, family)


def load_hf_directory(path: str | os.PathLike, r: RSpec = 0, method: str = "sta") -> nn.Module:
    """The model a local HF directory holds, with its weights, in eval mode, pruning at ``r`` with ``method``.

    VideoMAE: our :class:`~sta.models.vit.VisionTransformer` (float32); ViViT / V-JEPA 2:
    an :class:`~sta.adapters.wrapper.HFVideoClassifier` (float32). ``cfg.mean`` / ``cfg.std``
    follow the directory's processor config. ``ValueError`` (one line) for an unsupported family,
    a directory that does not load, or one without classifier weights (e.g. a pre-training
    checkpoint, which ``from_pretrained`` would fill with random values).
    """
    path, model_type, mean, std = _describe(path)
    if FAMILIES[model_type].as_backbone:
        model = load_hf_as_backbone(path)
        model.cfg = dataclasses.replace(model.cfg, mean=mean, std=std)
        model.set_pruning(r, method)
        return model.eval()
    _, classifier_cls = FAMILIES[model_type].classes()
    hf = load_hf_classifier(path, classifier_cls).float()
    return HFVideoClassifier(hf, hf_model_config(hf.config, mean, std), r=r, method=method).eval()


def hf_architecture(path: str | os.PathLike, r: RSpec = 0, method: str = "sta", device: str | torch.device = "meta"
                    ) -> nn.Module:
    """The architecture a local HF directory describes, from ``config.json`` only, without its weights.

    On the meta device by default (``sta flops``: shapes only, nothing allocated); another
    device gives randomly initialised weights (``sta bench``). Same types as :func:`load_hf_directory`.
    """
    path, model_type, mean, std = _describe(path)
    if FAMILIES[model_type].as_backbone:
        cfg = dataclasses.replace(read_hf_config(path), mean=mean, std=std)
        with torch.device(device):
            return VisionTransformer(cfg, r=r, method=method).eval()
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as err:
        raise InvalidInput(f"{os.path.join(path, 'config.json')}: not a usable config ({first_line(err)})") from err
    _, classifier_cls = FAMILIES[model_type].classes()
    with torch.device(device):
        hf = classifier_cls(config).eval()
    return HFVideoClassifier(hf, hf_model_config(config, mean, std), r=r, method=method).eval()


def _describe(path: str | os.PathLike) -> tuple[str, str, tuple, tuple]:
    """(path, family, mean, std) of a local HF directory, checked."""
    require_transformers()
    path = os.fspath(path)
    model_type = read_model_type(path)
    return (path, model_type, *read_normalization(path, model_type))
