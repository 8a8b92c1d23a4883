"""Flow labels: which app each flow of a capture belongs to.

Four sources, one format. A labels file is CSV with the header
``capture,proto,src,sport,dst,dport,label``: ``capture`` is the capture's file name, ``proto``
is written as in ``appsight flows --json`` (``tcp``, ``udp``, ``icmp``, ... or a number), and
matching ignores direction. Every burst of a labelled 5-tuple in that capture gets the label.
It can be written by hand; ndpiReader listings turn into one (:func:`rows_from_ndpi`), and so
do the phone's own socket tables (:mod:`appsight.sockets`); without a file, a folder per app
(``DIR/<app>/*.pcap``) labels every flow of its captures with the folder's name.
"""

from __future__ import annotations

import csv
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import AppsightError, UsageError
from .ndpi_out import canonical_address, read_ndpi_out
from .pipeline import FlowBlock
from .report import PROTO_NUMBERS, proto_name

LABEL_COLUMNS = ("capture", "proto", "src", "sport", "dst", "dport", "label")

#: Ports of network housekeeping that every app's capture carries (DNS, DHCP, NTP, NetBIOS,
#: SSDP, mDNS, LLMNR, DHCPv6): ``--drop-background`` leaves these flows out of training.
BACKGROUND_PORTS = frozenset({53, 67, 68, 123, 137, 138, 546, 547, 1900, 5353, 5355})

#: nDPI confidence values that come from inspecting the payload, not from a guess.
NDPI_DPI_CONFIDENCE_PREFIX = "DPI"

Endpoint = tuple[str, int]
FlowKey = tuple[str, str, Endpoint, Endpoint]


def flow_key(capture: str, proto: str, a: Endpoint, b: Endpoint) -> FlowKey:
    """Direction-free identity of a flow within a capture."""
    return (capture, proto, min(a, b), max(a, b))


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is not between 0 and 65535")
    return port


def _normal_proto(text: str) -> str:
    text = text.strip().lower()
    if text.isdigit():
        return proto_name(int(text))
    if text not in PROTO_NUMBERS:
        raise ValueError(f"unknown protocol {text!r}")
    return text


@dataclass
class LabelTable:
    """Labels by direction-free 5-tuple and capture."""

    labels: dict[FlowKey, str]

    @classmethod
    def read_csv(cls, path: str | Path) -> LabelTable:
        """Read and validate a labels file; errors name the file and line."""
        try:
            # utf-8-sig: spreadsheet programs start their CSV files with a byte-order mark
            handle = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"{path}: cannot read labels: {exc.strerror}") from None
        reader = csv.DictReader(handle)
        try:
            with handle:
                return cls(_read_rows(path, reader))
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
        except csv.Error as exc:  # e.g. a field over the csv module's 131072-character limit
            line = reader.reader.line_num  # DictReader's own count lags on an error
            raise UsageError(f"{path}, line {line}: not a labels CSV ({exc})") from None

    def captures(self) -> set[str]:
        return {key[0] for key in self.labels}

    def label_block(self, block: FlowBlock, records: list[dict[str, object]]) -> list[str | None]:
        """The label of each flow of a block (None: not in the table)."""
        out: list[str | None] = []
        for record in records:
            key = flow_key(
                block.capture, str(record["proto"]),
                (str(record["src"]), int(record["sport"])),  # type: ignore[call-overload]
                (str(record["dst"]), int(record["dport"])),  # type: ignore[call-overload]
            )
            out.append(self.labels.get(key))
        return out


def _read_rows(path: str | Path, reader: csv.DictReader) -> dict[FlowKey, str]:
    """The rows of a labels file, validated; errors name the file and line."""
    labels: dict[FlowKey, str] = {}
    missing = set(LABEL_COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise UsageError(
            f"{path}: not a labels file: needs the columns {','.join(LABEL_COLUMNS)} "
            f"(missing {', '.join(sorted(missing))})"
        )
    for line, row in enumerate(reader, start=2):
        try:
            proto = _normal_proto(row["proto"])
            a = (str(ipaddress.ip_address(row["src"].strip())), _port(row["sport"]))
            b = (str(ipaddress.ip_address(row["dst"].strip())), _port(row["dport"]))
            label = row["label"].strip()
            if not label or not row["capture"].strip():
                raise ValueError("empty capture or label")
        except (ValueError, TypeError, AttributeError) as exc:
            raise UsageError(f"{path}, line {line}: {exc}") from None
        key = flow_key(Path(row["capture"].strip()).name, proto, a, b)
        previous = labels.setdefault(key, label)
        if previous != label:
            raise UsageError(
                f"{path}, line {line}: flow labelled twice ({previous!r} and {label!r})"
            )
    return labels


def is_background(record: dict[str, object]) -> bool:
    """A housekeeping flow (DNS, DHCP, NTP, ...) that says nothing about the app."""
    return record["sport"] in BACKGROUND_PORTS or record["dport"] in BACKGROUND_PORTS


def rows_from_ndpi(
    paths: Iterable[str | Path], label: str = "app", guesses: bool = False
) -> Iterator[tuple[str, ...]]:
    """Labels-file rows from ndpiReader ``.out`` listings.

    ``label`` is ``app`` (the part after the dot of ``TLS.YouTube``, or the whole label) or
    ``master`` (``TLS``). Flows nDPI could not identify are left out, and so, unless
    ``guesses`` is true, are flows it only guessed by port or IP address.
    """
    if label not in ("app", "master"):
        raise UsageError(f"--label must be app or master, not {label!r}")
    for path in paths:
        path = Path(path)
        capture = path.name[:-4] if path.name.endswith(".out") else path.name
        for flow in read_ndpi_out(path):
            if not flow.detected or flow.label == "Unknown":
                continue
            if not guesses and not flow.confidence.startswith(NDPI_DPI_CONFIDENCE_PREFIX):
                continue
            try:
                proto = _normal_proto(flow.l4)
                src, dst = canonical_address(flow.src), canonical_address(flow.dst)
            except (ValueError, AppsightError):
                continue
            name = flow.app if label == "app" else flow.master
            yield (capture, proto, src, str(flow.sport), dst, str(flow.dport), name)
