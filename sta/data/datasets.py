"""The one table of datasets sta knows: how their videos are sampled at test time, and their classes."""

from __future__ import annotations

from dataclasses import dataclass

from sta.errors import InvalidInput

__all__ = ["CUSTOM", "DATASETS", "PROTOCOLS", "Dataset", "check_label_space", "dataset", "with_protocol"]

CUSTOM = "custom"  # a dataset of one's own classes: the model's class count, names from a file
PROTOCOLS = ("kinetics", "ssv2")  # test-time frame sampling (sta.data.sampling): a stride, or segments


@dataclass(frozen=True)
class Dataset:
    name: str  # as the release's --data_set spells it
    protocol: str  # test-time sampling (sta.data.sampling.PROTOCOLS): Kinetics strides frames, SSv2 spreads segments
    num_classes: int  # 0 for `custom`: the model's own count
    labels: str  # the class-name file that ships in sta/labels (without .txt); "" for `custom`
    aliases: tuple[str, ...] = ()  # other spellings users bring from other tools (lower case)

    @property
    def custom(self) -> bool:
        return self.name == CUSTOM


DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("Kinetics-400", "kinetics", 400, "kinetics400", aliases=("kinetics-400", "k400", "kinetics400")),
    Dataset("Kinetics-710", "kinetics", 710, "kinetics710", aliases=("kinetics-710", "k710", "kinetics710")),
    Dataset("SSV2", "ssv2", 174, "ssv2", aliases=("ssv2", "something-something-v2", "sthv2")),
    # The release samples UCF101 and HMDB51 exactly as Kinetics (its datasets.py shares the Kinetics loader).
    Dataset("UCF101", "kinetics", 101, "ucf101", aliases=("ucf101", "ucf-101", "ucf")),
    Dataset("HMDB51", "kinetics", 51, "hmdb51", aliases=("hmdb51", "hmdb-51", "hmdb")),
    Dataset(CUSTOM, "kinetics", 0, "", aliases=("own",)),  # Kinetics-style sampling unless `protocol` says ssv2
)}


def check_label_space(entry: Dataset, num_classes: int) -> None:
    """``InvalidInput`` unless a head of ``num_classes`` outputs scores ``entry``'s labels (one output per class);
    a ``custom`` dataset takes any head (its list file's labels are checked against the count when it is read)."""
    if not entry.custom and num_classes != entry.num_classes:
        hint = (" (a Kinetics-710 checkpoint loaded with `num_classes` 400 keeps its Kinetics-400 rows)"
                if (num_classes, entry.num_classes) == (710, 400) else "")
        raise InvalidInput(f"the model has {num_classes} classes but {entry.name} has {entry.num_classes}: its labels "
                           f"would be scored against another label space; pick the matching `data_set` or a model "
                           f"with {entry.num_classes} classes{hint}; for a model fine-tuned on classes of your own, "
                           f"`data_set` {CUSTOM}", param="data_set")


def with_protocol(entry: Dataset, protocol: str | None) -> Dataset:
    """``entry`` sampled with ``protocol`` (``kinetics`` / ``ssv2``): only a ``custom`` dataset chooses; a named one
    keeps the release's (``InvalidInput`` if another is asked for)."""
    if protocol is None or protocol == entry.protocol:
        return entry
    if not entry.custom:
        raise InvalidInput(f"{entry.name} is sampled as the release does ({entry.protocol}); `protocol` chooses the "
                           f"sampling of `data_set` {CUSTOM} only", param="protocol")
    if protocol not in PROTOCOLS:
        raise InvalidInput(f"unknown `protocol` {protocol!r}: kinetics or ssv2", param="protocol")
    return Dataset(entry.name, protocol, entry.num_classes, entry.labels, entry.aliases)


def dataset(name: str) -> Dataset:
    """The dataset ``name`` spells (its table name or an alias, any case); ``InvalidInput`` if unknown."""
    key = name.strip().lower()
    for entry in DATASETS.values():
        if key == entry.name.lower() or key in entry.aliases:
            return entry
    raise InvalidInput(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}", param="data_set")
