"""Reading stage: capture records from classic pcap and pcapng, in batches.

A capture is read in chunks of a few megabytes. Only the walk from one record header to the
next is a Python loop (it cannot be vectorised: each record's length decides where the next
one starts); every other field is pulled out of the chunk with numpy in one go. The result is a
:class:`RecordBatch` whose packet bytes stay in the chunk buffer, so the decoding stage can
read them without copying.

The same reader serves files (plain or gzip-compressed) and streams (``-`` for standard
input, e.g. ``tcpdump -U -w - | appsight flows -``): a stream is read with ``read1`` so that
a record is handed on as soon as it has arrived.
"""

from __future__ import annotations

import gzip
import os
import select
import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import CaptureFormatError

CHUNK_BYTES = 8 << 20
#: An interface's if_tsoffset beyond this (about 127 years) cannot be a real clock offset, and
#: in nanoseconds it would overflow the 64-bit timestamps.
MAX_TS_OFFSET_S = 4_000_000_000
#: Largest captured length accepted for one record (libpcap's own maximum snapshot length).
MAX_RECORD = 262_144
#: Largest pcapng block accepted; anything bigger is taken as corruption.
MAX_BLOCK = 16 << 20

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1_000),  # microseconds, little endian
    b"\xa1\xb2\xc3\xd4": (">", 1_000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
BLOCK_IDB, BLOCK_PB, BLOCK_SPB, BLOCK_EPB = 1, 2, 3, 6
GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class RecordBatch:
    """Consecutive capture records; packet ``i`` is ``data[offset[i]:offset[i] + caplen[i]]``."""

    data: np.ndarray
    offset: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts_ns: np.ndarray
    linktype: np.ndarray

    def __len__(self) -> int:
        return len(self.offset)

    def packet(self, i: int) -> bytes:
        """The captured bytes of record ``i`` (for slow paths and tests)."""
        start = int(self.offset[i])
        return self.data[start : start + int(self.caplen[i])].tobytes()


@dataclass
class ReadStats:
    """What the reader met besides good records; turned into one warning line per capture."""

    records: int = 0
    malformed_records: int = 0
    skipped_blocks: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class _Interface:
    linktype: int
    snaplen: int
    ts_resolution: int = 6  # the if_tsresol option byte: 10^-6 s by default
    ts_offset_s: int = 0


@dataclass
class _Section:
    order: str  # "<" or ">"
    interfaces: list[_Interface] = field(default_factory=list)


def _gather_u32(data: np.ndarray, positions: np.ndarray, width: int, order: str) -> np.ndarray:
    """Read ``width`` consecutive 32-bit words at each position: shape (n, width)."""
    index = positions[:, None] + np.arange(width * 4, dtype=np.int64)
    np.minimum(index, len(data) - 1, out=index)  # a short last block: never read past the end
    words = np.ascontiguousarray(data[index]).view(np.dtype(order + "u4"))
    return words.reshape(len(positions), width).astype(np.int64)


def _ticks_to_ns(ticks: np.ndarray, resolution: int) -> np.ndarray:
    """pcapng timestamp ticks (uint64) to integer nanoseconds, exactly, for one resolution.

    ``resolution`` is the ``if_tsresol`` byte: 10^-n seconds, or 2^-n with the top bit set.
    Integer arithmetic throughout, so nanosecond and binary resolutions stay exact and a
    large 64-bit tick count cannot wrap around.
    """
    ticks = ticks.astype(np.uint64)
    exponent = resolution & 0x7F
    if resolution & 0x80:  # binary fractions of a second
        if exponent > 63:
            return np.zeros(len(ticks), dtype=np.int64)
        seconds = ticks >> np.uint64(exponent)
        fraction = ticks & np.uint64((1 << exponent) - 1)
        if exponent <= 34:
            nanos = (fraction * np.uint64(1_000_000_000)) >> np.uint64(exponent)
        else:  # finer than a nanosecond: the float error is below one nanosecond
            nanos = np.floor(fraction.astype(np.float64) * (1e9 / 2.0**exponent)).astype(np.uint64)
        return (seconds * np.uint64(1_000_000_000) + nanos).astype(np.int64)
    if exponent <= 9:
        return (ticks * np.uint64(10 ** (9 - exponent))).astype(np.int64)
    if exponent >= 29:
        return np.zeros(len(ticks), dtype=np.int64)
    return (ticks // np.uint64(10 ** (exponent - 9))).astype(np.int64)


class CaptureReader:
    """Iterates over :class:`RecordBatch` objects of one capture file or stream."""

    def __init__(self, source: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES) -> None:
        self.source = str(source)
        self.name = "stdin" if self.source == "-" else Path(self.source).name
        self.chunk_bytes = chunk_bytes
        self.stats = ReadStats()
        self._raw: BinaryIO | None = None
        self._last_ts = 0  # newest pcapng timestamp, for simple packet blocks (which have none)
        self._broken = False  # a read failed: the input ends there
        self._stream: BinaryIO = self._open()
        self.size: int | None = None
        if self._raw is not None:
            try:
                self.size = os.fstat(self._raw.fileno()).st_size
            except OSError:
                self.size = None

    # ----------------------------------------------------------------- opening
    def _open(self) -> BinaryIO:
        if self.source == "-":
            if sys.stdin is None:  # started with standard input closed (<&-)
                raise CaptureFormatError("-: standard input is closed")
            return sys.stdin.buffer
        try:
            stream: BinaryIO = open(self.source, "rb")  # noqa: SIM115 - closed by close()
        except IsADirectoryError:
            raise CaptureFormatError(f"{self.source}: is a directory, not a capture") from None
        except OSError as exc:
            raise CaptureFormatError(f"{self.source}: cannot open: {exc.strerror}") from None
        self._raw = stream
        if stream.peek(2)[:2] == GZIP_MAGIC:
            return gzip.GzipFile(fileobj=stream)  # type: ignore[return-value]
        return stream

    @property
    def position(self) -> int | None:
        """Bytes of the file consumed so far (compressed bytes for gzip), None for streams."""
        try:
            return self._raw.tell() if self._raw is not None else None
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self.source != "-":
            self._stream.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, size: int) -> bytes:
        """Whatever is available now, up to ``size`` bytes; ``b""`` only at end of input."""
        if self._broken:
            return b""
        if isinstance(self._stream, gzip.GzipFile):
            return self._read_gzip(size)
        try:
            if self.source == "-":
                return self._read_available(size)
            return self._stream.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            self.stats.problems.append(f"read error: {exc}")
            self._broken = True
            return b""

    def _read_gzip(self, size: int) -> bytes:
        """Up to ``size`` decompressed bytes, in the pieces gzip gives, so that damage (a cut
        stream, a bad CRC, junk after the end) loses only what follows it: the bytes
        decompressed before the error are returned, and the next call ends the input."""
        parts: list[bytes] = []
        got = 0
        try:
            while got < size:
                piece = self._stream.read1(size - got)  # type: ignore[attr-defined]
                if not piece:
                    break
                parts.append(piece)
                got += len(piece)
        except (OSError, EOFError, zlib.error) as exc:
            self.stats.problems.append(f"damaged gzip stream, read up to the damage: {exc}")
            self._broken = True
        return b"".join(parts)

    def _read_available(self, size: int) -> bytes:
        """From a stream: wait for some bytes, then take all that are already there.

        A pipe delivers at most 64 KiB per read; collecting what is ready (without waiting)
        keeps batches large when the stream is fast and the delay low when it trickles.
        """
        stream = self._stream
        first = stream.read1(size)  # type: ignore[attr-defined]
        if not first or len(first) >= size:
            return first
        parts = [first]
        got = len(first)
        try:
            fd = stream.fileno()
        except (OSError, ValueError):
            return first
        while got < size and select.select([fd], [], [], 0)[0]:
            more = stream.read1(size - got)  # type: ignore[attr-defined]
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def _read_exactly(self, size: int) -> bytes:
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            part = self._read(wanted)
            if not part:
                break
            parts.append(part)
            wanted -= len(part)
        return b"".join(parts)

    # --------------------------------------------------------------- iterating
    def __iter__(self) -> Iterator[RecordBatch]:
        head = self._read_exactly(4)
        if len(head) < 4:
            if self.stats.problems:
                raise CaptureFormatError(f"{self.source}: {self.stats.problems[-1]}")
            what = "empty" if not head else "too short"
            raise CaptureFormatError(f"{self.source}: {what}, not a pcap or pcapng capture")
        if head in PCAP_MAGICS:
            yield from self._iter_pcap(head)
        elif struct.unpack("<I", head)[0] == PCAPNG_SHB:
            yield from self._iter_pcapng(head)
        else:
            raise CaptureFormatError(
                f"{self.source}: not a pcap or pcapng capture (starts with {head.hex()})"
            )

    # ------------------------------------------------------------------- pcap
    def _iter_pcap(self, magic: bytes) -> Iterator[RecordBatch]:
        order, tick_ns = PCAP_MAGICS[magic]
        header = magic + self._read_exactly(20)
        if len(header) < 24:
            raise CaptureFormatError(f"{self.source}: pcap file header is truncated")
        _, _, _, _, snaplen, network = struct.unpack(order + "HHiIII", header[4:])
        linktype = network & 0x0FFFFFFF
        limit = max(MAX_RECORD, snaplen if snaplen <= MAX_BLOCK else 0)
        caplen_at = struct.Struct(order + "I").unpack_from
        pending = b""
        while True:
            data = self._read(self.chunk_bytes)
            buf = pending + data if pending else data
            if not data:
                if buf:
                    self._truncated(len(buf))
                return
            # The hot loop: only hop from header to header. Lengths are checked afterwards,
            # for all records at once.
            positions: list[int] = []
            append = positions.append
            pos, last = 0, len(buf) - 16
            while pos <= last:
                append(pos)
                pos += 16 + caplen_at(buf, pos + 8)[0]
            if not positions:
                pending = buf
                continue
            data_u8 = np.frombuffer(buf, dtype=np.uint8)
            starts = np.asarray(positions, dtype=np.int64)
            fields = _gather_u32(data_u8, starts, 4, order)
            caplen = fields[:, 2]
            too_long = np.flatnonzero(caplen > limit)
            usable = int(too_long[0]) if len(too_long) else len(starts)
            if usable == len(starts) and starts[-1] + 16 + caplen[-1] > len(buf):
                usable -= 1  # the last record continues in the next chunk
            if usable:
                self.stats.records += usable
                yield RecordBatch(
                    data=data_u8,
                    offset=starts[:usable] + 16,
                    caplen=caplen[:usable],
                    wirelen=fields[:usable, 3],
                    ts_ns=fields[:usable, 0] * 1_000_000_000 + fields[:usable, 1] * tick_ns,
                    linktype=np.full(usable, linktype, dtype=np.int32),
                )
            if len(too_long):
                self._corrupt(f"record with captured length {int(caplen[usable])} > {limit}")
                return
            pending = buf[int(starts[usable]) :] if usable < len(starts) else buf[pos:]

    # ----------------------------------------------------------------- pcapng
    def _iter_pcapng(self, head: bytes) -> Iterator[RecordBatch]:
        pending = head
        section: _Section | None = None
        while True:
            data = self._read(self.chunk_bytes)
            buf = pending + data if pending else data
            if not data:
                if section is None:
                    raise CaptureFormatError(f"{self.source}: pcapng section header is truncated")
                if buf:
                    self._truncated(len(buf))
                return
            # Packet blocks are collected per section: (section, [position*4 + kind]).
            groups: list[tuple[_Section, list[int]]] = []
            packets: list[int] = []
            if section is not None:
                groups.append((section, packets))
            append = packets.append
            order = section.order if section else "<"
            block_head = struct.Struct(order + "II").unpack_from
            pos, end = 0, len(buf)
            corrupt = ""
            while pos + 12 <= end:
                btype, blen = block_head(buf, pos)
                if btype == PCAPNG_SHB:
                    magic_le = struct.unpack_from("<I", buf, pos + 8)[0]
                    if magic_le == PCAPNG_BYTE_ORDER_MAGIC:
                        order = "<"
                    elif magic_le == 0x4D3C2B1A:
                        order = ">"
                    else:
                        corrupt = "section header with a bad byte-order magic"
                        break
                    block_head = struct.Struct(order + "II").unpack_from
                    blen = block_head(buf, pos)[1]
                    if blen < 28 or blen % 4 or blen > MAX_BLOCK:
                        corrupt = f"section header of impossible length {blen}"
                        break
                    if pos + blen > end:
                        break
                    section = _Section(order)
                    packets = []
                    append = packets.append
                    groups.append((section, packets))
                    pos += blen
                    continue
                if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                    corrupt = f"block of impossible length {blen}"
                    break
                if pos + blen > end:
                    break
                if section is None:
                    corrupt = "packet data before the first section header"
                    break
                if btype in (BLOCK_EPB, BLOCK_PB):
                    append(pos * 4 + (0 if btype == BLOCK_EPB else 1))
                elif btype == BLOCK_SPB:
                    append(pos * 4 + 2)
                elif btype == BLOCK_IDB:
                    if blen < 20:  # header, link type, reserved, snap length, trailer
                        corrupt = f"interface description block of {blen} bytes"
                        break
                    section.interfaces.append(self._parse_idb(buf, pos, blen, order))
                else:
                    self.stats.skipped_blocks += 1
                pos += blen
            for group_section, group_packets in groups:
                if group_packets:
                    batch = self._pcapng_batch(buf, group_packets, group_section)
                    if batch is not None:
                        yield batch
            if corrupt:
                if section is None:
                    raise CaptureFormatError(f"{self.source}: not a valid pcapng file ({corrupt})")
                self._corrupt(corrupt)
                return
            pending = buf[pos:]

    def _parse_idb(self, buf: bytes, pos: int, blen: int, order: str) -> _Interface:
        linktype = struct.unpack_from(order + "H", buf, pos + 8)[0]
        snaplen = struct.unpack_from(order + "I", buf, pos + 12)[0]
        resolution = 6  # default: microseconds
        offset_s = 0
        opt, stop = pos + 16, pos + blen - 4
        while opt + 4 <= stop:
            code, length = struct.unpack_from(order + "HH", buf, opt)
            if code == 0 or opt + 4 + length > stop:  # the end, or an option past its block
                break
            value = buf[opt + 4 : opt + 4 + length]
            if code == 9 and length >= 1:
                resolution = value[0]
            elif code == 14 and length == 8:
                offset_s = struct.unpack(order + "q", value)[0]
                if abs(offset_s) > MAX_TS_OFFSET_S:
                    self.stats.problems.append(
                        f"interface time offset of {offset_s} s ignored (more than a century)")
                    offset_s = 0
            opt += 4 + length + (-length % 4)
        return _Interface(linktype, snaplen, resolution, offset_s)

    def _pcapng_batch(
        self, buf: bytes, coded: list[int], section: _Section
    ) -> RecordBatch | None:
        order = section.order
        data = np.frombuffer(buf, dtype=np.uint8)
        code = np.asarray(coded, dtype=np.int64)
        pos, kind = code >> 2, code & 3
        n = len(pos)
        is_spb = kind == 2
        # EPB/PB: blen, iface, ts_hi, ts_lo, caplen, wirelen at +4..+24, data at +28.
        # SPB: blen, wirelen at +4, +8, data at +12 (no timestamp, interface 0).
        words = _gather_u32(data, pos, 7, order)
        blen = np.where(is_spb, 0, words[:, 1])
        iface = words[:, 2]
        if order == "<":
            iface = np.where(kind == 1, iface & 0xFFFF, iface)
        else:
            iface = np.where(kind == 1, iface >> 16, iface)
        ts_raw = (words[:, 3].astype(np.uint64) << np.uint64(32)) | words[:, 4].astype(np.uint64)
        caplen = words[:, 5]
        wirelen = words[:, 6]
        offset = pos + 28
        if is_spb.any():
            spb = np.flatnonzero(is_spb)
            spb_words = _gather_u32(data, pos[spb], 3, order)
            spb_blen, spb_wire = spb_words[:, 1], spb_words[:, 2]
            blen[spb] = spb_blen
            wirelen[spb] = spb_wire
            snaplens = np.array([i.snaplen or MAX_BLOCK for i in section.interfaces[:1]])
            snaplen = int(snaplens[0]) if len(snaplens) else MAX_BLOCK
            caplen[spb] = np.minimum(np.minimum(spb_wire, spb_blen - 16), snaplen)
            iface[spb] = 0
            offset[spb] = pos[spb] + 12
        header = np.where(is_spb, 16, 32)
        good = (caplen <= blen - header) & (iface < len(section.interfaces))
        bad = n - int(good.sum())
        if bad:
            self.stats.malformed_records += bad
        if not good.any():
            return None
        if bad:
            keep = np.flatnonzero(good)
            pos, kind, iface, ts_raw = pos[keep], kind[keep], iface[keep], ts_raw[keep]
            caplen, wirelen = caplen[keep], wirelen[keep]
            offset, is_spb = offset[keep], is_spb[keep]
        linktypes = np.array([i.linktype for i in section.interfaces], dtype=np.int32)
        ts_ns = np.empty(len(pos), dtype=np.int64)
        for number in np.unique(iface).tolist():
            here = iface == number
            interface = section.interfaces[number]
            ts_ns[here] = _ticks_to_ns(ts_raw[here], interface.ts_resolution)
            ts_ns[here] += interface.ts_offset_s * 1_000_000_000
        if is_spb.any():  # simple packet blocks carry no time: reuse the one before
            ts_ns = _fill_forward(ts_ns, is_spb, self._last_ts)
        if len(ts_ns):
            self._last_ts = int(ts_ns[-1])
        self.stats.records += len(pos)
        return RecordBatch(data, offset, caplen, wirelen, ts_ns, linktypes[iface])

    # ---------------------------------------------------------------- problems
    def _truncated(self, leftover: int) -> None:
        self.stats.problems.append(f"file ends inside a record ({leftover} bytes ignored)")

    def _corrupt(self, what: str) -> None:
        self.stats.problems.append(f"corrupt capture: {what}; the rest was skipped")


def _fill_forward(values: np.ndarray, missing: np.ndarray, before: int) -> np.ndarray:
    """Replace each missing value by the last present one before it (``before`` at the start)."""
    present = np.where(~missing, np.arange(len(values)), -1)
    last = np.maximum.accumulate(present)
    out = np.where(last >= 0, values[np.maximum(last, 0)], before)
    return out.astype(np.int64)


def read_records(source: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES) -> CaptureReader:
    """Open a capture for reading; iterate over the result for :class:`RecordBatch` objects."""
    return CaptureReader(source, chunk_bytes)


