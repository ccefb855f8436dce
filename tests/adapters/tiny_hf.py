"""Tiny random ViViT / V-JEPA 2 models and an independent reference for the pruned forward. No network.

Every tiny model takes 16 frames of 32 x 32 with tubelet 2 and patch 8: T = 8 slices of S = 16 tokens.

The references run HF's own, unpatched layer modules (``layer(...)``, their real
forward) one clip at a time; only the pruning is done here, with explicit math
for the similarity feature (keys from an explicit LayerNorm and key projection,
averaged over heads by ``tests.reference``) and ``tests.reference.reference_prune_stage``
for STA's selection, never ``sta.core.prune``. Other methods are applied through
``sta.core.methods`` itself (their own tests live in ``tests/core``) with inputs built
here by hand: what is checked there is the loop around them (what each method is
handed, prefix tokens, positions, sizes).
"""

from __future__ import annotations

import torch
from transformers import VivitConfig, VivitForVideoClassification, VJEPA2Config, VJEPA2ForVideoClassification

from sta.core.methods import METHODS, Needs, ReductionState, StageInputs
from sta.core.reduction import TokenGrid
from sta.core.schedule import build_stages
from tests.core.clips import moving_patch_clips
from tests.helpers import randomize_
from tests.reference import reference_prune_stage, reference_similarity_feature

FRAMES, SIZE, PATCH, SLICES, SPATIAL = 16, 32, 8, 8, 16


def vivit_config(impl="sdpa", frames=FRAMES, **overrides) -> VivitConfig:
    fields = dict(image_size=SIZE, num_frames=frames, tubelet_size=[2, PATCH, PATCH], hidden_size=32,
                  num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, num_labels=5,
                  attn_implementation=impl)
    return VivitConfig(**{**fields, **overrides})


def vjepa2_config(impl="sdpa", **overrides) -> VJEPA2Config:
    # head_dim 16: the rotary embedding turns 3 x 4 channels and leaves 4 as they are (HF's general case)
    fields = dict(crop_size=SIZE, frames_per_clip=FRAMES, patch_size=PATCH, tubelet_size=2, hidden_size=32,
                  num_hidden_layers=3, num_attention_heads=2, num_pooler_layers=1, pred_hidden_size=16,
                  pred_num_attention_heads=2, pred_num_hidden_layers=1, num_labels=5, attn_implementation=impl)
    return VJEPA2Config(**{**fields, **overrides})


def tiny_vivit(impl="sdpa", seed=0, **overrides) -> VivitForVideoClassification:
    return randomize_(VivitForVideoClassification(vivit_config(impl, **overrides)), seed).eval()


def tiny_vjepa2(impl="sdpa", seed=0, **overrides) -> VJEPA2ForVideoClassification:
    return randomize_(VJEPA2ForVideoClassification(vjepa2_config(impl, **overrides)), seed).eval()


