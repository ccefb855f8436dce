"""VideoMAE test-time sampling: temporal clips, short-side resize, spatial crops.

Reproduces the ``mode == 'test'`` paths of the VideoMAE release
(MCG-NJU/VideoMAE ``kinetics.py`` ``VideoClsDataset`` and ``ssv2.py``
``SSVideoClsDataset``, with ``video_transforms.Resize`` /
``functional.resize_clip`` and ``volume_transforms.ClipToTensor`` +
``video_transforms.Normalize``) as pure numpy/torch functions.

The release runs every view as a separate dataset item that decodes and resizes
the whole video again; here a video's views share one decode and one resize of
the union of their frames, which gives the same pixels because decoding,
resizing and normalising are all per frame.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PROTOCOLS",
    "ClipView",
    "kinetics_test_indices",
    "make_test_views",
    "normalize",
    "resize_short_side",
    "resized_hw",
    "spatial_crop_starts",
    "ssv2_test_indices",
    "temporal_view_indices",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROTOCOLS = ("kinetics", "ssv2")
# Release defaults of ``--test_num_segment`` per protocol (VideoMAE scripts:
# Kinetics 5 clips x 3 crops, Something-Something V2 2 clips x 3 crops).
_DEFAULT_SEGMENTS = {"kinetics": 5, "ssv2": 2}
# Frames per interpolate() call: bounds float32 scratch memory (~128 MiB) for
# large frames such as 1280x720 without slowing small ones down.
_RESIZE_BUDGET = 1 << 25


class ClipView(NamedTuple):
    """One test view: temporal ``chunk``, spatial ``crop``, ``clip`` 3 x T x S x S float32."""

    chunk: int
    crop: int
    clip: torch.Tensor


def _check_positive(**values: int) -> None:
    """Raise ValueError unless every given value is a positive int."""
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def kinetics_test_indices(
    num_video_frames: int, num_frames: int = 16, sampling_rate: int = 4, num_segments: int = 5
) -> list[np.ndarray]:
    """Kinetics test clips (release ``kinetics.py``, ``mode == 'test'``).

    The release samples every ``sampling_rate``-th frame of the whole video,
    ``all_index = range(0, n, sampling_rate)``, pads it to ``num_frames`` by
    repeating the last index, and takes clip ``chunk`` as ``num_frames``
    consecutive sampled frames starting at
    ``int(chunk * max((len(all_index) - num_frames) / (num_segments - 1), 0))``.
    With ``num_segments == 1`` the release would divide by zero; we start at 0.

    Args:
        num_video_frames: decoded frame count ``n`` (>= 1).
        num_frames: frames per clip (``--num_frames``, 16).
        sampling_rate: temporal stride (``--sampling_rate``, 4).
        num_segments: clips per video (``--test_num_segment``, 5).

    Returns:
        ``num_segments`` int64 arrays of ``num_frames`` frame indices in ``0..n-1``.
    """
    _check_positive(
        num_video_frames=num_video_frames, num_frames=num_frames,
        sampling_rate=sampling_rate, num_segments=num_segments,
    )
    all_index = list(range(0, num_video_frames, sampling_rate))
    while len(all_index) < num_frames:
        all_index.append(all_index[-1])
    sampled = np.asarray(all_index, dtype=np.int64)
    if num_segments == 1:
        step = 0.0
    else:
        # Same float expression as the release, so int() truncates identically.
        step = max(1.0 * (len(sampled) - num_frames) / (num_segments - 1), 0)
    starts = [int(chunk * step) for chunk in range(num_segments)]
    return [sampled[s : s + num_frames].copy() for s in starts]


def ssv2_test_indices(
    num_video_frames: int, num_frames: int = 16, num_segments: int = 2
) -> list[np.ndarray]:
    """Something-Something V2 test clips (release ``ssv2.py``, ``mode == 'test'``).

    The release splits the video into ``num_frames`` equal segments
    (``tick = n / num_frames``), takes ``int(tick / 2 + tick * x)`` (segment
    centres) and ``int(tick * x)`` (segment starts), sorts the ``2 * num_frames``
    indices and gives view ``chunk`` the indices ``chunk::2``. Because
    ``int(tick*x) <= int(tick/2 + tick*x) <= int(tick*(x+1))``, view 0 is exactly
    the segment starts and view 1 exactly the segment centres.

    ``num_segments == 1`` (our choice): the segment centres, i.e. the usual
    single-clip TSN-style test sampling, which does not lean towards each
    segment's first frame. Note that the release's literal code, run with
    ``--test_num_segment 1``, would return the segment *starts* (its
    hard-coded ``temporal_start::2`` with ``temporal_start = 0``).

    ``num_segments > 2`` is rejected: the release hard-codes the stride 2, so it
    has no defined rule for more views (its clips would get the wrong length).

    Args:
        num_video_frames: decoded frame count ``n`` (>= 1).
        num_frames: frames per clip (16).
        num_segments: 1 or 2 views (``--test_num_segment``, 2).

    Returns:
        ``num_segments`` int64 arrays of ``num_frames`` frame indices in ``0..n-1``.
    """
    _check_positive(num_video_frames=num_video_frames, num_frames=num_frames, num_segments=num_segments)
    if num_segments > 2:
        raise ValueError(
            f"ssv2 test sampling defines 1 or 2 temporal views, got num_segments={num_segments}"
        )
    tick = num_video_frames / float(num_frames)
    centres = [int(tick / 2.0 + tick * x) for x in range(num_frames)]
    if num_segments == 1:
        return [np.asarray(centres, dtype=np.int64)]
    starts = [int(tick * x) for x in range(num_frames)]
    combined = np.sort(np.asarray(centres + starts, dtype=np.int64))
    return [combined[chunk::2].copy() for chunk in range(num_segments)]


def temporal_view_indices(
    num_video_frames: int,
    protocol: str,
    num_frames: int = 16,
    sampling_rate: int = 4,
    num_segments: int | None = None,
) -> list[np.ndarray]:
    """Per-chunk frame indices for ``protocol`` ('kinetics' or 'ssv2').

    ``num_segments=None`` uses the release default (kinetics 5, ssv2 2);
    ``sampling_rate`` is ignored by 'ssv2', which spreads frames over the video.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    segments = _DEFAULT_SEGMENTS[protocol] if num_segments is None else num_segments
    if protocol == "kinetics":
        return kinetics_test_indices(num_video_frames, num_frames, sampling_rate, segments)
    return ssv2_test_indices(num_video_frames, num_frames, segments)


