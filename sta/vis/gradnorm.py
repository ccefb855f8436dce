"""`sta gradnorm`: how much of a model's GradNorm each pruning method keeps, over a whole set of clips.

The STA paper's visual argument (its GradNorm figure for ViT-L on the
Kinetics-400 validation set) is that "STA retains almost all areas of
high-activation GradNorm". This module measures it:

1. For every clip, on the **unpruned** model (r = 0): GradNorm, the L2 norm of
   the gradient of one class logit (the predicted class, or the clip's label
   with ``target="label"``) w.r.t. each token's patch embedding
   (``B x N``, ``N = T*S`` tokens in original-position order).
2. For every method and r (all methods run at equal token counts, see
   :mod:`sta.core.methods`), the tokens alive after the last stage (their
   original positions in the :class:`~sta.models.vit.TokenTrace`; a ToMe
   token merged into another is shown at its destination's position, so the
   positions counted are the destinations) and from them, per clip:

   - ``kept_share``: the share of the clip's GradNorm mass on those tokens;
   - ``top10_kept``: the share of the clip's top-10% GradNorm tokens (the
     ``ceil(0.1 N)`` largest) among them.

3. Streaming statistics over clips: Welford's running mean and M2, so a 95%
   confidence interval (Student t with ``clips - 1`` degrees of freedom) comes
   without keeping per-clip values, and the running mean GradNorm map
   (``T x S``; each clip's map normalised to sum 1 first). Nothing per clip is
   kept, so memory does not grow with the number of clips.

Clips come from a :class:`ClipSource` (a VideoMAE list file, a folder of videos,
or the bundled proxy task's test clips) or any iterable of :class:`GradNormClip`.
Videos that cannot be decoded are skipped and named in the result.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sta.core.methods import METHODS
from sta.core.schedule import RSpec, format_r, normalize_r
from sta.data import VideoDecodeError, VideoEntry, ViewProtocol, read_test_views
from sta.data.video import VIDEO_SUFFIXES
from sta.utils.progress import Progress

TARGETS = ("predicted", "label")
TOP_FRACTION = 0.1  # "high-activation" tokens: the top 10% of a clip's GradNorm
CI_METHOD = "95% confidence interval of the mean over clips, Student t with clips - 1 degrees of freedom"
SKIPPED_ERRORS = (VideoDecodeError, OSError)  # a bad input file: skipped and named, the run goes on


# --------------------------------------------------------------------------- GradNorm

def batch_gradnorm(model: nn.Module, clips: Tensor, targets: Tensor | None = None, embedding: str = "patch_embed",
                   return_trace: bool = False) -> tuple[Tensor, Tensor, Tensor, Any]:
    """Per clip and token, ``||d logit_c / d e_i||_2`` with ``e_i`` the token's patch embedding, for a batch.

    ``clips``: ``B x 3 x F x H x W``. ``targets``: ``B`` class indices, or None
    for each clip's predicted class. ``embedding``: the submodule whose output
    (``B x N x C``) is the patch embedding (``patch_embed`` in our ViT); it is
    replaced by a leaf tensor during the forward, and one backward of the sum of
    the clips' target logits gives every clip's gradient at once (nothing mixes
    the clips of a batch). Runs the model as it is (use ``model.pruning(r=0)``
    for the unpruned map); parameters' ``.grad`` are left untouched.

    Returns ``(gradnorm B x N float32, targets B int64, logits B x classes, trace)``,
    all detached; ``trace`` is the forward's TokenTrace with ``return_trace``, else None.
    """
    captured: dict[str, Tensor] = {}

    def swap_in_leaf(module, inputs, output):
        captured["embedding"] = output.detach().requires_grad_(True)
        return captured["embedding"]

    handle = model.get_submodule(embedding).register_forward_hook(swap_in_leaf)
    try:
        # inference_mode(False): a caller inside inference_mode still gets gradients (on a normal copy of the clips).
        with torch.inference_mode(False), torch.enable_grad():
            x = clips.clone() if clips.is_inference() else clips
            out = model(x, return_trace=True) if return_trace else model(x)
            logits, trace = out if return_trace else (out, None)
            targets = logits.argmax(-1) if targets is None else targets.to(logits.device, torch.int64)
            chosen = logits.gather(1, targets[:, None]).sum()
            (grad,) = torch.autograd.grad(chosen, captured["embedding"])
    finally:
        handle.remove()
    return grad.float().norm(dim=-1).detach(), targets.detach(), logits.detach(), trace


def token_gradnorm(model: nn.Module, clip: Tensor) -> tuple[Tensor, int]:
    """Per token, ``||d logit_c / d e_i||_2`` with ``e_i`` the token's patch embedding and ``c`` the predicted class.

    ``clip``: ``3 x F x H x W``. Computed on the model as it is (set
    ``model.r = 0`` for the unpruned map); tokens dropped on the way get the
    gradient that reaches them through the blocks before they were dropped.
    Returns (``T*S`` float32, predicted class).
    """
    values, targets, _, _ = batch_gradnorm(model, clip[None])
    return values[0], int(targets[0])


# --------------------------------------------------------------------------- per-clip measures

def kept_mask(positions: Tensor, num_tokens: int) -> Tensor:
    """``B x L`` original positions of the live tokens -> ``B x num_tokens`` bool, True where a token is alive."""
    mask = torch.zeros(positions.shape[0], num_tokens, dtype=torch.bool, device=positions.device)
    return mask.scatter_(1, positions, True)


def kept_share(gradnorm: Tensor, mask: Tensor) -> Tensor:
    """``B x N`` GradNorm and kept mask -> ``B`` float64 share of each clip's GradNorm mass on the kept tokens."""
    g = gradnorm.double()
    return (g * mask).sum(1) / g.sum(1)


