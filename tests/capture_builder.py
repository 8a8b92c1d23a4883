"""Synthetic captures for the tests, written byte by byte.

The reader has to be tested against layouts that real captures rarely show together (both
byte orders, several interfaces with their own clock resolution, obsolete block types,
truncation at any byte), so the files are built here with :mod:`struct` from the published
formats (pcap: the libpcap file format; pcapng: draft-ietf-opsawg-pcapng) rather than with
a library that would share the reader's assumptions. Frames themselves are built with scapy
layers by the tests; this module only frames them into captures and reads them back.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from appsight.addresses import pairs_to_addresses
from appsight.decode import Decoder, DecodeStats, PacketBatch
from appsight.reader import ReadStats, RecordBatch, read_records

LITTLE, BIG = "<", ">"

# Link types used by the tests (https://www.tcpdump.org/linktypes.html).
DLT_NULL, DLT_EN10MB, DLT_PPP, DLT_RAW_BSD, DLT_RAW = 0, 1, 9, 12, 101
DLT_C_HDLC, DLT_LOOP, DLT_LINUX_SLL, DLT_PPI = 104, 108, 113, 192
DLT_IPV4, DLT_IPV6, DLT_LINUX_SLL2 = 228, 229, 276

# pcapng block types.
BLOCK_SHB, BLOCK_IDB, BLOCK_PB, BLOCK_SPB, BLOCK_NRB, BLOCK_ISB, BLOCK_EPB = (
    0x0A0D0D0A, 1, 2, 3, 4, 5, 6,
)


@dataclass(frozen=True)
class Packet:
    """One capture record as the tests mean it: time, captured bytes, original length."""

    ts_ns: int
    data: bytes
    wirelen: int | None = None

    @property
    def orig_len(self) -> int:
        return len(self.data) if self.wirelen is None else self.wirelen


@dataclass(frozen=True)
class Record:
    """A record as the reader returned it, in a form that compares with ``==``."""

    ts_ns: int
    caplen: int
    wirelen: int
    linktype: int
    data: bytes


# --------------------------------------------------------------------- classic pcap
def pcap_header(
    linktype: int, *, nanos: bool = False, order: str = LITTLE, snaplen: int = 262_144
) -> bytes:
    """The 24-byte pcap file header; the magic number written in ``order`` sets the byte order."""
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    return struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(packet: Packet, *, nanos: bool = False, order: str = LITTLE) -> bytes:
    """One record header plus its bytes; µs captures must be given whole microseconds."""
    seconds, frac_ns = divmod(packet.ts_ns, 1_000_000_000)
    if nanos:
        frac = frac_ns
    else:
        assert frac_ns % 1000 == 0, "a microsecond capture cannot hold this timestamp"
        frac = frac_ns // 1000
    header = struct.pack(order + "IIII", seconds, frac, len(packet.data), packet.orig_len)
    return header + packet.data


def pcap_bytes(
    packets: Iterable[Packet],
    linktype: int = DLT_EN10MB,
    *,
    nanos: bool = False,
    order: str = LITTLE,
    snaplen: int = 262_144,
) -> bytes:
    """A whole classic pcap file."""
    parts = [pcap_header(linktype, nanos=nanos, order=order, snaplen=snaplen)]
    parts += [pcap_record(p, nanos=nanos, order=order) for p in packets]
    return b"".join(parts)


def write_pcap(path: Path, packets: Iterable[Packet], linktype: int = DLT_EN10MB,
               **kwargs: object) -> Path:
    """Write :func:`pcap_bytes` to ``path`` and return it (for one-line test setup)."""
    path.write_bytes(pcap_bytes(packets, linktype, **kwargs))  # type: ignore[arg-type]
    return path


# --------------------------------------------------------------------------- pcapng
def pcapng_option(code: int, value: bytes, order: str = LITTLE) -> bytes:
    """One option: code, length, value padded to 32 bits."""
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def end_of_options(order: str = LITTLE) -> bytes:
    return struct.pack(order + "HH", 0, 0)


def pcapng_block(block_type: int, body: bytes, order: str = LITTLE) -> bytes:
    """A generic block: type, total length, body padded to 32 bits, total length again."""
    body = body + b"\0" * (-len(body) % 4)
    total = 12 + len(body)
    return struct.pack(order + "II", block_type, total) + body + struct.pack(order + "I", total)


def tsresol_ticks(ts_ns: int, tsresol: int) -> int:
    """A time in ns as a tick count at an ``if_tsresol`` (exact for the tests' values)."""
    return int(Fraction(ts_ns, 1_000_000_000) / tick_seconds(tsresol))


def tick_seconds(tsresol: int) -> Fraction:
    """Seconds per tick for an ``if_tsresol`` byte: 10^-n, or 2^-n when the top bit is set."""
    exponent = tsresol & 0x7F
    return Fraction(1, 2**exponent) if tsresol & 0x80 else Fraction(1, 10**exponent)


def ticks_to_ns(ticks: int, tsresol: int, tsoffset: int = 0) -> int:
    """The exact time in ns (rounded down) that ``ticks`` stand for, plus ``if_tsoffset``."""
    return int(ticks * tick_seconds(tsresol) * 1_000_000_000) + tsoffset * 1_000_000_000


class PcapngBuilder:
    """Appends pcapng blocks in order; every block uses the byte order of its section.

    Interfaces are numbered per section, as in the format; :meth:`interface` returns the
    number to use in packet blocks.
    """

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.order = LITTLE
        self.interfaces = 0

    def section(self, order: str = LITTLE, options: bytes = b"") -> PcapngBuilder:
        """A section header block; the byte-order magic is written in ``order``."""
        self.order = order
        self.interfaces = 0
        body = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1) + options
        self.parts.append(pcapng_block(BLOCK_SHB, body, order))
        return self

    def interface(
        self,
        linktype: int,
        *,
        tsresol: int | None = None,
        tsoffset: int | None = None,
        snaplen: int = 0,
        name: str | None = None,
    ) -> int:
        """An interface description block with optional ``if_tsresol``/``if_tsoffset``."""
        o = self.order
        options = b""
        if name is not None:
            options += pcapng_option(2, name.encode(), o)
        if tsresol is not None:
            options += pcapng_option(9, bytes([tsresol]), o)
        if tsoffset is not None:
            options += pcapng_option(14, struct.pack(o + "q", tsoffset), o)
        if options:
            options += end_of_options(o)
        body = struct.pack(o + "HHI", linktype, 0, snaplen) + options
        self.parts.append(pcapng_block(BLOCK_IDB, body, o))
        self.interfaces += 1
        return self.interfaces - 1

    def enhanced(self, iface: int, ticks: int, data: bytes, wirelen: int | None = None,
                 options: bytes = b"") -> PcapngBuilder:
        """An enhanced packet block (type 6) with a 64-bit tick count."""
        o = self.order
        head = struct.pack(o + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                           len(data) if wirelen is None else wirelen)
        body = head + data + b"\0" * (-len(data) % 4) + options
        self.parts.append(pcapng_block(BLOCK_EPB, body, o))
        return self

    def obsolete(self, iface: int, ticks: int, data: bytes, wirelen: int | None = None,
                 drops: int = 0) -> PcapngBuilder:
        """An obsolete packet block (type 2): 16-bit interface id followed by a drops count."""
        o = self.order
        head = struct.pack(o + "HHIIII", iface, drops, ticks >> 32, ticks & 0xFFFFFFFF,
                           len(data), len(data) if wirelen is None else wirelen)
        self.parts.append(pcapng_block(BLOCK_PB, head + data, o))
        return self

    def simple(self, data: bytes, wirelen: int | None = None) -> PcapngBuilder:
        """A simple packet block (type 3): no time, no interface id, no captured length."""
        o = self.order
        head = struct.pack(o + "I", len(data) if wirelen is None else wirelen)
        self.parts.append(pcapng_block(BLOCK_SPB, head + data, o))
        return self

    def other(self, block_type: int, body: bytes = b"\0" * 8) -> PcapngBuilder:
        """Any other block (statistics, name resolution, custom...): readers must skip it."""
        self.parts.append(pcapng_block(block_type, body, self.order))
        return self

    def raw(self, data: bytes) -> PcapngBuilder:
        """Bytes appended as they are (for deliberately broken files)."""
        self.parts.append(data)
        return self

    def to_bytes(self) -> bytes:
        return b"".join(self.parts)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.to_bytes())
        return path


