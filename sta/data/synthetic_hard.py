"""The hard proxy task: a small handwritten digit, seen for a few frames, among clutter.

The easy task (:mod:`sta.data.synthetic`) gives every reducer, random dropping
included, 99-100% down to a quarter of the tokens: its target is large, colour
coded and visible in every frame. This task asks for what real video asks for,
and what token reducers disagree about:

- **Small object, a few frames.** The target is a handwritten digit (0, 1 or 2)
  of 13-17 px on a 64 px frame (about 2 x 2 patches), visible only for 6-10
  consecutive frames (3-5 of the 8 temporal slices) somewhere in the clip.
  Classes differ in those few patches of those few frames.
- **Motion decides.** The class is the digit and its direction of motion
  (left, right, up, down): 3 x 4 = 12 classes. The direction is the object's
  own motion, not its motion on screen.
- **Static background, or a pan that moves everything.** The background is a
  textured field; in half the clips the camera pans, moving the background and
  every object together, so no token repeats its previous frame.
- **Clutter and distractors.** Static digits of any class (0-9: target digits
  too) lie on the background, and moving digits of other classes (3-9) cross
  it for the whole clip, each in a random saturated colour. The target is drawn
  near white, so it stands out as the actor of a real clip does (a first run
  with the target coloured like the clutter stayed at chance for 550 steps:
  nothing tied any token to the label); which digit it is, and where it goes,
  still take its shape and its motion over the few frames it is seen.
- **Held-out handwriting.** Digit images come from the 1,797 samples of the UCI
  handwritten digits set (``sta/data/assets/digits.npz``). The train stream draws
  from three in four samples, the test stream only from the fourth, so test clips
  show digits the model never saw written that way.

Clips are ``B x 3 x T x H x W`` float32, ImageNet-normalised, like the easy task's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from sta.data.synthetic import (
    MAX_CLIPS,
    _background,
    _balanced_labels,
    _photometric_and_normalise,
    _stream_seed,
    _uniform,
    _wrapped_offsets,
)
from sta.errors import InvalidInput

DIGITS_FILE = Path(__file__).resolve().parent / "assets" / "digits.npz"
TARGET_DIGITS = (0, 1, 2)
DISTRACTOR_DIGITS = (3, 4, 5, 6, 7, 8, 9)
DIRECTIONS = ("left", "right", "up", "down")
_DIRECTION_XY = ((-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))  # image coordinates: x right, y down
# Class c = digit index * len(DIRECTIONS) + direction.
CLASS_NAMES = tuple(f"digit{d}_{direction}" for d in TARGET_DIGITS for direction in DIRECTIONS)
TEST_SAMPLE_EVERY = 4  # sample i of the digit set is a test digit when i % 4 == 0, a train digit otherwise


@dataclass(frozen=True)
class HardTask:
    """Generator settings of the hard task. Lengths in pixels, speeds in pixels per frame."""

    num_frames: int = 16  # 8 temporal slices with tubelet 2
    size: int = 64  # 8 x 8 patches of 8 pixels
    # Target: a digit of TARGET_DIGITS, seen for `visible` consecutive frames.
    target_size: tuple[float, float] = (13.0, 17.0)
    speed: tuple[float, float] = (1.2, 2.2)  # along the class direction, own motion
    drift: float = 0.3  # at most this much sideways speed
    visible: tuple[int, int] = (6, 10)  # frames the target is on screen (inclusive range)
    # Clutter: static digits of any class; distractors: moving digits of DISTRACTOR_DIGITS.
    clutter: tuple[int, int] = (2, 4)  # how many (inclusive range)
    distractors: tuple[int, int] = (1, 3)
    object_size: tuple[float, float] = (10.0, 14.0)  # clutter and distractors
    distractor_speed: tuple[float, float] = (0.5, 2.0)
    # Background and camera (the fields the easy task's background generator reads).
    gratings: int = 4
    period: tuple[float, float] = (6.0, 28.0)
    background: tuple[float, float] = (0.2, 0.45)
    texture_contrast: float = 0.08
    pan_prob: float = 0.5  # clips whose camera pans: background and every object move together
    pan_speed: float = 0.6  # at most (px/frame); below the target's slowest own speed
    # Photometric jitter and noise, per clip (pixel values in 0..1).
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.8, 1.2)
    noise_std: float = 0.03

    @property
    def num_classes(self) -> int:
        return len(TARGET_DIGITS) * len(DIRECTIONS)

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES

    def make_clips(self, num_clips: int, seed: int, split: str = "train") -> tuple[Tensor, Tensor]:
        return make_hard_clips(self, num_clips, seed, split)


HARD_TASK = HardTask()


@lru_cache(maxsize=1)
def _digit_bank() -> tuple[Tensor, Tensor]:
    """The digit images as ``N x 1 x 8 x 8`` float ink in [0, 1], and their labels (``N`` int64)."""
    import numpy as np

    if not DIGITS_FILE.is_file():
        raise InvalidInput(f"{DIGITS_FILE} is missing: the hard proxy task draws its digits from it")
    with np.load(DIGITS_FILE) as data:
        images = torch.from_numpy(data["images"].astype("float32") / 16.0)
        labels = torch.from_numpy(data["labels"].astype("int64"))
    return images[:, None], labels


def _pools(split: str) -> dict[int, Tensor]:
    """Indices into the digit bank for each digit value, on ``split``'s side of the train/test split."""
    _, labels = _digit_bank()
    index = torch.arange(labels.numel())
    side = (index % TEST_SAMPLE_EVERY == 0) if split == "test" else (index % TEST_SAMPLE_EVERY != 0)
    return {d: index[side & (labels == d)] for d in range(10)}


