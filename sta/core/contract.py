"""The model contract: what every video classifier in sta-prune honours.

Our :class:`sta.models.vit.VisionTransformer`, the Hugging Face families behind
:class:`sta.adapters.wrapper.HFVideoClassifier`, and the runners of exported
graphs (:mod:`sta.deploy.runners`) all take ``B x 3 x F x H x W`` clips,
normalised with ``cfg.mean`` / ``cfg.std``, and return ``B x num_classes``
logits. What each must offer:

- :class:`ClipConfig` ``cfg``: the clip the model takes and the token grid it works on;
- ``r`` (always a tuple of three ints, one per stage; 0 everywhere = unpruned) and ``method``;
- :class:`ClipClassifier` (live models) adds ``set_pruning``, the ``pruning()``
  context, ``forward(x, return_trace=..., token_scores=...)`` with a :class:`TokenTrace`,
  ``patch_embed`` (GradNorm hooks it), ``meta_copy()`` (FLOPs are counted on it) and
  ``scored_by()`` (where a method given per-token scores, ``oracle``, gets them from).

Exported graphs fix r and method: their runners expose the same ``cfg`` / ``r``
/ ``method`` read-only and refuse ``set_pruning``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sta.core.methods import METHODS, Needs
from sta.core.reduction import TokenGrid
from sta.core.schedule import R, RSpec
from sta.errors import InvalidInput

# A source of per-token scores for a method that is given them (oracle): B x 3 x F x H x W clips -> B x N.
TokenScorer = Callable[[Tensor], Tensor]

# ImageNet statistics: the normalisation VideoMAE's releases were trained with (clips in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClipConfig:
    """The clip a classifier takes and the token grid it prunes: the fields every family fills."""

    num_frames: int = 16  # F: frames per clip
    img_size: int = 224  # H = W of every frame
    in_chans: int = 3
    patch_size: int = 16  # tokens are tubelet_size x patch_size x patch_size pixels
    tubelet_size: int = 2  # frames per token
    num_classes: int = 400  # Kinetics-400; 174 for Something-Something V2
    depth: int = 12  # transformer blocks: pruning sits after blocks 0, depth // 3, 2 * depth // 3
    embed_dim: int = 768
    num_heads: int = 12
    mean: tuple[float, float, float] = IMAGENET_MEAN  # input normalisation the weights expect
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def num_slices(self) -> int:
        """T: temporal slices (8 for 16 frames, tubelet 2)."""
        return self.num_frames // self.tubelet_size

    @property
    def tokens_per_slice(self) -> int:
        """S: spatial tokens per slice (196 for 224 / 16)."""
        return (self.img_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """T * S: patch tokens entering the first block."""
        return self.num_slices * self.tokens_per_slice

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """One clip without the batch: ``3 x F x H x W``."""
        return (self.in_chans, self.num_frames, self.img_size, self.img_size)

    @property
    def token_grid(self) -> TokenGrid:
        """The token layout the reduction methods see."""
        return TokenGrid(self.num_slices, self.tokens_per_slice, self.tubelet_size, self.patch_size)


@dataclass
class TokenTrace:
    """What one forward did to the tokens, for visualisation, export and tests.

    ``positions[k]`` is ``B x L_k`` int64: the original positions
    (``tau * S + s``, 0..T*S-1) of the patch tokens alive after pruning stage ``k``
    (k = 0, 1, 2), in sequence order. A stage with r = 0 repeats the previous.
    A merged token is listed at its destination's position. A method whose count
    varies per clip (``rlt-threshold``) pads each row at its end with ``-1`` up to the
    longest row of the batch (:meth:`stack`).
    """

    positions: list[Tensor] = field(default_factory=list)

    @classmethod
    def stack(cls, traces: list[TokenTrace]) -> TokenTrace:
        """One trace from clip-by-clip traces (batch 1 each): stage by stage, rows padded with ``-1`` at the end."""
        stacked = []
        for k in range(len(traces[0].positions)):
            rows = [trace.positions[k][0] for trace in traces]
            width = max(len(row) for row in rows)
            stacked.append(torch.stack([F.pad(row, (0, width - len(row)), value=-1) for row in rows]))
        return cls(stacked)


@runtime_checkable
class VideoClassifier(Protocol):
    """Anything that turns clips into logits with a known configuration: live models and exported graphs."""

    cfg: ClipConfig

    @property
    def r(self) -> R: ...

    @property
    def method(self) -> str: ...

    def __call__(self, clips: Tensor) -> Tensor: ...


class ClipClassifier(ABC):
    """Base of every live model (mixed in before ``nn.Module``): r and method can change, tokens can be traced."""

    cfg: ClipConfig
    patch_embed: nn.Module  # its output is the B x T*S x C patch embeddings (GradNorm hooks it)
    _token_scorer: TokenScorer | None = None  # set inside scored_by()

    @property
    @abstractmethod
    def r(self) -> R:
        """Tokens dropped (or merged) per group at each of the three stages."""

    @property
    @abstractmethod
    def method(self) -> str:
        """Token-reduction method (a key of ``sta.core.methods.METHODS``); ``"sta"`` is the paper's."""

    @abstractmethod
    def set_pruning(self, r: RSpec | None = None, method: str | None = None) -> None:
        """Set r and/or the method together (checked together; unchanged on ``ValueError``)."""

    @abstractmethod
    def forward(self, x: Tensor, return_trace: bool = False, token_scores: Tensor | None = None
                ) -> Tensor | tuple[Tensor, TokenTrace]:
        """``B x 3 x F x H x W`` clips -> logits ``B x num_classes`` (and a :class:`TokenTrace` on request).

        ``token_scores``: ``B x N`` per-position scores for a method that is given them
        (``oracle``: the unpruned model's GradNorm); ignored by every other method.
        """

    @abstractmethod
    def meta_copy(self) -> ClipClassifier:
        """The same architecture, r and method on the meta device, without copying a weight (FLOPs)."""

    def check_input(self, x: Tensor) -> None:
        """``ValueError`` unless ``x`` is ``B x 3 x F x H x W`` with the model's frames and size."""
        expected = self.cfg.clip_shape
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise InvalidInput(f"expected clips of shape B x {' x '.join(map(str, expected))}, got {tuple(x.shape)}")

    def use_scorer(self, scorer: TokenScorer | None) -> None:
        """From now on, a forward of a method given per-token scores (``oracle``) and no ``token_scores`` takes
        ``scorer(clips)``; None: no scorer (such a forward then refuses). :meth:`scored_by` does it for a block."""
        self._token_scorer = scorer

    @contextmanager
    def scored_by(self, scorer: TokenScorer) -> Iterator:
        """Inside the block, every forward of a method that is given per-token scores (``oracle``) and gets no
        ``token_scores`` takes ``scorer(clips)`` (``B x N``), e.g. ``sta.measure.gradnorm.oracle_scorer(model)``."""
        saved = self._token_scorer
        self._token_scorer = scorer
        try:
            yield self
        finally:
            self._token_scorer = saved

    def scores_for(self, x: Tensor, token_scores: Tensor | None) -> Tensor | None:
        """The scores this forward's method is given: ``token_scores``, else the scorer's, else None.

        Called before anything else in a forward: a scorer may run this model (at r = 0) itself.
        """
        if token_scores is not None or not any(self.r) or Needs.SCORES not in METHODS[self.method].needs:
            return token_scores
        return self._token_scorer(x) if self._token_scorer is not None else None

    @contextmanager
    def pruning(self, r: RSpec | None = None, method: str | None = None) -> Iterator:
        """Run at another r / method inside the block; the old ones come back after, even on an error."""
        saved = self.r, self.method
        try:
            self.set_pruning(r, method)
            yield self
        finally:
            self.set_pruning(*saved)
