"""Live sources and the burst clock: the same pipeline, fed as packets arrive.

A live source runs in its own thread and hands the main loop :class:`RecordBatch` objects
of whatever arrived in the last few milliseconds. The main loop feeds them to the same
:class:`~appsight.pipeline.FlowMeter` that offline commands use, and checks every
0.1 s (``CLOCK_TICK``) whether the newest packet is older than the burst gap; if so it closes
the burst at once (nfstream's flows never expire in live mode when no packet arrives; a
clock avoids that).

Two sources: a network interface, read with scapy's raw ``AF_PACKET`` socket path (no
dissection per packet), and a pcap stream (a file or ``-``, e.g. ``tcpdump -U -w -`` over
ssh). For an interface the clock compares the kernel's packet timestamps with the local wall
clock; for a stream, whose timestamps may come from another machine's clock, it measures the
silence since the last batch arrived.

Traffic that never pauses for the burst gap makes a burst that never ends; a live run caps
what its open burst holds and reports the flows silent longest early when a cap is passed
(:mod:`appsight.limits`). The queue between the source thread and the main loop is bounded
in bytes, so a busy main loop cannot pile up the source's batches either.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import queue
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AppsightError
from .limits import OpenBurstLimits
from .pipeline import FlowBlock, FlowMeter, PipelineOptions
from .reader import RecordBatch, read_records

CLOCK_TICK = 0.1  # seconds between burst-clock checks: a burst is reported within 0.1 s
BATCH_SECONDS = 0.05  # an interface source hands on what it has at least this often
BATCH_PACKETS = 4096
#: After a stop, the packets the kernel had queued by then are read and handed on, for at most
#: this long: at the scapy path's 100 k packets/s, far more than a 64 MB socket buffer holds.
DRAIN_SECONDS = 10.0
INBOX_BYTES = 64 << 20  # record data waiting for the main loop, at most (see _Inbox)
INBOX_ITEMS = 256
#: A stream is read in chunks of at most this much (offline: 8 MB). The open burst's caps are
#: checked after each batch, so a batch's new flows are what a cap can be passed by.
STREAM_CHUNK_BYTES = 1 << 20
SOL_PACKET, PACKET_STATISTICS = 263, 6
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
DLT_EN10MB, DLT_RAW = 1, 101
#: ARPHRD types whose AF_PACKET frames start with an Ethernet header, and those without any.
ETHERNET_HATYPES = {1, 772}  # Ethernet, loopback
RAW_IP_HATYPES = {512, 776, 778, 65534}  # PPP, sit, GRE, none (tun, wireguard)


class LiveSourceError(AppsightError):
    """An interface that cannot be opened, or lost while reading."""


@dataclass
class DropCounters:
    """The kernel's counters for the capture socket (PACKET_STATISTICS), summed over reads."""

    received: int = 0
    dropped: int = 0
    #: Queued by the kernel before the stop, but not read within DRAIN_SECONDS of it.
    unread: int = 0

    def line(self) -> str:
        text = f"kernel: {self.received} packets received by the socket, {self.dropped} dropped"
        if self.unread:
            text += (f", {self.unread} queued before the stop but not read within "
                     f"{DRAIN_SECONDS:g} s of it")
        return text


_END = object()


