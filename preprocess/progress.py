"""A plain progress line for long work: done/total, items/s and ETA, on stderr, throttled."""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """``with Progress(total, "clips") as p: ... p.advance(frames=48)`` prints e.g.
    ``synth  120/300 clips  41.2 clips/s  1978 frames/s  ETA 0:04``.
    """

    def __init__(self, total: int, unit: str = "items", label: str = "", stream=None, min_interval: float = 0.5):
        self.total, self.unit, self.label = total, unit, label
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.frames = 0
        self.start = time.monotonic()
        self._last = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        # A terminal gets a live line; a log file (CI) gets a whole line every few seconds.
        self.min_interval = min_interval if self._tty else max(min_interval, 5.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._print(final=True)

    def advance(self, n: int = 1, frames: int = 0) -> None:
        self.done += n
        self.frames += frames
        now = time.monotonic()
        if now - self._last >= self.min_interval or self.done >= self.total:
            self._last = now
            self._print()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        parts = [f"{self.label}".strip(), f"{self.done}/{self.total} {self.unit}", f"{rate:.1f} {self.unit}/s"]
        if self.frames:
            parts.append(f"{self.frames / elapsed:.0f} frames/s")
        parts.append(f"ETA {_clock(eta)}" if self.done < self.total else f"in {_clock(elapsed)}")
        return "  ".join(p for p in parts if p)

    def _print(self, final: bool = False) -> None:
        if self._tty:
            self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
        elif not final or self.done < self.total:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
