"""Where STA prunes and how many tokens survive: pure arithmetic on shapes.

STA prunes after three blocks, ``0``, ``depth // 3`` and ``2 * depth // 3``.
Stage ``k`` cuts the current sequence into ``T / 2**k`` contiguous groups
(``T`` = temporal slices) and drops ``r_k`` tokens from each group, so every
token count is known from the configuration alone (static shapes).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from sta.errors import InvalidInput

NUM_STAGES = 3

RSpec = Union[int, Sequence[int]]  # noqa: UP007 (what a user may pass: one int for every stage, or one per stage)
R = tuple[int, int, int]  # r inside the code: tokens dropped per group at each stage (normalize_r makes it)
UNPRUNED: R = (0, 0, 0)  # the baseline: the model without pruning (whatever its method)


@dataclass(frozen=True)
class PruneStage:
    """One pruning stage: after ``block`` drop ``r`` tokens from each of ``num_groups`` groups."""

    block: int  # 0-based index of the block whose output is pruned
    num_groups: int  # contiguous groups the sequence is cut into (T, T/2, T/4)
    r: int  # tokens dropped per group
    reverse: bool  # visit groups from last to first (stage 1 in the release)
    tokens_in: int  # sequence length entering the stage
    tokens_out: int  # sequence length leaving it: num_groups * (tokens_in / num_groups - r)


def normalize_r(r: RSpec) -> R:
    """One int for every stage (the release's ``--r``) or one per stage -> a tuple of 3 ints."""
    values = (r,) * NUM_STAGES if _is_int(r) else tuple(r) if isinstance(r, (tuple, list)) else ()
    if len(values) != NUM_STAGES or not all(_is_int(v) for v in values):
        raise InvalidInput(f"r must be an int or {NUM_STAGES} ints (one per stage), got {r!r}")
    values = tuple(int(v) for v in values)
    if any(v < 0 for v in values):
        raise InvalidInput(f"r must be >= 0, got {r!r}")
    return values


def _is_int(value) -> bool:
    """A Python, numpy or single-element torch integer (an r read from an array); never a bool or a float."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def parse_r(text: str) -> int | tuple[int, ...]:
    """r as people write it: ``"64"`` -> 64 (every stage), ``"64,32,16"`` -> one value per stage (``format_r``'s
    inverse). ``ValueError`` for anything else; the count of values is checked where r is used."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InvalidInput(f"r must be an int or comma-separated ints, got {text!r}", param="r") from None
    if any(v < 0 for v in values):
        raise InvalidInput(f"r must be 0 or more, got {text!r}", param="r")
    return values[0] if len(values) == 1 else values


def format_r(r: RSpec) -> str:
    """``64`` or ``(64, 64, 64)`` -> "64", ``(64, 32, 16)`` -> "64,32,16" (the CLI's spelling)."""
    if isinstance(r, (tuple, list)):
        return str(r[0]) if len(set(r)) == 1 else ",".join(map(str, r))
    return str(r)


def stage_blocks(depth: int) -> tuple[int, ...]:
    """Blocks whose outputs are pruned: 0, depth//3, 2*depth//3 (0, 4, 8 for ViT-B)."""
    return tuple(k * depth // NUM_STAGES for k in range(NUM_STAGES))


def _check_grouping(num_slices: int) -> None:
    """STA groups T, T/2 and T/4 slices: ``InvalidInput`` unless ``num_slices`` is a positive multiple of 4."""
    if num_slices < 4 or num_slices % 4:
        raise InvalidInput(
            f"STA needs num_frames / tubelet_size divisible by 4 (groups of T, T/2, T/4 slices); got T={num_slices}"
        )


def build_stages(depth: int, num_slices: int, tokens_per_slice: int, r: RSpec) -> tuple[PruneStage, ...]:
    """The pruning stages of a ``depth``-block ViT on ``num_slices x tokens_per_slice`` tokens.

    Stages with ``r_k == 0`` are left out (they would keep every token).
    Raises ``ValueError`` when the layout cannot hold STA: fewer than 4
    slices or a count not divisible by 4, stage blocks that coincide, or an r
    that would leave a group with fewer than one token.
    """
    rs = normalize_r(r)
    if not any(rs):
        return ()  # plain VideoMAE: any layout works
    _check_grouping(num_slices)
    blocks = stage_blocks(depth)
    if len(set(blocks)) < NUM_STAGES:
        raise InvalidInput(f"STA needs depth >= {NUM_STAGES} so its three stage blocks differ; got depth={depth}")
    stages = []
    tokens_in = (num_slices * tokens_per_slice,) + tokens_after_stages(num_slices, tokens_per_slice, rs)
    for k, (block, r_k) in enumerate(zip(blocks, rs)):
        groups = num_slices // 2**k
        n = tokens_in[k] // groups
        if n - r_k < 1:
            raise InvalidInput(
                f"r={r_k} at stage {k} (after block {block}) leaves groups of {n} tokens with {n - r_k}; "
                f"r must be below {n} there (r given: {r!r})"
            )
        if r_k:
            stages.append(PruneStage(block, groups, r_k, reverse=k == 1, tokens_in=tokens_in[k],
                                     tokens_out=tokens_in[k + 1]))
    return tuple(stages)


def tokens_after_stages(num_slices: int, tokens_per_slice: int, r: RSpec) -> tuple[int, ...]:
    """Tokens alive after each of the three stages (r = 64, T = 8, S = 196: 1056, 800, 672).

    With r = 0 every layout keeps all its tokens (a model of 2 slices runs unpruned); a layout STA cannot group
    (fewer than 4 slices, or a count not divisible by 4) at r > 0 is an ``InvalidInput``, as in :func:`build_stages`.
    """
    rs = normalize_r(r)
    tokens = num_slices * tokens_per_slice
    if not any(rs):
        return (tokens,) * NUM_STAGES
    _check_grouping(num_slices)
    counts = []
    for k, r_k in enumerate(rs):
        groups = num_slices // 2**k
        tokens = groups * (tokens // groups - r_k)
        counts.append(tokens)
    return tuple(counts)
