"""VideoMAE test-time views: temporal clips, short-side resize, spatial crops, normalisation.

Reproduces the ``mode == 'test'`` paths of the VideoMAE release (``kinetics.py``
``VideoClsDataset``, ``ssv2.py`` ``SSVideoClsDataset``, with
``video_transforms.Resize`` -> ``functional.resize_clip`` -> ``cv2.resize`` and
``volume_transforms.ClipToTensor`` + ``video_transforms.Normalize``) bit for bit,
given the same decoded frames: the same frame indices, the same OpenCV resize of
each uint8 frame, the same crop windows, the same float32 arithmetic.

The release decodes and resizes the whole sampled video again for every view;
here a video's views share one decode and one resize of the union of their
frames. That gives the same pixels because resizing and normalising are per frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch

from sta.core.contract import IMAGENET_MEAN, IMAGENET_STD
from sta.data.datasets import PROTOCOLS
from sta.errors import InvalidInput

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PROTOCOLS",
    "ClipView",
    "ViewProtocol",
    "kinetics_test_indices",
    "make_test_views",
    "normalize",
    "resize_short_side",
    "resized_hw",
    "spatial_crop_starts",
    "ssv2_test_indices",
    "temporal_view_indices",
    "to_uint8_frames",
]

# Release defaults of ``--test_num_segment`` per protocol (VideoMAE scripts:
# Kinetics 5 clips x 3 crops, Something-Something V2 2 clips x 3 crops).
_DEFAULT_SEGMENTS = {"kinetics": 5, "ssv2": 2}
# A video's views are decoded and held together: bounded so that a typo (5x30000) fails now instead of exhausting
# memory later. 100 segments of a 10 s clip are 10 per second; 10 crops overlap by most of their width already.
MAX_SEGMENTS, MAX_CROPS = 100, 10


def _check_positive(**values: int) -> None:
    """Raise ValueError unless every given value is a positive int."""
    for name, value in values.items():
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise InvalidInput(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ViewProtocol:
    """The settings that define a video's test views; invalid ones fail here, before any video is read.

    ``ViewProtocol.for_dataset("ssv2", crop_size=224)`` gives the release's
    defaults for a protocol with some fields changed.
    """

    protocol: str = "kinetics"  # frame sampling: "kinetics" (every sampling_rate-th frame) or "ssv2" (segments)
    num_frames: int = 16  # frames per clip (the model's input)
    sampling_rate: int = 4  # Kinetics: temporal stride; not used by ssv2
    num_segments: int = 5  # temporal clips per video: Kinetics 5, SSv2 2 (at most 2: the release hard-codes it)
    num_crops: int = 3  # spatial crops along the long side (1 = centre crop)
    crop_size: int = 224  # the short side is resized to this, and crops are this square (the model's input size)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel normalisation the model was trained with
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise InvalidInput(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        _check_positive(num_frames=self.num_frames, sampling_rate=self.sampling_rate,
                        num_segments=self.num_segments, num_crops=self.num_crops, crop_size=self.crop_size)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise InvalidInput(f"mean and std need 3 values, std above 0; got {self.mean}, {self.std}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))  # lists from JSON compare equal
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.num_segments > MAX_SEGMENTS or self.num_crops > MAX_CROPS:
            raise InvalidInput(f"{self.num_segments}x{self.num_crops} views per video: at most {MAX_SEGMENTS} "
                               f"segments and {MAX_CROPS} crops (a video's views are held in memory together)",
                               param="num_segments" if self.num_segments > MAX_SEGMENTS else "num_crops")
        if self.protocol == "ssv2" and self.num_segments > 2:
            raise InvalidInput("ssv2 test sampling defines 1 or 2 temporal views, got "
                               f"num_segments={self.num_segments}", param="num_segments")

    @classmethod
    def for_dataset(cls, protocol: str, **overrides) -> ViewProtocol:
        """The release defaults of ``protocol`` (segments 5 or 2), with ``overrides`` (None = keep the default)."""
        defaults = dict(protocol=protocol, num_segments=_DEFAULT_SEGMENTS.get(protocol, 1))
        return cls(**{**defaults, **{k: v for k, v in overrides.items() if v is not None}})

    @property
    def num_views(self) -> int:
        return self.num_segments * self.num_crops

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}


class ClipView(NamedTuple):
    """One test view: temporal ``segment``, spatial ``crop``, ``clip`` 3 x T x S x S float32."""

    segment: int
    crop: int
    clip: torch.Tensor


def kinetics_test_indices(
    num_video_frames: int, num_frames: int = 16, sampling_rate: int = 4, num_segments: int = 5
) -> list[np.ndarray]:
    """Kinetics test clips (release ``kinetics.py``, ``mode == 'test'``).

    The release samples every ``sampling_rate``-th frame of the whole video,
    ``all_index = range(0, n, sampling_rate)``, pads it to ``num_frames`` by
    repeating the last index, and takes clip ``segment`` as ``num_frames``
    consecutive sampled frames starting at
    ``int(segment * max((len(all_index) - num_frames) / (num_segments - 1), 0))``.
    With ``num_segments == 1`` the release would divide by zero; we start at 0.

    ``num_video_frames``: the decoded frame count ``n`` (>= 1); ``num_frames``:
    frames per clip (``--num_frames``, 16); ``sampling_rate``: the temporal
    stride (``--sampling_rate``, 4); ``num_segments``: clips per video
    (``--test_num_segment``, 5). Returns ``num_segments`` int64 arrays of
    ``num_frames`` frame indices in ``0..n-1``.
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
    starts = [int(segment * step) for segment in range(num_segments)]
    return [sampled[s : s + num_frames].copy() for s in starts]


