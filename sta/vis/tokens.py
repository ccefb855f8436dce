"""The paper's two pictures for any video: which tokens STA keeps, and where GradNorm puts the semantics.

Images are composed pixel-exactly with numpy (each frame at its input
resolution, no resampling) and written with Pillow, so every dropped token's
patch is exactly white in the PNG and tests can check it. Pillow comes with
the ``plot`` extra (``pip install "sta-prune[plot]"``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sta.core.contract import ClipClassifier
from sta.core.schedule import format_r
from sta.data import ViewProtocol, read_test_views
from sta.data.sampling import to_uint8_frames
from sta.measure.flops import flops_report
from sta.measure.gradnorm import token_gradnorm
from sta.utils.optional import require_pillow

GAP = 4  # pixels between tiles
HEADER = 28  # pixels of title band above a grid
LABEL = 96  # pixels of row-label column left of a grid
# A perceptual dark-to-bright colour ramp (anchor points of matplotlib's "inferno").
DROPPED_COLOUR, DROPPED_MIX = np.array([255.0, 0.0, 255.0]), 0.7  # magenta over 70% of a dropped patch
INFERNO = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                    [245, 125, 21], [250, 193, 39], [252, 255, 164]], dtype=np.float64)


# --------------------------------------------------------------------------- inputs

def sample_clip(video: str | Path, model: ClipClassifier, protocol: str = "kinetics",
                sampling_rate: int = 4) -> tuple[Tensor, np.ndarray]:
    """The evaluation's sampling with one temporal segment and the centre crop.

    Returns the model input ``3 x F x H x W`` (normalised) and the same frames
    for display, ``F x H x W x 3`` uint8.
    """
    cfg = model.cfg
    views = ViewProtocol(protocol, num_frames=cfg.num_frames, sampling_rate=sampling_rate, num_segments=1,
                         num_crops=1, crop_size=cfg.img_size, mean=cfg.mean, std=cfg.std)
    clip = read_test_views(video, views)[0].clip
    return clip, to_uint8_frames(clip, views.mean, views.std)


# --------------------------------------------------------------------------- token maps

def kept_masks(positions: list[Tensor], num_tokens: int) -> np.ndarray:
    """``positions[k]``: ``L_k`` original positions alive after stage k -> bool ``stages x T*S``."""
    masks = np.zeros((len(positions), num_tokens), dtype=bool)
    for k, pos in enumerate(positions):
        masks[k, pos.cpu().numpy()] = True
    return masks


def token_grid(values: np.ndarray, model: ClipClassifier) -> np.ndarray:
    """``T*S`` per-token values -> ``F x H x W`` per-pixel map (each token covers its tubelet and patch)."""
    cfg = model.cfg
    side = cfg.img_size // cfg.patch_size
    grid = values.reshape(cfg.num_slices, side, side)
    grid = np.repeat(np.repeat(grid, cfg.patch_size, axis=1), cfg.patch_size, axis=2)
    return np.repeat(grid, cfg.tubelet_size, axis=0)


def paint_dropped(frames: np.ndarray, kept: np.ndarray, model: ClipClassifier) -> np.ndarray:
    """Frames ``F x H x W x 3`` with every dropped token's patch (both frames of its tubelet) tinted magenta:
    a colour natural video rarely has, so the mark reads on a white wall and on a dark one alike."""
    out = frames.copy()
    dropped = ~token_grid(kept, model).astype(bool)
    out[dropped] = tint(out[dropped])
    return out


def tint(pixels: np.ndarray) -> np.ndarray:
    """The dropped-token mark: ``DROPPED_MIX`` of magenta over the pixel (uint8 in, uint8 out)."""
    return np.round((1 - DROPPED_MIX) * pixels + DROPPED_MIX * DROPPED_COLOUR).astype(np.uint8)


def robust_range(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """The 1st..99th percentile of ``values``: a few very strong tokens must not turn the rest of a map black."""
    lo, hi = (float(v) for v in np.percentile(values, [low, high]))
    return (lo, hi) if hi > lo else (float(values.min()), float(values.max()))


def log_scale(values: np.ndarray) -> np.ndarray:
    """log10 of non-negative values, zeros lifted to a millionth of the largest (a map of all zeros stays flat)."""
    floor = max(float(values.max()) * 1e-6, np.finfo(np.float64).tiny)
    return np.log10(np.maximum(values, floor))


def colorize(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Values -> uint8 RGB through the colour ramp, scaled to ``lo..hi`` (default: their own min..max), clipped."""
    lo = float(values.min()) if lo is None else lo
    hi = float(values.max()) if hi is None else hi
    values = np.clip(values, lo, hi)
    t = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values, dtype=np.float64)
    x = t * (len(INFERNO) - 1)
    i = np.clip(np.floor(x).astype(int), 0, len(INFERNO) - 2)
    frac = (x - i)[..., None]
    return np.round(INFERNO[i] * (1 - frac) + INFERNO[i + 1] * frac).astype(np.uint8)


