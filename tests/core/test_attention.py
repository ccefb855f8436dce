"""The blocked CPU attention used for bf16/fp16 agrees with the fused kernel."""

import pytest
import torch
import torch.nn.functional as F

from sta.core import attention
from sta.core.attention import attend, blocked_attention


@pytest.mark.parametrize("shape", [(1, 2, 40, 8), (3, 4, 97, 16)])
def test_blocked_matches_sdpa_in_float32(shape, monkeypatch):
    monkeypatch.setattr(attention, "SCORES_PER_BLOCK", 2 * shape[1] * shape[2] * 7)  # several uneven blocks
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=gen) for _ in range(3))
    torch.testing.assert_close(blocked_attention(q, k, v), F.scaled_dot_product_attention(q, k, v),
                               rtol=1e-5, atol=1e-5)


def test_bf16_on_cpu_is_close_to_float32():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 64, 16, generator=gen) for _ in range(3))
    out = attend(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), F.scaled_dot_product_attention(q, k, v), rtol=0.05, atol=0.02)


def test_score_bias_matches_sdpa_mask_in_both_kernels(monkeypatch):
    monkeypatch.setattr(attention, "SCORES_PER_BLOCK", 2 * 3 * 50 * 7)
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 3, 50, 8, generator=gen) for _ in range(3))
    bias = torch.rand(2, 1, 1, 50, generator=gen).log()  # ToMe's log-size bias: one value per key
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    torch.testing.assert_close(blocked_attention(q, k, v, bias), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attend(q, k, v, bias), expected)
