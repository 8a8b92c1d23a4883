"""Robustness: real captures, damaged captures and random frames never crash the pipeline.

Three layers of evidence:

* every capture of the third-party corpus (about 600 files, several of them fuzzed or
  malformed on purpose) goes through reading, decoding, bursts, flows and all feature sets;
  counts are cross-checked against the corpus index (records as dpkt counted them, flows
  of a naive 5-tuple grouping);
* seeded mutations of real captures (bit flips, overwrites, truncation, duplicated and
  removed ranges, damage aimed at record and block headers) may only end in
  :class:`~appsight.errors.CaptureFormatError`, never in any other exception;
* hypothesis feeds random and mutated frames to the decoder for every supported link type.

A crash here is what a user would meet as a traceback on a capture from the wild.
"""

from __future__ import annotations

import csv
import functools
import io
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from appsight.decode import Decoder
from appsight.errors import CaptureFormatError
from appsight.features import FEATURE_SETS
from appsight.pipeline import CaptureSummary, PipelineOptions, iter_flow_blocks
from appsight.report import write_json_lines, write_report
from capture_builder import decoded_rows, record_batch
from conftest import shared_data_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.l2 import GRE, CookedLinux, CookedLinuxV2, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN

CORPUS_FOLDERS = ("ndpi", "ndpi_removed", "nfstream/pcaps")
SUPPORTED_LINKTYPES = (0, 1, 9, 12, 101, 104, 108, 113, 192, 228, 229, 276)


# ------------------------------------------------------------------ the corpus
def corpus_captures() -> list[Path]:
    """Every capture file of the corpus (empty when it is absent: the tests then skip)."""
    root = shared_data_dir()
    found: list[Path] = []
    for folder in CORPUS_FOLDERS:
        if (root / folder).is_dir():
            found += sorted(
                p for p in (root / folder).iterdir()
                if p.suffix in (".pcap", ".pcapng", ".cap")
            )
    return found


@functools.cache
def corpus_index() -> dict[str, dict[str, str]]:
    """``pcap_index.tsv`` by relative path (packets as counted by dpkt, naive flow count)."""
    path = shared_data_dir() / "pcap_index.tsv"
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f, delimiter="\t")}


@dataclass
class Outcome:
    """Everything a pipeline run produced that the checks look at."""

    summary: CaptureSummary
    flows: int
    flow_packets: int
    flow_bytes: int
    bursts: list[int]


def run_pipeline(path: Path, options: PipelineOptions, report: bool = False) -> Outcome:
    """Run the whole pipeline with every feature set; assert the per-block invariants."""
    summaries: list[CaptureSummary] = []
    flows = flow_packets = flow_bytes = 0
    bursts: list[int] = []
    for block in iter_flow_blocks(path, options, on_summary=summaries.append):
        table = block.flows
        n = len(table)
        assert n > 0
        for feature_set in FEATURE_SETS.values():
            matrix = feature_set(table)
            assert matrix.shape == (n, len(feature_set.columns))
            assert np.isfinite(matrix).all(), f"{feature_set.tag} not finite in {path.name}"
        packets = table.packets_fwd + table.packets_bwd
        assert (packets >= 1).all()
        assert int(packets.sum()) == table.packet_count
        assert (table.first_ts <= table.last_ts).all()
        assert (table.bytes_fwd >= 0).all() and (table.bytes_bwd >= 0).all()
        flows += n
        flow_packets += int(packets.sum())
        flow_bytes += int((table.bytes_fwd + table.bytes_bwd).sum())
        bursts += [b for b, _ in block.burst_slices()]
        if report:
            write_report(block, io.StringIO())
            write_json_lines(block, io.StringIO())
    assert len(summaries) == 1
    return Outcome(summaries[0], flows, flow_packets, flow_bytes, bursts)


