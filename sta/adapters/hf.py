"""STA on Hugging Face ``transformers`` VideoMAE models, patched in place.

.. code-block:: python

    from transformers import VideoMAEForVideoClassification
    import sta

    model = VideoMAEForVideoClassification.from_pretrained("path/to/dir").eval()
    sta.patch_hf(model, r=64)                 # same object, now prunes with STA
    logits = model(pixel_values).logits       # pixel_values: B x T x C x H x W, as HF takes them
    model.sta_r = (64, 32, 16)                # one r per stage; validated on assignment
    model.sta_r = 0                           # HF's own forward again: exactly the original outputs
    out, trace = sta.adapters.hf.forward_with_trace(model, pixel_values)
    trace.positions[2]                        # B x L_2 original positions kept after stage 3

How it works: :func:`patch_hf` gives the ``VideoMAEModel`` (``model.videomae``
of a classifier) a subclass of its own class with the same name, module and
qualified name (so ``save_pretrained`` still writes ``VideoMAEModel`` /
``VideoMAEForVideoClassification`` and transformers' output hooks keep
working). Its ``forward`` calls HF's original one while ``r`` is 0; otherwise
it runs a small loop of our own over HF's submodules (embeddings, then per
layer ``layernorm_before`` -> q/k/v from the layer's own ``query``/``key``/
``value`` -> attention -> ``attention.output`` -> residual -> ``layernorm_after``
-> ``intermediate`` -> ``output`` with residual) and prunes the outputs of the
three stage layers with the core's STA reducer (``sta.core.methods.METHODS["sta"]``),
exactly as :mod:`sta.models.vit` does. HF's encoder and layer signatures, which change
between releases, are never called. The classifier's own forward (mean
pooling, ``fc_norm``, ``classifier``, ``labels`` -> loss, ``return_dict``) stays
HF's and simply sees fewer tokens, so outputs keep their types.

Attention follows ``config._attn_implementation``: ``"eager"`` computes
``softmax(q k^T / sqrt(d)) v`` explicitly (and can return the weights); any other
value (``"sdpa"``, flash, flex) uses :func:`sta.core.attention.attend` (fused SDPA).
``output_attentions=True`` switches one call to the explicit path.

With pruning on, ``output_hidden_states`` returns the embeddings and every
layer's output *after* that layer's pruning (lengths shrink at the three stage
layers). ``bool_masked_pos`` and ``head_mask`` are refused while ``r`` > 0.
The patch is not part of ``save_pretrained``: a model loaded back with
``from_pretrained`` is plain VideoMAE until patched again. Pickling
(``torch.save(model)``, ``copy.deepcopy``) keeps it, r included.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sta.core.attention import attend
from sta.core.methods import METHODS, ReductionState
from sta.core.schedule import PruneStage, RSpec, build_stages, normalize_r, stage_blocks
from sta.models.vit import TokenTrace
from sta.utils.optional import require_transformers

__all__ = ["patch_hf", "forward_with_trace"]

reduce_sta = METHODS["sta"]


def patch_hf(model: nn.Module, r: RSpec = 64) -> nn.Module:
    """Make a ``VideoMAEForVideoClassification`` or ``VideoMAEModel`` prune with STA, in place.

    Returns the same object. ``r`` is one int for every stage or three ints,
    as in :func:`sta.create_model`; ``model.sta_r`` reads and changes it later
    (``ValueError`` for an r that cannot fit, leaving the model as it was).
    Patching a patched model only sets ``r``. A classifier that reads the first
    token instead of mean-pooling (``use_mean_pooling=False``) is refused for r > 0,
    since pruning reorders tokens.
    """
    require_transformers()
    from transformers import VideoMAEForVideoClassification, VideoMAEModel

    if isinstance(model, VideoMAEModel):
        inner, classifier = model, False
    elif isinstance(model, VideoMAEForVideoClassification):
        inner, classifier = model.videomae, True
    else:
        raise TypeError(f"patch_hf takes a transformers VideoMAEForVideoClassification or VideoMAEModel, "
                        f"got {type(model).__name__}")
    needs_pooling = classifier or getattr(inner, "_sta_needs_mean_pooling", False)
    rs, stages = _validate(inner.config, r, needs_pooling)  # before touching the model
    _swap_class(inner, _STAVideoMAEModel)
    if classifier:
        _swap_class(model, _STAVideoMAEClassifier)
    inner._sta_needs_mean_pooling = needs_pooling
    inner._sta_r, inner._sta_stages = rs, stages
    return model


def forward_with_trace(model: nn.Module, *args, **kwargs) -> tuple[Any, TokenTrace]:
    """Call a patched model and also return which tokens survived.

    Returns ``(outputs, trace)``: ``outputs`` as ``model(*args, **kwargs)`` gives
    them, ``trace.positions[k]`` a ``B x L_k`` int64 tensor of the original
    positions (``slice * S + spatial``) alive after stage ``k`` = 0, 1, 2, as
    :class:`sta.TokenTrace` from the core backbone (at r = 0: every position).
    """
    inner = _patched_inner(model)
    trace = TokenTrace()
    inner._sta_trace = trace
    try:
        outputs = model(*args, **kwargs)
    finally:
        inner._sta_trace = None
    return outputs, trace


# ------------------------------------------------------------------------------------------ patched classes


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
    _swap_class(obj, mixin)
    return obj


class _STAVideoMAEModel(_Patched):
    """Mixed in before transformers' ``VideoMAEModel`` by :func:`patch_hf`."""

    _sta_r: tuple[int, int, int] = (0, 0, 0)
    _sta_stages: tuple[PruneStage, ...] = ()
    _sta_trace: TokenTrace | None = None
    _sta_needs_mean_pooling = False

    @property
    def sta_r(self) -> tuple[int, int, int]:
        """Tokens STA drops per group at each of the three stages (0 = HF's own forward)."""
        return self._sta_r

    @sta_r.setter
    def sta_r(self, value: RSpec) -> None:
        self._sta_r, self._sta_stages = _validate(self.config, value, self._sta_needs_mean_pooling)

    @property
    def sta_stages(self) -> tuple[PruneStage, ...]:
        """The pruning stages in use (empty at r = 0)."""
        return self._sta_stages

    def forward(self, *args, **kwargs):
        if self._sta_stages:
            return _pruned_forward(self, *args, stages=self._sta_stages, trace=self._sta_trace, **kwargs)
        outputs = super().forward(*args, **kwargs)
        if self._sta_trace is not None:
            pixel_values = args[0] if args else kwargs["pixel_values"]
            every = torch.arange(self.embeddings.num_patches, device=pixel_values.device)
            self._sta_trace.positions.extend([every.expand(pixel_values.shape[0], -1)] * 3)
        return outputs


