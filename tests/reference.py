"""Slow, independent reference implementation of VideoMAE ViT + STA token pruning.

Written from docs/algorithm.md only, for readability rather
than speed: one clip at a time, one group at a time, explicit math everywhere
(explicit LayerNorm, erf-GELU, softmax(q k^T * scale) v attention, patch
embedding as reshape + matmul).  Everything is computed in float32, except the
sin-cos position table which is built in float64 and then cast to float32.

Public entry points:

- ``reference_forward(state_dict, clip, *, patch_size, tubelet_size, num_heads, r)``
  -> ``(logits, positions)``
- ``reference_prune_stage(m, x, r, num_groups, backward)`` -> kept indices
- ``reference_select_group(m, a, r, prev=None)`` -> ``(kept, carry)``
- ``reference_position_table(num_positions, dim)``

Interpretation choices (where the design doc leaves room) are noted inline and
summarised in ``NOTES`` below.
"""

from __future__ import annotations

import math

import torch

NOTES = """
* "Even/odd positions" in the first visited group means the token's index
  inside the group's current sequence (0..n-1), not its original position.
* Ties are broken by Python's stable `sorted` (earlier index first).
* If several stages fall on the same block (depth < 3), they are applied one
  after the other in k order on that block's output, with the keys of the
  surviving tokens.
* A stage with r == 0 leaves the sequence untouched (no reordering).
"""

LN_EPS = 1e-6


# ---------------------------------------------------------------------------
# small explicit building blocks
# ---------------------------------------------------------------------------


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last dim, biased variance, eps 1e-6."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + LN_EPS) * weight + bias


def _gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU: 0.5 * x * (1 + erf(x / sqrt(2)))."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    shifted = x - x.max(dim=dim, keepdim=True).values
    e = torch.exp(shifted)
    return e / e.sum(dim=dim, keepdim=True)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    y = x @ weight.t()
    if bias is not None:
        y = y + bias
    return y


