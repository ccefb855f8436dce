"""STA on Hugging Face ``transformers`` video models, patched in place.

Supported: ``VideoMAEModel`` / ``VideoMAEForVideoClassification``,
``VivitModel`` / ``VivitForVideoClassification`` and ``VJEPA2Model`` /
``VJEPA2ForVideoClassification``. This module dispatches on the model's class;
each family lives in its own module (:mod:`sta.adapters.videomae`,
:mod:`sta.adapters.vivit`, :mod:`sta.adapters.vjepa2`) and all share one
pruning loop (:mod:`sta.adapters.loop`).

.. code-block:: python

    from transformers import VideoMAEForVideoClassification
    import sta

    model = VideoMAEForVideoClassification.from_pretrained("path/to/dir").eval()
    sta.patch_hf(model, r=64)                 # same object, now prunes with STA
    logits = model(pixel_values).logits       # pixel_values: B x T x C x H x W, as HF takes them
    model.r = (64, 32, 16)                    # one r per stage; validated on assignment
    model.method = "tome"                     # any of sta.core.methods.METHODS, at STA's token counts
    model.set_pruning(r=32, method="sta")     # both at once, checked together
    with model.pruning(r=0):                  # HF's own forward inside: exactly the original outputs
        plain = model(pixel_values).logits
    out, trace = sta.adapters.hf.forward_with_trace(model, pixel_values)
    trace.positions[2]                        # B x L_2 original positions kept after stage 3

The names are our models' (:class:`sta.core.contract.ClipClassifier`): ``r``,
``method``, ``stages``, ``set_pruning`` and ``pruning()``, on the classifier and
on its bare model (0.3's ``sta_r``, ``sta_method``, ``sta_stages`` and ``set_sta`` are
gone in 0.4, as announced).

How it works: :func:`patch_hf` gives the bare model (``model.videomae`` /
``model.vivit`` / ``model.vjepa2`` of a classifier) a subclass of its own class
with the same name, module and qualified name (so ``save_pretrained`` still
writes the original architecture and transformers' output hooks keep working).
Its ``forward`` calls HF's original one while ``r`` is 0; otherwise it runs the
shared loop over HF's submodules (embeddings, then each layer rebuilt from its
own norms, projections and MLP) and reduces the patch tokens after the three
stage layers with the core's reducer (``sta.core.methods.METHODS[method]``),
exactly as :mod:`sta.models.vit` does. HF's encoder and layer signatures, which
change between releases, are never called. The classifier's own forward
(pooling or CLS / attentive pooler, ``classifier``, ``labels`` -> loss,
``return_dict``) stays HF's and simply sees fewer tokens, so outputs keep their types.

Attention follows ``config._attn_implementation``: ``"eager"`` computes
``softmax(q k^T / sqrt(d)) v`` explicitly (and can return the weights); any other
value (``"sdpa"``, flash, flex) uses :func:`sta.core.attention.attend` (fused SDPA).
``output_attentions=True`` switches one call to the explicit path.

With pruning on, ``output_hidden_states`` returns the embeddings and every
layer's output *after* that layer's pruning (lengths shrink at the three stage
layers). Inputs that index the unpruned sequence (VideoMAE's ``bool_masked_pos``
and ``head_mask``, ViViT's ``attention_mask``, V-JEPA 2's predictor masks) are
refused while ``r`` > 0. The patch is not part of ``save_pretrained``: a model
loaded back with ``from_pretrained`` is plain HF until patched again. Pickling
(``torch.save(model)``, ``copy.deepcopy``) keeps it, r and method included.
"""

from __future__ import annotations

from torch import nn

from sta.adapters.family import Family
from sta.adapters.loop import PatchedClassifier, PatchedModel, forward_with_trace, patch_model
from sta.adapters.videomae import VIDEOMAE
from sta.adapters.vivit import VIVIT
from sta.adapters.vjepa2 import VJEPA2
from sta.core.schedule import RSpec
from sta.utils.optional import require_transformers

__all__ = ["patch_hf", "forward_with_trace", "FAMILIES", "family_for", "PatchedModel", "PatchedClassifier"]

# Every supported family, by config.json model_type.
FAMILIES: dict[str, Family] = {family.model_type: family for family in (VIDEOMAE, VIVIT, VJEPA2)}
SUPPORTED_CLASSES = ", ".join(" / ".join(family.class_names) for family in FAMILIES.values())


def patch_hf(model: nn.Module, r: RSpec = 64, method: str = "sta") -> nn.Module:
    """Make a transformers VideoMAE, ViViT or V-JEPA 2 model (bare or video classifier) prune, in place.

    Returns the same object. ``r`` is one int for every stage or three ints,
    as in :func:`sta.create_model`; ``method`` is a key of
    ``sta.core.methods.METHODS`` (``"sta"``, the paper's, by default).
    ``model.r`` / ``model.method`` read and change them later, and
    ``model.set_pruning(r, method)`` changes both at once (``ValueError`` for values
    that cannot fit, leaving the model as it was); ``with model.pruning(r=...):``
    changes them for a block. Patching a patched model only sets r and method.
    A VideoMAE classifier that reads the first token instead of mean-pooling
    (``use_mean_pooling=False``) is refused for r > 0, since pruning reorders
    tokens; ViViT's CLS token is never pruned.
    """
    require_transformers()
    family, classifier = family_for(model)
    return patch_model(model, family, classifier, r, method)


def family_for(model: nn.Module) -> tuple[Family, bool]:
    """(family, is-a-classifier) of a transformers model; ``TypeError`` for anything else."""
    for family in FAMILIES.values():
        try:
            bare, classifier = family.classes()
        except ImportError:  # an older transformers without this family
            continue
        if isinstance(model, classifier):
            return family, True
        if isinstance(model, bare):
            return family, False
    raise TypeError(f"patch_hf takes a transformers {SUPPORTED_CLASSES}; got {type(model).__name__}")

