"""The driver's view of a running sweep, on stderr.

On a terminal: a block redrawn in place at most once a second, a header (trials done, the
front, time, ETA) over one line per phase training now and its epoch (`live`); lines that stay
(a finished trial, an upstream phase) scroll above it. Elsewhere (a log file, a pipe, Slurm's
output): those lines only, and what runs now as one plain line at most every `PLAIN_EVERY_S`,
so a log is never silent for minutes without being flooded.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

from undistill.storage import Storage

from . import live

PLAIN_EVERY_S = 60.0
TTY_EVERY_S = 1.0


def duration(seconds: float) -> str:
    """`4m05s`, `37s`."""
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    def __init__(self, storage: Storage, sweep: str, space=None, stream: TextIO | None = None,
                 tty: bool | None = None):
        """`space`: the sweep's `SearchSpace`, to describe each running phase's candidate."""
        self.storage, self.sweep, self.space = storage, sweep, space
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._block: list[str] = []  # drawn now, under the lines that stay
        self._last = 0.0
        self._plain_said = ""

    def say(self, line: str) -> None:
        """A line that stays (above the block, on a terminal)."""
        if self.tty and self._block:
            self._draw([line], self._block)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def tick(self, header: Callable[[], str], force: bool = False) -> None:
        """Show `header()` and what runs now; cheap to call often (it asks for the header and
        reads the live entries at most once a second on a terminal, once a minute elsewhere)."""
        now = time.monotonic()
        if not force and now - self._last < (TTY_EVERY_S if self.tty else PLAIN_EVERY_S):
            return
        self._last, header = now, header()
        phases = [r.progress(self.space) for r in live.running(self.storage, self.sweep)]
        if self.tty:
            self._draw([], self._fit([header, *(f"  {p}" for p in phases)]))
        elif phases:
            plain = f"{header} · running: " + "; ".join(phases)
            if plain != self._plain_said:
                self.stream.write(plain + "\n")
                self._plain_said = plain
        self.stream.flush()

    def close(self) -> None:
        """Take the block away (the lines that stay remain)."""
        if self.tty and self._block:
            self._draw([], [])
            self.stream.flush()

    def _fit(self, lines: list[str]) -> list[str]:
        """No wider than the terminal (a wrapped line would break the redraw), nor taller."""
        width, height = shutil.get_terminal_size((100, 24))
        lines = [line[: width - 1] for line in lines]
        room = max(2, height - 3)
        if len(lines) > room:
            lines = [*lines[: room - 1], f"  … and {len(lines) - room + 1} more"]
        return lines

    def _draw(self, lines: list[str], block: list[str]) -> None:
        """Erase the block, write `lines` (which stay), then `block` (redrawn next time)."""
        if self._block:
            self.stream.write(f"\x1b[{len(self._block)}F\x1b[J")
        for line in (*lines, *block):
            self.stream.write(line + "\n")
        self._block = list(block)