def hf_pixels(batch=2, seed=0, frames=FRAMES) -> torch.Tensor:
    """HF layout: B x F x C x H x W."""
    return torch.randn(batch, frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def moving_pixels(batch=2, seed=0) -> torch.Tensor:
    """HF layout of :func:`tests.core.clips.moving_patch_clips`: a still image with one moving patch per clip."""
    return moving_patch_clips(batch, FRAMES, SIZE, PATCH, 2, seed=seed).transpose(1, 2)


def method_inputs(method: str, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(pixels, token scores or None) for one method's test: one clip for a count that varies per clip, random
    scores for a method that is given them (oracle)."""
    spec = METHODS[method]
    batch = 1 if spec.variable_count else batch
    scores = torch.rand(batch, SLICES * SPATIAL, generator=torch.Generator().manual_seed(seed))
    return moving_pixels(batch, seed), scores if Needs.SCORES in spec.needs else None


# ------------------------------------------------------------------------------------------------ references


def explicit_keys(x: torch.Tensor, norm: torch.nn.LayerNorm, key: torch.nn.Linear, num_heads: int) -> torch.Tensor:
    """``L x C`` layer input -> ``L x heads x d`` keys: explicit LayerNorm, then ``h W_k^T + b_k``."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    h = (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
    k = h @ key.weight.t() + (key.bias if key.bias is not None else 0)
    return k.view(x.shape[0], num_heads, -1)


def vivit_reference(model, pixels: torch.Tensor, r, slices: int = SLICES):
    """(logits, positions[b][k]) of STA on a ViViT classifier, from its unpatched layers; the CLS token stays."""
    inner = model.vivit
    heads = model.config.num_attention_heads
    rs = (r,) * 3 if isinstance(r, int) else tuple(r)
    depth = len(inner.layers)
    blocks = [k * depth // 3 for k in range(3)]
    logits, positions = [], []
    with torch.no_grad():
        for clip in pixels:
            x = inner.embeddings(clip[None])[0]  # (1 + L) x C
            pos = list(range(x.shape[0] - 1))
            after = []
            for i, layer in enumerate(inner.layers):
                m = reference_similarity_feature(explicit_keys(x, layer.layernorm_before, layer.attention.k_proj,
                                                               heads)) if i in blocks else None
                x = layer(x[None], None)[0]  # HF's VivitLayer.forward
                for k in [k for k in range(3) if blocks[k] == i]:
                    keep = reference_prune_stage(m[1:], x[1:], rs[k], slices // 2**k, backward=k == 1)
                    x = torch.cat([x[:1], x[1:][keep]])
                    m = torch.cat([m[:1], m[1:][keep]])
                    pos = [pos[j] for j in keep]
                    after.append(list(pos))
            logits.append(model.classifier(inner.layernorm(x)[0]))
            positions.append(after)
    return torch.stack(logits), positions


def vjepa2_reference(model, pixels: torch.Tensor, r, carry_positions: bool = True):
    """(logits, positions[b][k]) of STA on a V-JEPA 2 classifier from its unpatched layers, each called with the
    kept tokens' original positions as ``position_mask`` (or, with ``carry_positions=False``, with none)."""
    encoder = model.vjepa2.encoder
    heads = model.config.num_attention_heads
    rs = (r,) * 3 if isinstance(r, int) else tuple(r)
    depth = len(encoder.layer)
    blocks = [k * depth // 3 for k in range(3)]
    logits, positions = [], []
    with torch.no_grad():
        for clip in pixels:
            x = encoder.embeddings(clip[None])[0]  # L x C
            pos = list(range(x.shape[0]))
            after = []
            for i, layer in enumerate(encoder.layer):
                m = reference_similarity_feature(explicit_keys(x, layer.norm1, layer.attention.key,
                                                               heads)) if i in blocks else None  # before RoPE
                mask = torch.tensor(pos)[None] if carry_positions else None
                x = layer(x[None], position_mask=mask)[0][0]  # HF's VJEPA2Layer.forward
                for k in [k for k in range(3) if blocks[k] == i]:
                    keep = reference_prune_stage(m, x, rs[k], SLICES // 2**k, backward=k == 1)
                    x, m = x[keep], m[keep]
                    pos = [pos[j] for j in keep]
                    after.append(list(pos))
            seq = encoder.layernorm(x)[None]
            logits.append(model.classifier(model.pooler(seq))[0])
            positions.append(after)
    return torch.stack(logits), positions


def explicit_probs(x: torch.Tensor, layer, positions: torch.Tensor, vivit: bool, heads: int) -> torch.Tensor:
    """``B x N x C`` layer input -> ``B x heads x N x N`` float32 attention probabilities without any size bias,
    from the layer's own projections (V-JEPA 2: rotated at the live tokens' original positions)."""
    if vivit:
        h = layer.layernorm_before(x)
        att = layer.attention
        q, k = att.q_proj(h), att.k_proj(h)
    else:
        h = layer.norm1(x)
        att = layer.attention
        q, k = att.query(h), att.key(h)
    B, N, _ = x.shape
    q, k = (t.view(B, N, heads, -1).transpose(1, 2) for t in (q, k))
    if not vivit:
        ids = att.get_position_ids(h, masks=positions)
        q, k = att.apply_rotary_embeddings(q, ids), att.apply_rotary_embeddings(k, ids)
    return (q @ k.transpose(-1, -2) * att.scaling).float().softmax(dim=-1)


def _layout(model):
    """(vivit?, prefix, embeddings, layers, key_of, (depth, T, S), grid) of a tiny classifier."""
    config = model.config
    if hasattr(model, "vivit"):
        t, ph, _ = config.tubelet_size
        lay = (config.num_hidden_layers, config.num_frames // t, (config.image_size // ph) ** 2)
        return (True, 1, model.vivit.embeddings, model.vivit.layers,
                lambda layer: (layer.layernorm_before, layer.attention.k_proj), lay, TokenGrid(*lay[1:], t, ph))
    encoder = model.vjepa2.encoder
    lay = (config.num_hidden_layers, config.frames_per_clip // config.tubelet_size,
           (config.crop_size // config.patch_size) ** 2)
    return (False, 0, encoder.embeddings, encoder.layer, lambda layer: (layer.norm1, layer.attention.key), lay,
            TokenGrid(*lay[1:], config.tubelet_size, config.patch_size))


def method_reference(model, pixels: torch.Tensor, r, method: str, scores: torch.Tensor | None = None):
    """Any method on a whole batch through HF's unpatched layers: (logits, [B x L_k positions]).

    Each method's inputs are built here by hand (keys from an explicit LayerNorm and
    projection, attention probabilities from the layer's own projections, the layer's
    input, the pixel clips) and handed to the core's reducer (:mod:`sta.core.methods`).
    ViViT: CLS kept first, merged sizes given to the layers as an additive ``attention_mask``
    (``log size``, 0 for the CLS token). V-JEPA 2 (merging methods excluded: its layers
    take no mask): the live tokens' original positions as ``position_mask``.
    """
    vivit, prefix, embeddings, layers, key_of, lay, grid = _layout(model)
    spec = METHODS[method]
    stage_list = build_stages(*lay, r)
    stages = {s.block: s for s in stage_list}
    heads = model.config.num_attention_heads
    with torch.no_grad():
        x = embeddings(pixels)
        B, N, _ = x.shape
        state = ReductionState(torch.arange(N - prefix).expand(B, -1), grid, clips=pixels.transpose(1, 2),
                               scores=scores)
        if spec.entry is not None:
            x = torch.cat([x[:, :prefix], spec.entry(x[:, prefix:], state, stage_list)], dim=1)
        traced = []
        for i, layer in enumerate(layers):
            norm, key = key_of(layer)
            keys = torch.stack([explicit_keys(xb, norm, key, heads).mean(1) for xb in x]) if i in stages else None
            probs = explicit_probs(x, layer, state.positions, vivit, heads) if i in stages else None
            seen = []  # HF's own layer, its MLP's input caught at its second LayerNorm (Representation Shift's)
            hook = (layer.layernorm_after if vivit else layer.norm2).register_forward_pre_hook(
                lambda _, args, seen=seen: seen.append(args[0]))
            if vivit:
                mask = None
                if state.sizes is not None:
                    log_sizes = torch.cat([torch.zeros(B, 1), state.sizes[..., 0].log()], dim=1)
                    mask = log_sizes[:, None, None, :]
                x = layer(x, mask)
            else:
                x = layer(x, position_mask=state.positions)[0]
            hook.remove()
            if i in stages:
                inp = StageInputs(x[:, prefix:], stages[i], stage_list, keys=keys[:, prefix:],
                                  mlp_input=seen[0][:, prefix:], attention=probs[:, :, prefix:])
                x = torch.cat([x[:, :prefix], spec.reduce(inp, state)], dim=1)
            if i in [k * lay[0] // 3 for k in range(3)]:
                traced.append(state.positions)
        if vivit:
            logits = model.classifier(model.vivit.layernorm(x)[:, 0])
        else:
            logits = model.classifier(model.pooler(model.vjepa2.encoder.layernorm(x)))
    return logits, traced


def assert_positions_equal(trace_positions, reference_positions) -> None:
    """Trace tensors (``B x L_k`` per stage) against a per-clip reference (``[b][k]`` lists)."""
    assert len(trace_positions) == 3
    for b, clip in enumerate(reference_positions):
        assert [p[b].tolist() for p in trace_positions] == clip, b


def logit_close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(b.abs().max())))
