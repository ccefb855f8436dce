"""Token counts per stage (sta.core.schedule): every layout runs unpruned; STA's grouping is checked at r > 0."""

import pytest

from sta.core.schedule import tokens_after_stages
from sta.errors import InvalidInput


@pytest.mark.parametrize("slices", [1, 2, 3, 6])
def test_layouts_sta_cannot_group_keep_every_token_at_r_0(slices):
    """These used to divide by zero (2, 3 slices: an HF model of 4 or 6 frames; ViT-S with --num-frames 6)."""
    assert tokens_after_stages(slices, 16, 0) == (slices * 16,) * 3
    with pytest.raises(InvalidInput, match="divisible by 4"):
        tokens_after_stages(slices, 16, 1)


def test_the_paper_counts():
    assert tokens_after_stages(8, 196, 64) == (1056, 800, 672)
    assert tokens_after_stages(8, 196, (64, 32, 16)) == (1056, 928, 896)
