"""The `sta` command line as a user calls it: results, help, and one-line errors for bad input."""

import argparse
import json
import subprocess
import sys

import pytest
import torch

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


# ---------------------------------------------------------------------------- version, help, debug


def test_version(capsys):
    from sta import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"sta-prune {__version__}"


@pytest.mark.parametrize("command", ["flops", "bench", "eval", "vis", "demo", "convert", "plot"])
def test_every_option_says_what_it_does(command, capsys):
    from sta.cli.app import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"sta {command} {action.option_strings[0]} has no help"
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    if command in ("bench", "eval"):
        assert "(default: float32)" in text  # defaults are shown
    if command in ("flops", "bench"):
        assert "several values sweep" in text
    if command in ("eval", "vis"):
        assert "one value" in text


def test_vis_has_no_json_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["vis", "x.mp4", "--json"])
    assert exit_.value.code == 2 and "unrecognized arguments: --json" in capsys.readouterr().err


def test_debug_shows_the_traceback(capsys, monkeypatch):
    assert main(["flops", "--r", "500"]) == 2
    with pytest.raises(ValueError, match="r must be below"):
        main(["--debug", "flops", "--r", "500"])
    monkeypatch.setenv("STA_DEBUG", "1")
    with pytest.raises(ValueError):
        main(["flops", "--r", "500"])


