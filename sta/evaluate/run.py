"""Multi-view video classification evaluation, as in the VideoMAE / STA papers.

Each video is cut into ``num_segments x num_crops`` views (K400: 5 x 3, SSv2:
2 x 3); the video's score is the softmax of each view's logits averaged over
its views; top-1 / top-5 follow. Per-view logits are appended to a JSONL file
as batches finish, so a stopped run resumes where it was. Under ``torchrun``
every rank takes every ``world_size``-th video and the scores are gathered
in-process at the end.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from sta.data import VideoDecodeError, VideoEntry, read_test_views
from sta.measure.flops import flops_report
from sta.utils.device import parse_dtype, resolve_device
from sta.utils.progress import Progress

DATASETS = {  # --data_set -> (sampling protocol, classes, default temporal segments)
    "Kinetics-400": ("kinetics", 400, 5),
    "SSV2": ("ssv2", 174, 2),
}


@dataclass(frozen=True)
class EvalSettings:
    """The test protocol and how to run it. Protocol fields go into the resume fingerprint."""

    protocol: str = "kinetics"  # "kinetics" or "ssv2" frame sampling
    num_frames: int = 16
    sampling_rate: int = 4  # Kinetics: every 4th frame
    num_segments: int = 5  # temporal views (K400 5, SSv2 2)
    num_crops: int = 3  # spatial views along the long side
    crop_size: int = 224  # short side after resizing = crop width = model input
    dtype: str = "float32"
    # Not part of the fingerprint: they do not change the numbers.
    batch_size: int = 8  # views per forward
    num_workers: int = 0  # decoding processes
    device: str = "cpu"

    def protocol_fields(self) -> dict:
        d = asdict(self)
        return {k: d[k] for k in ("protocol", "num_frames", "sampling_rate", "num_segments", "num_crops",
                                  "crop_size", "dtype")}


class ResumeMismatch(RuntimeError):
    """The output directory holds predictions of a different model, r or protocol."""


@dataclass
class VideoScore:
    label: int
    video_id: str
    views: dict[tuple[int, int], list[float]] = field(default_factory=dict)  # (chunk, crop) -> logits


# --------------------------------------------------------------------------- records on disk

def fingerprint(model_desc: dict, settings: EvalSettings, entries: list[VideoEntry]) -> dict:
    """What must match for stored predictions to be reused."""
    listing = hashlib.sha1("\n".join(f"{e.path} {e.label}" for e in entries).encode()).hexdigest()
    return dict(model=model_desc, protocol=settings.protocol_fields(), videos=len(entries), list_sha1=listing)


def predictions_path(output_dir: Path, rank: int, world_size: int) -> Path:
    """``predictions.jsonl``; under torchrun one file per rank, so no two processes write one file."""
    return output_dir / ("predictions.jsonl" if world_size == 1 else f"predictions.rank{rank}.jsonl")


def load_predictions(output_dir: Path, expected: dict) -> dict[int, dict[tuple[int, int], list[float]]]:
    """Finished views from every ``predictions*.jsonl`` in ``output_dir``: index -> (chunk, crop) -> logits.

    Raises :class:`ResumeMismatch` if a file was written for another fingerprint.
    A last line cut short by a crash is ignored (its views are recomputed).
    """
    done: dict[int, dict[tuple[int, int], list[float]]] = {}
    for path in sorted(output_dir.glob("predictions*.jsonl")):
        with open(path) as f:
            lines = f.read().splitlines()
        if not lines:
            continue
        header = json.loads(lines[0])
        if header.get("fingerprint") != expected:
            raise ResumeMismatch(_mismatch_message(path, header.get("fingerprint"), expected))
        for number, line in enumerate(lines[1:], start=2):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # interrupted mid-write
                    continue
                raise ResumeMismatch(f"{path}, line {number}: not valid JSON; remove the file to start over") from None
            done.setdefault(rec["index"], {})[(rec["chunk"], rec["crop"])] = rec["logits"]
    return done


def _mismatch_message(path: Path, found: dict | None, expected: dict) -> str:
    if not isinstance(found, dict):
        return f"{path} has no valid header; it was not written by `sta eval`. Use another --output_dir."
    stored, now = _flatten(found), _flatten(expected)
    diffs = [f"{k}: stored {stored.get(k)!r}, now {now.get(k)!r}" for k in sorted(set(stored) | set(now))
             if stored.get(k) != now.get(k)]
    return (f"{path} holds predictions of a different run ({'; '.join(diffs)}). "
            "Refusing to mix them: use another --output_dir, or delete the file to start over.")


def _flatten(d: dict, prefix: str = "") -> dict:
    """{"model": {"r": 1}} -> {"model.r": 1}, so a mismatch names the exact field."""
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class PredictionWriter:
    """Appends view records to a JSONL file, flushed and synced after every batch."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        if path.exists() and path.stat().st_size:
            _drop_partial_last_line(path)  # may empty a file whose header was cut short
        fresh = not path.exists() or path.stat().st_size == 0
        self.file = open(path, "a")
        if fresh:
            self._write([{"fingerprint": header}])

    def write(self, records: list[dict]) -> None:
        if records:
            self._write(records)

    def _write(self, rows: list[dict]) -> None:
        self.file.write("".join(json.dumps(row) + "\n" for row in rows))
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _drop_partial_last_line(path: Path, block: int = 1 << 16) -> None:
    """Cut a last line left unfinished by a crash, reading only the file's tail (files reach GBs on K400)."""
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        pos = end
        while pos > 0:  # walk back to the last newline
            pos = max(0, pos - block)
            f.seek(pos)
            newline = f.read(min(block, end - pos)).rfind(b"\n")
            if newline >= 0:
                f.truncate(pos + newline + 1)
                return
        f.truncate(0)