class _Inbox:
    """The queue from the source thread to the main loop, bounded by bytes as well as items.

    Bounded by count alone (256 batches: up to 4096 frames each from an interface, a chunk
    of the stream from a stream) it could hold gigabytes while the main loop is busy (a large
    burst ending, an eviction, a slow model). Bounded by bytes, a busy main loop stalls the
    source instead: frames wait in the socket buffer (the kernel counts any it has to drop),
    a stream's writer waits. One item always fits, however large.
    """

    def __init__(self, max_bytes: int = INBOX_BYTES, max_items: int = INBOX_ITEMS) -> None:
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._items: collections.deque[tuple[object, int]] = collections.deque()
        self._bytes = 0
        self._changed = threading.Condition()

    def put(self, item: object, size: int = 0) -> None:
        """Queue ``item`` (``size`` bytes), waiting while the queue is full; _END never waits."""
        with self._changed:
            while self._items and item is not _END and (
                self._bytes + size > self.max_bytes or len(self._items) >= self.max_items
            ):
                self._changed.wait()
            self._items.append((item, size))
            self._bytes += size
            self._changed.notify_all()

    def get(self, timeout: float = 0.0) -> object:
        """The oldest item; :class:`queue.Empty` if none arrives within ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._items, timeout):
                raise queue.Empty
            item, size = self._items.popleft()
            self._bytes -= size
            self._changed.notify_all()
            return item

    @property
    def queued_bytes(self) -> int:
        return self._bytes


class InterfaceSource:
    """Frames of one network interface, as record batches, from a background thread."""

    def __init__(self, iface: str, bpf: str | None = None, snaplen: int = 262_144) -> None:
        import logging

        from scapy.arch.linux import L2ListenSocket
        from scapy.error import Scapy_Exception

        # scapy warns when it cannot name the link layer; appsight decodes frames itself.
        logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

        self.name = iface
        self.snaplen = snaplen
        self.drops = DropCounters()
        self.taken = 0  # packets taken off the socket (the kernel's received, less its drops)
        self._stopped = False  # after a stop the counters stay as they were at the stop
        try:
            self.socket = L2ListenSocket(iface=iface, filter=bpf, promisc=True)
        except PermissionError:
            raise LiveSourceError(
                f"{iface}: capturing needs root or the CAP_NET_RAW capability "
                "(see docs/live.md, 'Permissions')"
            ) from None
        except OSError as exc:
            raise LiveSourceError(f"{iface}: cannot capture: {exc.strerror or exc}") from None
        except (Scapy_Exception, ValueError) as exc:  # ValueError: no such interface
            raise LiveSourceError(f"{iface}: cannot capture: {exc}") from None
        with contextlib.suppress(OSError):  # a large buffer rides out bursts of traffic
            self.socket.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
            # As root, beyond net.core.rmem_max (which caps SO_RCVBUF, 416 kB by default).
            self.socket.ins.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        hatype = self.socket.ins.getsockname()[3]
        self.linktype = DLT_RAW if hatype in RAW_IP_HATYPES else DLT_EN10MB

    def read_drops(self) -> DropCounters:
        """Add the kernel's counters since the last call (reading resets them); after a stop,
        the counters as they were at the stop (what arrives later is not this run's)."""
        if self._stopped:
            return self.drops
        try:
            raw = self.socket.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return self.drops
        packets, dropped = struct.unpack("II", raw)
        self.drops.received += packets
        self.drops.dropped += dropped
        return self.drops

    def frames(self, stop: threading.Event) -> Iterator[list[tuple[int, int, bytes]]]:
        """Lists of (timestamp ns, length, frame), at least every BATCH_SECONDS while busy.

        When ``stop`` is set, the packets the kernel had queued by then (its counters say how
        many) are read and handed on before the generator ends; packets that arrive after the
        stop are not, so a stop ends a run even while packets keep arriving faster than they
        are read. What DRAIN_SECONDS did not leave time for is counted (``drops.unread``).
        """
        fd = self.socket.ins.fileno()
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], CLOCK_TICK)
            if not ready:
                yield []
                continue
            yield self._read_ready(fd, time.monotonic() + BATCH_SECONDS)
        drops = self.read_drops()
        self._stopped = True
        queued = max(drops.received - drops.dropped - self.taken, 0)
        give_up = time.monotonic() + DRAIN_SECONDS
        while queued and time.monotonic() < give_up:  # stopped: drain what was queued
            taken = self.taken
            rest = self._read_ready(fd, give_up, limit=queued)
            queued -= self.taken - taken
            if self.taken == taken:  # nothing left after all
                queued = 0
            if rest:
                yield rest
        drops.unread = queued

    def _read_ready(self, fd: int, deadline: float | None,
                    limit: int = BATCH_PACKETS) -> list[tuple[int, int, bytes]]:
        """Frames already waiting on the socket (until ``deadline``, or ``limit`` packets
        taken, at most BATCH_PACKETS)."""
        recv = self.socket.recv_raw
        batch: list[tuple[int, int, bytes]] = []
        limit = min(limit, BATCH_PACKETS)
        start = self.taken
        while self.taken - start < limit and select.select([fd], [], [], 0)[0]:
            try:
                _, frame, ts = recv(self.snaplen)
            except OSError as exc:
                raise LiveSourceError(f"{self.name}: capture failed: {exc.strerror}") from None
            self.taken += 1
            if frame is not None:
                stamp = round(ts * 1e9) if ts is not None else time.time_ns()
                batch.append((stamp, len(frame), frame))
            if deadline is not None and time.monotonic() > deadline:
                break
        return batch

    def close(self) -> None:
        self.socket.close()


