"""The ``sta`` command line: one module per command, each parsing its options into a request, calling the
library once and printing; :mod:`sta.cli.app` holds the parser and the error handling."""

from sta.cli.app import main
from sta.cli.options import parse_r

__all__ = ["main", "parse_r"]
