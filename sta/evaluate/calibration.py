"""Clips to calibrate an int8 graph, and the held-out clips its guard runs on (`sta export --quantize int8`).

A VideoMAE list file or a folder of videos gives one view per video, sampled as `sta eval` samples it (middle
segment, centre crop): the first ``n`` videos calibrate, the next ones (up to :data:`GUARD_VIDEOS`) are the guard's.
``proxy`` (the bundled model's default) gives the proxy task's training-stream clips to calibrate and its
held-out test clips to guard.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from torch import nn

from sta.data import read_list_file
from sta.data.proxies import DEFAULT_PROXY, get_task
from sta.deploy.quantize import Clips, proxy_calibration, proxy_guard, random_calibration
from sta.errors import InvalidInput
from sta.evaluate.sources import LazyClips, clip_views, folder_source, list_file_source
from sta.measure.gradnorm import SkippedInput

GUARD_VIDEOS = 240  # held-out videos the guard runs on, after the calibration ones (as many as the proxy's)
GUARD_RANDOM_CLIPS = 32  # the guard's last resort when no video is left over
PROXY = "proxy"


def calibration_sets(model: nn.Module, spec: str | None, n: int, proxy: str | None = None, protocol: str = "kinetics",
                     sampling_rate: int = 4, data_root: str | None = None,
                     report: Callable[[str], None] = lambda _: None) -> tuple[Clips, Clips]:
    """``(calibration, guard)`` clips for ``model`` from ``spec``: a list file, a folder of videos or ``proxy``
    (the default for a bundled model, whose task ``proxy`` names: ``"easy"`` / ``"hard"``; ``proxy`` also picks the
    task of a ``proxy`` spec). ``report`` hears of skipped videos and of a guard on random clips."""
    spec = spec or (PROXY if proxy else None)
    if spec is None:
        raise InvalidInput("an int8 graph needs calibration videos: `calibration` LIST_FILE, a folder of videos, "
                           "or proxy (clips of the bundled model's task)", param="calibration")
    if spec == PROXY:
        cfg, task = model.cfg, get_task(proxy or DEFAULT_PROXY)
        if (cfg.num_frames, cfg.img_size, cfg.in_chans) != (task.num_frames, task.size, 3):
            raise InvalidInput(f"`calibration` proxy gives {task.num_frames} x {task.size}px clips; "
                               f"this model takes {cfg.num_frames} x {cfg.img_size}px: give it videos",
                               param="calibration")
        return proxy_calibration(n, proxy), proxy_guard(task=proxy)
    views = clip_views(model, protocol, sampling_rate)
    if os.path.isdir(spec):
        source = folder_source(spec, views)
    elif os.path.isfile(spec):
        source = list_file_source(read_list_file(spec, data_root=data_root, num_classes=model.cfg.num_classes), views)
    else:
        raise InvalidInput(f"`calibration` {spec}: no such list file or folder (or say proxy)", param="calibration")
    calibration = video_clips(source, spec, 0, n, "calibration", report)
    if len(source.items) > n:
        return calibration, video_clips(source, spec, n, n + GUARD_VIDEOS, "guard", report)
    report(f"no video is left after the {n} calibration ones: the guard runs on {GUARD_RANDOM_CLIPS} random clips "
           "(lower `calibration_clips` to keep videos for it)")
    return calibration, random_calibration(model, GUARD_RANDOM_CLIPS, seed=1)


def video_clips(source: LazyClips, spec: str, start: int, stop: int, role: str,
                report: Callable[[str], None]) -> Clips:
    """Clips of ``source``'s items ``start:stop``, one view each, read as they are needed (unreadable ones
    reported and skipped)."""
    part = LazyClips(source.description, source.items[start:stop], source.load, source.name)

    def batches():
        for clip in part:
            if isinstance(clip, SkippedInput):
                report(f"{role}: skipped {clip.name}: {clip.reason}")
            else:
                yield clip.clip[None]

    return Clips(f"{spec}: videos {start + 1}-{start + len(part)} of {len(source.items)}, one view each", batches(),
                 len(part))
