"""Bursts stage: cut the packet stream wherever the capture falls silent.

A burst is a maximal run of packets in which no gap between consecutive packets (in capture
order, over all traffic of the capture, not per flow) exceeds the burst gap. This is the unit
AppScanner and the original project classify: every flow lives inside one burst.

The splitter is incremental: batches go in, finished bursts come out, and the open burst is
held only until a later packet (offline) or the clock (live, :meth:`BurstSplitter.close`) ends
it. Memory is therefore bounded by the largest burst, not by the capture. With no burst gap
(``None``) the whole capture is one burst.
"""

from __future__ import annotations

import numpy as np

from .decode import PacketBatch
from .errors import UsageError

DEFAULT_BURST_GAP = 1.0


def parse_burst_gap(text: str) -> float | None:
    """``--burst-gap`` value: seconds (> 0) or ``none`` for one burst per capture."""
    if text.strip().lower() in ("none", "inf", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--burst-gap: {text!r} is neither a number of seconds nor 'none'") from None
    if not value > 0 or value == float("inf"):
        raise UsageError(f"--burst-gap must be a positive number of seconds, not {text}")
    return value


class BurstSplitter:
    """Splits a stream of :class:`PacketBatch` objects into bursts."""

    def __init__(self, gap_seconds: float | None = DEFAULT_BURST_GAP) -> None:
        self.gap_ns = None if gap_seconds is None else int(round(gap_seconds * 1e9))
        self._open: list[PacketBatch] = []
        self._last_ts: int | None = None

    @property
    def last_packet_ts(self) -> int | None:
        """Timestamp (ns) of the newest packet of the open burst, if any."""
        return self._last_ts if self._open else None

    def push(self, packets: PacketBatch) -> list[PacketBatch]:
        """Add packets in capture order; return the bursts they completed."""
        if len(packets) == 0:
            return []
        done: list[PacketBatch] = []
        ts = packets.ts_ns
        if self.gap_ns is None:
            cuts = np.zeros(0, dtype=np.int64)
        else:
            previous = np.empty_like(ts)
            previous[0] = ts[0] if self._last_ts is None else self._last_ts
            previous[1:] = ts[:-1]
            cuts = np.flatnonzero(ts - previous > self.gap_ns)
        start = 0
        for cut in cuts.tolist():
            if cut > start:
                self._open.append(packets.take(slice(start, cut)))
            if self._open:
                done.append(PacketBatch.concat(self._open))
            self._open = []
            start = cut
        self._open.append(packets.take(slice(start, None)) if start else packets)
        self._last_ts = int(ts[-1])
        return done

    def close(self) -> PacketBatch | None:
        """End the open burst now (end of capture, or the live clock saw the gap pass)."""
        if not self._open:
            return None
        burst = PacketBatch.concat(self._open)
        self._open = []
        return burst