def outline_kept(frames: np.ndarray, kept: np.ndarray, model: ClipClassifier,
                 colour=(0, 255, 0)) -> np.ndarray:
    """Frames with a 1-pixel outline around every kept token's patch."""
    cfg = model.cfg
    p, side = cfg.patch_size, cfg.img_size // cfg.patch_size
    out = frames.copy()
    for token in np.flatnonzero(kept):
        tau, s = divmod(int(token), side * side)
        y, x = divmod(s, side)
        tile = out[tau * cfg.tubelet_size : (tau + 1) * cfg.tubelet_size, y * p : (y + 1) * p, x * p : (x + 1) * p]
        tile[:, [0, -1], :] = colour
        tile[:, :, [0, -1]] = colour
    return out


# --------------------------------------------------------------------------- layout

@dataclass(frozen=True)
class GridLayout:
    """Where tile (row, col) sits in a composed image: top-left pixel."""

    tile_h: int
    tile_w: int
    header: int = HEADER  # title band height (taller for wide images, whose text is larger)
    label: int = LABEL

    @classmethod
    def for_tiles(cls, cols: int, tile_h: int, tile_w: int) -> GridLayout:
        """The layout of ``cols`` tiles per row, its text size grown with the image's width."""
        font = cls.font_size(cols, tile_w)
        return cls(tile_h, tile_w, header=max(HEADER, 2 * font + 8), label=max(LABEL, 8 * font))

    @staticmethod
    def font_size(cols: int, tile_w: int) -> int:
        return max(11, (LABEL + cols * (tile_w + GAP)) // 110)  # ViT-B's 16 frames of 224: 34 px text

    def origin(self, row: int, col: int) -> tuple[int, int]:
        return self.header + row * (self.tile_h + GAP), self.label + col * (self.tile_w + GAP)

    def size(self, rows: int, cols: int) -> tuple[int, int]:
        return self.header + rows * (self.tile_h + GAP), self.label + cols * (self.tile_w + GAP)


def compose(rows: list[np.ndarray], title: str, row_labels: list[str], colour_bar: tuple[str, str] | None = None):
    """Rows of ``F x H x W x 3`` tiles -> one PIL image with a title band, row labels and (``colour_bar``: the
    texts at its two ends) the colour ramp as a bar in the title band. Text grows with the image's width."""
    Image, ImageDraw = require_pillow()
    from PIL import ImageFont

    n_cols, tile_h, tile_w = rows[0].shape[0], rows[0].shape[1], rows[0].shape[2]
    layout = GridLayout.for_tiles(n_cols, tile_h, tile_w)
    font_size = GridLayout.font_size(n_cols, tile_w)
    font = ImageFont.load_default(size=font_size)
    height, width = layout.size(len(rows), n_cols)
    canvas = np.full((height, width, 3), 24, dtype=np.uint8)  # dark background between tiles
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            y, x = layout.origin(r, c)
            canvas[y : y + tile_h, x : x + tile_w] = tile
    if colour_bar is not None:  # the ramp, left (low) to right (high), at the band's right end
        bar_w, bar_h = min(width // 4, 40 * font_size), max(6, font_size // 2)
        ramp = colorize(np.linspace(0.0, 1.0, bar_w))[None].repeat(bar_h, axis=0)
        x0, y0 = width - bar_w - 8 - 5 * font_size, layout.header - bar_h - 4
        canvas[y0 : y0 + bar_h, x0 : x0 + bar_w] = ramp
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill=(255, 255, 255), font=font)
    if colour_bar is not None:
        draw.text((x0, y0 - font_size - 2), colour_bar[0], fill=(255, 255, 255), font=font)
        draw.text((x0 + bar_w + 6, y0 - font_size // 2), colour_bar[1], fill=(255, 255, 255), font=font)
    for r, label in enumerate(row_labels):
        y, _ = layout.origin(r, 0)
        draw.multiline_text((6, y + 6), label, fill=(255, 255, 255), font=font)
    return image, layout


# --------------------------------------------------------------------------- the command

@dataclass(frozen=True)
class VisResult:
    """What ``sta vis`` found for one video; ``tokens.json`` holds it."""

    video: str
    method: str
    r: list[int]  # per stage
    tokens_per_stage: list[int]  # alive after each stage
    tokens_total: int
    gflops_per_view: float
    predicted_class: int  # at r
    unpruned_predicted_class: int
    gradnorm_kept_share: float  # share of the unpruned GradNorm mass on the tokens kept after the last stage
    gradnorm_kept_share_per_stage: list[float]
    kept_fraction_per_stage: list[float]
    kept_positions: list[list[int]]  # per stage, original positions in sequence order
    gradnorm: list[float]  # per original position
    files: dict[str, str]  # picture kind -> file name inside the output folder


def visualize(model: ClipClassifier, video: str | Path, out_dir: str | Path, protocol: str = "kinetics",
              sampling_rate: int = 4, name: str | None = None, note: str | None = None) -> VisResult:
    """Write ``kept_tokens.png``, ``gradnorm.png``, ``kept_tokens.gif`` and ``tokens.json`` for one video.

    Uses ``model.r`` for the kept tokens and the unpruned model (r = 0) for the
    GradNorm map. ``note`` goes into both pictures' titles (e.g. that the weights are
    random). Returns what ``tokens.json`` holds.
    """
    Image, _ = require_pillow()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    cfg = model.cfg
    clip, frames = sample_clip(video, model, protocol, sampling_rate)
    num_tokens = cfg.num_slices * cfg.tokens_per_slice

    with torch.inference_mode():
        logits, trace = model(clip[None], return_trace=True)
    masks = kept_masks([p[0] for p in trace.positions], num_tokens)
    report = flops_report(model)

    r = model.r
    with model.pruning(r=0):
        gradnorm, unpruned_class = token_gradnorm(model, clip)
    gradnorm = gradnorm.numpy().astype(np.float64)
    total = gradnorm.sum()
    shares = [float(gradnorm[m].sum() / total) if total > 0 else float("nan") for m in masks]

    method = f"{model.method} r={format_r(r)}"  # e.g. "random r=16"
    stem = name or Path(video).name
    painted = [paint_dropped(frames, m, model) for m in masks]
    title = (f"{stem}  {method}: tokens kept {' -> '.join(map(str, report.tokens))} of {num_tokens}, "
             f"{report.gflops:.2f} GFLOPs/view (dropped: magenta)" + (f"  [{note}]" if note else ""))
    kept_image, _ = compose(painted, title, [f"after\nstage {k + 1}\n{m.sum()} kept" for k, m in enumerate(masks)])
    kept_image.save(out_dir / "kept_tokens.png")

    shown = log_scale(gradnorm)  # heavy-tailed: on a linear scale a handful of tokens would be all one sees
    lo, hi = robust_range(shown)
    heat = colorize(token_grid(shown, model), lo, hi)
    outlined = outline_kept(frames, masks[-1], model)
    grad_image, _ = compose([heat, outlined],
                            f"{stem}  GradNorm of the predicted class (unpruned model); {method} keeps "
                            f"{shares[-1]:.1%} of the GradNorm mass with {masks[-1].sum()}/{num_tokens} tokens"
                            + (f"  [{note}]" if note else ""),
                            ["GradNorm\n(log scale)", "kept after\nstage 3"],
                            colour_bar=(f"{10**lo:.2g} (1st pct)", f"{10**hi:.2g} (99th)"))
    grad_image.save(out_dir / "gradnorm.png")

    gif_frames = [Image.fromarray(np.concatenate([frames[f], *(p[f] for p in painted)], axis=1))
                  for f in range(frames.shape[0])]
    gif_frames[0].save(out_dir / "kept_tokens.gif", save_all=True, append_images=gif_frames[1:], duration=125,
                       loop=0)

    result = VisResult(
        video=str(video), method=model.method, r=list(r), tokens_per_stage=list(report.tokens),
        tokens_total=num_tokens, gflops_per_view=report.gflops, predicted_class=int(logits[0].argmax()),
        unpruned_predicted_class=unpruned_class, gradnorm_kept_share=shares[-1], gradnorm_kept_share_per_stage=shares,
        kept_fraction_per_stage=[float(m.mean()) for m in masks],
        kept_positions=[p[0].tolist() for p in trace.positions],
        gradnorm=[float(v) for v in gradnorm],
        files=dict(kept="kept_tokens.png", gradnorm="gradnorm.png", gif="kept_tokens.gif", json="tokens.json"),
    )
    with open(out_dir / "tokens.json", "w") as f:
        json.dump(asdict(result), f)
    return result
