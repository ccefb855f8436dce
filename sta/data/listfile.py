"""Reading VideoMAE list files (``train.csv`` / ``val.csv`` / ``test.csv``).

The VideoMAE release reads these with ``pandas.read_csv(delimiter=' ',
header=None)``: one video per line, ``<path> <label>``. We accept any run of
spaces or tabs as the separator (so hand-edited files work too), skip blank
lines, and reject everything else with an error that names the file and the
1-based line number, instead of the release's silent mis-parse.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sta.errors import InvalidInput

__all__ = ["ListFileError", "VideoEntry", "read_list_file"]

# Plain decimal digits only: int() would also accept "+3", "1_0" or " 3",
# which are typos in a list file, not labels.
_LABEL_RE = re.compile(r"[0-9]+")


class ListFileError(InvalidInput):
    """A list file line that is not ``<path> <non-negative int label>``."""


@dataclass(frozen=True)
class VideoEntry:
    """One video of a list file."""

    path: str  # path to open (``data_root`` joined in front of a relative path)
    label: int  # class index, ``0 <= label < num_classes`` when that is known
    line: int  # 1-based line number in the list file (for error messages)
    video_id: str  # the path exactly as written in the file; stable key for merging the scores of a video's views


def _parse_label(text: str, where: str, num_classes: int | None) -> int:
    """Return ``text`` as a label, or raise ListFileError naming ``where``."""
    if text.startswith("-") and _LABEL_RE.fullmatch(text[1:]):
        raise ListFileError(f"{where}: label {text!r} is negative")
    if not _LABEL_RE.fullmatch(text):
        raise ListFileError(f"{where}: label {text!r} is not a non-negative integer")
    label = int(text)
    if num_classes is not None and label >= num_classes:
        raise ListFileError(
            f"{where}: label {label} is out of range for {num_classes} classes "
            f"(labels must be 0..{num_classes - 1})"
        )
    return label


def _resolve(path: str, data_root: str | os.PathLike[str] | None, list_dir: str) -> str:
    """Join ``data_root`` in front of a relative ``path``; keep absolute paths. Without a root, a relative path
    is taken from the current folder, as the release does, unless only the list file's folder holds it."""
    if os.path.isabs(path):
        return path
    if data_root is not None:
        return os.path.join(os.fspath(data_root), path)
    beside = os.path.join(list_dir, path)
    return beside if not os.path.exists(path) and os.path.exists(beside) else path


def read_list_file(
    path: str | os.PathLike[str],
    data_root: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
) -> list[VideoEntry]:
    """Parse a VideoMAE list file into entries, in file order.

    Format: one ``<path> <label>`` per line, separated by spaces and/or tabs;
    paths contain no whitespace; blank lines and lines starting with ``#`` are
    skipped. A video listed twice is warned about and scored twice (once per
    line), as the release scores every line.

    ``path``: the list file. ``data_root``: the directory relative video paths
    are relative to; with ``None`` a relative path is kept as written (the
    release opens it relative to the current directory), unless it is not there
    but next to the list file (a list written with its videos, as
    :func:`sta.data.proxies.write_videos` writes one). ``num_classes``: if
    given, labels must be ``< num_classes``. Returns one ``VideoEntry`` per
    video line.

    Raises ``FileNotFoundError`` when the list file does not exist, and
    ``ListFileError`` (naming the file and line) when a line has a field count
    other than 2 or a label that is not a non-negative integer (or is
    ``>= num_classes``), or when the file has no entries at all.
    """
    if num_classes is not None and num_classes <= 0:
        raise InvalidInput(f"num_classes must be positive, got {num_classes}")
    # utf-8-sig: a BOM written by a spreadsheet tool must not end up in the first path.
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_no = raw[: err.start].count(b"\n") + 1
        raise ListFileError(f"{os.fspath(path)}, line {line_no}: not UTF-8 text (byte {raw[err.start]:#x}); "
                            "save the list file as UTF-8") from None
    entries: list[VideoEntry] = []
    list_dir = os.path.dirname(os.path.abspath(path))
    first_line: dict[str, int] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):  # blank line or comment
            continue
        where = f"{os.fspath(path)}, line {line_no}"
        if len(fields) != 2:
            raise ListFileError(
                f"{where}: expected 2 fields '<path> <label>', got {len(fields)}: {line.strip()!r}"
            )
        video, label_text = fields
        label = _parse_label(label_text, where, num_classes)
        entries.append(VideoEntry(_resolve(video, data_root, list_dir), label, line_no, video))
        first_line.setdefault(video, line_no)
    if len(first_line) < len(entries):
        counts = Counter(e.video_id for e in entries)
        shown = ", ".join([f"{v} (first on line {first_line[v]})" for v, c in counts.items() if c > 1][:5])
        warnings.warn(f"{os.fspath(path)}: {len(entries) - len(first_line)} duplicate entries ({shown}); each line "
                      "is scored as its own video, as the release does", stacklevel=2)
    if not entries:
        raise ListFileError(f"{os.fspath(path)}: no video entries (file is empty or blank)")
    return entries
