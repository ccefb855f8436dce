"""Predictions on disk: damaged files give clear errors, one writer per folder, a full disk names the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sta.data import VideoEntry
from sta.evaluate.records import (
    OutputLock,
    PredictionWriter,
    ResumeMismatch,
    fingerprint,
    load_predictions,
)

ENTRIES = [VideoEntry(f"/v/{i}.mp4", i % 3, i + 1, f"{i}.mp4") for i in range(4)]
PRINT = fingerprint({"name": "m", "checkpoint": "/a/ck.pth", "checkpoint_sha256": "ab"}, {"protocol": "kinetics"},
                    ENTRIES)
HEADER = json.dumps({"fingerprint": PRINT})
RECORD = json.dumps({"index": 1, "video": "1.mp4", "segment": 0, "crop": 2, "label": 1, "logits": [0.5, -1.0]})


def _write(tmp_path: Path, *lines: str, tail: str = "\n") -> Path:
    (tmp_path / "predictions.jsonl").write_text("\n".join(lines) + tail)
    return tmp_path


def test_good_file_loads(tmp_path):
    assert load_predictions(_write(tmp_path, HEADER, RECORD), PRINT, len(ENTRIES)) == {1: {(0, 2): [0.5, -1.0]}}


def test_records_of_version_0_2_resume(tmp_path):
    """0.2 called the segment index "chunk": its predictions still resume."""
    old = RECORD.replace('"segment"', '"chunk"')
    assert load_predictions(_write(tmp_path, HEADER, old), PRINT, len(ENTRIES)) == {1: {(0, 2): [0.5, -1.0]}}


def test_a_last_line_cut_short_is_ignored(tmp_path):
    assert load_predictions(_write(tmp_path, HEADER, RECORD, RECORD[:20], tail=""), PRINT, 4) == {
        1: {(0, 2): [0.5, -1.0]}}
    assert load_predictions(_write(tmp_path, HEADER[:30], tail=""), PRINT, 4) == {}  # only a cut header


@pytest.mark.parametrize(("lines", "line", "what"), [
    ((HEADER, "{}", RECORD), 2, "not a view record"),
    (("[1, 2]", RECORD), 1, "not a `sta eval` header"),
    (("{}", RECORD), 1, "not a `sta eval` header"),
    ((HEADER, HEADER, RECORD), 2, "a second header"),
    ((HEADER[:40], RECORD), 1, "not valid JSON"),
    ((HEADER, RECORD[:25], RECORD), 2, "not valid JSON"),
    ((HEADER, RECORD.replace('"index": 1', '"index": 99')), 2, "in range"),
    ((HEADER, RECORD.replace("[0.5, -1.0]", '"x"')), 2, "logits"),
    ((HEADER, RECORD.replace("[0.5, -1.0]", "[NaN, -1.0]")), 2, "finite numbers"),
])
def test_damaged_file_names_file_line_and_remedy(tmp_path, lines, line, what):
    with pytest.raises(ResumeMismatch) as err:
        load_predictions(_write(tmp_path, *lines), PRINT, len(ENTRIES))
    text = str(err.value)
    assert f"predictions.jsonl, line {line}: " in text and what in text and "another `output_dir`" in text


def test_checkpoint_path_is_not_part_of_the_fingerprint():
    moved = fingerprint({"name": "m", "checkpoint": "/b/renamed.pth", "checkpoint_sha256": "ab"},
                        {"protocol": "kinetics"}, ENTRIES)
    other = fingerprint({"name": "m", "checkpoint": "/a/ck.pth", "checkpoint_sha256": "cd"},
                        {"protocol": "kinetics"}, ENTRIES)
    assert moved == PRINT and other != PRINT


def test_second_process_on_the_same_folder_is_refused(tmp_path):
    with OutputLock(tmp_path, rank=0):
        with pytest.raises(ResumeMismatch, match="another `sta eval` is writing to"):
            with OutputLock(tmp_path, rank=0):
                pass
        with OutputLock(tmp_path, rank=1):  # torchrun ranks lock separately
            pass
    with OutputLock(tmp_path, rank=0):  # released on exit
        pass


def test_full_disk_names_the_file(tmp_path, monkeypatch):
    writer = PredictionWriter(tmp_path / "predictions.jsonl", PRINT)

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", no_space)
    with pytest.raises(OSError, match=r"cannot write predictions to .*predictions\.jsonl: No space left on device"):
        writer.write([{"index": 0}])
    writer.close()


@pytest.mark.parametrize("foreign", [b"precious data\n", b"precious data", b"[1, 2, 3]\n"])
def test_a_file_that_is_not_ours_is_refused_and_left_as_it_was(tmp_path, foreign):
    """`sta eval` used to append to a one-line foreign predictions.jsonl (taken for a header cut short)."""
    from sta.errors import OutputError

    path = tmp_path / "predictions.jsonl"
    path.write_bytes(foreign)
    if foreign.endswith(b"\n"):  # a complete first line that is not a header: not a crash's leftover
        with pytest.raises(ResumeMismatch, match="line 1"):
            load_predictions(tmp_path, {"a": 1}, 3)
    with pytest.raises(OutputError, match="not written by `sta eval`"):
        PredictionWriter(path, {"a": 1})
    assert path.read_bytes() == foreign


def test_a_symlinked_predictions_file_is_not_followed(tmp_path):
    from sta.errors import OutputError

    target = tmp_path / "elsewhere.txt"
    target.write_text("")
    (tmp_path / "predictions.jsonl").symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        PredictionWriter(tmp_path / "predictions.jsonl", {"a": 1})
    assert target.read_text() == ""


def test_a_header_cut_short_is_still_ours(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_bytes(b'{"fingerpr')
    writer = PredictionWriter(path, {"a": 1})
    writer.close()
    assert json.loads(path.read_text().splitlines()[0]) == {"fingerprint": {"a": 1}}
