"""Clips for the GradNorm study (:func:`sta.measure.gradnorm.run_gradnorm`): videos, read as `sta eval` reads them.

A VideoMAE list file's entries or a folder of videos (listed as `sta predict` lists one) give one view per video,
the evaluation's sampling with one segment and the centre crop; the proxy task gives its held-out clips.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from sta.data import VideoDecodeError, VideoEntry, ViewProtocol, read_test_views
from sta.data.proxies import DEFAULT_PROXY, make_clips
from sta.data.synthetic import HELD_OUT_CLIPS, HELD_OUT_SEED
from sta.errors import InvalidInput
from sta.evaluate.predict import expand_inputs
from sta.measure.gradnorm import GradNormClip, SkippedInput

SKIPPED_ERRORS = (VideoDecodeError, OSError)  # a bad input file: skipped and named, the run goes on


class LazyClips:
    """A :data:`~sta.measure.gradnorm.ClipSource` that reads its clips one at a time as it is iterated.

    ``items`` are whatever ``load`` turns into a :class:`GradNormClip` (paths,
    list-file entries, indices); loading lazily keeps memory flat however many
    videos there are. An item whose ``load`` raises one of :data:`SKIPPED_ERRORS`
    comes out as a :class:`SkippedInput` named by ``name(item)``, and the
    iteration goes on. ``len()`` is the number of items; ``description`` names
    the source in the study's result.
    """

    def __init__(self, description: str, items: Sequence, load: Callable[[Any], GradNormClip],
                 name: Callable[[Any], str] = str):
        self.description, self.items, self.load, self.name = description, items, load, name

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[GradNormClip | SkippedInput]:
        for item in self.items:
            try:
                clip = self.load(item)
            except SKIPPED_ERRORS as err:
                yield SkippedInput(self.name(item), f"{type(err).__name__}: {err}")
                continue
            yield clip

    def __repr__(self) -> str:
        return f"LazyClips({self.description!r}, {len(self)} items)"


def clip_views(model: nn.Module, protocol: str = "kinetics", sampling_rate: int = 4) -> ViewProtocol:
    """The evaluation's sampling with one temporal segment and the centre crop, in the model's input format.

    Frames, crop size and mean/std come from ``model.cfg`` (as :func:`sta.vis.tokens.sample_clip` does).
    """
    cfg = model.cfg
    return ViewProtocol(protocol, num_frames=cfg.num_frames, sampling_rate=sampling_rate, num_segments=1,
                        num_crops=1, crop_size=cfg.img_size, mean=cfg.mean, std=cfg.std)


def list_file_source(entries: Sequence[VideoEntry], views: ViewProtocol) -> LazyClips:
    """Clips of a VideoMAE list file's entries (``sta.data.read_list_file``), labelled, one view each.

    ``views`` (see :func:`clip_views`) must have one segment and one crop; each
    clip is ``3 x views.num_frames x crop x crop``, named by the entry's path as written.
    """
    _one_view_check(views)
    return LazyClips(f"list file ({len(entries)} videos)", list(entries),
                     lambda e: GradNormClip(e.video_id, _one_view(e.path, views), e.label),
                     name=lambda e: e.video_id)


def folder_source(path: str | os.PathLike, views: ViewProtocol) -> LazyClips:
    """The videos under ``path`` (by suffix, recursively, sorted, as `sta predict DIR` takes them), one view each,
    unlabelled.

    Files that are not decodable videos are skipped and named. Names are paths relative to ``path``.
    """
    _one_view_check(views)
    root = Path(path)
    if not root.is_dir():
        raise InvalidInput(f"{root}: not a folder")
    files = sorted(map(Path, expand_inputs([str(root)])))
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    return LazyClips(f"folder {root} ({len(files)} files)", files,
                     lambda p: GradNormClip(rel(p), _one_view(p, views)), name=rel)


def proxy_source(n: int | None = None, seed: int | None = None, task=None) -> LazyClips:
    """The bundled proxy task's held-out test clips: ``make_clips(task, n, seed, "test")``, labelled.

    Defaults: ``n = HELD_OUT_CLIPS`` (240), ``seed = HELD_OUT_SEED``, ``task = DEFAULT_PROXY`` (a name or a task):
    the clips ``sta demo``
    scores. Each clip is ``3 x 16 x 64 x 64``; all ``n`` are generated together on first use (they depend on ``n``).
    """
    n = HELD_OUT_CLIPS if n is None else n
    seed = HELD_OUT_SEED if seed is None else seed
    task = DEFAULT_PROXY if task is None else task
    if n < 1:
        raise InvalidInput(f"need at least one clip, got n={n}")
    made: list[tuple[Tensor, Tensor]] = []  # generated once, at the first clip read
    name = lambda i: f"proxy-test-{seed}/{i:04d}"  # noqa: E731

    def load(i: int) -> GradNormClip:
        if not made:
            made.append(make_clips(task, n, seed=seed, split="test"))
        clips, labels = made[0]
        return GradNormClip(name(i), clips[i], int(labels[i]))

    return LazyClips(f"proxy task test clips (n={n}, seed {seed})", range(n), load, name=name)


def _one_view(path: str | os.PathLike, views: ViewProtocol) -> Tensor:
    return read_test_views(path, views)[0].clip


def _one_view_check(views: ViewProtocol) -> None:
    if views.num_segments != 1 or views.num_crops != 1:
        raise InvalidInput(f"GradNorm uses one view per video (1 segment, 1 crop); got {views.num_segments} "
                           f"segments x {views.num_crops} crops (use clip_views(model))")
