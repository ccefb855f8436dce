"""Tests for sta.data.sampling against hand-computed VideoMAE test-time rules."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sta.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ViewProtocol,
    kinetics_test_indices,
    make_test_views,
    normalize,
    resize_short_side,
    resized_hw,
    spatial_crop_starts,
    ssv2_test_indices,
    temporal_view_indices,
)
from tests.data.release_views import release_views

SSV2_32 = ViewProtocol.for_dataset("ssv2", crop_size=32)


def _as_lists(clips: list[np.ndarray]) -> list[list[int]]:
    assert all(c.dtype == np.int64 for c in clips)
    return [c.tolist() for c in clips]


# --------------------------------------------------------------- Kinetics


def test_kinetics_300_frames_five_segments() -> None:
    # 75 sampled frames (0, 4, ..., 296); step = (75 - 16) / 4 = 14.75, so the
    # starts in the sampled sequence are int(0, 14.75, 29.5, 44.25, 59).
    clips = kinetics_test_indices(300, num_frames=16, sampling_rate=4, num_segments=5)
    starts = [0, 14, 29, 44, 59]
    assert _as_lists(clips) == [[4 * (s + k) for k in range(16)] for s in starts]
    assert clips[-1][-1] == 296


def test_kinetics_40_frames_pads_with_last_sampled_index() -> None:
    # range(0, 40, 4) has 10 entries; 6 copies of 36 pad it to 16, every clip equal.
    expected = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36] + [36] * 6
    assert _as_lists(kinetics_test_indices(40)) == [expected] * 5


def test_kinetics_10_frames_fewer_than_16_sampled() -> None:
    assert _as_lists(kinetics_test_indices(10)) == [[0, 4, 8] + [8] * 13] * 5


def test_kinetics_single_frame_video() -> None:
    assert _as_lists(kinetics_test_indices(1, num_segments=2)) == [[0] * 16] * 2


def test_kinetics_boundary_lengths() -> None:
    # 64 frames -> exactly 16 sampled: all clips identical.
    assert _as_lists(kinetics_test_indices(64)) == [list(range(0, 64, 4))] * 5
    # 65 frames -> 17 sampled, step 0.25: only the last clip shifts by one.
    clips = _as_lists(kinetics_test_indices(65))
    assert clips[:4] == [list(range(0, 64, 4))] * 4
    assert clips[4] == list(range(4, 68, 4))


def test_kinetics_one_segment_starts_at_zero() -> None:
    # The release would divide by zero here; we take the first clip.
    assert _as_lists(kinetics_test_indices(300, num_segments=1)) == [list(range(0, 64, 4))]


def test_kinetics_other_rate_and_length() -> None:
    # 100 frames, rate 2 -> 50 sampled; 8-frame clips, 3 segments: step 21.
    clips = _as_lists(kinetics_test_indices(100, num_frames=8, sampling_rate=2, num_segments=3))
    assert clips == [[2 * (s + k) for k in range(8)] for s in (0, 21, 42)]


@pytest.mark.parametrize("n", range(1, 400, 7))
def test_kinetics_clips_are_valid_for_many_lengths(n: int) -> None:
    for clip in kinetics_test_indices(n):
        assert len(clip) == 16 and clip.min() >= 0 and clip.max() < n
        assert np.all(np.diff(clip) >= 0)


# ------------------------------------------------------------------- SSv2


def test_ssv2_48_frames_two_views() -> None:
    # tick = 3: starts int(3x) = 0, 3, ..., 45; centres int(1.5 + 3x) = 1, 4, ..., 46.
    view0, view1 = _as_lists(ssv2_test_indices(48))
    assert view0 == list(range(0, 48, 3))
    assert view1 == list(range(1, 48, 3))


def test_ssv2_10_frames_two_views() -> None:
    # tick = 0.625, hand-computed int(0.625 x) and int(0.3125 + 0.625 x).
    view0, view1 = _as_lists(ssv2_test_indices(10))
    assert view0 == [0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 6, 6, 7, 8, 8, 9]
    assert view1 == [0, 0, 1, 2, 2, 3, 4, 4, 5, 5, 6, 7, 7, 8, 9, 9]


def test_ssv2_one_view_is_segment_centres() -> None:
    assert _as_lists(ssv2_test_indices(48, num_segments=1)) == [list(range(1, 48, 3))]
    assert _as_lists(ssv2_test_indices(10, num_segments=1)) == [
        [0, 0, 1, 2, 2, 3, 4, 4, 5, 5, 6, 7, 7, 8, 9, 9]
    ]


@pytest.mark.parametrize("n", list(range(1, 130)) + [174, 250, 1001])
def test_ssv2_matches_sorted_release_rule(n: int) -> None:
    # The release sorts centres + starts and takes every other entry.
    tick = n / 16.0
    combined = sorted([int(tick / 2.0 + tick * x) for x in range(16)] + [int(tick * x) for x in range(16)])
    assert _as_lists(ssv2_test_indices(n)) == [combined[0::2], combined[1::2]]


def test_ssv2_more_than_two_views_is_rejected() -> None:
    with pytest.raises(ValueError, match="1 or 2"):
        ssv2_test_indices(48, num_segments=3)


def test_temporal_view_indices_follow_the_protocol() -> None:
    assert len(temporal_view_indices(300, ViewProtocol.for_dataset("kinetics"))) == 5
    assert len(temporal_view_indices(300, ViewProtocol.for_dataset("ssv2"))) == 2
    one = ViewProtocol("ssv2", num_segments=1)
    assert _as_lists(temporal_view_indices(48, one)) == [list(range(1, 48, 3))]


@pytest.mark.parametrize("bad", [dict(protocol="ucf101"), dict(num_frames=0), dict(sampling_rate=0),
                                 dict(num_segments=0), dict(num_crops=-1), dict(crop_size=0),
                                 dict(protocol="ssv2", num_segments=3), dict(num_frames=True)])
def test_view_protocol_refuses_what_it_cannot_do(bad: dict) -> None:
    with pytest.raises(ValueError):
        ViewProtocol(**bad)


@pytest.mark.parametrize("bad", [0, -3])
def test_invalid_frame_counts(bad: int) -> None:
    with pytest.raises(ValueError):
        kinetics_test_indices(bad)
    with pytest.raises(ValueError):
        ssv2_test_indices(bad)


# ------------------------------------------------------------ spatial


@pytest.mark.parametrize(
    ("height", "width", "size", "expected"),
    [
        (256, 340, 224, (224, 297)),  # int(297.5) truncates
        (340, 256, 224, (297, 224)),
        (720, 1280, 224, (224, 398)),
        (272, 640, 224, (224, 527)),
        (48, 64, 224, (224, 298)),
        (100, 100, 224, (224, 224)),
    ],
)
def test_resized_hw(height: int, width: int, size: int, expected: tuple[int, int]) -> None:
    assert resized_hw(height, width, size) == expected


@pytest.mark.parametrize(
    ("long_side", "num_crops", "expected"),
    [
        (298, 3, [0, 37, 74]),
        (299, 3, [0, 37, 75]),  # step 37.5, truncated
        (398, 3, [0, 87, 174]),
        (224, 3, [0, 0, 0]),
        (298, 2, [0, 74]),
        (298, 1, [37]),  # one crop: centre
        (299, 1, [37]),
    ],
)
def test_spatial_crop_starts(long_side: int, num_crops: int, expected: list[int]) -> None:
    assert spatial_crop_starts(long_side, 224, num_crops) == expected


def test_spatial_crop_starts_rejects_short_long_side() -> None:
    with pytest.raises(ValueError, match="shorter"):
        spatial_crop_starts(200, 224, 3)


def test_resize_is_opencv_on_each_uint8_frame() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    out = resize_short_side(frames, 224)
    assert out.shape == (3, 224, 298, 3) and out.dtype == np.uint8
    for frame, resized in zip(frames, out):
        assert np.array_equal(resized, cv2.resize(frame, (298, 224), interpolation=cv2.INTER_LINEAR))


def test_resize_differs_from_float_bilinear_where_opencv_rounds_in_fixed_point() -> None:
    """Why not torch: float bilinear + rounding misses OpenCV's uint8 result by one grey level at many pixels."""
    frames = np.random.default_rng(1).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    ours = resize_short_side(frames, 224)
    floats = F.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(224, 298), mode="bilinear",
                           align_corners=False).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    differ = ours != floats
    assert differ.mean() > 0.01 and np.abs(ours.astype(int) - floats).max() == 1