def ssv2_test_indices(
    num_video_frames: int, num_frames: int = 16, num_segments: int = 2
) -> list[np.ndarray]:
    """Something-Something V2 test clips (release ``ssv2.py``, ``mode == 'test'``).

    The release splits the video into ``num_frames`` equal segments
    (``tick = n / num_frames``), takes ``int(tick / 2 + tick * x)`` (segment
    centres) and ``int(tick * x)`` (segment starts), sorts the ``2 * num_frames``
    indices and gives view ``segment`` the indices ``segment::2``. Because
    ``int(tick*x) <= int(tick/2 + tick*x) <= int(tick*(x+1))``, view 0 is exactly
    the segment starts and view 1 exactly the segment centres.

    ``num_segments == 1`` (our choice): the segment centres, i.e. the usual
    single-clip TSN-style test sampling, which does not lean towards each
    segment's first frame. Note that the release's literal code, run with
    ``--test_num_segment 1``, would return the segment *starts* (its
    hard-coded ``temporal_start::2`` with ``temporal_start = 0``).

    ``num_segments > 2`` is rejected: the release hard-codes the stride 2, so it
    has no defined rule for more views (its clips would get the wrong length).

    ``num_video_frames``: the decoded frame count ``n`` (>= 1); ``num_frames``:
    frames per clip (16); ``num_segments``: 1 or 2 views
    (``--test_num_segment``, 2). Returns ``num_segments`` int64 arrays of
    ``num_frames`` frame indices in ``0..n-1``.
    """
    _check_positive(num_video_frames=num_video_frames, num_frames=num_frames, num_segments=num_segments)
    if num_segments > 2:
        raise InvalidInput(
            f"ssv2 test sampling defines 1 or 2 temporal views, got num_segments={num_segments}"
        )
    tick = num_video_frames / float(num_frames)
    centres = [int(tick / 2.0 + tick * x) for x in range(num_frames)]
    if num_segments == 1:
        return [np.asarray(centres, dtype=np.int64)]
    starts = [int(tick * x) for x in range(num_frames)]
    combined = np.sort(np.asarray(centres + starts, dtype=np.int64))
    return [combined[segment::2].copy() for segment in range(num_segments)]


def temporal_view_indices(num_video_frames: int, views: ViewProtocol) -> list[np.ndarray]:
    """Per-clip frame indices of a ``num_video_frames``-frame video under ``views``' protocol."""
    if views.protocol == "kinetics":
        return kinetics_test_indices(num_video_frames, views.num_frames, views.sampling_rate, views.num_segments)
    return ssv2_test_indices(num_video_frames, views.num_frames, views.num_segments)


