"""Build progress on stderr: phase, rows, rate and ETA; a bar on a terminal, plain lines otherwise.

Builders call `progress(phase, done, total)` as often as they like (total may be None when it is
not known yet); the reporter decides how often to draw (a terminal ~5 times a second, a log at
most once every `interval` seconds) so the engines never think about it.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    def __call__(self, stage: str, n: int, total: int | None = None, /) -> None: ...


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def children_peak_rss_mb() -> float:
    """Peak resident memory of the largest child process waited for so far."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def dir_mb(path: str | os.PathLike[str]) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total / 2**20


def _eta(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class Reporter:
    """The CLI's progress: one line per phase change and per interval, or a redrawn bar."""

    def __init__(
        self, stream: TextIO | None = None, *, tty: bool | None = None, interval: float = 1.0
    ) -> None:
        self._out = stream if stream is not None else sys.stderr
        self._tty = self._out.isatty() if tty is None else tty
        self._interval = 0.2 if self._tty else interval
        self._stage = ""
        self._t_stage = self._last = time.monotonic()
        self._drawn = False

    def __call__(self, stage: str, n: int, total: int | None = None, /) -> None:
        now = time.monotonic()
        if stage != self._stage:
            if self._drawn and self._tty:
                self._out.write("\n")
            self._stage, self._t_stage, self._drawn = stage, now, False
        elif now - self._last < self._interval:
            return
        self._last = now
        elapsed = now - self._t_stage
        # The first call of a phase has no elapsed time to speak of: no rate, no ETA yet.
        rate = n / elapsed if elapsed > 0.05 else 0.0
        text = f"{stage:<10} {n:>13,} rows " + (f"{rate:>11,.0f}/s" if rate else " " * 13)
        if total:
            frac = min(1.0, n / total)
            eta = (total - n) / rate if rate > 0 and n < total else 0.0
            text += f"  {frac:6.1%}  ETA {_eta(eta)}"
            if self._tty:
                width = 24
                full = int(frac * width)
                text = f"[{'#' * full}{'.' * (width - full)}] " + text
        text += f"  rss {peak_rss_mb():,.0f} MB"
        if self._tty:
            self._out.write("\r" + text + "\x1b[K")
        else:
            self._out.write("  " + text + "\n")
        self._out.flush()
        self._drawn = True

    def done(self) -> None:
        if self._drawn and self._tty:
            self._out.write("\n")
            self._out.flush()
        self._drawn = False