def test_resize_is_independent_of_thread_count() -> None:
    frames = np.random.default_rng(2).integers(0, 256, (4, 90, 160, 3), dtype=np.uint8)
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        one = resize_short_side(frames, 224)
        cv2.setNumThreads(2)
        two = resize_short_side(frames, 224)
    finally:
        cv2.setNumThreads(threads)
    assert np.array_equal(one, two)


def test_resize_keeps_constant_frames_and_portrait_layout() -> None:
    frames = np.full((2, 64, 48, 3), 77, dtype=np.uint8)  # portrait
    out = resize_short_side(torch.from_numpy(frames), 224)
    assert out.shape == (2, 298, 224, 3)
    assert bool((out == 77).all())


def test_resize_is_a_no_op_when_short_side_matches() -> None:
    frames = np.random.default_rng(3).integers(0, 256, (2, 224, 300, 3), dtype=np.uint8)
    assert resize_short_side(frames, 224) is frames


def test_resize_refuses_float_frames() -> None:
    with pytest.raises(ValueError, match="uint8"):
        resize_short_side(np.zeros((1, 8, 8, 3), dtype=np.float32), 4)


def test_normalize_values_and_layout() -> None:
    frames = torch.zeros(2, 4, 5, 3, dtype=torch.uint8)
    frames[1] = 255
    out = normalize(frames)
    assert out.shape == (3, 2, 4, 5) and out.dtype == torch.float32 and out.is_contiguous()
    for c in range(3):
        assert torch.allclose(out[c, 0], torch.tensor(-IMAGENET_MEAN[c] / IMAGENET_STD[c]))
        assert torch.allclose(out[c, 1], torch.tensor((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))


def test_normalize_is_bit_identical_to_release_arithmetic() -> None:
    # Release: numpy float64 / 255 -> float32, then float32 sub_(mean).div_(std).
    levels = np.arange(256, dtype=np.uint8)
    frames = np.stack([levels, levels[::-1], levels], axis=-1).reshape(1, 16, 16, 3)
    clip = torch.from_numpy(frames.astype(float) / 255.0).float().permute(3, 0, 1, 2)
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None, None]
    std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None, None]
    expected = clip.clone().sub_(mean).div_(std)
    assert torch.equal(normalize(frames), expected)


