"""Multi-head attention kernel choice, shared by every backbone adapter.

``scaled_dot_product_attention`` everywhere, except one measured case: on CPU
in bf16/fp16, PyTorch's fused CPU kernel runs at fp32 speed (about 155 GFLOP/s
on the 2-core AVX-512 machine of ``benchmarks/cpu_speed.py`` while bf16 GEMMs
reach about 420), so there attention is computed as plain batched matmuls over
blocks of queries, sized so one block of scores stays in cache (about 250
GFLOP/s). Scores are then rounded to the working dtype before the softmax, as
in eager bf16 attention elsewhere; fp32 and CUDA always use the fused kernel, and
so do exported and compiled graphs (the per-clip loop would fix their batch size).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

SCORES_PER_BLOCK = 1 << 19  # ~1 MB of bf16 scores per query block: fits the L2 cache of the cores it runs on


_fused_only = False


@contextmanager
def fused_only() -> Iterator[None]:
    """Inside the block, attention always runs the fused kernel, as an exported graph does."""
    global _fused_only
    saved, _fused_only = _fused_only, True
    try:
        yield
    finally:
        _fused_only = saved


def attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
    """Softmax attention, ``q, k, v``: ``B x H x N x d`` -> ``B x H x N x d`` (scale ``d**-0.5``).

    ``bias``, broadcastable to ``B x H x N x N``, is added to the scores before the softmax.
    """
    # Exported or compiled graphs need a batch-free loop; fused_only() lets eager code match them.
    fused = _fused_only or torch.compiler.is_compiling() or torch.compiler.is_exporting()
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and not fused:
        return blocked_attention(q, k, v, bias)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def blocked_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
    """Attention as ``softmax(q k^T / sqrt(d)) v`` over blocks of queries, one clip at a time."""
    B, H, N, d = q.shape
    rows = max(16, SCORES_PER_BLOCK // (H * k.shape[-2]))
    # q, k, v arrive as strided views of one qkv tensor; matmul would copy them for every block.
    q, k, v = (q * d**-0.5).contiguous(), k.contiguous(), v.contiguous()
    clips = []
    for b in range(B):  # per clip, so a block of scores stays small whatever the batch size
        blocks = []
        for start in range(0, N, rows):
            scores = torch.matmul(q[b, :, start : start + rows], k[b].transpose(-1, -2))  # H x rows x N
            if bias is not None:
                clip_bias = bias[b if bias.shape[0] > 1 else 0]
                scores = scores + (clip_bias[..., start : start + rows, :] if clip_bias.shape[-2] > 1 else clip_bias)
            blocks.append(torch.matmul(scores.softmax(dim=-1), v[b]))  # H x rows x d
        clips.append(torch.cat(blocks, dim=1))
    return torch.stack(clips)
