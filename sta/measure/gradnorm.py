"""How much of a model's GradNorm each pruning method keeps, over a whole set of clips (`sta gradnorm`'s study).

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

   ``oracle`` is given the predicted class's map (:func:`oracle_scores`); a count that
   varies per clip (``rlt-threshold``) is reported as its mean.

3. Streaming statistics over clips (:mod:`sta.measure.stats`): a 95%
   confidence interval without keeping per-clip values, and the running mean
   GradNorm map (``T x S``; each clip's map normalised to sum 1 first), so
   memory does not grow with the number of clips.

Clips come from a :data:`ClipSource`: any iterable of :class:`GradNormClip`,
with a :class:`SkippedInput` in place of each input that gave no clip (readers
of videos and of the proxy task: :mod:`sta.evaluate.sources`). The figures are
drawn by :mod:`sta.vis.gradnorm_plots`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sta.core.contract import TokenScorer
from sta.core.methods import METHODS, Needs, check_method
from sta.core.schedule import UNPRUNED, R, RSpec, format_r, normalize_r
from sta.errors import InvalidInput
from sta.measure.stats import CI_METHOD, RunningStats
from sta.utils.progress import Progress

TARGETS = ("predicted", "label")
TOP_FRACTION = 0.1  # "high-activation" tokens: the top 10% of a clip's GradNorm


# --------------------------------------------------------------------------- GradNorm

def batch_gradnorm(model: nn.Module, clips: Tensor, targets: Tensor | None = None, embedding: str = "patch_embed",
                   return_trace: bool = False) -> tuple[Tensor, Tensor, Tensor, Any]:
    """Per clip and token, ``||d logit_c / d e_i||_2`` with ``e_i`` the token's patch embedding, for a batch.

    ``clips``: ``B x 3 x F x H x W``. ``targets``: ``B`` class indices, or None for each clip's predicted
    class. ``embedding``: the submodule whose output (``B x N x C``) is the patch embedding; it is replaced
    by a leaf tensor during the forward, and one backward of the sum of the clips' target logits gives every
    clip's gradient at once. Runs the model as it is (``model.pruning(r=0)`` for the unpruned map);
    parameters' ``.grad`` are left untouched. Returns ``(gradnorm B x N float32, targets B int64, logits
    B x classes, trace)``, all detached; ``trace``: the forward's TokenTrace with ``return_trace``, else None.
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

    ``clip``: ``3 x F x H x W``, on the model as it is (``model.r = 0`` for the unpruned map); tokens dropped
    on the way get the gradient that reaches them before. Returns (``T*S`` float32, predicted class).
    """
    values, targets, _, _ = batch_gradnorm(model, clip[None])
    return values[0], int(targets[0])


def oracle_scores(model: nn.Module, clips: Tensor, embedding: str = "patch_embed") -> Tensor:
    """``oracle``'s scores, ``B x N`` float32: the GradNorm of the **unpruned** model's predicted class, one forward
    and one backward at r = 0 (the model's r comes back). Use: ``model(clips, token_scores=oracle_scores(model,
    clips))``, or run inside ``model.scored_by(oracle_scorer(model))``."""
    with model.pruning(r=0):
        return batch_gradnorm(model, clips, None, embedding)[0]


def oracle_scorer(model: nn.Module, embedding: str = "patch_embed") -> TokenScorer:
    """``clips -> oracle_scores(model, clips)`` for ``model.scored_by(...)``: each ``oracle`` forward scores itself."""
    return functools.partial(oracle_scores, model, embedding=embedding)


# --------------------------------------------------------------------------- per-clip measures

def kept_mask(positions: Tensor, num_tokens: int) -> Tensor:
    """``B x L`` original positions of live tokens -> ``B x num_tokens`` bool, True where one is alive (-1: none)."""
    hits = torch.zeros(positions.shape[0], num_tokens, dtype=torch.int64, device=positions.device)
    return hits.scatter_add_(1, positions.clamp(min=0), (positions >= 0).long()) > 0


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


# --------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class GradNormClip:
    """One input of the study: ``clip`` is ``3 x F x H x W`` float, normalised as the model expects."""

    name: str
    clip: Tensor
    label: int | None = None


@dataclass(frozen=True)
class SkippedInput:
    """An input that gave no clip (undecodable or not a video), or no GradNorm to share, with the reason."""

    name: str
    reason: str


# What run_gradnorm reads: clips, and a record for each input that gave none (named in the result, the run goes on);
# a source with len() sizes the progress bar, one with a `description` attribute names itself in the result.
ClipSource = Iterable[GradNormClip | SkippedInput]


# --------------------------------------------------------------------------- results

@dataclass(frozen=True)
class GradNormRow:
    """One (method, r) over all clips; the unpruned model is the row with ``r == UNPRUNED`` and ``method`` None."""

    method: str | None
    r: R  # written "16" or "48,16,8" (format_r)
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

    def to_dict(self) -> dict:
        """Strict-JSON-ready: r as the CLI writes it, NaN -> None, the unpruned row's method None (null)."""
        return _nan_to_none(asdict(self) | {"r": format_r(self.r)})


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
    not_run: list[dict] = field(default_factory=list)  # method, r (R) and reason for each (method, r) left out

    def to_rows(self) -> list[dict]:
        """One strict-JSON-ready dict per row (NaN -> None)."""
        return [row.to_dict() for row in self.rows]

    def to_dict(self) -> dict:
        return dict(source=self.source, target=self.target, clips=self.clips, top_fraction=self.top_fraction,
                    ci=self.ci, rows=self.to_rows(), grid=list(self.grid),
                    mean_map=[[float(v) for v in slice_] for slice_ in self.mean_map],
                    skipped=[asdict(s) for s in self.skipped],
                    not_run=[item | {"r": format_r(item["r"])} for item in self.not_run])

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(_nan_to_none(self.to_dict()), indent=indent)

    def table(self) -> str:
        """The rows as a text table, then what was skipped or not run (no trailing newline)."""
        target = "the unpruned model's predicted class" if self.target == "predicted" else "the label"
        top, w = f"top-{self.top_fraction:.0%}", max([10] + [len(row.method or "") + 1 for row in self.rows])
        lines = [f"GradNorm ({target}) kept after the last stage, over {self.clips} clips of {self.source}; "
                 f"± = 95% CI (Student t)",
                 f"{'method':<{w}}{'r':>9}  {'tokens kept':<14}{'kept %':>7}  {'GradNorm kept %':<17}"
                 f"{top + ' kept %':>15}{'top-1 %':>9}"]
        for row in self.rows:
            ci = f" ± {100 * row.ci95:.2f}" if math.isfinite(row.ci95) else ""
            share = f"{100 * row.kept_share:6.2f}{ci}" if row.clips else "-"
            top1 = f"{row.top1:9.1f}" if row.top1 is not None else f"{'-':>9}"
            method = row.method if row.method is not None else "unpruned"
            lines.append(f"{method:<{w}}{format_r(row.r):>9}  {f'{row.tokens_kept}/{row.tokens_total}':<14}"
                         f"{100 * row.kept_fraction:>7.1f}  {share:<17}{100 * row.top10_kept:>15.1f}{top1}")
        lines += [f"not run: {item['method']} r={format_r(item['r'])}: {item['reason']}" for item in self.not_run]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines += [f"  {item.name}: {item.reason}" for item in self.skipped]
        return "\n".join(lines)


