"""The one table of datasets sta knows: how their videos are sampled at test time, and their classes."""

from __future__ import annotations

from dataclasses import dataclass

from sta.errors import InvalidInput

__all__ = ["DATASETS", "Dataset", "dataset"]


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


def dataset(name: str) -> Dataset:
    """The dataset ``name`` spells (its table name or an alias, any case); ``InvalidInput`` if unknown."""
    key = name.strip().lower()
    for entry in DATASETS.values():
        if key == entry.name.lower() or key in entry.aliases:
            return entry
    raise InvalidInput(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}", param="data_set")