def test_normalize_float_input_matches_uint8() -> None:
    frames = torch.randint(0, 256, (2, 3, 4, 3), dtype=torch.uint8)
    assert torch.allclose(normalize(frames.float() / 255.0), normalize(frames), atol=1e-6)


# ---------------------------------------------------------- test views


def _index_video(n: int, height: int, width: int) -> np.ndarray:
    """``n x H x W x 3`` frames whose grey level is the frame index."""
    return np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, height, width, 3)).copy()


def _frame_ids(clip: torch.Tensor) -> list[int]:
    """Recover the grey level (= frame index) of each frame of a normalised clip."""
    grey = clip[0, :, 0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    return [round(v) for v in (grey * 255).tolist()]


def test_make_test_views_kinetics_order_indices_and_shapes() -> None:
    n = 200
    views = make_test_views(_index_video(n, 48, 64), ViewProtocol("kinetics", crop_size=224))
    assert [(v.segment, v.crop) for v in views] == [(c, k) for c in range(5) for k in range(3)]
    expected = kinetics_test_indices(n)
    for view in views:
        assert view.clip.shape == (3, 16, 224, 224) and view.clip.dtype == torch.float32
        assert view.clip.is_contiguous()
        assert _frame_ids(view.clip) == expected[view.segment].tolist()


def test_make_test_views_ssv2_indices() -> None:
    views = make_test_views(_index_video(48, 64, 48), ViewProtocol.for_dataset("ssv2", crop_size=32))
    assert len(views) == 6
    for view in views:
        assert view.clip.shape == (3, 16, 32, 32)
        assert _frame_ids(view.clip) == list(range(view.segment, 48, 3))


@pytest.mark.parametrize(("height", "width"), [(48, 64), (64, 48)])
def test_make_test_views_crops_along_long_side(height: int, width: int) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (20, height, width, 3), dtype=np.uint8)
    views = make_test_views(frames, ViewProtocol("kinetics", num_frames=4, sampling_rate=2, num_segments=2,
                                                 crop_size=32))
    resized = normalize(resize_short_side(frames, 32))  # 3 x 20 x H' x W'
    long_side = max(resized.shape[-2:])
    assert long_side == 42
    for view in views:
        clip_idx = torch.from_numpy(kinetics_test_indices(20, 4, 2, 2)[view.segment])
        start = spatial_crop_starts(long_side, 32, 3)[view.crop]
        full = resized[:, clip_idx]
        window = full[:, :, start : start + 32, :] if height > width else full[:, :, :, start : start + 32]
        assert torch.equal(view.clip, window)


def test_make_test_views_from_subset_equals_full_video() -> None:
    rng = np.random.default_rng(1)
    n = 90
    frames = rng.integers(0, 256, (n, 40, 56, 3), dtype=np.uint8)
    full = make_test_views(frames, ViewProtocol(crop_size=32))
    needed = np.unique(np.concatenate(kinetics_test_indices(n)))
    subset = make_test_views(frames[needed], ViewProtocol(crop_size=32), frame_indices=needed, num_video_frames=n)
    assert len(full) == len(subset) == 15
    for a, b in zip(full, subset):
        assert (a.segment, a.crop) == (b.segment, b.crop) and torch.equal(a.clip, b.clip)


