"""The pruning loop every Hugging Face family shares, and the in-place patching machinery.

A family module (``videomae.py``, ``vivit.py``, ``vjepa2.py``) holds one
:class:`sta.adapters.family.Family`: which classes it patches, the token grid its
config implies, and its pruned forward, which begins with :func:`begin_call`,
embeds, runs its layers through :meth:`PrunedCall.run` with its own layer step
(one layer from the layer's own submodules, returning the head-averaged keys on
request) and ends as HF's forward does. Everything else lives here, once:

- :func:`run_layers`: the layer loop, driven by :class:`sta.core.forward.PruningPass`
  on the *patch* tokens (before layer 0 for RLT, after each stage layer otherwise),
  handing each method what it declares it needs. Prefix tokens (ViViT's CLS) are
  never scored, dropped or moved: they stay first. The original positions
  (``slice * S + spatial``) of the live patch tokens reach every layer through
  :class:`LayerInput` (V-JEPA 2's rotary embedding); merged-token sizes (ToMe,
  vid-TLDR) become a ``log(size)`` attention bias (0 for prefix tokens).
- :func:`attention`: eager ``softmax(q k^T * scale + bias) v`` (HF's eager code,
  weights in float32 before the cast) or fused attention through
  :func:`sta.core.attention.attend`, chosen from ``config._attn_implementation``.
- :func:`begin_call`: what every pruned forward resolves the same way from its
  keyword arguments and the config (``return_dict``, ``output_hidden_states``,
  ``output_attentions``, eager attention, dropout).
- :class:`PatchedModel` / :class:`PatchedClassifier`: mixins that
  :func:`patch_model` puts in front of the HF class of the instance (same name,
  module and qualified name, so ``save_pretrained`` and transformers' output
  hooks are unaffected), the same two for every family. They give the model
  ``r``, ``method``, ``stages``, ``set_pruning`` and ``pruning()``, as our own
  models have them. While ``r`` is 0 the forward is HF's own; pickling and
  ``copy.deepcopy`` keep the patch.

Nothing here knows a family by name; nothing family-specific goes into :mod:`sta.core`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sta.adapters.family import Family
from sta.core.attention import attend
from sta.core.contract import ClipClassifier, TokenTrace
from sta.core.forward import PruningPass
from sta.core.methods import Needs
from sta.core.reduction import TokenGrid
from sta.core.schedule import UNPRUNED, PruneStage, R, RSpec, stage_blocks
from sta.errors import InvalidInput

__all__ = [
    "LayerInput", "LayerOutput", "PatchedModel", "PatchedClassifier", "PrunedCall", "attention", "begin_call",
    "heads", "run_layers", "patch_model", "patched_inner", "forward_with_trace", "pruning_inputs",
]


# ---------------------------------------------------------------------------------------------- the loop


@dataclass
class LayerInput:
    """What the loop hands a family's layer step besides the hidden states."""

    positions: Tensor  # B x L int64: original positions of the live patch tokens (prefix tokens excluded)
    bias: Tensor | None  # B x 1 x 1 x N additive score bias (ToMe's log sizes, prefix tokens 0), else None
    need_keys: bool  # return the layer's keys averaged over heads (a stage layer)
    eager: bool  # explicit attention (and its weights) instead of the fused kernel
    dropout: float  # attention-probability dropout (0 in eval mode)
    need_probs: bool = False  # return the attention probabilities without the size bias (a stage layer of vidtldr)


@dataclass
class LayerOutput:
    """What a family's layer step gives back."""

    x: Tensor  # B x N x C
    keys: Tensor | None = None  # B x N x d: keys averaged over heads (when need_keys)
    weights: Tensor | None = None  # B x H x N x N: the attention weights used (eager attention)
    probs: Tensor | None = None  # B x H x N x N float32: probabilities without the size bias (when need_probs)
    mlp_input: Tensor | None = None  # B x N x C: the residual stream after attention, before the MLP


