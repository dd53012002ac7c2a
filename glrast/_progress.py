"""Progress reports for long jobs (the examples, glrast render): a tqdm bar on a
terminal, plain periodic lines on stderr when it is a log file (or tqdm is missing),
nothing when quiet."""

from __future__ import annotations

import sys
import time


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _LogBar(_NoBar):
    """Progress as plain lines on stderr, for logs: one line per tenth of the total (at most one every
    `every` seconds, and the last always), instead of a bar redrawn with carriage returns."""

    def __init__(self, total: int, desc: str, every: float = 5.0):
        self.total, self.desc, self.every = total, desc, every
        self.done = 0
        self.start = self.last = time.monotonic()
        self.next_count = max(1, total // 10)

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        finished = self.done >= self.total
        if finished or (self.done >= self.next_count and now - self.last >= self.every):
            pct = 100 * self.done // max(1, self.total)
            print(f"{self.desc}: {self.done}/{self.total} ({pct}%), {now - self.start:.1f} s", file=sys.stderr)
            self.last = now
            self.next_count = self.done + max(1, self.total // 10)


def progress_bar(total: int, desc: str, quiet: bool = False):
    """A progress bar (context manager with update()): tqdm's on a terminal, plain periodic lines
    when stderr is not a terminal (a log file) or tqdm is missing, nothing when quiet."""
    if quiet:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not sys.stderr.isatty():
        return _LogBar(total, desc)
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
