"""FG-Net's real Android app sessions as pcaps, one folder per app, for the real-app benchmark.

Provenance: ``fgnet/D1.tar.xz`` in the data folder (``--data``, else ``APPSIGHT_DATA``, else
``<repo>/../shared/data``) is dataset/D1 of github.com/jmhIcoding/fgnet at commit 66dec443
(2022-08-28), published with "Accurate Mobile-App Fingerprinting Using Flow-level Relationship
with Graph Neural Networks" (Computer Networks, 2022). 53 apps were driven by UI fuzzing on real
phones for about 30 s per session (June 2020); every flow is labelled with the app that owned its
socket. No licence is stated: it is for evaluation and is never copied into this repository.

What the archive holds and what becomes of it:

* ``D1/<app>/<version>/<unix time>_clear.pcap.json``: a list of flows, each with
  ``packet_length`` (payload bytes, positive when the phone sent the packet), ``arrive_time_delta``
  (seconds since the flow's previous packet), ``start_timestamp`` and ``src_port``. The authors
  removed packets without payload, retransmissions and reordered packets, and kept flows of at
  least 10 packets. Server addresses and ports were not published.
* Each session becomes ``OUT/<app>/<unix time>.pcap`` (nanosecond pcap, raw IPv4 frames): one
  TCP packet per listed length between the phone 10.0.0.2:``src_port`` and a single server
  198.18.0.1:443, the same for every flow so that the address says nothing about the app. Frames
  are cut after the TCP header; the IP total length (and the record's wire length) keeps the real
  size, so appsight's IP-length and payload features see the true sizes. Times are integer
  nanoseconds from the start time plus the summed deltas.
* The archive is read as a stream (never unpacked to disk). ``OUT/manifest.json`` records the
  archive's size and modification time and what was written; a later call with the same archive
  reuses the folder instead of converting again.

Usage::

    .venv/bin/python benchmarks/fgnet_pcaps.py -o /var/tmp/fgnet-D1     # about 2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
ARCHIVE = Path("fgnet") / "D1.tar.xz"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
PHONE = (10, 0, 0, 2)
SERVER = (198, 18, 0, 1)
SERVER_PORT = 443
HEADER_BYTES = 40  # IPv4 + TCP, no options

#: One pcap record: the 16-byte record header, then the IPv4 and TCP headers (big-endian).
RECORD = np.dtype([
    ("sec", "<u4"), ("nsec", "<u4"), ("caplen", "<u4"), ("wirelen", "<u4"),
    ("ver_ihl", "u1"), ("tos", "u1"), ("total", ">u2"), ("ident", ">u2"), ("frag", ">u2"),
    ("ttl", "u1"), ("proto", "u1"), ("checksum", ">u2"), ("src", "u1", 4), ("dst", "u1", 4),
    ("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("offset", "u1"),
    ("flags", "u1"), ("window", ">u2"), ("tcp_checksum", ">u2"), ("urgent", ">u2"),
])
#: pcap global header: nanosecond magic, version 2.4, snap length 65535, link type 101 (raw IP).
GLOBAL_HEADER = np.array([(0xA1B23C4D, 2, 4, 0, 0, 65535, 101)], dtype=np.dtype([
    ("magic", "<u4"), ("major", "<u2"), ("minor", "<u2"), ("zone", "<i4"), ("sigfigs", "<u4"),
    ("snaplen", "<u4"), ("linktype", "<u4"),
])).tobytes()


def shared_data_dir() -> Path:
    """The data folder: ``APPSIGHT_DATA``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("APPSIGHT_DATA", REPO.parent / "shared" / "data")).resolve()


@dataclass
class Conversion:
    """What a conversion wrote (kept in ``manifest.json``)."""

    format: int
    archive: str
    archive_bytes: int
    archive_mtime: int
    sessions: int
    flows: int
    packets: int
    skipped_flows: int
    apps: int


class ConversionError(Exception):
    """The archive is missing or holds something this converter cannot read."""


def _checksums(records: np.ndarray) -> np.ndarray:
    """IPv4 header checksums, computed over the 10 big-endian 16-bit words of each header."""
    words = np.zeros((len(records), 10), dtype=np.uint32)
    words[:, 0] = (records["ver_ihl"].astype(np.uint32) << 8) | records["tos"]
    words[:, 1] = records["total"]
    words[:, 2] = records["ident"]
    words[:, 3] = records["frag"]
    words[:, 4] = (records["ttl"].astype(np.uint32) << 8) | records["proto"]
    for i, field in ((6, "src"), (8, "dst")):
        address = records[field].astype(np.uint32)
        words[:, i] = (address[:, 0] << 8) | address[:, 1]
        words[:, i + 1] = (address[:, 2] << 8) | address[:, 3]
    total = words.sum(axis=1)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (~total & 0xFFFF).astype(np.uint16)