# (layer, x: B x N x C, LayerInput) -> LayerOutput
LayerStep = Callable[[nn.Module, Tensor, LayerInput], LayerOutput]


@dataclass
class LoopOutput:
    x: Tensor  # B x (prefix + L') x C: the last layer's output, pruned
    hidden_states: tuple[Tensor, ...] | None  # the loop's input, then every layer's output after its pruning
    attentions: tuple[Tensor, ...] | None


def run_layers(layers: Sequence[nn.Module], x: Tensor, step: LayerStep, stages: tuple[PruneStage, ...],
               method: str = "sta", *, prefix: int = 0, trace: TokenTrace | None = None, eager: bool = False,
               dropout: float = 0.0, output_hidden_states: bool = False, output_attentions: bool = False,
               grid: TokenGrid | None = None, clips: Tensor | None = None, scores: Tensor | None = None
               ) -> LoopOutput:
    """Run ``layers`` on ``x`` (``B x (prefix + T*S) x C``), reducing the patch tokens after each stage layer.

    ``trace.positions`` gets, after each of the three stage layers, the ``B x L_k``
    original positions of the live patch tokens. ``grid`` / ``clips`` (``B x 3 x F x H x W``)
    / ``scores`` (``B x T*S``) are for the methods that need them. Raises ``ValueError``
    when the number of patch tokens is not the one the stages were built for.
    """
    B, N, _ = x.shape
    L = N - prefix
    if stages and L != stages[0].tokens_in:
        raise InvalidInput(f"STA was set up for {stages[0].tokens_in} patch tokens (frames, size and patch from the "
                           f"model's config) but this input gives {L}; set r = 0 for other input shapes")
    pruning = PruningPass(method, stages, B, L, x.device, grid=grid, clips=clips, scores=scores)
    trace_at = set(stage_blocks(len(layers))) if trace is not None else set()
    hidden = [x] if output_hidden_states else None
    attentions = [] if output_attentions else None
    x = _with_prefix(x, prefix, pruning.start(x[:, prefix:]))
    for i, layer in enumerate(layers):
        need = pruning.needs_at(i)
        inp = LayerInput(pruning.state.positions, size_bias(pruning.state.sizes, prefix, x.dtype),
                         Needs.KEYS in need, eager, dropout, need_probs=Needs.ATTENTION in need)
        out = step(layer, x, inp)
        patches = pruning.after(i, out.x[:, prefix:], keys=None if out.keys is None else out.keys[:, prefix:],
                                attention=None if out.probs is None else out.probs[:, :, prefix:],
                                mlp_input=None if out.mlp_input is None else out.mlp_input[:, prefix:])
        x = _with_prefix(out.x, prefix, patches)
        if i in trace_at:
            trace.positions.append(pruning.state.positions)
        if hidden is not None:
            hidden.append(x)
        if attentions is not None:
            attentions.append(out.weights)
    return LoopOutput(x, tuple(hidden) if hidden is not None else None,
                      tuple(attentions) if attentions is not None else None)


def _with_prefix(x: Tensor, prefix: int, patches: Tensor) -> Tensor:
    """``x``'s prefix tokens (unchanged, first) followed by ``patches``."""
    return torch.cat([x[:, :prefix], patches], dim=1) if prefix else patches


def size_bias(sizes: Tensor | None, prefix: int, dtype: torch.dtype) -> Tensor | None:
    """ToMe's proportional attention: ``log(size)`` of every key, ``B x 1 x 1 x N`` (0 for prefix tokens)."""
    if sizes is None:
        return None
    bias = sizes.log()[..., 0]  # B x L
    if prefix:
        bias = torch.cat([bias.new_zeros(bias.shape[0], prefix), bias], dim=1)
    return bias.to(dtype)[:, None, None, :]


