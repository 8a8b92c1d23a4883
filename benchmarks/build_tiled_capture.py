"""Build a large classic pcap by tiling the real Ethernet captures of the third-party corpus.

Why tiling: no single real capture we may use holds a million packets, and synthetic traffic
would not have the packet sizes, bursts and gaps that decide how fast a flow meter runs. So
the builder lays the corpus's real captures (``ndpi/*.pcap``, classic pcap, Ethernet) one
after another in time, over and over, until the wanted number of packets is reached:

* each tile (one source capture) keeps its own inter-packet gaps and bursts, shifted so that
  it starts 2 s after the previous tile ended: every tile boundary is a burst boundary, and a
  flow meter's flow table never holds more than about one tile's flows at once;
* every round (one pass over all captures) uses a new seeded order and, from the second round
  on, a new one-byte key XORed into the third octet of every IPv4 address (and the 15th byte
  of every IPv6 address), so flows do not repeat from round to round; the IPv4 header
  checksum is updated to match (RFC 1624), TCP/UDP checksums are left as they were (no meter
  here verifies them);
* silences longer than 5 min inside a capture (some are merges spanning years) are
  shortened to 5 min, which keeps the timestamps of 10 M packets within a few days;
* the output is a little-endian, microsecond classic pcap, written tile by tile, so memory is
  bounded by the corpus (about 25 MB), not by the output (10 M packets are about 3.7 GB).

The same seed gives the same bytes. ``-o -`` writes to standard output, so a capture larger
than the free disk can be piped straight into ``appsight features -``.

Usage::

    python benchmarks/build_tiled_capture.py -o /tmp/tiled-1M.pcap            # 1,000,000
    python benchmarks/build_tiled_capture.py --packets 10M -o /tmp/tiled-10M.pcap
    python benchmarks/build_tiled_capture.py --packets 10M -o - | appsight features - -o x.csv
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from appsight.reader import PCAP_MAGICS, read_records

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PACKETS = 1_000_000
DEFAULT_SEED = 20240101
GAP_NS = 2_000_000_000  # silence between tiles: more than the 1 s burst gap
#: Longest silence kept inside a tile. Some corpus captures are merges spanning years; their
#: long silences are shortened to 5 min, still longer than appsight's 1 s burst gap and
#: nfstream's 120 s idle timeout, so every meter still sees them as an end of activity.
MAX_GAP_NS = 300_000_000_000
EPOCH_NS = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00:00Z, where the first tile starts
SNAPLEN = 262_144
DLT_EN10MB = 1
#: Captures made on purpose to break parsers: not the traffic a throughput figure is about.
EXCLUDED_WORDS = ("fuzz", "malformed", "garbage")
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, DLT_EN10MB)


def data_dir(cli_value: str | None = None) -> Path:
    """The corpus folder: ``--data``, else ``APPSIGHT_DATA``, else ``<repo>/../shared/data``."""
    if cli_value:
        return Path(cli_value).resolve()
    return Path(os.environ.get("APPSIGHT_DATA", REPO.parent / "shared" / "data")).resolve()


def parse_count(text: str) -> int:
    """``1000000``, ``1M``, ``250k``, ``1_000_000`` -> an integer packet count (> 0)."""
    t = text.strip().replace("_", "").replace(",", "").lower()
    scale = 1
    if t.endswith("m"):
        scale, t = 1_000_000, t[:-1]
    elif t.endswith("k"):
        scale, t = 1_000, t[:-1]
    try:
        value = int(float(t) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a packet count: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the packet count must be positive, not {text!r}")
    return value


def parse_count_or_zero(text: str) -> int:
    """Like :func:`parse_count`, but ``0`` is allowed (it means "skip")."""
    if text.strip() == "0":
        return 0
    return parse_count(text)


@dataclass
class Tile:
    """One source capture, pre-rendered as pcap records whose timestamps are filled per tile.

    ``blob`` holds the records (16-byte header + frame) back to back; only the timestamp
    fields and the address bytes listed here change from one repetition to the next.
    """

    name: str
    blob: np.ndarray  # uint8
    rec_pos: np.ndarray  # offset of each record header in blob, plus the end (n + 1 entries)
    rel_ts_ns: np.ndarray  # each packet's time minus the capture's earliest time
    span_ns: int
    xor_pos: np.ndarray  # address bytes that take the round's key
    v4_ip: np.ndarray  # offset of each IPv4 header in blob (for the checksum update)

    def __len__(self) -> int:
        return len(self.rel_ts_ns)


def _is_classic_pcap(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in PCAP_MAGICS


def _load_tile(path: Path) -> Tile | None:
    """Read one capture with appsight's reader; None unless it is all-Ethernet and non-empty."""
    frames: list[bytes] = []
    caplens: list[np.ndarray] = []
    wirelens: list[np.ndarray] = []
    stamps: list[np.ndarray] = []
    with read_records(path) as reader:
        for batch in reader:
            if (batch.linktype != DLT_EN10MB).any():
                return None
            caplens.append(batch.caplen)
            wirelens.append(batch.wirelen)
            stamps.append(batch.ts_ns)
            data = batch.data
            for start, length in zip(batch.offset.tolist(), batch.caplen.tolist(), strict=True):
                frames.append(data[start : start + length].tobytes())
    if not frames:
        return None
    caplen = np.concatenate(caplens).astype(np.int64)
    wirelen = np.concatenate(wirelens).astype(np.int64)
    ts = _shorten_silences(np.concatenate(stamps).astype(np.int64))
    n = len(frames)
    header = np.zeros((n, 4), dtype="<u4")
    header[:, 2] = caplen
    header[:, 3] = np.maximum(wirelen, caplen)
    header_bytes = header.view(np.uint8).reshape(n, 16)
    blob = np.frombuffer(
        b"".join(h.tobytes() + f for h, f in zip(header_bytes, frames, strict=True)),
        dtype=np.uint8,
    ).copy()
    rec_pos = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(16 + caplen, out=rec_pos[1:])
    xor_pos, v4_ip = _address_positions(blob, rec_pos[:-1] + 16, caplen)
    first = int(ts.min())
    return Tile(
        name=path.name, blob=blob, rec_pos=rec_pos, rel_ts_ns=ts - first,
        span_ns=int(ts.max()) - first, xor_pos=xor_pos, v4_ip=v4_ip,
    )