def session_records(flows: object) -> tuple[np.ndarray, int]:
    """The pcap records of one session in time order, and how many flows were unusable."""
    if not isinstance(flows, list):
        raise ConversionError("a session file must hold a JSON list of flows")
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    skipped = 0
    for flow in flows:
        try:
            lengths = np.asarray(flow["packet_length"], dtype=np.int64)
            deltas = np.asarray(flow["arrive_time_delta"], dtype=np.float64)
            start = round(float(flow["start_timestamp"]) * 1e9)
            port = int(flow["src_port"])
        except (KeyError, TypeError, ValueError, OverflowError):
            skipped += 1
            continue
        if (lengths.ndim != 1 or len(lengths) == 0 or lengths.shape != deltas.shape
                or not 0 < port < 65536 or np.any(np.abs(lengths) > 65535 - HEADER_BYTES)
                or not np.all(np.isfinite(deltas)) or np.any(deltas < 0)):
            skipped += 1
            continue
        times = start + np.cumsum(np.rint(deltas * 1e9).astype(np.int64))
        outgoing = lengths > 0
        size = np.abs(lengths)
        seq = np.zeros(len(size), dtype=np.int64)
        for direction in (outgoing, ~outgoing):
            sent = size[direction]
            seq[direction] = 1 + np.cumsum(sent) - sent
        parts.append((times, np.full(len(size), port), outgoing, np.stack([size, seq])))
    if not parts:
        return np.zeros(0, dtype=RECORD), skipped
    times = np.concatenate([p[0] for p in parts])
    order = np.argsort(times, kind="stable")
    times = times[order]
    ports = np.concatenate([p[1] for p in parts])[order]
    outgoing = np.concatenate([p[2] for p in parts])[order]
    size, seq = np.concatenate([p[3] for p in parts], axis=1)[:, order]
    records = np.zeros(len(times), dtype=RECORD)
    records["sec"] = times // 1_000_000_000
    records["nsec"] = times % 1_000_000_000
    records["caplen"] = HEADER_BYTES
    records["wirelen"] = HEADER_BYTES + size
    records["ver_ihl"], records["ttl"], records["proto"] = 0x45, 64, 6
    records["total"] = HEADER_BYTES + size
    records["frag"] = 0x4000  # don't fragment
    records["src"] = np.where(outgoing[:, None], PHONE, SERVER)
    records["dst"] = np.where(outgoing[:, None], SERVER, PHONE)
    records["sport"] = np.where(outgoing, ports, SERVER_PORT)
    records["dport"] = np.where(outgoing, SERVER_PORT, ports)
    records["seq"] = seq & 0xFFFFFFFF
    records["offset"], records["flags"], records["window"] = 0x50, 0x18, 65535  # PSH|ACK
    records["checksum"] = _checksums(records)
    return records, skipped


def _sessions(archive: Path) -> Iterator[tuple[str, str, object]]:
    """(app, unix time, parsed flows) of every session file, read from the archive as a stream."""
    with tarfile.open(archive, mode="r|xz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or not member.name.endswith("_clear.pcap.json"):
                continue
            if len(parts) != 4 or parts[0] != "D1":
                raise ConversionError(f"{member.name}: expected D1/<app>/<version>/<file>")
            stem = parts[3].split("_", 1)[0]
            if not stem.isdigit() or parts[1].startswith("."):
                raise ConversionError(f"{member.name}: unexpected session name")
            handle = tar.extractfile(member)
            if handle is None:
                continue
            try:
                flows = json.load(handle)
            except ValueError as error:
                raise ConversionError(f"{member.name}: not JSON ({error})") from None
            yield parts[1], stem, flows


def _expected(archive: Path) -> dict[str, int | str]:
    stat = archive.stat()
    return {"format": FORMAT_VERSION, "archive": str(archive), "archive_bytes": stat.st_size,
            "archive_mtime": int(stat.st_mtime)}


def cached(archive: Path, out: Path) -> Conversion | None:
    """The earlier conversion of this archive into ``out``, if there is a complete one."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        done = Conversion(**manifest)
    except (OSError, ValueError, TypeError):
        return None
    expected = _expected(archive)
    if any(getattr(done, key) != value for key, value in expected.items()):
        return None
    return done


def convert(data: Path, out: Path, progress: bool = True) -> Conversion:
    """Write every session of ``data/fgnet/D1.tar.xz`` as ``out/<app>/<unix time>.pcap``.

    Reuses ``out`` when its manifest says it already holds this archive's conversion.
    """
    archive = data / ARCHIVE
    if not archive.is_file():
        raise ConversionError(f"{archive}: not found (set APPSIGHT_DATA or pass --data)")
    done = cached(archive, out)
    if done is not None:
        return done
    (out / MANIFEST).unlink(missing_ok=True)
    sessions = flows = packets = skipped = 0
    apps: set[str] = set()
    started = time.monotonic()
    for app, stem, content in _sessions(archive):
        records, unusable = session_records(content)
        folder = out / app
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{stem}.pcap.part"
        with open(partial, "wb") as handle:
            handle.write(GLOBAL_HEADER)
            handle.write(records.tobytes())
        partial.replace(folder / f"{stem}.pcap")
        sessions += 1
        flows += len(content) - unusable  # type: ignore[arg-type]  # a list: checked above
        packets += len(records)
        skipped += unusable
        apps.add(app)
        if progress and sessions % 500 == 0:
            print(f"  {sessions} sessions, {packets / 1e6:.1f} M packets, "
                  f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    if not sessions:
        raise ConversionError(f"{archive}: no session files inside")
    conversion = Conversion(**_expected(archive), sessions=sessions, flows=flows,  # type: ignore[arg-type]
                            packets=packets, skipped_flows=skipped, apps=len(apps))
    (out / MANIFEST).write_text(json.dumps(asdict(conversion), indent=2) + "\n")
    return conversion


def default_output() -> Path:
    """Where the pcaps go unless told: the user's cache folder (they are about 1 GB)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "appsight" / "fgnet-D1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=shared_data_dir(),
                        help="the data folder holding fgnet/D1.tar.xz "
                             "(default: $APPSIGHT_DATA or <repo>/../shared/data)")
    parser.add_argument("-o", "--output", type=Path, default=default_output(),
                        help="where the pcaps go (default: %(default)s)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        done = convert(args.data, args.output)
    except (ConversionError, OSError) as error:
        print(f"fgnet_pcaps: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fgnet_pcaps: interrupted; run again to finish", file=sys.stderr)
        return 130
    print(f"{done.sessions} sessions of {done.apps} apps ({done.flows} flows, {done.packets} "
          f"packets, {done.skipped_flows} unusable flows skipped) in {args.output} "
          f"({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
