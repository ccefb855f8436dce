"""A patched Hugging Face video classifier as a :class:`sta.core.contract.ClipClassifier`, like our own ViT.

Everything that runs a model (the commands, :mod:`sta.measure`, :mod:`sta.deploy`)
uses only that contract: ``cfg`` (clip shape, classes, normalisation, token
grid), ``r`` / ``method`` / ``set_pruning`` / ``pruning()``, ``check_input``,
``forward(x, return_trace=False)`` on ``B x 3 x F x H x W`` clips, ``meta_copy``
(FLOPs) and ``patch_embed`` (the GradNorm maps of ``sta vis``).
:class:`HFVideoClassifier` gives a ViViT, V-JEPA 2 (or VideoMAE) classifier from
transformers exactly that; pruning itself is :func:`sta.patch_hf`'s.

.. code-block:: python

    from sta.adapters.directory import load_hf_directory
    model = load_hf_directory("path/to/vivit-b-16x2-kinetics400", r=16)
    logits, trace = model(clips, return_trace=True)   # clips: B x 3 x 32 x 224 x 224, normalised by model.cfg
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sta.adapters.family import normalization
from sta.adapters.hf import FAMILIES, family_for, patch_hf
from sta.adapters.loop import pruning_inputs
from sta.core.contract import ClipClassifier, ClipConfig, TokenTrace
from sta.core.methods import METHODS
from sta.core.schedule import PruneStage, R, RSpec

__all__ = ["HFModelConfig", "HFVideoClassifier", "hf_model_config"]


@dataclass(frozen=True)
class HFModelConfig(ClipConfig):
    """A Hugging Face classifier's clip and token grid (:class:`~sta.core.contract.ClipConfig`), plus its family.

    ``mean`` / ``std`` are for clips in [0, 1], what the processor amounts to.
    """

    family: str = "videomae"  # config.json model_type: "vivit", "vjepa2", "videomae"


def hf_model_config(hf_config, mean=None, std=None) -> HFModelConfig:
    """The :class:`HFModelConfig` of a transformers config; mean / std default to the family's processor's."""
    family = FAMILIES[hf_config.model_type]
    default_mean, default_std = normalization({}, family)
    return HFModelConfig(family=family.model_type, **family.clip_fields(hf_config),
                         mean=tuple(mean) if mean is not None else default_mean,
                         std=tuple(std) if std is not None else default_std)


class HFVideoClassifier(ClipClassifier, nn.Module):
    """A transformers video classifier, patched with :func:`sta.patch_hf`, used like our VisionTransformer.

    ``model``: a ``VivitForVideoClassification``, ``VJEPA2ForVideoClassification`` or
    ``VideoMAEForVideoClassification`` (patched here, in place). ``cfg`` defaults to
    :func:`hf_model_config` of its config (processor-default normalisation).
    """

    def __init__(self, model: nn.Module, cfg: HFModelConfig | None = None, r: RSpec = 0, method: str = "sta"):
        super().__init__()
        family, classifier = family_for(model)
        if not classifier:
            raise TypeError(f"HFVideoClassifier takes a video classifier, got the bare {type(model).__name__}")
        patch_hf(model, r=r, method=method)
        self.hf = model
        self.cfg = cfg if cfg is not None else hf_model_config(model.config)

    # ------------------------------------------------------------------------------------------------ pruning

    @property
    def r(self) -> R:
        """Tokens dropped (or merged) per group at each of the three stages."""
        return self.hf.r

    @r.setter
    def r(self, value: RSpec) -> None:
        self.hf.r = value  # validated against the config and the method; unchanged on ValueError

    @property
    def method(self) -> str:
        """Token-reduction method (``sta.core.methods.METHODS``); ``"sta"`` is the default and the paper's."""
        return self.hf.method

    @method.setter
    def method(self, value: str) -> None:
        self.hf.method = value

    @property
    def stages(self) -> tuple[PruneStage, ...]:
        return self.hf.stages

    def set_pruning(self, r: RSpec | None = None, method: str | None = None) -> None:
        """Set r and/or the method together (checked together: a pair that fits is accepted in any order)."""
        self.hf.set_pruning(r, method)

    # ------------------------------------------------------------------------------------------------ forward

    @property
    def patch_embed(self) -> nn.Module:
        """The submodule that outputs the ``B x T*S x C`` patch embeddings (``sta vis`` hooks it)."""
        return type(self.hf)._sta_family.patch_embedding(self.hf)

    def forward(self, x: Tensor, return_trace: bool = False, token_scores: Tensor | None = None
                ) -> Tensor | tuple[Tensor, TokenTrace]:
        """``B x 3 x F x H x W`` clips -> logits ``B x num_classes``; with ``return_trace`` also a :class:`TokenTrace`
        (patch-token positions ``slice * S + spatial`` alive after each stage). ``token_scores``: ``B x T*S``
        per-position scores for ``oracle`` (ignored by other methods)."""
        self.check_input(x)
        scores = self.scores_for(x, token_scores)  # first: a scorer may run this model itself
        if self.stages and METHODS[self.method].variable_count and x.shape[0] > 1:
            # a count that varies per clip: each clip on its own (packed, never padded into attention)
            runs = [self.forward(x[b : b + 1], True, None if scores is None else scores[b : b + 1])
                    for b in range(x.shape[0])]
            logits = torch.cat([logits for logits, _ in runs])
            return (logits, TokenTrace.stack([trace for _, trace in runs])) if return_trace else logits
        pixels = x.transpose(1, 2)  # HF video models take B x F x C x H x W
        trace = TokenTrace() if return_trace else None
        with pruning_inputs(self.hf, trace, scores):
            logits = self.hf(pixels, return_dict=True).logits
        return (logits, trace) if return_trace else logits

    def meta_copy(self) -> HFVideoClassifier:
        """The same architecture, r and method on the meta device, without copying any weight (for FLOPs)."""
        base = type(self.hf)._sta_base
        dtype = next(self.hf.parameters()).dtype
        with torch.device("meta"):
            hf = base(copy.deepcopy(self.hf.config)).to(dtype).eval()
        return HFVideoClassifier(hf, self.cfg, r=self.r, method=self.method)
