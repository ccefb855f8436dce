"""docs/cli.md is the parsers' own help: regenerate it (``python -m sta.cli.reference > docs/cli.md``) when it fails."""

from pathlib import Path

from sta.cli.reference import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_the_cli_reference_matches_the_parsers():
    stale = "docs/cli.md is stale: python -m sta.cli.reference > docs/cli.md"
    assert DOC.read_text(encoding="utf-8") == render(), stale
