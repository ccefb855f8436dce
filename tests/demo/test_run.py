"""`sta demo` on the bundled trained model: accuracy bands per method (the README's table)."""

import json

import pytest

from sta.demo.run import print_rows, run_demo, write_outputs

# Held-out top-1 bands (percent) on the demo's 240 clips; measured: see README "What `make demo` shows".
BANDS_R16 = {**{m: (97.0, 100.0) for m in ("sta", "temporal", "norm", "random", "tome", "evs", "vidtldr")},
             "repshift": (60.0, 85.0)}
BANDS_56_8_4 = {"sta": (97.0, 100.0), "temporal": (95.0, 100.0), "norm": (88.0, 99.0), "random": (65.0, 88.0),
                "evs": (75.0, 93.0), "repshift": (40.0, 62.0)}


@pytest.fixture(scope="module")
def rows():
    return run_demo(rs=(16, (56, 8, 4)), progress=False)


@pytest.mark.slow
def test_unpruned_and_bands(rows):
    table = {(row.method, row.r): row for row in rows}
    assert table[(None, (0, 0, 0))].top1 >= 95.0  # the unpruned baseline
    for method, (lo, hi) in BANDS_R16.items():
        assert lo <= table[(method, (16, 16, 16))].top1 <= hi, method
    for method, (lo, hi) in BANDS_56_8_4.items():
        assert lo <= table[(method, (56, 8, 4))].top1 <= hi, method
    assert ("tome", (56, 8, 4)) not in table  # ToMe cannot merge more than half a group
    assert ("vidtldr", (56, 8, 4)) not in table  # nor can vid-TLDR
    assert table[("sta", (56, 8, 4))].top1 >= table[("random", (56, 8, 4))].top1 + 10


def test_equal_token_counts_and_flops(rows):
    at = [row for row in rows if row.r == (56, 8, 4)]
    assert {row.tokens for row in at} == {(64, 32, 24)}
    assert max(row.gflops for row in at) / min(row.gflops for row in at) < 1.02


def test_outputs(rows, tmp_path, capsys):
    print_rows(rows)
    out = capsys.readouterr().out
    assert "56,8,4" in out
    assert out.splitlines()[1].startswith(f"{'unpruned':<10}{'0':>9}  ") and "none" not in out
    files = write_outputs(rows, tmp_path)
    data = json.loads(files["json"].read_text())
    assert len(data) == len(rows) and {"method", "r", "top1", "gflops", "ms_per_clip"} <= set(data[0])
    assert (data[0]["method"], data[0]["r"]) == (None, "0")  # the unpruned baseline: null method at r "0"
    assert [row["r"] for row in data[1:3]] == ["16", "56,8,4"]
    if "plot" in files:
        assert files["plot"].stat().st_size > 10_000


def test_configurations_that_cannot_run_are_named_with_the_reason(capsys):
    from sta.cli import main

    assert main(["demo", "--clips", "1", "--r", "33", "--method", "tome", "--no-progress", "--out", "/dev/null/x"]) == 1
    err = capsys.readouterr().err
    assert "tome r=33 cannot run on this model: tome merges at most half of each group" in err
    assert "no (method, r) could run" in err
