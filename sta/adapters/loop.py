"""The pruning loop every Hugging Face family shares, and the in-place patching machinery.

A family module (``videomae.py``, ``vivit.py``, ``vjepa2.py``) says only what
differs between families: which classes it patches, the token layout its config
implies, how one of its layers runs from its own submodules (returning that
layer's head-averaged keys on request), and how its model's forward begins and
ends. Everything else lives here, once:

- :func:`run_layers`: the layer loop. After the output of each stage layer
  (``0``, ``depth // 3``, ``2 * depth // 3``, as :func:`sta.core.schedule.stage_blocks`)
  it calls the core reducer ``sta.core.methods.METHODS[method]`` on the *patch*
  tokens. Prefix tokens (ViViT's CLS) are never scored, dropped or moved: they
  stay first. The loop always carries the original positions (``slice * S +
  spatial``) of the live patch tokens, so a family whose layers need them (V-JEPA 2's
  rotary embedding) reads them from :class:`LayerInput`; ToMe's merged-token
  sizes become a ``log(size)`` attention bias (0 for prefix tokens).
- :func:`attention`: eager ``softmax(q k^T * scale + bias) v`` (HF's eager code,
  weights in float32 before the cast) or fused attention through
  :func:`sta.core.attention.attend`, chosen from ``config._attn_implementation``.
- :class:`PatchedModel` / :class:`PatchedClassifier`: mixins that
  :func:`patch_model` puts in front of the HF class of the instance (same name,
  module and qualified name, so ``save_pretrained`` and transformers' output
  hooks are unaffected). While ``sta_r`` is 0 the forward is HF's own; pickling and
  ``copy.deepcopy`` keep the patch.

Nothing here knows a family by name; nothing family-specific goes into :mod:`sta.core`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sta.core.attention import attend
from sta.core.methods import METHODS, ReductionState, check_method
from sta.core.schedule import PruneStage, RSpec, build_stages, normalize_r, stage_blocks
from sta.models.vit import TokenTrace

__all__ = [
    "Family", "LayerInput", "PatchedModel", "PatchedClassifier", "attention", "run_layers", "patch_model",
    "patched_inner", "forward_with_trace", "pair", "square",
]


# ------------------------------------------------------------------------------------------------ families


@dataclass(frozen=True)
class Layout:
    """What a config says about the token grid STA works on."""

    depth: int  # transformer layers
    num_slices: int  # T = frames / tubelet
    tokens_per_slice: int  # S = (H / patch) * (W / patch)


class Family:
    """One Hugging Face model family. Subclasses fill in the class attributes and the methods."""

    model_type: ClassVar[str]  # config.json's model_type
    inner_attr: ClassVar[str]  # where the classifier keeps its bare model ("videomae", "vivit", "vjepa2")
    prefix_tokens: ClassVar[int] = 0  # tokens before the patch tokens (ViViT: 1, its CLS)
    model_mixin: ClassVar[type]  # PatchedModel subclass for the bare model
    classifier_mixin: ClassVar[type]  # PatchedClassifier subclass for the classifier

    @staticmethod
    def classes() -> tuple[type, type]:
        """(bare model class, video classifier class) of the installed transformers."""
        raise NotImplementedError

    @staticmethod
    def layout(config) -> Layout:
        raise NotImplementedError

    # The family's processor defaults, as transformers' processor classes set them (the keys of a
    # preprocessor_config.json): image_mean, image_std, do_rescale, rescale_factor, offset, do_normalize.
    processor_defaults: ClassVar[dict[str, Any]] = {}

    @staticmethod
    def check_config(config, under_classifier: bool) -> None:
        """Raise ``ValueError`` for a config STA cannot prune (only called for r > 0)."""

    @staticmethod
    def clip_fields(config) -> dict[str, int]:
        """The classifier's clip and model sizes: num_frames, img_size, in_chans, tubelet_size, patch_size,
        num_classes, depth, embed_dim, num_heads (``ValueError`` for non-square images or patches)."""
        raise NotImplementedError

    @staticmethod
    def patch_embedding(classifier: nn.Module) -> nn.Module:
        """The classifier's submodule whose output is the ``B x T*S x C`` patch embeddings (before anything
        is added or prepended)."""
        raise NotImplementedError

    @staticmethod
    def pruned_forward(model: nn.Module, args: tuple, kwargs: dict, stages: tuple[PruneStage, ...], method: str,
                       trace: TokenTrace | None):
        """The bare model's forward with pruning: same arguments and output type as HF's."""
        raise NotImplementedError

    @classmethod
    def validate(cls, config, r: RSpec, method: str, under_classifier: bool
                 ) -> tuple[tuple[int, int, int], tuple[PruneStage, ...]]:
        """(r per stage, stages) for this config, or ``ValueError`` naming what does not fit."""
        rs = normalize_r(r)
        if not any(rs):
            check_method(method, ())
            return rs, ()
        cls.check_config(config, under_classifier)
        lay = cls.layout(config)
        stages = build_stages(lay.depth, lay.num_slices, lay.tokens_per_slice, rs)
        check_method(method, stages)
        return rs, stages


def pair(value) -> tuple[int, int]:
    """``224`` or ``[224, 224]`` -> ``(224, 224)``."""
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


def square(value, name: str) -> int:
    """``224`` or ``[224, 224]`` -> 224; ``ValueError`` for a non-square size."""
    h, w = pair(value)
    if h != w:
        raise ValueError(f"{name} {value!r}: only square frames and patches are supported")
    return h


def option(value, config, name: str):
    """An HF call's ``output_*`` flag: the argument when given, else the config's."""
    return getattr(config, name, False) if value is None else value


# ---------------------------------------------------------------------------------------------- the loop


@dataclass
class LayerInput:
    """What the loop hands a family's layer step besides the hidden states."""

    positions: Tensor  # B x L int64: original positions of the live patch tokens (prefix tokens excluded)
    bias: Tensor | None  # B x 1 x 1 x N additive score bias (ToMe's log sizes, prefix tokens 0), else None
    need_keys: bool  # return the layer's keys averaged over heads (a stage layer)
    eager: bool  # explicit attention (and its weights) instead of the fused kernel
    dropout: float  # attention-probability dropout (0 in eval mode)


