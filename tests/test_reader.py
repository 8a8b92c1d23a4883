"""The reading stage: every supported capture layout gives exactly the records written into it.

Captures are built byte by byte (``capture_builder``) so that each test knows the truth:
the timestamp in nanoseconds, captured and original lengths, link type and bytes of every
record. Chunked reading is part of the contract (a record may straddle chunks, and a live
stream hands over whatever has arrived), so layouts are also read with tiny chunks.
"""

from __future__ import annotations

import gzip
import json
import os
import select
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from appsight.errors import CaptureFormatError
from appsight.reader import CaptureReader, read_records
from capture_builder import (
    BIG,
    BLOCK_ISB,
    BLOCK_NRB,
    DLT_EN10MB,
    DLT_LINUX_SLL,
    DLT_RAW,
    LITTLE,
    Packet,
    PcapngBuilder,
    Record,
    conversation_capture,
    expected_records,
    pcap_bytes,
    pcap_header,
    read_all,
    ticks_to_ns,
    tsresol_ticks,
    write_pcap,
)

REPO = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000_000_000_000  # 2023-11-14, a realistic epoch time in ns


def sample_packets(count: int = 7, *, whole_us: bool = True) -> list[Packet]:
    """Records of varied sizes (including empty and snapped ones) at irregular times."""
    packets = []
    for i in range(count):
        frac = i * 1_234_567_000 if whole_us else i * 1_234_567_891
        data = bytes((i * 7 + k) & 0xFF for k in range((i * 37) % 200))
        snapped = i % 3 == 2
        packets.append(Packet(T0 + frac, data, len(data) + 1000 if snapped else None))
    return packets


# -------------------------------------------------------------------- classic pcap
@pytest.mark.parametrize("order", [LITTLE, BIG], ids=["little", "big"])
@pytest.mark.parametrize("nanos", [False, True], ids=["usec", "nsec"])
def test_classic_pcap_variants_give_identical_records(
    tmp_path: Path, order: str, nanos: bool
) -> None:
    """All four magic numbers must decode to the same records, so results never depend on
    which machine or tcpdump option wrote the file."""
    packets = sample_packets()
    path = write_pcap(tmp_path / "c.pcap", packets, DLT_EN10MB, nanos=nanos, order=order)
    records, stats = read_all(path)
    assert records == expected_records(packets, DLT_EN10MB)
    assert stats.records == len(packets)
    assert stats.problems == [] and stats.malformed_records == 0


@pytest.mark.parametrize("order", [LITTLE, BIG], ids=["little", "big"])
def test_nanosecond_pcap_keeps_sub_microsecond_digits(tmp_path: Path, order: str) -> None:
    """A nanosecond capture's fraction is nanoseconds, not microseconds times 1000."""
    packets = sample_packets(whole_us=False)
    assert any(p.ts_ns % 1000 for p in packets)
    path = write_pcap(tmp_path / "n.pcap", packets, DLT_RAW, nanos=True, order=order)
    records, _ = read_all(path)
    assert [r.ts_ns for r in records] == [p.ts_ns for p in packets]


def test_pcap_link_type_ignores_fcs_bits(tmp_path: Path) -> None:
    """The top four bits of the link-type field carry FCS information, not the link type."""
    packets = sample_packets(2)
    data = bytearray(pcap_bytes(packets, DLT_EN10MB))
    struct.pack_into("<I", data, 20, DLT_EN10MB | 0x1000_0000)  # "FCS length present"
    (tmp_path / "fcs.pcap").write_bytes(bytes(data))
    records, _ = read_all(tmp_path / "fcs.pcap")
    assert {r.linktype for r in records} == {DLT_EN10MB}


def test_pcap_without_records_reads_as_nothing(tmp_path: Path) -> None:
    """A header-only capture (tcpdump stopped before the first packet) is valid and empty."""
    path = tmp_path / "header_only.pcap"
    path.write_bytes(pcap_header(DLT_EN10MB))
    records, stats = read_all(path)
    assert records == [] and stats.problems == []


