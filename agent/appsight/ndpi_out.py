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

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import AppsightError

#: The longest text form of an address: IPv6 with an embedded IPv4 address, 45 characters.
MAX_ADDRESS_TEXT = 45
_ADDRESS = rf"\[[0-9a-fA-F:.]{{2,{MAX_ADDRESS_TEXT}}}\]|[0-9.]{{7,15}}"
_FLOW = re.compile(
    rf"^\t(?P<idx>\d+)\t(?P<l4>[A-Za-z0-9_-]+) (?P<src>{_ADDRESS}):(?P<sport>\d{{1,5}}) "
    rf"(?P<dir><->|->) (?P<dst>{_ADDRESS}):(?P<dport>\d{{1,5}}) (?P<rest>.*)$"
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
        if match is None or int(match["sport"]) > 65535 or int(match["dport"]) > 65535:
            continue  # not a flow line (or not one that ndpiReader could have printed)
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


def _ndpi_style(address: str) -> str:
    """How ndpiReader prints an IPv6 address: as usual, but a lone zero group is left empty."""
    return ":".join("" if group == "0" else group for group in address.split(":"))


def canonical_address(text: str) -> str:
    """The standard text form of an address as ndpiReader prints it.

    ndpiReader writes a single zero group of an IPv6 address as an empty group, so
    ``2a03:2880:f030:13:face:b00c:0:3`` appears as ``...b00c::3`` and an address can even show
    two ``::`` (``2600:1901::7a0b::``). Each ``::`` is tried as the one real compression, the
    others as zero groups, last one first (ndpiReader's output, checked against the packets of
    its test captures, puts the real compression last), and the first reading that ndpiReader
    would print back as ``text`` wins.
    """
    if len(text) > MAX_ADDRESS_TEXT:  # each '::' is a guess: bound the work before guessing
        raise AppsightError(f"cannot read the address {text[:50]!r}... of an nDPI listing")
    try:
        return str(ipaddress.ip_address(text)) if text.count("::") <= 1 else _guess_v6(text)
    except ValueError:
        return _guess_v6(text)


def _guess_v6(text: str) -> str:
    def zeros(part: str) -> str:
        return ":".join(group or "0" for group in part.split(":")) if part else ""

    candidates = []
    start = 0
    while (at := text.find("::", start)) >= 0:
        candidates.append(zeros(text[:at]) + "::" + zeros(text[at + 2 :]))
        start = at + 1
    candidates.reverse()
    candidates.append(zeros(text))
    for candidate in candidates:
        try:
            address = ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        if _ndpi_style(address.compressed) == text or address.compressed == text:
            return address.compressed
    raise AppsightError(f"cannot read the address {text!r} of an nDPI listing")