# (layer, x: B x N x C, LayerInput) -> (output B x N x C, keys B x N x d or None, attention weights or None)
LayerStep = Callable[[nn.Module, Tensor, LayerInput], tuple[Tensor, Tensor | None, Tensor | None]]


@dataclass
class LoopOutput:
    x: Tensor  # B x (prefix + L') x C: the last layer's output, pruned
    hidden_states: tuple[Tensor, ...] | None  # the loop's input, then every layer's output after its pruning
    attentions: tuple[Tensor, ...] | None


def run_layers(layers: Sequence[nn.Module], x: Tensor, step: LayerStep, stages: tuple[PruneStage, ...],
               method: str = "sta", *, prefix: int = 0, trace: TokenTrace | None = None, eager: bool = False,
               dropout: float = 0.0, output_hidden_states: bool = False, output_attentions: bool = False
               ) -> LoopOutput:
    """Run ``layers`` on ``x`` (``B x (prefix + T*S) x C``), reducing the patch tokens after each stage layer.

    ``trace.positions`` gets, after each of the three stage layers, the ``B x L_k``
    original positions of the live patch tokens. Raises ``ValueError`` when the
    number of patch tokens is not the one the stages were built for.
    """
    B, N, _ = x.shape
    L = N - prefix
    if stages and L != stages[0].tokens_in:
        raise ValueError(f"STA was set up for {stages[0].tokens_in} patch tokens (frames, size and patch from the "
                         f"model's config) but this input gives {L}; set sta_r = 0 for other input shapes")
    reduce = METHODS[method]
    stage_at = {stage.block: stage for stage in stages}
    trace_at = set(stage_blocks(len(layers))) if trace is not None else set()
    state = ReductionState(positions=torch.arange(L, device=x.device).expand(B, -1))
    hidden = [x] if output_hidden_states else None
    attentions = [] if output_attentions else None
    for i, layer in enumerate(layers):
        stage = stage_at.get(i)
        inp = LayerInput(state.positions, size_bias(state.sizes, prefix, x.dtype), stage is not None, eager, dropout)
        x, keys, weights = step(layer, x, inp)
        if stage is not None:
            patches = reduce(x[:, prefix:], keys[:, prefix:], stage, state)  # the core's reducer
            x = torch.cat([x[:, :prefix], patches], dim=1) if prefix else patches
        if i in trace_at:
            trace.positions.append(state.positions)
        if hidden is not None:
            hidden.append(x)
        if attentions is not None:
            attentions.append(weights)
    return LoopOutput(x, tuple(hidden) if hidden is not None else None,
                      tuple(attentions) if attentions is not None else None)


