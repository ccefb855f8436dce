"""`sta compare`: every token reducer at the same compute budgets, evaluated the way `sta eval` evaluates.

A **budget** is a fraction of the unpruned model's GFLOPs per view. Each method is set to
the single r whose GFLOPs per view (its own scoring, merging and attention maps counted)
come nearest to ``budget x unpruned``; a method that cannot come within ``tolerance``
(2 points of the unpruned cost) is left out with the reason. With ``rs`` instead of
budgets every method runs at those r: STA's token counts, which every method keeps.

Each configuration is one `sta eval` run in its own folder (``runs/<method>-r<r>``): resumable,
torchrun-able, skipped videos named. Then, on the same videos, each method is tested against
random dropping at the same budget with an exact McNemar test on the videos where exactly one of
the two is right; speed is timed interleaved (every configuration once per round, the median
of the rounds), so that load on the machine hits all of them alike.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from sta.core.methods import METHODS, Needs
from sta.core.schedule import UNPRUNED, R, format_r, normalize_r
from sta.data import VideoEntry
from sta.data.proxies import make_clips
from sta.data.synthetic import HELD_OUT_CLIPS, HELD_OUT_SEED
from sta.errors import RunFailed
from sta.evaluate.run import EvalSettings, evaluate, video_hits
from sta.measure.flops import flops_report
from sta.measure.gradnorm import run_gradnorm
from sta.measure.stats import mcnemar_exact, wilson_interval
from sta.utils.device import parse_dtype, resolve_device
from sta.utils.progress import tick

DEFAULT_BUDGETS = (0.7, 0.5, 0.3)
PROXY_CLIPS = 480  # the bundled model's held-out clips a comparison scores by default: enough for a paired test
TOLERANCE = 0.02  # a method's setting counts for a budget when its share of the unpruned GFLOPs is this close
BASELINE = "random"  # the method every other is tested against


@dataclass(frozen=True)
class Config:
    """One configuration to evaluate: a method at one r (the unpruned model: method None, r = 0)."""

    method: str | None
    r: R
    budget: float | None  # the budget it stands for (1.0: the unpruned model; None: an r asked for directly)
    gflops: float  # per view
    share: float  # of the unpruned model's GFLOPs

    @property
    def name(self) -> str:
        return "unpruned" if self.method is None else f"{self.method}-r{format_r(self.r)}"


@dataclass
class Row:
    """A configuration's results."""

    config: Config
    clips: int  # videos scored
    top1: float  # percent
    top1_ci95: tuple[float, float]  # Wilson interval, percent
    top5: float
    ms_per_clip: float | None = None
    gradnorm_kept: float | None = None  # share of the unpruned model's GradNorm the kept tokens carry
    p_vs_random: float | None = None  # exact McNemar against random dropping at the same budget / r
    wins_vs_random: tuple[int, int] | None = None  # (videos only this method gets right, only random does)

    def to_dict(self) -> dict:
        c = self.config
        return dict(method=c.method, r=format_r(c.r), budget=c.budget if c.method else 1.0, gflops=c.gflops,
                    share=c.share, top1=self.top1, top1_ci95=list(self.top1_ci95), top5=self.top5, clips=self.clips,
                    ms_per_clip=self.ms_per_clip, gradnorm_kept=self.gradnorm_kept, p_vs_random=self.p_vs_random,
                    wins_vs_random=list(self.wins_vs_random) if self.wins_vs_random else None)


@dataclass
class Comparison:
    rows: list[Row]
    not_run: list[tuple[str, str, str]] = field(default_factory=list)  # (method, budget or r, why)
    skipped: list[dict] = field(default_factory=list)  # videos no configuration could score (the unpruned run's)
    run: dict = field(default_factory=dict)  # how every row was measured (dtype, device, ...): in each JSONL row