def _shorten_silences(ts: np.ndarray) -> np.ndarray:
    """Clip every jump between consecutive packets (either way) to ``MAX_GAP_NS``."""
    steps = np.diff(ts)
    np.clip(steps, -MAX_GAP_NS, MAX_GAP_NS, out=steps)
    out = np.empty_like(ts)
    out[0] = ts[0]
    np.cumsum(steps, out=out[1:])
    out[1:] += ts[0]
    return out


def _address_positions(
    blob: np.ndarray, frame: np.ndarray, caplen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where the per-round key goes: IPv4/IPv6 address bytes right after Ethernet (+1 VLAN tag).

    Frames whose headers are not fully captured, or that carry anything else, keep their bytes.
    """
    end = len(blob) - 1

    def u16(at: np.ndarray) -> np.ndarray:
        at = np.minimum(at, end - 1)
        return (blob[at].astype(np.int64) << 8) | blob[at + 1]

    ethertype = u16(frame + 12)
    tagged = ethertype == 0x8100
    ip = np.where(tagged, frame + 18, frame + 14)
    ethertype = np.where(tagged, u16(frame + 16), ethertype)
    room = caplen - (ip - frame)
    version = blob[np.minimum(ip, end)] >> 4
    v4 = (ethertype == 0x0800) & (room >= 20) & (version == 4)
    v6 = (ethertype == 0x86DD) & (room >= 40) & (version == 6)
    ip4, ip6 = ip[v4], ip[v6]
    xor_pos = np.sort(np.concatenate([ip4 + 14, ip4 + 18, ip6 + 8 + 14, ip6 + 24 + 14]))
    return xor_pos, ip4


def _update_ipv4_checksums(out: np.ndarray, original: np.ndarray, ip: np.ndarray) -> None:
    """RFC 1624 incremental update for the two rewritten 16-bit words (src and dst octets 3-4).

    ``HC' = ~(~HC + ~m + m')`` in ones' complement, for each changed word m -> m'.
    """
    def word(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
        return (buf[at].astype(np.int64) << 8) | buf[at + 1]

    total = (~word(original, ip + 10)) & 0xFFFF
    for at in (ip + 14, ip + 18):
        total += ((~word(original, at)) & 0xFFFF) + word(out, at)
    for _ in range(3):
        total = (total & 0xFFFF) + (total >> 16)
    checksum = (~total) & 0xFFFF
    out[ip + 10] = checksum >> 8
    out[ip + 11] = checksum & 0xFF


def select_captures(data: Path) -> list[Path]:
    """The corpus's classic-pcap files in ``ndpi/`` (sorted), minus deliberately broken ones."""
    folder = data / "ndpi"
    if not folder.is_dir():
        sys.exit(
            f"build_tiled_capture: the third-party captures are not at {data} (no ndpi/ "
            "folder); set APPSIGHT_DATA or pass --data"
        )
    paths = sorted(p for p in folder.iterdir() if p.suffix in (".pcap", ".cap") and p.is_file())
    return [
        p for p in paths
        if not any(word in p.name.lower() for word in EXCLUDED_WORDS) and _is_classic_pcap(p)
    ]


def load_tiles(data: Path) -> list[Tile]:
    """Every usable Ethernet classic-pcap capture of the corpus, pre-rendered."""
    tiles = [t for t in (_load_tile(p) for p in select_captures(data)) if t is not None]
    if not tiles:
        sys.exit(f"build_tiled_capture: no Ethernet classic-pcap capture under {data / 'ndpi'}")
    return tiles