def attention(q: Tensor, k: Tensor, v: Tensor, inp: LayerInput, scaling: float | None = None
              ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``q, k, v``: ``B x H x N x d`` -> (context ``B x N x H*d``, weights ``B x H x N x N`` when eager,
    probabilities without the size bias ``B x H x N x N`` float32 when ``inp.need_probs``).

    Eager follows HF's ``eager_attention_forward`` (scores times ``scaling``, plus the
    bias, softmax in float32, cast, dropout); otherwise fused attention, unless the
    probabilities are asked for (then explicit, at the same two products).
    """
    B, H, N, d = q.shape
    scale = d**-0.5 if scaling is None else scaling
    weights = probs = None
    if inp.eager or inp.need_probs:
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        probs = scores.softmax(dim=-1, dtype=torch.float32) if inp.need_probs else None
        if inp.bias is not None:
            scores = scores + inp.bias
        weights = probs if probs is not None and inp.bias is None else scores.softmax(dim=-1, dtype=torch.float32)
        weights = F.dropout(weights.to(q.dtype), p=inp.dropout, training=inp.dropout > 0)
        context = torch.matmul(weights, v)
        weights = weights if inp.eager else None
    elif inp.dropout > 0 or scaling is not None and scaling != d**-0.5:
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=inp.bias, dropout_p=inp.dropout, scale=scale)
    else:
        context = attend(q, k, v, inp.bias)
    return context.transpose(1, 2).reshape(B, N, H * d), weights, probs


def heads(t: Tensor, num_heads: int) -> Tensor:
    """``B x N x H*d`` -> ``B x H x N x d``."""
    B, N, _ = t.shape
    return t.view(B, N, num_heads, -1).transpose(1, 2)


# ------------------------------------------------------------------------------------------- the prelude


@dataclass(frozen=True)
class PrunedCall:
    """One pruned forward: what to prune with, and the options every family resolves the same way."""

    stages: tuple[PruneStage, ...]
    method: str
    trace: TokenTrace | None
    return_dict: bool
    output_hidden_states: bool
    output_attentions: bool
    eager: bool  # explicit attention: weights were asked for, or config._attn_implementation is eager (or unset)
    dropout: float  # attention-probability dropout (0 in eval mode)
    grid: TokenGrid | None = None  # the config's token layout (methods that read it: RLT, EVS)
    scores: Tensor | None = None  # B x T*S per-position scores (oracle)

    def run(self, layers: Sequence[nn.Module], x: Tensor, step: LayerStep, prefix: int = 0,
            clips: Tensor | None = None) -> LoopOutput:
        """:func:`run_layers` with this call's stages, method, trace and options; ``clips``: the pixel values as
        ``B x C x F x H x W`` (read only by methods that test pixels)."""
        return run_layers(layers, x, step, self.stages, self.method, prefix=prefix, trace=self.trace,
                          eager=self.eager, dropout=self.dropout, output_hidden_states=self.output_hidden_states,
                          output_attentions=self.output_attentions, grid=self.grid, clips=clips, scores=self.scores)

    def finish(self, outputs):
        """HF's output object, or its tuple when the call asked for ``return_dict=False``."""
        return outputs if self.return_dict else outputs.to_tuple()


def begin_call(model: nn.Module, kwargs: dict, stages: tuple[PruneStage, ...], method: str,
               trace: TokenTrace | None, scores: Tensor | None = None) -> PrunedCall:
    """The prelude of every family's pruned forward.

    Pops ``return_dict``, ``output_hidden_states`` and ``output_attentions`` from
    ``kwargs`` (the argument when given, else the config's), and picks eager or
    fused attention and the dropout. Any other keyword (attention-backend kwargs
    of newer releases) has no meaning for the loop and is left unread.
    """
    config = model.config

    def option(name: str, default: bool) -> bool:
        value = kwargs.pop(name, None)
        return getattr(config, name, default) if value is None else value

    return_dict = option("return_dict", True)
    hidden, attentions = bool(option("output_hidden_states", False)), bool(option("output_attentions", False))
    eager = attentions or getattr(config, "_attn_implementation", None) in (None, "eager")
    dropout = config.attention_probs_dropout_prob if model.training else 0.0
    family = getattr(type(model), "_sta_family", None)
    grid = family.token_grid(config) if family is not None else None
    return PrunedCall(stages, method, trace, return_dict, hidden, attentions, eager, dropout, grid, scores)


