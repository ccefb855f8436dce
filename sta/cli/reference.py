"""``docs/cli.md``, the CLI reference, made from the parsers themselves (``tests/cli/test_reference.py`` checks it).

    python -m sta.cli.reference > docs/cli.md
"""

from __future__ import annotations

import argparse
import os
from contextlib import contextmanager

from sta.cli.app import build_parser

WIDTH = "100"  # argparse wraps help text to the terminal; the reference is the same on every machine


@contextmanager
def fixed_width():
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def render() -> str:
    """Markdown: each command's one-line purpose and its full ``--help``, in the order ``sta --help`` lists them."""
    with fixed_width():
        parser = build_parser()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        helps = {choice.dest: choice.help for choice in commands._choices_actions}
        lines = ["# Command-line reference", "",
                 "Made from the parsers by `python -m sta.cli.reference > docs/cli.md`; `sta COMMAND --help` prints",
                 "the same. Every option shows its default; errors are one line naming the option.", "",
                 "```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in commands.choices.items():
            lines += [f"## sta {name}", "", helps[name], "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