def independent_decode(path: Path) -> tuple[int, int]:
    """Decoded packets and frame bytes, read in small chunks with a fresh decoder."""
    from appsight.reader import read_records

    decoder = Decoder()
    packets = frame_bytes = 0
    with read_records(path, chunk_bytes=1 << 16) as reader:
        for batch in reader:
            decoded = decoder.decode(batch)
            packets += len(decoded)
            frame_bytes += int(decoded.frame_len.sum())
    return packets, frame_bytes


CORPUS = corpus_captures()


def check_corpus_capture(path: Path, root: Path) -> None:
    """One corpus capture: no exception, finite features, and no packet lost or invented
    between decoding and flows (also when read in 64 KiB chunks instead of 8 MiB)."""
    outcome = run_pipeline(path, PipelineOptions())
    summary = outcome.summary
    assert outcome.flow_packets == summary.packets, "packets in flows != decoded packets"
    assert outcome.flows == summary.flows
    assert outcome.bursts == list(range(summary.bursts)), "bursts not numbered 0, 1, ..."
    decoded, frame_bytes = independent_decode(path)
    assert decoded == summary.packets, "decoding in small chunks gives other packets"
    assert outcome.flow_bytes == frame_bytes, "bytes in flows != decoded frame bytes"
    d = summary.decode
    assert summary.packets + d.non_ip + d.malformed == summary.read.records

    row = corpus_index().get(str(path.relative_to(root)))
    if row is not None:
        # dpkt read the same number of records from every corpus capture.
        assert summary.read.records == int(row["packets"]), "record count differs from dpkt"
        assert summary.read.problems == [] and summary.read.malformed_records == 0


@pytest.mark.shared_data
def test_corpus_captures_run_through_the_pipeline(shared_data: Path) -> None:
    """Every capture of the corpus, with all feature sets (one test: ~600 files in ~2 s;
    the failure message names every failing capture and why)."""
    assert len(CORPUS) > 500
    failures = []
    for path in CORPUS:
        try:
            check_corpus_capture(path, shared_data)
        except Exception as exc:
            failures.append(f"{path.relative_to(shared_data)}: {type(exc).__name__}: {exc}")
    assert failures == []


@pytest.mark.shared_data
def test_corpus_flow_counts_match_a_naive_grouping(shared_data: Path) -> None:
    """Where nothing needs interpretation (no tunnel, fragment, non-IP or malformed frame),
    one burst per capture must give exactly the flows of a plain bidirectional 5-tuple
    grouping, as listed in the corpus index (computed with dpkt)."""
    index = corpus_index()
    if not index:
        pytest.skip("pcap_index.tsv not in the corpus")
    compared = 0
    mismatches = []
    for path in CORPUS:
        row = index.get(str(path.relative_to(shared_data)))
        if row is None or int(row["non_ip_packets"]):
            continue
        outcome = run_pipeline(path, PipelineOptions(burst_gap=None))
        d = outcome.summary.decode
        if d.non_ip or d.malformed or d.decapsulated or d.fragments:
            continue
        compared += 1
        if outcome.flows != int(row["naive_5tuple_flows"]):
            mismatches.append((path.name, outcome.flows, row["naive_5tuple_flows"]))
        assert len(set(outcome.bursts)) == 1
    assert compared > 400
    assert mismatches == []


