"""`sta eval` / sta.evaluate: the multi-view protocol, skipped videos, resume, torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sta.data import ViewProtocol, read_list_file
from sta.evaluate import EvalSettings, ResumeMismatch, evaluate, video_scores
from tests.videos import noise_video, solid_video

GREYS = [20, 70, 120, 170, 220]  # class c <-> grey level GREYS[c]
VIEWS = ViewProtocol("kinetics", num_frames=16, sampling_rate=2, num_segments=2, num_crops=3, crop_size=32)
SETTINGS = EvalSettings(views=VIEWS, batch_size=4)


class GreyReader(nn.Module):
    """Reads the class off a solid-grey clip: logits = -distance of the mean pixel to each class's grey."""

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.centres = nn.Parameter(torch.tensor([(g / 255 - 0.456) / 0.224 for g in GREYS]), requires_grad=False)
        self.calls, self.views_seen, self.fail_after = 0, 0, fail_after

    def forward(self, x):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated stop")
        self.views_seen += x.shape[0]
        mean = x[:, 1].mean(dim=(1, 2, 3))  # green channel
        return -(mean[:, None] - self.centres).abs() * 10


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """5 good videos (one deliberately mislabelled), plus a missing, an empty and a garbage file."""
    root = tmp_path_factory.mktemp("k400")
    lines = []
    for c, grey in enumerate(GREYS):
        solid_video(root / f"v{c}.mp4", grey, num_frames=30 + 7 * c)
        label = c if c != 3 else 0  # v3 is labelled 0: a top-1 miss that top-5 still catches
        lines.append(f"v{c}.mp4 {label}")
    (root / "empty.mp4").write_bytes(b"")
    (root / "junk.mp4").write_bytes(os.urandom(2000))
    lines += ["missing.mp4 1", "empty.mp4 2", "junk.mp4 3"]
    (root / "test.csv").write_text("\n".join(lines) + "\n")
    return root


def entries_of(root):
    return read_list_file(root / "test.csv", data_root=str(root))


def test_known_accuracy_and_skips(dataset, tmp_path):
    model = GreyReader()
    summary = evaluate(model, entries_of(dataset), SETTINGS, tmp_path, {"name": "grey"}, progress=False)
    assert summary.top1 == pytest.approx(80.0) and summary.top5 == pytest.approx(100.0)
    assert summary.videos == 5 and summary.views == 5 * 6 and model.views_seen == 30
    assert {s["video"] for s in summary.skipped} == {"missing.mp4", "empty.mp4", "junk.mp4"}
    assert all(s["reason"] for s in summary.skipped)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["top1"] == summary.top1 and len(on_disk["skipped"]) == 3
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()[1:]]
    assert sorted((r["video"], r["segment"], r["crop"]) for r in records) == sorted(
        (f"v{c}.mp4", ch, cr) for c in range(5) for ch in range(2) for cr in range(3))


