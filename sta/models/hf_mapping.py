"""Release VideoMAE <-> Hugging Face ``transformers`` VideoMAE: state-dict keys, tensors and configs.

Pure mapping: every function takes and returns state dicts or configs, and
none reads or writes a file (that is :mod:`sta.models.convert`). Both directions
are plain renames plus one split / merge, so a round trip is lossless (every
tensor comes back bit for bit):

==============================  ==========================================================
release (``sta.models.vit``)     ``VideoMAEForVideoClassification`` state dict
==============================  ==========================================================
``patch_embed.proj.*``          ``videomae.embeddings.patch_embeddings.projection.*``
``blocks.N.norm1.*``            ``videomae.encoder.layer.N.layernorm_before.*``
``blocks.N.attn.qkv.weight``    ``...layer.N.attention.attention.{query,key,value}.weight``
``blocks.N.attn.q_bias``        ``...attention.attention.query.bias`` (``.q_bias`` before 5.0)
``blocks.N.attn.v_bias``        ``...attention.attention.value.bias`` (``.v_bias`` before 5.0)
``blocks.N.attn.proj.*``        ``...layer.N.attention.output.dense.*``
``blocks.N.norm2.*``            ``...layer.N.layernorm_after.*``
``blocks.N.mlp.fc1.*``          ``...layer.N.intermediate.dense.*``
``blocks.N.mlp.fc2.*``          ``...layer.N.output.dense.*``
``fc_norm.*``                   ``fc_norm.*``
``head.*``                      ``classifier.*``
``norm.*`` (no mean pooling)    ``videomae.layernorm.*``
==============================  ==========================================================

The key has no bias on either side. The release uses LayerNorm eps 1e-6
everywhere; :func:`hf_config_from_release` sets ``layer_norm_eps=1e-6`` (the
``VideoMAEConfig`` default is 1e-12). One difference no config can remove:
``transformers`` builds the classifier's ``fc_norm`` with PyTorch's default eps
1e-5, so an HF model's logits differ from the release model's by about
``1e-5 / var(pooled features)`` relative, far below anything visible in accuracy.

``transformers`` is optional (``pip install "sta-prune[hf]"``): what needs it
imports it inside the function, so ``import sta.models.hf_mapping`` works without it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from sta.errors import InvalidInput
from sta.models.vit import MODEL_CONFIGS, ViTConfig, sinusoid_table
from sta.utils.optional import require_transformers

__all__ = ["HF_PREFIX", "hf_config_from_release", "hf_to_release", "infer_release_config", "installed_bias_layout",
           "release_config_from_hf", "release_to_hf"]

HF_PREFIX = "videomae."  # where VideoMAEForVideoClassification keeps its VideoMAEModel

# Release key (top level) -> HF key. ``norm`` is the final LayerNorm of release models without mean pooling.
_TOP_KEYS = {
    "patch_embed.proj.weight": "videomae.embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "videomae.embeddings.patch_embeddings.projection.bias",
    "norm.weight": "videomae.layernorm.weight",
    "norm.bias": "videomae.layernorm.bias",
    "fc_norm.weight": "fc_norm.weight",
    "fc_norm.bias": "fc_norm.bias",
    "head.weight": "classifier.weight",
    "head.bias": "classifier.bias",
}
# Release key inside ``blocks.N.`` -> HF key inside ``videomae.encoder.layer.N.`` (qkv and q/v biases apart).
_BLOCK_KEYS = {
    "norm1.weight": "layernorm_before.weight",
    "norm1.bias": "layernorm_before.bias",
    "attn.proj.weight": "attention.output.dense.weight",
    "attn.proj.bias": "attention.output.dense.bias",
    "norm2.weight": "layernorm_after.weight",
    "norm2.bias": "layernorm_after.bias",
    "mlp.fc1.weight": "intermediate.dense.weight",
    "mlp.fc1.bias": "intermediate.dense.bias",
    "mlp.fc2.weight": "output.dense.weight",
    "mlp.fc2.bias": "output.dense.bias",
}
_SELF_ATTN = "attention.attention."
# Where transformers keeps the query / value biases: ``linear`` (>= 5.0: query.bias, value.bias) or
# ``legacy`` (4.x: separate q_bias / v_bias parameters next to bias-free Linear layers).
_BIAS_KEYS = {
    "linear": ("query.bias", "value.bias"),
    "legacy": ("q_bias", "v_bias"),
}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
_LAYER_RE = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")


def installed_bias_layout() -> str:
    """``"linear"`` or ``"legacy"``: where the installed ``transformers`` keeps VideoMAE's q/v biases."""
    require_transformers()
    from transformers import VideoMAEConfig
    from transformers.models.videomae.modeling_videomae import VideoMAESelfAttention

    probe = VideoMAESelfAttention(VideoMAEConfig(hidden_size=4, num_attention_heads=1, qkv_bias=True))
    return "legacy" if getattr(probe, "q_bias", None) is not None else "linear"


# ---------------------------------------------------------------------------------------------- state dicts


