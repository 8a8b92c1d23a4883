"""Ground truth from the phone itself: which app (Linux UID) owned each connection's socket.

Android gives every app its own Linux UID, and the kernel lists every socket with its owner
in ``/proc/net/tcp``, ``tcp6``, ``udp`` and ``udp6``. Sampling those tables on the phone
while traffic runs, and the package to UID map (``pm list packages -U``), labels every
connection seen at the gateway's internal side (before NAT, so the phone's 5-tuple is the socket's)
with the app that really sent it, background services included, instead of with whatever
app the experimenter meant to run.

A socket is a *connection*: a 5-tuple over the whole capture, where the agent's *flow* is a
5-tuple within one burst. One connection is as many flows as bursts it is active in; the
labels file names connections, and every flow of a labelled connection carries its label.

A sockets file is what a loop like this writes, on Android (adb shell) or any Linux::

    while :; do cat /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6; \
        sleep 0.05; done > sockets.txt

Each table starts with its header line, which tells TCP from UDP (UDP's ends with
``drops``); ``# tcp``-style marks before the tables are understood as well.

Addresses in ``/proc/net`` are the kernel's in-memory words printed in hex, so their byte
order is the phone's: little-endian on every Android and Linux phone platform in use (x86,
ARM), which is what this reader assumes.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .errors import UsageError
from .labels import LABEL_COLUMNS, Endpoint, FlowKey, flow_key
from .pipeline import PipelineOptions, iter_flow_blocks
from .report import flow_records

#: Android's first application UID (AID_APP_START): lower UIDs are the system's own.
FIRST_APP_UID = 10000
#: The label of sockets owned by system UIDs (root, system services, the DHCP client ...).
SYSTEM_LABEL = "system"

#: TCP state TIME_WAIT: the kernel keeps such a closed connection without its owner (the
#: table lists UID 0), so it says nothing about which app the flow was.
_TCP_TIME_WAIT = "06"

_SECTION = re.compile(r"^#\s*(tcp|udp)6?\s*$")
_PACKAGE = re.compile(r"^package:(?P<name>\S+)\s+uid:(?P<uid>\d+)")

@dataclass(frozen=True)
class SocketEntry:
    """One socket of a ``/proc/net`` table."""

    proto: str  # "tcp" or "udp"
    local: Endpoint
    remote: Endpoint
    uid: int


def _address(text: str) -> str:
    """A ``/proc/net`` hex address (little-endian 32-bit words) as a canonical string."""
    raw = bytes.fromhex(text)
    if len(raw) not in (4, 16):
        raise ValueError(f"address of {len(raw)} bytes")
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a v4 connection on a v6 socket
    return str(address)


def _endpoint(text: str) -> Endpoint:
    host, _, port = text.partition(":")
    return _address(host), int(port, 16)


def parse_socket_tables(lines: Iterable[str], source: str = "sockets") -> list[SocketEntry]:
    """The sockets of a sockets file: tables of ``/proc/net``, each after its header line.

    Header lines and rows that do not parse are skipped (a table read while the kernel
    rewrote it can end mid-line); a file with no row at all is an error.
    """
    entries: list[SocketEntry] = []
    proto: str | None = None
    for line in lines:
        marked = _SECTION.match(line.strip())
        if marked:
            proto = marked.group(1)
            continue
        fields = line.split()
        if fields[:2] == ["sl", "local_address"]:  # a table's header line
            proto = "udp" if fields[-1] == "drops" else "tcp"
            continue
        if proto is None or len(fields) < 10 or not fields[0].endswith(":"):
            continue
        if proto == "tcp" and fields[3] == _TCP_TIME_WAIT:
            continue
        try:
            entries.append(SocketEntry(proto, _endpoint(fields[1]), _endpoint(fields[2]),
                                       int(fields[7])))
        except ValueError:
            continue
    if not entries:
        raise UsageError(f"{source}: no socket table rows (expected the content of "
                         f"/proc/net/tcp, tcp6, udp or udp6)")
    return entries


def parse_packages(lines: Iterable[str], source: str = "packages") -> dict[int, str]:
    """UID to app name from ``pm list packages -U`` output (``package:NAME uid:UID``).

    Packages sharing a UID (Android's shared user IDs) are one app to the network: their
    names are joined with ``+``.
    """
    names: dict[int, list[str]] = defaultdict(list)
    for line in lines:
        found = _PACKAGE.match(line.strip())
        if found:
            names[int(found.group("uid"))].append(found.group("name"))
    if not names:
        raise UsageError(f"{source}: no 'package:NAME uid:UID' lines "
                         f"(the output of 'pm list packages -U')")
    return {uid: "+".join(sorted(set(group))) for uid, group in names.items()}


class SocketOwners:
    """Who owned the socket of a flow, from every sample of the phone's socket tables.

    TCP sockets match on both endpoints. UDP sockets are often not connected (the remote
    end is ``0.0.0.0:0``) and often bound to the wildcard address: they match on the local
    port alone when nothing more specific does. A flow whose sockets belonged to several
    UIDs over the session (a port reused by another app) is ambiguous and gets no owner.
    """

    def __init__(self, entries: Iterable[SocketEntry]) -> None:
        self._exact: dict[tuple[str, Endpoint, Endpoint], set[int]] = defaultdict(set)
        self._port: dict[tuple[str, int], set[int]] = defaultdict(set)
        for entry in entries:
            if entry.remote[1] != 0:
                self._exact[(entry.proto, entry.local, entry.remote)].add(entry.uid)
            else:
                self._port[(entry.proto, entry.local[1])].add(entry.uid)
        self.ambiguous = 0

    def owner(self, proto: str, a: Endpoint, b: Endpoint) -> int | None:
        """The UID that owned this flow's socket on the phone, if exactly one did."""
        for local, remote in ((a, b), (b, a)):
            uids = self._exact.get((proto, local, remote))
            if uids:
                return self._single(uids)
        if proto == "udp":
            for local in (a, b):
                uids = self._port.get((proto, local[1]))
                if uids:
                    return self._single(uids)
        return None

    def _single(self, uids: set[int]) -> int | None:
        if len(uids) == 1:
            return next(iter(uids))
        self.ambiguous += 1
        return None


def app_name(uid: int, packages: dict[int, str]) -> str:
    """The label of a UID: ``system`` for the system's own UIDs, else its package."""
    if uid < FIRST_APP_UID:
        return SYSTEM_LABEL
    return packages.get(uid, f"uid{uid}")


def rows_from_sockets(
    captures: Iterable[str | Path], owners: SocketOwners, packages: dict[int, str],
    options: PipelineOptions,
) -> Iterator[tuple[str | None, ...]]:
    """A labels-file row for every connection (5-tuple) of the captures, once per capture.

    The last field, the label, is None where no socket owner is known (a socket that lived
    between two samples, or traffic that did not come from the phone): callers count those
    and leave them out of the labels file.
    """
    for capture in captures:
        seen: set[FlowKey] = set()
        for block in iter_flow_blocks(capture, options):
            for record in flow_records(block):
                proto = str(record["proto"])
                a = (str(record["src"]), int(record["sport"]))  # type: ignore[call-overload]
                b = (str(record["dst"]), int(record["dport"]))  # type: ignore[call-overload]
                key = flow_key(block.capture, proto, a, b)
                if key in seen:
                    continue
                seen.add(key)
                uid = owners.owner(proto, a, b)
                yield (block.capture, proto, a[0], str(a[1]), b[0], str(b[1]),
                       None if uid is None else app_name(uid, packages))


@dataclass
class SocketLabelling:
    """What :func:`write_socket_labels` wrote: connections seen, labelled, per app."""

    connections: int = 0
    labelled: int = 0
    ambiguous: int = 0
    per_app: dict[str, int] = field(default_factory=dict)


def write_socket_labels(
    captures: Sequence[str | Path], sockets: str | Path, packages: str | Path,
    options: PipelineOptions, out: TextIO,
) -> SocketLabelling:
    """Read a session's socket samples and package list, and write the labels file of its
    captures to ``out``: every connection whose socket owner is known, under its app."""
    owners = SocketOwners(parse_socket_tables(read_text_lines(sockets, "socket samples"),
                                              str(sockets)))
    names = parse_packages(read_text_lines(packages, "package list"), str(packages))
    writer = csv.writer(out)
    writer.writerow(LABEL_COLUMNS)
    done = SocketLabelling()
    for row in rows_from_sockets(captures, owners, names, options):
        done.connections += 1
        app = row[-1]
        if app is not None:
            writer.writerow(row)
            done.labelled += 1
            done.per_app[app] = done.per_app.get(app, 0) + 1
    done.ambiguous = owners.ambiguous
    return done


def read_text_lines(path: str | Path, what: str) -> list[str]:
    """The lines of a text file, with a one-line error if it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the {what}: {exc.strerror}") from None