# ------------------------------------------------------------- mutation fuzzing
FUZZ_SEEDS = (
    "ndpi/someip_sd_sample.pcap",  # ns pcap, PPI
    "ndpi/nfsv3.pcap",  # big-endian pcap
    "ndpi/nats.pcap",  # NULL
    "ndpi/bjnp.pcap",  # raw IP
    "ndpi/BGP_redist.pcap",  # Cisco HDLC
    "ndpi/BGP_Cisco_hdlc_slarp.pcap",  # PPP
    "ndpi/ossfuzz_seed_fake_traces_4.pcapng",  # link type 228
    "ndpi/rtcp_multiple_pkts_in_the_same_datagram.pcap",  # Linux SLL
    "ndpi/pgsql2.pcapng",  # pcapng NULL
    "ndpi/hls.pcapng",  # pcapng raw
    "ndpi/http2.pcapng",  # pcapng SLL
    "nfstream/pcaps/gtp-u.pcap",
    "ndpi/gre.pcapng",
    "ndpi/capwap_data.pcapng",
    "ndpi/4in6tunnel.pcap",
    "ndpi/6in4tunnel.pcap",
    "ndpi/dns_fragmented.pcap",
    "ndpi/ipv6_in_gtp.pcap",
    "ndpi/custom_categories.pcapng",  # QinQ + PPPoE
    "ndpi/discord_mid_flow.pcap",
    "ndpi/badpackets.pcap",
)
MUTANTS_PER_SEED = 16


PCAP_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d")


def structure_offsets(data: bytes) -> list[int]:
    """Offsets of the record headers (pcap) or block headers (pcapng) of an intact capture."""
    offsets: list[int] = []
    magic = data[:4]
    if magic in PCAP_MAGICS:
        order = "<" if magic[0] in (0xD4, 0x4D) else ">"
        pos = 24
        while pos + 16 <= len(data):
            offsets.append(pos)
            pos += 16 + struct.unpack_from(order + "I", data, pos + 8)[0]
        return offsets
    pos, order = 0, "<"
    while pos + 12 <= len(data):
        offsets.append(pos)
        if data[pos:pos + 4] == b"\x0a\x0d\x0d\x0a":
            order = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        length = struct.unpack_from(order + "I", data, pos + 4)[0]
        if length < 12:
            break
        pos += length
    return offsets


INTERESTING_WORDS = (0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF,
                     0xFFFF_FFF0, 16, 28, 65_535, 262_145)


def mutate(data: bytes, rng: random.Random, headers: list[int]) -> tuple[bytes, list[str]]:
    """Apply one to four random mutations; return the result and what was done."""
    out = bytearray(data)
    done: list[str] = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "overwrite", "truncate", "duplicate", "remove",
                           "header", "header", "header"])
        if not out:
            break
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                at = rng.randrange(len(out))
                out[at] ^= 1 << rng.randrange(8)
            done.append("flip")
        elif kind == "overwrite":
            at = rng.randrange(len(out))
            size = rng.randint(1, 16)
            out[at:at + size] = bytes(rng.choice((0, 0xFF, rng.randrange(256)))
                                      for _ in range(size))
            done.append(f"overwrite@{at}+{size}")
        elif kind == "truncate":
            at = rng.randrange(len(out))
            del out[at:]
            done.append(f"truncate@{at}")
        elif kind == "duplicate":
            a = rng.randrange(len(out))
            b = min(len(out), a + rng.randint(1, 300))
            at = rng.randrange(len(out) + 1)
            out[at:at] = out[a:b]
            done.append(f"duplicate {a}:{b}@{at}")
        elif kind == "remove":
            a = rng.randrange(len(out))
            b = min(len(out), a + rng.randint(1, 300))
            del out[a:b]
            done.append(f"remove {a}:{b}")
        elif headers:
            base = rng.choice(headers)
            field = base + 4 * rng.randrange(7)  # any 32-bit field of the header
            if field + 4 <= len(out):
                word = rng.choice(INTERESTING_WORDS)
                order = rng.choice("<>")
                struct.pack_into(order + "I", out, field, word)
                done.append(f"header@{field}={word:#x}{order}")
    return bytes(out), done


