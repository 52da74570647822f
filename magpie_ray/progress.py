"""Progress lines a person can read in `ray job logs`.

A row-wise step (generate, tag) reports, at most once every `progress_every_s` seconds and once
at its end: rows done of the step's total in this invocation, rows per second, output tokens per
second (generate) and the time left at the current rate, e.g.

    generate: 1,200 / 10,000 rows (12%), 41.2 rows/s, 9,870 output tok/s, ETA 3m 34s

Rates count from the step's start, engine loading included, so the ETA is what a person waits.
Pure apart from the clock and the line it emits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("magpie_ray.progress")


def duration(seconds: float) -> str:
    """'45s', '3m 34s', '2h 05m'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


class Progress:
    """Counts a step's rows (and output tokens) as its calls return; emits a line when
    `every_s` seconds have passed since the last one (never when `every_s` <= 0)."""

    def __init__(
        self,
        step: str,
        total: int,
        every_s: float,
        *,
        tokens: bool = False,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] | None = None,
    ):
        self.step, self.total, self.every_s, self.tokens = step, total, every_s, tokens
        self.clock, self.emit = clock, emit or log.info
        self.started = self.last = clock()
        self.rows = 0
        self.output_tokens = 0
        self.reported_rows: int | None = None  # rows at the last line emitted

    def add(self, rows: int, output_tokens: int = 0) -> None:
        self.rows += rows
        self.output_tokens += output_tokens
        if self.every_s > 0 and self.clock() - self.last >= self.every_s:
            self.report()

    def report(self) -> None:
        self.last, self.reported_rows = self.clock(), self.rows
        self.emit(self.line())

    def finish(self) -> None:
        """The step's last line, unless the last one emitted already counts every row."""
        if self.every_s > 0 and self.total and self.reported_rows != self.rows:
            self.report()

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.rows / elapsed
        share = f" ({100 * self.rows / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.step}: {self.rows:,} / {self.total:,} rows{share}", f"{rate:.1f} rows/s"]
        if self.tokens:
            parts.append(f"{self.output_tokens / elapsed:,.0f} output tok/s")
        left = self.total - self.rows
        if left <= 0:
            parts.append(f"done in {duration(elapsed)}")
        elif rate > 0:
            parts.append(f"ETA {duration(left / rate)}")
        else:
            parts.append("ETA unknown (no row done yet)")
        return ", ".join(parts)