# -------------------------------------------------------------------------- pcapng
def multi_interface_capture(order: str = LITTLE) -> tuple[PcapngBuilder, list[Record]]:
    """One section, five interfaces with their own link type, resolution and offset.

    Resolutions: default (µs), 10^-9, 2^-20 (a binary one, as some hardware writes) with an
    offset, 10^-6 with a negative offset and 10^-3 with a positive one. Packets interleave
    interfaces; every fourth one was snapped (original length > captured length).
    """
    b = PcapngBuilder().section(order)
    ifaces = [
        (b.interface(DLT_EN10MB), DLT_EN10MB, 6, 0),
        (b.interface(DLT_RAW, tsresol=9, name="raw0"), DLT_RAW, 9, 0),
        (b.interface(DLT_LINUX_SLL, tsresol=0x80 | 20, tsoffset=1000), DLT_LINUX_SLL, 0x94, 1000),
        (b.interface(DLT_EN10MB, tsresol=6, tsoffset=-3600), DLT_EN10MB, 6, -3600),
        (b.interface(DLT_RAW, tsresol=3, tsoffset=86_400), DLT_RAW, 3, 86_400),
    ]
    expected = []
    for i in range(15):
        index, linktype, resol, offset = ifaces[i % len(ifaces)]
        ticks = tsresol_ticks(T0 + i * 987_654_321, resol)
        data = bytes([i]) * (20 + 13 * i)
        b.enhanced(index, ticks, data, wirelen=len(data) + (5 if i % 4 == 0 else 0))
        expected.append(Record(ticks_to_ns(ticks, resol, offset), len(data),
                               len(data) + (5 if i % 4 == 0 else 0), linktype, data))
    return b, expected


def test_pcapng_interfaces_with_own_link_type_resolution_and_offset(tmp_path: Path) -> None:
    """Each packet's time and link type come from its own interface's description."""
    builder, expected = multi_interface_capture()
    records, stats = read_all(builder.write(tmp_path / "m.pcapng"))
    assert [r.linktype for r in records] == [r.linktype for r in expected]
    assert [(r.caplen, r.wirelen, r.data) for r in records] == [
        (r.caplen, r.wirelen, r.data) for r in expected
    ]
    for got, want in zip(records, expected, strict=True):
        if want.linktype == DLT_LINUX_SLL:  # the 2^-20 s interface: within one tick
            assert abs(got.ts_ns - want.ts_ns) < 954, (got.ts_ns, want.ts_ns)
        else:  # decimal resolutions: exact
            assert got.ts_ns == want.ts_ns
    assert stats.records == len(expected) and stats.problems == []


def _one_interface_times(tmp_path: Path, tsresol: int, times_ns: list[int]) -> list[int]:
    b = PcapngBuilder().section(LITTLE)
    b.interface(DLT_EN10MB, tsresol=tsresol)
    for t in times_ns:
        b.enhanced(0, tsresol_ticks(t, tsresol), b"\0" * 20)
    records, stats = read_all(b.write(tmp_path / f"r{tsresol}.pcapng"))
    assert stats.problems == [] and len(records) == len(times_ns)
    return [r.ts_ns for r in records]


SPREAD = [T0 + k * 86_400_123_456_789 + k * k * 7_919 for k in range(40)]


@pytest.mark.parametrize("tsresol", [0, 1, 3, 6, 7, 9], ids=lambda r: f"1e-{r}")
def test_pcapng_decimal_resolutions_are_exact(tmp_path: Path, tsresol: int) -> None:
    """Decimal tick sizes of a nanosecond or more convert to exact nanoseconds."""
    got = _one_interface_times(tmp_path, tsresol, SPREAD)
    assert got == [ticks_to_ns(tsresol_ticks(t, tsresol), tsresol) for t in SPREAD]


@pytest.mark.parametrize("tsresol", [0x80 | 20, 0x80 | 30], ids=["2^-20", "2^-30"])
def test_pcapng_binary_resolutions_are_exact_to_the_nanosecond(
    tmp_path: Path, tsresol: int
) -> None:
    """A tick of 2^-n s has an exact time; the reader should not add rounding error to it
    (at 2^-30 s the error is many ticks)."""
    got = _one_interface_times(tmp_path, tsresol, SPREAD)
    want = [ticks_to_ns(tsresol_ticks(t, tsresol), tsresol) for t in SPREAD]
    assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= 1


def test_pcapng_sub_nanosecond_resolution_gives_present_day_times(tmp_path: Path) -> None:
    """if_tsresol=10 (100 ps ticks) is legal; 2023's tick count still fits the unsigned
    64-bit field, and the time must come out as 2023, not as a negative number."""
    got = _one_interface_times(tmp_path, 10, SPREAD[:3])
    assert got == SPREAD[:3]