def test_resume_recomputes_only_missing_views(dataset, tmp_path):
    full = evaluate(GreyReader(), entries_of(dataset), SETTINGS, tmp_path / "full", {"name": "grey"}, progress=False)
    with pytest.raises(KeyboardInterrupt):  # stopped after 3 batches of 4 views
        evaluate(GreyReader(fail_after=3), entries_of(dataset), SETTINGS, tmp_path / "resumed", {"name": "grey"},
                 progress=False)
    first = (tmp_path / "resumed" / "predictions.jsonl").read_text().splitlines()
    assert len(first) == 1 + 12
    with open(tmp_path / "resumed" / "predictions.jsonl", "a") as f:
        f.write('{"index": 4, "segment": 0, "cr')  # a line cut short by the crash
    model = GreyReader()
    resumed = evaluate(model, entries_of(dataset), SETTINGS, tmp_path / "resumed", {"name": "grey"}, progress=False)
    assert model.views_seen == 30 - 12
    assert resumed.resumed_views == 12
    for key in ("top1", "top5", "videos", "views"):
        assert getattr(resumed, key) == getattr(full, key)
    lines = (tmp_path / "resumed" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 30 and all(json.loads(line) for line in lines)


def test_resume_refuses_other_model_or_protocol(dataset, tmp_path):
    evaluate(GreyReader(), entries_of(dataset), SETTINGS, tmp_path, {"name": "grey", "r": [0, 0, 0]},
             progress=False)
    with pytest.raises(ResumeMismatch, match=r"model\.r: stored \[0, 0, 0\], now \[4, 4, 4\]"):
        evaluate(GreyReader(), entries_of(dataset), SETTINGS, tmp_path, {"name": "grey", "r": [4, 4, 4]},
                 progress=False)
    other = EvalSettings(views=ViewProtocol(**{**VIEWS.to_dict(), "num_crops": 1}), batch_size=4)
    with pytest.raises(ResumeMismatch, match="protocol.num_crops"):
        evaluate(GreyReader(), entries_of(dataset), other, tmp_path, {"name": "grey", "r": [0, 0, 0]},
                 progress=False)


def test_video_score_is_mean_of_view_softmaxes():
    views = {(0, 0): [2.0, 0.0, 0.0], (1, 0): [0.0, 0.0, 3.0]}
    expected = (np.exp([2, 0, 0]) / np.exp([2, 0, 0]).sum() + np.exp([0, 0, 3]) / np.exp([0, 0, 3]).sum()) / 2
    np.testing.assert_allclose(video_scores(views), expected)


def test_one_segment_one_crop_works(dataset, tmp_path):
    settings = EvalSettings(views=ViewProtocol(**{**VIEWS.to_dict(), "num_segments": 1, "num_crops": 1}))
    summary = evaluate(GreyReader(), entries_of(dataset), settings, tmp_path, {"name": "grey"}, progress=False)
    assert summary.views == 5 and summary.top1 == pytest.approx(80.0)


# ----------------------------------------------------------------------------------- CLI, torchrun

def free_port() -> int:
    """A port nobody listens on now: each torchrun gets its own, so runs never meet a port still in TIME_WAIT."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_eval(args, cwd, nproc=1):
    base = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
            str(free_port())] if nproc > 1 else [sys.executable]
    # `--` stops torchrun's own parser, which would read --r as an abbreviation of its --rdzv-* options
    cmd = base + ["-m", "sta"] + (["--"] if nproc > 1 else []) + [
                  "eval", "--model", "vit_small_patch16_224", "--input-size", "32",
                  "--nb-classes", "5", "--sampling-rate", "2", "--test-num-segment", "2", "--no-progress",
                  "--json", "--num-workers", "0"] + args
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def noise_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("noise")
    for i in range(5):
        noise_video(root / f"n{i}.mp4", num_frames=24 + 5 * i, seed=i)
    (root / "test.csv").write_text("".join(f"{root}/n{i}.mp4 {i % 5}\n" for i in range(5)) + f"{root}/gone.mp4 1\n")
    return root


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(noise_dataset, tmp_path):
    common = ["--data-path", str(noise_dataset), "--r", "1"]
    single = cli_eval(common + ["--output-dir", str(tmp_path / "one")], tmp_path)
    double = cli_eval(common + ["--output-dir", str(tmp_path / "two")], tmp_path, nproc=2)
    for key in ("top1", "top5", "videos", "views"):
        assert double[key] == single[key]
    assert double["world_size"] == 2 and [s["video"] for s in double["skipped"]] == [f"{noise_dataset}/gone.mp4"]
    assert double["computed_videos"] == single["computed_videos"] == 6  # every rank's, not rank 0's
    again = cli_eval(common + ["--output-dir", str(tmp_path / "two")], tmp_path, nproc=2)
    assert again["resumed_views"] == 5 * 6 and again["computed_videos"] == 1  # only the missing video is retried
    one = {(r["index"], r["segment"], r["crop"]): r["logits"] for r in _records(tmp_path / "one")}
    two = {(r["index"], r["segment"], r["crop"]): r["logits"] for r in _records(tmp_path / "two")}
    assert one.keys() == two.keys() and len(one) == 5 * 6
    for key in one:
        np.testing.assert_allclose(one[key], two[key], rtol=1e-4, atol=1e-5)


def _records(folder: Path):
    for path in sorted(folder.glob("predictions*.jsonl")):
        yield from (json.loads(line) for line in path.read_text().splitlines()[1:])


def test_cli_on_real_clips(sample_videos, tmp_path):
    (tmp_path / "test.csv").write_text("bigbuckbunny.mp4 1\nbikes.mp4 3\n")
    summary = cli_eval(["--data-path", str(tmp_path), "--data-root", str(sample_videos), "--r", "1",
                        "--output-dir", str(tmp_path / "out")], tmp_path)
    assert summary["videos"] == 2 and summary["views"] == 12 and summary["skipped"] == []
    assert 0 <= summary["top1"] <= 100


def test_cli_reports_bad_list_file(tmp_path, capsys):
    from sta.cli import main

    (tmp_path / "test.csv").write_text("a.mp4 1\nb.mp4\n")
    assert main(["eval", "--data-path", str(tmp_path), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "test.csv" in err


# ----------------------------------------------------------------------------------- no silent wrong numbers

def test_config_errors_are_not_turned_into_skips(dataset, tmp_path, monkeypatch):
    """Only a video's own decoding problem is a skip; anything else stops the run."""
    def broken(path, views):
        raise ValueError("a bug, not a bad video")

    monkeypatch.setattr("sta.evaluate.run.read_test_views", broken)
    with pytest.raises(ValueError, match="a bug"):
        evaluate(GreyReader(), entries_of(dataset), SETTINGS, tmp_path, {"name": "grey"}, progress=False)


def test_nothing_scored_gives_null_not_nan(dataset, tmp_path):
    entries = [e for e in entries_of(dataset) if e.video_id in ("missing.mp4", "junk.mp4")]
    summary = evaluate(GreyReader(), entries, SETTINGS, tmp_path, {"name": "grey"}, progress=False)
    assert summary.videos == 0 and summary.top1 is None and len(summary.skipped) == 2
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text and json.loads(text)["top1"] is None


def test_video_unreadable_on_resume_is_skipped_whole(dataset, tmp_path):
    """Views stored by an earlier run of a video that is now unreadable are not counted: skipped, and said so."""
    root = tmp_path / "data"
    root.mkdir()
    for c in (0, 1):
        solid_video(root / f"v{c}.mp4", GREYS[c], num_frames=30)
    (root / "test.csv").write_text("v0.mp4 0\nv1.mp4 1\n")
    entries = read_list_file(root / "test.csv", data_root=str(root))
    with pytest.raises(KeyboardInterrupt):  # 2 batches of 4 views: v0 whole, v1 with 2 of its 6 views
        evaluate(GreyReader(fail_after=2), entries, SETTINGS, tmp_path / "out", {"name": "grey"}, progress=False)
    (root / "v1.mp4").write_bytes(b"")  # the video breaks between the runs
    summary = evaluate(GreyReader(), entries, SETTINGS, tmp_path / "out", {"name": "grey"}, progress=False)
    assert summary.videos == 1 and summary.views == 6 and summary.top1 == 100.0
    (skip,) = summary.skipped
    assert skip["video"] == "v1.mp4" and "empty file" in skip["reason"] and "2 views from an earlier run" in skip[
        "reason"]


def test_logits_do_not_depend_on_workers_or_batch_size(sample_videos, tmp_path):
    from tests.helpers import tiny_model

    (tmp_path / "test.csv").write_text("bikes.mp4 1\nbigbuckbunny.mp4 2\n")
    entries = read_list_file(tmp_path / "test.csv", data_root=str(sample_videos))
    views = ViewProtocol("kinetics", num_frames=16, sampling_rate=4, num_segments=2, num_crops=2, crop_size=32)
    runs = {}
    for workers, batch in ((0, 3), (2, 3), (1, 1)):
        out = tmp_path / f"w{workers}b{batch}"
        evaluate(tiny_model(r=2), entries, EvalSettings(views=views, batch_size=batch, num_workers=workers), out,
                 {"name": "tiny"}, progress=False)
        runs[(workers, batch)] = {(r["index"], r["segment"], r["crop"]): r["logits"] for r in _records(out)}
    assert runs[(0, 3)] == runs[(2, 3)]  # the same views, bit for bit, whoever decodes them
    assert runs[(1, 1)].keys() == runs[(0, 3)].keys()
    for key, logits in runs[(1, 1)].items():  # another batch size: other GEMM shapes, the same math
        np.testing.assert_allclose(logits, runs[(0, 3)][key], rtol=1e-5, atol=1e-5)


def test_cli_refuses_bad_options_before_reading_anything(tmp_path, capsys):
    from sta.cli import main

    (tmp_path / "test.csv").write_text("never_opened.mp4 1\n")
    base = ["eval", "--data-path", str(tmp_path), "--output-dir", str(tmp_path / "o")]
    for bad in (["--test-num-segment", "0"], ["--test-num-crop", "-1"], ["--sampling-rate", "0"],
                ["--batch-size", "0"], ["--num-frames", "0"], ["--input-size", "0"], ["--short-side-size", "0"],
                ["--nb-classes", "0"], ["--device", "tpu"], ["--num-workers", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            main(base + bad)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert bad[0] in err and "Traceback" not in err
    small = ["--model", "vit_small_patch16_224", "--input-size", "32", "--nb-classes", "174"]
    assert main(base + small + ["--data-set", "SSV2", "--test-num-segment", "3"]) == 2
    assert "1 or 2 temporal views" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before any output or video


def test_cli_run_that_scored_nothing_fails(tmp_path, capsys):
    from sta.cli import main

    (tmp_path / "test.csv").write_text("gone.mp4 1\nalso_gone.mp4 2\n")
    code = main(["eval", "--data-path", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--model",
                 "vit_small_patch16_224", "--input-size", "32", "--nb-classes", "5", "--num-workers", "0",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "no video was scored (2 of 2 skipped" in err and "gone.mp4: " in err


@pytest.mark.slow
def test_cli_resume_follows_the_checkpoint_content_not_its_path(sample_videos, tmp_path):
    import shutil

    from sta import create_model

    model = create_model("vit_small_patch16_224", num_classes=5, img_size=32)
    torch.save({"model": model.state_dict()}, tmp_path / "a.pth")
    (tmp_path / "test.csv").write_text("bikes.mp4 1\n")
    common = ["--data-path", str(tmp_path), "--data-root", str(sample_videos), "--r", "1",
              "--output-dir", str(tmp_path / "o")]
    first = cli_eval(common + ["--ckpt-path", str(tmp_path / "a.pth")], tmp_path)
    shutil.move(tmp_path / "a.pth", tmp_path / "renamed.pth")
    again = cli_eval(common + ["--ckpt-path", str(tmp_path / "renamed.pth")], tmp_path)
    assert first["computed_videos"] == 1 and again["computed_videos"] == 0 and again["resumed_views"] == 6
    assert again["top1"] == first["top1"] and again["model"]["checkpoint"].endswith("renamed.pth")


class NaNOnGrey(GreyReader):
    """GreyReader whose logits are NaN for one grey level (an overflow, broken weights)."""

    def __init__(self, bad_class: int):
        super().__init__()
        self.bad = bad_class

    def forward(self, x):
        logits = super().forward(x)
        bad = logits.argmax(dim=1) == self.bad
        return torch.where(bad[:, None], torch.full_like(logits, float("nan")), logits)


def test_non_finite_logits_skip_the_video_with_the_reason(dataset, tmp_path):
    """A NaN sorts first, so scored it would make class 0 win: the video is skipped instead, and nothing NaN is
    written (predictions.jsonl stays valid JSON)."""
    summary = evaluate(NaNOnGrey(bad_class=2), entries_of(dataset), SETTINGS, tmp_path, {"name": "nan"},
                       progress=False)
    assert summary.videos == 4 and summary.top1 == pytest.approx(75.0)
    reasons = {s["video"]: s["reason"] for s in summary.skipped}
    assert "not finite" in reasons["v2.mp4"]
    for line in (tmp_path / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} written"))
        assert record.get("video") != "v2.mp4"


def test_cli_refuses_a_head_of_another_label_space(tmp_path, capsys):
    """400-class labels scored against 710 outputs would give 0% without a word."""
    from sta.cli import main

    (tmp_path / "test.csv").write_text("a.mp4 1\n")
    assert main(["eval", "--data-path", str(tmp_path), "--model", "vit_small_patch16_224", "--input-size", "32",
                 "--nb-classes", "710", "--data-set", "Kinetics-400", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the model has 710 classes but Kinetics-400 has 400" in err and "--data-set" in err
    assert "--nb-classes 400 keeps its Kinetics-400 rows" in err


@pytest.mark.slow
def test_torchrun_on_a_held_folder_stops_every_rank_with_one_line(noise_dataset, tmp_path):
    import fcntl

    out = tmp_path / "held"
    out.mkdir()
    with open(out / ".sta-eval.rank0.lock", "a+") as held:  # another eval holds rank 0's lock
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "sta", "--", "eval", "--model", "vit_small_patch16_224", "--input-size", "32",
               "--nb-classes", "5", "--data-path", str(noise_dataset), "--output-dir", str(out), "--no-progress",
               "--num-workers", "0"]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert "sta eval: error: another `sta eval` is writing to" in done.stderr  # rank 0
    assert "sta eval: rank 0 stopped (its error is above); this rank stops with it" in done.stderr  # rank 1
    assert "gloo" not in done.stderr.lower() and "Connection closed by peer" not in done.stderr


@pytest.mark.parametrize(("field", "value"), [("batch_size", 10**6), ("num_workers", 10**4)])
def test_run_counts_are_bounded(field, value):
    with pytest.raises(ValueError, match="at most|0 to") as err:
        EvalSettings(views=VIEWS, **{field: value})
    assert err.value.param == field


def test_a_run_that_scored_nothing_does_not_block_the_next(tmp_path):
    """First try: the list's relative paths did not resolve, every video skipped. The corrected run (another
    fingerprint) must not be refused for 'predictions of a different run': there are none."""
    root = tmp_path / "videos"
    root.mkdir()
    solid_video(root / "v1.mp4", GREYS[1], num_frames=30)
    (root / "test.csv").write_text("v1.mp4 1\n")
    out = tmp_path / "out"
    wrong = read_list_file(root / "test.csv", data_root=str(tmp_path / "elsewhere"))
    assert evaluate(GreyReader(), wrong, SETTINGS, out, {"name": "grey"}, progress=False).videos == 0
    right = read_list_file(root / "test.csv", data_root=str(root))
    assert evaluate(GreyReader(), right, SETTINGS, out, {"name": "grey"}, progress=False).videos == 1


def test_a_list_written_next_to_its_videos_reads_as_is(tmp_path, monkeypatch):
    root = tmp_path / "videos"
    root.mkdir()
    solid_video(root / "v1.mp4", GREYS[1], num_frames=30)
    (root / "test.csv").write_text("v1.mp4 1\n")
    monkeypatch.chdir(tmp_path)  # not the list's folder
    (entry,) = read_list_file(root / "test.csv")
    assert entry.path == str(root / "v1.mp4") and entry.video_id == "v1.mp4"
    (root / "v1.mp4").rename(tmp_path / "v1.mp4")  # the current folder has it: the release's reading wins
    assert read_list_file(root / "test.csv")[0].path == "v1.mp4"
