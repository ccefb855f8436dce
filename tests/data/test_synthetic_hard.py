"""The hard proxy task (sta.data.synthetic_hard) and the name registry (sta.data.proxies)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sta.data import IMAGENET_MEAN, IMAGENET_STD
from sta.data.proxies import PROXY_NAMES, get_task, make_clips, write_videos
from sta.data.synthetic_hard import (
    CLASS_NAMES,
    DIRECTIONS,
    HARD_TASK,
    TARGET_DIGITS,
    _digit_bank,
    _pools,
)
from sta.errors import InvalidInput

# Only the target: no clutter, no distractor, a static camera, no noise or jitter -- its pixels can be found.
TARGET_ONLY = dataclasses.replace(HARD_TASK, clutter=(0, 0), distractors=(0, 0), pan_prob=0.0, noise_std=0.0,
                                  brightness=0.0, contrast=(1.0, 1.0))


def pixels(clips: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None, None]
    return clips * std + mean


NO_TARGET = dataclasses.replace(TARGET_ONLY, target_size=(0.01, 0.01))  # the same draws: the same clips, no target


def target_masks(num_clips: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``B x T x H x W``: where TARGET_ONLY clips differ from the same clips without their target; and the labels."""
    clips, labels = make_clips(TARGET_ONLY, num_clips, seed=seed, split="test")
    background, _ = make_clips(NO_TARGET, num_clips, seed=seed, split="test")
    return (pixels(clips) - pixels(background)).abs().amax(1) > 0.2, labels


def circular_centre(mask: torch.Tensor) -> torch.Tensor:
    """(x, y) centre of a mask on the 64 x 64 torus the objects move on (a circular mean per axis)."""
    angle = torch.arange(64.0) * (2 * torch.pi / 64)
    weights = mask.float()
    x = torch.atan2((weights.sum(0) * angle.sin()).sum(), (weights.sum(0) * angle.cos()).sum())
    y = torch.atan2((weights.sum(1) * angle.sin()).sum(), (weights.sum(1) * angle.cos()).sum())
    return torch.stack((x, y)) * (64 / (2 * torch.pi))


def test_classes_and_registry():
    assert HARD_TASK.num_classes == len(CLASS_NAMES) == len(TARGET_DIGITS) * len(DIRECTIONS) == 12
    assert CLASS_NAMES[0] == "digit0_left" and CLASS_NAMES[-1] == "digit2_down"
    assert PROXY_NAMES == ("easy", "hard") and get_task("hard") is HARD_TASK
    with pytest.raises(InvalidInput, match="easy, hard"):
        get_task("medium")


def test_shape_range_determinism_and_balance():
    a, la = make_clips("hard", 24, seed=3, split="train")
    b, lb = make_clips("hard", 24, seed=3, split="train")
    assert a.shape == (24, 3, 16, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert torch.equal(torch.bincount(la, minlength=12), torch.full((12,), 2))
    p = pixels(a)
    assert p.min() >= -1e-5 and p.max() <= 1 + 1e-5
    c, _ = make_clips("hard", 24, seed=3, split="test")
    assert (a - c).abs().mean() > 0.1  # the two streams differ


def test_train_and_test_draw_disjoint_handwriting():
    train, test = _pools("train"), _pools("test")
    images, labels = _digit_bank()
    assert images.shape == (1797, 1, 8, 8) and 0 <= images.min() and images.max() == 1
    for digit in range(10):
        assert len(set(train[digit].tolist()) & set(test[digit].tolist())) == 0
        assert (labels[train[digit]] == digit).all() and (labels[test[digit]] == digit).all()
        assert len(test[digit]) >= 30 and len(train[digit]) >= 2 * len(test[digit])


def test_target_is_seen_for_a_window_of_frames_and_moves_in_its_class_direction():
    masks, labels = target_masks(36, seed=7)
    seen = masks.flatten(2).any(2)  # B x T
    for b in range(len(labels)):
        frames = seen[b].nonzero().squeeze(1)
        assert HARD_TASK.visible[0] <= len(frames) <= HARD_TASK.visible[1]
        assert frames.max() - frames.min() + 1 == len(frames)  # one window, no gaps
        move = circular_centre(masks[b, frames[-1]]) - circular_centre(masks[b, frames[0]])
        move = torch.remainder(move + 32, 64) - 32  # positions wrap around the frame edges
        axis = int(move.abs().argmax())  # 0: x, 1: y
        direction = (0 if move[0] < 0 else 1) if axis == 0 else (2 if move[1] < 0 else 3)
        assert DIRECTIONS[direction] == CLASS_NAMES[labels[b]].split("_")[1]


def test_a_pan_moves_every_pixel_and_a_static_camera_does_not():
    static = NO_TARGET
    panned = dataclasses.replace(static, pan_prob=1.0)
    still, _ = make_clips(static, 6, seed=1)
    moving, _ = make_clips(panned, 6, seed=1)
    assert (still[:, :, 1:] - still[:, :, :-1]).abs().max() < 1e-4
    changed = (moving[:, :, 1:] - moving[:, :, :-1]).abs().amax(1) > 1e-3  # B x (T-1) x H x W
    assert changed.float().mean() > 0.5


def test_write_videos_of_either_task(tmp_path):
    for task in ("easy", "hard"):
        paths = write_videos(tmp_path / task, 2, seed=3, task=task)
        names = get_task(task).class_names
        assert [p.name.split("_", 1)[1][:-4] in names for p in paths] == [True, True]
        assert len((tmp_path / task / "test.csv").read_text().splitlines()) == 2
