"""The pipeline: capture -> records -> packets -> bursts -> flows, shared by every command.

Offline commands (``flows``, ``features``, ``train``, ``classify``) and the live agent use the
same stages; only the source of record batches and the clock that closes the last burst differ.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .addresses import NetworkMatcher
from .bursts import DEFAULT_BURST_GAP, BurstBlock, BurstSplitter
from .decode import Decoder, DecodeStats
from .flows import FlowTable, build_flows
from .limits import OpenBurstLimits, OpenFlowCount, eviction_targets, oldest_flows
from .reader import CaptureReader, ReadStats, RecordBatch, read_records


@dataclass(frozen=True)
class PipelineOptions:
    """How packets become flows: the settings a model must be trained and used with alike."""

    burst_gap: float | None = DEFAULT_BURST_GAP
    device: NetworkMatcher | None = None
    decapsulate: bool = True


@dataclass
class FlowBlock:
    """The flows of one or more consecutive bursts of one capture.

    ``flows.burst`` numbers bursts within the block; the capture-wide number of a flow's
    burst is ``first_burst + flows.burst``.
    """

    capture: str
    first_burst: int
    n_bursts: int
    flows: FlowTable
    #: Why flows of a burst that is still open are reported before it ends (a live run's cap
    #: on the open burst was passed, see :mod:`appsight.limits`); empty for whole bursts.
    early: str = ""

    def burst_slices(self) -> Iterator[tuple[int, slice]]:
        """(capture-wide burst number, slice of its flows) for each burst of the block."""
        bounds = np.searchsorted(self.flows.burst, np.arange(self.n_bursts + 1))
        for k in range(self.n_bursts):
            yield self.first_burst + k, slice(int(bounds[k]), int(bounds[k + 1]))


@dataclass
class CaptureSummary:
    """What happened while reading one capture: for the warning line and the report footer."""

    capture: str
    read: ReadStats
    decode: DecodeStats
    packets: int = 0
    bursts: int = 0
    flows: int = 0

    def warning(self) -> str | None:
        """One line naming everything that was skipped or odd, or None if all was clean."""
        parts = []
        if self.read.malformed_records:
            parts.append(f"{self.read.malformed_records} malformed records skipped")
        if self.decode.malformed:
            parts.append(f"{self.decode.malformed} malformed IP packets skipped")
        for linktype, count in sorted(self.decode.unsupported_linktypes.items()):
            parts.append(f"{count} frames of unsupported link type {linktype} skipped")
        parts.extend(self.read.problems)
        return f"{self.capture}: " + "; ".join(parts) if parts else None


class FlowMeter:
    """Turns record batches of one capture or stream into bursts of flows.

    With ``limits`` (live runs), :meth:`evict` keeps the open burst within them.
    """

    def __init__(self, capture: str, options: PipelineOptions,
                 limits: OpenBurstLimits | None = None) -> None:
        self.capture = capture
        self.options = options
        self.limits = limits
        self.decoder = Decoder(decapsulate=options.decapsulate)
        self.splitter = BurstSplitter(options.burst_gap)
        self.bursts_done = 0
        self.packets = 0
        self.flows = 0
        self.evictions = EvictionStats()
        self._open_flows = OpenFlowCount()

    def _finish(self, block: BurstBlock | None) -> FlowBlock | None:
        if block is None:
            return None
        if block.count and block.starts[1] == 0:
            # The first burst lost all its packets to evict() before it ended: it keeps its
            # number, and its flows have been reported already.
            self.bursts_done += 1
            block = BurstBlock(block.packets, block.starts[1:])
            if block.count == 0:
                return None
        table = build_flows(block, self.options.device)
        result = FlowBlock(self.capture, self.bursts_done, block.count, table)
        self.bursts_done += block.count
        self.flows += len(table)
        return result

    def push(self, batch: RecordBatch) -> FlowBlock | None:
        """Decode a batch of records; return the flows of the bursts it completed, if any."""
        packets = self.decoder.decode(batch)
        self.packets += len(packets)
        return self._finish(self.splitter.push(packets))

    def close(self) -> FlowBlock | None:
        """End the open burst (end of input, or the live clock saw the gap pass)."""
        return self._finish(self.splitter.close())

    def evict(self) -> FlowBlock | None:
        """If the open burst holds more flows or packets than ``limits`` allow, take out the
        flows that have been silent longest and return them (as flows of the open burst);
        the rest of the burst is reported when it ends, as usual."""
        limits = self.limits
        held = self.splitter.open_packets
        if limits is None or (held <= limits.max_flows and held <= limits.max_packets):
            self._open_flows.forget()  # cannot be over either cap: no need to count flows
            return None
        packets_over = held > limits.max_packets
        # Over the packet cap, the eviction leaves at most max_flows flows anyway: no count.
        flows_over = not packets_over and (
            self._open_flows.count(self.splitter) > limits.max_flows)
        if not (flows_over or packets_over):
            return None
        keep_flows, keep_packets = eviction_targets(limits, flows_over, packets_over)
        selected, kept = oldest_flows(self.splitter.open_batch(), keep_flows, keep_packets)
        taken = self.splitter.take_open(selected)
        self._open_flows.restart(kept, self.splitter)
        table = build_flows(BurstBlock(taken, np.array([0, len(taken)], dtype=np.int64)),
                            self.options.device)
        self.flows += len(table)
        self.evictions.add(self.bursts_done, len(table), len(taken))
        why = (f"more than {limits.max_packets} packets held" if packets_over
               else f"more than {limits.max_flows} flows open")
        return FlowBlock(self.capture, self.bursts_done, 1, table, early=why)


@dataclass
class EvictionStats:
    """Flows reported early by :meth:`FlowMeter.evict`, for the warning lines of a live run."""

    flows: int = 0
    packets: int = 0
    rounds: int = 0
    bursts: int = 0  # bursts that had flows evicted
    last_burst: int = -1

    def add(self, burst: int, flows: int, packets: int) -> None:
        self.flows += flows
        self.packets += packets
        self.rounds += 1
        if burst != self.last_burst:
            self.bursts += 1
            self.last_burst = burst

    def summary(self, capture: str, limits: OpenBurstLimits) -> str | None:
        """One line for the end of a run, or None if nothing was evicted."""
        if not self.rounds:
            return None
        return (f"{capture}: {self.flows} flows ({self.packets} packets) of {self.bursts} "
                f"burst{'s' if self.bursts != 1 else ''} reported before their burst ended, "
                f"in {self.rounds} evictions, to stay within {limits.describe()}")


def iter_flow_blocks(
    source: str | os.PathLike[str],
    options: PipelineOptions,
    on_summary: Callable[[CaptureSummary], None] | None = None,
    on_progress: Callable[[CaptureReader], None] | None = None,
) -> Iterator[FlowBlock]:
    """The flows of all bursts of one capture file (``-``: a pcap stream on standard input).

    ``on_progress`` is called with the reader after each batch of records (it exposes the
    position and size); ``on_summary`` receives the capture's :class:`CaptureSummary` once it
    has been read to the end.
    """
    with read_records(source) as reader:
        meter = FlowMeter(reader.name, options)
        for batch in reader:
            block = meter.push(batch)
            if block is not None:
                yield block
            if on_progress is not None:
                on_progress(reader)
        last = meter.close()
        if last is not None:
            yield last
        if on_summary is not None:
            on_summary(
                CaptureSummary(
                    capture=reader.name, read=reader.stats, decode=meter.decoder.stats,
                    packets=meter.packets, bursts=meter.bursts_done, flows=meter.flows,
                )
            )

