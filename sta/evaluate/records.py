"""What `sta eval` keeps on disk: per-view predictions (JSONL) that make a run resumable, and the run's lock.

``predictions.jsonl`` (``predictions.rankN.jsonl`` per torchrun process) starts
with a header line ``{"fingerprint": {...}}`` naming the model, weights, r and
protocol, then one line per finished view. Each batch is appended, flushed and
fsynced, so a run killed at any point loses at most the batch in flight; the
next run with the same fingerprint reuses every finished view.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from sta.data import VideoEntry
from sta.errors import OutputError, StaError

# Model-description fields that say where the weights were, not what they are: a moved or
# renamed checkpoint with the same sha256 resumes.
PATH_FIELDS = ("checkpoint", "hf_model", "exported")
RECORD_FIELDS = ("index", "segment", "crop", "logits")


class ResumeMismatch(StaError, RuntimeError):
    """The output directory holds predictions of a different model, r or protocol, or a damaged file."""


def fingerprint(model_desc: dict, protocol: dict, entries: list[VideoEntry]) -> dict:
    """What must match for stored predictions to be reused: weights (by hash), r, method, protocol, video list."""
    listing = hashlib.sha1("\n".join(f"{e.path} {e.label}" for e in entries).encode()).hexdigest()
    model = {k: v for k, v in model_desc.items() if k not in PATH_FIELDS}
    return dict(model=model, protocol=protocol, videos=len(entries), list_sha1=listing)


def predictions_path(output_dir: Path, rank: int, world_size: int) -> Path:
    """``predictions.jsonl``; under torchrun one file per rank, so no two processes write one file."""
    return output_dir / ("predictions.jsonl" if world_size == 1 else f"predictions.rank{rank}.jsonl")


def load_predictions(output_dir: Path, expected: dict | None, num_videos: int
                     ) -> dict[int, dict[tuple[int, int], list[float]]]:
    """Finished views from every ``predictions*.jsonl`` in ``output_dir``: index -> (segment, crop) -> logits.

    Raises :class:`ResumeMismatch` for a file written for another fingerprint
    (``expected=None``: a run just finished, any fingerprint) or damaged anywhere but its
    last line; a last line cut short by a crash is ignored (its views are computed again).
    """
    done: dict[int, dict[tuple[int, int], list[float]]] = {}
    for path in sorted(output_dir.glob("predictions*.jsonl")):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        lines = text.splitlines()
        if not lines:
            continue
        cut = not text.endswith("\n")  # only a last line without its newline can have been cut short by a crash
        header = _parse(path, 1, lines[0], last=len(lines) == 1 and cut)
        if header is None:
            continue  # only a header cut short: nothing was finished
        if not isinstance(header, dict) or "fingerprint" not in header:
            raise ResumeMismatch(_damaged(path, 1, "the first line is not a `sta eval` header"))
        if expected is not None and header["fingerprint"] != expected:
            if not any(line.strip() for line in lines[1:]):  # a run that scored nothing: nothing to lose, start over
                path.unlink()
                continue
            raise ResumeMismatch(_mismatch_message(path, header["fingerprint"], expected))
        for number, line in enumerate(lines[1:], start=2):
            record = _parse(path, number, line, last=number == len(lines) and cut)
            if record is None:
                continue
            index, segment, crop, logits = _check_record(path, number, record, num_videos)
            done.setdefault(index, {})[(segment, crop)] = logits
    return done


def _parse(path: Path, number: int, line: str, last: bool):
    """One JSON line; None for a last line cut short (a crash mid-write)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        if last:
            return None
        raise ResumeMismatch(_damaged(path, number, "not valid JSON")) from None


def _check_record(path: Path, number: int, record, num_videos: int) -> tuple[int, int, int, list[float]]:
    if isinstance(record, dict) and "fingerprint" in record:
        raise ResumeMismatch(_damaged(path, number, "a second header (two runs' files joined?)"))
    if isinstance(record, dict) and "chunk" in record and "segment" not in record:
        record["segment"] = record.pop("chunk")  # files written by sta-prune 0.2 called the segment "chunk"
    if not isinstance(record, dict) or any(k not in record for k in RECORD_FIELDS):
        raise ResumeMismatch(_damaged(path, number, f"not a view record (needs {', '.join(RECORD_FIELDS)})"))
    index, segment, crop, logits = (record[k] for k in RECORD_FIELDS)
    if not all(type(v) is int and v >= 0 for v in (index, segment, crop)) or index >= num_videos:
        raise ResumeMismatch(_damaged(path, number, "index, segment and crop must be in range"))
    if not isinstance(logits, list) or not logits or not all(type(v) in (int, float) and math.isfinite(v)
                                                             for v in logits):
        raise ResumeMismatch(_damaged(path, number, "logits must be a list of finite numbers"))
    return index, segment, crop, logits