def size_bias(sizes: Tensor | None, prefix: int, dtype: torch.dtype) -> Tensor | None:
    """ToMe's proportional attention: ``log(size)`` of every key, ``B x 1 x 1 x N`` (0 for prefix tokens)."""
    if sizes is None:
        return None
    bias = sizes.log()[..., 0]  # B x L
    if prefix:
        bias = torch.cat([bias.new_zeros(bias.shape[0], prefix), bias], dim=1)
    return bias.to(dtype)[:, None, None, :]


def attention(q: Tensor, k: Tensor, v: Tensor, inp: LayerInput, scaling: float | None = None
              ) -> tuple[Tensor, Tensor | None]:
    """``q, k, v``: ``B x H x N x d`` -> (context ``B x N x H*d``, weights ``B x H x N x N`` when eager).

    Eager follows HF's ``eager_attention_forward`` (scores times ``scaling``, plus the
    bias, softmax in float32, cast, dropout); otherwise fused attention.
    """
    B, H, N, d = q.shape
    scale = d**-0.5 if scaling is None else scaling
    weights = None
    if inp.eager:
        weights = torch.matmul(q, k.transpose(-1, -2)) * scale
        if inp.bias is not None:
            weights = weights + inp.bias
        weights = weights.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        weights = F.dropout(weights, p=inp.dropout, training=inp.dropout > 0)
        context = torch.matmul(weights, v)
    elif inp.dropout > 0 or scaling is not None and scaling != d**-0.5:
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=inp.bias, dropout_p=inp.dropout, scale=scale)
    else:
        context = attend(q, k, v, inp.bias)
    return context.transpose(1, 2).reshape(B, N, H * d), weights


def heads(t: Tensor, num_heads: int) -> Tensor:
    """``B x N x H*d`` -> ``B x H x N x d``."""
    B, N, _ = t.shape
    return t.view(B, N, num_heads, -1).transpose(1, 2)


# ---------------------------------------------------------------------------------------- patched classes


class _Patched:
    """What both patched classes share: a marker, and pickling that rebuilds the patched class."""

    _sta_patched = True

    def __reduce_ex__(self, protocol):
        # The patched class has the original's name, so pickle would find the original under it and refuse;
        # rebuild an object of the original class instead and patch it again.
        reduced = super().__reduce_ex__(protocol)
        cls = type(self)
        if len(reduced) < 2 or not reduced[1] or reduced[1][0] is not cls:
            return reduced
        args = (cls._sta_base,) + tuple(reduced[1][1:])
        return (_rebuild_patched, (reduced[0], args, cls._sta_mixin)) + tuple(reduced[2:])


def _rebuild_patched(build, args, mixin):
    obj = build(*args)
    swap_class(obj, mixin)
    return obj


class PatchedModel(_Patched):
    """Mixed in before a family's bare HF model class by :func:`patch_model`."""

    _sta_family: ClassVar[type[Family]]
    _sta_r: tuple[int, int, int] = (0, 0, 0)
    _sta_method: str = "sta"
    _sta_stages: tuple[PruneStage, ...] = ()
    _sta_trace: TokenTrace | None = None
    _sta_under_classifier = False

    @property
    def sta_r(self) -> tuple[int, int, int]:
        """Tokens dropped (or merged) per group at each of the three stages (0 = HF's own forward)."""
        return self._sta_r

    @sta_r.setter
    def sta_r(self, value: RSpec) -> None:
        self.set_sta(r=value)

    @property
    def sta_method(self) -> str:
        """Token-reduction method, a key of ``sta.core.methods.METHODS`` (``"sta"``: the paper's)."""
        return self._sta_method

    @sta_method.setter
    def sta_method(self, value: str) -> None:
        self.set_sta(method=value)

    @property
    def sta_stages(self) -> tuple[PruneStage, ...]:
        """The pruning stages in use (empty at r = 0)."""
        return self._sta_stages

    def set_sta(self, r: RSpec | None = None, method: str | None = None) -> None:
        """Set r and/or the method together; ``ValueError`` (nothing changed) when they do not fit."""
        r = self._sta_r if r is None else r
        method = self._sta_method if method is None else method
        rs, stages = self._sta_family.validate(self.config, r, method, self._sta_under_classifier)
        self._sta_r, self._sta_method, self._sta_stages = rs, method, stages

    def forward(self, *args, **kwargs):
        if self._sta_stages:
            return self._sta_family.pruned_forward(self, args, kwargs, self._sta_stages, self._sta_method,
                                                   self._sta_trace)
        outputs = super().forward(*args, **kwargs)
        if self._sta_trace is not None:  # r = 0: every patch token survives every stage
            first = outputs[0]
            every = torch.arange(first.shape[1] - self._sta_family.prefix_tokens, device=first.device)
            self._sta_trace.positions.extend([every.expand(first.shape[0], -1)] * 3)
        return outputs


