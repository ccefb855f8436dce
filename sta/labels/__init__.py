"""Class names of the datasets VideoMAE models are fine-tuned on, and the Kinetics-710 -> 400 head map.

One name per line of each ``.txt`` file, line ``i`` = class index ``i``, in
the order the release list files and checkpoints use (sources in
``sta/labels/README.md``)::

    sta.labels.load("kinetics400")[0]       # 'abseiling'
    sta.labels.for_num_classes(174)         # SSv2's names
    sta.labels.k710_to_k400()[i]            # row of a 710-class head that is K400 class i
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from sta.data.datasets import DATASETS as _DATASETS
from sta.data.datasets import dataset
from sta.errors import InvalidInput

HERE = Path(__file__).resolve().parent
DATASETS = tuple(entry.labels for entry in _DATASETS.values() if entry.labels)  # the class-name files that ship here


def canonical_name(name: str) -> str:
    """``"Kinetics-400"`` / ``"k400"`` / ``"kinetics400"`` -> ``"kinetics400"``; ``ValueError`` if unknown."""
    try:
        names = dataset(name).labels
    except InvalidInput:
        names = ""
    if not names:  # unknown, or `custom`: its names are the user's
        raise InvalidInput(f"no class names ship for {name!r}; known: {', '.join(DATASETS)}")
    return names


@cache
def _read(name: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in (HERE / f"{name}.txt").read_text(encoding="utf-8").splitlines()
                 if line.strip())


def load(name: str) -> list[str]:
    """Class names of ``name`` (``kinetics400``, ``kinetics710``, ``ssv2``, ``ucf101``, ``hmdb51`` or an alias),
    index = class id."""
    return list(_read(canonical_name(name)))


def for_num_classes(num_classes: int) -> list[str] | None:
    """The shipped names whose class count is ``num_classes`` (400, 710, 174, 101, 51), else None."""
    for name in DATASETS:
        if len(_read(name)) == num_classes:
            return list(_read(name))
    return None


def read_label_file(path: str | Path) -> list[str]:
    """A user's own class names: one per line (blank lines skipped), line order = class index."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InvalidInput(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InvalidInput(f"{path}: no class names (empty file)")
    return names


@cache
def k710_to_k400() -> tuple[int, ...]:
    """400 row indices into a Kinetics-710 head: ``head.weight[k710_to_k400()]`` is a Kinetics-400 head."""
    return tuple(json.loads((HERE / "k710_to_k400.json").read_text()))
