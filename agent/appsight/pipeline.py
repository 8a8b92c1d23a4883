"""The pipeline: capture -> records -> packets -> bursts -> flows, shared by every command.

Offline commands (``flows``, ``features``, ``train``, ``classify``) and the live agent use the
same stages; only the source of record batches and the clock that closes the last burst differ.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .addresses import NetworkMatcher
from .bursts import DEFAULT_BURST_GAP, BurstSplitter
from .decode import Decoder, DecodeStats
from .flows import FlowTable, build_flows
from .reader import ReadStats, RecordBatch, read_records


@dataclass(frozen=True)
class PipelineOptions:
    """How packets become flows: the settings a model must be trained and used with alike."""

    burst_gap: float | None = DEFAULT_BURST_GAP
    device: NetworkMatcher | None = None
    decapsulate: bool = True


@dataclass
class Burst:
    """The flows of one burst of one capture."""

    capture: str
    index: int
    flows: FlowTable


@dataclass
class CaptureSummary:
    """What happened while reading one capture: for the warning line and the report footer."""

    capture: str
    read: ReadStats
    decode: DecodeStats
    packets: int = 0
    bursts: int = 0
    flows: int = 0
    bytes_read: int = 0
    problems: list[str] = field(default_factory=list)

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

    def _finish(self, packets) -> Burst:
        table = build_flows(packets, self.options.device)
        burst = Burst(self.capture, self.bursts_done, table)
        self.bursts_done += 1
        self.flows += len(table)
        return burst

    def push(self, batch: RecordBatch) -> list[Burst]:
        """Decode a batch of records; return the bursts it completed."""
        packets = self.decoder.decode(batch)
        self.packets += len(packets)
        return [self._finish(b) for b in self.splitter.push(packets)]

    def close(self) -> Burst | None:
        """End the open burst (end of input, or the live clock saw the gap pass)."""
        packets = self.splitter.close()
        return None if packets is None else self._finish(packets)


def iter_bursts(
    source: str | os.PathLike[str],
    options: PipelineOptions,
    on_summary: Callable[[CaptureSummary], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[Burst]:
    """All bursts of one capture file (or ``-`` for a pcap stream on standard input).

    ``on_progress`` receives the number of bytes consumed so far; ``on_summary`` receives the
    capture's :class:`CaptureSummary` when it has been read to the end.
    """
    with read_records(source) as reader:
        meter = FlowMeter(reader.name, options)
        consumed = 0
        for batch in reader:
            yield from meter.push(batch)
            if on_progress is not None:
                consumed = int(batch.offset[-1] + batch.caplen[-1]) if len(batch) else consumed
                on_progress(len(batch))
        last = meter.close()
        if last is not None:
            yield last
        if on_summary is not None:
            on_summary(
                CaptureSummary(
                    capture=reader.name, read=reader.stats, decode=meter.decoder.stats,
                    packets=meter.packets, bursts=meter.bursts_done, flows=meter.flows,
                )  # fmt: skip
            )


def iter_all_bursts(
    sources: Iterable[str | os.PathLike[str]],
    options: PipelineOptions,
    on_summary: Callable[[CaptureSummary], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[Burst]:
    """Bursts of several captures, one capture after the other."""
    for source in sources:
        yield from iter_bursts(source, options, on_summary, on_progress)
