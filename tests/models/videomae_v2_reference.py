"""Test-only re-statement of VideoMAE V2's fine-tuning ViT (OpenGVLab/VideoMAEv2, models/modeling_finetune.py).

Written from a reading of that file, not copied: the same parameter names and
shapes, and the inference-time forward spelled out in plain tensor math (no
``nn.Linear`` / ``nn.LayerNorm`` calls, no ``scaled_dot_product_attention``):

- tubelet embedding: a Conv3d with kernel = stride = (tubelet, patch, patch);
- a fixed sin-cos table over all tokens, added once (built here in float64);
- ``depth`` pre-norm blocks, LayerNorm eps 1e-6, MLP hidden ``int(dim * mlp_ratio)``
  with exact (erf) GELU; qkv from one bias-free weight plus ``q_bias`` / ``v_bias``;
- attention: softmax(q k^T * head_dim^-0.5) v, or with ``cos_attn`` softmax of the
  cosine of q and k times exp(min(scale, log 100)) with a learned per-head ``scale``;
- optional layer scale: each branch times a learned per-channel ``gamma_1`` / ``gamma_2``;
- head: mean over tokens -> ``fc_norm`` -> linear (``use_mean_pooling``), else
  ``norm`` of the first token -> linear.

Dropout, drop path and head dropout are identity at inference and left out.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

EPS = 1e-6


def position_table(num_positions: int, dim: int) -> Tensor:
    """``1 x N x dim``: channel j of position p is sin (even j) / cos (odd j) of p / 10000^(2 (j // 2) / dim)."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    exponent = 2 * torch.div(j, 2, rounding_mode="floor") / dim
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), exponent)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)[None]


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + EPS) * weight + bias


def gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def softmax(x: Tensor) -> Tensor:
    e = torch.exp(x - x.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


class _Lin(nn.Module):
    """Holds ``weight`` (and ``bias``) under the release names; applied as x @ W^T + b."""

    def __init__(self, fan_in: int, fan_out: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(fan_out, fan_in))
        self.bias = nn.Parameter(torch.zeros(fan_out)) if bias else None

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        b = self.bias if bias is None else bias
        return x @ self.weight.T + (0 if b is None else b)


class _Norm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.weight, self.bias)


class _Attn(nn.Module):
    def __init__(self, dim: int, heads: int, cos_attn: bool):
        super().__init__()
        self.heads, self.cos_attn = heads, cos_attn
        self.qkv = _Lin(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        if cos_attn:  # log of the initial logit scale 10, one per head
            self.scale = nn.Parameter(torch.full((heads, 1, 1), math.log(10.0)))
        self.proj = _Lin(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        d = C // self.heads
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = self.qkv(x, bias).reshape(B, N, 3, self.heads, d)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # B x heads x N x d
        if self.cos_attn:
            q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            logits = (q @ k.transpose(-1, -2)) * torch.exp(self.scale.clamp(max=math.log(100.0)))
        else:
            logits = (q * d**-0.5) @ k.transpose(-1, -2)
        out = softmax(logits) @ v
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = _Lin(dim, hidden), _Lin(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, init_values: float, cos_attn: bool):
        super().__init__()
        self.norm1, self.attn = _Norm(dim), _Attn(dim, heads, cos_attn)
        self.norm2, self.mlp = _Norm(dim), _Mlp(dim, int(dim * mlp_ratio))
        if init_values > 0:
            self.gamma_1 = nn.Parameter(torch.full((dim,), init_values))
            self.gamma_2 = nn.Parameter(torch.full((dim,), init_values))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: Tensor) -> Tensor:
        a = self.attn(self.norm1(x))
        x = x + (a if self.gamma_1 is None else self.gamma_1 * a)
        m = self.mlp(self.norm2(x))
        return x + (m if self.gamma_2 is None else self.gamma_2 * m)


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int, tubelet: int, chans: int = 3):
        super().__init__()
        self.proj = nn.Module()
        self.proj.weight = nn.Parameter(torch.zeros(dim, chans, tubelet, patch, patch))
        self.proj.bias = nn.Parameter(torch.zeros(dim))
        self.patch, self.tubelet = patch, tubelet

    def forward(self, x: Tensor) -> Tensor:
        """``B x 3 x F x H x W`` -> ``B x (F/t * H/p * W/p) x dim``: each tubelet flattened, times the kernel."""
        B, C, F, H, W = x.shape
        t, p = self.tubelet, self.patch
        cubes = x.reshape(B, C, F // t, t, H // p, p, W // p, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
        cubes = cubes.reshape(B, (F // t) * (H // p) * (W // p), C * t * p * p)
        return cubes @ self.proj.weight.reshape(self.proj.weight.shape[0], -1).T + self.proj.bias


class V2VisionTransformer(nn.Module):
    """VideoMAE V2's classifier ViT at inference; ``vit_giant_patch14_224`` is
    ``V2VisionTransformer(1408, 40, 16, 48 / 11, patch=14)``."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, *, patch: int = 16,
                 tubelet: int = 2, frames: int = 16, img: int = 224, num_classes: int = 400,
                 init_values: float = 0.0, cos_attn: bool = False, use_mean_pooling: bool = True):
        super().__init__()
        self.patch_embed = _PatchEmbed(dim, patch, tubelet)
        self.register_buffer("pos_table", position_table((frames // tubelet) * (img // patch) ** 2, dim),
                             persistent=False)
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_ratio, init_values, cos_attn) for _ in range(depth))
        self.use_mean_pooling = use_mean_pooling
        if use_mean_pooling:
            self.fc_norm = _Norm(dim)
        else:
            self.norm = _Norm(dim)
        self.head = _Lin(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x) + self.pos_table
        for block in self.blocks:
            x = block(x)
        pooled = self.fc_norm(x.mean(1)) if self.use_mean_pooling else self.norm(x[:, 0])
        return self.head(pooled)