def _pick(gen: torch.Generator, pools: dict[int, Tensor], digit: Tensor) -> Tensor:
    """One sample index per entry of ``digit`` (any shape), uniform within that digit's pool."""
    flat = digit.reshape(-1)
    u = torch.rand(flat.numel(), generator=gen)
    picked = torch.empty_like(flat)
    for d, pool in pools.items():
        idx = (flat == d).nonzero().squeeze(1)
        if idx.numel():
            picked[idx] = pool[(u[idx] * pool.numel()).long().clamp_(max=pool.numel() - 1)]
    return picked.reshape(digit.shape)


def _sprite_alpha(sprite: Tensor, size: Tensor, centre_x: Tensor, centre_y: Tensor, S: int) -> Tensor:
    """Coverage in [0, 1] of each clip's digit: ``B x T x H x W``.

    ``sprite``: ``B x 1 x 8 x 8`` ink; ``size``: ``B`` full width in pixels;
    ``centre_x`` / ``centre_y``: ``B x T`` positions (wrapped on the torus).
    The 8 x 8 ink is sampled bilinearly at every pixel, then sharpened into strokes.
    """
    B, T = centre_x.shape
    coords = torch.arange(S, dtype=torch.float32) + 0.5
    half = (size / 2)[:, None, None]
    gx = (_wrapped_offsets(centre_x, coords, S) / half)[:, :, None, :].expand(B, T, S, S)  # B x T x H x W
    gy = (_wrapped_offsets(centre_y, coords, S) / half)[:, :, :, None].expand(B, T, S, S)
    grid = torch.stack((gx, gy), -1).reshape(B, T * S, S, 2)
    ink = F.grid_sample(sprite, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return ink.reshape(B, T, S, S).mul_(2.5).sub_(0.5).clamp_(0, 1)  # ink 0.2 -> 0, 0.6 -> 1: crisp strokes


def _saturated_colour(gen: torch.Generator, n: int) -> Tensor:
    """Bright saturated colours, never near white: one channel near 1, one anywhere, one at most 0.4."""
    colour = _uniform(gen, n, 0.0, 0.4, 3)
    channels = torch.rand(n, 3, generator=gen).argsort(1)  # a random order of the three channels
    colour.scatter_(1, channels[:, :1], _uniform(gen, n, 0.85, 1.0, 1))
    return colour.scatter_(1, channels[:, 1:2], torch.rand(n, 1, generator=gen))


def _count_mask(gen: torch.Generator, B: int, counts: tuple[int, int]) -> Tensor:
    """``B x max`` booleans: slot k of clip b is used when k < that clip's count (uniform in ``counts``)."""
    low, high = counts
    n = torch.randint(low, high + 1, (B,), generator=gen)
    return torch.arange(high)[None, :] < n[:, None]


def make_hard_clips(task: HardTask, num_clips: int, seed: int, split: str = "train") -> tuple[Tensor, Tensor]:
    """``num_clips`` clips of ``task`` and their labels, deterministic in ``(task, num_clips, seed, split)``.

    Classes are balanced as in :func:`sta.data.synthetic.make_clips`; train and
    test use disjoint random streams and disjoint digit samples.
    """
    if not 1 <= num_clips <= MAX_CLIPS:
        raise InvalidInput(f"num_clips must be 1 to {MAX_CLIPS} (the clips are generated in memory), got {num_clips}",
                           param="num_clips")
    gen = torch.Generator().manual_seed(_stream_seed(seed, split))
    bank, _ = _digit_bank()
    pools = _pools(split)
    B, T, S, C = num_clips, task.num_frames, task.size, task.num_classes
    labels = _balanced_labels(gen, B, C)
    digit = torch.tensor(TARGET_DIGITS)[labels // len(DIRECTIONS)]
    direction = torch.tensor(_DIRECTION_XY)[labels % len(DIRECTIONS)]  # B x 2

    coords = torch.arange(S, dtype=torch.float32) + 0.5
    t = torch.arange(T, dtype=torch.float32) - (T - 1) / 2
    frames, pan = _background(gen, task, B, coords, t)  # pan: B x 2, px/frame, the camera's motion on screen

    def draw(sample: Tensor, size: Tensor, mid: Tensor, vel: Tensor, shown: Tensor, white: bool = False) -> None:
        """Paint one object per clip: mid-clip position ``mid`` (B x 2), screen velocity ``vel`` (B x 2),
        ``shown`` (B x T) where it is on screen; in a saturated colour, or near white."""
        path = mid[:, :, None] + vel[:, :, None] * t  # B x 2 x T
        alpha = _sprite_alpha(bank[sample], size, path[:, 0], path[:, 1], S) * shown[:, :, None, None]
        colour = _uniform(gen, B, 0.9, 1.0, 3) if white else _saturated_colour(gen, B)
        frames.lerp_(colour[:, :, None, None, None].expand_as(frames), alpha[:, None])

    always = torch.ones(B, T)
    # Clutter: static digits of any class, carried by the camera only.
    used = _count_mask(gen, B, task.clutter)
    for k in range(task.clutter[1]):
        sample = _pick(gen, pools, torch.randint(10, (B,), generator=gen))
        size = _uniform(gen, B, *task.object_size)
        draw(sample, size, _uniform(gen, B, 0.0, S, 2), pan, always * used[:, k : k + 1])
    # Distractors: moving digits that are never a target digit, on screen all clip.
    used = _count_mask(gen, B, task.distractors)
    others = torch.tensor(DISTRACTOR_DIGITS)
    for k in range(task.distractors[1]):
        sample = _pick(gen, pools, others[torch.randint(len(others), (B,), generator=gen)])
        size = _uniform(gen, B, *task.object_size)
        angle = _uniform(gen, B, 0.0, 2 * math.pi)
        vel = torch.stack((torch.cos(angle), torch.sin(angle)), 1) * _uniform(gen, B, *task.distractor_speed)[:, None]
        draw(sample, size, _uniform(gen, B, 0.0, S, 2), vel + pan, always * used[:, k : k + 1])
    # Target, drawn last: own motion along the class direction (plus drift), seen for a window of frames.
    speed = _uniform(gen, B, *task.speed)
    drift = _uniform(gen, B, -task.drift, task.drift)
    vel = direction * speed[:, None] + direction.flip(1) * drift[:, None]
    length = torch.randint(task.visible[0], task.visible[1] + 1, (B,), generator=gen)
    start = (torch.rand(B, generator=gen) * (T - length + 1)).long()
    frame = torch.arange(T)[None, :]
    shown = ((frame >= start[:, None]) & (frame < (start + length)[:, None])).float()
    sample = _pick(gen, pools, digit)
    draw(sample, _uniform(gen, B, *task.target_size), _uniform(gen, B, 0.0, S, 2), vel + pan, shown, white=True)

    return _photometric_and_normalise(gen, task, frames), labels
