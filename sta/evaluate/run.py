"""Multi-view video classification evaluation, as in the VideoMAE / STA papers.

Each video is cut into ``num_segments x num_crops`` views (K400: 5 x 3, SSv2:
2 x 3); the video's score is the softmax of each view's logits averaged over
its views; top-1 / top-5 follow over the videos whose every view was scored.
Per-view logits are appended to a JSONL file as batches finish
(``sta.evaluate.records``), so a stopped run resumes where it was. Under
``torchrun`` every rank takes every ``world_size``-th video and only counts
travel between processes at the end.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from sta.data import VideoDecodeError, VideoEntry, ViewProtocol, read_test_views
from sta.data.datasets import DATASETS
from sta.deploy.metadata import QUANTIZED_DTYPES
from sta.deploy.runners import Runner
from sta.errors import InvalidInput, OutputError, RunFailed, StaError
from sta.evaluate.records import (
    OutputLock,
    PredictionWriter,
    ResumeMismatch,
    fingerprint,
    load_predictions,
    predictions_path,
)
from sta.utils.device import parse_dtype, resolve_device
from sta.utils.progress import Progress

T = TypeVar("T")
MAX_BATCH = 1024  # views per forward (ViT-B: 9.6 MB each in float32)
MAX_WORKERS = 64  # decoding processes

__all__ = ["DATASETS", "EvalSettings", "EvalSummary", "ResumeMismatch", "evaluate", "video_scores"]


@dataclass(frozen=True)
class EvalSettings:
    """The test views and how to run them. ``views`` and ``dtype`` go into the resume fingerprint."""

    views: ViewProtocol = field(default_factory=ViewProtocol)
    dtype: str = "float32"
    backend: str = "torch"  # which engine computed the logits (sta.deploy.runners.BACKENDS)
    # Not part of the fingerprint: they do not change the numbers.
    batch_size: int = 8  # views per forward
    num_workers: int = 0  # decoding processes
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.dtype not in QUANTIZED_DTYPES:  # int8: a graph `sta export --quantize` wrote, its runner checks it
            parse_dtype(self.dtype)
        if isinstance(self.batch_size, bool) or int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise InvalidInput(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.batch_size > MAX_BATCH:  # views wait in memory until a batch is full
            raise InvalidInput(f"batch_size {self.batch_size}: at most {MAX_BATCH} views per forward",
                               param="batch_size")
        if int(self.num_workers) != self.num_workers or not 0 <= self.num_workers <= MAX_WORKERS:
            raise InvalidInput(f"num_workers must be 0 to {MAX_WORKERS} decoding processes, got {self.num_workers!r}",
                               param="num_workers")

    def protocol_fields(self) -> dict:
        return {**self.views.to_dict(), "dtype": self.dtype, "backend": self.backend}


@dataclass(frozen=True)
class EvalSummary:
    """A finished evaluation; ``summary.json`` holds it (strict JSON: ``null`` where nothing was scored)."""

    top1: float | None  # percent of scored videos; None when no video was scored
    top5: float | None
    videos: int  # videos scored: every one of their views computed
    views: int  # views behind those videos
    videos_in_list: int
    skipped: list[dict]  # {video, reason}: unreadable videos (and none of their views counts)
    gflops_per_view: float | None
    wall_time_s: float
    computed_videos: int  # videos this run decoded (all processes)
    resumed_views: int  # views reused from an earlier run's predictions (all processes)
    world_size: int
    model: dict
    protocol: dict

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VideoScore:
    label: int
    video_id: str
    logits: dict[tuple[int, int], list[float]] = field(default_factory=dict)  # (segment, crop) -> logits


# --------------------------------------------------------------------------- data

@dataclass
class VideoItem:
    """One video's still-missing views (``clips``: ``V x 3 x F x S x S``), or why it cannot be read."""

    index: int
    error: str | None = None
    keys: list[tuple[int, int]] = field(default_factory=list)  # (segment, crop) of each clip
    clips: torch.Tensor | None = None


class ViewDataset(torch.utils.data.Dataset):
    """One item per video: its still-missing views, or the reason it cannot be decoded."""

    def __init__(self, jobs: list[tuple[int, VideoEntry, set[tuple[int, int]]]], protocol: ViewProtocol):
        self.jobs, self.protocol = jobs, protocol

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> VideoItem:
        index, entry, done = self.jobs[i]
        try:
            views = read_test_views(entry.path, self.protocol)
        except (VideoDecodeError, OSError) as err:  # a problem of this video; anything else is a bug and raises
            reason = str(err)  # said next to the video's name: without the path the message starts with
            return VideoItem(index, error=reason.removeprefix(f"{entry.path}: "))
        views = [v for v in views if (v.segment, v.crop) not in done]
        return VideoItem(index, keys=[(v.segment, v.crop) for v in views],
                         clips=torch.stack([v.clip for v in views]) if views else None)


def _identity(item):
    return item


def iterate_views(dataset: ViewDataset, num_workers: int) -> Iterator[VideoItem]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                                         collate_fn=_identity, prefetch_factor=2 if num_workers else None)
    yield from loader