# --------------------------------------------------------------------------- data

class VideoViews(torch.utils.data.Dataset):
    """One item per video: its still-missing views, or the reason it cannot be read."""

    def __init__(self, jobs: list[tuple[int, VideoEntry, set[tuple[int, int]]]], settings: EvalSettings):
        self.jobs, self.settings = jobs, settings

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> dict:
        index, entry, done = self.jobs[i]
        s = self.settings
        try:
            views = read_test_views(entry.path, s.protocol, crop_size=s.crop_size, num_crops=s.num_crops,
                                    num_frames=s.num_frames, sampling_rate=s.sampling_rate,
                                    num_segments=s.num_segments)
        except (VideoDecodeError, OSError, ValueError) as err:
            return dict(index=index, error=f"{type(err).__name__}: {err}")
        views = [v for v in views if (v.chunk, v.crop) not in done]
        return dict(index=index, error=None, keys=[(v.chunk, v.crop) for v in views],
                    clips=torch.stack([v.clip for v in views]) if views else None)


def _identity(item):
    return item


def iterate_views(dataset: VideoViews, num_workers: int) -> Iterator[dict]:
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
    """Counts that add up across ranks: the same totals whatever the split."""

    videos: int = 0
    views: int = 0
    top1: int = 0
    top5: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.videos + other.videos, self.views + other.views, self.top1 + other.top1,
                     self.top5 + other.top5)

    def percent(self) -> tuple[float, float]:
        if not self.videos:
            return float("nan"), float("nan")
        return 100.0 * self.top1 / self.videos, 100.0 * self.top5 / self.videos


def tally(scores: dict[int, VideoScore]) -> Tally:
    """Top-1 / top-5 hits over videos with at least one view."""
    total = Tally()
    for s in scores.values():
        if s.views:
            ranked = np.argsort(-video_scores(s.views), kind="stable")
            total += Tally(1, len(s.views), int(ranked[0] == s.label), int(s.label in ranked[:5]))
    return total


# --------------------------------------------------------------------------- the run