def plan(model: nn.Module, methods: Sequence[str], budgets: Sequence[float] | None = None,
         rs: Sequence | None = None, tolerance: float = TOLERANCE) -> tuple[list[Config], list[tuple[str, str, str]]]:
    """The configurations to run (the unpruned model first) and those that cannot run, with the reason."""
    base = _gflops(model, None, UNPRUNED)
    configs = [Config(None, UNPRUNED, 1.0, base, 1.0)]
    not_run: list[tuple[str, str, str]] = []
    for method in methods:
        if rs is not None:
            for r in rs:
                try:
                    gflops = _gflops(model, method, normalize_r(r))
                except ValueError as err:
                    not_run.append((method, f"r={format_r(r)}", str(err)))
                    continue
                configs.append(Config(method, normalize_r(r), None, gflops, gflops / base))
            continue
        for budget in budgets or DEFAULT_BUDGETS:
            found = nearest_r(model, method, budget * base)
            if found is None or abs(found[1] / base - budget) > tolerance:
                share = f"{found[1] / base:.1%}" if found else "none"
                not_run.append((method, f"budget {budget}", f"no r within {tolerance:.0%} of it (nearest: {share})"))
                continue
            configs.append(Config(method, (found[0],) * 3, budget, found[1], found[1] / base))
    return configs, not_run


def nearest_r(model: nn.Module, method: str, target: float) -> tuple[int, float] | None:
    """The single r whose GFLOPs per view are nearest ``target`` (FLOPs fall as r grows: bisection), or None."""
    valid = [r for r in range(1, model.cfg.tokens_per_slice) if _fits(model, method, r)]
    if not valid:
        return None
    lo, hi = 0, len(valid) - 1
    while lo < hi:  # first r at or below the target
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if _gflops(model, method, (valid[mid],) * 3) > target else (lo, mid)
    candidates = {valid[i] for i in (lo - 1, lo) if 0 <= i < len(valid)}
    return min(((r, _gflops(model, method, (r,) * 3)) for r in candidates), key=lambda rf: abs(rf[1] - target))


def _fits(model: nn.Module, method: str, r: int) -> bool:
    try:
        with model.pruning(r, method):
            return True
    except ValueError:
        return False


def _gflops(model: nn.Module, method: str | None, r: R) -> float:
    with model.pruning(r, method or "sta"):
        return flops_report(model).gflops


Hits = dict[int, tuple[bool, bool]]  # video index -> (top-1 right, top-5 right)


def run_configs(model: nn.Module, configs: list[Config], entries: list[VideoEntry], settings: EvalSettings,
                out_dir: str | Path, model_desc: dict, progress: bool = True,
                on_start: Callable[[Config], None] | None = None) -> tuple[dict[Config, Hits], list[dict]] | None:
    """`sta eval` of every configuration into ``out_dir/runs/<name>`` (resumable): each configuration's hits per
    video, and the videos the unpruned run skipped. None on torchrun ranks other than 0."""
    hits, skipped = {}, []
    for config in configs:
        if on_start is not None:
            on_start(config)
        folder = Path(out_dir) / "runs" / config.name
        with model.pruning(config.r, config.method or "sta"):
            summary = evaluate(model, entries, settings, folder, model_desc, progress=progress)
        if summary is None:
            continue  # not rank 0
        hits[config] = video_hits(folder, entries, summary)
        skipped = skipped or summary.skipped
    return (hits, skipped) if hits else None


def score_clips(model: nn.Module, configs: list[Config], clips: torch.Tensor, labels: torch.Tensor,
                batch_size: int = 16, dtype: str = "float32", device: str = "cpu",
                on_done: Callable[[Config, int], None] | None = None) -> dict[Config, Hits]:
    """Each configuration's hits on clips already in memory (generated, not decoded: the bundled model's), run on
    ``device`` in ``dtype`` (the model is moved there); ``on_done(config, i)`` after each configuration."""
    hits = {}
    torch_device, torch_dtype = resolve_device(device), parse_dtype(dtype)
    model = model.to(device=torch_device, dtype=torch_dtype)
    with torch.inference_mode():
        for i, config in enumerate(configs):
            with model.pruning(config.r, config.method or "sta"):
                logits = torch.cat([model(clips[j : j + batch_size].to(torch_device, torch_dtype)).float().cpu()
                                    for j in range(0, len(clips), batch_size)])
            if not torch.isfinite(logits).all():
                raise RunFailed(f"the model's logits are not finite (NaN or inf) at {config.name}")
            top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits[config] = {k: (bool(top5[k, 0] == y), bool((top5[k] == y).any())) for k, y in enumerate(labels)}
            if on_done is not None:
                on_done(config, i)
    return hits