def frames_to_batch(frames: list[tuple[int, int, bytes]], linktype: int) -> RecordBatch:
    """Pack (timestamp ns, original length, bytes) frames into one record batch."""
    lengths = np.fromiter((len(f) for _, _, f in frames), dtype=np.int64, count=len(frames))
    offset = np.zeros(len(frames), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offset[1:])
    data = np.frombuffer(b"".join(f for _, _, f in frames), dtype=np.uint8)
    return RecordBatch(
        data=data,
        offset=offset,
        caplen=lengths,
        wirelen=np.fromiter((w for _, w, _ in frames), dtype=np.int64, count=len(frames)),
        ts_ns=np.fromiter((t for t, _, _ in frames), dtype=np.int64, count=len(frames)),
        linktype=np.full(len(frames), linktype, dtype=np.int32),
    )


def is_interface(name: str) -> bool:
    """True for a network interface name that is not also a file or ``-``."""
    return name != "-" and not Path(name).exists() and Path("/sys/class/net", name).exists()


class LiveMeter:
    """Runs a source through the pipeline and the burst clock until stopped or exhausted.

    ``on_block`` receives each finished block of bursts, and the flows evicted from an open
    burst that passed one of ``limits`` (see :mod:`appsight.limits`); ``on_frames``
    (optional) every list of frames as it arrives, for writing them to disk as well. ``warn``
    gets one line for each burst that has flows evicted, at its first eviction.
    """

    def __init__(
        self,
        options: PipelineOptions,
        on_block: Callable[[FlowBlock], None],
        on_frames: Callable[[list[tuple[int, int, bytes]], int], None] | None = None,
        limits: OpenBurstLimits | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.on_block = on_block
        self.on_frames = on_frames
        self.limits = limits or OpenBurstLimits()
        self.warn = warn or (lambda _line: None)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.meter: FlowMeter | None = None  # the run's meter, for its counters at the end
        self._warned_burst = -1  # the last burst a warning line was printed for

    # ----------------------------------------------------------- producers
    def _produce_interface(self, source: InterfaceSource, out: _Inbox) -> None:
        try:
            for frames in source.frames(self.stop):
                if frames:
                    if self.on_frames is not None:
                        self.on_frames(frames, source.linktype)
                    batch = frames_to_batch(frames, source.linktype)
                    out.put(batch, batch.data.nbytes)
                else:
                    out.put(None)  # a tick: lets the clock run while nothing arrives
        except BaseException as exc:  # handed to the main thread, which reports it
            self.error = exc
        finally:
            out.put(_END)

    def _produce_stream(self, path: str, out: _Inbox, chunk_bytes: int) -> None:
        try:
            with read_records(path, chunk_bytes) as reader:
                for batch in reader:
                    if self.stop.is_set():
                        break
                    if self.on_frames is not None and len(batch):
                        for linktype, frames in _frames_by_linktype(batch):
                            self.on_frames(frames, linktype)
                    out.put(batch, batch.data.nbytes)
        except BaseException as exc:
            self.error = exc
        finally:
            out.put(_END)

    # ---------------------------------------------------------------- loop
    def run_interface(self, source: InterfaceSource) -> FlowMeter:
        return self._run(source.name, "packet",
                         lambda q: self._produce_interface(source, q))

    def run_stream(self, path: str, chunk_bytes: int = STREAM_CHUNK_BYTES) -> FlowMeter:
        name = "stdin" if path == "-" else Path(path).name
        return self._run(name, "arrival", lambda q: self._produce_stream(path, q, chunk_bytes))

    def _push(self, meter: FlowMeter, batch: RecordBatch) -> None:
        """Feed one batch; report the bursts it ended, then any flows evicted from the open
        burst (in that order: the evicted flows belong to the burst after those)."""
        block = meter.push(batch)
        if block is not None:
            self.on_block(block)
        early = meter.evict()
        if early is not None:
            if early.first_burst != self._warned_burst:  # one line per burst
                self._warned_burst = early.first_burst
                self.warn(f"{early.capture}: burst {early.first_burst}: {early.early}: its "
                          f"flows silent longest are reported before it ends ("
                          f"{self.limits.describe()}; evictions are counted at the end)")
            self.on_block(early)

    def _run(self, name: str, clock: str, produce: Callable[[_Inbox], None]) -> FlowMeter:
        meter = FlowMeter(name, self.options, self.limits)
        self.meter = meter
        self._warned_burst = -1
        gap = self.options.burst_gap
        inbox = _Inbox(INBOX_BYTES)
        thread = threading.Thread(target=produce, args=(inbox,), name="appsight-source",
                                  daemon=True)
        thread.start()
        last_arrival = time.monotonic()
        stopped_at = 0.0
        try:
            while True:
                try:
                    item = inbox.get(timeout=CLOCK_TICK)
                except queue.Empty:
                    item = None
                    if self.stop.is_set():
                        stopped_at = stopped_at or time.monotonic()
                        # An interface source drains and ends; a stream may block in a read.
                        if not thread.is_alive() or time.monotonic() - stopped_at > 0.5:
                            break
                except KeyboardInterrupt:  # Ctrl-C without a handler: report what arrived
                    self.stop.set()
                    break
                if item is _END:
                    break
                if item is not None and len(item):
                    self._push(meter, item)
                    last_arrival = time.monotonic()
                newest = meter.splitter.last_packet_ts
                if gap is not None and newest is not None:
                    silent = (time.time_ns() - newest) / 1e9 if clock == "packet" else (
                        time.monotonic() - last_arrival
                    )
                    if silent > gap:
                        block = meter.close()
                        if block is not None:
                            self.on_block(block)
        finally:
            self.stop.set()
            thread.join(timeout=2)
        while True:  # what the source handed on before it stopped
            try:
                item = inbox.get()
            except queue.Empty:
                break
            if item is not _END and item is not None and len(item):
                self._push(meter, item)
        block = meter.close()
        if block is not None:
            self.on_block(block)
        if self.error is not None and not isinstance(self.error, KeyboardInterrupt):
            raise self.error
        return meter


def _frames_by_linktype(batch: RecordBatch) -> list[tuple[int, list[tuple[int, int, bytes]]]]:
    """The batch's frames as (link type, frames) runs: a stream may change link type (a
    pcapng with several interfaces, pcaps one after another), a pcap file may not."""
    data = batch.data
    frames = [
        (int(t), int(w), data[o : o + c].tobytes())
        for t, w, o, c in zip(batch.ts_ns.tolist(), batch.wirelen.tolist(),
                              batch.offset.tolist(), batch.caplen.tolist(), strict=True)
    ]
    links = batch.linktype.tolist()
    cuts = [0, *(i for i in range(1, len(links)) if links[i] != links[i - 1]), len(links)]
    return [(int(links[a]), frames[a:b]) for a, b in itertools.pairwise(cuts)]


def drop_privileges(user: str | None, writable: Path | None = None,
                    made: bool = False) -> str | None:
    """After the socket is open: become ``user`` (or the sudo caller) if running as root.

    ``writable`` is a folder the process must still write to afterwards (capture files). Only
    a folder this run ``made`` is handed to the user (through a descriptor that follows no
    symbolic link); an existing one is never chowned, since it could be anything, a link to a
    system folder included: the user must be able to write there already. Returns the name
    of the user now in effect, or None if nothing changed.
    """
    if os.geteuid() != 0:
        return None
    import pwd

    name = user or os.environ.get("SUDO_USER")
    if not name or name == "root":
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise AppsightError(f"--user: no such user {name!r}") from None
    if writable is not None and made:
        try:
            fd = os.open(writable, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                os.fchown(fd, entry.pw_uid, entry.pw_gid)
            finally:
                os.close(fd)
        except OSError as exc:
            raise AppsightError(f"{writable}: cannot hand it to {name}: {exc.strerror}") from None
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if writable is not None and not os.access(writable, os.W_OK | os.X_OK):
        raise AppsightError(f"{writable}: {name} cannot write there, and an existing folder "
                            f"is not handed over: give a new folder, or one {name} can write to")
    return name


def stop_on_signals(stop: threading.Event) -> None:
    """Ctrl-C and SIGTERM set ``stop``: the run ends at its next check, files closed, the
    socket drained, the open burst reported."""
    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
