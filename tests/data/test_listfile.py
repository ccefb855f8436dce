"""Tests for sta.data.listfile: VideoMAE list file parsing and its error messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sta.data import ListFileError, VideoEntry, read_list_file


def _write(tmp_path: Path, text: str, name: str = "test.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_parses_spaces_tabs_blank_lines_and_crlf(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "a/x.mp4 3\n"
        "\n"
        "b/y.mp4\t0\r\n"
        "   \t \n"
        "c/z.webm   12  \n"
        "/abs/v.mp4 7",  # no trailing newline
    )
    entries = read_list_file(path, data_root="/data/k400")
    assert entries == [
        VideoEntry("/data/k400/a/x.mp4", 3, 1, "a/x.mp4"),
        VideoEntry("/data/k400/b/y.mp4", 0, 3, "b/y.mp4"),
        VideoEntry("/data/k400/c/z.webm", 12, 5, "c/z.webm"),
        VideoEntry("/abs/v.mp4", 7, 6, "/abs/v.mp4"),  # absolute paths ignore data_root
    ]


def test_without_data_root_paths_are_kept_as_written(tmp_path: Path) -> None:
    path = _write(tmp_path, "rel/x.mp4 1\n")
    (entry,) = read_list_file(path)
    assert entry.path == "rel/x.mp4" and entry.video_id == "rel/x.mp4"


def test_pathlike_arguments_and_utf8_bom(tmp_path: Path) -> None:
    path = _write(tmp_path, "\ufeffvid.mp4 2\n")
    (entry,) = read_list_file(path, data_root=tmp_path)
    assert entry.path == os.path.join(str(tmp_path), "vid.mp4")
    assert entry.video_id == "vid.mp4" and entry.label == 2


def test_entries_are_frozen(tmp_path: Path) -> None:
    (entry,) = read_list_file(_write(tmp_path, "v.mp4 1\n"))
    with pytest.raises(AttributeError):
        entry.label = 5  # type: ignore[misc]


def test_num_classes_accepts_labels_below_it(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.mp4 0\nb.mp4 399\n")
    assert [e.label for e in read_list_file(path, num_classes=400)] == [0, 399]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("only_a_path.mp4", "expected 2 fields"),
        ("path with spaces.mp4 3", "expected 2 fields"),
        ("a.mp4 3 extra", "expected 2 fields"),
        ("a.mp4 abc", "not a non-negative integer"),
        ("a.mp4 1.0", "not a non-negative integer"),
        ("a.mp4 +1", "not a non-negative integer"),
        ("a.mp4 1_0", "not a non-negative integer"),
        ("a.mp4 -1", "negative"),
    ],
)
def test_malformed_line_names_file_line_and_reason(tmp_path: Path, line: str, reason: str) -> None:
    path = _write(tmp_path, f"good.mp4 1\n\n{line}\nnever_read.mp4 2\n", name="val.csv")
    with pytest.raises(ListFileError) as info:
        read_list_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 3" in message
    assert reason in message


def test_label_out_of_range_for_num_classes(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.mp4 0\nb.mp4 174\n")
    with pytest.raises(ListFileError, match=r"line 2: label 174 is out of range for 174 classes"):
        read_list_file(path, num_classes=174)


def test_list_file_error_is_a_value_error() -> None:
    assert issubclass(ListFileError, ValueError)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_list_file_is_an_error(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ListFileError, match="no video entries"):
        read_list_file(path)


def test_missing_list_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_list_file(tmp_path / "absent.csv")


def test_bad_num_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        read_list_file(_write(tmp_path, "a.mp4 0\n"), num_classes=0)


def test_comment_lines_are_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path, "# path label\na.mp4 1\n  # indented comment\nb.mp4 2\n")
    assert [(e.video_id, e.line) for e in read_list_file(path)] == [("a.mp4", 2), ("b.mp4", 4)]


def test_duplicates_are_warned_about_and_kept(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.mp4 1\nb.mp4 2\na.mp4 1\n")
    with pytest.warns(UserWarning, match=r"1 duplicate entries \(a\.mp4 \(first on line 1\)\).*scored as its own"):
        entries = read_list_file(path)
    assert [e.video_id for e in entries] == ["a.mp4", "b.mp4", "a.mp4"]


def test_non_utf8_list_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    path.write_bytes(b"a.mp4 1\nvid\xe9o.mp4 2\n")  # Latin-1, not UTF-8
    with pytest.raises(ListFileError, match=r"test\.csv, line 2: not UTF-8"):
        read_list_file(path)
