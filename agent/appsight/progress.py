"""Progress on long runs: one self-updating line on a terminal, silence elsewhere."""

from __future__ import annotations

import sys
import time
from typing import IO

from .pipeline import CaptureSummary
from .reader import CaptureReader


class Progress:
    """Shows captures done, the current capture's share read, packets and flows per second."""

    def __init__(self, total_captures: int, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.total = total_captures
        self.done = 0
        self.packets = 0
        self.flows = 0
        self.started = time.monotonic()
        self._last_draw = 0.0

    def update(self, reader: CaptureReader) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw < 0.2:
            return
        self._last_draw = now
        share = ""
        position = reader.position
        if reader.size and position is not None:
            share = f" {100 * position / reader.size:3.0f}%"
        rate = reader.stats.records / max(now - self.started, 1e-9)
        self._draw(
            f"[{self.done + 1}/{self.total}] {reader.name}{share}  "
            f"{self.packets + reader.stats.records:,} packets  {rate:,.0f}/s"
        )

    def capture_finished(self, summary: CaptureSummary) -> None:
        """Count a finished capture and print its warning line, if it has one."""
        self.capture_done(summary.packets, summary.flows)
        warning = summary.warning()
        if warning:
            self.clear()
            print(f"appsight: warning: {warning}", file=sys.stderr)

    def capture_done(self, packets: int, flows: int) -> None:
        self.done += 1
        self.packets += packets
        self.flows += flows
        self.started = time.monotonic()

    def _draw(self, text: str) -> None:
        self.stream.write("\r\x1b[K" + text[:160])
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
