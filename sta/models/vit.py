"""VideoMAE ViT classifier with STA pruning after three blocks.

Parameter names match the VideoMAE release (V1 and V2 share them), so release
checkpoints load with ``strict=True``. Attention runs through
:func:`sta.core.attention.attend` (fused SDPA, or blocked matmuls for bf16 / fp16
on the CPU); STA only needs each pruned block's keys, never the attention matrix.
A method that reads the attention probabilities (``vidtldr``) gets them from an
explicit softmax at its stage blocks only. Pruning itself is
:class:`sta.core.forward.PruningPass`'s. The model honours
:class:`sta.core.contract.ClipClassifier`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sta.core.attention import attend
from sta.core.contract import ClipClassifier, ClipConfig, TokenTrace
from sta.core.forward import PruningPass
from sta.core.methods import METHODS, Needs, check_method
from sta.core.schedule import R, RSpec, build_stages, normalize_r, stage_blocks
from sta.errors import InvalidInput

__all__ = ["MODEL_CONFIGS", "TokenTrace", "ViTConfig", "VisionTransformer", "create_model", "sinusoid_table"]


@dataclass(frozen=True)
class ViTConfig(ClipConfig):
    """The clip and grid fields of :class:`~sta.core.contract.ClipConfig` plus what only our ViT has."""

    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6  # the release uses 1e-6 in every LayerNorm

    @property
    def mlp_hidden(self) -> int:
        """MLP hidden size: ``int(embed_dim * mlp_ratio)`` as the releases compute it (ViT-g: 1408 * 48/11 = 6144).

        A product within 1e-6 of an integer counts as that integer, so a ratio read
        back as ``hidden / embed_dim`` (e.g. from a Hugging Face config) gives the
        same hidden size again instead of one less.
        """
        exact = self.embed_dim * self.mlp_ratio
        return round(exact) if abs(exact - round(exact)) < 1e-6 else int(exact)


# The VideoMAE release's four sizes (ViT-S/B/L/H with 16x16 patches); VideoMAE V2
# releases S and B (distilled) with the same sizes and names, and adds ViT-g: 14x14
# patches (256 tokens per slice at 224), MLP ratio 48/11 (hidden 6144), 40 blocks,
# so STA prunes after blocks 0, 13 and 26. Everything else (q/v biases, LayerNorm
# eps 1e-6, mean pooling + fc_norm, no layer scale, plain softmax attention) is V1's.
MODEL_CONFIGS: dict[str, dict] = {
    "vit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16_224": dict(embed_dim=1024, depth=24, num_heads=16),
    "vit_huge_patch16_224": dict(embed_dim=1280, depth=32, num_heads=16),
    "vit_giant_patch14_224": dict(embed_dim=1408, depth=40, num_heads=16, mlp_ratio=48 / 11, patch_size=14),
}


def sinusoid_table(num_positions: int, dim: int) -> Tensor:
    """Fixed sin-cos position table, ``1 x num_positions x dim`` (as the release computes it, in float64)."""
    pos = np.arange(num_positions, dtype=np.float64)[:, None]
    angles = pos / np.power(10000, 2 * (np.arange(dim) // 2) / dim)
    angles[:, 0::2] = np.sin(angles[:, 0::2])  # even channels: sin
    angles[:, 1::2] = np.cos(angles[:, 1::2])  # odd channels: cos
    return torch.tensor(angles, dtype=torch.float32)[None]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))  # the key bias is fixed at zero
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, return_keys: bool = False, sizes: Tensor | None = None, return_probs: bool = False
                ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """x: ``B x N x C`` -> (``B x N x C``, keys averaged over heads ``B x N x C/heads`` or None,
        attention probabilities ``B x heads x N x N`` float32 without the size bias, or None).

        ``sizes`` (``B x N x 1``, merged-token counts) makes attention size-proportional (ToMe).
        ``return_probs`` computes attention explicitly (its two products cost what the fused kernel's do).
        """
        B, N, C = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).view(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each B x heads x N x head_dim
        score_bias = None if sizes is None else sizes.log().to(q.dtype).view(B, 1, 1, N)
        probs = None
        # Exported with a size bias (vid-TLDR, ToMe), the fused kernel's decomposition hands back a layout that the
        # ONNX exporter then views wrongly ("Cannot view a tensor ..."): such graphs take the explicit products.
        if return_probs or (score_bias is not None and torch.compiler.is_exporting()):
            scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
            probs = scores.float().softmax(dim=-1) if return_probs else None  # a method reads them: no size bias
            weights = probs if score_bias is None else (scores + score_bias).float().softmax(dim=-1)
            out = torch.einsum("bhnm,bhmd->bnhd", weights.to(v.dtype), v).reshape(B, N, C)  # straight to B x N x C
        else:
            out = attend(q, k, v, score_bias).transpose(1, 2).reshape(B, N, C)
        out = self.proj(out)
        return out, (k.mean(1) if return_keys else None), probs


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: Tensor, return_keys: bool = False, sizes: Tensor | None = None, return_probs: bool = False
                ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        attn, keys, probs = self.attn(self.norm1(x), return_keys, sizes, return_probs)
        mid = x + attn  # the MLP's input: Representation Shift scores what the MLP changes
        return mid + self.mlp(self.norm2(mid)), keys, probs, mid


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        kernel = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_chans, cfg.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: Tensor) -> Tensor:
        """``B x 3 x F x H x W`` -> ``B x T*S x C`` in slice-major order."""
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(ClipClassifier, nn.Module):
    """VideoMAE ViT classifier; ``r`` (int or one per stage) sets STA's strength, 0 = no pruning."""

    def __init__(self, cfg: ViTConfig, r: RSpec = 0, method: str = "sta"):
        super().__init__()
        if cfg.img_size % cfg.patch_size or cfg.num_frames % cfg.tubelet_size:
            raise InvalidInput(
                f"img_size {cfg.img_size} must be divisible by patch_size {cfg.patch_size} and num_frames "
                f"{cfg.num_frames} by tubelet_size {cfg.tubelet_size}"
            )
        if cfg.embed_dim % cfg.num_heads:
            raise InvalidInput(f"embed_dim {cfg.embed_dim} is not divisible by num_heads {cfg.num_heads}")
        self.cfg = cfg
        self._method = "sta"
        self.patch_embed = PatchEmbed(cfg)
        num_tokens = cfg.num_slices * cfg.tokens_per_slice
        self.register_buffer("pos_embed", sinusoid_table(num_tokens, cfg.embed_dim), persistent=False)
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_hidden, cfg.norm_eps) for _ in range(cfg.depth)
        )
        self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self._trace_blocks = set(stage_blocks(cfg.depth))
        self.r = r
        self.method = method

    @property
    def r(self) -> R:
        """Tokens dropped per group at each of the three stages."""
        return self._r

    @r.setter
    def r(self, value: RSpec) -> None:
        # Validate now, so a bad r fails at creation / assignment, not mid-evaluation.
        stages = build_stages(self.cfg.depth, self.cfg.num_slices, self.cfg.tokens_per_slice, value)
        check_method(self._method, stages)
        self.stages, self._r = stages, normalize_r(value)

    @property
    def method(self) -> str:
        """Token-reduction method (``sta.core.methods.METHODS``); ``"sta"`` is the default and the paper's."""
        return self._method

    @method.setter
    def method(self, value: str) -> None:
        check_method(value, self.stages)
        self._method = value

    def set_pruning(self, r: RSpec | None = None, method: str | None = None) -> None:
        """Set r and/or the method together: the pair is checked before anything changes, so a ``ValueError``
        leaves the model exactly as it was (0.3 switched to ``sta`` first and stayed there when r failed)."""
        new_r = self._r if r is None else r
        new_method = self._method if method is None else method
        stages = build_stages(self.cfg.depth, self.cfg.num_slices, self.cfg.tokens_per_slice, new_r)
        check_method(new_method, stages)
        self.stages, self._r, self._method = stages, normalize_r(new_r), new_method

    def meta_copy(self) -> VisionTransformer:
        """The same architecture, r and method on the meta device, without copying a weight (for FLOPs)."""
        with torch.device("meta"):
            copy = VisionTransformer(self.cfg, r=self.r, method=self.method)
        return copy.to(next(self.parameters()).dtype)

    def forward_features(self, x: Tensor, trace: TokenTrace | None = None, token_scores: Tensor | None = None
                         ) -> Tensor:
        """``B x 3 x F x H x W`` -> pooled, normalised features ``B x C``."""
        self.check_input(x)
        scores = self.scores_for(x, token_scores)  # first: a scorer may run this model itself
        if self.stages and METHODS[self._method].variable_count and x.shape[0] > 1:
            return self._clip_by_clip(x, trace, scores)
        pruning = PruningPass(self._method, self.stages, x.shape[0], self.cfg.num_tokens, x.device,
                              grid=self.cfg.token_grid, clips=x, scores=scores)
        x = pruning.start(self.patch_embed(x) + self.pos_embed.to(x.dtype))
        for i, block in enumerate(self.blocks):
            need = pruning.needs_at(i)
            out, keys, probs, mid = block(x, return_keys=Needs.KEYS in need, sizes=pruning.state.sizes,
                                          return_probs=Needs.ATTENTION in need)
            x = pruning.after(i, out, keys=keys, attention=probs, mlp_input=mid)
            if trace is not None and i in self._trace_blocks:
                trace.positions.append(pruning.state.positions)
        return self.fc_norm(x.mean(1))

    def _clip_by_clip(self, x: Tensor, trace: TokenTrace | None, scores: Tensor | None) -> Tensor:
        """A method whose token count varies per clip: each clip on its own (packed, never padded into attention)."""
        traces = [TokenTrace() for _ in range(x.shape[0])] if trace is not None else [None] * x.shape[0]
        features = torch.cat([self.forward_features(x[b : b + 1], traces[b],
                                                    scores[b : b + 1] if scores is not None else None)
                              for b in range(x.shape[0])])
        if trace is not None:
            trace.positions.extend(TokenTrace.stack(traces).positions)
        return features

    def forward(self, x: Tensor, return_trace: bool = False, token_scores: Tensor | None = None
                ) -> Tensor | tuple[Tensor, TokenTrace]:
        """Logits ``B x num_classes``; with ``return_trace=True`` also a :class:`TokenTrace`.

        ``token_scores``: ``B x N`` per-position scores for ``oracle`` (ignored by other methods).
        """
        trace = TokenTrace() if return_trace else None
        logits = self.head(self.forward_features(x, trace, token_scores))
        return (logits, trace) if return_trace else logits


def create_model(
    name: str,
    num_classes: int = 400,
    num_frames: int = 16,
    img_size: int = 224,
    tubelet_size: int = 2,
    r: RSpec = 0,
    method: str = "sta",
    **overrides,
) -> VisionTransformer:
    """A VideoMAE ViT by release name, e.g. ``create_model("vit_base_patch16_224", r=64)``.

    Names: ``vit_{small,base,large,huge}_patch16_224`` (VideoMAE; V2's distilled
    S and B are the same sizes) and ``vit_giant_patch14_224`` (VideoMAE V2 ViT-g).

    ``overrides`` set any other :class:`ViTConfig` field (``patch_size``,
    ``embed_dim``, ``depth``, ``num_heads``, ...), e.g. for tiny test models.
    """
    if name not in MODEL_CONFIGS:
        raise InvalidInput(f"unknown model {name!r}; choose one of {', '.join(MODEL_CONFIGS)}")
    cfg = ViTConfig(
        num_classes=num_classes, num_frames=num_frames, img_size=img_size, tubelet_size=tubelet_size,
        **{**MODEL_CONFIGS[name], **overrides},
    )
    return VisionTransformer(cfg, r=r, method=method)
