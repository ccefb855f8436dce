"""`sta compare`: methods set to equal budgets, evaluated as `sta eval` does, tested in pairs against random."""

from __future__ import annotations

import json

import pytest
import torch

from sta.cli import main
from sta.core.schedule import UNPRUNED
from sta.evaluate import compare
from sta.evaluate.compare import Comparison, Config, nearest_r, plan, tabulate
from sta.models.bundled import load_bundled_model


@pytest.fixture(scope="module")
def model():
    return load_bundled_model(proxy="easy")


def test_each_method_is_set_to_the_r_nearest_the_budget(model):
    configs, not_run = plan(model, ["sta", "random", "tome"], budgets=[0.5, 0.1])
    assert configs[0] == Config(None, UNPRUNED, 1.0, pytest.approx(0.721, abs=1e-3), 1.0)
    by = {(c.method, c.budget): c for c in configs[1:]}
    for method in ("sta", "random"):
        assert abs(by[(method, 0.5)].share - 0.5) <= compare.TOLERANCE
        r = by[(method, 0.5)].r[0]  # nearest: no other single r comes closer
        for other in (r - 1, r + 1):
            with model.pruning(other, method):
                from sta.measure.flops import flops_report

                assert abs(flops_report(model).gflops / configs[0].gflops - 0.5) >= abs(by[(method, 0.5)].share - 0.5)
    # ToMe merges at most half a group: 10% of the unpruned cost is out of its reach, and it says so
    assert ("tome", "budget 0.1") in {(m, w) for m, w, _ in not_run} and ("tome", 0.1) not in by
    assert nearest_r(model, "tome", 0.0) is not None  # still its cheapest setting, just too far from 0


def test_with_r_every_method_keeps_the_same_tokens(model):
    configs, not_run = plan(model, ["sta", "norm"], rs=[16, (48, 16, 8)])
    assert not not_run and [(c.method, c.r) for c in configs[1:]] == [
        ("sta", (16, 16, 16)), ("sta", (48, 16, 8)), ("norm", (16, 16, 16)), ("norm", (48, 16, 8))]
    assert all(c.budget is None for c in configs[1:])


def test_paired_test_and_interval_from_hits():
    base = Config(None, UNPRUNED, 1.0, 1.0, 1.0)
    sta, random = Config("sta", (2,) * 3, 0.5, 0.5, 0.5), Config("random", (2,) * 3, 0.5, 0.5, 0.5)
    hits = {base: {i: (True, True) for i in range(20)},
            sta: {i: (i != 0, True) for i in range(20)},  # 19 right
            random: {i: (i >= 8, i >= 4) for i in range(20)}}  # 12 right; sta alone right on 7, random alone on 0
    rows = {row.config.method: row for row in tabulate(hits)}
    assert rows["sta"].top1 == 95.0 and rows["random"].top5 == 80.0 and rows[None].top1 == 100.0
    assert rows["sta"].wins_vs_random == (7, 0) and rows["sta"].p_vs_random == pytest.approx(2 / 128)
    assert rows["random"].p_vs_random is None and rows[None].p_vs_random is None
    lo, hi = rows["sta"].top1_ci95
    assert 70 < lo < 95 < hi < 100


def test_score_clips_matches_a_plain_forward(model):
    from sta.data.synthetic import PROXY_TASK, make_clips

    clips, labels = make_clips(PROXY_TASK, 12, seed=5, split="test")
    config = Config("sta", (16,) * 3, None, 0.4, 0.58)
    hits = compare.score_clips(model, [config], clips, labels, batch_size=5)[config]
    with torch.no_grad(), model.pruning(16, "sta"):
        expected = model(clips).argmax(1) == labels
    assert [hits[i][0] for i in range(12)] == expected.tolist()


def test_cli_on_the_bundled_model_writes_table_jsonl_and_plot(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["compare", "--methods", "sta", "random", "--budgets", "0.5", "--clips", "24", "--timing-rounds", "1",
                 "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| unpruned | 0 |" in printed and "vs random" in printed
    rows = [json.loads(line) for line in (out / "compare.jsonl").read_text().splitlines()]
    assert [(r["method"], r["budget"]) for r in rows] == [(None, 1.0), ("sta", 0.5), ("random", 0.5)]
    assert all(r["clips"] == 24 and len(r["top1_ci95"]) == 2 and r["ms_per_clip"] > 0 for r in rows)
    assert rows[1]["p_vs_random"] is not None and (out / "compare.md").is_file()
    pytest.importorskip("matplotlib")
    assert (out / "compare.png").stat().st_size > 1000


def test_cli_evaluates_each_configuration_as_sta_eval_does_and_resumes(tmp_path, capsys):
    from sta.data.proxies import write_videos

    videos = tmp_path / "v"
    write_videos(videos, 6)
    argv = ["compare", "--data-path", str(videos), "--data-root", str(videos), "--sampling-rate", "1",
            "--test-num-segment", "1", "--test-num-crop", "1", "--methods", "sta", "random", "--r", "16",
            "--timing-rounds", "0", "--num-workers", "0", "--out", str(tmp_path / "c"), "--no-progress"]
    assert main(argv) == 0
    first = (tmp_path / "c" / "compare.jsonl").read_text()
    runs = sorted(p.name for p in (tmp_path / "c" / "runs").iterdir())
    assert runs == ["random-r16", "sta-r16", "unpruned"]
    assert all((tmp_path / "c" / "runs" / name / "summary.json").is_file() for name in runs)
    capsys.readouterr()
    assert main(argv) == 0  # every view is on disk already: nothing is computed again, same table
    assert (tmp_path / "c" / "compare.jsonl").read_text() == first
    summary = json.loads((tmp_path / "c" / "runs" / "sta-r16" / "summary.json").read_text())
    assert summary["computed_videos"] == 0 and summary["videos"] == 6


def test_comparison_table_names_what_did_not_run():
    base = Config(None, UNPRUNED, 1.0, 1.0, 1.0)
    text = compare.table(Comparison(tabulate({base: {0: (True, True)}}), [("tome", "budget 0.1", "too far")]))
    assert "not run: tome at budget 0.1: too far" in text


def test_in_memory_scoring_runs_in_the_dtype_it_says_and_records_it(model, tmp_path):
    """`sta compare --dtype bfloat16` on the bundled path used to score in float32 (and record no dtype)."""
    from sta.data.proxies import make_clips

    clips, labels = make_clips("easy", 24, seed=5, split="test")
    configs, _ = plan(model, ["sta"], rs=[32])
    seen = []
    hook = model.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    try:
        hits = compare.score_clips(model, configs, clips, labels, batch_size=12, dtype="bfloat16")
    finally:
        hook.remove()
    assert set(seen) == {torch.bfloat16}
    assert next(model.parameters()).dtype == torch.bfloat16
    with torch.no_grad(), model.pruning(32, "sta"):
        expected = model(clips.to(torch.bfloat16)).float().argmax(1)
    assert [hits[configs[1]][i][0] for i in range(24)] == (expected == labels).tolist()
    model.float()
    result = Comparison(tabulate(hits), run=dict(dtype="bfloat16", device="cpu"))
    compare.write_outputs(result, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "compare.jsonl").read_text().splitlines()]
    assert all(row["dtype"] == "bfloat16" for row in rows) and "bfloat16" in (tmp_path / "compare.md").read_text()
