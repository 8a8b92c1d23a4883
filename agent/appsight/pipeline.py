"""The pipeline: capture -> records -> packets -> bursts -> flows, shared by every command.

Offline commands (``flows``, ``features``, ``train``, ``classify``) and the live agent use the
same stages; only the source of record batches and the clock that closes the last burst differ.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .addresses import NetworkMatcher
from .bursts import DEFAULT_BURST_GAP, BurstBlock, BurstSplitter
from .decode import Decoder, DecodeStats
from .flows import FlowTable, build_flows
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
    """Turns record batches of one capture or stream into bursts of flows."""

    def __init__(self, capture: str, options: PipelineOptions) -> None:
        self.capture = capture
        self.options = options
        self.decoder = Decoder(decapsulate=options.decapsulate)
        self.splitter = BurstSplitter(options.burst_gap)
        self.bursts_done = 0
        self.packets = 0
        self.flows = 0

    def _finish(self, block: BurstBlock | None) -> FlowBlock | None:
        if block is None:
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


def iter_all_flow_blocks(
    sources: Iterable[str | os.PathLike[str]],
    options: PipelineOptions,
    on_summary: Callable[[CaptureSummary], None] | None = None,
    on_progress: Callable[[CaptureReader], None] | None = None,
) -> Iterator[FlowBlock]:
    """Flow blocks of several captures, one capture after the other."""
    for source in sources:
        yield from iter_flow_blocks(source, options, on_summary, on_progress)
