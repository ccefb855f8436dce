"""The README's commands that need no release checkpoint or dataset run as written, from an empty folder.

A code block right after the line ``<!-- runs as written -->`` in README.md is run line by line (a line
ending in ``\\`` continues on the next; ``#`` comments are dropped) with ``sta`` and ``python`` being
this interpreter's, so that under ``make package-check`` it is the installed wheel that answers.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- runs as written -->"


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(re.escape(MARKER) + r"\s*```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip() if not line.strip().startswith("#") else ""
            if line:
                commands.append(line)
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_try():
    assert len(COMMANDS) >= 8 and any(c.startswith("sta compare") for c in COMMANDS)


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    """In order, in one empty folder: later commands use what earlier ones wrote."""
    for command in COMMANDS:
        words = shlex.split(command)
        if words[0] == "sta":
            words = [sys.executable, "-m", "sta", *words[1:]]
        elif words[0] == "python":
            words = [sys.executable, *words[1:]]
        else:
            pytest.fail(f"README command neither sta nor python: {command}")
        words = _expand(words, tmp_path)  # globs, as a shell would expand them
        done = subprocess.run(words, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"


def _expand(words: list[str], cwd: Path) -> list[str]:
    """Each word with ``*`` or ``?`` replaced by the paths it matches under ``cwd`` (kept as is if none)."""
    out = []
    for word in words:
        matches = sorted(str(p.relative_to(cwd)) for p in cwd.glob(word)) if any(c in word for c in "*?") else []
        out += matches or [word]
    return out
