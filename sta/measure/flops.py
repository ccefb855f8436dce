"""FLOPs in the paper's convention: one multiply-add = 1 FLOP, per view.

The paper (and ``docs/algorithm.md``) count with fvcore, which
counts matrix products, convolutions and normalisation layers. We count the
same ops as they run, by intercepting ATen calls with a ``TorchDispatchMode``
during a forward on the ``meta`` device: shapes flow, no memory or arithmetic
is spent, so a ViT-H costs nothing to count. Unlike
``torch.utils.flop_counter``, fused attention (any
``_scaled_dot_product_*`` kernel, the CPU one included) is counted as its two
matrix products ``Q K^T`` and ``A V``.

A method's own work is counted the same way, as it runs: STA's and ToMe's
similarity products, vid-TLDR's attention map (explicit at its stage blocks:
the same two products) and its matching, and EVS's cosine similarities (one
multiply-add per pair of channels; counted at the function, as fvcore would
see one op). Elementwise scoring (norms, RLT's pixel differences, sorting)
costs no multiply-adds in this convention. ``oracle``'s GradNorm needs a
backward pass of the unpruned model, which is analysis, not inference: only
its forward is counted (with placeholder scores).
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from sta.core.contract import ClipClassifier, TokenTrace
from sta.core.methods import METHODS, Needs
from sta.core.schedule import R, RSpec, tokens_after_stages
from sta.errors import InvalidInput

aten = torch.ops.aten


def _numel(shape) -> int:
    return math.prod(shape)


def _mm(inputs, out) -> int:  # (M x K) @ (K x N): M*N*K
    a, b = inputs[-2], inputs[-1]
    return a.shape[0] * a.shape[1] * b.shape[1]


def _bmm(inputs, out) -> int:  # (B x M x K) @ (B x K x N)
    a, b = inputs[-2], inputs[-1]
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _conv(inputs, out) -> int:  # every output element is one dot product over C_in/groups x kernel
    weight = inputs[1]
    return _numel(out.shape) * _numel(weight.shape[1:])


def _attention(inputs, out) -> int:  # Q K^T then A V: 2 * B*H * Lq * Lk * d (d_v = d here)
    q, k, v = inputs[:3]
    batch_heads = _numel(q.shape[:-2])
    return batch_heads * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def _layer_norm(inputs, out) -> int:  # fvcore: 5 per element with an affine transform, 4 without
    has_affine = len(inputs) > 2 and inputs[2] is not None
    return _numel(inputs[0].shape) * (5 if has_affine else 4)


_COUNTERS = {
    aten.mm.default: _mm,
    aten.addmm.default: _mm,
    aten.bmm.default: _bmm,
    aten.baddbmm.default: _bmm,
    aten.convolution.default: _conv,
    aten.native_layer_norm.default: _layer_norm,
}


def _counter_for(func):
    if func in _COUNTERS:
        return _COUNTERS[func]
    if "scaled_dot_product" in func.__name__ and "backward" not in func.__name__:
        return _attention
    return None


class _FunctionCounter(TorchFunctionMode):
    """Composite functions that reach the dispatcher only as elementwise pieces, counted whole."""

    def __init__(self, by_op: Counter[str]):
        super().__init__()
        self.by_op = by_op

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.cosine_similarity:  # EVS's score: a dot product per pair of tokens
            a, b = args[:2]
            self.by_op["cosine_similarity"] += _numel(torch.broadcast_shapes(a.shape, b.shape))
        return func(*args, **(kwargs or {}))


class FlopCounter(TorchDispatchMode):
    """Context manager that adds up multiply-adds of every counted op it sees, by op name."""

    def __init__(self):
        super().__init__()
        self.by_op: Counter[str] = Counter()
        self._functions = _FunctionCounter(self.by_op)

    def __enter__(self):
        self._functions.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._functions.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        counter = _counter_for(func)
        if counter is not None:
            first = out[0] if isinstance(out, (tuple, list)) else out
            self.by_op[func.__name__.split(".")[0]] += counter(args, first)
        return out


@dataclass(frozen=True)
class FlopsReport:
    r: R
    tokens: tuple[int, ...]  # tokens alive after each pruning stage
    flops: int  # multiply-adds per view
    by_op: dict[str, int]

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def count_flops(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> int:
    """Multiply-adds of one forward of ``model`` on a ``1 x 3 x F x H x W`` clip (per view)."""
    return count_flops_by_op(model, input_shape).total


def count_flops_by_op(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> FlopCounter:
    """Run ``model`` once on the meta device under a :class:`FlopCounter` and return the counter.

    The architecture is rebuilt on meta (its weights are left alone). ``input_shape``
    defaults to the backbone's own clip shape, ``(1, 3, F, H, W)``.
    """
    return _count(model, input_shape)[0]


def _count(model: nn.Module, input_shape: tuple[int, ...] | None = None, trace: bool = False
           ) -> tuple[FlopCounter, TokenTrace | None]:
    """One meta forward under a counter (and its trace, for a model that gives one)."""
    if input_shape is None:
        cfg = model.cfg
        input_shape = (1, cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size)
    with torch.inference_mode(False):  # weights made under inference mode would skip the ops' decompositions
        meta_model = model if _on_meta(model) else _meta_copy(model)
        clip = torch.empty(input_shape, device="meta", dtype=next(model.parameters()).dtype)
    kwargs = {"return_trace": True} if trace else {}
    method = getattr(model, "method", None)
    if method in METHODS and Needs.SCORES in METHODS[method].needs and any(model.r):
        # oracle: placeholder scores. The GradNorm behind real ones is a backward pass of the unpruned model, an
        # analysis cost outside inference: only this forward is counted.
        kwargs["token_scores"] = torch.zeros(input_shape[0], model.cfg.num_tokens, device="meta")
    counter = FlopCounter()
    # Outside inference mode whatever the caller's: under it, linear layers reach the dispatcher as ops the counter
    # does not see, and a ViT-B would count 45 GFLOPs instead of 180.
    with torch.inference_mode(False), torch.no_grad(), counter:
        out = meta_model(clip, **kwargs)
    return counter, (out[1] if trace else None)


def flops_report(model: nn.Module) -> FlopsReport:
    """Per-view multiply-adds of a backbone at its current ``r``, with the token counts per stage.

    The counts are the ones the forward kept (a method that is not held to STA's counts, such as
    ``evs-q``, reports its own); ``rlt-threshold`` keeps a count that depends on the video, and
    on the meta device every token counts as moving: its upper bound.
    """
    counter, trace = _count(model, trace=isinstance(model, ClipClassifier))
    if trace is not None and len(trace.positions) == 3:
        tokens = tuple(int(p.shape[1]) for p in trace.positions)
    else:
        cfg = model.cfg
        tokens = tokens_after_stages(cfg.num_slices, cfg.tokens_per_slice, model.r)
    return FlopsReport(tuple(model.r), tokens, counter.total, dict(counter.by_op))


def _meta_copy(model: nn.Module) -> nn.Module:
    """The same architecture on the meta device, without copying weights (a ViT-L copy would cost 1.2 GB)."""
    if isinstance(model, ClipClassifier):  # the model contract: every model rebuilds itself without its weights
        return model.meta_copy()
    return copy.deepcopy(model).to("meta")


@dataclass(frozen=True)
class FlopsRow:
    """One row of ``sta flops``: a model at one r."""

    r: R
    method: str
    tokens: tuple[int, ...]  # alive after each stage
    flops: int  # multiply-adds per view
    reduction: float  # 1 - flops / flops at r = 0

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def to_dict(self) -> dict:
        return dict(r=list(self.r), method=self.method, tokens=list(self.tokens), gflops=self.gflops,
                    flops=self.flops, reduction=self.reduction)


def flops_table(model: nn.Module, rs: list[RSpec]) -> list[FlopsRow]:
    """The model's per-view FLOPs at each r (its method), against r = 0; the model's r is left as it was."""
    with model.pruning(r=0):
        base = count_flops(model)
    rows = []
    for r in rs:
        with model.pruning(r=r):
            report = flops_report(model)
        rows.append(FlopsRow(report.r, model.method, report.tokens, report.flops, 1 - report.flops / base))
    return rows


def _on_meta(model: nn.Module) -> bool:
    tensors = list(model.parameters()) + list(model.buffers())
    return bool(tensors) and all(t.is_meta for t in tensors)


def r_for_budget(model: nn.Module, flops_reduction: float | None = None, keep_ratio: float | None = None) -> int:
    """The smallest single r that meets a budget, for this model, input size and method.

    ``flops_reduction``: fraction of the r=0 FLOPs to save (0.35 = at least 35% fewer);
    ``keep_ratio``: fraction of the tokens left after the last stage (at most this many).
    Raises ``ValueError`` if no r reaches it. The model's r is left unchanged.
    """
    if (flops_reduction is None) == (keep_ratio is None):
        raise InvalidInput("give exactly one of flops_reduction and keep_ratio")
    target = flops_reduction if flops_reduction is not None else keep_ratio
    if not 0 < target < 1:
        raise InvalidInput(f"a budget is a fraction between 0 and 1, got {target}")
    cfg = model.cfg
    total = cfg.num_slices * cfg.tokens_per_slice
    with model.pruning(r=0):
        base = count_flops(model)

    def meets(r: int) -> bool:
        if keep_ratio is not None:
            return tokens_after_stages(cfg.num_slices, cfg.tokens_per_slice, r)[-1] / total <= keep_ratio
        with model.pruning(r=r):
            return count_flops(model) <= (1 - flops_reduction) * base

    lo, hi = 1, _largest_r(model)
    if hi < 1 or not meets(hi):
        raise InvalidInput(f"no r reaches that budget on this model (largest valid r is {hi})")
    while lo < hi:  # FLOPs fall and tokens fall as r grows: bisect for the first r that meets it
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if meets(mid) else (mid + 1, hi)
    return lo


def _largest_r(model: nn.Module) -> int:
    """The largest single r every stage (and the model's method) accepts."""
    lo, hi = 0, model.cfg.tokens_per_slice
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            with model.pruning(r=mid):
                lo = mid
        except ValueError:
            hi = mid - 1
    return lo