# --------------------------------------------------------------------------- scores

def video_scores(views: dict[tuple[int, int], list[float]]) -> np.ndarray:
    """Average of the views' softmax probabilities, in a fixed view order (float64)."""
    logits = np.array([views[key] for key in sorted(views)], dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs.mean(axis=0)


@dataclass
class Tally:
    """What one process found; adds up across processes to the same totals whatever the split."""

    videos: int = 0
    views: int = 0
    top1: int = 0
    top5: int = 0
    computed_videos: int = 0
    resumed_views: int = 0
    skipped: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.videos + other.videos, self.views + other.views, self.top1 + other.top1,
                     self.top5 + other.top5, self.computed_videos + other.computed_videos,
                     self.resumed_views + other.resumed_views, self.skipped + other.skipped,
                     max(self.wall_time_s, other.wall_time_s))

    def percent(self) -> tuple[float | None, float | None]:
        if not self.videos:
            return None, None
        return 100.0 * self.top1 / self.videos, 100.0 * self.top5 / self.videos


def count_hits(scores: dict[int, VideoScore], num_views: int) -> Tally:
    """Top-1 / top-5 hits over the videos whose ``num_views`` views are all there."""
    total = Tally()
    for s in scores.values():
        if len(s.logits) == num_views:
            ranked = np.argsort(-video_scores(s.logits), kind="stable")
            total += Tally(1, len(s.logits), int(ranked[0] == s.label), int(s.label in ranked[:5]))
    return total


def video_hits(output_dir: str | Path, entries: list[VideoEntry], summary: EvalSummary) -> dict[int, tuple[bool, bool]]:
    """index -> (top-1 hit, top-5 hit) of every video a finished run scored (every process's files): what paired
    tests between two runs on the same videos need, clip by clip."""
    done = load_predictions(Path(output_dir), None, len(entries))
    num_views = summary.protocol["num_segments"] * summary.protocol["num_crops"]
    skipped = {s["video"] for s in summary.skipped}
    hits = {}
    for index, views in done.items():
        if len(views) == num_views and entries[index].video_id not in skipped:
            ranked = np.argsort(-video_scores(views), kind="stable")
            hits[index] = (bool(ranked[0] == entries[index].label), bool(entries[index].label in ranked[:5]))
    return hits


