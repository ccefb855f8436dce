"""What tells one Hugging Face model family from another: a :class:`Family` value per family.

A family module (``videomae.py``, ``vivit.py``, ``vjepa2.py``) holds only what
differs: one :class:`Family` with its names, its token grid, its processor's
defaults and its pruned forward (plus that forward's layer step). Everything
that is the same for every family is written once, here (reading a config,
validating r and the method, folding a processor into a mean / std) or in
:mod:`sta.adapters.loop` (the pruning loop, attention, the patched classes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from sta.core.methods import check_method
from sta.core.reduction import TokenGrid
from sta.core.schedule import PruneStage, R, RSpec, build_stages, normalize_r
from sta.errors import InvalidInput, MissingDependency

__all__ = ["Family", "Grid", "Layout", "normalization", "pair", "square"]


@dataclass(frozen=True)
class Grid:
    """A config's clip and patch sizes, read in the config's own terms (names for messages)."""

    num_frames: int
    tubelet_size: int  # frames per token
    image_size: tuple[int, int]  # H, W
    patch_size: tuple[int, int]
    in_chans: int
    image_name: str = "image_size"  # the config key(s) the sizes come from
    patch_name: str = "patch_size"


@dataclass(frozen=True)
class Layout:
    """What a config says about the token grid STA works on."""

    depth: int  # transformer layers
    num_slices: int  # T = frames / tubelet
    tokens_per_slice: int  # S = (H / patch) * (W / patch)


@dataclass(frozen=True, eq=False)
class Family:
    """One Hugging Face model family: the values and functions that differ between families.

    ``pruned_forward(model, *args, stages, method, trace, scores, **kwargs)`` is the bare
    model's forward with pruning: HF's arguments, HF's output type.
    """

    model_type: str  # config.json's model_type
    class_names: tuple[str, str]  # (bare model, video classifier) in transformers
    inner_attr: str  # where the classifier keeps its bare model ("videomae", "vivit", "vjepa2")
    patch_embeddings: str  # the classifier's submodule that outputs the B x T*S x C patch embeddings
    grid: Callable[[Any], Grid]  # config -> its clip and patch sizes
    pruned_forward: Callable[..., Any]
    # The processor's defaults, as transformers' processor classes set them (the keys of a
    # preprocessor_config.json): image_mean, image_std, do_rescale, rescale_factor, offset, do_normalize.
    processor_defaults: Mapping[str, Any]
    prefix_tokens: int = 0  # tokens before the patch tokens (ViViT: 1, its CLS), never pruned
    check_config: Callable[[Any, bool], None] | None = None  # (config, under_classifier): ValueError if STA can't
    # A directory of this family loads as our own VisionTransformer (same weights, release code path) rather than
    # through HFVideoClassifier: VideoMAE, whose architecture is the release's.
    as_backbone: bool = False

    def classes(self) -> tuple[type, type]:
        """(bare model class, video classifier class) of the installed transformers (``ImportError`` if absent)."""
        import transformers

        try:
            return tuple(getattr(transformers, name) for name in self.class_names)
        except AttributeError as err:  # an older transformers without this family
            raise MissingDependency(f"this transformers ({transformers.__version__}) has no "
                                    f"{self.class_names[1]}") from err

    def layout(self, config) -> Layout:
        g = self.grid(config)
        (h, w), (ph, pw) = g.image_size, g.patch_size
        return Layout(config.num_hidden_layers, g.num_frames // g.tubelet_size, (h // ph) * (w // pw))

    def token_grid(self, config) -> TokenGrid:
        """The token layout the reduction methods see (RLT reads the tubelet and the patch's height)."""
        g = self.grid(config)
        lay = self.layout(config)
        return TokenGrid(lay.num_slices, lay.tokens_per_slice, g.tubelet_size, g.patch_size[0])

    def clip_fields(self, config) -> dict[str, int]:
        """The classifier's clip and model sizes, the fields of :class:`sta.core.contract.ClipConfig` (but mean /
        std); ``ValueError`` for non-square images or patches."""
        g = self.grid(config)
        return dict(num_frames=g.num_frames, img_size=square(g.image_size, g.image_name), in_chans=g.in_chans,
                    tubelet_size=g.tubelet_size, patch_size=square(g.patch_size, g.patch_name),
                    num_classes=config.num_labels, depth=config.num_hidden_layers, embed_dim=config.hidden_size,
                    num_heads=config.num_attention_heads)

    def patch_embedding(self, classifier: nn.Module) -> nn.Module:
        return classifier.get_submodule(self.patch_embeddings)

    def validate(self, config, r: RSpec, method: str, under_classifier: bool) -> tuple[R, tuple[PruneStage, ...]]:
        """(r per stage, stages) for this config, or ``ValueError`` naming what does not fit."""
        rs = normalize_r(r)
        if not any(rs):
            check_method(method, ())
            return rs, ()
        if self.check_config is not None:
            self.check_config(config, under_classifier)
        lay = self.layout(config)
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
        raise InvalidInput(f"{name} {value!r}: only square frames and patches are supported")
    return h


def normalization(settings: Mapping[str, Any], family: Family) -> tuple[tuple, tuple]:
    """Fold a processor's settings (missing keys: the family's defaults) into a mean / std on [0, 1].

    A processor maps a pixel ``p`` in [0, 255] to ``((p * f - o) - m) / s`` (``f``: rescale
    factor, 1 without rescaling; ``o``: 1 with ViViT's offset, else 0; ``m`` / ``s``: 0 / 1
    without normalisation). With ``u = p / 255`` and ``a = 255 f`` that is
    ``(u - (o + m) / a) / (s / a)``.
    """
    get = {**family.processor_defaults, **{k: v for k, v in settings.items() if v is not None}}.get
    scale = 255 * float(get("rescale_factor", 1 / 255)) if get("do_rescale", True) else 255.0
    offset = 1.0 if get("do_rescale", True) and get("offset", False) else 0.0
    if get("do_normalize", True):
        mean, std = _triple(get("image_mean"), "image_mean"), _triple(get("image_std"), "image_std")
    else:
        mean, std = (0.0,) * 3, (1.0,) * 3
    return (tuple((offset + m) / scale for m in mean), tuple(s / scale for s in std))


def _triple(value, name: str) -> tuple[float, float, float]:
    values = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(values) != 3:
        raise InvalidInput(f"{name} must have 3 values (RGB), got {value!r}")
    return tuple(float(v) for v in values)