# ---------------------------------------------------------------------------------------- patched classes

class _Patched:
    """What both patched classes share: the pruning interface around ``r`` / ``method`` / ``set_pruning``, a
    marker, and pickling that rebuilds the patched class. (0.3's ``sta_*`` / ``set_sta`` names are gone in 0.4.)"""

    _sta_patched = True
    _sta_family: ClassVar[Family]  # set on the patched class by swap_class
    _sta_base: ClassVar[type]  # the original transformers class
    _sta_mixin: ClassVar[type]

    # Run at another r / method inside the block, as with our models (the same code).
    pruning = ClipClassifier.pruning

    def __reduce_ex__(self, protocol):
        # The patched class has the original's name, so pickle would find the original under it and refuse;
        # rebuild an object of the original class instead and patch it again.
        reduced = super().__reduce_ex__(protocol)
        cls = type(self)
        if len(reduced) < 2 or not reduced[1] or reduced[1][0] is not cls:
            return reduced
        args = (cls._sta_base,) + tuple(reduced[1][1:])
        return (_rebuild_patched, (reduced[0], args, cls._sta_mixin, cls._sta_family)) + tuple(reduced[2:])


def _rebuild_patched(build, args, mixin, family):
    obj = build(*args)
    swap_class(obj, mixin, family)
    return obj


class PatchedModel(_Patched):
    """Mixed in before a family's bare HF model class by :func:`patch_model`."""

    _sta_r: R = UNPRUNED
    _sta_method: str = "sta"
    _sta_stages: tuple[PruneStage, ...] = ()
    _sta_trace: TokenTrace | None = None
    _sta_scores: Tensor | None = None  # B x T*S per-position scores for the next forward (oracle)
    _sta_under_classifier = False

    @property
    def r(self) -> R:
        """Tokens dropped (or merged) per group at each of the three stages (0 = HF's own forward)."""
        return self._sta_r

    @r.setter
    def r(self, value: RSpec) -> None:
        self.set_pruning(r=value)

    @property
    def method(self) -> str:
        """Token-reduction method, a key of ``sta.core.methods.METHODS`` (``"sta"``: the paper's)."""
        return self._sta_method

    @method.setter
    def method(self, value: str) -> None:
        self.set_pruning(method=value)

    @property
    def stages(self) -> tuple[PruneStage, ...]:
        """The pruning stages in use (empty at r = 0)."""
        return self._sta_stages

    def set_pruning(self, r: RSpec | None = None, method: str | None = None) -> None:
        """Set r and/or the method together; ``ValueError`` (nothing changed) when they do not fit."""
        r = self._sta_r if r is None else r
        method = self._sta_method if method is None else method
        rs, stages = self._sta_family.validate(self.config, r, method, self._sta_under_classifier)
        self._sta_r, self._sta_method, self._sta_stages = rs, method, stages

    def forward(self, *args, **kwargs):
        if self._sta_stages:
            return self._sta_family.pruned_forward(self, *args, stages=self._sta_stages, method=self._sta_method,
                                                   trace=self._sta_trace, scores=self._sta_scores, **kwargs)
        outputs = super().forward(*args, **kwargs)
        if self._sta_trace is not None:  # r = 0: every patch token survives every stage
            first = outputs[0]
            every = torch.arange(first.shape[1] - self._sta_family.prefix_tokens, device=first.device)
            self._sta_trace.positions.extend([every.expand(first.shape[0], -1)] * 3)
        return outputs


