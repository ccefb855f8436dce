"""Representation Shift (Choi et al., ICCV 2025, arXiv 2508.00367) as plain tensor functions.

A token matters when a layer changes it a lot: its score is the L2 distance
between what the layer gives out and what it took in, ``||F(x_i) - x_i||_2``.
The layer is the MLP of the block before the pruning point, as in the paper's
Figure 2 ("the L2 distance between token representations before and after the
MLP layer"): the residual stream after the block's attention against the block's
output, i.e. the norm of the MLP's update. Only hidden states are needed: no
attention map, and fused attention stays in use. The tokens with the largest
shift are kept. (sta-prune 0.3 took the whole block, attention included: on the
bundled easy proxy that scored below random dropping at every r.)

Shapes: ``B`` clips, ``L`` tokens, ``C`` channels.
"""

from __future__ import annotations

from torch import Tensor

from sta.core.select import keep_top


def repshift_scores(layer_input: Tensor, layer_output: Tensor) -> Tensor:
    """``B x L x C`` input and output of the scored layer (the block's MLP, with its residual) -> ``B x L``
    float32 ``||output - input||_2`` per token."""
    return (layer_output.float() - layer_input.float()).norm(dim=-1)


def repshift_keep_indices(layer_input: Tensor, layer_output: Tensor, k: int, positions: Tensor | None = None
                          ) -> Tensor:
    """Indices (``B x k``, in sequence order) of the ``k`` tokens the layer shifted most.

    Exact ties: lowest original position first (``positions``: ``B x L``; None = in position order).
    """
    return keep_top(repshift_scores(layer_input, layer_output), k, positions)