def evaluate(model: nn.Module, entries: list[VideoEntry], settings: EvalSettings, output_dir: str | os.PathLike,
             model_desc: dict, log_dir: str | None = None, progress: bool = True) -> dict | None:
    """Evaluate ``model`` on ``entries`` with the multi-view protocol; returns the summary.

    ``model_desc`` (model name, checkpoint, r, method, ...) identifies the run in
    the resume fingerprint. Views already in ``output_dir`` are not recomputed.
    Under an initialised ``torch.distributed`` group, rank 0 returns the summary
    and writes ``summary.json``; other ranks return None.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if hasattr(model, "r"):  # what the model does now, not what a caller remembered
        model_desc = {**model_desc, "r": list(model.r), "method": getattr(model, "method", "sta")}
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    expected = fingerprint(model_desc, settings, entries)
    if world > 1:
        dist.barrier()  # every rank reads the files before any rank appends
    done = load_predictions(output_dir, expected)
    if world > 1:
        dist.barrier()

    all_views = {(c, k) for c in range(settings.num_segments) for k in range(settings.num_crops)}
    mine = list(range(rank, len(entries), world))
    scores = {i: VideoScore(entries[i].label, entries[i].video_id, dict(done.get(i, {}))) for i in mine}
    jobs = [(i, entries[i], set(scores[i].views)) for i in mine if not all_views <= set(scores[i].views)]

    gflops = flops_report(model).gflops if hasattr(model, "cfg") else None  # counted on meta, before the move
    device, dtype = resolve_device(settings.device), parse_dtype(settings.dtype)
    model = model.to(device=device, dtype=dtype).eval()
    writer = PredictionWriter(predictions_path(output_dir, rank, world), expected)
    skipped: list[dict] = []
    bar = Progress(total=len(jobs), unit="videos", enabled=progress and rank == 0)
    start = time.perf_counter()
    pending: list[tuple[int, tuple[int, int], torch.Tensor]] = []  # views waiting for a full batch

    def run_batch(batch):
        clips = torch.stack([clip for _, _, clip in batch]).to(device=device, dtype=dtype)
        with torch.inference_mode():
            logits = model(clips).float().cpu()
        records = []
        for (index, key, _), row in zip(batch, logits):
            values = row.tolist()
            scores[index].views[key] = values
            records.append(dict(index=index, video=entries[index].video_id, chunk=key[0], crop=key[1],
                                label=entries[index].label, logits=values))
        writer.write(records)

    try:
        for item in iterate_views(VideoViews(jobs, settings), settings.num_workers):
            if item["error"] is not None:
                skipped.append(dict(video=entries[item["index"]].video_id, reason=item["error"]))
            elif item["clips"] is not None:
                pending.extend((item["index"], key, clip) for key, clip in zip(item["keys"], item["clips"]))
            while len(pending) >= settings.batch_size:
                run_batch(pending[: settings.batch_size])
                del pending[: settings.batch_size]
            bar.update(1)
        if pending:
            run_batch(pending)
    finally:
        writer.close()
        bar.close()
    wall = time.perf_counter() - start

    counts = tally(scores)
    if world > 1:  # only counts and skip notes travel: a few bytes per rank
        gathered: list = [None] * world
        dist.all_gather_object(gathered, (counts, skipped, wall))
        counts = sum((c for c, _, _ in gathered), Tally())
        skipped = [s for _, part, _ in gathered for s in part]
        wall = max(w for _, _, w in gathered)
        if rank != 0:
            return None

    top1, top5 = counts.percent()
    summary = dict(
        top1=top1, top5=top5,
        videos=counts.videos, views=counts.views,
        videos_in_list=len(entries), skipped=sorted(skipped, key=lambda s: s["video"]),
        gflops_per_view=gflops,
        wall_time_s=wall, computed_videos=len(jobs), resumed_views=sum(len(v) for v in done.values()),
        world_size=world, model=model_desc, protocol=settings.protocol_fields(),
    )
    with open(output_dir / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    if log_dir:
        write_tensorboard(log_dir, summary)
    return summary


def write_tensorboard(log_dir: str, summary: dict) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print(f"note: --log_dir {log_dir} ignored: TensorBoard logging needs `pip install tensorboard`")
        return
    with SummaryWriter(log_dir) as tb:
        for key in ("top1", "top5", "gflops_per_view", "wall_time_s"):
            if summary.get(key) is not None and not (isinstance(summary[key], float) and math.isnan(summary[key])):
                tb.add_scalar(f"eval/{key}", summary[key], 0)