def _damaged(path: Path, number: int, what: str) -> str:
    return (f"{path}, line {number}: {what}. The file is damaged or was not written by `sta eval`: "
            "move it away to start over, or use another `output_dir`")


def _mismatch_message(path: Path, found, expected: dict) -> str:
    if not isinstance(found, dict):
        return _damaged(path, 1, "the header holds no fingerprint object")
    stored, now = _flatten(found), _flatten(expected)
    diffs = [f"{k}: stored {stored.get(k)!r}, now {now.get(k)!r}" for k in sorted(set(stored) | set(now))
             if stored.get(k) != now.get(k)]
    return (f"{path} holds predictions of a different run ({'; '.join(diffs)}). "
            "Refusing to mix them: use another `output_dir`, or delete the file to start over.")


def _flatten(d: dict, prefix: str = "") -> dict:
    """{"model": {"r": 1}} -> {"model.r": 1}, so a mismatch names the exact field."""
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class PredictionWriter:
    """Appends view records to a JSONL file, flushed and synced after every batch."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        if path.is_symlink():  # never write through a link into a file that is not this run's
            raise OutputError(f"{path} is a symbolic link: `sta eval` writes its predictions only to a file of its "
                              "own; remove the link or use another `output_dir`")
        try:
            if path.exists() and path.stat().st_size:
                _check_ours(path)  # before anything is cut or appended: a file of someone else's stays as it is
                _drop_partial_last_line(path)  # may empty a file whose header was cut short
            fresh = not path.exists() or path.stat().st_size == 0
            self.file = open(path, "a", encoding="utf-8")
        except OSError as err:
            raise OutputError(f"cannot write predictions to {path}: {err.strerror or err}") from err
        if fresh:
            self._write([{"fingerprint": header}])

    def write(self, records: list[dict]) -> None:
        if records:
            self._write(records)

    def _write(self, rows: list[dict]) -> None:
        try:
            self.file.write("".join(json.dumps(row) + "\n" for row in rows))
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as err:  # a full disk, most often: name the file so the user knows where
            raise OutputError(f"cannot write predictions to {self.path}: {err.strerror or err}") from err

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # the error that matters was raised by the write that failed


HEADER_START = b'{"fingerprint"'  # every predictions file starts so (PredictionWriter's first line)


def _check_ours(path: Path) -> None:
    """``OutputError`` unless ``path`` starts as a predictions file does (or as one cut short in its header)."""
    with open(path, "rb") as f:
        start = f.read(len(HEADER_START))
    if not (start.startswith(HEADER_START) or HEADER_START.startswith(start)):
        raise OutputError(f"{path} exists and was not written by `sta eval` (its first line is not a predictions "
                          "header): refusing to append to it; move it away or use another `output_dir`")


def _drop_partial_last_line(path: Path, block: int = 1 << 16) -> None:
    """Cut a last line left unfinished by a crash, reading only the file's tail (files reach GBs on K400)."""
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        pos = end
        while pos > 0:  # walk back to the last newline
            pos = max(0, pos - block)
            f.seek(pos)
            newline = f.read(min(block, end - pos)).rfind(b"\n")
            if newline >= 0:
                f.truncate(pos + newline + 1)
                return
        f.truncate(0)


class OutputLock:
    """An exclusive lock on ``output_dir`` for one process (one per torchrun rank).

    A second `sta eval` on the same folder is refused instead of computing and
    writing every view twice. The lock is ``flock`` on a file, so the system
    releases it when the process dies, even by ``kill -9``.
    """

    def __init__(self, output_dir: Path, rank: int):
        self.path = output_dir / f".sta-eval.rank{rank}.lock"
        self.file = None

    def __enter__(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; running twice on one folder is then on the user
            return self
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise ResumeMismatch(f"another `sta eval` is writing to {self.path.parent} (lock {self.path}); "
                                 "wait for it to finish, or use another `output_dir`", param="output_dir") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()  # closing releases the flock