@dataclass
class BuildSummary:
    """What was written: for the benchmark's report."""

    packets: int
    bytes: int
    tiles: int
    rounds: int
    source_captures: int
    source_packets: int
    seconds: float
    first_ts_ns: int
    last_ts_ns: int


def iter_tiles(
    tiles: list[Tile], packets: int, seed: int = DEFAULT_SEED
) -> Iterator[tuple[np.ndarray, int, int]]:
    """The output's records, one tile at a time: (record bytes, records, tile's end in ns)."""
    rng = np.random.default_rng(seed)
    left = packets
    end_ns = EPOCH_NS - GAP_NS
    round_no = 0
    while left > 0:
        order = rng.permutation(len(tiles))
        key = 0 if round_no == 0 else int(rng.integers(1, 256))
        for index in order.tolist():
            if left <= 0:
                break
            tile = tiles[index]
            m = min(len(tile), left)
            start_ns = end_ns + GAP_NS
            out = tile.blob[: tile.rec_pos[m]].copy()
            ts = start_ns + tile.rel_ts_ns[:m]
            stamp = np.empty((m, 2), dtype="<u4")
            stamp[:, 0] = ts // 1_000_000_000
            stamp[:, 1] = (ts % 1_000_000_000) // 1_000
            where = tile.rec_pos[:m, None] + np.arange(8)
            out[where] = stamp.view(np.uint8).reshape(m, 8)
            if key:
                limit = tile.rec_pos[m]
                xor_pos = tile.xor_pos[tile.xor_pos < limit]
                out[xor_pos] ^= np.uint8(key)
                ip = tile.v4_ip[tile.v4_ip < limit]
                _update_ipv4_checksums(out, tile.blob, ip)
            end_ns = start_ns + int(tile.rel_ts_ns[:m].max())
            left -= m
            yield out, m, end_ns
        round_no += 1


def build(
    output: str, packets: int = DEFAULT_PACKETS, data: Path | None = None,
    seed: int = DEFAULT_SEED, tiles: list[Tile] | None = None,
) -> BuildSummary:
    """Write the tiled capture to ``output`` (``-``: standard output); return what was written."""
    started = time.perf_counter()
    if tiles is None:
        tiles = load_tiles(data if data is not None else data_dir())
    stream: BinaryIO
    stream = sys.stdout.buffer if output == "-" else open(output, "wb")  # noqa: SIM115
    written = len(PCAP_HEADER)
    count = 0
    n_tiles = 0
    last_ts = EPOCH_NS
    try:
        stream.write(PCAP_HEADER)
        for records, m, end_ns in iter_tiles(tiles, packets, seed):
            stream.write(memoryview(records))
            last_ts = end_ns
            written += len(records)
            count += m
            n_tiles += 1
        stream.flush()
    finally:
        if stream is not sys.stdout.buffer:
            stream.close()
    source_packets = sum(len(t) for t in tiles)
    return BuildSummary(
        packets=count, bytes=written, tiles=n_tiles,
        rounds=-(-packets // source_packets), source_captures=len(tiles),
        source_packets=source_packets, seconds=time.perf_counter() - started,
        first_ts_ns=EPOCH_NS, last_ts_ns=last_ts,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build a classic pcap of N packets by tiling the corpus's real Ethernet "
        "captures (ndpi/*.pcap), each tile 2 s after the previous one.",
    )
    parser.add_argument(
        "-n", "--packets", type=parse_count, default=DEFAULT_PACKETS, metavar="N",
        help="packets to write: 1000000, 1M, 10M, 250k (default 1M)",
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE",
        help="the pcap to write, or - for standard output",
    )
    parser.add_argument(
        "--data", metavar="DIR",
        help="the third-party corpus (default: $APPSIGHT_DATA or <repo>/../shared/data)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="tile order and keys")
    parser.add_argument(
        "--list", action="store_true", help="list the captures used as tiles and exit"
    )
    args = parser.parse_args(argv)
    data = data_dir(args.data)
    tiles = load_tiles(data)
    if args.list:
        for tile in tiles:
            print(f"{len(tile):8d}  {tile.span_ns / 1e9:12.3f} s  {tile.name}")
        print(f"{len(tiles)} captures, {sum(len(t) for t in tiles)} packets")
        return 0
    if args.output is None:
        parser.error("say where to write with -o FILE (or -o - for standard output)")
    if args.output != "-":
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    try:
        summary = build(args.output, args.packets, data, args.seed, tiles)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        print("build_tiled_capture: the reader went away; output incomplete", file=sys.stderr)
        return 1
    print(
        f"build_tiled_capture: wrote {summary.packets:,} packets ({summary.bytes / 1e6:,.0f} MB)"
        f" in {summary.tiles:,} tiles from {summary.source_captures} captures "
        f"({summary.source_packets:,} packets, {summary.rounds} rounds) to {args.output} "
        f"in {summary.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
