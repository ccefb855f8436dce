"""Reading the small files users point at (JSON configs, model folders), with one-line errors naming them."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable

from sta.errors import InvalidInput


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (libraries' messages run long), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_json(file: str | os.PathLike):
    """The parsed file, or ``ValueError`` naming it."""
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidInput(f"{os.fspath(file)}: not valid JSON ({err})") from None


def hf_model_type(path: str | os.PathLike, supported: Iterable[str]) -> str:
    """The ``model_type`` of a local Hugging Face model folder's ``config.json`` if ``supported``; else ValueError."""
    path = os.fspath(path)
    config = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        if re.fullmatch(r"[\w.-]+/[\w.-]+", path) and not os.path.exists(path):
            raise InvalidInput(f"{path!r} looks like a Hugging Face hub id: models are loaded from a local directory "
                               f"only (nothing is downloaded). On a machine with access, `huggingface-cli download "
                               f"{path} --local-dir DIR` (or `save_pretrained(DIR)` in Python), then pass DIR",
                               param="hf_model")
        raise InvalidInput(f"{path!r} is not a local Hugging Face model directory (config.json + weights)")
    if not os.path.isfile(config):
        raise InvalidInput(f"{path!r} has no config.json: not a Hugging Face model directory")
    data = read_json(config)
    family = data.get("model_type") if isinstance(data, dict) else None
    supported = list(supported)
    if family not in supported:
        names = ", ".join(repr(name) for name in supported)
        raise InvalidInput(f"{config}: model_type {family!r} is not supported (supported: {names})")
    return family
