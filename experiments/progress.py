"""A run's progress on the terminal: one status line, rewritten in place about once a second.

    round 3/24  step 1200/50000  2.1 ms/step  ETA round 1:40, run 42:10

It goes to the real terminal (``sys.__stderr__``), never through Sacred's output capture, and only when that is a
TTY: the captured output stored with the run keeps the round lines and none of this. ``ms/step`` and the ETAs are
measured wall time since the run (or the resumed part of it) started, evaluations included.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def clock(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss``."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Status line for ``rounds`` rounds (numbered ``first_round``..``last_round``) of ``iterations`` steps.

    ``update(round, iteration)`` is cheap (a clock read) and redraws at most every ``interval`` seconds;
    ``close()`` clears the line. ``stream`` defaults to the real stderr, and drawing to whether it is a TTY.
    """

    def __init__(self, iterations: int, last_round: int = 0, first_round: int = 0, interval: float = 1.0,
                 stream: TextIO | None = None, enabled: bool | None = None, label: str = "round"):
        self.iterations, self.last_round, self.first_round = iterations, last_round, first_round
        self.interval, self.label = interval, label
        self.stream = stream if stream is not None else sys.__stderr__
        self.enabled = enabled if enabled is not None else bool(self.stream and self.stream.isatty())
        self.start = time.perf_counter()
        self._last_draw = None
        self._width = 0

    def line(self, k: int, iteration: int, now: float) -> str:
        done = (k - self.first_round) * self.iterations + iteration
        total = (self.last_round - self.first_round + 1) * self.iterations
        per_step = (now - self.start) / max(done, 1)
        rounds = f"{self.label} {k}/{self.last_round}  " if self.label else ""
        return (f"{rounds}step {iteration}/{self.iterations}  {1000 * per_step:.1f} ms/step  "
                f"ETA {self.label + ' ' if self.label else ''}{clock((self.iterations - iteration) * per_step)}"
                + (f", run {clock((total - done) * per_step)}" if self.label else ""))

    def update(self, k: int, iteration: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._last_draw is not None and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        text = self.line(k, iteration, now)
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        """Erase the status line (the next output starts on a clean line)."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