def release_to_hf(state_dict: Mapping[str, Tensor], bias_layout: str = "auto") -> dict[str, Tensor]:
    """A VideoMAE release state dict -> a ``VideoMAEForVideoClassification`` state dict.

    ``bias_layout``: ``"linear"`` (transformers >= 5: ``query.bias`` / ``value.bias``),
    ``"legacy"`` (4.x: ``q_bias`` / ``v_bias``) or ``"auto"`` (whatever the installed
    transformers uses; ``"linear"`` when it is not installed). Use
    :func:`extract_state_dict` first on a raw checkpoint (``model`` / ``module`` wrappers).
    A ``pos_embed`` entry equal to the fixed sin-cos table is dropped (HF computes it);
    anything else HF has no place for raises ``ValueError``.
    """
    if bias_layout == "auto":
        try:
            bias_layout = installed_bias_layout()
        except ImportError:
            bias_layout = "linear"
    if bias_layout not in _BIAS_KEYS:
        raise InvalidInput(f"bias_layout must be 'auto', 'linear' or 'legacy', got {bias_layout!r}")
    q_name, v_name = _BIAS_KEYS[bias_layout]
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key in _TOP_KEYS:
            out[_TOP_KEYS[key]] = value
            continue
        if key == "pos_embed":
            _check_fixed_pos_embed(value)
            continue
        match = _BLOCK_RE.match(key)
        if not match:
            unknown.append(key)
            continue
        layer, rest = f"videomae.encoder.layer.{match.group(1)}.", match.group(2)
        attn = layer + _SELF_ATTN
        if rest in _BLOCK_KEYS:
            out[layer + _BLOCK_KEYS[rest]] = value
        elif rest == "attn.qkv.weight":
            q, k, v = value.chunk(3, dim=0)
            # clone: three views of one storage would be refused by safetensors in save_pretrained
            out[attn + "query.weight"], out[attn + "key.weight"], out[attn + "value.weight"] = (
                q.clone(), k.clone(), v.clone())
        elif rest == "attn.q_bias":
            out[attn + q_name] = value
        elif rest == "attn.v_bias":
            out[attn + v_name] = value
        elif rest == "attn.qkv.bias":  # timm-style fused bias: fine as long as the key part is zero
            q, k, v = value.chunk(3, dim=0)
            _check_zero_key_bias(k, key)
            out[attn + q_name], out[attn + v_name] = q.clone(), v.clone()
        else:
            unknown.append(key)
    if unknown:
        hint = ""
        if any(k.startswith(("encoder.", "decoder.")) for k in unknown):
            hint = " (this looks like a pre-training checkpoint; only fine-tuned classifiers convert)"
        raise InvalidInput(f"release keys with no Hugging Face counterpart{hint}: {', '.join(sorted(unknown)[:20])}")
    return out