def resized_hw(height: int, width: int, size: int) -> tuple[int, int]:
    """Output ``(height, width)`` of a short-side resize to ``size``.

    Same rule as the release's ``get_resize_sizes``: the short side becomes
    ``size`` and the long side ``int(size * long / short)`` (truncated, not
    rounded); a square frame becomes ``size x size``.
    """
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def _interpolate_chunks(x: torch.Tensor, out_hw: tuple[int, int], to_uint8: bool) -> torch.Tensor:
    """Bilinear resize of ``N x C x H x W`` in memory-bounded chunks.

    Returns ``N x H' x W' x C`` uint8 (rounded) if ``to_uint8``, else
    ``N x C x H' x W'`` in ``x``'s float dtype.
    """
    n, c = x.shape[:2]
    step = max(1, _RESIZE_BUDGET // (c * max(x.shape[2] * x.shape[3], out_hw[0] * out_hw[1])))
    if to_uint8:
        out = torch.empty((n, *out_hw, c), dtype=torch.uint8)
    else:
        out = torch.empty((n, c, *out_hw), dtype=x.dtype)
    for i in range(0, n, step):
        block = x[i : i + step] if x.is_floating_point() else x[i : i + step].float()
        part = F.interpolate(block, size=out_hw, mode="bilinear", align_corners=False)
        if to_uint8:
            out[i : i + step] = part.round_().clamp_(0, 255).permute(0, 2, 3, 1)
        else:
            out[i : i + step] = part
    return out


def resize_short_side(frames: torch.Tensor | np.ndarray, size: int = 224) -> torch.Tensor:
    """Resize frames so the short side is ``size``, keeping the aspect ratio.

    Mirrors ``video_transforms.Resize(size, interpolation='bilinear')`` of the
    release (OpenCV ``cv2.resize(..., INTER_LINEAR)`` on uint8 frames), with
    ``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)`` on
    float32 data. Both map pixel centres the same way and neither antialiases,
    but OpenCV computes uint8 resizes in fixed point (11-bit weights, or Intel
    IPP where built in), whereas we interpolate in float32 and round to
    nearest: against opencv-python-headless 5.0 the uint8 results differ by at
    most 1 grey level, at about 7-11% of values on the sample clips. Like the
    release, frames whose short side already equals ``size`` are returned
    unchanged.

    Args:
        frames: ``N x H x W x 3`` uint8 (decoded RGB, torch or numpy) or
            ``T x C x H x W`` float tensor.
        size: target short side.

    Returns:
        Same layout and dtype as the input: ``N x H' x W' x 3`` uint8 (rounded,
        as the release keeps uint8 after resizing) or ``T x C x H' x W'`` float.
    """
    _check_positive(size=size)
    source = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
    x = source
    if x.ndim != 4:
        raise ValueError(f"expected a 4-D frame tensor, got shape {tuple(x.shape)}")
    is_uint8 = x.dtype == torch.uint8
    if is_uint8:
        if x.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be N x H x W x 3, got {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2)  # a channels-last view; interpolate keeps that layout
    elif not x.is_floating_point():
        raise TypeError(f"frames must be uint8 or floating point, got {x.dtype}")
    height, width = x.shape[-2:]
    if (width <= height and width == size) or (height <= width and height == size):
        return source
    return _interpolate_chunks(x, resized_hw(height, width, size), to_uint8=is_uint8)


def spatial_crop_starts(long_side: int, crop_size: int = 224, num_crops: int = 3) -> list[int]:
    """Start offsets of the test crops along the long side.

    Release rule: ``spatial_step = (long_side - crop_size) / (num_crops - 1)`` and
    crop ``i`` starts at ``int(i * spatial_step)`` (left/centre/right, or
    top/centre/bottom). With one crop the release would divide by zero; we use
    the centre crop ``(long_side - crop_size) // 2``.
    """
    _check_positive(long_side=long_side, crop_size=crop_size, num_crops=num_crops)
    if long_side < crop_size:
        raise ValueError(f"long side {long_side} is shorter than crop size {crop_size}")
    if num_crops == 1:
        return [(long_side - crop_size) // 2]
    step = 1.0 * (long_side - crop_size) / (num_crops - 1)
    return [int(i * step) for i in range(num_crops)]


def normalize(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Frames to model input: scale to [0, 1], ImageNet mean/std, channels first.

    Bit-identical to the release's ``ClipToTensor`` (float64 ``/ 255``, then
    float32) + ``Normalize`` (float32 ``sub_(mean).div_(std)``): float32
    ``x / 255`` rounds to the same value for all 256 levels (checked in tests).

    Args:
        frames: ``T x H x W x 3`` uint8, or float already in [0, 1].

    Returns:
        ``3 x T x H x W`` float32 (contiguous), ``(x / 255 - mean[c]) / std[c]``.
    """
    x = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected T x H x W x 3 frames, got shape {tuple(x.shape)}")
    x = x.permute(3, 0, 1, 2)
    if x.dtype == torch.uint8:
        # Transpose while still 1 byte per value, then work in place on the
        # fresh float32 tensor: ~3x faster than out-of-place float arithmetic.
        x = x.contiguous().to(torch.float32).div_(255.0)
    elif x.is_floating_point():
        x = x.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    else:
        raise TypeError(f"frames must be uint8 or floating point, got {x.dtype}")
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None, None]
    std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None, None]
    return x.sub_(mean).div_(std)


def _rows_for(frame_indices: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions of ``wanted`` frame indices in sorted unique ``frame_indices``."""
    rows = np.minimum(np.searchsorted(frame_indices, wanted), len(frame_indices) - 1)
    missing = wanted[frame_indices[rows] != wanted]
    if missing.size:
        raise ValueError(f"frames {missing[:8].tolist()} are needed but not in frame_indices")
    return rows


def make_test_views(
    frames: torch.Tensor | np.ndarray,
    protocol: str,
    crop_size: int = 224,
    num_crops: int = 3,
    num_frames: int = 16,
    sampling_rate: int = 4,
    num_segments: int | None = None,
    *,
    frame_indices: np.ndarray | None = None,
    num_video_frames: int | None = None,
) -> list[ClipView]:
    """All test views of one video: temporal clips x spatial crops.

    Per view, as the release: resize the short side to ``crop_size`` (the
    release resizes to ``short_side_size`` and crops ``short_side_size``
    windows; its scripts set ``short_side_size = input_size = 224``), take a
    ``crop_size`` window along the LONG side (full short side), normalise.
    Each needed frame is resized and normalised once, shared by all views.

    Args:
        frames: ``K x H x W x 3`` uint8 RGB. Either the whole video (row ``i``
            = frame ``i``), or the rows for ``frame_indices``.
        protocol: 'kinetics' or 'ssv2'.
        crop_size: short-side size and crop size (224).
        num_crops: spatial crops per clip (3; 1 = centre crop).
        num_frames: frames per clip (16).
        sampling_rate: Kinetics temporal stride (4).
        num_segments: temporal clips (``None`` = 5 for kinetics, 2 for ssv2).
        frame_indices: sorted unique video frame index of each row of
            ``frames`` (e.g. ``SampledFrames.indices``); needs ``num_video_frames``.
        num_video_frames: frame count of the whole video.

    Returns:
        ``num_segments * num_crops`` ``ClipView(chunk, crop, clip)``, chunk-major,
        ``clip`` ``3 x num_frames x crop_size x crop_size`` float32.
    """
    x = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be K x H x W x 3 uint8, got {tuple(x.shape)} {x.dtype}")
    if frame_indices is None:
        if num_video_frames is not None and num_video_frames != x.shape[0]:
            raise ValueError("without frame_indices, frames must hold the whole video")
        n, known = x.shape[0], np.arange(x.shape[0], dtype=np.int64)
    else:
        if num_video_frames is None:
            raise ValueError("frame_indices needs num_video_frames")
        n, known = num_video_frames, np.asarray(frame_indices, dtype=np.int64)
        if known.shape != (x.shape[0],) or np.any(np.diff(known) <= 0):
            raise ValueError("frame_indices must be sorted, unique, one per row of frames")

    clips = temporal_view_indices(n, protocol, num_frames, sampling_rate, num_segments)
    needed = np.unique(np.concatenate(clips))
    rows = torch.from_numpy(_rows_for(known, needed))
    # Resize + normalise each needed frame once: 3 x U x H' x W'.
    ready = normalize(resize_short_side(x[rows], crop_size))
    height, width = ready.shape[-2:]
    starts = spatial_crop_starts(max(height, width), crop_size, num_crops)
    views: list[ClipView] = []
    for chunk, clip_idx in enumerate(clips):
        clip = ready[:, torch.from_numpy(np.searchsorted(needed, clip_idx))]
        for crop, s in enumerate(starts):
            # The release crops along H when H >= W, else along W.
            window = clip[:, :, s : s + crop_size, :] if height >= width else clip[:, :, :, s : s + crop_size]
            views.append(ClipView(chunk, crop, window.contiguous()))
    return views