def write_gradnorm_json(result: GradNormResult, out_dir: str | Path) -> Path:
    """Write ``out_dir/gradnorm.json`` (``result.to_dict()``, strict JSON), creating the folder; returns its path."""
    path = Path(out_dir) / "gradnorm.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.to_json() + "\n", encoding="utf-8")
    return path


def _nan_to_none(value):
    """NaN (a CI over one clip) -> null: strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


# --------------------------------------------------------------------------- the study

def run_gradnorm(model: nn.Module, source: ClipSource, methods: Sequence[str] | None = None,
                 rs: Sequence[RSpec] = (16,), target: str = "predicted", batch_size: int = 8,
                 device: str | torch.device | None = None, progress: bool = True,
                 top_fraction: float = TOP_FRACTION, embedding: str = "patch_embed") -> GradNormResult:
    """GradNorm of the unpruned model per clip, and the share of it each method keeps at each r.

    ``model``: a :class:`~sta.core.contract.ClipClassifier` (its r and method come back after).
    ``source``: a :data:`ClipSource` (``3 x F x H x W`` clips; :class:`SkippedInput` records go to
    ``skipped``). ``methods``: names in :data:`sta.core.methods.METHODS` (None = all). ``rs``: ints or
    per-stage triples; a (method, r) the method cannot run is listed in ``not_run``. ``target``:
    ``"predicted"`` (the unpruned model's class) or ``"label"``. ``batch_size`` clips share one forward and
    one backward. ``device``: where to run (None = where the model is). Rows: the unpruned model
    (``method`` None, r = 0) first, then method by method in the given r order.
    """
    methods, rs = _check_arguments(methods, rs, target, batch_size, top_fraction)
    param = next(model.parameters())
    device = torch.device(device) if device is not None else param.device
    model.to(device).eval()
    configs, not_run = _configs(model, methods, rs)
    study = _Study(model, configs, target, top_fraction, embedding, device, param.dtype)
    read_skips: list[SkippedInput] = []
    bar = Progress(total=len(source) if isinstance(source, Sized) else 0, unit="clips", enabled=progress,
                   desc="sta gradnorm")
    for batch, consumed in _batches(source, batch_size, read_skips):
        if batch:
            study.add(batch)
        bar.update(consumed)
    bar.close()
    side = model.cfg.img_size // model.cfg.patch_size
    return GradNormResult(rows=study.rows(), mean_map=study.mean_map, grid=(study.T, side, side), clips=study.clips,
                          skipped=read_skips + study.unscored, target=target,
                          source=getattr(source, "description", type(source).__name__),
                          top_fraction=top_fraction, not_run=not_run)


def _check_arguments(methods: Sequence[str] | None, rs: Sequence[RSpec], target: str, batch_size: int,
                     top_fraction: float) -> tuple[list[str], list[RSpec]]:
    """Every argument error before the first clip is read (a malformed r fails here, not mid-run)."""
    if target not in TARGETS:
        raise InvalidInput(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
    if not 0 < top_fraction <= 1:
        raise InvalidInput(f"top_fraction must be in (0, 1], got {top_fraction}")
    methods = list(METHODS) if methods is None else list(methods)
    for method in methods:
        check_method(method, ())
    for r in rs:
        normalize_r(r)
    return methods, list(rs)


def _configs(model: nn.Module, methods: list[str], rs: list[RSpec]) -> tuple[list[tuple[str | None, R]], list[dict]]:
    """The unpruned model, then every (method, r) the model can run; the others with the reason."""
    configs: list[tuple[str | None, R]] = [(None, UNPRUNED)]
    not_run = []
    for method in methods:
        for r in rs:
            try:
                with model.pruning(r, method):  # r as given: the reason quotes it as the user wrote it
                    pass
            except ValueError as err:
                not_run.append(dict(method=method, r=normalize_r(r), reason=str(err)))
            else:
                configs.append((method, normalize_r(r)))
    return configs, not_run


def _batches(source: ClipSource, size: int, skipped: list[SkippedInput]) -> Iterator[tuple[list[GradNormClip], int]]:
    """Batches of up to ``size`` clips with the source items each consumed (skips, which go to ``skipped``, too)."""
    batch: list[GradNormClip] = []
    consumed = 0
    for item in source:
        consumed += 1
        if isinstance(item, SkippedInput):
            skipped.append(item)
            continue
        batch.append(item)
        if len(batch) == size:
            yield batch, consumed
            batch, consumed = [], 0
    if batch or consumed:
        yield batch, consumed


class _Accumulator:
    """One (method, r)'s running statistics over clips."""

    def __init__(self) -> None:
        self.share, self.top = RunningStats(), RunningStats()
        self.correct, self.labelled = 0, 0
        self.kept, self.forwards = [0, 0, 0], 0  # tokens alive after each stage summed over clips; clips run

    def add(self, positions: list[Tensor], gradnorm: Tensor, top: Tensor, valid: Tensor, predicted: Tensor,
            labels: Tensor | None) -> None:
        mask = kept_mask(positions[-1].cpu(), gradnorm.shape[1])
        self.kept = [total + int((p >= 0).sum()) for total, p in zip(self.kept, positions)]
        self.forwards += positions[-1].shape[0]
        self.share.update(kept_share(gradnorm, mask)[valid])
        self.top.update(top_kept(mask, top)[valid])
        if labels is not None:
            self.correct += int((predicted.cpu() == labels)[valid].sum())
            self.labelled += int(valid.sum())

    def row(self, method: str | None, r: R, num_tokens: int) -> GradNormRow:
        # mean over clips: the same for every clip unless the method's count varies (rlt-threshold)
        mean = [total / self.forwards for total in self.kept] if self.forwards else [float(num_tokens)] * 3
        tokens, share, top = [round(m) for m in mean], self.share, self.top
        return GradNormRow(
            method=method, r=r, tokens_per_stage=tokens, tokens_kept=tokens[-1], tokens_total=num_tokens,
            kept_fraction=mean[-1] / num_tokens, kept_share=share.mean if share.count else float("nan"),
            ci95=share.ci95, kept_share_std=share.std,
            top10_kept=top.mean if top.count else float("nan"), top10_kept_ci95=top.ci95,
            # top-1 only when every scored clip had a label
            top1=100.0 * self.correct / self.labelled if self.labelled and self.labelled == share.count else None,
            clips=share.count)


class _Study:
    """The running state of one :func:`run_gradnorm`: per-(method, r) statistics and the mean GradNorm map."""

    def __init__(self, model: nn.Module, configs: list[tuple[str | None, R]], target: str, top_fraction: float,
                 embedding: str, device: torch.device, dtype: torch.dtype):
        cfg = model.cfg
        self.model, self.configs, self.target, self.top_fraction = model, configs, target, top_fraction
        self.embedding, self.device, self.dtype = embedding, device, dtype
        self.T, self.S, self.N = cfg.num_slices, cfg.tokens_per_slice, cfg.num_slices * cfg.tokens_per_slice
        self.expected = (cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size)
        self.acc = [_Accumulator() for _ in configs]
        self.mean_map = np.zeros((self.T, self.S), dtype=np.float64)
        self.clips = 0
        self.unscored: list[SkippedInput] = []  # clips whose GradNorm has no mass to share
        self.oracle = any(m is not None and Needs.SCORES in METHODS[m].needs for m, _ in configs)

    def add(self, batch: list[GradNormClip]) -> None:
        """Score one batch: the unpruned GradNorm, then each (method, r)'s kept tokens and predictions."""
        self._check(batch)
        x = torch.stack([item.clip for item in batch]).to(device=self.device, dtype=self.dtype)
        labels = [item.label for item in batch]
        label_t = torch.tensor([label if label is not None else -1 for label in labels])
        with self.model.pruning(r=0):
            g, _, logits, trace = batch_gradnorm(self.model, x, label_t if self.target == "label" else None,
                                                 self.embedding, return_trace=True)
        # oracle's scores: the predicted class's GradNorm (the study's own map unless it follows the labels)
        oracle = g if self.target == "predicted" or not self.oracle else oracle_scores(self.model, x, self.embedding)
        g = g.double().cpu()
        if g.shape[1] != self.N:
            raise InvalidInput(f"the embedding gave {g.shape[1]} tokens, the model's config {self.T} x {self.S} = "
                               f"{self.N}")
        valid = self._add_maps(batch, g)
        top = top_tokens(g, self.top_fraction)
        scored_labels = label_t if all(label is not None for label in labels) else None
        for acc, (method, r) in zip(self.acc, self.configs):
            if method is None:  # the unpruned forward is the one GradNorm came from
                positions, predicted = trace.positions, logits.argmax(-1)
            else:
                given = dict(token_scores=oracle) if Needs.SCORES in METHODS[method].needs else {}
                with self.model.pruning(r, method), torch.inference_mode():
                    out, pruned = self.model(x, return_trace=True, **given)
                positions, predicted = pruned.positions, out.argmax(-1)
            acc.add(positions, g, top, valid, predicted, scored_labels)

    def _check(self, batch: list[GradNormClip]) -> None:
        for item in batch:
            if tuple(item.clip.shape) != self.expected:
                raise InvalidInput(f"{item.name}: clip of shape {tuple(item.clip.shape)}, the model takes "
                                   f"{' x '.join(map(str, self.expected))}")
            if self.target == "label" and item.label is None:
                raise InvalidInput(f"{item.name}: no label, and target='label' needs one for every clip "
                                   "(use a list file or the proxy task, or target='predicted')")

    def _add_maps(self, batch: list[GradNormClip], g: Tensor) -> Tensor:
        """Fold the clips with GradNorm mass into the running mean map; record the others. Returns the valid mask."""
        mass = g.sum(1)
        valid = torch.isfinite(mass) & (mass > 0)
        self.unscored += [SkippedInput(item.name, "GradNorm is zero or not finite everywhere")
                          for item, ok in zip(batch, valid.tolist()) if not ok]
        for b in torch.nonzero(valid).flatten().tolist():
            self.clips += 1
            self.mean_map += ((g[b] / mass[b]).view(self.T, self.S).numpy() - self.mean_map) / self.clips
        return valid

    def rows(self) -> list[GradNormRow]:
        return [acc.row(method, r, self.N) for acc, (method, r) in zip(self.acc, self.configs)]