def reference_position_table(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE fixed sinusoid table: angle = pos / 10000**(2*(j//2)/dim);
    even channels sin, odd channels cos.  Built in float64, returned float32."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    half = torch.div(j, 2, rounding_mode="floor")
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2.0 * half / dim)
    table = torch.empty(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.to(torch.float32)


def _patch_embed(clip: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 patch_size: int, tubelet_size: int) -> torch.Tensor:
    """One clip 3 x F x H x W -> (T*S) x D tokens, slice-major, s = h*Wp + w.
    Equivalent to Conv3d(kernel=stride=(tubelet, p, p)) followed by flatten."""
    C, F, H, W = clip.shape
    p, t = patch_size, tubelet_size
    T, Hp, Wp = F // t, H // p, W // p
    D = weight.shape[0]
    x = clip.reshape(C, T, t, Hp, p, Wp, p)
    # -> T, Hp, Wp, C, t, p, p  (the patch flattened in the conv weight's order)
    x = x.permute(1, 3, 5, 0, 2, 4, 6).reshape(T * Hp * Wp, C * t * p * p)
    return x @ weight.reshape(D, C * t * p * p).t() + bias


# ---------------------------------------------------------------------------
# the transformer block, written out
# ---------------------------------------------------------------------------


def _block_keys(sd: dict, i: int, x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Attention keys of block i for input x (L x D), zero key bias.
    Returns L x num_heads x head_dim."""
    L, D = x.shape
    hd = D // num_heads
    h = _layer_norm(x, sd[f"blocks.{i}.norm1.weight"], sd[f"blocks.{i}.norm1.bias"])
    w_k = sd[f"blocks.{i}.attn.qkv.weight"][D:2 * D]
    k = h @ w_k.t()
    return k.reshape(L, num_heads, hd)


def _block_forward(sd: dict, i: int, x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Pre-norm block: x + Attn(LN1 x); then + MLP(LN2 x).  x: L x D."""
    L, D = x.shape
    hd = D // num_heads
    scale = hd ** -0.5
    pre = f"blocks.{i}."

    h = _layer_norm(x, sd[pre + "norm1.weight"], sd[pre + "norm1.bias"])
    w_qkv = sd[pre + "attn.qkv.weight"]
    q = h @ w_qkv[0:D].t() + sd[pre + "attn.q_bias"]
    k = h @ w_qkv[D:2 * D].t()  # key bias is zero
    v = h @ w_qkv[2 * D:3 * D].t() + sd[pre + "attn.v_bias"]

    head_outputs = []
    for head in range(num_heads):
        qh = q[:, head * hd:(head + 1) * hd]
        kh = k[:, head * hd:(head + 1) * hd]
        vh = v[:, head * hd:(head + 1) * hd]
        attn = _softmax((qh @ kh.t()) * scale, dim=-1)  # L x L, rows sum to 1
        head_outputs.append(attn @ vh)
    o = torch.cat(head_outputs, dim=-1)  # L x D, heads in channel order
    x = x + _linear(o, sd[pre + "attn.proj.weight"], sd[pre + "attn.proj.bias"])

    h = _layer_norm(x, sd[pre + "norm2.weight"], sd[pre + "norm2.bias"])
    h = _gelu(_linear(h, sd[pre + "mlp.fc1.weight"], sd[pre + "mlp.fc1.bias"]))
    h = _linear(h, sd[pre + "mlp.fc2.weight"], sd[pre + "mlp.fc2.bias"])
    return x + h


# ---------------------------------------------------------------------------
# STA selection
# ---------------------------------------------------------------------------


def reference_similarity_feature(keys: torch.Tensor) -> torch.Tensor:
    """keys: L x heads x head_dim -> m: L x head_dim, mean over heads then
    L2-normalised per token."""
    m = keys.mean(dim=1)
    norms = torch.sqrt((m * m).sum(dim=-1, keepdim=True))
    return m / norms


def reference_semantic(a: torch.Tensor) -> torch.Tensor:
    """Per-group min-max of the L1 norms a (1-D, one group).  Zero range -> s = 0."""
    lo = a.min()
    hi = a.max()
    if hi.item() == lo.item():
        return torch.zeros_like(a)
    return (a - lo) / (hi - lo)


def reference_select_group(m: torch.Tensor, a: torch.Tensor, r: int, prev=None):
    """Select the tokens kept in one group.

    m:    n x hd normalised similarity features of the group's tokens (in
          sequence order).
    a:    n L1 norms of the group's tokens in the block output.
    r:    number of tokens to drop.
    prev: None for the first visited group of the stage; otherwise the
          ``carry`` returned by the previous visit: (prev_m, prev_weights),
          prev_weights None meaning "every previous token carries weight 1".

    Returns (kept, carry): kept is the list of local indices (0..n-1) kept,
    in the order they will sit in the sequence; carry is what the next visited
    group is scored against.
    """
    n = m.shape[0]
    assert 0 <= r <= n

    if prev is None:
        # First visited group: bipartite split by index inside the group.
        A = list(range(0, n, 2))
        B = list(range(1, n, 2))
        c = {}
        for ia in A:
            if B:
                c[ia] = max((m[ia] * m[ib]).sum().item() for ib in B)
            else:
                c[ia] = float("-inf")
        A_sorted = sorted(A, key=lambda ia: c[ia])  # ascending c, stable
        reordered = B + A_sorted
        kept = reordered[: n - r]
        carry = (m[reordered], None)  # the whole reordered group, weight 1 each
        return kept, carry

    prev_m, prev_w = prev
    P = m @ prev_m.t()  # n x n_prev, P_ij = <m_i, m_j>
    W = _softmax(P, dim=0)  # softmax over i (current tokens), per column j
    if prev_w is None:
        rho = W.sum(dim=1)
    else:
        rho = (W * prev_w[None, :]).sum(dim=1)
    s = reference_semantic(a)
    sigma = rho * (1.0 - s)
    order = sorted(range(n), key=lambda i: sigma[i].item())  # ascending, stable
    kept = order[: n - r]
    rho_kept = rho[kept]
    carry = (m[kept], rho_kept / rho_kept.sum())
    return kept, carry


def reference_prune_stage(m: torch.Tensor, x: torch.Tensor, r: int, num_groups: int,
                          backward: bool) -> list[int]:
    """One STA stage on one clip.

    m: L x hd normalised similarity features (keys of the pruned block).
    x: L x D output of the pruned block.
    Returns the indices (into the current sequence 0..L-1) of the kept
    tokens, groups concatenated in group order 0..G-1.
    """
    L = x.shape[0]
    if r == 0:
        return list(range(L))
    assert L % num_groups == 0, (L, num_groups)
    n = L // num_groups
    a_all = x.abs().sum(dim=-1)

    visit = list(range(num_groups))
    if backward:
        visit = visit[::-1]

    kept_per_group: dict[int, list[int]] = {}
    carry = None
    for g in visit:
        start = g * n
        m_g = m[start:start + n]
        a_g = a_all[start:start + n]
        kept_local, carry = reference_select_group(m_g, a_g, r, prev=carry)
        kept_per_group[g] = [start + i for i in kept_local]

    result: list[int] = []
    for g in range(num_groups):
        result.extend(kept_per_group[g])
    return result


# ---------------------------------------------------------------------------
# full model
# ---------------------------------------------------------------------------


def _unwrap(state_dict: dict) -> dict:
    for key in ("module", "model"):
        if key in state_dict and isinstance(state_dict[key], dict):
            return state_dict[key]
    return state_dict


def _depth(sd: dict) -> int:
    indices = set()
    for key in sd:
        if key.startswith("blocks."):
            indices.add(int(key.split(".")[1]))
    return len(indices)


def reference_forward(state_dict: dict[str, torch.Tensor], clip: torch.Tensor, *, patch_size: int,
                      tubelet_size: int, num_heads: int,
                      r: tuple[int, int, int]) -> tuple[torch.Tensor, list[list[list[int]]]]:
    """clip: B x 3 x F x H x W float.  Returns (logits B x num_classes,
    positions) where positions[b][k] is the list of original token positions
    (0..T*S-1, slice-major) alive after pruning stage k (k = 0, 1, 2) for clip
    b, in the order the tokens sit in the sequence."""
    sd = {k: v.detach().to(torch.float32) for k, v in _unwrap(state_dict).items()}
    clip = clip.detach().to(torch.float32)
    depth = _depth(sd)
    D = sd["patch_embed.proj.weight"].shape[0]
    assert D % num_heads == 0

    B, C, F, H, W = clip.shape
    T = F // tubelet_size
    S = (H // patch_size) * (W // patch_size)
    pos_table = reference_position_table(T * S, D)

    stage_blocks = [0, depth // 3, 2 * depth // 3]

    all_logits = []
    all_positions = []
    with torch.no_grad():
        for b in range(B):
            x = _patch_embed(clip[b], sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"],
                             patch_size, tubelet_size)
            x = x + pos_table
            positions = list(range(T * S))
            positions_after_stage: list[list[int]] = [None, None, None]  # type: ignore[list-item]

            for i in range(depth):
                stages_here = [k for k in range(3) if stage_blocks[k] == i]
                if stages_here:
                    m = reference_similarity_feature(_block_keys(sd, i, x, num_heads))
                x = _block_forward(sd, i, x, num_heads)
                for k in stages_here:
                    num_groups = T // (2 ** k)
                    assert T % (2 ** k) == 0
                    keep = reference_prune_stage(m, x, r[k], num_groups, backward=(k == 1))
                    x = x[keep]
                    m = m[keep]
                    positions = [positions[j] for j in keep]
                    positions_after_stage[k] = list(positions)

            for k in range(3):
                assert positions_after_stage[k] is not None, "stage block beyond depth"

            pooled = x.mean(dim=0)
            pooled = _layer_norm(pooled, sd["fc_norm.weight"], sd["fc_norm.bias"])
            logits = _linear(pooled, sd["head.weight"], sd["head.bias"])
            all_logits.append(logits)
            all_positions.append(positions_after_stage)

    return torch.stack(all_logits, dim=0), all_positions
