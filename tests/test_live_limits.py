"""Caps on the open burst of a live run (``--max-flows``, ``--max-packets``), piece by piece.

What must hold: the flows evicted are the ones silent longest; they are reported as flows of
the open burst, whose number is kept even when nothing of it is left; nothing is lost or
counted twice (capped and uncapped runs report the same packets per burst and flow); batches
of a few packets do not cost more memory per packet than large ones; the queue between the
source thread and the main loop is bounded by bytes; bad caps are one-line errors.
"""

from __future__ import annotations

import io
import queue
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from appsight.bursts import BurstSplitter
from appsight.decode import Decoder
from appsight.errors import UsageError
from appsight.limits import OpenBurstLimits
from appsight.live import _END, _Inbox
from appsight.pipeline import FlowBlock, FlowMeter, PipelineOptions
from appsight.reader import RecordBatch
from appsight.report import flow_records, write_report
from capture_builder import DLT_EN10MB, record_batch
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
SECOND = 10**9
T0 = 1_700_000_000 * SECOND


def udp_frame(src: str, sport: int, dst: str, dport: int, size: int = 10) -> bytes:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    return bytes(Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / (b"x" * size))


def batch(packets: list[tuple[float, int]]) -> RecordBatch:
    """(seconds after T0, flow number) -> a record batch; flow k is 10.0.0.2:1000+k ->
    10.0.0.1:53, odd packets of a flow's list travel back."""
    frames = []
    seen: Counter[int] = Counter()
    for _, flow in packets:
        back = seen[flow] % 2 == 1
        seen[flow] += 1
        ends = (("10.0.0.1", 53), ("10.0.0.2", 1000 + flow))
        (src, sport), (dst, dport) = ends if back else ends[::-1]
        frames.append(udp_frame(src, sport, dst, dport))
    records = record_batch(frames, DLT_EN10MB)
    records.ts_ns = np.array([T0 + round(t * SECOND) for t, _ in packets], dtype=np.int64)
    return records


def flow_ports(block: FlowBlock) -> list[int]:
    return [max(r["sport"], r["dport"]) - 1000 for r in flow_records(block)]


# ------------------------------------------------------------------------- eviction
def test_evicts_the_flows_silent_longest_as_flows_of_the_open_burst() -> None:
    """Four flows, cap 3: the eviction leaves int(3 * 0.75) = 2, and takes the two whose
    last packet is oldest (not the two that started first). They are burst 0, marked early;
    the other two come at the end of burst 0."""
    meter = FlowMeter("t", PipelineOptions(), OpenBurstLimits(max_flows=3, max_packets=100))
    assert meter.push(batch([(0.0, 0), (0.1, 1), (0.2, 2), (0.3, 3), (0.4, 0), (0.5, 1)]))\
        is None
    early = meter.evict()
    assert early is not None
    assert sorted(flow_ports(early)) == [2, 3]  # flows 0 and 1 were active later
    assert early.first_burst == 0 and early.n_bursts == 1
    assert early.early == "more than 3 flows open"
    assert meter.evict() is None  # two left: below the cap
    rest = meter.close()
    assert rest is not None and rest.first_burst == 0 and not rest.early
    assert sorted(flow_ports(rest)) == [0, 1]
    assert meter.evictions.flows == 2 and meter.evictions.packets == 2
    assert meter.evictions.rounds == 1 and meter.evictions.bursts == 1


