"""Files of the two VideoMAE formats: release checkpoints (``.pth``) and Hugging Face directories.

Reading and writing them, and turning one into the other (:func:`convert_checkpoint`,
what ``sta convert`` runs). The key, tensor and config mapping itself is pure and
lives in :mod:`sta.models.hf_mapping`; this module builds the models and does the I/O:

- :func:`hf_model_from_release`: a release state dict -> ``VideoMAEForVideoClassification``;
- :func:`backbone_from_hf`: an HF VideoMAE classifier -> our :class:`~sta.models.vit.VisionTransformer`;
- :func:`load_hf_model` / :func:`read_hf_config` / :func:`load_hf_as_backbone`: a local HF VideoMAE directory;
- :func:`write_hf_preprocessor`, :func:`convert_checkpoint`: writing the other format.

Other Hugging Face families (ViViT, V-JEPA 2) are the adapters' (:mod:`sta.adapters.directory`).
``transformers`` is optional (``pip install "sta-prune[hf]"``): everything that
needs it imports it inside the function, so ``import sta.models.convert`` works without it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

import torch
from torch import Tensor

from sta.core.schedule import RSpec
from sta.errors import InvalidInput
from sta.models.checkpoint import check_state_dict, extract_state_dict, read_checkpoint
from sta.models.hf_mapping import (
    hf_config_from_release,
    hf_to_release,
    infer_release_config,
    release_config_from_hf,
    release_to_hf,
)
from sta.models.vit import MODEL_CONFIGS, VisionTransformer, ViTConfig
from sta.utils.files import first_line, hf_model_type
from sta.utils.optional import require_transformers

__all__ = ["DIRECTIONS", "backbone_from_hf", "check_hf_dir", "convert_checkpoint", "hf_model_from_release",
           "load_hf_as_backbone", "load_hf_model", "read_hf_config", "write_hf_preprocessor"]

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


def backbone_from_hf(hf_model, r: RSpec = 0) -> VisionTransformer:
    """Our :class:`VisionTransformer` (eval mode, float32) with an HF VideoMAE classifier's weights.

    It reproduces the HF model, including HF's ``fc_norm`` eps (1e-5, see :mod:`sta.models.hf_mapping`).
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


# ------------------------------------------------------------------------------------------- HF directories


