"""STA on Hugging Face ``VJEPA2Model`` / ``VJEPA2ForVideoClassification`` (see :mod:`sta.adapters.hf`).

Layout: no class token and no absolute position embedding; the input
``B x F x C x H x W`` becomes ``T = F / tubelet_size`` slices of
``S = (crop_size / patch_size)^2`` tokens in slice-major order (patch 16, tubelet 2;
crop 256 for ViT-L, 384 for ViT-g). STA's groups are built from the config's
``frames_per_clip`` and ``crop_size``; an input that gives another token count is
refused while pruning.

Positions: every layer applies a 3D rotary embedding (frame, row, column) to its
queries and keys, computed from token ids by ``VJEPA2RopeAttention.get_position_ids``;
the layer accepts those ids as ``position_mask``. Pruning therefore carries the
**original** position (``slice * S + spatial``) of every kept token and hands
them to every later layer's rotary embedding (a token merged by ToMe takes its
destination token's position), so a kept token is rotated exactly as in the
unpruned model.

Similarity: STA's feature for a token is the stage layer's key **before** the
rotary embedding (the ``key`` projection of ``norm1``'s output, bias included),
averaged over heads and L2-normalised, i.e. content, not position: rotated keys
of the same content at two positions would look dissimilar, and STA's temporal
accumulation compares tokens across slices.

One layer, from its submodules as ``VJEPA2Layer`` runs them: ``norm1`` ->
``query`` / ``key`` / ``value`` -> rotary embedding on q and k -> attention ->
``proj`` -> ``drop_path`` -> residual -> ``norm2`` -> ``mlp`` -> ``drop_path`` ->
residual; the encoder ends with ``layernorm``. The classifier's attentive pooler
takes any number of tokens, so its forward stays HF's. The predictor (a
pre-training component that indexes the unpruned sequence) is not run while
pruning: a bare ``VJEPA2Model`` needs ``skip_predictor=True`` (as the classifier
passes), and ``context_mask`` / ``target_mask`` are refused.
"""

from __future__ import annotations

from torch import Tensor, nn

from sta.adapters.family import Family, Grid, pair
from sta.adapters.loop import LayerInput, LayerOutput, attention, begin_call, heads
from sta.core.contract import TokenTrace
from sta.core.schedule import PruneStage
from sta.errors import InvalidInput


def grid(config) -> Grid:
    return Grid(config.frames_per_clip, config.tubelet_size, pair(config.crop_size), pair(config.patch_size),
                config.in_chans, image_name="crop_size")


def pruned_forward(model, pixel_values_videos: Tensor | None = None, context_mask=None, target_mask=None,
                   skip_predictor: bool = False, *, stages: tuple[PruneStage, ...], method: str = "sta",
                   trace: TokenTrace | None = None, scores: Tensor | None = None, **kwargs):
    """``VJEPA2Model.forward`` with pruning (encoder only): ``VJEPA2WithMaskedInputModelOutput`` (or tuple) back."""
    from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2WithMaskedInputModelOutput

    if pixel_values_videos is None:
        raise InvalidInput("You have to specify pixel_values_videos")
    if context_mask is not None or target_mask is not None:
        raise InvalidInput("context_mask / target_mask index the unpruned sequence: not supported with STA pruning; "
                           "set r = 0")
    if not skip_predictor:
        raise InvalidInput("STA pruning runs the V-JEPA 2 encoder only: call with skip_predictor=True (as "
                           "VJEPA2ForVideoClassification does), or set r = 0 to run the predictor")
    call = begin_call(model, kwargs, stages, method, trace, scores)
    encoder = model.encoder
    x = encoder.embeddings(pixel_values_videos)  # B x T*S x C, nothing added
    out = call.run(encoder.layer, x, layer_step, clips=pixel_values_videos.transpose(1, 2))
    sequence = encoder.layernorm(out.x)
    return call.finish(VJEPA2WithMaskedInputModelOutput(
        last_hidden_state=sequence,
        masked_hidden_state=sequence,  # HF's default context mask keeps every (live) token
        hidden_states=out.hidden_states, attentions=out.attentions, predictor_output=None))


def layer_step(layer: nn.Module, x: Tensor, inp: LayerInput) -> LayerOutput:
    """One ``VJEPA2Layer`` from its submodules, rotating q / k at the live tokens' original positions.

    On request: head-averaged keys *before* the rotary embedding, attention weights / probabilities.
    """
    h = layer.norm1(x)
    att = layer.attention
    q = heads(att.query(h), att.num_attention_heads)
    k = heads(att.key(h), att.num_attention_heads)
    v = heads(att.value(h), att.num_attention_heads)
    keys = k.mean(1) if inp.need_keys else None  # content keys, before RoPE
    pos_ids = att.get_position_ids(h, masks=inp.positions)  # frame / row / column of each original position
    k = att.apply_rotary_embeddings(k, pos_ids)
    q = att.apply_rotary_embeddings(q, pos_ids)
    context, weights, probs = attention(q, k, v, inp, att.scaling)
    mid = layer.drop_path(att.proj(context)) + x
    x = layer.drop_path(layer.mlp(layer.norm2(mid))) + mid
    return LayerOutput(x, keys, weights, probs, mid)


VJEPA2 = Family(
    model_type="vjepa2",
    class_names=("VJEPA2Model", "VJEPA2ForVideoClassification"),
    inner_attr="vjepa2",
    patch_embeddings="vjepa2.encoder.embeddings.patch_embeddings",
    grid=grid,
    pruned_forward=pruned_forward,
    # VJEPA2VideoProcessor: pixels / 255, then ImageNet's mean and std
    processor_defaults=dict(image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225), do_rescale=True,
                            rescale_factor=1 / 255, do_normalize=True),
)
