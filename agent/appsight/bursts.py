"""Bursts stage: cut the packet stream wherever the capture falls silent.

A burst is a maximal run of packets in which no gap between consecutive packets (in capture
order, over all traffic of the capture, not per flow) exceeds the burst gap. This is the unit
AppScanner and the original project classify: every flow lives inside one burst.

The splitter is incremental: batches go in, finished bursts come out, and the open burst is
held only until a later packet (offline) or the clock (live, :meth:`BurstSplitter.close`) ends
it. Memory is therefore bounded by the largest burst, not by the capture. With no burst gap
(``None``) the whole capture is one burst.

A burst of traffic that never falls silent never ends, so the live agent also takes packets out
of the open burst (:meth:`BurstSplitter.take_open`, the oldest flows of a burst that holds too
many, see :mod:`appsight.limits`); the burst stays open, with its number, even when nothing of
it is left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .decode import PacketBatch
from .errors import UsageError

DEFAULT_BURST_GAP = 1.0
MAX_BURST_GAP = 1e9  # about 30 years; anything longer is the same as none
MERGE_UP_TO = 65_536  # held batches of the open burst are merged until this many packets


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
        self._in_burst = False  # a burst has begun (it may hold no packets, see take_open)
        self._last_ts: int | None = None
        #: Changes whenever packets leave the open burst (a cut, close, take_open), so that
        #: an index of the open burst's packets knows when it is stale.
        self.generation = 0

    @property
    def last_packet_ts(self) -> int | None:
        """Timestamp (ns) of the newest packet of the open burst, if a burst is open."""
        return self._last_ts if self._in_burst else None

    @property
    def open_packets(self) -> int:
        """Packets held for the open burst."""
        return self._open_len

    def push(self, packets: PacketBatch) -> BurstBlock | None:
        """Add packets in capture order; return the bursts they completed, if any.

        The first burst of the block returned is empty when every packet of the open burst
        had been taken out with :meth:`take_open` before the silence that ended it.
        """
        n = len(packets)
        if n == 0:
            return None
        ts = packets.ts_ns
        cuts = np.zeros(0, dtype=np.int64)
        if self.gap_ns is not None:
            gaps = np.empty(n, dtype=np.int64)
            gaps[0] = ts[0] - self._last_ts if self._in_burst else 0
            np.subtract(ts[1:], ts[:-1], out=gaps[1:])
            cuts = np.flatnonzero(gaps > self.gap_ns)
        self._last_ts = int(ts[-1])
        self._in_burst = True
        if len(cuts) == 0:
            self._append(packets)
            return None
        last = int(cuts[-1])
        done = PacketBatch.concat([*self._open, packets.take(slice(0, last))])
        bounds = np.concatenate(([0], self._open_len + cuts))
        self._open = [packets.take(slice(last, None))]
        self._open_len = n - last
        self.generation += 1
        return BurstBlock(done, bounds.astype(np.int64))

    def _append(self, packets: PacketBatch) -> None:
        """Hold packets of the open burst, merging small batches as they come.

        A live interface hands on a batch every few packets; unmerged, each held packet would
        cost about 1.4 kB of array headers instead of its 84 bytes. Merging the last two
        batches while the older is no larger (a binary counter) copies each packet about
        log2(MERGE_UP_TO / its batch size) times at most and keeps the list short.
        """
        self._open.append(packets)
        self._open_len += len(packets)
        held = self._open
        while len(held) > 1 and len(held[-2]) <= len(held[-1]) and len(held[-2]) < MERGE_UP_TO:
            held[-2:] = [PacketBatch.concat(held[-2:])]

    def open_batch(self) -> PacketBatch:
        """The packets of the open burst, in capture order, as one batch."""
        if len(self._open) > 1:
            self._open = [PacketBatch.concat(self._open)]
        return self._open[0] if self._open else PacketBatch.empty()

    def open_since(self, position: int) -> PacketBatch:
        """The packets of the open burst from ``position`` (0: its first packet) on."""
        tail: list[PacketBatch] = []
        skip = self._open_len - position
        for held in reversed(self._open):
            if skip <= 0:
                break
            tail.append(held if len(held) <= skip else held.take(slice(len(held) - skip, None)))
            skip -= len(held)
        return PacketBatch.concat(tail[::-1]) if tail else PacketBatch.empty()

    def take_open(self, selected: np.ndarray) -> PacketBatch:
        """Remove the packets ``selected`` (a mask over :meth:`open_batch`) from the open
        burst and return them. The burst stays open, and keeps its number, even if empty."""
        batch = self.open_batch()
        taken = batch.take(selected)
        kept = batch.take(~selected)
        self._open = [kept] if len(kept) else []
        self._open_len = len(kept)
        self.generation += 1
        return taken

    def close(self) -> BurstBlock | None:
        """End the open burst now (end of capture, or the live clock saw the gap pass).

        The block holds no packets at all if :meth:`take_open` had taken them all.
        """
        if not self._in_burst:
            return None
        burst = PacketBatch.concat(self._open) if self._open else PacketBatch.empty()
        self._open = []
        self._open_len = 0
        self._in_burst = False
        self.generation += 1
        return BurstBlock(burst, np.array([0, len(burst)], dtype=np.int64))