def resized_hw(height: int, width: int, size: int) -> tuple[int, int]:
    """Output ``(height, width)`` of a short-side resize to ``size``.

    Same rule as the release's ``get_resize_sizes``: the short side becomes
    ``size`` and the long side ``int(size * long / short)`` (truncated, not
    rounded); a square frame becomes ``size x size``.
    """
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize_short_side(frames: torch.Tensor | np.ndarray, size: int = 224) -> np.ndarray:
    """Resize RGB frames so the short side is ``size``, exactly as the release does.

    The release's ``functional.resize_clip``: frames whose short side already
    is ``size`` come back unchanged; otherwise the size comes from
    :func:`resized_hw` and every uint8 frame goes through
    ``cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)``. OpenCV's
    uint8 bilinear runs in fixed point (11-bit weights), which float
    interpolation followed by rounding misses by one grey level at ~10% of
    pixels; calling OpenCV itself gives the release's bytes, whatever the
    thread count (tests check this).

    frames: ``N x H x W x 3`` uint8 (numpy or torch). Returns ``N x H' x W' x 3`` uint8 numpy.
    """
    _check_positive(size=size)
    x = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise InvalidInput(f"expected N x H x W x 3 uint8 frames, got shape {tuple(x.shape)} {x.dtype}")
    height, width = x.shape[1:3]
    if (width <= height and width == size) or (height <= width and height == size):
        return x
    out_h, out_w = resized_hw(height, width, size)
    out = np.empty((x.shape[0], out_h, out_w, 3), dtype=np.uint8)
    for i, frame in enumerate(x):  # one frame at a time, as the release: cv2 takes (width, height)
        cv2.resize(np.ascontiguousarray(frame), (out_w, out_h), dst=out[i], interpolation=cv2.INTER_LINEAR)
    return out


