"""A long live run keeps its memory flat: 30 minutes of traffic that never falls silent.

The capture (:func:`long_capture`, built here with numpy around a frame made by scapy and
the pcap header of :mod:`capture_builder`) is one endless burst: a few long flows send a
packet every 0.1 s each, so the traffic never pauses for the 1 s burst gap, and many short
flows (a query and its answer 5 ms later) start beside them, 100 a second. Without caps the
live agent would hold every packet of the 30 minutes until the end of input; with them
(``--max-flows``, ``--max-packets``, :mod:`appsight.limits`) the flows silent longest are
reported early and what is held stays the same from the first minutes to the last.

Two runs through the live code path: :class:`~appsight.live.LiveMeter` in this process (its
stream source and main loop, traced with :mod:`tracemalloc`, batch by batch), and ``appsight
live -`` with the capture on standard input (its peak RSS after each half, its warning
lines). ``benchmarks/bench_live.py --memory`` measures the same capture, bigger, before and
after.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from appsight import live
from appsight.flows import flow_hash
from appsight.limits import OpenBurstLimits
from appsight.live import LiveMeter
from appsight.pipeline import FlowBlock, FlowMeter, PipelineOptions
from appsight.reader import RecordBatch, read_records
from capture_builder import DLT_EN10MB, pcap_header

REPO = Path(__file__).resolve().parent.parent
APPSIGHT = [sys.executable, "-m", "appsight"]
T0 = 1_700_000_000 * 10**9
SECOND = 10**9
MINUTES = 30
MAX_FLOWS = 2_000  # small caps, so that both are reached in the first minutes
MAX_PACKETS = 20_000
RSS_SLACK_MB = 6  # allowed growth of the peak RSS from the first half to the second
FEED_BYTES = 4 << 20  # written to `appsight live -` at a time (see _feed)


@dataclass(frozen=True)
class LongCapture:
    path: Path
    packets: int
    seconds: float
    short_flows: int
    long_flows: int


def long_capture(path: Path, minutes: float = MINUTES, short_per_second: int = 100,
                 long_flows: int = 8, long_interval: float = 0.1) -> LongCapture:
    """A pcap (nanosecond, Ethernet) of ``minutes`` of traffic that is never silent for 1 s.

    ``long_flows`` UDP flows between 10.0.0.2 and 198.18.0.200+k:443 send a packet every
    ``long_interval`` seconds for the whole capture, alternating direction; every
    1/``short_per_second`` s a new UDP flow from 10.0.0.2 to port 53 sends one packet and gets
    one back 5 ms later (its 5-tuple used only once). All frames are 60 bytes.
    """
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    seconds = minutes * 60
    n_short = int(seconds * short_per_second)
    starts = np.arange(n_short, dtype=np.int64) * SECOND // short_per_second
    per_long = int(seconds / long_interval)
    long_ts = np.arange(per_long, dtype=np.int64) * round(long_interval * SECOND)
    ts = np.concatenate([starts, starts + 5_000_000,
                         *(long_ts + k * 1_000_000 for k in range(long_flows))])
    is_long = np.repeat([False, True], [2 * n_short, per_long * long_flows])
    ident = np.concatenate([np.arange(n_short), np.arange(n_short),
                            np.repeat(np.arange(long_flows), per_long)])
    reply = np.concatenate([np.zeros(n_short, bool), np.ones(n_short, bool),
                            np.tile(np.arange(per_long) % 2 == 1, long_flows)])
    order = np.argsort(ts, kind="stable")
    ts, is_long, ident, reply = ts[order] + T0, is_long[order], ident[order], reply[order]

    template = np.frombuffer(bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="10.0.0.2", dst="198.18.0.1") / UDP(sport=1, dport=53) / (b"q" * 18)
    ), dtype=np.uint8)
    n, size = len(ts), len(template)
    records = np.empty((n, 16 + size), dtype=np.uint8)
    header = records[:, :16].view("<u4")
    header[:, 0], header[:, 1] = np.divmod(ts, SECOND)
    header[:, 2] = header[:, 3] = size
    frames = records[:, 16:]
    frames[:] = template
    server = np.empty((n, 4), dtype=np.uint8)
    server[:, :2] = (198, 18)
    server[:, 2] = (ident // 50_000) % 256
    server[:, 3] = np.where(is_long, 200 + ident, 1)
    device = np.array([10, 0, 0, 2], dtype=np.uint8)
    frames[:, 26:30] = np.where(reply[:, None], server, device)
    frames[:, 30:34] = np.where(reply[:, None], device, server)
    device_port = np.where(is_long, 50_000 + ident, 1024 + ident % 50_000)
    server_port = np.where(is_long, 443, 53)
    ports = np.stack([np.where(reply, server_port, device_port),
                      np.where(reply, device_port, server_port)], axis=1).astype(">u2")
    frames[:, 34:38] = ports.view(np.uint8).reshape(n, 4)
    with open(path, "wb") as out:
        out.write(pcap_header(DLT_EN10MB, nanos=True))
        out.write(records.tobytes())
    return LongCapture(path, n, seconds, n_short, long_flows)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> LongCapture:
    return long_capture(tmp_path_factory.mktemp("long") / "long.pcap")


def test_long_capture_is_one_burst_of_30_minutes(capture: LongCapture) -> None:
    """The capture is what the memory tests need: >= 30 min, never 1 s silent, and its
    flows as planned (offline, uncapped, it is one burst)."""
    meter = FlowMeter("long", PipelineOptions())
    with read_records(capture.path) as reader:
        for batch in reader:
            assert meter.push(batch) is None  # no silence: no burst ends
    block = meter.close()
    assert block is not None and block.n_bursts == 1
    flows = block.flows
    assert (int(flows.last_ts.max()) - int(flows.first_ts.min())) / SECOND >= 30 * 60 - 1
    assert len(flows) == capture.short_flows + capture.long_flows
    assert flows.packet_count == capture.packets


# ---------------------------------------------------------------- in process: LiveMeter
@dataclass(frozen=True)
class Reported:
    first_burst: int
    n_bursts: int
    flows: int
    packets: int
    early: str


@dataclass
class Trace:
    """What a traced live run held after each batch, by capture time."""

    ts: list[int] = field(default_factory=list)  # newest packet of the batch
    traced_peak: list[int] = field(default_factory=list)  # tracemalloc peak since the last
    held_packets: list[int] = field(default_factory=list)
    held_flows: list[int] = field(default_factory=list)
    batch_packets: list[int] = field(default_factory=list)
    blocks: list[Reported] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def report(self, block: FlowBlock) -> None:
        """The sink: keeps a summary of each block (keeping the blocks would grow)."""
        self.blocks.append(Reported(block.first_burst, block.n_bursts, len(block.flows),
                                    block.flows.packet_count, block.early))

    def halves(self, values: list[int]) -> tuple[int, int]:
        """The largest value in the first and in the second half of the capture time."""
        ts = np.asarray(self.ts)
        v = np.asarray(values)
        middle = (ts[0] + ts[-1]) // 2
        return int(v[ts <= middle].max()), int(v[ts > middle].max())


class TracedMeter(LiveMeter):
    """A LiveMeter that records, after every batch, the memory traced and what it holds."""

    def __init__(self, trace: Trace, limits: OpenBurstLimits | None) -> None:
        super().__init__(PipelineOptions(), trace.report, limits=limits,
                         warn=trace.warnings.append)
        self.trace = trace
        self.count_flows = limits is not None and limits.max_flows < 10**9

    def _push(self, meter: FlowMeter, batch: RecordBatch) -> None:
        super()._push(meter, batch)
        trace = self.trace
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        held = meter.splitter.open_batch()
        trace.ts.append(int(batch.ts_ns[-1]))
        trace.traced_peak.append(peak)
        trace.held_packets.append(len(held))
        if self.count_flows:  # exact, from the packets held (uncapped, that takes too long)
            trace.held_flows.append(len(np.unique(flow_hash(held))) if len(held) else 0)
        trace.batch_packets.append(len(batch))


def traced_run(path: Path, limits: OpenBurstLimits | None,
               monkeypatch: pytest.MonkeyPatch) -> tuple[Trace, FlowMeter]:
    """Replay ``path`` through LiveMeter's stream source in 64 KiB chunks (what a pipe
    delivers at a time), with at most 1 MB read ahead, so that what is traced is what the
    pipeline holds, not how far the reader got."""
    monkeypatch.setattr(live, "INBOX_BYTES", 1 << 20)
    trace = Trace()
    meter = TracedMeter(trace, limits)
    tracemalloc.start()
    try:
        flow_meter = meter.run_stream(str(path), chunk_bytes=64 << 10)
    finally:
        tracemalloc.stop()
    return trace, flow_meter


@pytest.mark.slow
def test_live_memory_stays_flat_over_30_minutes(capture: LongCapture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With caps, the second 15 minutes hold and trace no more than the first: peak traced
    memory within 10 % (+ 1 MB), held flows and packets within the caps (plus one batch, as
    caps are checked after each batch). Every packet is still reported, as flows of burst 0,
    and the run warns once (one burst) while counting every eviction."""
    limits = OpenBurstLimits(max_flows=MAX_FLOWS, max_packets=MAX_PACKETS)
    trace, meter = traced_run(capture.path, limits, monkeypatch)

    first, second = trace.halves(trace.traced_peak)
    assert second <= first * 1.1 + (1 << 20), (first, second)
    largest_batch = max(trace.batch_packets)
    assert max(trace.held_flows) <= MAX_FLOWS + largest_batch
    assert max(trace.held_packets) <= MAX_PACKETS + largest_batch
    for half in trace.halves(trace.held_packets):  # the caps are reached in both halves
        assert half > MAX_PACKETS * 0.75

    stats = meter.evictions
    assert stats.rounds >= 10 and stats.bursts == 1
    assert len(trace.warnings) == 1 and "burst 0" in trace.warnings[0]
    early = [b for b in trace.blocks if b.early]
    assert len(early) == stats.rounds
    assert sum(b.flows for b in early) == stats.flows
    assert {"more than 2000 flows open", "more than 20000 packets held"} == {
        b.early for b in early}
    assert sum(b.packets for b in trace.blocks) == capture.packets
    assert {int(b.first_burst) for b in trace.blocks} == {0}
    assert meter.bursts_done == 1


