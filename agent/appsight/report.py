"""Sinks for flows: the per-burst report for people and JSON Lines for machines.

Both print the same flows with the same fields; ``classify`` and ``live`` add the predicted
app and confidence through ``extra`` columns, so every command's output has one shape.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import IO

import numpy as np

from .addresses import pairs_to_addresses
from .pipeline import FlowBlock

PROTO_NAMES = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah",
               58: "icmpv6", 89: "ospf", 103: "pim", 112: "vrrp", 132: "sctp"}
PROTO_NUMBERS = {name: number for number, name in PROTO_NAMES.items()}


def proto_name(number: int) -> str:
    """``tcp``, ``udp``, ``icmp``... or the protocol number as text."""
    return PROTO_NAMES.get(number, str(number))


def flow_records(block: FlowBlock) -> Iterator[dict[str, object]]:
    """One dict per flow, with the keys of ``appsight flows --json``."""
    f = block.flows
    src = pairs_to_addresses(f.src_hi, f.src_lo)
    dst = pairs_to_addresses(f.dst_hi, f.dst_lo)
    columns = zip(
        (block.first_burst + f.burst).tolist(), f.proto.tolist(), src, f.sport.tolist(), dst,
        f.dport.tolist(), f.first_ts.tolist(), f.last_ts.tolist(), f.packets_fwd.tolist(),
        f.packets_bwd.tolist(), f.bytes_fwd.tolist(), f.bytes_bwd.tolist(), strict=True,
    )
    for burst, proto, s, sport, d, dport, first, last, pf, pb, bf, bb in columns:
        yield {
            "capture": block.capture, "burst": burst, "proto": proto_name(proto),
            "src": s, "sport": sport, "dst": d, "dport": dport,
            "first_ts": round(first / 1e9, 9), "last_ts": round(last / 1e9, 9),
            "packets_fwd": pf, "packets_bwd": pb, "bytes_fwd": bf, "bytes_bwd": bb,
        }


def write_json_lines(
    block: FlowBlock, out: IO[str], extra: dict[str, Sequence[object]] | None = None
) -> None:
    """Print one JSON object per flow; ``extra`` adds columns (e.g. ``app``, ``confidence``)."""
    lines = []
    for i, record in enumerate(flow_records(block)):
        if extra:
            for key, values in extra.items():
                record[key] = values[i]
        lines.append(json.dumps(record, separators=(", ", ": ")))
    if lines:
        out.write("\n".join(lines) + "\n")


def clock(ts_ns: int) -> str:
    """HH:MM:SS.micro (UTC) of a time in nanoseconds."""
    seconds, nanos = divmod(int(ts_ns), 1_000_000_000)
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) + f".{nanos // 1000:06d}"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _endpoint(address: str, port: int, proto: int) -> str:
    if proto not in (6, 17):
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def write_report(
    block: FlowBlock, out: IO[str], extra: dict[str, Sequence[object]] | None = None
) -> None:
    """The per-burst report: a header line per burst, then one line per flow (UTC times).

    Flows evicted from a burst that is still open (live runs, ``block.early``) get a header
    of their own that says so; the rest of that burst comes later under the same number.
    """
    f = block.flows
    src = pairs_to_addresses(f.src_hi, f.src_lo)
    dst = pairs_to_addresses(f.dst_hi, f.dst_lo)
    lines: list[str] = []
    for burst, rows in block.burst_slices():
        first = int(f.first_ts[rows].min())
        last = int(f.last_ts[rows].max())
        packets = int(f.packets_fwd[rows].sum() + f.packets_bwd[rows].sum())
        n_flows = rows.stop - rows.start
        lines.append(
            f"== {block.capture}  burst {burst}  {clock(first)} .. {clock(last)} UTC "
            f"({(last - first) / 1e9:.3f} s)  {n_flows} flow{'s' if n_flows != 1 else ''}, "
            f"{packets} packets"
            + (f"  (reported early, burst still open: {block.early})" if block.early else "")
        )
        for i in range(rows.start, rows.stop):
            proto = int(f.proto[i])
            a = _endpoint(src[i], int(f.sport[i]), proto)
            b = _endpoint(dst[i], int(f.dport[i]), proto)
            arrow = "<->" if f.packets_bwd[i] else "-->"
            line = (
                f"  {clock(int(f.first_ts[i]))}  {proto_name(proto):<6} {a} {arrow} {b}  "
                f"out {int(f.packets_fwd[i])} pkts {_size(int(f.bytes_fwd[i]))}  "
                f"in {int(f.packets_bwd[i])} pkts {_size(int(f.bytes_bwd[i]))}  "
                f"{(int(f.last_ts[i]) - int(f.first_ts[i])) / 1e9:.3f} s"
            )
            if extra:
                line += "  " + "  ".join(_format_extra(k, v[i]) for k, v in extra.items())
            lines.append(line)
    out.write("\n".join(lines) + "\n")


def _format_extra(key: str, value: object) -> str:
    if isinstance(value, float | np.floating):
        return f"{key} {value:.2f}"
    return f"{key} {value}"

