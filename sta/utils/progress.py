"""Progress: a bar with rate and ETA (tqdm when installed, else a plain line every few seconds), and one line per
long step that has no count (an export, a compile, a quantization) through the ``sta`` logger.

The library only logs those lines (INFO on ``logging.getLogger("sta")``): the CLI shows them on stderr unless
``--no-progress``; a program using the library sees them only if it configures logging.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("sta")


@contextmanager
def step(what: str) -> Iterator[None]:
    """Log ``what ...`` before a long step and ``what: done in N s`` after it (nothing when it fails)."""
    log.info("%s ...", what)
    start = time.perf_counter()
    yield
    log.info("%s: done in %.0f s", what, time.perf_counter() - start)


class Progress:
    def __init__(self, total: int, unit: str = "it", enabled: bool = True, desc: str = ""):
        self.total, self.unit, self.enabled, self.desc = total, unit, enabled, desc
        self.count, self.start, self.last_print = 0, time.perf_counter(), 0.0
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit=f" {unit}", desc=desc or None, dynamic_ncols=True)
            except ImportError:
                pass

    def update(self, n: int = 1) -> None:
        self.count += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last_print >= 5 or self.count == self.total:
            self.last_print = now
            rate = self.count / max(now - self.start, 1e-9)
            eta = (self.total - self.count) / rate if rate > 0 else float("inf")
            print(f"{self.desc + ' ' if self.desc else ''}{self.count}/{self.total} {self.unit}, "
                  f"{rate:.2f} {self.unit}/s, ETA {eta:.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def tick(what: str, done: int, total: int, start: float) -> None:
    """One progress line after the ``done``-th of ``total`` steps (a configuration of a comparison): what it was,
    the time since ``start`` (a ``time.perf_counter()``) and an estimate of the time left."""
    elapsed = time.perf_counter() - start
    left = elapsed / max(done, 1) * (total - done)
    log.info("%d/%d %s (%.0f s elapsed, about %.0f s left)", done, total, what, elapsed, left)