class _STAVideoMAEClassifier(_Patched):
    """Mixed in before ``VideoMAEForVideoClassification``: ``sta_r`` lives on its ``videomae``."""

    @property
    def sta_r(self) -> tuple[int, int, int]:
        """Tokens STA drops per group at each of the three stages (0 = HF's own forward)."""
        return self.videomae.sta_r

    @sta_r.setter
    def sta_r(self, value: RSpec) -> None:
        self.videomae.sta_r = value

    @property
    def sta_stages(self) -> tuple[PruneStage, ...]:
        return self.videomae.sta_stages


_PATCHED_CLASSES: dict[tuple[type, type], type] = {}


def _swap_class(obj: nn.Module, mixin: type) -> None:
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


def _patched_inner(model: nn.Module) -> _STAVideoMAEModel:
    inner = model if isinstance(model, _STAVideoMAEModel) else getattr(model, "videomae", None)
    if not isinstance(inner, _STAVideoMAEModel):
        raise TypeError("this model is not patched: call sta.patch_hf(model) first")
    return inner


def _pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


def _validate(config, r: RSpec, needs_mean_pooling: bool) -> tuple[tuple[int, int, int], tuple[PruneStage, ...]]:
    rs = normalize_r(r)
    if not any(rs):
        return rs, ()
    if needs_mean_pooling and not getattr(config, "use_mean_pooling", True):
        raise ValueError("STA needs a mean-pooling classifier: this one reads the first token "
                         "(use_mean_pooling=False), which pruning reorders")
    (h, w), (ph, pw) = _pair(config.image_size), _pair(config.patch_size)
    slices = config.num_frames // config.tubelet_size
    return rs, build_stages(config.num_hidden_layers, slices, (h // ph) * (w // pw), rs)


# ----------------------------------------------------------------------------------------- our own forward


def _pruned_forward(model, pixel_values: Tensor | None = None, bool_masked_pos: Tensor | None = None, *extra,
                    stages: tuple[PruneStage, ...], trace: TokenTrace | None = None, **kwargs):
    """``VideoMAEModel.forward`` with STA: same arguments, ``BaseModelOutput`` (or tuple) back."""
    from transformers.modeling_outputs import BaseModelOutput

    if pixel_values is None:
        raise ValueError("pixel_values is required")
    if bool_masked_pos is not None:
        raise ValueError("STA pruning cannot be combined with bool_masked_pos (masked inputs); set sta_r = 0")
    if any(a is not None for a in extra) or kwargs.pop("head_mask", None) is not None:
        raise ValueError("head_mask is not supported with STA pruning; set sta_r = 0")
    config = model.config
    return_dict = kwargs.pop("return_dict", None)
    return_dict = getattr(config, "return_dict", True) if return_dict is None else return_dict
    want_hidden = bool(_option(kwargs.pop("output_hidden_states", None), config, "output_hidden_states"))
    want_attn = bool(_option(kwargs.pop("output_attentions", None), config, "output_attentions"))
    eager = want_attn or getattr(config, "_attn_implementation", None) in (None, "eager")
    dropout = config.attention_probs_dropout_prob if model.training else 0.0
    # Any other keyword (attention-backend kwargs of newer releases) has no meaning for this loop.

    x = model.embeddings(pixel_values, None)  # patch embeddings + fixed sin-cos table: B x T*S x C
    B, L, _ = x.shape
    layers = model.encoder.layer
    stage_at = {stage.block: stage for stage in stages}
    trace_at = set(stage_blocks(len(layers))) if trace is not None else set()
    state = ReductionState(positions=torch.arange(L, device=x.device).expand(B, -1) if trace is not None else None)
    hidden = [x] if want_hidden else None
    attentions = [] if want_attn else None
    for i, layer in enumerate(layers):
        stage = stage_at.get(i)
        x, keys, weights = _layer_forward(layer, x, eager, dropout, need_keys=stage is not None)
        if stage is not None:
            x = reduce_sta(x, keys, stage, state)  # the core's STA reducer, scoring in float32
        if i in trace_at:
            trace.positions.append(state.positions)
        if hidden is not None:
            hidden.append(x)
        if attentions is not None:
            attentions.append(weights)
    if getattr(model, "layernorm", None) is not None:  # models without mean pooling end with a LayerNorm
        x = model.layernorm(x)
    outputs = BaseModelOutput(last_hidden_state=x, hidden_states=tuple(hidden) if hidden is not None else None,
                              attentions=tuple(attentions) if attentions is not None else None)
    return outputs if return_dict else outputs.to_tuple()


def _option(value, config, name: str):
    return getattr(config, name, False) if value is None else value


def _layer_forward(layer: nn.Module, x: Tensor, eager: bool, dropout: float,
                   need_keys: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One ``VideoMAELayer`` from its submodules -> (output, head-averaged keys or None, attention weights or None)."""
    h = layer.layernorm_before(x)
    sa = layer.attention.attention
    B, N, C = h.shape
    heads, d = sa.num_attention_heads, sa.attention_head_size
    # transformers >= 5 keeps the q/v biases in query/value; 4.x in separate q_bias / v_bias parameters.
    q = _project(sa.query, h, getattr(sa, "q_bias", None))
    k = sa.key(h)  # VideoMAE's key has no bias
    v = _project(sa.value, h, getattr(sa, "v_bias", None))
    q, k, v = (t.view(B, N, heads, d).transpose(1, 2) for t in (q, k, v))  # B x heads x N x d
    weights = None
    if eager:
        weights = torch.matmul(q, k.transpose(-1, -2)) * d**-0.5
        weights = weights.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        weights = F.dropout(weights, p=dropout, training=dropout > 0)
        context = torch.matmul(weights, v)
    elif dropout > 0:
        context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    else:
        context = attend(q, k, v)
    context = context.transpose(1, 2).reshape(B, N, heads * d)
    x = x + layer.attention.output(context, h)  # output dense (+ dropout); the residual is ours, as in HF's layer
    x = layer.output(layer.intermediate(layer.layernorm_after(x)), x)  # MLP with its residual
    return x, (k.mean(1) if need_keys else None), weights


def _project(linear: nn.Linear, h: Tensor, legacy_bias: Tensor | None) -> Tensor:
    return linear(h) if legacy_bias is None else F.linear(h, linear.weight, legacy_bias)
