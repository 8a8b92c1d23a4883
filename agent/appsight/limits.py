"""Bounds on the open burst of a live run: how many flows and packets it may hold.

A burst ends only after a silence of the burst gap. Traffic that never pauses for that long (a
gateway in front of many devices, a long download beside chatty apps) makes one burst that
lasts for hours, and until it ends its packets are all held: about 84 bytes each, so memory
grows with every packet, not only with every new flow. A live run therefore caps the open
burst (``--max-flows``, ``--max-packets``): once a cap is passed, the flows that have been
silent longest are taken out of the burst and reported at once, as flows of that burst (its
number is kept), and the burst goes on. Eviction works down to :data:`EVICT_TO` of the cap
passed, so that it happens now and then, not with every batch.

Offline runs are not capped: a file ends, and its bursts are reported exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bursts import BurstSplitter
from .decode import PacketBatch
from .errors import UsageError
from .flows import flow_hash

DEFAULT_MAX_FLOWS = 100_000
DEFAULT_MAX_PACKETS = 1_000_000  # about 84 MB held, and a few times that while building flows
#: An eviction leaves this share of the cap that was passed. Each eviction costs time in
#: proportion to the packets held (about 0.15 s for a million), so it should not come with
#: every batch; a quarter of the cap makes it rare and still evicts only the flows silent
#: longest.
EVICT_TO = 0.75


@dataclass(frozen=True)
class OpenBurstLimits:
    """The caps of one live run on the flows and packets held for the open burst."""

    max_flows: int = DEFAULT_MAX_FLOWS
    max_packets: int = DEFAULT_MAX_PACKETS

    def __post_init__(self) -> None:
        for name, value in (("--max-flows", self.max_flows),
                            ("--max-packets", self.max_packets)):
            if value < 1:
                raise UsageError(f"{name} must be at least 1, not {value}")

    def describe(self) -> str:
        return f"--max-flows {self.max_flows}, --max-packets {self.max_packets}"


class OpenFlowCount:
    """The number of distinct flows in the open burst, kept up to date batch by batch.

    A set of 64-bit flow hashes: adding a batch costs a hash per packet and a set insert per
    flow of the batch. The count is only needed once the burst holds more packets than the
    flow cap (it cannot hold more flows than packets), so short bursts pay nothing. A hash
    collision counts two flows as one, which only delays an eviction by a flow.
    """

    def __init__(self) -> None:
        self._hashes: set[int] = set()
        self._generation = -1
        self._indexed = 0  # packets of the open burst already in the set

    def count(self, splitter: BurstSplitter) -> int:
        if splitter.generation != self._generation:  # packets left the burst: start afresh
            self._hashes.clear()
            self._generation = splitter.generation
            self._indexed = 0
        new = splitter.open_since(self._indexed)
        if len(new):
            self._hashes.update(np.unique(flow_hash(new)).tolist())
        self._indexed = splitter.open_packets
        return len(self._hashes)

    def restart(self, hashes: np.ndarray, splitter: BurstSplitter) -> None:
        """After an eviction: the flows left are ``hashes`` (saves hashing them again)."""
        self._hashes = set(hashes.tolist())
        self._generation = splitter.generation
        self._indexed = splitter.open_packets

    def forget(self) -> None:
        """Release the set (the open burst is small again)."""
        if self._generation != -1:
            self._hashes = set()
            self._generation = -1


def oldest_flows(packets: PacketBatch, keep_flows: int,
                 keep_packets: int) -> tuple[np.ndarray, np.ndarray]:
    """The flows to evict: those silent longest, as few as leave at most ``keep_flows`` flows
    and ``keep_packets`` packets. Returns a mask of their packets and the flow hashes kept."""
    hashes = flow_hash(packets)
    order = np.argsort(hashes)
    sorted_hashes = hashes[order]
    starts = np.flatnonzero(np.r_[True, sorted_hashes[1:] != sorted_hashes[:-1]])
    last_seen = np.maximum.reduceat(packets.ts_ns[order], starts)
    sizes = np.diff(np.append(starts, len(packets)))
    by_age = np.argsort(last_seen, kind="stable")  # silent longest first
    evict = max(len(starts) - keep_flows, 0)
    if len(packets) > keep_packets:
        left = len(packets) - np.cumsum(sizes[by_age])  # packets left after evicting 1, 2, ...
        evict = max(evict, int(np.argmax(left <= keep_packets)) + 1)
    evicted = np.zeros(len(starts), dtype=bool)
    evicted[by_age[:evict]] = True
    selected = np.empty(len(packets), dtype=bool)
    selected[order] = np.repeat(evicted, sizes)
    return selected, sorted_hashes[starts[~evicted]]


def eviction_targets(limits: OpenBurstLimits, flows_over: bool,
                     packets_over: bool) -> tuple[int, int]:
    """(flows, packets) an eviction must get down to: EVICT_TO of each cap that was passed."""
    flows = int(limits.max_flows * EVICT_TO) if flows_over else limits.max_flows
    packets = int(limits.max_packets * EVICT_TO) if packets_over else limits.max_packets
    return flows, packets
