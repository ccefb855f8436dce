"""The `sta` command line: flops and bench, as a user calls them."""

import json
import subprocess
import sys

import pytest

from sta.cli import main, parse_r


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_flops_json_rows(capsys):
    rows = run_json(capsys, ["flops", "--model", "vit_small_patch16_224", "--r", "0", "64", "--json"])
    assert [row["r"] for row in rows] == [0, 64]
    assert rows[0]["gflops"] == pytest.approx(56.95, rel=0.01)
    assert rows[1]["gflops"] == pytest.approx(28.80, rel=0.01)
    assert rows[1]["tokens"] == [1056, 800, 672]
    assert rows[1]["reduction"] == pytest.approx(1 - rows[1]["gflops"] / rows[0]["gflops"])


def test_flops_table_and_per_stage_r(capsys):
    assert main(["flops", "--model", "vit_large_patch16_224", "--r", "64,0,0", "96"]) == 0
    out = capsys.readouterr().out
    assert "GFLOPs/view" in out and "64,0,0" in out and "800 -> 416 -> 224" in out


def test_bench_json_on_a_small_input(capsys):
    rows = run_json(capsys, ["bench", "--model", "vit_small_patch16_224", "--input-size", "32", "--r", "0", "1",
                             "--warmup", "0", "--repeats", "1", "--json"])
    assert [row["r"] for row in rows] == [0, 1]
    assert rows[0]["speedup"] == 1.0
    assert all(row["ms_per_clip"] > 0 and row["clips_per_s"] > 0 for row in rows)


def test_bad_r_is_a_clean_error(capsys):
    assert main(["flops", "--r", "500"]) == 2
    assert "r must be below 196" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["flops", "--r", "x"])


def test_cuda_without_gpu_is_a_clean_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["bench", "--input-size", "32", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_parse_r():
    assert parse_r("64") == 64 and parse_r("64,32,16") == (64, 32, 16)


def test_python_dash_m_works_like_the_console_script():
    out = subprocess.run([sys.executable, "-m", "sta", "flops", "--model", "vit_small_patch16_224", "--r", "0",
                          "--json"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out)[0]["gflops"] == pytest.approx(56.95, rel=0.01)


def test_budget_flag_picks_and_reports_r(capsys):
    rows = run_json(capsys, ["flops", "--model", "vit_small_patch16_224", "--flops-reduction", "0.35", "--json"])
    assert rows[0]["reduction"] >= 0.35 and rows[0]["r"] == 44


def test_bench_always_measures_against_r0(capsys):
    rows = run_json(capsys, ["bench", "--model", "vit_small_patch16_224", "--input-size", "32", "--r", "2",
                             "--warmup", "0", "--repeats", "1", "--json"])
    assert [row["r"] for row in rows] == [0, 2] and rows[0]["speedup"] == 1.0