def test_packet_cap_can_take_a_whole_burst_which_keeps_its_number() -> None:
    """One flow passing the packet cap is evicted whole; the burst stays open and empty, the
    clock (or a silence) still ends it, and the next burst is number 1."""
    meter = FlowMeter("t", PipelineOptions(), OpenBurstLimits(max_flows=10, max_packets=4))
    meter.push(batch([(i * 0.1, 7) for i in range(5)]))
    early = meter.evict()
    assert early is not None and early.early == "more than 4 packets held"
    assert early.flows.packet_count == 5 and meter.splitter.open_packets == 0
    assert meter.splitter.last_packet_ts == T0 + round(0.4 * SECOND)  # still open
    # A silence ends the empty burst 0; the packet after it opens burst 1.
    assert meter.push(batch([(3.0, 8)])) is None
    assert meter.bursts_done == 1
    last = meter.close()
    assert last is not None and last.first_burst == 1 and flow_ports(last) == [8]
    assert meter.bursts_done == 2


def test_clock_closing_an_emptied_burst_counts_it() -> None:
    meter = FlowMeter("t", PipelineOptions(), OpenBurstLimits(max_flows=10, max_packets=1))
    meter.push(batch([(0.0, 1), (0.1, 1)]))
    assert meter.evict() is not None
    assert meter.close() is None  # nothing left to report ...
    assert meter.bursts_done == 1  # ... but burst 0 has ended
    assert meter.splitter.last_packet_ts is None


def test_no_limits_no_eviction() -> None:
    """Offline meters have no limits: evict() never takes anything."""
    meter = FlowMeter("t", PipelineOptions())
    meter.push(batch([(i * 0.01, i) for i in range(50)]))
    assert meter.evict() is None
    assert meter.splitter.open_packets == 50


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 0.6), st.integers(0, 12)), min_size=1, max_size=60),
    st.integers(1, 6), st.integers(1, 25), st.integers(1, 9),
)
def test_capped_and_uncapped_runs_report_the_same_packets(
    steps: list[tuple[float, int]], max_flows: int, max_packets: int, chunk: int
) -> None:
    """Whatever the caps and batches: every packet is reported exactly once, in the burst
    an uncapped run puts it in, with its flow (a flow cut by an eviction is reported in
    parts, whose packets and bytes add up)."""
    t = 0.0
    packets = []
    for delta, flow in steps:  # deltas up to 0.6 s; some gaps > 0.5 s end bursts
        t += delta
        packets.append((t, flow))

    def run(limits: OpenBurstLimits | None) -> Counter:
        meter = FlowMeter("t", PipelineOptions(burst_gap=0.5), limits)
        totals: Counter = Counter()

        def take(block: FlowBlock | None) -> None:
            if block is not None:
                for r in flow_records(block):
                    key = (r["burst"], max(r["sport"], r["dport"]))
                    totals[(*key, "packets")] += r["packets_fwd"] + r["packets_bwd"]
                    totals[(*key, "bytes")] += r["bytes_fwd"] + r["bytes_bwd"]

        for i in range(0, len(packets), chunk):
            take(meter.push(batch(packets[i : i + chunk])))
            take(meter.evict())
            if limits is not None:
                assert meter.splitter.open_packets <= limits.max_packets
        take(meter.close())
        return totals

    assert run(OpenBurstLimits(max_flows, max_packets)) == run(None)


def test_report_header_says_a_block_is_early() -> None:
    meter = FlowMeter("t", PipelineOptions(), OpenBurstLimits(max_flows=1, max_packets=100))
    meter.push(batch([(0.0, 1), (0.1, 2)]))
    early = meter.evict()
    assert early is not None
    out = io.StringIO()
    write_report(early, out)
    header = out.getvalue().splitlines()[0]
    assert header.startswith("== t  burst 0 ")
    assert header.endswith("(reported early, burst still open: more than 1 flows open)")


def test_summary_line() -> None:
    meter = FlowMeter("cap", PipelineOptions(), OpenBurstLimits(max_flows=1, max_packets=100))
    assert meter.evictions.summary("cap", meter.limits) is None
    meter.push(batch([(0.0, 1), (0.1, 2)]))
    meter.evict()
    line = meter.evictions.summary("cap", meter.limits)
    assert line == ("cap: 2 flows (2 packets) of 1 burst reported before their burst ended, "
                    "in 1 evictions, to stay within --max-flows 1, --max-packets 100")