@pytest.mark.slow
def test_without_caps_the_same_run_grows(capture: LongCapture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the measure above does see growth. Uncapped, the open burst holds every
    packet, so the second half holds about twice what the first held."""
    limits = OpenBurstLimits(max_flows=10**9, max_packets=10**9)
    trace, meter = traced_run(capture.path, limits, monkeypatch)
    first, second = trace.halves(trace.held_packets)
    assert second > 1.9 * first
    first, second = trace.halves(trace.traced_peak)
    assert second > 1.5 * first, (first, second)
    assert meter.evictions.rounds == 0


# ----------------------------------------------------------- a process: appsight live -
def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {key} for {pid}")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _wait_idle(pid: int, quiet: float = 0.3, timeout: float = 60.0) -> None:
    """Until the process has used no CPU for ``quiet`` seconds (it has read all it got)."""
    deadline = time.monotonic() + timeout
    last = _cpu_ticks(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = _cpu_ticks(pid)
        if now == last:
            return
        last = now
    raise AssertionError("the agent stayed busy")


def _feed(proc: subprocess.Popen[bytes], data: bytes, step: int = FEED_BYTES) -> None:
    """Write ``data`` to the agent ``step`` bytes at a time, each once it has read the last.

    The agent reads ahead of its pipeline (up to live.INBOX_BYTES). Written at once, how much
    of a half sits read but not yet processed depends on how the scheduler treats the two
    processes, and that read-ahead, not the pipeline, decided the peak on a busy machine."""
    assert proc.stdin is not None
    for start in range(0, len(data), step):
        proc.stdin.write(data[start : start + step])
        proc.stdin.flush()
        _wait_idle(proc.pid)


@pytest.mark.slow
def test_appsight_live_stdin_peak_rss_flat(capture: LongCapture) -> None:
    """`appsight live - --max-flows 2000 --max-packets 20000 --json` (no model) on the
    capture, written to its standard input half by half (4 MB at a time): its peak RSS after
    the second half is at most RSS_SLACK_MB above its peak after the first (measured beside a
    CPU hog: 0-1 MB; uncapped it grows by 25-42 MB); it prints one warning line for the burst
    and the eviction count at exit, and its flows hold every packet."""
    data = capture.path.read_bytes()
    record = (len(data) - 24) // capture.packets
    half = 24 + capture.packets // 2 * record
    proc = subprocess.Popen(
        [*APPSIGHT, "live", "-", "--json", "--max-flows", str(MAX_FLOWS), "--max-packets",
         str(MAX_PACKETS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdin is not None and proc.stdout is not None
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    reader.start()
    try:
        _feed(proc, data[:half])
        first = _status_mb(proc.pid, "VmHWM")
        _feed(proc, data[half:])
        second = _status_mb(proc.pid, "VmHWM")
    finally:
        proc.stdin.close()
        err = proc.stderr.read().decode() if proc.stderr else ""
        proc.wait(timeout=60)
        reader.join(timeout=10)
    assert proc.returncode == 0, err
    assert second <= first + RSS_SLACK_MB, (first, second)
    warnings = [line for line in err.splitlines() if line.startswith("appsight: warning:")]
    assert len(warnings) == 1 and "stdin: burst 0: more than" in warnings[0], err
    summary = [line for line in err.splitlines() if "reported before their burst ended" in line]
    assert len(summary) == 1, err
    rows = [line for line in out[0].splitlines() if line.strip()]
    packets = sum(r["packets_fwd"] + r["packets_bwd"] for r in map(json.loads, rows))
    assert packets == capture.packets
    early_flows = int(summary[0].split(": ", 2)[2].split()[0])
    assert 0 < early_flows < len(rows)


def test_record_layout(capture: LongCapture) -> None:
    """The builder's records are what the tests above assume: 16-byte headers, equal sizes."""
    with open(capture.path, "rb") as handle:
        handle.seek(24)
        seconds, nanos, caplen, wirelen = struct.unpack("<IIII", handle.read(16))
    assert caplen == wirelen == (capture.path.stat().st_size - 24) // capture.packets - 16
    assert seconds * SECOND + nanos == T0