# --------------------------------------------------------------------------- reading
def read_all(path: str | Path, chunk_bytes: int | None = None) -> tuple[list[Record], ReadStats]:
    """Every record of a capture as :class:`Record` values, plus the reader's statistics."""
    kwargs = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
    out: list[Record] = []
    with read_records(path, **kwargs) as reader:
        for batch in reader:
            out.extend(batch_records(batch))
        return out, reader.stats


def batch_records(batch: RecordBatch) -> list[Record]:
    return [
        Record(int(batch.ts_ns[i]), int(batch.caplen[i]), int(batch.wirelen[i]),
               int(batch.linktype[i]), batch.packet(i))
        for i in range(len(batch))
    ]


def expected_records(packets: Sequence[Packet], linktype: int) -> list[Record]:
    """What a correct reader returns for ``packets`` written into a capture."""
    return [Record(p.ts_ns, len(p.data), p.orig_len, linktype, p.data) for p in packets]


# -------------------------------------------------------------------------- decoding
@dataclass(frozen=True)
class Decoded:
    """One decoded packet in text form, for readable assertions."""

    proto: int
    src: str
    sport: int
    dst: str
    dport: int
    ip_len: int
    frame_len: int
    payload_len: int

    @property
    def five_tuple(self) -> tuple[int, str, int, str, int]:
        return (self.proto, self.src, self.sport, self.dst, self.dport)


