"""The errors sta raises on purpose: what was asked cannot work, and the message says why.

Everything here is a :class:`StaError`. Each also subclasses the built-in
exception a Python caller would expect (``ValueError`` for a bad value,
``ImportError`` for a missing optional package), so ``except ValueError`` keeps
working. ``param`` names the argument at fault, in the library's words
(``"r"``, ``"output_dir"``, ``"hf_model"``); the CLI turns it into its flag.
Any other exception is a bug (or an environment failure) and keeps its traceback.
"""

from __future__ import annotations


class StaError(Exception):
    """What the caller asked for cannot work; the message says what and, where it helps, what to do."""

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.param = param  # the argument at fault (library name), or None


class InvalidInput(StaError, ValueError):
    """A value, a combination of values, or a file's contents that cannot be used."""


class MissingDependency(StaError, ImportError):
    """An optional package this feature needs is not installed (the message names the extra)."""


class RunFailed(StaError, RuntimeError):
    """A run finished without a result to report (nothing could be scored); the CLI exits with status 1."""


class OutputError(StaError, OSError):
    """A file sta writes could not be written (a full disk, most often); the message names the file."""
