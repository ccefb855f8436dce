"""The VideoMAE release's test views, re-stated op for op (numpy + OpenCV + torch), for comparison only.

Follows ``kinetics.py`` / ``ssv2.py`` (``mode == 'test'``), ``functional.resize_clip``,
``volume_transforms.ClipToTensor`` and ``video_transforms.Normalize`` of the release,
including its habits: it samples frame indices from the whole video, resizes the
sampled buffer before cutting clips, recomputes both steps inside the view loop,
and converts float64 -> float32 before dividing by 255. ``frames`` is the whole
decoded video, ``N x H x W x 3`` uint8 RGB (what decord returns).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def resize_clip(buffer: np.ndarray, size: int) -> np.ndarray:
    height, width = buffer.shape[1:3]
    if (width <= height and width == size) or (height <= width and height == size):
        return buffer
    if width < height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_h, new_w = size, int(size * width / height)
    return np.stack([cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR) for frame in buffer])


def to_model_input(buffer: np.ndarray) -> torch.Tensor:
    clip = np.zeros([3, len(buffer), buffer.shape[1], buffer.shape[2]])  # float64, as ClipToTensor
    clip[:] = buffer.transpose(3, 0, 1, 2)
    tensor = torch.div(torch.from_numpy(clip).float(), 255)
    mean = torch.as_tensor(MEAN, dtype=tensor.dtype)[:, None, None, None]
    std = torch.as_tensor(STD, dtype=tensor.dtype)[:, None, None, None]
    return tensor.sub_(mean).div_(std)


def sampled_indices(n: int, protocol: str, clip_len: int, rate: int, segments: int) -> list[int]:
    if protocol == "kinetics":
        indices = list(range(0, n, rate))
        while len(indices) < clip_len:
            indices.append(indices[-1])
        return indices
    tick = n / float(clip_len)
    indices = [int(tick / 2.0 + tick * x) for x in range(clip_len)] + [int(tick * x) for x in range(clip_len)]
    return sorted(indices)


def release_views(frames: np.ndarray, protocol: str, short_side: int, clip_len: int = 16, rate: int = 4,
                  segments: int = 5, crops: int = 3) -> dict[tuple[int, int], torch.Tensor]:
    """``{(chunk, crop): 3 x clip_len x S x S}`` for ``segments >= 2`` and ``crops >= 2`` (the release divides by
    ``segments - 1`` and ``crops - 1``)."""
    buffer = resize_clip(frames[sampled_indices(len(frames), protocol, clip_len, rate, segments)], short_side)
    views = {}
    for chunk in range(segments):
        for crop in range(crops):
            spatial_step = 1.0 * (max(buffer.shape[1], buffer.shape[2]) - short_side) / (crops - 1)
            start = int(crop * spatial_step)
            if protocol == "kinetics":
                temporal_step = max(1.0 * (buffer.shape[0] - clip_len) / (segments - 1), 0)
                t0 = int(chunk * temporal_step)
                clip = buffer[t0 : t0 + clip_len]
            else:
                clip = buffer[chunk::2]
            if buffer.shape[1] >= buffer.shape[2]:
                clip = clip[:, start : start + short_side, :, :]
            else:
                clip = clip[:, :, start : start + short_side, :]
            views[(chunk, crop)] = to_model_input(clip)
    return views