def test_limits_must_be_positive() -> None:
    with pytest.raises(UsageError, match="--max-flows must be at least 1"):
        OpenBurstLimits(max_flows=0)
    with pytest.raises(UsageError, match="--max-packets must be at least 1"):
        OpenBurstLimits(max_packets=-5)


@pytest.mark.parametrize("option", ["--max-flows", "--max-packets"])
def test_bad_cap_on_the_command_line_is_one_error_line(option: str) -> None:
    done = subprocess.run([sys.executable, "-m", "appsight", "live", "-", option, "0"],
                          input=b"", capture_output=True, timeout=60, cwd=REPO, check=False)
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        f"appsight: error: {option} must be at least 1, not 0"]


# ---------------------------------------------------------------------------- memory
def _held_bytes_per_packet(batch_size: int, total: int = 16384) -> float:
    records = batch([(i * 0.001, i % 50) for i in range(batch_size)])
    splitter = BurstSplitter(1.0)
    packets = Decoder().decode(records)
    tracemalloc.start()
    try:
        for i in range(total // batch_size):
            one = packets.take(np.arange(batch_size))  # a copy, as each decoded batch is
            one.ts_ns = one.ts_ns + i * batch_size * 1_000_000
            splitter.push(one)
            del one  # only the splitter holds packets now
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert splitter.open_packets == total // batch_size * batch_size
    return held / splitter.open_packets


def test_small_batches_cost_no_more_per_packet_than_large_ones() -> None:
    """An interface at a few thousand packets/s hands on a batch per packet or two. Unmerged,
    each held packet cost ~1.4 kB of array headers; merged, it costs its 84 bytes (fixed
    overheads spread over 16k packets)."""
    large = _held_bytes_per_packet(4096)
    assert large < 90
    for size in (1, 3, 16):
        assert _held_bytes_per_packet(size) < large * 1.2


def test_open_since_and_take_open() -> None:
    """The views of the open burst that eviction uses agree with its packets."""
    packets = Decoder().decode(batch([(i * 0.01, i % 3) for i in range(40)]))
    splitter = BurstSplitter(1.0)
    for i in range(0, 40, 3):
        splitter.push(packets.take(slice(i, i + 3)))
    assert splitter.open_since(0).ts_ns.tolist() == packets.ts_ns.tolist()
    assert splitter.open_since(31).ts_ns.tolist() == packets.ts_ns[31:].tolist()
    assert len(splitter.open_since(40)) == 0
    generation = splitter.generation
    mask = np.arange(40) % 2 == 0
    taken = splitter.take_open(mask)
    assert taken.ts_ns.tolist() == packets.ts_ns[mask].tolist()
    assert splitter.open_batch().ts_ns.tolist() == packets.ts_ns[~mask].tolist()
    assert splitter.open_packets == 20 and splitter.generation != generation


# ------------------------------------------------------------------------------ inbox
def test_inbox_is_bounded_by_bytes() -> None:
    """A producer waits while the queued bytes would pass the bound; one item always fits,
    however large, and the end marker never waits."""
    inbox = _Inbox(max_bytes=100, max_items=10)
    inbox.put("a", 60)
    done = threading.Event()

    def produce() -> None:
        inbox.put("b", 60)  # 120 > 100: waits until "a" is taken
        done.set()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    time.sleep(0.2)
    assert not done.is_set() and inbox.queued_bytes == 60
    assert inbox.get(timeout=1) == "a"
    assert done.wait(2) and inbox.queued_bytes == 60
    inbox.put(_END)  # never waits, even when full
    assert inbox.get(timeout=1) == "b"
    assert inbox.get(timeout=1) is _END
    inbox.put("huge", 10_000)  # alone it always fits
    assert inbox.get(timeout=1) == "huge"
    with pytest.raises(queue.Empty):
        inbox.get(timeout=0.05)
