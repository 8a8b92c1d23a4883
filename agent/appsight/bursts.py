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

from dataclasses import dataclass

import numpy as np

from .decode import PacketBatch
from .errors import UsageError

DEFAULT_BURST_GAP = 1.0
MAX_BURST_GAP = 1e9  # about 30 years; anything longer is the same as none


def parse_burst_gap(text: str) -> float | None:
    """``--burst-gap`` value: seconds (> 0) or ``none`` for one burst per capture."""
    if text.strip().lower() in ("none", "inf", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(
            f"--burst-gap: {text!r} is neither a number of seconds nor 'none'"
        ) from None
    if not 0 < value <= MAX_BURST_GAP:
        raise UsageError(
            f"--burst-gap must be a positive number of seconds up to {MAX_BURST_GAP:g} "
            f"(or 'none'), not {text}"
        )
    return value


@dataclass
class BurstBlock:
    """Consecutive complete bursts: burst ``k`` is ``packets[starts[k]:starts[k + 1]]``.

    Bursts are handed on in blocks rather than one by one so that the flow and feature stages
    run once per block with numpy, however many small bursts a capture has.
    """

    packets: PacketBatch
    starts: np.ndarray

    @property
    def count(self) -> int:
        return len(self.starts) - 1

    def burst_of_packet(self) -> np.ndarray:
        """Burst number (0-based within the block) of every packet."""
        return np.repeat(np.arange(self.count, dtype=np.int64), np.diff(self.starts))


class BurstSplitter:
    """Splits a stream of :class:`PacketBatch` objects into bursts."""

    def __init__(self, gap_seconds: float | None = DEFAULT_BURST_GAP) -> None:
        self.gap_ns = None if gap_seconds is None else round(gap_seconds * 1e9)
        self._open: list[PacketBatch] = []
        self._open_len = 0
        self._last_ts: int | None = None

    @property
    def last_packet_ts(self) -> int | None:
        """Timestamp (ns) of the newest packet of the open burst, if any."""
        return self._last_ts if self._open else None

    def push(self, packets: PacketBatch) -> BurstBlock | None:
        """Add packets in capture order; return the bursts they completed, if any."""
        n = len(packets)
        if n == 0:
            return None
        ts = packets.ts_ns
        cuts = np.zeros(0, dtype=np.int64)
        if self.gap_ns is not None:
            gaps = np.empty(n, dtype=np.int64)
            gaps[0] = ts[0] - self._last_ts if self._open else 0
            np.subtract(ts[1:], ts[:-1], out=gaps[1:])
            cuts = np.flatnonzero(gaps > self.gap_ns)
        self._last_ts = int(ts[-1])
        if len(cuts) == 0:
            self._open.append(packets)
            self._open_len += n
            return None
        last = int(cuts[-1])
        done = PacketBatch.concat([*self._open, packets.take(slice(0, last))])
        bounds = np.unique(np.concatenate(([0], self._open_len + cuts, [len(done)])))
        self._open = [packets.take(slice(last, None))]
        self._open_len = n - last
        return BurstBlock(done, bounds.astype(np.int64))

    def close(self) -> BurstBlock | None:
        """End the open burst now (end of capture, or the live clock saw the gap pass)."""
        if not self._open:
            return None
        burst = PacketBatch.concat(self._open)
        self._open = []
        self._open_len = 0
        return BurstBlock(burst, np.array([0, len(burst)], dtype=np.int64))