def score_proxy(model: nn.Module, configs: list[Config], proxy: str, num_clips: int = HELD_OUT_CLIPS,
                batch_size: int = 16, dtype: str = "float32", device: str = "cpu",
                seed: int = HELD_OUT_SEED) -> dict[Config, Hits]:
    """:func:`score_clips` on ``num_clips`` held-out clips of the bundled task ``proxy`` (``"easy"`` / ``"hard"``),
    with one progress line per configuration (the ``sta`` logger)."""
    clips, labels = make_clips(proxy, num_clips, seed=seed, split="test")
    start = time.perf_counter()
    done = lambda config, i: tick(f"{config.name}: {num_clips} clips", i + 1, len(configs), start)  # noqa: E731
    return score_clips(model, configs, clips, labels, batch_size, dtype, device, on_done=done)


def tabulate(hits: dict[Config, Hits]) -> list[Row]:
    """Top-1 with its interval, top-5, and the paired test against random dropping at the same budget / r."""
    rows = []
    for config, found in hits.items():
        scored, top1, top5 = len(found), sum(h[0] for h in found.values()), sum(h[1] for h in found.values())
        if not scored:
            rows.append(Row(config, 0, float("nan"), (float("nan"),) * 2, float("nan")))
            continue
        lo, hi = wilson_interval(top1, scored)
        rows.append(Row(config, scored, 100.0 * top1 / scored, (100 * lo, 100 * hi), 100.0 * top5 / scored))
    randoms = {_slot(r.config): r.config for r in rows if r.config.method == BASELINE}
    for row in rows:
        c = row.config
        random = randoms.get(_slot(c))
        if c.method in (None, BASELINE) or random is None:
            continue
        both = hits[c].keys() & hits[random].keys()  # the same videos: paired
        only_this = sum(hits[c][i][0] and not hits[random][i][0] for i in both)
        only_random = sum(hits[random][i][0] and not hits[c][i][0] for i in both)
        row.p_vs_random, row.wins_vs_random = mcnemar_exact(only_this, only_random), (only_this, only_random)
    return rows


def add_gradnorm(model: nn.Module, comparison: Comparison, source, batch_size: int = 8, device: str | None = None,
                 progress: bool = True) -> None:
    """Each row's share of the unpruned model's GradNorm its kept tokens carry, over ``source``'s clips
    (:mod:`sta.evaluate.sources`); the unpruned row keeps all of it."""
    pruned = [row.config for row in comparison.rows if row.config.method is not None]
    study = run_gradnorm(model, source, methods=sorted({c.method for c in pruned}), rs=sorted({c.r for c in pruned}),
                         batch_size=batch_size, device=device, progress=progress)
    shares = {(row.method, row.r): row.kept_share for row in study.rows}
    for row in comparison.rows:
        c = row.config
        row.gradnorm_kept = 1.0 if c.method is None else shares.get((c.method, c.r))


def _slot(config: Config) -> tuple:
    """What makes two configurations comparable: the same budget, or the same r when r was asked for."""
    return ("budget", config.budget) if config.budget is not None else ("r", config.r)


def time_configs(model: nn.Module, configs: list[Config], clips: torch.Tensor, dtype: str = "float32",
                 device: str = "cpu", rounds: int = 5) -> dict[Config, float]:
    """ms per clip of each configuration, timed interleaved: one forward of each per round, the median of rounds.

    A method scored by a backward pass (``oracle``) is not an inference method: it is not timed.
    """
    configs = [c for c in configs if c.method is None or Needs.SCORES not in METHODS[c.method].needs]
    torch_device = resolve_device(device)
    model = model.to(device=torch_device, dtype=parse_dtype(dtype)).eval()
    clips = clips.to(device=torch_device, dtype=parse_dtype(dtype))
    times: dict[Config, list[float]] = {c: [] for c in configs}
    with torch.inference_mode():
        for round_ in range(rounds + 1):  # round 0 warms every configuration's shapes up, untimed
            for config in configs:
                with model.pruning(config.r, config.method or "sta"):
                    if torch_device.type == "cuda":
                        torch.cuda.synchronize(torch_device)
                    start = time.perf_counter()
                    model(clips)
                    if torch_device.type == "cuda":
                        torch.cuda.synchronize(torch_device)
                    if round_:
                        times[config].append(1e3 * (time.perf_counter() - start) / len(clips))
    return {c: statistics.median(t) for c, t in times.items()}