def load_hf_model(path: str | os.PathLike):
    """A ``VideoMAEForVideoClassification`` from a local directory (never the hub), eval mode; ``ValueError`` naming
    the folder when it is not a VideoMAE directory or does not load whole (:func:`load_hf_classifier`)."""
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
        raise InvalidInput(f"{path}: cannot load the Hugging Face model ({first_line(err)})") from err
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise InvalidInput(f"{path!r} does not hold a complete {classifier_cls.__name__}; missing weights: "
                           f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    # transformers 5.0 up to its fix (PR 48675) read VideoMAE's 4.x layout (separate q_bias / v_bias) as unexpected
    # keys and left the biases at zero, without an error: a model that answers differently. Never run one.
    dropped = sorted(k for k in info.get("unexpected_keys") or [] if k.endswith((".q_bias", ".v_bias")))
    if dropped:
        import transformers

        raise InvalidInput(f"{path}: transformers {transformers.__version__} did not load its attention biases "
                           f"({', '.join(dropped[:4])}{' ...' if len(dropped) > 4 else ''}: the 4.x layout) and would "
                           "run with them at zero; upgrade transformers (pip install -U \"sta-prune[hf]\")")
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
        raise InvalidInput(f"{os.path.join(path, 'config.json')}: not a usable VideoMAE config ({first_line(err)})"
                           ) from err


def check_hf_dir(path: str | os.PathLike) -> str:
    """``path`` if it is a folder with a readable VideoMAE ``config.json``, else a one-line ValueError."""
    hf_model_type(path, ("videomae",))
    return os.fspath(path)


def load_hf_as_backbone(path: str | os.PathLike, r: RSpec = 0) -> VisionTransformer:
    """A local HF VideoMAE classifier directory as our backbone, at strength ``r``."""
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
        raise InvalidInput(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.realpath(src) == os.path.realpath(dst):
        raise InvalidInput(f"{dst!r} is the model being converted: give the converted model another name", param="dst")
    if direction == "auto":
        direction = "to-release" if os.path.isdir(src) else "to-hf"
    require_transformers()
    if direction == "to-hf":
        if os.path.isdir(src):
            raise InvalidInput(f"{src!r} is a directory: direction 'to-hf' converts a release checkpoint file; a "
                               "Hugging Face directory converts with direction 'to-release'")
        _release_file_to_hf(src, dst, num_frames, img_size, num_heads, allow_unsafe)
    else:
        _hf_dir_to_release(src, dst)
    return direction


def _release_file_to_hf(src: str, dst: str, num_frames: int | None, img_size: int | None, num_heads: int | None,
                        allow_unsafe: bool) -> None:
    if os.path.isfile(dst):
        raise InvalidInput(f"{dst!r} is a file: a Hugging Face model is written as a directory", param="dst")
    raw = read_checkpoint(src, allow_unsafe=allow_unsafe)
    state = extract_state_dict(raw)
    saved = raw.get("args") if isinstance(raw, Mapping) else None  # the training run's settings, when recorded
    frames = num_frames or _setting(saved, "num_frames") or 16
    size = img_size or _setting(saved, "input_size", "img_size") or 224
    heads = num_heads or _setting(saved, "num_heads")
    if heads is None and _setting(saved, "model") in MODEL_CONFIGS:
        release = MODEL_CONFIGS[_setting(saved, "model")]
        heads = release["num_heads"] if release["embed_dim"] == state["patch_embed.proj.weight"].shape[0] else None
    cfg = infer_release_config(state, num_frames=int(frames), img_size=int(size), num_heads=heads)
    names = _setting(saved, "class_names")
    labels = dict(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}) if (
        isinstance(names, list) and len(names) == cfg.num_classes) else {}
    hf = hf_model_from_release(state, cfg, **labels)
    _check_same_logits(state, cfg, hf)  # verified before anything is written: a lossless conversion or none
    hf.save_pretrained(dst)
    write_hf_preprocessor(dst, cfg)


def _setting(saved, *names):
    """A training setting from a checkpoint's ``args`` (an argparse Namespace, or a dict), else None."""
    for name in names:
        value = saved.get(name) if isinstance(saved, Mapping) else getattr(saved, name, None)
        if value is not None:
            return value
    return None


def _check_same_logits(state: Mapping[str, Tensor], cfg: ViTConfig, hf) -> None:
    """``InvalidInput`` unless the HF model gives our backbone's logits on a random clip (float tolerance)."""
    ours = VisionTransformer(cfg)
    ours.load_state_dict(dict(state), strict=True)
    clip = torch.randn(1, *cfg.clip_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = ours.eval()(clip), hf(clip.transpose(1, 2)).logits
    if not torch.allclose(want, got, rtol=1e-4, atol=1e-4 * max(1.0, float(want.abs().max()))):
        raise InvalidInput(f"the converted model's logits differ from the checkpoint's (max |diff| "
                           f"{float((want - got).abs().max()):.3g}); nothing was written")


def _hf_dir_to_release(src: str, dst: str) -> None:
    model = load_hf_model(src)
    cfg = release_config_from_hf(model.config)
    names = [n for n, c in MODEL_CONFIGS.items()
             if (c["embed_dim"], c["depth"], c["num_heads"]) == (cfg.embed_dim, cfg.depth, cfg.num_heads)]
    args = argparse.Namespace(num_frames=cfg.num_frames, input_size=cfg.img_size, tubelet_size=cfg.tubelet_size,
                              nb_classes=cfg.num_classes, **({"model": names[0]} if names else {}))
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({"model": hf_to_release(model.state_dict()), "args": args}, dst)
