"""Parser for ndpiReader's flow listings (the ``.out`` files of nDPI's test suite).

nDPI's verdicts are this project's independent ground truth twice over: its per-flow packet
and byte counters check the flow engine, and its application labels label real captures for
training. Each flow line looks like::

    <tab><idx><tab><L4> <src>:<sport> <->|-> <dst>:<dport> [VLAN: 7]
        [proto: [TUNNEL:]<ids>/<Master>[.<App>]]...
        [Confidence: DPI]...[<n> pkts/<b> bytes <->|-> <n> pkts/<b> bytes]...[Hostname/SNI: ...]

``src`` is the side that sent the flow's first packet; counters are captured frame bytes.
Flows listed after ``Undetected flows:`` are unknown to nDPI.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import AppsightError

_FLOW = re.compile(
    r"^\t(?P<idx>\d+)\t(?P<l4>[A-Za-z0-9_-]+) (?P<src>\[[0-9a-fA-F:.]+\]|[0-9.]+):(?P<sport>\d+) "
    r"(?P<dir><->|->) (?P<dst>\[[0-9a-fA-F:.]+\]|[0-9.]+):(?P<dport>\d+) (?P<rest>.*)$"
)
_COUNTERS = re.compile(r"\[(\d+) pkts/(\d+) bytes (?:<->|->) (\d+) pkts/(\d+) bytes\]")
_PROTO = re.compile(r"\[proto: (?:(?P<tunnel>[A-Za-z0-9_]+):)?(?P<ids>[0-9.]+)/(?P<label>[^\]]+)\]")
_CONFIDENCE = re.compile(r"\[Confidence: ([^\]]+)\]")
_HOST = re.compile(r"\[Hostname/SNI: ([^\]]*)\]")
_VLAN = re.compile(r"\[VLAN: (\d+)\]")


@dataclass(frozen=True)
class NdpiFlow:
    """One flow of an ndpiReader listing."""

    index: int
    l4: str  # as nDPI names it: TCP, UDP, ICMP, ICMPV6, IGMP, ... or a number
    src: str
    sport: int
    dst: str
    dport: int
    bidirectional: bool
    packets_c2s: int
    bytes_c2s: int
    packets_s2c: int
    bytes_s2c: int
    label: str  # "Master.App", "App", or "Unknown"
    tunnel: str
    confidence: str
    vlan: int | None
    hostname: str
    detected: bool

    @property
    def master(self) -> str:
        return self.label.split(".", 1)[0]

    @property
    def app(self) -> str:
        return self.label.split(".", 1)[-1]


def parse_ndpi_out(text: str) -> Iterator[NdpiFlow]:
    """Flows of one ``.out`` listing, in the order nDPI printed them."""
    detected = True
    for line in text.splitlines():
        if line.startswith("Undetected flows:"):
            detected = False
            continue
        match = _FLOW.match(line)
        if match is None:
            continue
        rest = match["rest"]
        counters = _COUNTERS.search(rest)
        if counters is None:
            continue
        proto = _PROTO.search(rest)
        confidence = _CONFIDENCE.search(rest)
        host = _HOST.search(rest)
        vlan = _VLAN.search(rest)
        yield NdpiFlow(
            index=int(match["idx"]),
            l4=match["l4"],
            src=match["src"].strip("[]"),
            sport=int(match["sport"]),
            dst=match["dst"].strip("[]"),
            dport=int(match["dport"]),
            bidirectional=match["dir"] == "<->",
            packets_c2s=int(counters[1]),
            bytes_c2s=int(counters[2]),
            packets_s2c=int(counters[3]),
            bytes_s2c=int(counters[4]),
            label=proto["label"] if proto else "Unknown",
            tunnel=(proto["tunnel"] or "") if proto else "",
            confidence=confidence[1] if confidence else "",
            vlan=int(vlan[1]) if vlan else None,
            hostname=host[1] if host else "",
            detected=detected,
        )


def read_ndpi_out(path: str | Path) -> list[NdpiFlow]:
    """Parse an ndpiReader ``.out`` file; undecodable bytes (fuzzed captures) are replaced."""
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise AppsightError(f"{path}: cannot read: {exc.strerror}") from None
    return list(parse_ndpi_out(text))