def spatial_crop_starts(long_side: int, crop_size: int = 224, num_crops: int = 3) -> list[int]:
    """Start offsets of the test crops along the long side.

    Release rule: ``spatial_step = (long_side - crop_size) / (num_crops - 1)`` and
    crop ``i`` starts at ``int(i * spatial_step)`` (left/centre/right, or
    top/centre/bottom). With one crop the release would divide by zero; we use
    the centre crop ``(long_side - crop_size) // 2``.
    """
    _check_positive(long_side=long_side, crop_size=crop_size, num_crops=num_crops)
    if long_side < crop_size:
        raise InvalidInput(f"long side {long_side} is shorter than crop size {crop_size}")
    if num_crops == 1:
        return [(long_side - crop_size) // 2]
    step = 1.0 * (long_side - crop_size) / (num_crops - 1)
    return [int(i * step) for i in range(num_crops)]


def normalize(frames: torch.Tensor | np.ndarray, mean: tuple[float, ...] = IMAGENET_MEAN,
              std: tuple[float, ...] = IMAGENET_STD) -> torch.Tensor:
    """Frames to model input: scale to [0, 1], subtract ``mean``, divide by ``std``, channels first.

    Bit-identical to the release's ``ClipToTensor`` (float64 ``/ 255``, then
    float32) + ``Normalize`` (float32 ``sub_(mean).div_(std)``): float32
    ``x / 255`` rounds to the same value for all 256 levels (checked in tests).

    ``frames``: ``T x H x W x 3`` uint8, or float already in [0, 1]. Returns
    ``3 x T x H x W`` float32 (contiguous), ``(x / 255 - mean[c]) / std[c]``.
    """
    x = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
    if x.ndim != 4 or x.shape[-1] != 3:
        raise InvalidInput(f"expected T x H x W x 3 frames, got shape {tuple(x.shape)}")
    x = x.permute(3, 0, 1, 2)
    if x.dtype == torch.uint8:
        # Transpose while still 1 byte per value, then work in place on the
        # fresh float32 tensor: ~3x faster than out-of-place float arithmetic.
        x = x.contiguous().to(torch.float32).div_(255.0)
    elif x.is_floating_point():
        x = x.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    else:
        raise TypeError(f"frames must be uint8 or floating point, got {x.dtype}")
    mean_t = torch.as_tensor(mean, dtype=torch.float32)[:, None, None, None]
    std_t = torch.as_tensor(std, dtype=torch.float32)[:, None, None, None]
    return x.sub_(mean_t).div_(std_t)


def to_uint8_frames(clip: torch.Tensor, mean: tuple[float, ...] = IMAGENET_MEAN,
                    std: tuple[float, ...] = IMAGENET_STD) -> np.ndarray:
    """:func:`normalize` undone: a ``3 x F x H x W`` model input -> ``F x H x W x 3`` uint8 frames (rounded)."""
    mean_t = torch.as_tensor(mean, dtype=clip.dtype)[:, None, None, None]
    std_t = torch.as_tensor(std, dtype=clip.dtype)[:, None, None, None]
    return ((clip * std_t + mean_t) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()


def _rows_for(frame_indices: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions of ``wanted`` frame indices in sorted unique ``frame_indices``."""
    rows = np.minimum(np.searchsorted(frame_indices, wanted), len(frame_indices) - 1)
    missing = wanted[frame_indices[rows] != wanted]
    if missing.size:
        raise InvalidInput(f"frames {missing[:8].tolist()} are needed but not in frame_indices")
    return rows


def make_test_views(
    frames: torch.Tensor | np.ndarray,
    views: ViewProtocol,
    *,
    frame_indices: np.ndarray | None = None,
    num_video_frames: int | None = None,
) -> list[ClipView]:
    """All test views of one video: temporal clips x spatial crops, segment-major, as the release orders them.

    Per view, as the release: resize the short side to ``views.crop_size``
    (the release resizes to ``short_side_size`` and crops windows of that size;
    its scripts set ``short_side_size = input_size``), take a square window
    along the LONG side (H when H >= W), normalise. Each needed frame is
    resized and normalised once, shared by all views.

    frames: ``K x H x W x 3`` uint8 RGB: the whole video (row ``i`` = frame
    ``i``), or the rows for ``frame_indices`` (sorted, unique; then
    ``num_video_frames`` is the video's length). Returns
    ``views.num_views`` ``ClipView(segment, crop, clip)``, clip ``3 x F x S x S`` float32.
    """
    x = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise InvalidInput(f"frames must be K x H x W x 3 uint8, got {tuple(x.shape)} {x.dtype}")
    if frame_indices is None:
        if num_video_frames is not None and num_video_frames != x.shape[0]:
            raise InvalidInput("without frame_indices, frames must hold the whole video")
        n, known = x.shape[0], np.arange(x.shape[0], dtype=np.int64)
    else:
        if num_video_frames is None:
            raise InvalidInput("frame_indices needs num_video_frames")
        n, known = num_video_frames, np.asarray(frame_indices, dtype=np.int64)
        if known.shape != (x.shape[0],) or np.any(np.diff(known) <= 0):
            raise InvalidInput("frame_indices must be sorted, unique, one per row of frames")

    size = views.crop_size
    clips = temporal_view_indices(n, views)
    needed = np.unique(np.concatenate(clips))
    rows = torch.from_numpy(_rows_for(known, needed))
    # Resize + normalise each needed frame once: 3 x U x H' x W'.
    ready = normalize(resize_short_side(x[rows], size), views.mean, views.std)
    height, width = ready.shape[-2:]
    starts = spatial_crop_starts(max(height, width), size, views.num_crops)
    out: list[ClipView] = []
    for segment, clip_idx in enumerate(clips):
        clip = ready[:, torch.from_numpy(np.searchsorted(needed, clip_idx))]
        for crop, s in enumerate(starts):
            # The release crops along H when H >= W, else along W.
            window = clip[:, :, s : s + size, :] if height >= width else clip[:, :, :, s : s + size]
            out.append(ClipView(segment, crop, window.contiguous()))
    return out
