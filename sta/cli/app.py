"""The ``sta`` parser and its error handling; each command lives in its own module of this package.

Errors the library raises on purpose (:class:`sta.errors.StaError`) and operating-system
errors about a named file print one line and exit with status 2 (a run that scored
nothing: status 1); anything else is a bug and shows its traceback. ``--debug``
(anywhere on the line, or ``STA_DEBUG=1``) shows every traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

import torch

from sta import __version__
from sta.cli import bench, compare, convert, demo, evaluate, export, flops, gradnorm, plot, predict, vis
from sta.cli.output import spell_flags
from sta.errors import RunFailed, StaError

COMMANDS = (flops, bench, evaluate, predict, export, vis, demo, compare, gradnorm, convert, plot)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Bad options are one line naming the option, not the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sta", formatter_class=HelpFormatter,
                    description="STA token pruning for VideoMAE video transformers")
    parser.add_argument("--version", action="version", version=f"sta-prune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks (also: STA_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION,
                           formatter_class=HelpFormatter)
        command.add_arguments(p)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks")
        p.set_defaults(run=command.run)
    return parser


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"sta: warning: {spell_flags(str(message))}", file=sys.stderr)


def quiet_libraries() -> None:
    """Third-party progress bars, load reports and logged tracebacks stay off the console (``--debug`` shows them)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    logging.getLogger("torch").setLevel(logging.ERROR)  # the ONNX exporter's notes, torch.export's logged errors


def show_steps(command: str, quiet: bool = False) -> None:
    """The library's one line per long step (``sta.utils.progress.step``) on stderr, unless ``--no-progress``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"sta {command}: %(message)s"))
    log = logging.getLogger("sta")
    log.handlers, log.propagate = [handler], False  # one handler however often main() runs in a process
    log.setLevel(logging.WARNING if quiet else logging.INFO)


def describe(err: BaseException) -> str | None:
    """The one line a user sees for an error that is theirs to fix, or None for a bug."""
    if isinstance(err, StaError):
        return spell_flags(str(err))
    if isinstance(err, OSError) and err.filename is not None:  # the OS about a file the user named or we write
        return f"{err.filename}: {(err.strerror or str(err)).lower()}"
    return None


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The options; a word no option takes is an error of the command it follows (pointing at its help)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subparsers.choices[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    debug = args.debug or os.environ.get("STA_DEBUG", "") not in ("", "0")
    warnings.showwarning = show_warning
    if not debug:
        quiet_libraries()
    show_steps(args.command, quiet=getattr(args, "no_progress", False))
    # Trained models' attention underflows to denormal floats, which slow x86 matmuls up to 10x: flush them.
    torch.set_flush_denormal(True)
    try:
        args.run(args)
    except KeyboardInterrupt:
        if debug:
            raise
        resume = "; rerun the same command to resume" if args.command == "eval" else ""
        print(f"sta {args.command}: interrupted{resume}", file=sys.stderr)
        return 130
    except RunFailed as err:
        print(f"sta {args.command}: {spell_flags(str(err))}", file=sys.stderr)
        return 1
    except Exception as err:
        line = describe(err)
        if debug or line is None:
            raise
        print(f"sta {args.command}: error: {line}", file=sys.stderr)
        return 2
    return 0
