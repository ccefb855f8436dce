"""The model contract: what every video classifier in sta-prune honours.

Our :class:`sta.models.vit.VisionTransformer`, the Hugging Face families behind
:class:`sta.adapters.wrapper.HFVideoClassifier`, and the runners of exported
graphs (:mod:`sta.deploy.runners`) all take ``B x 3 x F x H x W`` clips,
normalised with ``cfg.mean`` / ``cfg.std``, and return ``B x num_classes``
logits. What each must offer:

- :class:`ClipConfig` ``cfg``: the clip the model takes and the token grid it works on;
- ``r`` (always a tuple of three ints, one per stage; 0 everywhere = unpruned) and ``method``;
- :class:`ClipClassifier` (live models) adds ``set_pruning``, the ``pruning()``
  context, ``forward(x, return_trace=...)`` with a :class:`TokenTrace`,
  ``patch_embed`` (GradNorm hooks it) and ``meta_copy()`` (FLOPs are counted on it).

Exported graphs fix r and method: their runners expose the same ``cfg`` / ``r``
/ ``method`` read-only and refuse ``set_pruning``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from sta.core.schedule import R, RSpec
from sta.errors import InvalidInput

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


@dataclass
class TokenTrace:
    """What one forward did to the tokens, for visualisation, export and tests.

    ``positions[k]`` is ``B x L_k`` int64: the original positions
    (``tau * S + s``, 0..T*S-1) of the patch tokens alive after pruning stage ``k``
    (k = 0, 1, 2), in sequence order. A stage with r = 0 repeats the previous.
    """

    positions: list[Tensor] = field(default_factory=list)


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
    def forward(self, x: Tensor, return_trace: bool = False) -> Tensor | tuple[Tensor, TokenTrace]:
        """``B x 3 x F x H x W`` clips -> logits ``B x num_classes`` (and a :class:`TokenTrace` on request)."""

    @abstractmethod
    def meta_copy(self) -> ClipClassifier:
        """The same architecture, r and method on the meta device, without copying a weight (FLOPs)."""

    def check_input(self, x: Tensor) -> None:
        """``ValueError`` unless ``x`` is ``B x 3 x F x H x W`` with the model's frames and size."""
        expected = self.cfg.clip_shape
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise InvalidInput(f"expected clips of shape B x {' x '.join(map(str, expected))}, got {tuple(x.shape)}")

    @contextmanager
    def pruning(self, r: RSpec | None = None, method: str | None = None) -> Iterator:
        """Run at another r / method inside the block; the old ones come back after, even on an error."""
        saved = self.r, self.method
        try:
            self.set_pruning(r, method)
            yield self
        finally:
            self.set_pruning(*saved)