def top_count(num_tokens: int, fraction: float = TOP_FRACTION) -> int:
    """How many tokens are a clip's "top ``fraction``": ``ceil(fraction * N)``, at least 1."""
    return max(1, math.ceil(fraction * num_tokens - 1e-9))


def top_tokens(gradnorm: Tensor, fraction: float = TOP_FRACTION) -> Tensor:
    """``B x N`` GradNorm -> ``B x top_count(N, fraction)`` indices of each clip's largest-GradNorm tokens."""
    return gradnorm.topk(top_count(gradnorm.shape[1], fraction), dim=1).indices


def top_kept(mask: Tensor, top: Tensor) -> Tensor:
    """``B x N`` kept mask and ``B x k`` top-token indices -> ``B`` float64 share of the top tokens kept."""
    return mask.gather(1, top).double().mean(1)


# --------------------------------------------------------------------------- streaming statistics

def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (two-sided 95%).

    Tabulated for ``df <= 30`` (4 decimals); above, the Cornish-Fisher expansion
    in ``1/df`` (Abramowitz & Stegun 26.7.5), within 1e-5 there.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
         2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
         2.0518, 2.0484, 2.0452, 2.0423)


class RunningStats:
    """Welford's streaming mean and M2 (sum of squared deviations) in float64: O(1) memory for any number of values."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: Iterable[float] | Tensor | np.ndarray) -> None:
        for v in np.asarray(values, dtype=np.float64).ravel():
            self.count += 1
            delta = v - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (v - self.mean)

    @property
    def std(self) -> float:
        """Sample standard deviation (``ddof=1``); NaN below two values."""
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else float("nan")

    @property
    def ci95(self) -> float:
        """Half-width of the 95% confidence interval of the mean (Student t); NaN below two values."""
        if self.count < 2:
            return float("nan")
        return t_quantile_975(self.count - 1) * self.std / math.sqrt(self.count)


# --------------------------------------------------------------------------- clip sources

@dataclass(frozen=True)
class GradNormClip:
    """One input of the study: ``clip`` is ``3 x F x H x W`` float, normalised as the model expects."""

    name: str
    clip: Tensor
    label: int | None = None


@dataclass(frozen=True)
class SkippedInput:
    """An input that gave no clip (undecodable or not a video), with the reason."""

    name: str
    reason: str


class ClipSource:
    """Clips for :func:`run_gradnorm`, read one at a time as they are iterated (memory stays flat).

    ``items`` are whatever ``load`` turns into a :class:`GradNormClip` (paths,
    list-file entries, indices). An item whose ``load`` raises one of
    :data:`SKIPPED_ERRORS` is recorded in ``skipped`` (reset at each new
    iteration) and the iteration goes on. ``len()`` is the number of items.
    """

    def __init__(self, description: str, items: Sequence, load: Callable[[Any], GradNormClip],
                 name: Callable[[Any], str] = str):
        self.description, self.items, self.load, self.name = description, items, load, name
        self.skipped: list[SkippedInput] = []

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[GradNormClip]:
        self.skipped = []  # now, not at the first next(): a caller may hold this list from here on
        return self._clips(self.skipped)

    def _clips(self, skipped: list[SkippedInput]) -> Iterator[GradNormClip]:
        for item in self.items:
            try:
                clip = self.load(item)
            except SKIPPED_ERRORS as err:
                skipped.append(SkippedInput(self.name(item), f"{type(err).__name__}: {err}"))
                continue
            yield clip

    def __repr__(self) -> str:
        return f"ClipSource({self.description!r}, {len(self)} items)"


def clip_views(model: nn.Module, protocol: str = "kinetics", sampling_rate: int = 4) -> ViewProtocol:
    """The evaluation's sampling with one temporal segment and the centre crop, in the model's input format.

    Frames, crop size and mean/std come from ``model.cfg`` (as :func:`sta.vis.tokens.sample_clip` does).
    """
    cfg = model.cfg
    return ViewProtocol(protocol, num_frames=cfg.num_frames, sampling_rate=sampling_rate, num_segments=1,
                        num_crops=1, crop_size=cfg.img_size, mean=cfg.mean, std=cfg.std)


def _one_view(path: str | os.PathLike, views: ViewProtocol) -> Tensor:
    return read_test_views(path, views)[0].clip


def list_file_source(entries: Sequence[VideoEntry], views: ViewProtocol) -> ClipSource:
    """Clips of a VideoMAE list file's entries (``sta.data.read_list_file``), labelled, one view each.

    ``views`` (see :func:`clip_views`) must have one segment and one crop; each
    clip is ``3 x views.num_frames x crop x crop``, named by the entry's path as written.
    """
    _one_view_check(views)
    return ClipSource(f"list file ({len(entries)} videos)", list(entries),
                      lambda e: GradNormClip(e.video_id, _one_view(e.path, views), e.label),
                      name=lambda e: e.video_id)


def folder_source(path: str | os.PathLike, views: ViewProtocol) -> ClipSource:
    """Every file under ``path`` (recursively, sorted), one view each, unlabelled.

    Files that are not decodable videos are skipped and named. Names are paths relative to ``path``.
    """
    _one_view_check(views)
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise ValueError(f"{root}: no videos ({', '.join(VIDEO_SUFFIXES)})")
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    return ClipSource(f"folder {root} ({len(files)} files)", files,
                      lambda p: GradNormClip(rel(p), _one_view(p, views)), name=rel)


def proxy_source(n: int | None = None, seed: int | None = None, task=None) -> ClipSource:
    """The bundled proxy task's held-out test clips: ``make_clips(task, n, seed, "test")``, labelled.

    Defaults: ``n = DEMO_CLIPS`` (240), ``seed = DEMO_SEED``, ``task = PROXY_TASK``: the clips ``sta demo``
    scores. Each clip is ``3 x 16 x 64 x 64``; all ``n`` are generated together on first use (they depend on ``n``).
    """
    from sta.demo.proxy import PROXY_TASK, make_clips
    from sta.demo.run import DEMO_CLIPS, DEMO_SEED

    n = DEMO_CLIPS if n is None else n
    seed = DEMO_SEED if seed is None else seed
    task = PROXY_TASK if task is None else task
    if n < 1:
        raise ValueError(f"need at least one clip, got n={n}")
    made: list[tuple[Tensor, Tensor]] = []

    def load(i: int) -> GradNormClip:
        if not made:
            made.append(make_clips(task, n, seed=seed, split="test"))
        clips, labels = made[0]
        return GradNormClip(f"proxy-test-{seed}/{i:04d}", clips[i], int(labels[i]))

    return ClipSource(f"proxy task test clips (n={n}, seed {seed})", range(n), load,
                      name=lambda i: f"proxy-test-{seed}/{i:04d}")


def _one_view_check(views: ViewProtocol) -> None:
    if views.num_segments != 1 or views.num_crops != 1:
        raise ValueError(f"GradNorm uses one view per video (1 segment, 1 crop); got {views.num_segments} segments "
                         f"x {views.num_crops} crops (use clip_views(model))")


# --------------------------------------------------------------------------- the study

@dataclass(frozen=True)
class GradNormRow:
    """One (method, r) over all clips; ``none`` is the unpruned model."""

    method: str
    r: str  # "16" or "48,16,8" (format_r)
    tokens_per_stage: list[int]  # alive after each stage
    tokens_kept: int  # after the last stage
    tokens_total: int
    kept_fraction: float  # tokens_kept / tokens_total
    kept_share: float  # mean over clips of the GradNorm mass share on the kept tokens
    ci95: float  # half-width of kept_share's 95% CI (Student t); NaN (null in JSON) for one clip
    kept_share_std: float  # over clips (ddof=1)
    top10_kept: float  # mean over clips of the share of the top-10% GradNorm tokens that are kept
    top10_kept_ci95: float
    top1: float | None  # percent of clips whose prediction at this (method, r) is the label; None without labels
    clips: int


@dataclass
class GradNormResult:
    """What :func:`run_gradnorm` measured; ``to_dict()`` is what ``gradnorm.json`` holds."""

    rows: list[GradNormRow]
    mean_map: np.ndarray  # T x S float64: mean over clips of each clip's GradNorm map normalised to sum 1
    grid: tuple[int, int, int]  # (T, height, width) in tokens: mean_map[t].reshape(height, width) is slice t
    clips: int
    skipped: list[SkippedInput]
    target: str  # "predicted" or "label"
    source: str
    top_fraction: float = TOP_FRACTION
    ci: str = CI_METHOD
    not_run: list[dict] = field(default_factory=list)  # (method, r) pairs the method cannot run, with the reason

    def to_rows(self) -> list[dict]:
        """One strict-JSON-ready dict per row (NaN -> None)."""
        return [_nan_to_none(asdict(row)) for row in self.rows]

    def to_dict(self) -> dict:
        return dict(source=self.source, target=self.target, clips=self.clips, top_fraction=self.top_fraction,
                    ci=self.ci, rows=self.to_rows(), grid=list(self.grid),
                    mean_map=[[float(v) for v in slice_] for slice_ in self.mean_map],
                    skipped=[asdict(s) for s in self.skipped], not_run=list(self.not_run))

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(_nan_to_none(self.to_dict()), indent=indent)


def _nan_to_none(value):
    """NaN (a CI over one clip) -> null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


