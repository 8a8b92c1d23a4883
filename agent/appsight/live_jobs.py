"""The two jobs that read an interface until they are stopped: ``live`` reports (and
classifies) its bursts as they end, ``capture`` records it into rotating pcap files.

Both open the socket as root, then drop privileges, then say so on standard error; both end
on Ctrl-C or SIGTERM with their files closed and their counts printed; SIGUSR1 prints the
kernel's drop counters.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .limits import DEFAULT_MAX_FLOWS, DEFAULT_MAX_PACKETS, OpenBurstLimits
from .live import InterfaceSource, LiveMeter, drop_privileges, is_interface, stop_on_signals
from .pcapwriter import RotatingPcapWriter
from .pipeline import FlowBlock, PipelineOptions


@dataclass(frozen=True)
class LiveSettings:
    """How ``live`` (and ``flows IFACE``) reads its source and what it keeps beside the report."""

    max_flows: int = DEFAULT_MAX_FLOWS
    max_packets: int = DEFAULT_MAX_PACKETS
    bpf: str | None = None
    user: str | None = None
    write_pcap: str | None = None
    rotate_mb: float | None = None
    rotate_seconds: float | None = None


@dataclass(frozen=True)
class CaptureSettings:
    """What ``capture`` records and when it stops."""

    interface: str
    output: str
    label: str | None = None
    bpf: str | None = None
    rotate_mb: float | None = None
    rotate_seconds: float | None = None
    count: int | None = None
    duration: float | None = None
    user: str | None = None


def is_live(inputs: list[str]) -> bool:
    """One interface, or a stream on standard input: report bursts as the clock ends them."""
    return len(inputs) == 1 and (inputs[0] == "-" or is_interface(inputs[0]))


def warn(line: str) -> None:
    print(f"appsight: warning: {line}", file=sys.stderr, flush=True)


def _say(line: str) -> None:
    print(f"appsight: {line}", file=sys.stderr, flush=True)


def _megabytes(value: float | None) -> int | None:
    return None if value is None else int(value * 1_000_000)


def _report_drops_on_sigusr1(source: InterfaceSource) -> None:
    def report(_signum: int, _frame: object) -> None:
        _say(source.read_drops().line())

    signal.signal(signal.SIGUSR1, report)


def _open_as(source: InterfaceSource, user: str | None, writer: RotatingPcapWriter | None) -> None:
    """Drop root once the socket is open (the output folder stays writable) and say so."""
    dropped = drop_privileges(user, writable=writer.folder if writer else None,
                              made=writer is not None and writer.made_folder)
    if dropped:
        _say(f"running as {dropped}")


def run_live(
    source_name: str,
    make_sink: Callable[[], tuple[PipelineOptions, Callable[[FlowBlock], None]]],
    settings: LiveSettings,
) -> int:
    """Run an interface or a pcap stream through the live loop until the end or a signal.

    ``make_sink`` gives the pipeline settings and the sink; it loads the model, if any, so it
    is called only once the interface is open and root dropped (``--user``): a model file is
    never read as root.
    """
    limits = OpenBurstLimits(max_flows=settings.max_flows, max_packets=settings.max_packets)
    writer = None
    if settings.write_pcap:
        writer = RotatingPcapWriter(settings.write_pcap, linktype=1, prefix="live",
                                    rotate_bytes=_megabytes(settings.rotate_mb),
                                    rotate_seconds=settings.rotate_seconds)
    lock = threading.Lock()

    def keep_frames(frames: list[tuple[int, int, bytes]], linktype: int) -> None:
        assert writer is not None
        with lock:
            writer.set_linktype(linktype)
            writer.write(frames)

    meter: LiveMeter | None = None
    source = None
    try:
        if source_name != "-":
            source = InterfaceSource(source_name, bpf=settings.bpf)
            _report_drops_on_sigusr1(source)
            _open_as(source, settings.user, writer)
        options, handle = make_sink()
        meter = LiveMeter(options, handle, keep_frames if writer else None, limits, warn)
        stop_on_signals(meter.stop)
        if source is None:
            meter.run_stream("-")
        else:
            # Supervisors wait for this line: from here on no packet of the interface is missed.
            _say(f"listening on {source_name}")
            meter.run_interface(source)
    except KeyboardInterrupt:
        if meter is not None:
            meter.stop.set()
    finally:
        if writer is not None:
            with lock:
                writer.close()
            _say(f"wrote {writer.stats.packets} packets to {writer.stats.files} "
                 f"files in {settings.write_pcap}")
        evicted = (meter.meter.evictions.summary(meter.meter.capture, limits)
                   if meter is not None and meter.meter is not None else None)
        if evicted:
            _say(evicted)
        if source is not None:
            _say(source.read_drops().line())
            source.close()
    return 0


def record_interface(settings: CaptureSettings) -> int:
    """Record an interface into rotating pcap files until a count, a duration or a signal."""
    source = InterfaceSource(settings.interface, bpf=settings.bpf)
    _report_drops_on_sigusr1(source)
    writer = RotatingPcapWriter(
        settings.output, linktype=source.linktype, label=settings.label,
        rotate_bytes=_megabytes(settings.rotate_mb), rotate_seconds=settings.rotate_seconds,
    )
    _open_as(source, settings.user, writer)
    stop = threading.Event()
    stop_on_signals(stop)
    count = settings.count
    deadline = None if settings.duration is None else time.monotonic() + settings.duration
    print(f"appsight: capturing on {settings.interface} into {settings.output} "
          "(Ctrl-C to stop)", file=sys.stderr)
    try:
        for frames in source.frames(stop):  # after a stop, it drains the socket, then ends
            if count is not None:
                frames = frames[: max(count - writer.stats.packets, 0)]
            writer.write(frames)
            writer.rotate_if_due()
            if count is not None and writer.stats.packets >= count:
                break
            if deadline is not None and time.monotonic() >= deadline:
                stop.set()
    except KeyboardInterrupt:  # a signal before the handlers were in place
        pass
    finally:
        writer.close()
        print(f"appsight: wrote {writer.stats.packets} packets ({writer.stats.bytes} bytes) "
              f"to {writer.stats.files} files in {settings.output}; "
              f"{source.read_drops().line()}", file=sys.stderr)
        source.close()
    return 0