def decoded_rows(packets: PacketBatch) -> list[Decoded]:
    src = pairs_to_addresses(packets.src_hi, packets.src_lo)
    dst = pairs_to_addresses(packets.dst_hi, packets.dst_lo)
    return [
        Decoded(int(packets.proto[i]), src[i], int(packets.sport[i]), dst[i],
                int(packets.dport[i]), int(packets.ip_len[i]), int(packets.frame_len[i]),
                int(packets.payload_len[i]))
        for i in range(len(packets))
    ]


def decode_capture(path: str | Path, decapsulate: bool = True,
                   chunk_bytes: int | None = None) -> tuple[list[Decoded], DecodeStats]:
    """Read a capture and decode every batch with one decoder (as the pipeline does)."""
    decoder = Decoder(decapsulate=decapsulate)
    rows: list[Decoded] = []
    kwargs = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
    with read_records(path, **kwargs) as reader:
        for batch in reader:
            rows.extend(decoded_rows(decoder.decode(batch)))
    return rows, decoder.stats


def decode_frames(
    tmp_path: Path,
    frames: Sequence[bytes],
    linktype: int = DLT_EN10MB,
    *,
    decapsulate: bool = True,
    name: str = "frames.pcap",
) -> tuple[list[Decoded], DecodeStats]:
    """Write frames into a pcap with the given link type, read it back and decode it."""
    packets = [Packet(1_700_000_000_000_000_000 + i * 1_000_000, f) for i, f in enumerate(frames)]
    path = write_pcap(tmp_path / name, packets, linktype)
    return decode_capture(path, decapsulate=decapsulate)


def record_batch(frames: Sequence[bytes], linktypes: int | Sequence[int]) -> RecordBatch:
    """An in-memory :class:`RecordBatch` (no file): for property-based tests of the decoder.

    Frames are laid out back to back in one buffer, as the reader does, so that a decoder
    reading past a frame's end would read its neighbour rather than fail loudly.
    """
    n = len(frames)
    data = np.frombuffer(b"".join(frames) or b"\0", dtype=np.uint8)
    lengths = np.array([len(f) for f in frames], dtype=np.int64)
    offset = np.zeros(n, dtype=np.int64)
    if n:
        offset[1:] = np.cumsum(lengths)[:-1]
    if isinstance(linktypes, int):
        linktype = np.full(n, linktypes, dtype=np.int32)
    else:
        linktype = np.asarray(linktypes, dtype=np.int32)
    ts = 1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 1000
    return RecordBatch(data, offset, lengths, lengths.copy(), ts, linktype)


