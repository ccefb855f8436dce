"""`sta predict`: class names and probabilities for your own videos, with the evaluation's views.

Each video is decoded once into the protocol's views (``5x3`` Kinetics, ``2x3``
SSv2, or ``--views 1x1`` for speed), the views run in batches through any
runner (the eager model or an exported graph, see :mod:`sta.deploy.runners`),
and the video's probabilities are the mean of its views' softmaxes, as in
`sta eval`. A video that cannot be decoded is reported and the rest go on.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sta.data import VideoEntry, ViewProtocol
from sta.data.video import VIDEO_SUFFIXES
from sta.errors import InvalidInput
from sta.evaluate.run import ViewDataset, iterate_views, video_scores
from sta.utils.progress import Progress


@dataclass(frozen=True)
class Prediction:
    """One video's answer: the ``top`` (class index, name, probability) triples, or why there is none."""

    video: str
    top: list[tuple[int, str, float]]
    views: int
    error: str | None = None

    def to_dict(self) -> dict:
        return dict(video=self.video, views=self.views, error=self.error,
                    top=[dict(index=i, name=name, probability=p) for i, name, p in self.top])


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files as given (tried whatever their suffix), folders as the video files inside them (by suffix,
    recursively, sorted), globs expanded; each file once, however often it is named or reached (symbolic links,
    link loops under ``**``), in first-seen order.

    An argument that matches nothing is warned about and skipped; ``ValueError`` when no argument matched anything.
    """
    videos: list[str] = []
    seen: set[str] = set()
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES
                           and p.is_file())  # a folder named x.mp4 is not a video
        elif any(c in item for c in "*?[") and not os.path.exists(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if not os.path.isdir(p))
        else:
            found = [item]  # a missing file is reported per video, like an undecodable one
        if not found:
            warnings.warn(f"{item}: no videos there", stacklevel=2)
        for path in found:
            key = os.path.realpath(path)
            if key not in seen:
                seen.add(key)
                videos.append(path)
    if not videos:
        raise InvalidInput(f"no videos in {', '.join(inputs)}")
    return videos


def predict_videos(runner: Callable[[torch.Tensor], torch.Tensor], videos: Sequence[str], views: ViewProtocol,
                   class_names: Sequence[str] | None = None, top_k: int = 5, batch_size: int = 8,
                   num_workers: int = 0, progress: bool = True) -> Iterator[Prediction]:
    """Predictions for ``videos``, in order, as each finishes (``runner``: ``B x 3 x F x S x S -> B x classes``)."""
    jobs = [(i, VideoEntry(path, 0, i + 1, path), set()) for i, path in enumerate(videos)]
    bar = Progress(total=len(videos), unit="videos", enabled=progress and len(videos) > 1)
    try:
        for item in iterate_views(ViewDataset(jobs, views), num_workers):
            video = videos[item.index]
            if item.error is not None:
                yield Prediction(video, [], 0, item.error)
            else:
                logits = torch.cat([runner(item.clips[i : i + batch_size]) for i in range(0, len(item.clips),
                                                                                         batch_size)])
                if not torch.isfinite(logits).all():  # a NaN would rank first: say so instead of a class
                    yield Prediction(video, [], len(item.keys), "the model's logits are not finite (NaN or inf)")
                else:
                    scores = video_scores({key: row.tolist() for key, row in zip(item.keys, logits)})
                    yield Prediction(video, top_classes(scores, class_names, top_k), len(item.keys))
            bar.update(1)
    finally:
        bar.close()


def top_classes(scores: np.ndarray, class_names: Sequence[str] | None, k: int) -> list[tuple[int, str, float]]:
    """The ``k`` most probable classes: (index, name or ``class <i>``, probability), highest first."""
    order = np.argsort(-scores, kind="stable")[:k]
    name = (lambda i: class_names[i]) if class_names else (lambda i: f"class {i}")
    return [(int(i), name(int(i)), float(scores[i])) for i in order]