class _Accumulator:
    def __init__(self) -> None:
        self.share, self.top = RunningStats(), RunningStats()
        self.correct, self.labelled = 0, 0
        self.tokens: list[int] = []


def _cannot_run(model: nn.Module, method: str, r: RSpec) -> str | None:
    try:
        with model.pruning(r, method):
            return None
    except ValueError as err:
        return str(err)


def _batches(clips: Iterable[GradNormClip], size: int) -> Iterator[list[GradNormClip]]:
    batch: list[GradNormClip] = []
    for clip in clips:
        batch.append(clip)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_gradnorm(model: nn.Module, source: Iterable[GradNormClip], methods: Sequence[str] | None = None,
                 rs: Sequence[RSpec] = (16,), target: str = "predicted", batch_size: int = 8,
                 device: str | torch.device | None = None, progress: bool = True,
                 top_fraction: float = TOP_FRACTION, embedding: str = "patch_embed") -> GradNormResult:
    """GradNorm of the unpruned model per clip, and the share of it each method keeps at each r.

    ``model``: a VideoMAE ViT like :class:`~sta.models.vit.VisionTransformer`
    (``cfg``, ``pruning(r, method)``, the ``embedding`` submodule giving
    ``B x N x C``, ``forward(x, return_trace=True)``); its own r and method are
    restored after. ``source``: a :class:`ClipSource` or any iterable of
    :class:`GradNormClip` (``3 x F x H x W`` each). ``methods``: names in
    :data:`sta.core.methods.METHODS` (None = all). ``rs``: ints or per-stage
    triples; a (method, r) the method cannot run is left out and listed in
    ``not_run``. ``target``: ``"predicted"`` (the unpruned model's class) or
    ``"label"`` (every clip needs one). ``batch_size`` clips share one forward
    and one backward. ``device``: where to run (the model is moved there);
    None = where the model is. Rows: ``none`` (r = 0) first, then method by method
    in the given r order.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    methods = list(METHODS) if methods is None else list(methods)
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    rs = list(rs)
    for r in rs:
        normalize_r(r)  # a malformed r fails here, not mid-run
    cfg = model.cfg
    T, S = cfg.num_slices, cfg.tokens_per_slice
    side = cfg.img_size // cfg.patch_size
    N = T * S
    param = next(model.parameters())
    device = torch.device(device) if device is not None else param.device
    model.to(device).eval()

    configs: list[tuple[str, RSpec]] = [("none", 0)]
    not_run = []
    for method in methods:
        for r in rs:
            reason = _cannot_run(model, method, r)
            if reason is None:
                configs.append((method, r))
            else:
                not_run.append(dict(method=method, r=format_r(r), reason=reason))
    acc = [_Accumulator() for _ in configs]
    mean_map = np.zeros((T, S), dtype=np.float64)
    clips_done = 0
    skipped_extra: list[SkippedInput] = []

    total = len(source) if hasattr(source, "__len__") else 0
    bar = Progress(total=total, unit="clips", enabled=progress, desc="sta gradnorm")
    iterator = iter(source)
    source_skipped = getattr(source, "skipped", [])  # read after iter(): a ClipSource resets it there
    seen_skips = 0
    expected = (cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size)
    for batch in _batches(iterator, batch_size):
        for item in batch:
            if tuple(item.clip.shape) != expected:
                raise ValueError(f"{item.name}: clip of shape {tuple(item.clip.shape)}, the model takes "
                                 f"{' x '.join(map(str, expected))}")
            if target == "label" and item.label is None:
                raise ValueError(f"{item.name}: no label, and target='label' needs one for every clip "
                                 "(use a list file or the proxy task, or target='predicted')")
        x = torch.stack([item.clip for item in batch]).to(device=device, dtype=param.dtype)
        labels = [item.label for item in batch]
        has_labels = all(label is not None for label in labels)
        label_t = torch.tensor([label if label is not None else -1 for label in labels])
        with model.pruning(r=0):
            g, _, logits, trace = batch_gradnorm(model, x, label_t if target == "label" else None, embedding,
                                                 return_trace=True)
        g = g.double().cpu()
        if g.shape[1] != N:
            raise ValueError(f"the embedding gave {g.shape[1]} tokens, the model's config {T} x {S} = {N}")
        mass = g.sum(1)
        valid = torch.isfinite(mass) & (mass > 0)
        for item, ok in zip(batch, valid.tolist()):
            if not ok:
                skipped_extra.append(SkippedInput(item.name, "GradNorm is zero or not finite everywhere"))
        top = top_tokens(g, top_fraction)
        for b in torch.nonzero(valid).flatten().tolist():  # running mean of the normalised maps
            clips_done += 1
            mean_map += ((g[b] / mass[b]).view(T, S).numpy() - mean_map) / clips_done
        for i, (method, r) in enumerate(configs):
            if method == "none":
                positions, predicted = trace.positions, logits.argmax(-1)
            else:
                with model.pruning(r, method), torch.inference_mode():
                    out, pruned = model(x, return_trace=True)
                positions, predicted = pruned.positions, out.argmax(-1)
            mask = kept_mask(positions[-1].cpu(), N)
            a = acc[i]
            a.tokens = [p.shape[1] for p in positions]
            a.share.update(kept_share(g, mask)[valid])
            a.top.update(top_kept(mask, top)[valid])
            if has_labels:
                a.correct += int((predicted.cpu() == label_t)[valid].sum())
                a.labelled += int(valid.sum())
        bar.update(len(batch) + len(source_skipped) - seen_skips)
        seen_skips = len(source_skipped)
    bar.update(len(source_skipped) - seen_skips)
    bar.close()

    rows = []
    for i, (method, r) in enumerate(configs):
        a = acc[i]
        tokens = a.tokens or [N] * 3
        rows.append(GradNormRow(
            method=method, r=format_r(r), tokens_per_stage=tokens, tokens_kept=tokens[-1], tokens_total=N,
            kept_fraction=tokens[-1] / N, kept_share=a.share.mean if a.share.count else float("nan"),
            ci95=a.share.ci95, kept_share_std=a.share.std,
            top10_kept=a.top.mean if a.top.count else float("nan"), top10_kept_ci95=a.top.ci95,
            top1=100.0 * a.correct / a.labelled if a.labelled and a.labelled == a.share.count else None,
            clips=a.share.count))
    return GradNormResult(rows=rows, mean_map=mean_map, grid=(T, side, side), clips=clips_done,
                          skipped=list(source_skipped) + skipped_extra, target=target,
                          source=getattr(source, "description", type(source).__name__),
                          top_fraction=top_fraction, not_run=not_run)


# --------------------------------------------------------------------------- output

def print_table(result: GradNormResult, file=None) -> None:
    """The rows as a text table, then what was skipped or not run."""
    file = file or sys.stdout
    target = "the unpruned model's predicted class" if result.target == "predicted" else "the label"
    top = f"top-{result.top_fraction:.0%}"
    print(f"GradNorm ({target}) kept after the last stage, over {result.clips} clips of {result.source}; "
          f"± = 95% CI (Student t)", file=file)
    print(f"{'method':<10}{'r':>9}  {'tokens kept':<14}{'kept %':>7}  {'GradNorm kept %':<17}"
          f"{top + ' kept %':>15}{'top-1 %':>9}", file=file)
    for row in result.rows:
        ci = f" ± {100 * row.ci95:.2f}" if math.isfinite(row.ci95) else ""
        share = f"{100 * row.kept_share:6.2f}{ci}" if row.clips else "-"
        top1 = f"{row.top1:9.1f}" if row.top1 is not None else f"{'-':>9}"
        print(f"{row.method:<10}{row.r:>9}  {f'{row.tokens_kept}/{row.tokens_total}':<14}"
              f"{100 * row.kept_fraction:>7.1f}  {share:<17}{100 * row.top10_kept:>15.1f}{top1}", file=file)
    for item in result.not_run:
        print(f"not run: {item['method']} r={item['r']}: {item['reason']}", file=file)
    if result.skipped:
        print(f"skipped {len(result.skipped)}:", file=file)
        for item in result.skipped:
            print(f"  {item.name}: {item.reason}", file=file)


def plot_mean_map(result: GradNormResult, out: str | Path) -> Path:
    """The mean GradNorm distribution: one heat map per temporal slice, in units of the uniform share (1/N)."""
    plt = _plt()
    T, h, w = result.grid
    N = T * h * w
    values = result.mean_map.reshape(T, h, w) * N
    cols = T if T <= 8 else math.ceil(T / 2)
    rows = math.ceil(T / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 1.0, 1.8 * rows + 0.5), dpi=120, squeeze=False,
                             layout="constrained")
    vmax = float(values.max()) if values.size and values.max() > 0 else 1.0
    image = None
    for t, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if t >= T:
            ax.axis("off")
            continue
        image = ax.imshow(values[t], cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"slice {t}", fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9, label="× uniform (1/N)")
    fig.suptitle(f"Mean GradNorm distribution over {result.clips} clips (each clip's map sums to 1)", fontsize=9)
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def plot_kept_share(result: GradNormResult, out: str | Path) -> Path:
    """GradNorm mass kept vs tokens kept, one line per method (with 95% CI bars); dashed: the token fraction."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    base = [row for row in result.rows if row.method == "none"]
    methods = list(dict.fromkeys(row.method for row in result.rows if row.method != "none"))
    for method in methods:
        points = sorted([row for row in result.rows if row.method == method] + base, key=lambda p: p.tokens_kept)
        ax.errorbar([p.tokens_kept for p in points], [100 * p.kept_share for p in points],
                    yerr=[100 * (p.ci95 if math.isfinite(p.ci95) else 0) for p in points],
                    marker="o", capsize=2, label=method)
    total = result.rows[0].tokens_total if result.rows else 1
    ax.plot([0, total], [0, 100], "k--", lw=0.8, alpha=0.6, label="kept fraction of tokens")
    ax.set_xlabel(f"tokens kept after the last stage (of {total})")
    ax.set_ylabel("GradNorm mass kept (%)")
    ax.set_title(f"GradNorm kept vs tokens kept ({result.clips} clips)")
    ax.set_xlim(left=0)
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def _plt():
    from sta.utils.optional import require_matplotlib

    return require_matplotlib()


def write_gradnorm(result: GradNormResult, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """``gradnorm.json`` always; ``gradnorm_map.png`` and ``gradnorm_share.png`` with matplotlib.

    Without matplotlib the JSON is still written and a note says how to get the
    figures (as ``sta demo`` does). Returns kind -> path of what was written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "gradnorm.json"}
    files["json"].write_text(result.to_json() + "\n", encoding="utf-8")
    if plots:
        try:
            files["map"] = plot_mean_map(result, out_dir / "gradnorm_map.png")
            files["share"] = plot_kept_share(result, out_dir / "gradnorm_share.png")
        except ImportError as err:
            print(f"note: no figures written ({err})", file=sys.stderr)
    return files