def gather_tally(tally: Tally) -> Tally:
    """The sum of every process's tally (itself outside torchrun)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tally
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, tally)
    return sum(parts[1:], parts[0])


# --------------------------------------------------------------------------- the run

def evaluate(model: nn.Module | Runner, entries: list[VideoEntry], settings: EvalSettings, output_dir: str | Path,
             model_desc: dict, log_dir: str | None = None, progress: bool = True) -> EvalSummary | None:
    """Evaluate ``model`` on ``entries`` with the multi-view protocol; returns the summary.

    ``model``: a torch module (run on ``settings.device`` in ``settings.dtype``)
    or a runner of :mod:`sta.deploy.runners` (an exported graph on its backend).

    ``model_desc`` (model name, weights and their hash) identifies the run in
    the resume fingerprint, with the model's r and method. Views already in
    ``output_dir`` are not recomputed. A video that cannot be decoded is
    skipped: none of its views counts, even views stored by an earlier run.
    Under an initialised ``torch.distributed`` group, rank 0 returns the
    summary and writes ``summary.json``; other ranks return None.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    info = getattr(model, "info", None)  # a runner says what it runs
    if info is not None:
        model_desc = {**model_desc, "r": list(info.r), "method": info.method}
        settings = replace(settings, backend=model.backend)
    elif hasattr(model, "r"):  # what the model does now, not what a caller remembered
        model_desc = {**model_desc, "r": list(model.r), "method": getattr(model, "method", "sta")}
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise InvalidInput(f"{output_dir} is a file, not a folder: give another `output_dir`", param="output_dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    expected = fingerprint(model_desc, settings.protocol_fields(), entries)
    with ExitStack() as stack:
        # Every rank stops with the same one-line error when any rank cannot lock or read the folder (no rank
        # left waiting in a collective for one that exited).
        on_every_rank(lambda: stack.enter_context(OutputLock(output_dir, rank)), world)
        if world > 1:
            dist.barrier()  # every rank reads the files before any rank appends
        done = on_every_rank(lambda: load_predictions(output_dir, expected, len(entries)), world)
        mine = _run(model, entries, settings, output_dir, expected, done, rank, world, progress)
    counts = gather_tally(mine)
    if rank != 0:
        return None
    top1, top5 = counts.percent()
    summary = EvalSummary(
        top1=top1, top5=top5, videos=counts.videos, views=counts.views, videos_in_list=len(entries),
        skipped=sorted(counts.skipped, key=lambda s: s["video"]),
        gflops_per_view=info.gflops_per_view if info is not None else _gflops(model),
        wall_time_s=counts.wall_time_s, computed_videos=counts.computed_videos,
        resumed_views=counts.resumed_views, world_size=world, model=model_desc, protocol=settings.protocol_fields(),
    )
    write_summary(output_dir / "summary.json", summary)
    if log_dir:
        write_tensorboard(log_dir, summary)
    return summary


def on_every_rank(action: Callable[[], T], world: int) -> T:
    """``action()`` on this rank; under torchrun, if it raised an :class:`~sta.errors.StaError` on any rank, every
    rank raises one (its own, or one saying which rank failed)."""
    result, error = None, None
    try:
        result = action()
    except StaError as err:
        error = err
    if world > 1:
        failed = torch.tensor([0 if error is None else dist.get_rank() + 1])
        dist.all_reduce(failed, op=dist.ReduceOp.MAX)
        if error is None and failed.item():
            error = RunFailed(f"rank {failed.item() - 1} stopped (its error is above); this rank stops with it")
    if error is not None:
        raise error
    return result


def _gflops(model: nn.Module) -> float | None:
    from sta.measure.flops import flops_report

    return flops_report(model).gflops if hasattr(model, "cfg") else None  # counted on meta: no device memory


def _forward(model: nn.Module | Runner, settings: EvalSettings) -> Callable[[torch.Tensor], torch.Tensor]:
    """``clips -> float32 CPU logits``: a runner as it is, a module on the settings' device and dtype."""
    if not isinstance(model, nn.Module):
        return model
    device, dtype = resolve_device(settings.device), parse_dtype(settings.dtype)
    model = model.to(device=device, dtype=dtype).eval()

    def forward(clips: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(clips.to(device=device, dtype=dtype)).float().cpu()

    return forward


def _run(model: nn.Module | Runner, entries: list[VideoEntry], settings: EvalSettings, output_dir: Path, expected: dict,
         done: dict, rank: int, world: int, progress: bool) -> Tally:
    """This process's share of the videos: compute what is missing, append it, count hits."""
    views = settings.views
    all_views = {(c, k) for c in range(views.num_segments) for k in range(views.num_crops)}
    mine = list(range(rank, len(entries), world))
    scores = {i: VideoScore(entries[i].label, entries[i].video_id, dict(done.get(i, {}))) for i in mine}
    jobs = [(i, entries[i], set(scores[i].logits)) for i in mine if not all_views <= set(scores[i].logits)]
    resumed = sum(len(scores[i].logits) for i in mine)

    forward = _forward(model, settings)
    writer = PredictionWriter(predictions_path(output_dir, rank, world), expected)
    skipped: list[dict] = []
    bar = Progress(total=len(jobs), unit="videos", enabled=progress and rank == 0)
    start = time.perf_counter()
    pending: list[tuple[int, tuple[int, int], torch.Tensor]] = []  # views waiting for a full batch

    failed: set[int] = set()  # videos skipped: none of their views counts

    def fail(index: int, reason: str) -> None:
        stored = len(scores[index].logits)
        note = f" ({stored} views from an earlier run not counted)" if stored else ""
        skipped.append(dict(video=entries[index].video_id, reason=reason + note))
        scores[index].logits.clear()
        failed.add(index)

    def run_batch(batch):
        logits = forward(torch.stack([clip for _, _, clip in batch]))
        finite = torch.isfinite(logits).all(dim=1)  # a NaN would win every argsort: never score one
        records = []
        for (index, key, _), row, ok in zip(batch, logits, finite.tolist()):
            if index in failed:
                continue
            if not ok:
                fail(index, f"the model's logits are not finite (NaN or inf) on view {key[0]}x{key[1]}")
                continue
            values = row.tolist()
            scores[index].logits[key] = values
            records.append(dict(index=index, video=entries[index].video_id, segment=key[0], crop=key[1],
                                label=entries[index].label, logits=values))
        writer.write(records)

    try:
        for item in iterate_views(ViewDataset(jobs, views), settings.num_workers):
            if item.error is not None:
                fail(item.index, item.error)
            elif item.clips is not None:
                pending.extend((item.index, key, clip) for key, clip in zip(item.keys, item.clips))
            while len(pending) >= settings.batch_size:
                run_batch(pending[: settings.batch_size])
                del pending[: settings.batch_size]
            bar.update(1)
        if pending:
            run_batch(pending)
    finally:
        writer.close()
        bar.close()
    counts = count_hits(scores, len(all_views))
    counts.computed_videos, counts.resumed_views = len(jobs), resumed
    counts.skipped, counts.wall_time_s = skipped, time.perf_counter() - start
    return counts


def write_summary(path: Path, summary: EvalSummary) -> None:
    try:
        path.write_text(json.dumps(summary.to_dict(), indent=1, allow_nan=False) + "\n")
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err


def write_tensorboard(log_dir: str, summary: EvalSummary) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn(f"`log_dir` {log_dir} ignored: TensorBoard logging needs `pip install tensorboard`", stacklevel=2)
        return
    with SummaryWriter(log_dir) as tb:
        for key in ("top1", "top5", "gflops_per_view", "wall_time_s"):
            value = getattr(summary, key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                tb.add_scalar(f"eval/{key}", value, 0)