def test_ctrl_c_is_one_line_and_exit_130(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("sta.cli.flops.run", interrupted)
    from sta.cli import app

    parser = app.build_parser
    monkeypatch.setattr(app, "build_parser", lambda: _with_func(parser(), "flops", interrupted))
    assert main(["flops"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "sta flops: interrupted" and "Traceback" not in err


def _with_func(parser, command, func):
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    sub.set_defaults(run=func)
    return parser


# ---------------------------------------------------------------------------- bad input, one line each


@pytest.mark.parametrize("argv", [
    ["bench", "--batch-size", "0"], ["bench", "--repeats", "0"], ["bench", "--warmup", "-1"],
    ["flops", "--num-frames", "0"], ["flops", "--input-size", "0"], ["flops", "--nb-classes", "0"],
    ["bench", "--device", "tpu"], ["flops", "--flops-reduction", "1.5"], ["flops", "--r", "-3"],
])
def test_bad_options_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "error: argument" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("extra", [["--model", "vit_small_patch16_224"], ["--nb-classes", "5"],
                                   ["--num-frames", "8"], ["--input-size", "32"]])
def test_hf_model_refuses_options_it_would_override(tmp_path, capsys, extra):
    assert main(["flops", "--hf-model", str(tmp_path)] + extra) == 2
    assert "--hf-model takes frames, size, classes and weights from its config: drop --" in capsys.readouterr().err
    assert main(["eval", "--hf-model", str(tmp_path), "--ckpt-path", "x.pth", "--data-path", str(tmp_path)]) == 2
    assert "drop --ckpt-path" in capsys.readouterr().err


@pytest.mark.parametrize("config", [None, "{not json", '{"model_type": "bert"}', '{"model_type": "videomae", '
                                    '"hidden_size": "wide"}'])
def test_broken_hf_directory_is_one_line_naming_the_file(tmp_path, capsys, config):
    pytest.importorskip("transformers")
    if config is not None:
        (tmp_path / "config.json").write_text(config)
    assert main(["flops", "--hf-model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(tmp_path) in err


def test_vis_on_missing_empty_or_non_video_files(tmp_path, capsys):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a video\n" * 50)
    for name in ("absent.mp4", "empty.mp4", "notes.txt"):
        assert main(["vis", str(tmp_path / name), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        (error,) = [line for line in err.splitlines() if "error" in line]
        assert name in error and "Traceback" not in err


@pytest.mark.parametrize("content", ["{broken", '{"gflops_per_view": 3}', "[]"])
def test_plot_on_a_bad_summary(tmp_path, capsys, content):
    (tmp_path / "summary.json").write_text(content)
    assert main(["plot", str(tmp_path / "summary.json"), "--out", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert "summary.json" in err and len(err.strip().splitlines()) == 1


def test_api_accepts_numpy_r():
    import numpy as np

    from sta import create_model

    model = create_model("vit_small_patch16_224", img_size=32, r=np.int64(1))
    assert model.r == (1, 1, 1)
    model.r = (np.int32(1), 0, np.int64(2))
    assert model.r == (1, 0, 2)


# ---------------------------------------------------------------------------- sta gradnorm


def test_gradnorm_on_the_bundled_model_prints_json_rows_and_writes_files(tmp_path, capsys):
    assert main(["gradnorm", "--clips", "6", "--r", "32", "--method", "sta", "random", "--json", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(row["method"], row["r"]) for row in rows] == [(None, "0"), ("sta", "32"), ("random", "32")]
    for row in rows:
        assert {"method", "r", "tokens_kept", "kept_share", "ci95", "top10_kept"} <= row.keys()
    assert rows[0]["kept_share"] == 1.0 and rows[1]["tokens_kept"] == 64
    assert {p.name for p in tmp_path.iterdir()} == {"gradnorm.json", "gradnorm_map.png", "gradnorm_share.png"}


def test_gradnorm_on_a_folder_skips_bad_files(sample_videos, tmp_path, capsys):
    import shutil

    folder = tmp_path / "videos"
    shutil.copytree(sample_videos, folder)  # two clips and a README, which is not taken for a video
    (folder / "cut.mp4").write_bytes((folder / "bikes.mp4").read_bytes()[:5000])
    assert main(["gradnorm", "--model", "vit_small_patch16_224", "--input-size", "32", "--nb-classes", "5",
                 "--folder", str(folder), "--r", "1", "--method", "sta", "--no-progress",
                 "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "skipped cut.mp4" in captured.err and "README" not in captured.err and "over 2 clips" in captured.out


def test_gradnorm_that_scores_nothing_fails(tmp_path, capsys):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 64)
    assert main(["gradnorm", "--folder", str(tmp_path), "--r", "4", "--no-progress", "--out", str(tmp_path / "o")]) == 1
    assert "no clip was scored (1 skipped" in capsys.readouterr().err
    # no (method, r) fits: said before any GradNorm is computed, with each reason
    assert main(["gradnorm", "--clips", "2", "--r", "99", "--method", "sta", "--no-progress",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no (method, r) can run on this model: sta r=99: r=99 at stage 0" in err and "see above" not in err


def test_gradnorm_refuses_options_it_would_ignore(tmp_path, capsys):
    assert main(["gradnorm", "--folder", str(tmp_path), "--clips", "5"]) == 2
    assert "--clips counts the bundled model's proxy clips" in capsys.readouterr().err
    assert main(["gradnorm", "--sampling-rate", "2"]) == 2
    assert "the proxy clips are generated" in capsys.readouterr().err
    assert main(["gradnorm", "--num-frames", "8"]) == 2
    assert "the bundled demo model has its own frames" in capsys.readouterr().err


# ---------------------------------------------------------------------------- --hf-model for every family


@pytest.mark.parametrize("family", ["vivit", "vjepa2"])
def test_hf_model_directory_runs_through_flops_eval_and_vis(family, sample_videos, tmp_path, capsys):
    pytest.importorskip("transformers")
    from tests.adapters.tiny_hf import tiny_vivit, tiny_vjepa2

    (tiny_vivit if family == "vivit" else tiny_vjepa2)(seed=1).save_pretrained(tmp_path / "hf")
    hf = ["--hf-model", str(tmp_path / "hf")]
    rows = run_json(capsys, ["flops", *hf, "--r", "0", "2", "--json"])
    assert rows[0]["tokens"] == [128, 128, 128] and rows[1]["tokens"] == [112, 104, 100]
    assert rows[1]["gflops"] < rows[0]["gflops"]
    (tmp_path / "test.csv").write_text("bikes.mp4 1\n")
    assert main(["eval", *hf, "--data-path", str(tmp_path), "--data-root", str(sample_videos), "--r", "2",
                 "--test-num-segment", "2", "--test-num-crop", "1", "--num-workers", "0", "--no-progress",
                 "--json", "--output-dir", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.splitlines()[-1])
    assert summary["videos"] == 1 and summary["views"] == 2 and summary["model"]["r"] == [2, 2, 2]
    # a 5-class head is no named dataset's: evaluated as one's own classes, said in one line
    assert "head's 5 classes match no named dataset: evaluating as --data-set custom" in captured.err
    assert main(["vis", str(sample_videos / "bikes.mp4"), *hf, "--r", "2", "--out", str(tmp_path / "vis")]) == 0
    assert json.loads((tmp_path / "vis" / "tokens.json").read_text())["tokens_per_stage"] == [112, 104, 100]


def test_vis_names_the_method_it_ran(sample_videos, tmp_path, capsys):
    assert main(["vis", str(sample_videos / "bikes.mp4"), "--method", "random", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("random r=16: tokens kept 384 -> 320 -> 288")
    assert json.loads((tmp_path / "tokens.json").read_text())["method"] == "random"


@pytest.mark.parametrize("damage", ["no_id2label", "cut_weights"])
def test_hf_directory_with_bad_weights_is_one_line(damage, sample_videos, tmp_path, capsys):
    pytest.importorskip("transformers")
    from tests.adapters.tiny_hf import tiny_vivit

    tiny_vivit(seed=2).save_pretrained(tmp_path / "hf")
    if damage == "no_id2label":  # a config that says 2 labels next to a 5-row classifier
        config = json.loads((tmp_path / "hf" / "config.json").read_text())
        config.pop("id2label"), config.pop("label2id")
        (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    else:
        weights = tmp_path / "hf" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["predict", str(sample_videos / "bikes.mp4"), "--hf-model", str(tmp_path / "hf"), "--views", "1x1",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    # (transformers' own log lines and progress bars may precede it)
    (line,) = [line for line in err.splitlines() if line.startswith("sta predict: error")]
    assert str(tmp_path / "hf") in line


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_of_a_hf_family(fmt, sample_videos, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from tests.adapters.tiny_hf import tiny_vivit

    tiny_vivit(seed=3).save_pretrained(tmp_path / "hf")
    out = tmp_path / f"vivit.{fmt}"
    assert main(["export", "--hf-model", str(tmp_path / "hf"), "--r", "2", "--out", str(out)]) == 0
    assert "same top-1 and kept positions" in capsys.readouterr().out
    assert main(["predict", str(sample_videos / "bikes.mp4"), "--exported", str(out), "--views", "1x1",
                 "--no-progress", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["error"] is None and len(row["top"]) == 5


@pytest.mark.slow
def test_export_of_a_release_checkpoint(sample_videos, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from sta import create_model

    torch.save({"model": create_model("vit_small_patch16_224", img_size=32, num_classes=400).state_dict()},
               tmp_path / "vits.pth")
    out = tmp_path / "vits_r1.onnx"
    assert main(["export", "--model", "vit_small_patch16_224", "--input-size", "32", "--ckpt-path",
                 str(tmp_path / "vits.pth"), "--r", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["predict", str(sample_videos / "bikes.mp4"), "--exported", str(out), "--backend", "openvino",
                 "--views", "1x1", "--no-progress", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["views"] == 1 and row["top"][0]["name"] in sta_labels("kinetics400")  # K400 names recorded


def sta_labels(name):
    from sta import labels

    return labels.load(name)


def test_hf_model_class_names_come_from_id2label(sample_videos, tmp_path, capsys):
    pytest.importorskip("transformers")
    from tests.adapters.tiny_hf import tiny_vivit

    model = tiny_vivit(seed=4)
    model.config.id2label = {i: name for i, name in enumerate(["cat", "dog", "bird", "fish", "cow"])}
    model.config.label2id = {name: i for i, name in model.config.id2label.items()}
    model.save_pretrained(tmp_path / "hf")
    assert main(["predict", str(sample_videos / "bikes.mp4"), "--hf-model", str(tmp_path / "hf"), "--views", "1x1",
                 "--no-progress", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert {t["name"] for t in row["top"]} == {"cat", "dog", "bird", "fish", "cow"}


@pytest.mark.slow
def test_bf16_pt2_export_runs_only_in_its_dtype(sample_videos, tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "p.pt2"), "--dtype", "bfloat16"]) == 0
    assert "(pt2, bfloat16)" in capsys.readouterr().out
    video = ["predict", str(sample_videos / "bikes.mp4"), "--exported", str(tmp_path / "p.pt2"), "--views", "1x1",
             "--no-progress"]
    assert main(video + ["--dtype", "bfloat16"]) == 0
    capsys.readouterr()
    assert main(video) == 2  # float32 asked of a bf16 graph
    assert "was exported in bfloat16: run it with --dtype bfloat16" in capsys.readouterr().err
    assert main(video + ["--dtype", "bfloat16", "--compile"]) == 2
    assert "--compile applies to a model run by torch" in capsys.readouterr().err


def test_a_model_of_fewer_than_4_slices_runs_unpruned_without_a_traceback(sample_videos, capsys):
    """--num-frames 6 (3 slices) used to divide by zero in the token counts of predict, eval and export."""
    code = main(["predict", str(sample_videos / "bikes.mp4"), "--model", "vit_small_patch16_224", "--num-frames", "6",
                 "--input-size", "32", "--nb-classes", "5", "--views", "1x1", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0 and "tokens kept 12 -> 12 -> 12" in out + err and "bikes.mp4: class" in out
