"""RLT's static-token test (sta.core.rlt) on clips whose answer is known, and against the paper re-stated here."""

import pytest
import torch

from sta.core.rlt import DEFAULT_THRESHOLD, rlt_change_scores, rlt_keep_mask
from tests.core.clips import moving_cells, moving_patch_clips
from tests.helpers import tiny_model


def paper_change(clips: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """RLT as the paper states it, one token at a time: a tubelet's change is the mean absolute difference between
    its last frame and the first frame of the tubelet before it at the same place (pixels and channels);
    the first tubelet has none (inf)."""
    B, C, F, H, W = clips.shape
    T, hs, ws = F // tubelet, H // patch, W // patch
    out = torch.empty(B, T * hs * ws, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            for i in range(hs):
                for j in range(ws):
                    k = (t * hs + i) * ws + j
                    if t == 0:
                        out[b, k] = float("inf")
                        continue
                    box = (slice(None), slice(i * patch, (i + 1) * patch), slice(j * patch, (j + 1) * patch))
                    now = clips[b][(slice(None), t * tubelet + tubelet - 1, *box[1:])].double()
                    before = clips[b][(slice(None), (t - 1) * tubelet, *box[1:])].double()
                    out[b, k] = (now - before).abs().mean()
    return out


def test_static_background_with_one_moving_patch():
    clips = moving_patch_clips(3, seed=1)
    mask = rlt_keep_mask(clips, tubelet_size=2, patch_size=8)
    for b, moved in enumerate(moving_cells(3)):
        kept = set(torch.nonzero(mask[b])[:, 0].tolist())
        assert kept == set(range(16)) | moved  # slice 0, and where the square leaves and enters


def test_identical_slices_keep_only_the_first():
    clips = torch.randn(2, 3, 1, 32, 32).repeat(1, 1, 16, 1, 1)
    mask = rlt_keep_mask(clips, 2, 8)
    assert mask.shape == (2, 128) and mask.dtype == torch.bool
    assert mask[:, :16].all() and not mask[:, 16:].any()
    assert torch.equal(rlt_change_scores(clips, 2, 8)[:, 16:], torch.zeros(2, 112))


def test_a_change_equal_to_the_threshold_is_static():
    clips = torch.zeros(1, 3, 4, 8, 8)  # tubelet 2: slices 0 and 1 of 4 patches each
    clips[0, :, 3, :4, :4] = 0.25  # last frame of tubelet 1, top-left patch: mean |difference| exactly 0.25
    assert rlt_change_scores(clips, 2, 4)[0, 4].item() == 0.25
    assert rlt_keep_mask(clips, 2, 4, threshold=0.25)[0].tolist() == [True] * 4 + [False] * 4
    assert rlt_keep_mask(clips, 2, 4, threshold=0.2499)[0, 4]


def test_only_the_last_frame_of_a_tubelet_and_the_first_of_the_one_before_count():
    clips = torch.zeros(1, 3, 6, 4, 4)
    clips[0, :, 1] = 5.0  # last frame of tubelet 0: never compared
    clips[0, :, 2] = 5.0  # first frame of tubelet 1: tubelet 1 is static (frame 3 = frame 0), tubelet 2 is not
    assert rlt_keep_mask(clips, 2, 4)[0].tolist() == [True, False, True]  # frame 5 (0) against frame 2 (5)
    clips[0, :, 3] = 1.0  # tubelet 1's last frame against tubelet 0's first (0)
    clips[0, :, 4] = 1.0  # tubelet 2's first frame: tubelet 2 is compared with tubelet 1's first frame (2: 5.0)
    assert rlt_change_scores(clips, 2, 4)[0, 1:].tolist() == [1.0, 5.0]


@pytest.mark.parametrize("tubelet,patch", [(2, 8), (1, 4), (4, 16)])
def test_matches_the_paper_restated(tubelet, patch):
    gen = torch.Generator().manual_seed(tubelet)
    base = torch.randn(2, 3, 1, 32, 32, generator=gen)
    drift = torch.rand(2, 1, 16, 32 // patch, 32 // patch, generator=gen).repeat_interleave(patch, -1)
    clips = base + 0.4 * drift.repeat_interleave(patch, -2) ** 3 * torch.randn(2, 3, 16, 32, 32, generator=gen)
    mine = rlt_change_scores(clips, tubelet, patch)
    theirs = paper_change(clips, tubelet, patch)
    torch.testing.assert_close(mine.double(), theirs, rtol=1e-5, atol=1e-6)
    far = ((theirs - DEFAULT_THRESHOLD).abs() > 1e-4) | theirs.isinf()
    assert torch.equal(rlt_keep_mask(clips, tubelet, patch)[far], (theirs > DEFAULT_THRESHOLD)[far])
    assert 0 < int((theirs <= DEFAULT_THRESHOLD).sum())  # some tokens are static, some are not


def test_fixed_budget_keeps_the_most_changing_and_breaks_ties_by_position():
    """rlt at r = 12: 8 x 4 = 32 tokens before block 0: slice 0, the 14 moved cells, then the two lowest static."""
    model = tiny_model(r=(12, 1, 1), method="rlt")
    clips = moving_patch_clips(1, seed=4)
    with torch.no_grad():
        _, trace = model(clips, return_trace=True)
    moved = moving_cells(1)[0]
    static = sorted(set(range(16, 128)) - moved)
    assert sorted(trace.positions[0][0].tolist()) == sorted(set(range(16)) | moved | set(static[:2]))
    assert torch.equal(trace.positions[0][0], trace.positions[0][0].sort().values)  # kept in position order


def test_threshold_mode_counts_follow_the_clip_and_pad_the_trace():
    model = tiny_model(r=1, method="rlt-threshold")
    still = torch.randn(1, 3, 1, 32, 32).repeat(1, 1, 16, 1, 1)
    clips = torch.cat([moving_patch_clips(1, seed=5), still])
    with torch.no_grad():
        logits, trace = model(clips, return_trace=True)
        alone = [model(clips[b : b + 1], return_trace=True) for b in range(2)]
    assert [int((p[0] >= 0).sum()) for p in trace.positions] == [30] * 3
    assert trace.positions[0][1].tolist() == list(range(16)) + [-1] * 14  # a still clip keeps its first slice
    for b, (one, single) in enumerate(alone):
        torch.testing.assert_close(one[0], logits[b], rtol=1e-5, atol=1e-5)
        width = single.positions[0].shape[1]
        assert torch.equal(single.positions[0][0], trace.positions[0][b, :width])