class PatchedClassifier(_Patched):
    """Mixed in before a family's classifier class: ``sta_r`` / ``sta_method`` live on its bare model."""

    _sta_family: ClassVar[type[Family]]

    @property
    def sta_inner(self) -> PatchedModel:
        return getattr(self, self._sta_family.inner_attr)

    @property
    def sta_r(self) -> tuple[int, int, int]:
        """Tokens dropped (or merged) per group at each of the three stages (0 = HF's own forward)."""
        return self.sta_inner.sta_r

    @sta_r.setter
    def sta_r(self, value: RSpec) -> None:
        self.sta_inner.sta_r = value

    @property
    def sta_method(self) -> str:
        return self.sta_inner.sta_method

    @sta_method.setter
    def sta_method(self, value: str) -> None:
        self.sta_inner.sta_method = value

    @property
    def sta_stages(self) -> tuple[PruneStage, ...]:
        return self.sta_inner.sta_stages

    def set_sta(self, r: RSpec | None = None, method: str | None = None) -> None:
        self.sta_inner.set_sta(r, method)


_PATCHED_CLASSES: dict[tuple[type, type], type] = {}


def swap_class(obj: nn.Module, mixin: type) -> None:
    base = type(obj)
    if getattr(base, "_sta_patched", False):
        return
    cls = _PATCHED_CLASSES.get((base, mixin))
    if cls is None:
        # Same name, module and qualname as the original: save_pretrained records the class name as the
        # architecture, and transformers keys its output-capturing registry on str(class).
        cls = type(base.__name__, (mixin, base),
                   {"__module__": base.__module__, "__qualname__": base.__qualname__, "__doc__": base.__doc__,
                    "_sta_base": base, "_sta_mixin": mixin})
        _PATCHED_CLASSES[(base, mixin)] = cls
    obj.__class__ = cls


def patch_model(model: nn.Module, family: type[Family], classifier: bool, r: RSpec, method: str) -> nn.Module:
    """Patch ``model`` (a bare model, or a classifier when ``classifier``) of ``family`` in place."""
    inner = getattr(model, family.inner_attr) if classifier else model
    under_classifier = classifier or getattr(inner, "_sta_under_classifier", False)
    rs, stages = family.validate(inner.config, r, method, under_classifier)  # before touching the model
    swap_class(inner, family.model_mixin)
    if classifier:
        swap_class(model, family.classifier_mixin)
    inner._sta_under_classifier = under_classifier
    inner._sta_r, inner._sta_method, inner._sta_stages = rs, method, stages
    return model


def patched_inner(model: nn.Module) -> PatchedModel:
    """The patched bare model of a patched model or classifier; ``TypeError`` if it is not patched."""
    if isinstance(model, PatchedModel):
        return model
    if isinstance(model, PatchedClassifier):
        return model.sta_inner
    raise TypeError("this model is not patched: call sta.patch_hf(model) first")


def forward_with_trace(model: nn.Module, *args, **kwargs) -> tuple[Any, TokenTrace]:
    """Call a patched model and also return which patch tokens survived (see :mod:`sta.adapters.hf`)."""
    inner = patched_inner(model)
    trace = TokenTrace()
    inner._sta_trace = trace
    try:
        outputs = model(*args, **kwargs)
    finally:
        inner._sta_trace = None
    return outputs, trace