def curves(comparison: Comparison) -> dict[str, list[tuple[float, float, float, float]]]:
    """Method -> its ``(gflops, top1, ci low, ci high)`` points, each line starting at the unpruned model."""
    base = [row for row in comparison.rows if row.config.method is None and row.clips]
    series: dict[str, list] = {}
    for row in comparison.rows:
        if row.config.method is not None and row.clips:
            series.setdefault(row.config.method, []).append(_point(row))
    return {method: points + [_point(b) for b in base] for method, points in series.items()}


def _point(row: Row) -> tuple[float, float, float, float]:
    return (row.config.gflops, row.top1, *row.top1_ci95)


def write_outputs(comparison: Comparison, out_dir: str | Path, title: str | None = None) -> dict[str, Path]:
    """``compare.jsonl`` (one object per configuration), ``compare.md`` (the table and what it means) and, with
    matplotlib, ``compare.png`` (top-1 with intervals vs GFLOPs, one line per method) titled ``title``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"jsonl": out_dir / "compare.jsonl", "md": out_dir / "compare.md"}
    try:
        from sta.vis.plot import plot_comparison

        files["plot"] = plot_comparison(curves(comparison), out_dir / "compare.png",
                                        title or "top-1 vs GFLOPs per view", panels=2)
    except ImportError:  # matplotlib is an extra
        pass
    rows = [dict(row.to_dict(), **comparison.run) for row in comparison.rows]
    rows += [dict(skipped=item["video"], reason=item["reason"]) for item in comparison.skipped]
    files["jsonl"].write_text("".join(json.dumps(row, allow_nan=False) + "\n" for row in rows))
    files["md"].write_text(table(comparison) + "\n")
    return files


def table(comparison: Comparison) -> str:
    """The comparison as a Markdown table, best first within each budget, with its footnotes."""
    show_gradnorm = any(row.gradnorm_kept is not None for row in comparison.rows)
    header = ["method", "r", "budget", "GFLOPs/view", "share", "top-1 % [95% CI]", "top-5 %", "ms/clip"]
    header += ["GradNorm kept"] * show_gradnorm + ["vs random: p (wins-losses)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in sorted(comparison.rows, key=_order):
        c = row.config
        budget = "-" if c.budget is None or c.method is None else f"{c.budget}"
        top1 = f"{row.top1:.1f} [{row.top1_ci95[0]:.1f}, {row.top1_ci95[1]:.1f}]"
        cells = [c.method or "unpruned", format_r(c.r), budget, f"{c.gflops:.3f}", f"{c.share:.1%}", top1,
                 f"{row.top5:.1f}", "-" if row.ms_per_clip is None else f"{row.ms_per_clip:.2f}"]
        if show_gradnorm:
            cells.append("-" if row.gradnorm_kept is None else f"{row.gradnorm_kept:.1%}")
        cells.append("-" if row.p_vs_random is None else
                     f"{row.p_vs_random:.2g} ({row.wins_vs_random[0]}-{row.wins_vs_random[1]})")
        lines.append("| " + " | ".join(cells) + " |")
    clips = max((row.clips for row in comparison.rows), default=0)
    lines.append("")
    lines.append(f"{clips} videos. 95% CI: Wilson score interval. vs random: two-sided exact McNemar test against "
                 "random dropping at the same budget on the same videos; wins-losses = videos only this method / only "
                 "random gets right. ms/clip: median of interleaved rounds on this machine."
                 + "".join(f" {key}: {value}." for key, value in comparison.run.items()))
    lines += [f"not run: {m} at {where}: {why}" for m, where, why in comparison.not_run]
    lines += [f"skipped: {item['video']}: {item['reason']}" for item in comparison.skipped]
    return "\n".join(lines)


def _order(row: Row) -> tuple:
    c = row.config
    return (c.method is not None, -(c.budget or 0), c.r if c.budget is None else (), -row.top1, c.method or "")

