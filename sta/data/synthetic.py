"""A procedurally generated video task: the synthetic proxy the bundled model was trained on.

No pretrained VideoMAE weights or Kinetics videos can be fetched everywhere,
and pruning measured on random weights says nothing about accuracy. So the
package carries its own proxy: a synthetic classification task with the
redundancy real video has, and a depth-12 VideoMAE ViT trained on it
(``benchmarks/train_proxy.py``), bundled as ``sta/models/assets/proxy_vit.pth``
(:mod:`sta.models.bundled` loads it).

The task (every number in :class:`ProxyTask`):

- **Background**: a smooth coloured texture (a few oriented sine gratings),
  static in half the clips and panning slowly (at most half a pixel per frame)
  in the rest. Most tokens therefore repeat from frame to frame, which is what
  STA removes.
- **Target**: one object whose shape (square, disc, triangle; each in its own
  colour family: reddish, greenish, bluish) and motion
  direction (left, right, up, down; a few pixels per frame, with a small
  sideways drift) together give the class: 3 x 4 = 12 classes. Positions wrap
  around the frame edges and the mid-clip position is uniform, so any single
  frame is independent of the direction: the class needs appearance *and*
  motion (at least two frames).
- **Distractor**: a smaller object of random shape moving in a random
  direction, so "something moves right" is not enough either.
- Per-clip colour jitter (brightness, contrast) and per-pixel noise.

Clips come out as the model expects real video: ``B x 3 x T x H x W`` float32,
normalised with the ImageNet mean and std (``sta.data.normalize``'s constants).
Everything is vectorised over the batch; 64 clips of 16 x 64 x 64 take a
fraction of a second on one CPU core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from sta.core.contract import IMAGENET_MEAN, IMAGENET_STD
from sta.errors import InvalidInput

SHAPES = ("square", "disc", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
# Unit motion per direction in image coordinates (x right, y down).
_DIRECTION_XY = ((-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))
# Class c = shape * len(DIRECTIONS) + direction.
CLASS_NAMES = tuple(f"{shape}_{direction}" for shape in SHAPES for direction in DIRECTIONS)

SPLITS = ("train", "test")

HELD_OUT_SEED = 1234  # the held-out clips of `sta demo` / `sta gradnorm`: the test stream, never seen in training
HELD_OUT_CLIPS = 240  # 20 per class
MAX_CLIPS = 4800  # 3.8 GB of 16 x 64 x 64 clips
SAMPLING_RATE = 1  # a proxy clip is 16 consecutive frames: its videos are sampled with every frame


@dataclass(frozen=True)
class ProxyTask:
    """Generator settings. Lengths are in pixels, speeds in pixels per frame."""

    num_frames: int = 16  # frames per clip (8 temporal slices with tubelet 2)
    size: int = 64  # frame height = width (8 x 8 patches of 8 pixels)
    # Target object: full width of its bounding box, and speed along the class direction.
    object_size: tuple[float, float] = (12.0, 18.0)
    speed: tuple[float, float] = (1.5, 2.5)  # 24-40 px over 16 frames: clearly visible motion
    drift: float = 0.3  # at most this much sideways speed, so directions are not exactly axis-aligned
    # Distractor: smaller, any shape, any direction, any speed up to distractor_speed.
    distractor_size: tuple[float, float] = (5.0, 8.0)
    distractor_speed: float = 2.5
    # Background: `gratings` oriented sine waves with periods in `period` px.
    gratings: int = 4
    period: tuple[float, float] = (6.0, 28.0)
    background: tuple[float, float] = (0.2, 0.45)  # range of each channel of the background's mean colour
    texture_contrast: float = 0.08  # amplitude of each grating (4 x 0.08: background within ~0-0.8)
    pan_prob: float = 0.5  # fraction of clips whose background pans (the rest are static)
    pan_speed: float = 0.5  # panning speed, at most (px/frame)
    # Photometric jitter, per clip, and per-pixel Gaussian noise (pixel values in 0..1).
    brightness: float = 0.1  # added offset in [-b, b]
    contrast: tuple[float, float] = (0.8, 1.2)  # gain around 0.5
    noise_std: float = 0.02

    @property
    def num_classes(self) -> int:
        return len(SHAPES) * len(DIRECTIONS)

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    def make_clips(self, num_clips: int, seed: int, split: str = "train") -> tuple[Tensor, Tensor]:
        return make_clips(self, num_clips, seed, split)


PROXY_TASK = ProxyTask()


def _stream_seed(seed: int, split: str) -> int:
    """Train and test draw from disjoint generator seeds (even / odd), so they never share a clip."""
    if split not in SPLITS:
        raise InvalidInput(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative int, got {seed!r}")
    return 2 * seed + SPLITS.index(split)


def _uniform(gen: torch.Generator, n: int, low: float, high: float, *shape: int) -> Tensor:
    return low + (high - low) * torch.rand(n, *shape, generator=gen)


def _square(dx: Tensor, dy: Tensor, half: Tensor) -> Tensor:
    # 0.9: a slightly smaller square, so the three shapes cover similar areas.
    return torch.maximum(dx.abs(), dy.abs()) - 0.9 * half


def _disc(dx: Tensor, dy: Tensor, half: Tensor) -> Tensor:
    return torch.sqrt(dx * dx + dy * dy) - half


def _triangle(dx: Tensor, dy: Tensor, half: Tensor) -> Tensor:
    # Pointing up (y grows downwards): apex (0, -half), base on y = +half, half-base = half.
    return torch.maximum(dy - half, (dx.abs() - (dy + half) / 2) / math.sqrt(1.25))


_SIGNED_DISTANCE = (_square, _disc, _triangle)  # in SHAPES order


def _shape_coverage(shape_id: Tensor, size: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """Anti-aliased coverage in [0, 1] of each clip's object: ``B x T x H x W``.

    ``shape_id`` and ``size`` (full width) are per clip (``B``); ``dx`` is
    ``B x T x 1 x W`` and ``dy`` ``B x T x H x 1``, the pixels' offsets from
    the object's centre. Clips are grouped by shape (a loop over the three
    shapes, not over clips), each group's signed distance computed at once.
    """
    B, T, W = dx.shape[0], dx.shape[1], dx.shape[3]
    H = dy.shape[2]
    sdf = torch.empty(B, T, H, W)
    half = (size / 2)[:, None, None, None]
    for k, distance in enumerate(_SIGNED_DISTANCE):
        idx = (shape_id == k).nonzero().squeeze(1)
        if idx.numel():
            sdf[idx] = distance(dx[idx], dy[idx], half[idx])
    return sdf.neg_().add_(0.5).clamp_(0, 1)  # 1 inside, 0 outside, a one-pixel ramp at the edge


def _object_colour(gen: torch.Generator, n: int) -> Tensor:
    """Bright colours: two channels near 1, the third anywhere (white, yellow, cyan, magenta and between).

    Objects are always brighter than the darker textured background, as a lit
    object in front of a background usually is.
    """
    colour = _uniform(gen, n, 0.85, 1.0, 3)
    free = torch.randint(3, (n, 1), generator=gen)
    return colour.scatter(1, free, torch.rand(n, 1, generator=gen))


def _shape_colour(gen: torch.Generator, shape_id: Tensor) -> Tensor:
    """The target's colour family follows its shape (square red, disc green, triangle blue), jittered.

    Appearance is then learnable from a few thousand clips by a small ViT trained
    from scratch on CPU (shape from edges alone took far longer); the direction
    still has to come from motion across frames.
    """
    n = shape_id.shape[0]
    colour = _uniform(gen, n, 0.05, 0.3, 3)
    return colour.scatter(1, shape_id[:, None], _uniform(gen, n, 0.75, 0.95, 1))


def _wrapped_offsets(centre: Tensor, coords: Tensor, size: int) -> Tensor:
    """Offset of each pixel from the object centre on a torus of side ``size``.

    ``centre``: B x T, ``coords``: pixel centres (length ``size``) -> B x T x size.
    """
    d = coords[None, None, :] - centre[:, :, None]
    return torch.remainder(d + size / 2, size) - size / 2


def _background(gen: torch.Generator, task: ProxyTask, B: int, coords: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of oriented gratings, panned by (pan_x, pan_y) per frame: ``B x 3 x T x H x W``, and the pan (``B x 2``).

    The texture moves on screen by ``pan`` pixels per frame (zero in static clips).

    Draws from ``gen`` in a fixed order: the clips (and the bundled model's accuracy on them) depend on it.
    """
    T, S = task.num_frames, task.size
    K = task.gratings
    angle = _uniform(gen, B, 0.0, 2 * math.pi, K)
    freq = 2 * math.pi / _uniform(gen, B, *task.period, K)  # B x K, radians per pixel
    fx, fy = freq * torch.cos(angle), freq * torch.sin(angle)
    phase = _uniform(gen, B, 0.0, 2 * math.pi, K)
    tint = _uniform(gen, B, -1.0, 1.0, K, 3) * task.texture_contrast  # B x K x 3
    base = _uniform(gen, B, *task.background, 3)  # B x 3 mean colour
    pans = torch.rand(B, generator=gen) < task.pan_prob
    pan_angle = _uniform(gen, B, 0.0, 2 * math.pi)
    pan_speed = _uniform(gen, B, 0.2, 1.0) * task.pan_speed * pans
    pan = torch.stack((torch.cos(pan_angle), torch.sin(pan_angle)), 1) * pan_speed[:, None]  # B x 2
    # Grating k at pixel (x, y), frame t: sin(fx (x - pan_x t) + fy (y - pan_y t) + phase), i.e. the
    # imaginary part of a product of per-axis complex exponentials; the sum over k is one batched matmul.
    shift = -(fx * pan[:, :1] + fy * pan[:, 1:])  # B x K: phase change per frame
    one = torch.ones(())
    et = torch.polar(one, phase[:, :, None] + shift[:, :, None] * t)  # B x K x T
    ey = torch.polar(one, fy[:, :, None] * coords)  # B x K x H
    ex = torch.polar(one, fx[:, :, None] * coords)  # B x K x W
    cty = torch.einsum("bkc,bkt,bky->bctyk", tint.to(torch.complex64), et, ey).reshape(B, 3 * T * S, K)
    texture = torch.bmm(cty, ex).imag.reshape(B, 3, T, S, S)
    return base[:, :, None, None, None] + texture, pan


