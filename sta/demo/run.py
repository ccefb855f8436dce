"""`sta demo`: `sta compare`'s quick form on the bundled, actually trained proxy model.

No network needed: the model ships inside the package (:mod:`sta.models.bundled`)
and the held-out clips are generated from a seed (:mod:`sta.data.synthetic`). The
methods that prune at STA's stages with its token counts run at the same r values, so
one r is one cost for all of them; the table is :func:`sta.evaluate.compare.table`'s
(top-1 with its interval, a paired test against random dropping, interleaved timing).
The unpruned model is the row at r = 0. This is a synthetic proxy; the paper's
Kinetics / SSv2 numbers need the release checkpoints and ``sta eval`` / ``sta compare``.
"""

from __future__ import annotations

from pathlib import Path

from sta.core.schedule import RSpec
from sta.data.proxies import DEFAULT_PROXY, make_clips
from sta.data.synthetic import HELD_OUT_CLIPS, HELD_OUT_SEED
from sta.errors import RunFailed
from sta.evaluate import compare
from sta.models.bundled import load_bundled_model

# Tokens dropped per group (one r, or one per stage). Stage 0 groups hold 64 tokens; the last three
# schedules keep 48, 32 and 22 of the 512 tokens, where the methods part ways. ToMe and vid-TLDR merge
# at most half a group, so they run only the first two.
DEMO_RS: tuple[RSpec, ...] = (16, 32, (48, 16, 8), (56, 8, 4), (60, 2, 1))
# Methods that prune at STA's three stages with STA's token counts, so one r is one cost for all of them (rlt
# prunes before block 0 and is cheaper at the same r; oracle needs a backward pass): `sta compare` matches budgets.
DEMO_METHODS = ("sta", "temporal", "norm", "random", "tome", "evs", "vidtldr", "repshift")
DEMO_SEED = HELD_OUT_SEED  # held-out clips: the test stream, never seen in training
DEMO_CLIPS = HELD_OUT_CLIPS  # 20 per class


def run_demo(methods: list[str] | None = None, rs: tuple[RSpec, ...] = DEMO_RS, num_clips: int = DEMO_CLIPS,
             seed: int = DEMO_SEED, batch_size: int = 16, timing_rounds: int = 3,
             proxy: str = DEFAULT_PROXY) -> compare.Comparison:
    """Every method at every r (and the unpruned model) on the held-out clips of the bundled model of ``proxy``
    (``"easy"`` / ``"hard"``), as a :class:`Comparison`.

    A (method, r) the method cannot run (ToMe beyond half a group) is in ``not_run`` with the reason.
    """
    model = load_bundled_model(proxy=proxy)
    configs, not_run = compare.plan(model, methods or list(DEMO_METHODS), rs=rs)
    if len(configs) < 2:  # said before any clip is made
        raise RunFailed("no (method, r) can run on the bundled model: "
                        + "; ".join(f"{m} at {where}: {why}" for m, where, why in not_run))
    hits = compare.score_proxy(model, configs, proxy, num_clips, batch_size, seed=seed)
    run = dict(model=f"bundled proxy model ({proxy})", data=f"{proxy} proxy, held-out seed {seed}", dtype="float32",
               device="cpu")
    result = compare.Comparison(compare.tabulate(hits), not_run, run=run)
    if timing_rounds:
        clips, _ = make_clips(proxy, batch_size, seed=seed, split="test")
        ms = compare.time_configs(model, configs, clips, rounds=timing_rounds)
        for row in result.rows:
            row.ms_per_clip = ms.get(row.config)
    return result


def write_outputs(result: compare.Comparison, out_dir: str | Path) -> dict[str, Path]:
    """``compare.jsonl``, ``compare.md`` and (with matplotlib) ``compare.png``, as `sta compare` writes them."""
    return compare.write_outputs(result, out_dir, title="bundled proxy (synthetic): top-1 vs GFLOPs per view")
