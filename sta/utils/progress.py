"""A progress bar with rate and ETA: tqdm when installed, else a plain line every few seconds."""

from __future__ import annotations

import sys
import time


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