@pytest.mark.shared_data
@pytest.mark.parametrize("seed_name", FUZZ_SEEDS)
def test_mutated_captures_never_crash(shared_data: Path, tmp_path: Path,
                                      seed_name: str) -> None:
    """Damaged captures end in a CaptureFormatError or complete, with consistent counts."""
    original_path = shared_data / seed_name
    if not original_path.exists():
        pytest.skip(f"{seed_name} not in the corpus")
    original = original_path.read_bytes()
    headers = structure_offsets(original)
    rng = random.Random(f"appsight-fuzz:{seed_name}")
    completed = 0
    for k in range(MUTANTS_PER_SEED):
        mutant, done = mutate(original, rng, headers)
        path = tmp_path / f"mutant{k}{original_path.suffix}"
        path.write_bytes(mutant)
        options = PipelineOptions(
            burst_gap=rng.choice([None, 1.0, 0.001]), decapsulate=rng.random() < 0.8
        )
        try:
            outcome = run_pipeline(path, options, report=True)
        except CaptureFormatError:
            continue
        except Exception as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"{seed_name} mutant {k} ({', '.join(done)}): "
                        f"{type(exc).__name__}: {exc}")
        completed += 1
        assert outcome.flow_packets == outcome.summary.packets, done
    # Most mutants keep a valid file header: the test exercises the pipeline, not only the
    # format check.
    assert completed >= MUTANTS_PER_SEED // 2


# ---------------------------------------------------------- decoder property tests
def _inner_packets() -> list[bytes]:
    """IP packets that reach every decoder path: tunnels, extension headers, fragments."""
    tcp = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2) / b"data"
    udp6 = IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=3, dport=4) / b"x"
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    outer = IP(src="192.0.2.1", dst="192.0.2.2")
    packets = [
        tcp, udp6,
        IP(src="10.0.0.1", dst="10.0.0.3") / ICMP(),
        IPv6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=["::1"]) / udp6[UDP],
        *fragment(IP(src="10.0.0.1", dst="10.0.0.9", id=5) / UDP() / (b"f" * 100), 40),
        IPv6() / IPv6ExtHdrFragment(offset=3, m=1, id=9) / (b"z" * 20),
        outer / tcp, outer / udp6, IPv6() / tcp,
        outer / GRE() / tcp,
        outer / GRE(key_present=1, key=1, seqnum_present=1) / eth / tcp,
        outer / UDP(sport=2152, dport=2152) / GTP_U_Header() / tcp,
        outer / UDP(sport=2152, dport=2152) / GTP_U_Header() / GTPPDUSessionContainer() / tcp,
        outer / UDP(dport=4789) / VXLAN() / eth / tcp,
        outer / UDP(dport=5247) / (bytes([0, 0x10, 0x02, 0]) + bytes(eth / tcp)),
        outer / UDP(dport=5247) / (bytes([0, 0x10, 0x03, 0]) + bytes(24) + b"\xaa\xaa\x03"
                                   + bytes(3) + b"\x08\x00" + bytes(tcp)),
        outer / UDP(dport=37008) / (b"\x01\x00\x00\x01\x00\x0a\x01\x06\x01" + bytes(eth / tcp)),
    ]
    return [bytes(p) for p in packets]


INNER_PACKETS = _inner_packets()


def _wrap(linktype: int, ip: bytes) -> bytes:
    """Put an IP packet in the link header of ``linktype``."""
    version = ip[0] >> 4
    ethertype = b"\x08\x00" if version == 4 else b"\x86\xdd"
    eth_header = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01"
    if linktype == 1:  # with a VLAN tag, so that the tag loop is exercised too
        return eth_header + b"\x81\x00\x00\x05" + ethertype + ip
    if linktype == 0:
        return struct.pack("<I", 2 if version == 4 else 24) + ip
    if linktype == 108:
        return struct.pack(">I", 2 if version == 4 else 28) + ip
    if linktype == 9:
        return b"\xff\x03" + (b"\x00\x21" if version == 4 else b"\x00\x57") + ip
    if linktype == 104:
        return b"\x0f\x00" + ethertype + ip
    if linktype == 113:
        return bytes(CookedLinux(proto=int.from_bytes(ethertype, "big"))) + ip
    if linktype == 276:
        return bytes(CookedLinuxV2(proto=int.from_bytes(ethertype, "big"))) + ip
    if linktype == 192:
        return struct.pack("<BBHI", 0, 0, 8, 1) + eth_header + ethertype + ip
    return ip  # 12, 101, 228, 229