def _balanced_labels(gen: torch.Generator, B: int, C: int) -> Tensor:
    """``B`` labels of ``C`` classes: each ``B // C`` times, a random ``B % C`` of them once more, shuffled."""
    extra = torch.randperm(C, generator=gen)[: B % C]
    return torch.cat((torch.arange(C).repeat(B // C), extra))[torch.randperm(B, generator=gen)]


def _photometric_and_normalise(gen: torch.Generator, task, frames: Tensor) -> Tensor:
    """Per-clip jitter ``(x - 0.5) * gain + 0.5 + offset``, sensor noise, clipping to 0..1, ImageNet normalisation
    (in place; ``task`` gives ``contrast``, ``brightness``, ``noise_std``)."""
    B = frames.shape[0]
    gain = _uniform(gen, B, *task.contrast)[:, None, None, None, None]
    offset = _uniform(gen, B, -task.brightness, task.brightness)[:, None, None, None, None]
    frames.mul_(gain).add_(0.5 - 0.5 * gain + offset)
    frames.add_(torch.randn(frames.shape, generator=gen), alpha=task.noise_std).clamp_(0, 1)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None, None]
    return frames.sub_(mean).div_(std)


def make_clips(task: ProxyTask, num_clips: int, seed: int, split: str = "train") -> tuple[Tensor, Tensor]:
    """``num_clips`` clips of ``task`` and their labels, deterministic in ``(task, num_clips, seed, split)``.

    Returns ``clips`` (``B x 3 x T x H x W`` float32, ImageNet-normalised) and
    ``labels`` (``B`` int64, index into :data:`CLASS_NAMES`). Classes are
    balanced: every class appears ``num_clips // num_classes`` times, and a
    seeded random ``num_clips % num_classes`` of them once more, in a seeded
    random order.
    ``split`` is ``"train"`` or ``"test"``; the two splits use disjoint random
    streams for every seed.
    """
    if not 1 <= num_clips <= MAX_CLIPS:  # generated at once, in memory
        raise InvalidInput(f"num_clips must be 1 to {MAX_CLIPS} (the clips are generated in memory), got {num_clips}",
                           param="num_clips")
    gen = torch.Generator().manual_seed(_stream_seed(seed, split))
    B, T, S = num_clips, task.num_frames, task.size
    C = task.num_classes
    # Every class num_clips // C times, plus a random subset of classes once more, in a random order:
    # balanced, and no class favoured across batches whose size is not a multiple of C.
    labels = _balanced_labels(gen, B, C)
    shape_id = labels // len(DIRECTIONS)
    direction = torch.tensor(_DIRECTION_XY)[labels % len(DIRECTIONS)]  # B x 2

    coords = torch.arange(S, dtype=torch.float32) + 0.5  # pixel centres
    t = torch.arange(T, dtype=torch.float32) - (T - 1) / 2  # time around the clip's middle

    frames, _ = _background(gen, task, B, coords, t)  # B x 3 x T x H x W

    # Distractor (drawn first, so the target passes over it).
    d_shape = torch.randint(len(SHAPES), (B,), generator=gen)
    d_size = _uniform(gen, B, *task.distractor_size)
    d_angle = _uniform(gen, B, 0.0, 2 * math.pi)
    d_speed = _uniform(gen, B, 0.0, task.distractor_speed)
    d_vel = torch.stack((torch.cos(d_angle), torch.sin(d_angle)), 1) * d_speed[:, None]
    d_mid = _uniform(gen, B, 0.0, S, 2)
    d_colour = _object_colour(gen, B)

    # Target: speed along the class direction plus a small sideways drift; mid-clip position uniform.
    speed = _uniform(gen, B, *task.speed)
    drift = _uniform(gen, B, -task.drift, task.drift)
    side = direction.flip(1)  # perpendicular axis
    vel = direction * speed[:, None] + side * drift[:, None]
    size = _uniform(gen, B, *task.object_size)
    mid = _uniform(gen, B, 0.0, S, 2)
    colour = _shape_colour(gen, shape_id)

    for shp, sz, mid_xy, v, col in ((d_shape, d_size, d_mid, d_vel, d_colour), (shape_id, size, mid, vel, colour)):
        dx = _wrapped_offsets(mid_xy[:, :1] + v[:, :1] * t, coords, S)[:, :, None, :]  # B x T x 1 x W
        dy = _wrapped_offsets(mid_xy[:, 1:] + v[:, 1:] * t, coords, S)[:, :, :, None]  # B x T x H x 1
        alpha = _shape_coverage(shp, sz, dx, dy)[:, None]  # B x 1 x T x H x W
        frames.lerp_(col[:, :, None, None, None].expand_as(frames), alpha)  # paint the object over the frames

    return _photometric_and_normalise(gen, task, frames), labels