def test_pcapng_enhanced_simple_and_obsolete_packet_blocks(tmp_path: Path) -> None:
    """The three packet block types carry packets; a simple block has no time of its own,
    so it takes the time of the packet before it (documented reader behaviour)."""
    b = PcapngBuilder().section(LITTLE)
    eth = b.interface(DLT_EN10MB, tsresol=9)
    b.interface(DLT_RAW)  # interface 1, µs
    b.enhanced(eth, T0, b"E" * 60)
    b.simple(b"S" * 42)  # simple blocks always belong to interface 0
    b.obsolete(1, tsresol_ticks(T0 + 5_000_000, 6), b"P" * 33, wirelen=40, drops=7)
    b.simple(b"s" * 3, wirelen=3)  # padded to 4 bytes: the padding is not data
    b.enhanced(eth, T0 + 9, b"e" * 61)
    records, stats = read_all(b.write(tmp_path / "kinds.pcapng"))
    assert records == [
        Record(T0, 60, 60, DLT_EN10MB, b"E" * 60),
        Record(T0, 42, 42, DLT_EN10MB, b"S" * 42),
        Record(T0 + 5_000_000, 33, 40, DLT_RAW, b"P" * 33),
        Record(T0 + 5_000_000, 3, 3, DLT_EN10MB, b"s" * 3),
        Record(T0 + 9, 61, 61, DLT_EN10MB, b"e" * 61),
    ]
    assert stats.problems == [] and stats.malformed_records == 0


def test_pcapng_snapped_simple_packet_block_excludes_padding(tmp_path: Path) -> None:
    """A simple block holds min(original length, snaplen) bytes, then padding: 62 bytes
    captured of a 1000-byte packet are 62 bytes, not 64."""
    b = PcapngBuilder().section(LITTLE)
    b.interface(DLT_EN10MB, snaplen=62)
    b.simple(b"x" * 62, wirelen=1000)
    records, _ = read_all(b.write(tmp_path / "snapped_spb.pcapng"))
    assert [(r.caplen, r.wirelen, r.data) for r in records] == [(62, 1000, b"x" * 62)]


@pytest.mark.parametrize("order", [LITTLE, BIG], ids=["little", "big"])
def test_pcapng_obsolete_block_interface_id_in_both_byte_orders(tmp_path: Path,
                                                                order: str) -> None:
    """The obsolete block's 16-bit interface id sits next to a 16-bit drops counter; reading
    them as one 32-bit word must still pick the right half in either byte order."""
    b = PcapngBuilder().section(order)
    b.interface(DLT_EN10MB)
    b.interface(DLT_RAW)
    b.obsolete(1, 1_000_000, b"x" * 20, drops=3)
    b.obsolete(0, 2_000_000, b"y" * 20, drops=0xFFFF)
    records, stats = read_all(b.write(tmp_path / "pb.pcapng"))
    assert [r.linktype for r in records] == [DLT_RAW, DLT_EN10MB]
    assert [r.ts_ns for r in records] == [1_000_000_000, 2_000_000_000]
    assert stats.malformed_records == 0


def test_pcapng_unknown_blocks_are_skipped_and_counted(tmp_path: Path) -> None:
    """Statistics, name-resolution, custom and unknown blocks carry no packets: skip them."""
    b = PcapngBuilder().section(LITTLE)
    b.other(BLOCK_NRB, b"\0" * 4)  # name resolution block with only the end record
    iface = b.interface(DLT_EN10MB)
    b.enhanced(iface, 1, b"a" * 50)
    b.other(BLOCK_ISB, struct.pack("<III", 0, 0, 0))
    b.other(0x0000_0BAD, b"custom" + b"\0" * 6)
    b.other(0x4000_0BAD, b"")
    b.other(0x1234_5678, b"\xff" * 40)
    b.enhanced(iface, 2, b"b" * 50)
    records, stats = read_all(b.write(tmp_path / "unknown.pcapng"))
    assert [r.data for r in records] == [b"a" * 50, b"b" * 50]
    assert stats.skipped_blocks == 5
    assert stats.problems == []


