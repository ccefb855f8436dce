"""The reducer interface: what a token-reduction method is given, what it carries, and what it declares.

A method (a :class:`Method` in :data:`sta.core.methods.METHODS`) is called
after the output of every stage block (:mod:`sta.core.schedule`) with a
:class:`StageInputs` and the forward's :class:`ReductionState`, and returns the
reduced ``B x L' x C`` tokens. It declares in :class:`Needs` what the loop must
hand it, so the loop computes only that: the stage block's keys, its input, its
attention probabilities (the only case where a block computes the attention
map: elsewhere fused attention stays), the pixel clips, or per-token scores
given by the caller. The loops of both model families run it through
:class:`sta.core.forward.PruningPass`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from sta.core.schedule import PruneStage
from sta.core.select import gather_tokens


class Needs(enum.Flag):
    """What a method reads besides the stage block's output."""

    NOTHING = 0
    KEYS = enum.auto()  # the stage block's attention keys averaged over heads, B x L x K
    MLP_INPUT = enum.auto()  # the stage block's MLP input (after its attention), B x L x C
    ATTENTION = enum.auto()  # the stage block's attention probabilities (no size bias), B x H x L x M
    CLIPS = enum.auto()  # the pixel clips as the model receives them, B x 3 x F x H x W
    SCORES = enum.auto()  # per-token scores from the caller, B x N (oracle)
    GRID = enum.auto()  # the token layout (slices, tokens per slice, tubelet, patch): ReductionState.grid


@dataclass(frozen=True)
class TokenGrid:
    """The token layout a method may need: ``T`` slices of ``S`` tokens, each ``tubelet x patch x patch`` pixels."""

    num_slices: int
    tokens_per_slice: int
    tubelet_size: int
    patch_size: int

    @property
    def num_tokens(self) -> int:
        return self.num_slices * self.tokens_per_slice


@dataclass(frozen=True)
class StageInputs:
    """What a reducer is handed at one stage: the patch tokens only (prefix tokens such as a CLS never appear)."""

    x: Tensor  # B x L x C: the stage block's output
    stage: PruneStage
    stages: tuple[PruneStage, ...]  # every stage of this forward (a method that cuts once finds its place)
    keys: Tensor | None = None  # B x L x K (Needs.KEYS)
    mlp_input: Tensor | None = None  # B x L x C (Needs.MLP_INPUT): the block's residual stream before its MLP
    attention: Tensor | None = None  # B x H x L x M, rows = the live patch tokens, M >= L keys (Needs.ATTENTION)


@dataclass
class ReductionState:
    """What one forward carries from stage to stage (fresh for every forward).

    ``positions`` is always carried: the trace reports it, V-JEPA 2's rotary
    embedding reads it, and every selection breaks exact ties by it.
    """

    positions: Tensor  # B x L int64: original positions (slice * S + spatial) of the live tokens
    grid: TokenGrid | None = None
    sizes: Tensor | None = None  # B x L x 1 float32: tokens merged into each live token (ToMe, vid-TLDR), else None
    clips: Tensor | None = None  # B x 3 x F x H x W (Needs.CLIPS)
    scores: Tensor | None = None  # B x N per original position: given (oracle) or computed once (rlt)

    def keep(self, idx: Tensor) -> None:
        """Follow a selection ``idx`` (``B x L'``) of the live tokens."""
        self.positions = self.positions.gather(1, idx)
        if self.sizes is not None:
            self.sizes = gather_tokens(self.sizes, idx)

    def live_scores(self) -> Tensor:
        """``B x L``: the per-position scores of the live tokens."""
        return self.scores.gather(1, self.positions)


# A reducer: (what the stage hands over, the forward's state) -> the reduced B x L' x C tokens.
Reducer = Callable[[StageInputs, ReductionState], Tensor]
# Before block 0 (RLT): (embedded patch tokens B x N x C, state, stages) -> B x L' x C.
EntryReducer = Callable[[Tensor, ReductionState, tuple[PruneStage, ...]], Tensor]


@dataclass(frozen=True)
class Method:
    """A token-reduction method: its reducer, what it needs, where it acts and what it allows.

    ``equal_budget``: keeps exactly STA's token count after every stage (so at one r it
    costs what STA costs, up to its own scoring). ``variable_count``: the count depends
    on the clip, so a batch runs clip by clip and no static graph exists.
    ``inference``: usable to classify new clips (False: needs the unpruned model's
    gradients, an analysis upper bound). ``check``: raises ``ValueError`` for stages it
    cannot run.
    """

    reduce: Reducer
    summary: str
    needs: Needs = Needs.NOTHING
    entry: EntryReducer | None = None  # acts before block 0 (on the embeddings) when set
    equal_budget: bool = True
    variable_count: bool = False
    inference: bool = True
    check: Callable[[tuple[PruneStage, ...]], None] | None = None

    @property
    def exportable(self) -> bool:
        """A static graph can hold it: a fixed token count and nothing beyond the clips as input."""
        return self.inference and not self.variable_count