def test_make_test_views_single_clip_single_crop_is_centre() -> None:
    frames = _index_video(300, 48, 64)
    (view,) = make_test_views(frames, ViewProtocol(crop_size=32, num_crops=1, num_segments=1))
    assert (view.segment, view.crop) == (0, 0)
    assert _frame_ids(view.clip) == list(range(0, 64, 4))


def test_make_test_views_rejects_missing_frames_and_bad_input() -> None:
    frames = _index_video(10, 48, 64)
    with pytest.raises(ValueError, match="not in frame_indices"):
        make_test_views(frames[:3], SSV2_32, frame_indices=np.arange(3), num_video_frames=10)
    with pytest.raises(ValueError, match="num_video_frames"):
        make_test_views(frames, SSV2_32, frame_indices=np.arange(10))
    with pytest.raises(ValueError, match="uint8"):
        make_test_views(frames.astype(np.float32), SSV2_32)


# ---------------------------------------------------------- the release, pixel for pixel


def _random_video(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("protocol", ["kinetics", "ssv2"])
@pytest.mark.parametrize(("n", "height", "width"), [
    (90, 48, 64),  # landscape, resize up
    (70, 64, 48),  # portrait: crops along the height
    (40, 37, 53),  # odd sizes: truncated long side, fractional crop steps
    (7, 30, 45),  # shorter than a clip: indices padded (Kinetics) or repeated (SSv2)
    (50, 32, 77),  # short side already the crop size: no resize
    (33, 40, 40),  # square: three identical crops
    (64, 120, 90),  # resize down
])
def test_views_equal_the_release_bit_for_bit(protocol: str, n: int, height: int, width: int) -> None:
    frames = _random_video(n, height, width, seed=n)
    views = ViewProtocol.for_dataset(protocol, num_frames=8, sampling_rate=3, crop_size=32)
    expected = release_views(frames, protocol, short_side=32, clip_len=8, rate=3, segments=views.num_segments,
                             crops=views.num_crops)
    ours = make_test_views(frames, views)
    assert [(v.segment, v.crop) for v in ours] == list(expected)  # segment-major, as the release
    for view in ours:
        assert torch.equal(view.clip, expected[(view.segment, view.crop)]), (view.segment, view.crop)


def test_release_default_protocol_on_a_real_clip(sample_videos) -> None:
    """16 frames, 224 short side, 5x3 Kinetics views of a decoded sample clip, bit for bit."""
    from sta.data import read_video_frames

    frames = read_video_frames(sample_videos / "bikes.mp4")
    expected = release_views(frames, "kinetics", short_side=224)
    for view in make_test_views(frames, ViewProtocol()):
        assert torch.equal(view.clip, expected[(view.segment, view.crop)])


@pytest.mark.parametrize(("segments", "crops", "param"), [(10**20, 3, "num_segments"), (5, 11, "num_crops")])
def test_view_counts_are_bounded_before_anything_is_read(segments, crops, param):
    """5x30000 views would be decoded and held together: refused up front, naming the limit."""
    with pytest.raises(ValueError, match="at most 100 segments and 10 crops") as err:
        ViewProtocol("kinetics", num_segments=segments, num_crops=crops)
    assert err.value.param == param


# The loader the release's datasets.py builds for each --data_set: UCF101 and HMDB51 use the Kinetics one.
RELEASE_LOADER = {"Kinetics-400": "kinetics", "Kinetics-710": "kinetics", "SSV2": "ssv2", "UCF101": "kinetics",
                  "HMDB51": "kinetics"}


@pytest.mark.parametrize("name", sorted(RELEASE_LOADER) + ["custom", "custom/ssv2"])
def test_every_dataset_takes_the_views_of_the_release_loader(name: str) -> None:
    from sta.data.datasets import DATASETS, with_protocol

    base, _, protocol = name.partition("/")
    entry = with_protocol(DATASETS[base], protocol or None)
    loader = RELEASE_LOADER.get(name, protocol or "kinetics")  # custom: Kinetics' unless --protocol ssv2
    frames = _random_video(57, 40, 52, seed=len(name))
    views = ViewProtocol.for_dataset(entry.protocol, num_frames=8, sampling_rate=3, crop_size=32)
    expected = release_views(frames, loader, short_side=32, clip_len=8, rate=3, segments=views.num_segments,
                             crops=views.num_crops)
    ours = make_test_views(frames, views)
    assert [(v.segment, v.crop) for v in ours] == list(expected)
    assert all(torch.equal(view.clip, expected[(view.segment, view.crop)]) for view in ours)