def hf_to_release(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A ``VideoMAEForVideoClassification`` (or bare ``VideoMAEModel``) state dict -> release keys.

    Accepts either q/v bias layout (``query.bias`` or ``q_bias``). Raises
    ``ValueError`` for keys the release has no place for (e.g. a pre-training
    decoder) and for a non-zero key bias.
    """
    inverse_top = {hf[len(HF_PREFIX):] if hf.startswith(HF_PREFIX) else hf: rel for rel, hf in _TOP_KEYS.items()}
    inverse_block = {hf: rel for rel, hf in _BLOCK_KEYS.items()}
    bias_names = {name: "q" for name, _ in _BIAS_KEYS.values()} | {name: "v" for _, name in _BIAS_KEYS.values()}
    out: dict[str, Tensor] = {}
    qkv: dict[int, dict[str, Tensor]] = {}
    unknown = []
    for full_key, value in state_dict.items():
        key = full_key[len(HF_PREFIX):] if full_key.startswith(HF_PREFIX) else full_key
        if key in inverse_top:
            out[inverse_top[key]] = value
            continue
        if key == "embeddings.position_embeddings":  # fixed table, not a weight (only some versions store it)
            continue
        match = _LAYER_RE.match(key)
        if not match:
            unknown.append(full_key)
            continue
        index, rest = int(match.group(1)), match.group(2)
        if rest in inverse_block:
            out[f"blocks.{index}.{inverse_block[rest]}"] = value
        elif rest.startswith(_SELF_ATTN):
            name = rest[len(_SELF_ATTN):]
            if name in ("query.weight", "key.weight", "value.weight"):
                qkv.setdefault(index, {})[name] = value
            elif name in bias_names:
                out[f"blocks.{index}.attn.{bias_names[name]}_bias"] = value
            elif name == "key.bias":
                _check_zero_key_bias(value, full_key)
            else:
                unknown.append(full_key)
        else:
            unknown.append(full_key)
    if unknown:
        raise InvalidInput(f"Hugging Face keys with no release counterpart: {', '.join(sorted(unknown)[:20])}")
    for index, parts in sorted(qkv.items()):
        missing = {"query.weight", "key.weight", "value.weight"} - set(parts)
        if missing:
            raise InvalidInput(f"layer {index} lacks {', '.join(sorted(missing))}")
        out[f"blocks.{index}.attn.qkv.weight"] = torch.cat(
            [parts["query.weight"], parts["key.weight"], parts["value.weight"]], dim=0)
    return out


def _check_zero_key_bias(bias: Tensor, key: str) -> None:
    if bias.is_meta:
        return
    if bool(bias.abs().max() > 0):
        raise InvalidInput(f"{key}: VideoMAE's key bias is zero by construction; this one is not")


def _check_fixed_pos_embed(value: Tensor) -> None:
    if value.is_meta:
        return
    rows = value.reshape(-1, value.shape[-1]).float()
    if not torch.allclose(rows, sinusoid_table(*rows.shape)[0], atol=1e-4):
        raise InvalidInput("pos_embed is not the fixed sin-cos table (learned position embeddings?); "
                           "Hugging Face VideoMAE only has the fixed one")


# ------------------------------------------------------------------------------------------------- configs


def hf_config_from_release(cfg: ViTConfig, **overrides):
    """The ``transformers.VideoMAEConfig`` of a release model (``overrides`` go to the config,
    e.g. ``attn_implementation="eager"`` or ``id2label=...``)."""
    require_transformers()
    from transformers import VideoMAEConfig

    fields = dict(
        image_size=cfg.img_size, patch_size=cfg.patch_size, num_channels=cfg.in_chans,
        num_frames=cfg.num_frames, tubelet_size=cfg.tubelet_size,
        hidden_size=cfg.embed_dim, num_hidden_layers=cfg.depth, num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.mlp_hidden, hidden_act="gelu",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=cfg.norm_eps, qkv_bias=True, use_mean_pooling=True, num_labels=cfg.num_classes,
    )
    fields.update(overrides)
    return VideoMAEConfig(**fields)


def release_config_from_hf(hf_config) -> ViTConfig:
    """The :class:`ViTConfig` of an HF VideoMAE classifier; ``ValueError`` for what the backbone cannot express."""
    image = _square(hf_config.image_size, "image_size")
    patch = _square(hf_config.patch_size, "patch_size")
    hidden, inter = hf_config.hidden_size, hf_config.intermediate_size
    problems = []
    if hf_config.hidden_act not in ("gelu", "gelu_python"):
        problems.append(f"hidden_act {hf_config.hidden_act!r} (the release uses exact GELU)")
    if not getattr(hf_config, "use_mean_pooling", True):
        problems.append("use_mean_pooling=False (the release classifier mean-pools every token)")
    if int(hidden * (inter / hidden)) != inter:
        problems.append(f"intermediate_size {inter} is not representable as a ratio of hidden_size {hidden}")
    if problems:
        raise InvalidInput("this Hugging Face VideoMAE does not fit the release backbone: " + "; ".join(problems))
    return ViTConfig(
        embed_dim=hidden, depth=hf_config.num_hidden_layers, num_heads=hf_config.num_attention_heads,
        mlp_ratio=inter / hidden, patch_size=patch, tubelet_size=hf_config.tubelet_size,
        num_frames=hf_config.num_frames, img_size=image, in_chans=hf_config.num_channels,
        num_classes=hf_config.num_labels, norm_eps=hf_config.layer_norm_eps,
    )


def _square(value, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise InvalidInput(f"{name} {value!r}: the release backbone needs square images and patches")
        value = value[0]
    return int(value)


def infer_release_config(
    state_dict: Mapping[str, Tensor],
    num_frames: int = 16,
    img_size: int = 224,
    num_heads: int | None = None,
) -> ViTConfig:
    """The :class:`ViTConfig` of a release state dict, from its shapes.

    Width, depth, patch, tubelet, channels, MLP ratio and classes come from the
    weights; frames and image size do not (the position table is fixed, not
    stored), so they are arguments. Heads: ``num_heads`` if given, else the
    release size with this width and depth (S/B/L/H), else width / 64.
    """
    try:
        embed_dim, in_chans, tubelet, patch, patch_w = state_dict["patch_embed.proj.weight"].shape
        classes = state_dict["head.weight"].shape[0]
        hidden = state_dict["blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as err:
        raise InvalidInput(f"not a VideoMAE classifier state dict: no {err.args[0]!r}") from None
    if patch != patch_w:
        raise InvalidInput(f"non-square patches {patch}x{patch_w} are not supported")
    depth = 1 + max(int(m.group(1)) for m in map(_BLOCK_RE.match, state_dict) if m)
    if num_heads is None:
        known = [c["num_heads"] for c in MODEL_CONFIGS.values() if (c["embed_dim"], c["depth"]) == (embed_dim, depth)]
        num_heads = known[0] if known else embed_dim // 64
        if not known and (embed_dim % 64 or not num_heads):
            raise InvalidInput(f"cannot infer the number of heads of a {embed_dim}-wide model; pass num_heads")
    return ViTConfig(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=hidden / embed_dim,
                     patch_size=patch, tubelet_size=tubelet, num_frames=num_frames, img_size=img_size,
                     in_chans=in_chans, num_classes=classes)
