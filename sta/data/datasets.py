"""The one table of datasets sta knows: how their videos are sampled at test time, and their classes."""

from __future__ import annotations

from dataclasses import dataclass

from sta.errors import InvalidInput

__all__ = ["DATASETS", "Dataset", "check_label_space", "dataset"]


@dataclass(frozen=True)
class Dataset:
    name: str  # as the release's --data_set spells it
    protocol: str  # test-time sampling (sta.data.sampling.PROTOCOLS): Kinetics strides frames, SSv2 spreads segments
    num_classes: int
    labels: str  # the class-name file that ships in sta/labels (without .txt)
    aliases: tuple[str, ...] = ()  # other spellings users bring from other tools (lower case)


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("Kinetics-400", "kinetics", 400, "kinetics400", aliases=("kinetics-400", "k400", "kinetics400")),
    Dataset("Kinetics-710", "kinetics", 710, "kinetics710", aliases=("kinetics-710", "k710", "kinetics710")),
    Dataset("SSV2", "ssv2", 174, "ssv2", aliases=("ssv2", "something-something-v2", "sthv2")),
)}


def check_label_space(entry: Dataset, num_classes: int) -> None:
    """``InvalidInput`` unless a head of ``num_classes`` outputs scores ``entry``'s labels (one output per class)."""
    if num_classes != entry.num_classes:
        hint = (" (a Kinetics-710 checkpoint loaded with `num_classes` 400 keeps its Kinetics-400 rows)"
                if (num_classes, entry.num_classes) == (710, 400) else "")
        raise InvalidInput(f"the model has {num_classes} classes but {entry.name} has {entry.num_classes}: its labels "
                           f"would be scored against another label space; pick the matching `data_set` or a model "
                           f"with {entry.num_classes} classes{hint}", param="data_set")


def dataset(name: str) -> Dataset:
    """The dataset ``name`` spells (its table name or an alias, any case); ``InvalidInput`` if unknown."""
    key = name.strip().lower()
    for entry in DATASETS.values():
        if key == entry.name.lower() or key in entry.aliases:
            return entry
    raise InvalidInput(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}", param="data_set")
