"""Wall-clock speed of a forward pass: warm-up, then the median of repeated runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from sta.core.schedule import UNPRUNED, R, normalize_r
from sta.utils.device import parse_dtype, resolve_device, synchronize


def cpu_description() -> str:
    """The CPU's model name and its widest matrix / vector ISA (``AMD EPYC (avx512_bf16)``), from /proc/cpuinfo;
    empty where there is none. Every speed figure and trained model is named with it."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags][:1]
    return f"{name} ({isa[0]})" if isa else name


@dataclass(frozen=True)
class Timing:
    batch_size: int
    seconds: tuple[float, ...]  # one entry per timed forward of a whole batch

    @property
    def ms_per_clip(self) -> float:
        return statistics.median(self.seconds) * 1e3 / self.batch_size

    @property
    def clips_per_s(self) -> float:
        return 1e3 / self.ms_per_clip


@torch.inference_mode()
def time_forward(model: Callable[[torch.Tensor], object], clips: torch.Tensor, warmup: int = 2,
                 repeats: int = 5) -> Timing:
    """Time ``model(clips)``: ``warmup`` untimed runs, then ``repeats`` timed ones.

    ``model``: a module (clips on its device) or any runner of :mod:`sta.deploy.runners`.
    """
    if isinstance(model, nn.Module):
        model.eval()
    for _ in range(warmup):
        model(clips)
    synchronize(clips.device)
    return Timing(clips.shape[0], tuple(timed_once(model, clips) for _ in range(repeats)))


def timed_once(model: Callable[[torch.Tensor], object], clips: torch.Tensor) -> float:
    """Seconds of one ``model(clips)``: CUDA events on a GPU (the kernels' time on its stream, without the host's
    launch jitter around it), the wall clock after a synchronisation elsewhere."""
    if clips.device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(clips)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start_s = time.perf_counter()
    model(clips)
    synchronize(clips.device)
    return time.perf_counter() - start_s


def random_clips(model: nn.Module, batch_size: int, dtype: torch.dtype, device: torch.device,
                 seed: int = 0) -> torch.Tensor:
    """A batch of random clips shaped for ``model`` (``B x 3 x F x H x W``)."""
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)
    clips = torch.randn(batch_size, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size, generator=gen)
    return clips.to(device=device, dtype=dtype)


@dataclass(frozen=True)
class BenchRow:
    """Speed of one configuration."""

    r: R
    batch_size: int
    dtype: str
    device: str
    ms_per_clip: float
    clips_per_s: float
    speedup: float  # over r=0, measured in the same call

    def to_dict(self) -> dict:
        return dict(asdict(self), r=list(self.r))


def benchmark(model: nn.Module, rs: list, batch_size: int = 1, dtype: str = "float32", device: str = "cpu",
              warmup: int = 2, repeats: int = 5,
              make_runner: Callable[[nn.Module], Callable[[torch.Tensor], object]] | None = None) -> list[BenchRow]:
    """ms/clip and clips/s of ``model`` at each r in ``rs``, plus the speed-up over r=0.

    r=0 is measured first when ``rs`` lacks it. By default the eager model runs
    on ``device`` in ``dtype``; ``make_runner(model)`` (called at each r) gives
    another backend instead (e.g. ``sta.deploy.export.runner_for``). The
    model's r is restored afterwards.
    """
    if not any(normalize_r(r) == UNPRUNED for r in rs):
        rs = [0, *rs]
    torch_dtype, torch_device = parse_dtype(dtype), resolve_device(device)
    if make_runner is None:
        model = model.to(device=torch_device, dtype=torch_dtype)
    clips = random_clips(model, batch_size, torch_dtype if make_runner is None else torch.float32, torch_device)
    timings = []
    for r in rs:
        with model.pruning(r=r):
            timings.append(time_forward(model if make_runner is None else make_runner(model), clips, warmup, repeats))
    base = next(t for r, t in zip(rs, timings) if normalize_r(r) == UNPRUNED).ms_per_clip
    return [BenchRow(normalize_r(r), batch_size, dtype, str(torch_device), t.ms_per_clip, t.clips_per_s,
                     base / t.ms_per_clip) for r, t in zip(rs, timings)]


def time_graph(runner: Callable[[torch.Tensor], object], num_frames: int, img_size: int, batch_size: int = 1,
               warmup: int = 2, repeats: int = 5) -> Timing:
    """Speed of a fixed graph (an exported file's runner) on random float32 ``B x 3 x F x S x S`` clips."""
    gen = torch.Generator().manual_seed(0)
    clips = torch.randn(batch_size, 3, num_frames, img_size, img_size, generator=gen)
    return time_forward(runner, clips, warmup, repeats)
