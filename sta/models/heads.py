"""Classifier heads of release checkpoints: Kinetics-710 -> Kinetics-400.

VideoMAE V2 post-pre-trains on Kinetics-710 (the union of Kinetics-400/600/700,
710 classes), and its distilled ViT-S/B checkpoints keep that 710-class head.
Every Kinetics-400 class is one of the 710, so a K400 classifier is the head's
rows for those classes, in K400 order (``sta.labels.k710_to_k400()``, the same
map VideoMAE V2 ships as ``misc/label_710to400.json``). Nothing is retrained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from sta.errors import InvalidInput
from sta.labels import k710_to_k400

K710, K400 = 710, 400
K710_TO_K400 = "k710->k400"  # how descriptions and warnings name the mapping
HEAD_KEYS = ("head.weight", "head.bias")


def head_rows(state: Mapping[str, Tensor]) -> int | None:
    """Classes of the head in ``state`` (rows of ``head.weight``), or None without one."""
    weight = state.get("head.weight")
    return None if weight is None else int(weight.shape[0])


def is_k710_head(state: Mapping[str, Tensor]) -> bool:
    """True when ``state`` has a 710-row head (weight and bias)."""
    return head_rows(state) == K710 and "head.bias" in state and state["head.bias"].shape[0] == K710


def select_head_rows(state: Mapping[str, Tensor], rows: Sequence[int]) -> dict[str, Tensor]:
    """A copy of ``state`` whose ``head.weight`` / ``head.bias`` keep only ``rows``, in that order.

    Pure: ``state`` is not modified; tensors other than the head are shared, not copied.
    """
    missing = [k for k in HEAD_KEYS if k not in state]
    if missing:
        raise InvalidInput(f"state dict has no classifier head ({', '.join(missing)} missing)")
    num = head_rows(state)
    if state["head.bias"].shape[0] != num:
        raise InvalidInput(f"head.weight has {num} rows but head.bias {state['head.bias'].shape[0]}")
    bad = [r for r in rows if not 0 <= r < num]
    if bad:
        raise InvalidInput(f"head rows {bad[:5]} are out of range for a head of {num} classes")
    index = list(rows)
    return {**state, **{k: state[k][index].clone() for k in HEAD_KEYS}}


def k710_to_k400_head(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A copy of ``state`` with its 710-class Kinetics-710 head cut to the 400 Kinetics-400 classes.

    Row ``i`` of the result is K400 class ``i`` (``sta.labels.load("kinetics400")[i]``).
    Raises ``ValueError`` unless the head has 710 rows.
    """
    if head_rows(state) != K710:
        raise InvalidInput(f"expected a {K710}-class (Kinetics-710) head, got {head_rows(state)} classes")
    rows = k710_to_k400()
    assert len(rows) == K400
    return select_head_rows(state, rows)