def test_pcapng_two_sections_with_different_byte_orders(tmp_path: Path) -> None:
    """Each section has its own byte order and its own interface numbering (concatenated
    captures look like this)."""
    b = PcapngBuilder().section(LITTLE)
    b.interface(DLT_EN10MB, tsresol=9)
    b.enhanced(0, T0, b"first" * 10)
    b.section(BIG)
    b.interface(DLT_RAW)  # interface 0 again, now µs and raw IP
    b.interface(DLT_LINUX_SLL, tsresol=9)
    b.enhanced(1, T0 + 7, b"second" * 10)
    b.enhanced(0, (T0 // 1000) + 11, b"third" * 10)
    records, stats = read_all(b.write(tmp_path / "two.pcapng"))
    assert records == [
        Record(T0, 50, 50, DLT_EN10MB, b"first" * 10),
        Record(T0 + 7, 60, 60, DLT_LINUX_SLL, b"second" * 10),
        Record(T0 + 11_000, 50, 50, DLT_RAW, b"third" * 10),
    ]
    assert stats.problems == [] and stats.malformed_records == 0


def test_big_endian_pcapng(tmp_path: Path) -> None:
    """A capture written on a big-endian machine reads as the same records."""
    little, expected = multi_interface_capture(LITTLE)
    big, _ = multi_interface_capture(BIG)
    assert big.to_bytes() != little.to_bytes()
    records_big, stats = read_all(big.write(tmp_path / "big.pcapng"))
    records_little, _ = read_all(little.write(tmp_path / "little.pcapng"))
    assert records_big == records_little
    assert [(r.linktype, r.wirelen, r.data) for r in records_big] == [
        (r.linktype, r.wirelen, r.data) for r in expected
    ]
    assert stats.problems == [] and stats.malformed_records == 0


def test_pcapng_packet_of_undeclared_interface_is_malformed(tmp_path: Path) -> None:
    """A packet naming an interface that was never described cannot be given a link type."""
    b = PcapngBuilder().section(LITTLE)
    b.interface(DLT_EN10MB)
    b.enhanced(0, 1, b"ok" * 30)
    b.enhanced(3, 2, b"no" * 30)
    records, stats = read_all(b.write(tmp_path / "iface.pcapng"))
    assert [r.data for r in records] == [b"ok" * 30]
    assert stats.malformed_records == 1


def test_pcapng_captured_length_beyond_block_is_malformed(tmp_path: Path) -> None:
    """A packet claiming more captured bytes than its block holds must not read its
    neighbour's bytes."""
    b = PcapngBuilder().section(LITTLE)
    b.interface(DLT_EN10MB)
    b.enhanced(0, 1, b"a" * 40)
    bad = bytearray(PcapngBuilder().section(LITTLE).enhanced(0, 2, b"b" * 40).to_bytes())
    bad = bad[28:]  # drop the helper's section header, keep the packet block
    struct.pack_into("<I", bad, 20, 400)  # captured length 400 in a 72-byte block
    b.raw(bytes(bad))
    b.enhanced(0, 3, b"c" * 40)
    records, stats = read_all(b.write(tmp_path / "caplen.pcapng"))
    assert [r.data for r in records] == [b"a" * 40, b"c" * 40]
    assert stats.malformed_records == 1


# ---------------------------------------------------------------- compressed, streams
@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_gzip_compressed_capture(tmp_path: Path, kind: str) -> None:
    """``capture.pcap.gz`` reads like the plain file (detected by content, not by name)."""
    if kind == "pcap":
        plain = pcap_bytes(sample_packets(), DLT_EN10MB, nanos=True)
    else:
        plain = multi_interface_capture()[0].to_bytes()
    (tmp_path / "plain").write_bytes(plain)
    (tmp_path / "packed.gz").write_bytes(gzip.compress(plain))
    (tmp_path / "packed_no_suffix").write_bytes(gzip.compress(plain))
    expected, _ = read_all(tmp_path / "plain")
    assert expected
    for name in ("packed.gz", "packed_no_suffix"):
        records, stats = read_all(tmp_path / name, chunk_bytes=100)
        assert records == expected
        assert stats.problems == []


def test_truncated_gzip_reports_a_problem(tmp_path: Path) -> None:
    """A gzip file cut short still yields what could be decompressed, plus a problem."""
    plain = pcap_bytes(sample_packets(40), DLT_EN10MB)
    packed = gzip.compress(plain)
    (tmp_path / "cut.pcap.gz").write_bytes(packed[: len(packed) * 2 // 3])
    records, stats = read_all(tmp_path / "cut.pcap.gz")
    full, _ = read_all(_write(tmp_path / "full.pcap", plain))
    assert records == full[: len(records)]
    assert stats.problems


def corrupt_deflate(packed: bytes) -> bytes:
    """Flip one bit of the compressed stream so that zlib itself fails (not only the CRC).

    Found by trying offsets in order, so the damage is deterministic for given input.
    """
    for at in range(len(packed) // 3, len(packed) - 8):
        damaged = bytearray(packed)
        damaged[at] ^= 0x10
        try:
            zlib.decompress(bytes(damaged), wbits=31)
        except zlib.error as exc:
            if "invalid" in str(exc):  # e.g. "invalid distance too far back"
                return bytes(damaged)
    raise AssertionError("no damaging bit flip found")


def test_corrupt_gzip_data_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """Damage inside the compressed stream ends like a truncated file (the records before it
    and a problem in ReadStats), or, when it strikes before the first record, like a file that
    is not a capture: a CaptureFormatError naming the read error. Never a zlib traceback."""
    plain = pcap_bytes(sample_packets(60), DLT_EN10MB)
    path = _write(tmp_path / "bad.pcap.gz", corrupt_deflate(gzip.compress(plain)))
    full, _ = read_all(_write(tmp_path / "full.pcap", plain))
    try:
        records, stats = read_all(path)
    except CaptureFormatError as exc:
        assert "read error" in str(exc)
    else:
        assert records == full[: len(records)]
        assert stats.problems


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _run_cli(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "appsight", *args], input=stdin, capture_output=True,
        timeout=60, cwd=REPO, check=False,
    )


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_reading_from_standard_input(tmp_path: Path, kind: str) -> None:
    """``appsight flows -`` reads a capture stream and finds the same flows as the file."""
    truth = conversation_capture(tmp_path / "conv.pcap")
    if kind == "pcapng":
        b = PcapngBuilder().section(LITTLE)
        b.interface(DLT_EN10MB, tsresol=9)
        for p in truth.packets:
            b.enhanced(0, p.ts_ns, p.data)
        path = b.write(tmp_path / "conv.pcapng")
    else:
        path = tmp_path / "conv.pcap"
    from_file = _run_cli(["flows", "--json", str(path)])
    from_stdin = _run_cli(["flows", "--json", "-"], stdin=path.read_bytes())
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_file.returncode == 0, from_file.stderr
    file_rows = [json.loads(line) for line in from_file.stdout.splitlines()]
    stdin_rows = [json.loads(line) for line in from_stdin.stdout.splitlines()]
    assert {r["capture"] for r in stdin_rows} == {"stdin"}
    for row in file_rows + stdin_rows:
        del row["capture"]
    assert stdin_rows == file_rows
    assert len(stdin_rows) == truth.flows_by_gap[1.0]
    assert sum(r["packets_fwd"] + r["packets_bwd"] for r in stdin_rows) == len(truth.packets)


def _first_line_before_end_of_input(unbuffered: bool, tmp_path: Path) -> bytes | None:
    """Feed a capture to 'flows --json -' up to the packet that ends the first bursts, keep
    standard input open, and return the first output line if it comes within 5 s."""
    truth = conversation_capture(tmp_path / "live.pcap")
    data = (tmp_path / "live.pcap").read_bytes()
    # Up to the first packet after the 10 s silence: bursts before it are complete.
    upto = 24 + sum(16 + len(p.data) for p in truth.packets[:-1])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "appsight", "flows", "--json", "-"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(data[:upto])
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 5.0)
        line = process.stdout.readline() if ready else None
        process.stdin.write(data[upto:])
        process.stdin.close()
        process.stdout.read()
    finally:
        process.wait(timeout=60)
    return line


def test_stream_hands_on_finished_bursts_before_the_end(tmp_path: Path) -> None:
    """A live stream (tcpdump -U -w - | appsight flows -) is read as it arrives: the flows of
    a burst come out once a later packet shows the burst is over, not at end of input."""
    line = _first_line_before_end_of_input(True, tmp_path)
    assert line is not None, "no output while standard input was still open"
    assert json.loads(line)["burst"] == 0


def test_stream_output_is_flushed_when_stdout_is_a_pipe(tmp_path: Path) -> None:
    """Same as above without PYTHONUNBUFFERED, as most users run it."""
    line = _first_line_before_end_of_input(False, tmp_path)
    assert line is not None, "finished bursts were held back in the output buffer"


def test_standard_input_that_is_not_a_capture() -> None:
    """A stream that is not a capture is a one-line error, like a file."""
    result = _run_cli(["flows", "-"], stdin=b"hello, this is text\n")
    assert result.returncode == 2
    assert result.stderr.decode().startswith("appsight: error:")
    assert b"Traceback" not in result.stderr


# ---------------------------------------------------------------------- chunking
def mixed_pcapng() -> bytes:
    """Two sections, several interfaces, all packet block kinds and skipped blocks."""
    b, _ = multi_interface_capture()
    b.other(BLOCK_ISB, struct.pack("<III", 0, 0, 0))
    b.section(BIG)
    b.interface(DLT_RAW, tsresol=9)
    for i in range(6):
        b.enhanced(0, T0 + 40_000_000_000 + i, bytes([0x45]) * (1 + 50 * i))
    b.obsolete(0, T0 + 50_000_000_000, b"\x60" * 47)
    b.other(0x0000_0BAD, b"z" * 300)
    b.enhanced(0, T0 + 60_000_000_000, b"\x45" * 1500)
    return b.to_bytes()


@pytest.mark.parametrize("chunk", [1, 5, 64, 97, 1000])
def test_small_chunks_give_the_same_records_pcap(tmp_path: Path, chunk: int) -> None:
    """Records that straddle chunk boundaries are reassembled, whatever the chunk size."""
    path = write_pcap(tmp_path / "c.pcap", sample_packets(30), DLT_EN10MB, order=BIG)
    whole, _ = read_all(path)
    pieces, stats = read_all(path, chunk_bytes=chunk)
    assert pieces == whole
    assert stats.records == 30 and stats.problems == []


@pytest.mark.parametrize("chunk", [1, 5, 64, 97, 1000])
def test_small_chunks_give_the_same_records_pcapng(tmp_path: Path, chunk: int) -> None:
    """Blocks and sections that straddle chunk boundaries read as with one big chunk."""
    path = _write(tmp_path / "c.pcapng", mixed_pcapng())
    whole, whole_stats = read_all(path)
    pieces, stats = read_all(path, chunk_bytes=chunk)
    assert pieces == whole
    assert stats.skipped_blocks == whole_stats.skipped_blocks == 2
    assert stats.problems == []




@pytest.mark.parametrize(
    "chunk", [64, 100, 4096]
)
def test_simple_packet_block_time_does_not_depend_on_chunking(
    tmp_path: Path, chunk: int
) -> None:
    """A simple packet block takes the previous packet's time; that must hold when the
    previous packet was in an earlier chunk too (small chunks are what a live stream gives)."""
    b = PcapngBuilder().section(LITTLE)
    b.interface(DLT_EN10MB, tsresol=9)
    for i in range(12):
        b.enhanced(0, T0 + i * 1_000_000, bytes([i]) * 52)
        b.simple(bytes([i]) * 48)
    path = b.write(tmp_path / "spb.pcapng")
    records, _ = read_all(path, chunk_bytes=chunk)
    assert len(records) == 24
    for i in range(12):
        assert records[2 * i + 1].ts_ns == T0 + i * 1_000_000, f"simple block {i}"


def test_reader_reports_position_and_size(tmp_path: Path) -> None:
    """Progress display relies on position and size; both are in bytes of the file."""
    path = write_pcap(tmp_path / "p.pcap", sample_packets(20), DLT_EN10MB)
    with CaptureReader(path, chunk_bytes=256) as reader:
        assert reader.size == path.stat().st_size
        assert reader.name == "p.pcap"
        positions = [reader.position for _ in reader]
    assert positions == sorted(positions)
    assert positions[-1] == reader.size


# ------------------------------------------------------------------- damaged files
@pytest.mark.parametrize("cut_inside", ["record header", "packet bytes"])
@pytest.mark.parametrize("chunk", [None, 64])
def test_truncated_pcap_yields_complete_records_and_a_problem(
    tmp_path: Path, cut_inside: str, chunk: int | None
) -> None:
    """A capture cut short (disk full, tcpdump killed) keeps every complete record."""
    packets = sample_packets(10)
    data = pcap_bytes(packets, DLT_EN10MB)
    last_start = len(data) - 16 - len(packets[-1].data)
    assert len(packets[-1].data) > 10
    cut = last_start + 7 if cut_inside == "record header" else last_start + 16 + 5
    path = _write(tmp_path / "cut.pcap", data[:cut])
    records, stats = read_all(path, chunk_bytes=chunk)
    assert records == expected_records(packets[:-1], DLT_EN10MB)
    assert len(stats.problems) == 1
    assert "ends inside a record" in stats.problems[0]


@pytest.mark.parametrize("chunk", [None, 64])
def test_truncated_pcapng_yields_complete_records_and_a_problem(
    tmp_path: Path, chunk: int | None
) -> None:
    builder, expected = multi_interface_capture()
    data = builder.to_bytes()
    whole, _ = read_all(builder.write(tmp_path / "whole.pcapng"))
    path = _write(tmp_path / "cut.pcapng", data[: len(data) - 10])
    records, stats = read_all(path, chunk_bytes=chunk)
    assert records == whole[:-1]
    assert len(records) == len(expected) - 1
    assert len(stats.problems) == 1


@pytest.mark.parametrize("order", [LITTLE, BIG], ids=["little", "big"])
def test_corrupt_record_length_stops_with_a_problem(tmp_path: Path, order: str) -> None:
    """A captured length no capture can have means the file is damaged from there on: keep
    what came before, say so, and do not try to allocate or read gigabytes."""
    packets = sample_packets(6)
    data = bytearray(pcap_bytes(packets, DLT_EN10MB, order=order))
    third = 24 + sum(16 + len(p.data) for p in packets[:3])
    struct.pack_into(order + "I", data, third + 8, 0xFFFF_FFF0)
    records, stats = read_all(_write(tmp_path / "bad.pcap", bytes(data)))
    assert records == expected_records(packets[:3], DLT_EN10MB)
    assert len(stats.problems) == 1 and "corrupt" in stats.problems[0]


@pytest.mark.parametrize("blen", [7, 30, 0x7FFF_FFFC])
def test_corrupt_pcapng_block_length_stops_with_a_problem(tmp_path: Path, blen: int) -> None:
    """Block lengths below the minimum, not a multiple of 4, or absurdly large are corrupt."""
    b = PcapngBuilder().section(LITTLE)
    b.interface(DLT_EN10MB)
    b.enhanced(0, 1, b"a" * 40)
    b.raw(struct.pack("<II", 6, blen) + b"\0" * 60)
    b.enhanced(0, 2, b"never" * 8)
    records, stats = read_all(b.write(tmp_path / "bad.pcapng"))
    assert [r.data for r in records] == [b"a" * 40]
    assert len(stats.problems) == 1 and "corrupt" in stats.problems[0]


def test_pcapng_bad_byte_order_magic_is_a_problem(tmp_path: Path) -> None:
    b = PcapngBuilder().section(LITTLE)
    b.interface(DLT_EN10MB)
    b.enhanced(0, 1, b"a" * 40)
    bad_section = bytearray(PcapngBuilder().section(LITTLE).to_bytes())
    struct.pack_into("<I", bad_section, 8, 0xDEADBEEF)
    b.raw(bytes(bad_section))
    records, stats = read_all(b.write(tmp_path / "magic.pcapng"))
    assert len(records) == 1
    assert len(stats.problems) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\xd4\xc3", "too short"),
        (b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "not a pcap"),
        (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00", "truncated"),
        (b"\x7fELF" + b"\0" * 100, "not a pcap"),
    ],
    ids=["empty", "too-short", "text", "short-header", "elf"],
)
def test_not_a_capture_raises_capture_format_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    """Input that is not a capture is the user's mistake: a CaptureFormatError that the
    command line prints as one line, never an arbitrary exception."""
    path = _write(tmp_path / "x.pcap", content)
    with pytest.raises(CaptureFormatError, match=message):
        read_all(path)


@pytest.mark.parametrize(
    "content",
    [b"\x0a\x0d\x0d\x0a", b"\x0a\x0d\x0d\x0a\x1c\x00\x00", b"\x0a\x0d\x0d\x0aHello, world!" * 3],
    ids=["magic-only", "short-section-header", "bad-byte-order-magic"],
)
def test_pcapng_without_a_valid_first_section_header_is_not_a_capture(
    tmp_path: Path, content: bytes
) -> None:
    """Only the block type says "pcapng" here; like a pcap without a whole file header,
    this is not a capture and must be reported as such."""
    path = _write(tmp_path / "x.pcapng", content)
    with pytest.raises(CaptureFormatError):
        read_all(path)


def test_missing_file_and_directory_raise_capture_format_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureFormatError, match="cannot open"):
        read_records(tmp_path / "absent.pcap")
    with pytest.raises(CaptureFormatError, match="directory"):
        read_records(tmp_path)


@pytest.mark.parametrize("damage", ["cut short", "junk after the end", "bad CRC"])
def test_a_damaged_gzip_capture_keeps_what_was_decompressed(tmp_path: Path, damage: str) -> None:
    """The bytes before the damage are read (a whole read chunk used to be thrown away, so a
    small capture read as 0 flows with exit 0); one warning says what happened."""
    import gzip as gzip_module

    from appsight.pipeline import PipelineOptions, iter_flow_blocks

    sample = Path(__file__).resolve().parent.parent / "examples" / "sample.pcap"
    packed = bytearray(gzip_module.compress(sample.read_bytes()))
    if damage == "cut short":
        packed = packed[:-30]
    elif damage == "junk after the end":
        packed += b"garbage\n"
    else:
        packed[-6] ^= 0xFF  # inside the CRC-32 of the trailer
    path = tmp_path / "damaged.pcap.gz"
    path.write_bytes(bytes(packed))

    def packets(capture: Path) -> tuple[int, list[str]]:
        summaries = []
        count = sum(int(b.flows.packets_fwd.sum() + b.flows.packets_bwd.sum())
                    for b in iter_flow_blocks(capture, PipelineOptions(), summaries.append))
        return count, [p for s in summaries for p in s.read.problems]

    whole, _ = packets(sample)
    got, problems = packets(path)
    assert any("damaged gzip stream" in p for p in problems), problems
    if damage == "cut short":
        assert whole - 1 <= got <= whole  # only the record the cut falls in is lost
    else:
        assert got == whole


def _one_packet_pcapng(edit: Callable[[Any], None]) -> bytes:
    """A pcapng with one interface and one UDP packet; ``edit`` adds or breaks blocks."""
    import capture_builder as cb
    from scapy.layers.inet import IP as ScapyIP
    from scapy.layers.inet import UDP as ScapyUDP
    from scapy.layers.l2 import Ether as ScapyEther

    builder = cb.PcapngBuilder().section()
    builder.frame = bytes(ScapyEther() / ScapyIP() / ScapyUDP(sport=1, dport=2))
    edit(builder)
    return builder.to_bytes()


@pytest.mark.parametrize("case, warning", [
    ("time offset of 10^10 s", "interface time offset of 10000000000 s ignored"),
    ("12-byte interface block at the end", "interface description block of 12 bytes"),
    ("option past its block", None),
])
def test_broken_pcapng_interfaces_are_warnings_not_crashes(tmp_path: Path, case: str,
                                                           warning: str | None) -> None:
    import capture_builder as cb

    def edit(b: Any) -> None:
        if case.startswith("time offset"):
            b.enhanced(b.interface(DLT_EN10MB, tsoffset=10**10), 1000, b.frame)
        elif case.startswith("12-byte"):
            b.enhanced(b.interface(DLT_EN10MB), 1000, b.frame)
            b.raw(struct.pack("<II", cb.BLOCK_IDB, 12) + struct.pack("<I", 12))
        else:  # an if_tsresol option that claims 200 bytes in a 28-byte block
            option = struct.pack("<HH", 9, 200) + b"\x06\0\0\0"
            body = struct.pack("<HHI", DLT_EN10MB, 0, 0) + option
            b.parts.append(cb.pcapng_block(cb.BLOCK_IDB, body))
            b.interfaces += 1
            b.enhanced(0, 1000, b.frame)

    path = tmp_path / "broken.pcapng"
    path.write_bytes(_one_packet_pcapng(edit))
    records, stats = read_all(path)
    assert len(records) == 1
    problems = " ".join(stats.problems)
    assert (warning in problems) if warning else not problems
    if case.startswith("time offset"):
        assert records[0].ts_ns == 1000 * 1000  # microsecond ticks, the offset left out
