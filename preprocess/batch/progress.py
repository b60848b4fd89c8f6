"""Progress of long work with tqdm: items/s and ETA, plus frames/s where the work counts frames.

A terminal gets tqdm's live bar. A log file (CI, a batch job's output) gets one whole line per 5 % of the work and a
last one at the end, with the average rate, never carriage-return redraws.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress(tqdm):
    """``with Progress(total, "clips", desc="synth") as p: ... p.advance(frames=48)``."""

    def __init__(self, total: int, unit: str = "items", desc: str = "", file=None, **options):
        file = file if file is not None else sys.stderr
        self._log_lines = not (hasattr(file, "isatty") and file.isatty())
        self._logged_n = None
        if self._log_lines:
            # leave=False: tqdm's close then asks display() to clear the bar, which here writes the last line instead.
            # maxinterval: tqdm's monitor thread would otherwise drop miniters to 1 after 10 s without a line (slow
            # items, as pose), and the log would get a line per item.
            options.update(
                miniters=max(1, total // 20),
                mininterval=0,
                maxinterval=float("inf"),
                smoothing=0,
                ascii=True,
                leave=False,
            )
        super().__init__(total=total, unit=unit, desc=desc or None, file=file, dynamic_ncols=True, **options)
        self.frames = 0

    def advance(self, n: int = 1, frames: int = 0) -> None:
        self.frames += frames
        if self.frames:
            rate = self.frames / max(self.format_dict["elapsed"], 1e-9)
            self.set_postfix_str(f"{rate:.0f} frames/s", refresh=False)
        self.update(n)

    def display(self, msg=None, pos=None):
        if not self._log_lines:
            return super().display(msg, pos)
        closing = msg == ""
        # One line per new count: none for the empty start, none repeated at the end.
        if self.n != self._logged_n and (self.n or closing):
            self._logged_n = self.n
            self.fp.write(self.__str__() + "\n")
            self.fp.flush()
        return not closing
