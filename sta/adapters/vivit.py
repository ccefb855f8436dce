"""STA on Hugging Face ``VivitModel`` / ``VivitForVideoClassification`` (see :mod:`sta.adapters.hf`).

Layout: a learned CLS token, then ``T = num_frames / tubelet_size[0]`` slices of
``S = (image_size / tubelet_size[1])^2`` patch tokens in slice-major order
(``google/vivit-b-16x2-kinetics400``: 32 frames, tubelet 2 x 16 x 16 -> 16 x 196),
learned position embeddings added once by the embeddings. The classifier reads
the CLS token, so STA prunes the patch tokens only: the CLS token stays first
and is never scored, dropped or merged (it keeps size 1 under ToMe). With T = 16
STA's groups are 16, 8 and 4 slices; the stage layers are 0, ``depth // 3`` and
``2 * depth // 3``.

One layer, from its submodules as ``VivitLayer`` runs them: ``layernorm_before``
-> ``q_proj`` / ``k_proj`` / ``v_proj`` -> attention -> ``o_proj`` -> ``dropout``
-> residual -> ``layernorm_after`` -> ``mlp`` -> ``dropout`` -> residual. STA's
similarity feature is the stage layer's ``k_proj`` output (its bias included)
averaged over heads. The model ends with ``layernorm`` and, for a bare model
built with one, the pooler; the classifier's own forward (``classifier`` on token
0, loss) stays HF's. ``attention_mask`` is refused while pruning;
``interpolate_pos_encoding`` is passed to the embeddings, but the token count must
stay the one the config gives (STA's groups are built from it).
"""

from __future__ import annotations

from torch import Tensor, nn

from sta.adapters.loop import (
    Family,
    LayerInput,
    Layout,
    PatchedClassifier,
    PatchedModel,
    attention,
    heads,
    option,
    pair,
    run_layers,
    square,
)
from sta.core.schedule import PruneStage
from sta.models.vit import TokenTrace


class Vivit(Family):
    model_type = "vivit"
    inner_attr = "vivit"
    prefix_tokens = 1  # CLS

    @staticmethod
    def classes() -> tuple[type, type]:
        from transformers import VivitForVideoClassification, VivitModel

        return VivitModel, VivitForVideoClassification

    @staticmethod
    def layout(config) -> Layout:
        t, ph, pw = (int(v) for v in config.tubelet_size)
        h, w = pair(config.image_size)
        return Layout(config.num_hidden_layers, config.num_frames // t, (h // ph) * (w // pw))

    # VivitImageProcessor / VivitVideoProcessor: pixels * (1 / 127.5) - 1, then (x - 0.5) / 0.5
    processor_defaults = dict(image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), do_rescale=True,
                              rescale_factor=1 / 127.5, offset=True, do_normalize=True)

    @staticmethod
    def clip_fields(config) -> dict[str, int]:
        t, ph, pw = (int(v) for v in config.tubelet_size)
        return dict(num_frames=config.num_frames, img_size=square(config.image_size, "image_size"),
                    in_chans=config.num_channels, tubelet_size=t, patch_size=square((ph, pw), "tubelet_size[1:]"),
                    num_classes=config.num_labels, depth=config.num_hidden_layers, embed_dim=config.hidden_size,
                    num_heads=config.num_attention_heads)

    @staticmethod
    def patch_embedding(classifier: nn.Module) -> nn.Module:
        return classifier.vivit.embeddings.patch_embeddings

    @staticmethod
    def pruned_forward(model, args, kwargs, stages, method, trace):
        return pruned_forward(model, *args, stages=stages, method=method, trace=trace, **kwargs)


def pruned_forward(model, pixel_values: Tensor | None = None, interpolate_pos_encoding: bool = False,
                   attention_mask: Tensor | None = None, *, stages: tuple[PruneStage, ...], method: str = "sta",
                   trace: TokenTrace | None = None, **kwargs):
    """``VivitModel.forward`` with pruning: same arguments, ``BaseModelOutputWithPooling`` (or tuple) back."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    if pixel_values is None:
        raise ValueError("pixel_values is required")
    if attention_mask is not None:
        raise ValueError("attention_mask is not supported with STA pruning; set sta_r = 0")
    config = model.config
    return_dict = kwargs.pop("return_dict", None)
    return_dict = getattr(config, "return_dict", True) if return_dict is None else return_dict
    want_hidden = bool(option(kwargs.pop("output_hidden_states", None), config, "output_hidden_states"))
    want_attn = bool(option(kwargs.pop("output_attentions", None), config, "output_attentions"))
    eager = want_attn or getattr(config, "_attn_implementation", None) in (None, "eager")
    dropout = config.attention_probs_dropout_prob if model.training else 0.0

    x = model.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)  # B x (1 + T*S) x C
    out = run_layers(model.layers, x, layer_step, stages, method, prefix=Vivit.prefix_tokens, trace=trace,
                     eager=eager, dropout=dropout, output_hidden_states=want_hidden, output_attentions=want_attn)
    sequence = model.layernorm(out.x)
    pooled = model.pooler(sequence) if model.pooler is not None else None
    outputs = BaseModelOutputWithPooling(last_hidden_state=sequence, pooler_output=pooled,
                                         hidden_states=out.hidden_states, attentions=out.attentions)
    return outputs if return_dict else outputs.to_tuple()


def layer_step(layer: nn.Module, x: Tensor, inp: LayerInput) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """One ``VivitLayer`` from its submodules -> (output, head-averaged keys or None, attention weights or None)."""
    h = layer.layernorm_before(x)
    att = layer.attention
    q = heads(att.q_proj(h), att.num_attention_heads)
    k = heads(att.k_proj(h), att.num_attention_heads)
    v = heads(att.v_proj(h), att.num_attention_heads)
    context, weights = attention(q, k, v, inp, att.scaling)
    x = layer.dropout(att.o_proj(context)) + x
    x = layer.dropout(layer.mlp(layer.layernorm_after(x))) + x
    return x, (k.mean(1) if inp.need_keys else None), weights


class _STAVivitModel(PatchedModel):
    """Mixed in before transformers' ``VivitModel`` by :func:`sta.patch_hf`."""

    _sta_family = Vivit


class _STAVivitClassifier(PatchedClassifier):
    """Mixed in before ``VivitForVideoClassification``: ``sta_r`` lives on its ``vivit``."""

    _sta_family = Vivit


Vivit.model_mixin = _STAVivitModel
Vivit.classifier_mixin = _STAVivitClassifier
