"""STA on Hugging Face ``VideoMAEModel`` / ``VideoMAEForVideoClassification`` (see :mod:`sta.adapters.hf`).

Layout: ``T = num_frames / tubelet_size`` slices of ``S = (image_size / patch_size)^2``
tokens, no class token, a fixed sin-cos table added once by the embeddings.
One layer, from its submodules as ``VideoMAELayer`` runs them: ``layernorm_before``
-> q / k / v from ``query`` / ``key`` / ``value`` (the key has no bias; transformers
4.x kept the q / v biases in separate ``q_bias`` / ``v_bias``) -> attention ->
``attention.output`` -> residual -> ``layernorm_after`` -> ``intermediate`` ->
``output`` with its residual. STA's similarity uses the keys averaged over heads,
as the release does. The classifier's own forward (mean pooling, ``fc_norm``,
``classifier``, loss) stays HF's and simply sees fewer tokens; a classifier that
reads the first token (``use_mean_pooling=False``) is refused for r > 0.
``bool_masked_pos`` and ``head_mask`` are refused while pruning.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sta.adapters.family import Family, Grid, pair
from sta.adapters.loop import LayerInput, LayerOutput, attention, begin_call, heads
from sta.core.contract import TokenTrace
from sta.core.schedule import PruneStage
from sta.errors import InvalidInput


def grid(config) -> Grid:
    return Grid(config.num_frames, config.tubelet_size, pair(config.image_size), pair(config.patch_size),
                config.num_channels)


def check_config(config, under_classifier: bool) -> None:
    if under_classifier and not getattr(config, "use_mean_pooling", True):
        raise InvalidInput("STA needs a mean-pooling classifier: this one reads the first token "
                           "(use_mean_pooling=False), which pruning reorders")


def pruned_forward(model, pixel_values: Tensor | None = None, bool_masked_pos: Tensor | None = None, *extra,
                   stages: tuple[PruneStage, ...], method: str = "sta", trace: TokenTrace | None = None,
                   scores: Tensor | None = None, **kwargs):
    """``VideoMAEModel.forward`` with pruning: same arguments, ``BaseModelOutput`` (or tuple) back."""
    from transformers.modeling_outputs import BaseModelOutput

    if pixel_values is None:
        raise InvalidInput("pixel_values is required")
    if bool_masked_pos is not None:
        raise InvalidInput("STA pruning cannot be combined with bool_masked_pos (masked inputs); set r = 0")
    if any(a is not None for a in extra) or kwargs.pop("head_mask", None) is not None:
        raise InvalidInput("head_mask is not supported with STA pruning; set r = 0")
    call = begin_call(model, kwargs, stages, method, trace, scores)
    x = model.embeddings(pixel_values, None)  # patch embeddings + fixed sin-cos table: B x T*S x C
    out = call.run(model.encoder.layer, x, layer_step, clips=pixel_values.transpose(1, 2))
    x = out.x
    if getattr(model, "layernorm", None) is not None:  # models without mean pooling end with a LayerNorm
        x = model.layernorm(x)
    return call.finish(BaseModelOutput(last_hidden_state=x, hidden_states=out.hidden_states,
                                       attentions=out.attentions))


def layer_step(layer: nn.Module, x: Tensor, inp: LayerInput) -> LayerOutput:
    """One ``VideoMAELayer`` from its submodules: output, and on request head-averaged keys / attention."""
    h = layer.layernorm_before(x)
    sa = layer.attention.attention
    # transformers >= 5 keeps the q/v biases in query/value; 4.x in separate q_bias / v_bias parameters.
    q = heads(_project(sa.query, h, getattr(sa, "q_bias", None)), sa.num_attention_heads)
    k = heads(sa.key(h), sa.num_attention_heads)  # VideoMAE's key has no bias
    v = heads(_project(sa.value, h, getattr(sa, "v_bias", None)), sa.num_attention_heads)
    context, weights, probs = attention(q, k, v, inp)
    mid = x + layer.attention.output(context, h)  # output dense (+ dropout); the residual is ours, as in HF's layer
    x = layer.output(layer.intermediate(layer.layernorm_after(mid)), mid)  # MLP with its residual
    return LayerOutput(x, k.mean(1) if inp.need_keys else None, weights, probs, mid)


def _project(linear: nn.Linear, h: Tensor, legacy_bias: Tensor | None) -> Tensor:
    return linear(h) if legacy_bias is None else F.linear(h, linear.weight, legacy_bias)


VIDEOMAE = Family(
    model_type="videomae",
    class_names=("VideoMAEModel", "VideoMAEForVideoClassification"),
    inner_attr="videomae",
    patch_embeddings="videomae.embeddings.patch_embeddings",
    grid=grid,
    pruned_forward=pruned_forward,
    # VideoMAEImageProcessor's defaults (fine-tuned repos usually ship ImageNet's mean / std instead)
    processor_defaults=dict(image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), do_rescale=True,
                            rescale_factor=1 / 255, do_normalize=True),
    check_config=check_config,
    as_backbone=True,
)
