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

from sta.adapters.family import Family, Grid, pair
from sta.adapters.loop import LayerInput, LayerOutput, attention, begin_call, heads
from sta.core.contract import TokenTrace
from sta.core.schedule import PruneStage
from sta.errors import InvalidInput

CLS_TOKENS = 1  # the CLS token before the patch tokens


def grid(config) -> Grid:
    t, ph, pw = (int(v) for v in config.tubelet_size)
    return Grid(config.num_frames, t, pair(config.image_size), (ph, pw), config.num_channels,
                patch_name="tubelet_size[1:]")


def pruned_forward(model, pixel_values: Tensor | None = None, interpolate_pos_encoding: bool = False,
                   attention_mask: Tensor | None = None, *, stages: tuple[PruneStage, ...], method: str = "sta",
                   trace: TokenTrace | None = None, scores: Tensor | None = None, **kwargs):
    """``VivitModel.forward`` with pruning: same arguments, ``BaseModelOutputWithPooling`` (or tuple) back."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    if pixel_values is None:
        raise InvalidInput("pixel_values is required")
    if attention_mask is not None:
        raise InvalidInput("attention_mask is not supported with STA pruning; set r = 0")
    call = begin_call(model, kwargs, stages, method, trace, scores)
    x = model.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)  # B x (1 + T*S) x C
    out = call.run(model.layers, x, layer_step, prefix=CLS_TOKENS, clips=pixel_values.transpose(1, 2))
    sequence = model.layernorm(out.x)
    pooled = model.pooler(sequence) if model.pooler is not None else None
    return call.finish(BaseModelOutputWithPooling(last_hidden_state=sequence, pooler_output=pooled,
                                                  hidden_states=out.hidden_states, attentions=out.attentions))


def layer_step(layer: nn.Module, x: Tensor, inp: LayerInput) -> LayerOutput:
    """One ``VivitLayer`` from its submodules: output, and on request head-averaged keys / attention."""
    h = layer.layernorm_before(x)
    att = layer.attention
    q = heads(att.q_proj(h), att.num_attention_heads)
    k = heads(att.k_proj(h), att.num_attention_heads)
    v = heads(att.v_proj(h), att.num_attention_heads)
    context, weights, probs = attention(q, k, v, inp, att.scaling)
    mid = layer.dropout(att.o_proj(context)) + x
    x = layer.dropout(layer.mlp(layer.layernorm_after(mid))) + mid
    return LayerOutput(x, k.mean(1) if inp.need_keys else None, weights, probs, mid)


VIVIT = Family(
    model_type="vivit",
    class_names=("VivitModel", "VivitForVideoClassification"),
    inner_attr="vivit",
    patch_embeddings="vivit.embeddings.patch_embeddings",
    grid=grid,
    pruned_forward=pruned_forward,
    # VivitImageProcessor / VivitVideoProcessor: pixels * (1 / 127.5) - 1, then (x - 0.5) / 0.5
    processor_defaults=dict(image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), do_rescale=True,
                            rescale_factor=1 / 127.5, offset=True, do_normalize=True),
    prefix_tokens=CLS_TOKENS,
)