def _pppoe(ip: bytes) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / PPPoE()
                 / PPP(proto=0x21)) + ip


ONLY_VERSION = {228: 4, 229: 6}  # these link types carry one IP version only
TEMPLATES = {
    lt: [_wrap(lt, ip) for ip in INNER_PACKETS if ONLY_VERSION.get(lt, ip[0] >> 4) == ip[0] >> 4]
    for lt in SUPPORTED_LINKTYPES
}
TEMPLATES[1].append(_pppoe(INNER_PACKETS[0]))


@st.composite
def mutated_frame(draw: Callable, linktype: int) -> bytes:
    """A valid frame of the link type, then overwritten bytes and maybe a truncation."""
    frame = bytearray(draw(st.sampled_from(TEMPLATES[linktype])))
    for at, value in draw(st.lists(st.tuples(st.integers(0, len(frame) - 1),
                                             st.integers(0, 255)), max_size=6)):
        frame[at] = value
    cut = draw(st.integers(0, len(frame)))
    return bytes(frame[:cut]) if draw(st.booleans()) else bytes(frame)


def check_decoder(frames: list[bytes], linktypes: list[int] | int) -> None:
    """Decode in one batch and check the invariants every decoded packet must satisfy."""
    decoder = Decoder()
    batch = record_batch(frames, linktypes)
    packets = decoder.decode(batch)
    stats = decoder.stats
    assert len(packets) + stats.non_ip + stats.malformed == len(frames)
    assert (packets.ip_len >= 20).all()
    assert ((packets.proto >= 0) & (packets.proto <= 255)).all()
    for column in (packets.sport, packets.dport):
        assert ((column >= 0) & (column <= 65_535)).all()
    portless = (packets.proto != 6) & (packets.proto != 17)
    assert (packets.sport[portless] == 0).all() and (packets.dport[portless] == 0).all()
    assert set(packets.frame_len.tolist()) <= {len(f) for f in frames}
    decoded_rows(packets)  # addresses must print


FUZZ_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("linktype", SUPPORTED_LINKTYPES)
def test_decoder_survives_random_bytes(linktype: int) -> None:
    @FUZZ_SETTINGS
    @given(st.lists(st.binary(max_size=120), min_size=1, max_size=12))
    def run(frames: list[bytes]) -> None:
        check_decoder(frames, linktype)

    run()


@pytest.mark.parametrize("linktype", SUPPORTED_LINKTYPES)
def test_decoder_survives_mutated_frames(linktype: int) -> None:
    @FUZZ_SETTINGS
    @given(st.lists(mutated_frame(linktype), min_size=1, max_size=12))
    def run(frames: list[bytes]) -> None:
        check_decoder(frames, linktype)

    run()


@FUZZ_SETTINGS
@given(st.lists(st.sampled_from(SUPPORTED_LINKTYPES).flatmap(
    lambda lt: st.tuples(st.just(lt), mutated_frame(lt))), min_size=1, max_size=16))
def test_decoder_survives_mixed_link_types(items: list[tuple[int, bytes]]) -> None:
    """pcapng batches mix interfaces: per-link-type passes must not disturb each other."""
    check_decoder([f for _, f in items], [lt for lt, _ in items])


def test_unmutated_templates_decode_as_ip() -> None:
    """The fuzz templates themselves are valid: every one yields exactly one IP packet, so
    mutations start from frames that reach deep into the decoder."""
    for linktype, frames in TEMPLATES.items():
        decoder = Decoder()
        packets = decoder.decode(record_batch(frames, linktype))
        assert len(packets) == len(frames), (linktype, decoder.stats)
