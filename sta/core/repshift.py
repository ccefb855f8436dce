"""Representation Shift (Choi et al., ICCV 2025, arXiv 2508.00367) as plain tensor functions.

A token matters when a layer changes it a lot: its score is the L2 distance
between what the layer gives out and what it took in, ``||F(x_i) - x_i||_2``.
Here the layer is the whole transformer block before the pruning point (block
output minus block input), so only the two hidden states are needed: no
attention map, and fused attention stays in use. The tokens with the largest
shift are kept.

Shapes: ``B`` clips, ``L`` tokens, ``C`` channels.
"""

from __future__ import annotations

from torch import Tensor

from sta.core.select import keep_top


def repshift_scores(block_input: Tensor, block_output: Tensor) -> Tensor:
    """``B x L x C`` input and output of one block -> ``B x L`` float32 ``||output - input||_2`` per token."""
    return (block_output.float() - block_input.float()).norm(dim=-1)


def repshift_keep_indices(block_input: Tensor, block_output: Tensor, k: int, positions: Tensor | None = None
                          ) -> Tensor:
    """Indices (``B x k``, in sequence order) of the ``k`` tokens the block shifted most.

    Exact ties: lowest original position first (``positions``: ``B x L``; None = in position order).
    """
    return keep_top(repshift_scores(block_input, block_output), k, positions)