class PatchedClassifier(_Patched):
    """Mixed in before a family's classifier class: ``r`` / ``method`` live on its bare model."""

    @property
    def _sta_inner(self) -> PatchedModel:
        return getattr(self, self._sta_family.inner_attr)

    r = property(lambda self: self._sta_inner.r, lambda self, value: setattr(self._sta_inner, "r", value),
                 doc="Tokens dropped (or merged) per group at each of the three stages (0 = HF's own forward).")
    method = property(lambda self: self._sta_inner.method,
                      lambda self, value: setattr(self._sta_inner, "method", value),
                      doc='Token-reduction method, a key of ``sta.core.methods.METHODS`` (``"sta"``: the paper\'s).')
    stages = property(lambda self: self._sta_inner.stages, doc="The pruning stages in use (empty at r = 0).")

    def set_pruning(self, r: RSpec | None = None, method: str | None = None) -> None:
        """Set r and/or the method together; ``ValueError`` (nothing changed) when they do not fit."""
        self._sta_inner.set_pruning(r, method)


_PATCHED_CLASSES: dict[tuple[type, type], type] = {}


def swap_class(obj: nn.Module, mixin: type[_Patched], family: Family) -> None:
    """Give ``obj`` the patched class of its class (made once per class): ``mixin`` first, then the original."""
    base = type(obj)
    if getattr(base, "_sta_patched", False):
        return
    cls = _PATCHED_CLASSES.get((base, mixin))
    if cls is None:
        # Same name, module and qualname as the original: save_pretrained records the class name as the
        # architecture, and transformers keys its output-capturing registry on str(class).
        cls = type(base.__name__, (mixin, base),
                   {"__module__": base.__module__, "__qualname__": base.__qualname__, "__doc__": base.__doc__,
                    "_sta_base": base, "_sta_mixin": mixin, "_sta_family": family})
        _PATCHED_CLASSES[(base, mixin)] = cls
    obj.__class__ = cls


def patch_model(model: nn.Module, family: Family, classifier: bool, r: RSpec, method: str) -> nn.Module:
    """Patch ``model`` (a bare model, or a classifier when ``classifier``) of ``family`` in place."""
    inner = getattr(model, family.inner_attr) if classifier else model
    under_classifier = classifier or getattr(inner, "_sta_under_classifier", False)
    rs, stages = family.validate(inner.config, r, method, under_classifier)  # before touching the model
    swap_class(inner, PatchedModel, family)
    if classifier:
        swap_class(model, PatchedClassifier, family)
    inner._sta_under_classifier = under_classifier
    inner._sta_r, inner._sta_method, inner._sta_stages = rs, method, stages
    return model


def patched_inner(model: nn.Module) -> PatchedModel:
    """The patched bare model of a patched model or classifier; ``TypeError`` if it is not patched."""
    if isinstance(model, PatchedModel):
        return model
    if isinstance(model, PatchedClassifier):
        return model._sta_inner
    raise TypeError("this model is not patched: call sta.patch_hf(model) first")


@contextmanager
def pruning_inputs(model: nn.Module, trace: TokenTrace | None = None, scores: Tensor | None = None) -> Iterator[None]:
    """Inside the block, every forward of the patched ``model`` records into ``trace`` and hands ``scores``
    (``B x T*S``, for ``oracle``) to the pruning loop."""
    inner = patched_inner(model)
    saved = inner._sta_trace, inner._sta_scores
    inner._sta_trace, inner._sta_scores = trace, scores
    try:
        yield
    finally:
        inner._sta_trace, inner._sta_scores = saved


def forward_with_trace(model: nn.Module, *args, token_scores: Tensor | None = None, **kwargs
                       ) -> tuple[Any, TokenTrace]:
    """Call a patched model and also return which tokens survived.

    Returns ``(outputs, trace)``: ``outputs`` as ``model(*args, **kwargs)`` gives
    them, ``trace.positions[k]`` a ``B x L_k`` int64 tensor of the original
    positions of the patch tokens (``slice * S + spatial``; ViViT's CLS token is
    not listed) alive after stage ``k`` = 0, 1, 2, as :class:`sta.TokenTrace`
    from the core backbone (at r = 0: every position). ``token_scores``: ``B x T*S``
    per-position scores for the ``oracle`` method.
    """
    trace = TokenTrace()
    with pruning_inputs(model, trace, token_scores):
        outputs = model(*args, **kwargs)
    return outputs, trace
