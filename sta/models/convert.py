"""Conversion between VideoMAE release checkpoints and Hugging Face ``transformers`` VideoMAE.

Both directions are plain renames plus one split / merge, so a round trip is
lossless (every tensor comes back bit for bit):

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

``transformers`` is optional (``pip install "sta-prune[hf]"``): everything that
needs it imports it inside the function, so ``import sta.models.convert`` works without it.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping

import torch
from torch import Tensor

from sta.core.schedule import RSpec
from sta.models.checkpoint import check_state_dict, extract_state_dict, read_checkpoint
from sta.models.vit import MODEL_CONFIGS, VisionTransformer, ViTConfig, sinusoid_table
from sta.utils.files import first_line, hf_model_type
from sta.utils.optional import require_transformers

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
        raise ValueError(f"bias_layout must be 'auto', 'linear' or 'legacy', got {bias_layout!r}")
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
        raise ValueError(f"release keys with no Hugging Face counterpart{hint}: {', '.join(sorted(unknown)[:20])}")
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
        raise ValueError(f"Hugging Face keys with no release counterpart: {', '.join(sorted(unknown)[:20])}")
    for index, parts in sorted(qkv.items()):
        missing = {"query.weight", "key.weight", "value.weight"} - set(parts)
        if missing:
            raise ValueError(f"layer {index} lacks {', '.join(sorted(missing))}")
        out[f"blocks.{index}.attn.qkv.weight"] = torch.cat(
            [parts["query.weight"], parts["key.weight"], parts["value.weight"]], dim=0)
    return out


def _check_zero_key_bias(bias: Tensor, key: str) -> None:
    if bias.is_meta:
        return
    if bool(bias.abs().max() > 0):
        raise ValueError(f"{key}: VideoMAE's key bias is zero by construction; this one is not")


def _check_fixed_pos_embed(value: Tensor) -> None:
    if value.is_meta:
        return
    rows = value.reshape(-1, value.shape[-1]).float()
    if not torch.allclose(rows, sinusoid_table(*rows.shape)[0], atol=1e-4):
        raise ValueError("pos_embed is not the fixed sin-cos table (learned position embeddings?); "
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
        raise ValueError("this Hugging Face VideoMAE does not fit the release backbone: " + "; ".join(problems))
    return ViTConfig(
        embed_dim=hidden, depth=hf_config.num_hidden_layers, num_heads=hf_config.num_attention_heads,
        mlp_ratio=inter / hidden, patch_size=patch, tubelet_size=hf_config.tubelet_size,
        num_frames=hf_config.num_frames, img_size=image, in_chans=hf_config.num_channels,
        num_classes=hf_config.num_labels, norm_eps=hf_config.layer_norm_eps,
    )


def _square(value, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{name} {value!r}: the release backbone needs square images and patches")
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
        raise ValueError(f"not a VideoMAE classifier state dict: no {err.args[0]!r}") from None
    if patch != patch_w:
        raise ValueError(f"non-square patches {patch}x{patch_w} are not supported")
    depth = 1 + max(int(m.group(1)) for m in map(_BLOCK_RE.match, state_dict) if m)
    if num_heads is None:
        known = [c["num_heads"] for c in MODEL_CONFIGS.values() if (c["embed_dim"], c["depth"]) == (embed_dim, depth)]
        num_heads = known[0] if known else embed_dim // 64
        if not known and (embed_dim % 64 or not num_heads):
            raise ValueError(f"cannot infer the number of heads of a {embed_dim}-wide model; pass num_heads")
    return ViTConfig(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=hidden / embed_dim,
                     patch_size=patch, tubelet_size=tubelet, num_frames=num_frames, img_size=img_size,
                     in_chans=in_chans, num_classes=classes)


# -------------------------------------------------------------------------------------------------- models


def hf_model_from_release(state_dict: Mapping[str, Tensor], cfg: ViTConfig | None = None, **config_overrides):
    """A ``VideoMAEForVideoClassification`` (eval mode) holding a release state dict's weights.

    ``cfg`` defaults to :func:`infer_release_config` (16 frames of 224x224);
    ``config_overrides`` go to the ``VideoMAEConfig`` (e.g. ``attn_implementation``).
    """
    require_transformers()
    from transformers import VideoMAEForVideoClassification

    cfg = cfg or infer_release_config(state_dict)
    # release models without fc_norm end with ``norm`` and classify from the first token, as HF does then
    config_overrides.setdefault("use_mean_pooling", "fc_norm.weight" in state_dict)
    model = VideoMAEForVideoClassification(hf_config_from_release(cfg, **config_overrides))
    model.load_state_dict(release_to_hf(state_dict), strict=True)
    return model.eval()


def load_hf_model(path: str | os.PathLike):
    """A ``VideoMAEForVideoClassification`` from a local directory (never the hub), eval mode."""
    require_transformers()
    from transformers import VideoMAEForVideoClassification

    return load_hf_classifier(check_hf_dir(path), VideoMAEForVideoClassification)


def load_hf_classifier(path: str | os.PathLike, classifier_cls):
    """``classifier_cls.from_pretrained(path)`` from a local directory (never the hub), eval mode.

    Raises ``ValueError`` naming the folder when transformers cannot read it
    (truncated weights, a config that does not fit them, ...) or when it lacks
    classifier weights (e.g. a pre-training checkpoint), which ``from_pretrained``
    would silently fill with random values.
    """
    path = os.fspath(path)
    try:
        model, info = classifier_cls.from_pretrained(path, local_files_only=True, output_loading_info=True)
    except Exception as err:  # transformers raises OSError, ValueError, RuntimeError, safetensors errors...
        raise ValueError(f"{path}: cannot load the Hugging Face model ({first_line(err)})") from err
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ValueError(f"{path!r} does not hold a complete {classifier_cls.__name__}; missing weights: "
                         f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    return model.eval()


def read_hf_config(path: str | os.PathLike) -> ViTConfig:
    """The :class:`ViTConfig` of a local HF model directory, reading only its ``config.json``
    (enough for ``sta flops`` on the meta device)."""
    require_transformers()
    from transformers import VideoMAEConfig

    path = check_hf_dir(path)
    try:
        config = VideoMAEConfig.from_pretrained(path, local_files_only=True)
        return release_config_from_hf(config)
    except Exception as err:
        raise ValueError(f"{os.path.join(path, 'config.json')}: not a usable VideoMAE config ({first_line(err)})"
                         ) from err


def check_hf_dir(path: str | os.PathLike) -> str:
    """``path`` if it is a folder with a readable VideoMAE ``config.json``, else a one-line ValueError."""
    hf_model_type(path, ("videomae",))
    return os.fspath(path)


def backbone_from_hf(hf_model, r: RSpec = 0) -> VisionTransformer:
    """Our :class:`VisionTransformer` (eval mode, float32) with an HF VideoMAE classifier's weights.

    It reproduces the HF model, including HF's ``fc_norm`` eps (1e-5, see the module docstring).
    """
    cfg = release_config_from_hf(hf_model.config)
    state = hf_to_release(hf_model.state_dict())
    for i in range(cfg.depth):  # a model built with qkv_bias=False: the same as zero biases
        for name in ("q_bias", "v_bias"):
            state.setdefault(f"blocks.{i}.attn.{name}", torch.zeros(cfg.embed_dim))
    model = VisionTransformer(cfg, r=r)
    check_state_dict(model, state)
    model.load_state_dict(state, strict=True)
    if getattr(hf_model, "fc_norm", None) is not None:
        model.fc_norm.eps = hf_model.fc_norm.eps
    return model.eval()


def load_hf_as_backbone(path: str | os.PathLike, r: RSpec = 0) -> VisionTransformer:
    """``--hf-model PATH``: a local HF VideoMAE classifier directory as our backbone, at strength ``r``."""
    return backbone_from_hf(load_hf_model(path), r=r)


# ----------------------------------------------------------------------------------------------------- files


def write_hf_preprocessor(path: str, cfg: ViTConfig) -> None:
    """``preprocessor_config.json`` for a converted release model: its ImageNet mean/std and sizes.

    Without it a loader falls back to ``VideoMAEImageProcessor``'s defaults (mean and std 0.5), which
    release weights were not trained with.
    """
    from transformers import VideoMAEImageProcessor

    VideoMAEImageProcessor(image_mean=list(cfg.mean), image_std=list(cfg.std),
                           size={"shortest_edge": cfg.img_size},
                           crop_size={"height": cfg.img_size, "width": cfg.img_size}).save_pretrained(path)


DIRECTIONS = ("auto", "to-hf", "to-release")


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    direction: str = "auto",
    num_frames: int | None = None,
    img_size: int | None = None,
    num_heads: int | None = None,
    allow_unsafe: bool = False,
) -> str:
    """Convert one model between the two formats; returns the direction taken.

    ``to-hf``: a release ``.pth`` (``model`` / ``module`` / bare) -> an HF directory
    written with ``save_pretrained``. Sizes come from the weights; frames, image
    size and (for non-release widths) heads come from the arguments, else from
    the file's saved training ``args``, else 16 / 224 / the release size.
    ``to-release``: an HF directory -> ``{'model': state_dict, 'args': Namespace(...)}``
    (the ``args`` record frames, input size and classes for the way back).
    ``auto``: a directory converts to release, a file to HF.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    src, dst = os.fspath(src), os.fspath(dst)
    if direction == "auto":
        direction = "to-release" if os.path.isdir(src) else "to-hf"
    require_transformers()
    if direction == "to-hf":
        raw = read_checkpoint(src, allow_unsafe=allow_unsafe)
        state = extract_state_dict(raw)
        saved = raw.get("args") if isinstance(raw, Mapping) else None
        frames = num_frames or getattr(saved, "num_frames", None) or 16
        size = img_size or getattr(saved, "input_size", None) or 224
        heads = num_heads
        if heads is None and getattr(saved, "model", None) in MODEL_CONFIGS:
            heads = MODEL_CONFIGS[saved.model]["num_heads"]
        cfg = infer_release_config(state, num_frames=int(frames), img_size=int(size), num_heads=heads)
        hf_model_from_release(state, cfg).save_pretrained(dst)
        write_hf_preprocessor(dst, cfg)
    else:
        model = load_hf_model(src)
        cfg = release_config_from_hf(model.config)
        names = [n for n, c in MODEL_CONFIGS.items()
                 if (c["embed_dim"], c["depth"], c["num_heads"]) == (cfg.embed_dim, cfg.depth, cfg.num_heads)]
        args = argparse.Namespace(num_frames=cfg.num_frames, input_size=cfg.img_size, tubelet_size=cfg.tubelet_size,
                                  nb_classes=cfg.num_classes, **({"model": names[0]} if names else {}))
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        torch.save({"model": hf_to_release(model.state_dict()), "args": args}, dst)
    return direction