# ----------------------------------------------------------- synthetic traffic for the CLI
@dataclass(frozen=True)
class Conversation:
    """A synthetic capture's known truth: what the flows command must find in it."""

    packets: list[Packet]
    flows_by_gap: dict[float | None, int]
    bursts_by_gap: dict[float | None, int]


def conversation_capture(path: Path) -> Conversation:
    """A small Ethernet capture with known flows and silences of 0.1 s, 0.7 s, 2 s and 10 s.

    Device 10.0.0.2 talks to three servers; the first packet of the DNS flow comes *from*
    the server, so ``--device`` flips that flow and no other. Silences decide the bursts:
    a gap of 0.5 s cuts at 0.7, 2 and 10 s (4 bursts), 1 s at 2 and 10 (3), 5 s at 10 (2),
    none gives one burst.
    """
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    device, web, dns, other = "10.0.0.2", "93.184.216.34", "10.0.0.53", "198.51.100.7"
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    t0 = 1_700_000_000_000_000_000
    plan: list[tuple[float, bytes]] = []

    def add(at: float, frame: bytes) -> None:
        plan.append((at, frame))

    # Burst A (0.0 .. 0.3 s): a TCP exchange and the DNS flow started by the server.
    add(0.0, bytes(eth / IP(src=device, dst=web) / TCP(sport=40000, dport=443, flags="S")))
    add(0.1, bytes(eth / IP(src=web, dst=device) / TCP(sport=443, dport=40000, flags="SA")))
    add(0.2, bytes(eth / IP(src=dns, dst=device) / UDP(sport=53, dport=5353) / (b"x" * 30)))
    add(0.3, bytes(eth / IP(src=device, dst=dns) / UDP(sport=5353, dport=53) / (b"y" * 10)))
    # 0.7 s of silence, burst B (1.0 .. 1.1 s).
    add(1.0, bytes(eth / IP(src=device, dst=web) / TCP(sport=40000, dport=443) / (b"z" * 100)))
    add(1.1, bytes(eth / IP(src=web, dst=device) / TCP(sport=443, dport=40000) / (b"w" * 900)))
    # 2 s of silence, burst C (3.1 s): one UDP packet, one way.
    add(3.1, bytes(eth / IP(src=device, dst=other) / UDP(sport=1234, dport=4321) / b"q"))
    # 10 s of silence, burst D (13.1 .. 13.2 s).
    add(13.1, bytes(eth / IP(src=device, dst=web) / TCP(sport=40001, dport=443, flags="S")))
    add(13.2, bytes(eth / IP(src=web, dst=device) / TCP(sport=443, dport=40001, flags="SA")))
    packets = [Packet(t0 + round(at * 1e9), frame) for at, frame in plan]
    write_pcap(path, packets)
    return Conversation(
        packets=packets,
        # Per burst: A tcp + dns, B tcp, C udp, D tcp (another port); merged bursts merge
        # the A and B tcp flows.
        flows_by_gap={0.5: 5, 1.0: 4, 5.0: 4, None: 4},
        bursts_by_gap={0.5: 4, 1.0: 3, 5.0: 2, None: 1},
    )


def many_flows_capture(path: Path, flows: int = 3000) -> Path:
    """A capture of ``flows`` one-packet UDP flows (one burst): output larger than a pipe
    buffer, for tests of what happens when the reader of our output goes away."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    template = bytearray(bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=1, dport=53) / (b"q" * 20)
    ))
    sport_at = 14 + 20
    packets = []
    for i in range(flows):
        struct.pack_into(">H", template, sport_at, 1024 + i)
        packets.append(Packet(1_700_000_000_000_000_000 + i * 1000, bytes(template)))
    return write_pcap(path, packets)
