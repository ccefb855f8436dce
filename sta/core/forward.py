"""One pruned forward's bookkeeping, shared by our ViT (:mod:`sta.models.vit`) and the HF loop.

The HF loop is :func:`sta.adapters.loop.run_layers`.

A model's layer loop does, with a :class:`PruningPass` ``p``::

    x = p.start(embedded_patch_tokens)           # a method that acts before block 0 (RLT) does so here
    for i, block in enumerate(blocks):
        need = p.needs_at(i)                     # Needs.KEYS / MLP_INPUT / ATTENTION at a stage block, else nothing
        out, keys, probs, mid = block(x, ..., sizes=p.state.sizes)  # keys / probabilities only when asked
        x = p.after(i, out, keys=keys, attention=probs, mlp_input=mid)

and reads ``p.state.positions`` (original positions of the live tokens) for its
trace and ``p.state.sizes`` for size-proportional attention. Prefix tokens
(ViViT's CLS) never enter: the loop hands over the patch tokens only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sta.core.methods import METHODS
from sta.core.reduction import Needs, ReductionState, StageInputs, TokenGrid
from sta.core.schedule import PruneStage
from sta.errors import InvalidInput

BLOCK_NEEDS = Needs.KEYS | Needs.MLP_INPUT | Needs.ATTENTION  # what a block must hand over (the rest is per forward)


class PruningPass:
    """The method, stages and :class:`ReductionState` of one forward on ``batch`` clips.

    ``num_tokens``: patch tokens entering block 0 (``N = T * S``); ``grid``: their layout,
    ``clips``: the pixel clips (``B x 3 x F x H x W``, as the model received them) and
    ``scores``: ``B x N`` per-position scores (``oracle``), each needed only by the
    methods that declare it (:class:`~sta.core.reduction.Needs`).
    """

    def __init__(self, method: str, stages: tuple[PruneStage, ...], batch: int, num_tokens: int,
                 device: torch.device, grid: TokenGrid | None = None, clips: Tensor | None = None,
                 scores: Tensor | None = None):
        self.method = METHODS[method]
        self.name = method
        self.stages = stages
        self._at = {stage.block: stage for stage in stages}
        needs = self.method.needs if stages else Needs.NOTHING
        if Needs.SCORES in needs:
            if scores is None:
                raise InvalidInput(f"method {method!r} keeps the tokens with the highest given scores: pass "
                                   "token_scores (B x N, e.g. sta.measure.gradnorm.oracle_scores) or run inside "
                                   "model.scored_by(sta.measure.gradnorm.oracle_scorer(model))")
            if tuple(scores.shape) != (batch, num_tokens):
                raise InvalidInput(f"token_scores must be B x N = {batch} x {num_tokens}, got {tuple(scores.shape)}")
            scores = scores.to(device=device, dtype=torch.float32)
        for need, given in ((Needs.CLIPS, clips), (Needs.GRID, grid)):
            if need in needs and given is None:
                raise InvalidInput(f"method {method!r} needs the {need.name.lower()}, and none was handed over")
        positions = torch.arange(num_tokens, device=device).expand(batch, -1)
        self.state = ReductionState(positions, grid, clips=clips if Needs.CLIPS in needs else None,
                                    scores=scores if Needs.SCORES in needs else None)

    def start(self, x: Tensor) -> Tensor:
        """The embedded patch tokens (``B x N x C``) before block 0, reduced there by a method that acts first."""
        if self.stages and self.method.entry is not None:
            x = self.method.entry(x, self.state, self.stages)
        return x

    def needs_at(self, block: int) -> Needs:
        """What the loop must hand over after ``block``: nothing unless it is a stage block."""
        return self.method.needs & BLOCK_NEEDS if block in self._at else Needs.NOTHING

    def after(self, block: int, x: Tensor, keys: Tensor | None = None, attention: Tensor | None = None,
              mlp_input: Tensor | None = None) -> Tensor:
        """``block``'s output (patch tokens, ``B x L x C``), reduced when it is a stage block."""
        stage = self._at.get(block)
        if stage is None:
            return x
        inp = StageInputs(x, stage, self.stages, keys=keys, mlp_input=mlp_input, attention=attention)
        return self.method.reduce(inp, self.state)
