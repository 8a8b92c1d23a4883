"""``appsight labels``: labels files for ``train --labels``, from nDPI's listings or from the
phone's own socket tables."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..errors import UsageError
from ..inputs import expand_captures
from ..labels import LABEL_COLUMNS, rows_from_ndpi
from ..outputs import AtomicFile, refuse_input_as_output
from .options import add_pipeline_options, pipeline_options

SOCKETS_EPILOG = """\
on the phone while the session runs (adb shell, or ssh on the emulated phone):
  while :; do cat /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6; sleep 0.05; \\
      done > /data/local/tmp/sockets.txt
  pm list packages -U > /data/local/tmp/packages.txt
then:
  appsight labels from-sockets --sockets sockets.txt --packages packages.txt \\
      --device 192.168.56.0/24 session.pcap -o labels.csv"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    labels = sub.add_parser(
        "labels", help="make flow labels files",
        description="Make labels files (CSV: capture,proto,src,sport,dst,dport,label) for "
        "'appsight train --labels'.",
    )
    labels_sub = labels.add_subparsers(dest="labels_command", metavar="SOURCE", required=True)
    _add_from_ndpi(labels_sub)
    _add_from_sockets(labels_sub)


def _add_from_ndpi(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "from-ndpi", help="labels from ndpiReader listings (.out files)",
        description="Turn ndpiReader flow listings (the .out files of nDPI's test suite, "
        "named CAPTURE.out) into a labels file. Flows nDPI did not identify are left out, "
        "and so are its guesses by port or IP address unless --guesses is given.",
        epilog="example:\n  appsight labels from-ndpi ../shared/data/ndpi/ -o ndpi-labels.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("listings", nargs="+", metavar="LISTING",
                        help=".out files or folders of them")
    parser.add_argument("-o", "--output", metavar="FILE", help="CSV file (default: stdout)")
    parser.add_argument(
        "--label", choices=("app", "master"), default="app",
        help="app: the application (YouTube of TLS.YouTube; default); master: the protocol (TLS)",
    )
    parser.add_argument("--guesses", action="store_true",
                        help="also keep flows nDPI matched only by port or IP address")
    parser.set_defaults(run=run_from_ndpi)


def _add_from_sockets(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "from-sockets", help="labels from the phone's own socket tables (per-app UIDs)",
        description="Label every flow of a session's captures with the app that owned its "
        "socket on the phone: Android gives each app its own UID, and the kernel lists each "
        "socket's UID in /proc/net/tcp, tcp6, udp and udp6. Sample those tables on the phone "
        "while the session runs, list the apps with 'pm list packages -U', and capture on the "
        "gateway's internal side (before NAT). UIDs below 10000 are labelled 'system'. Flows "
        "whose socket was never sampled (it lived between two samples) are left out.",
        epilog=SOCKETS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pipeline_options(parser)
    parser.add_argument("--sockets", required=True, metavar="FILE",
                        help="the phone's socket tables, sampled during the session")
    parser.add_argument("--packages", required=True, metavar="FILE",
                        help="output of 'pm list packages -U' (package:NAME uid:UID)")
    parser.add_argument("-o", "--output", metavar="FILE", help="CSV file (default: stdout)")
    parser.set_defaults(run=run_from_sockets)


def _listings(items: list[str]) -> list[Path]:
    """The .out files named, or found below the folders named."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(path.rglob("*.out")))
        elif path.exists():
            paths.append(path)
        else:
            raise UsageError(f"{item}: no such file or folder")
    if not paths:
        raise UsageError("no ndpiReader .out listings found")
    return paths


@contextmanager
def labels_output(path: str | None) -> Iterator[IO[str]]:
    """Standard output, or a new file that replaces ``path`` only if the command succeeds."""
    if path in (None, "-"):
        yield sys.stdout
        return
    with AtomicFile(path) as output:
        yield output.handle


def run_from_ndpi(args: argparse.Namespace) -> int:
    paths = _listings(args.listings)
    refuse_input_as_output(args.output, paths)
    with labels_output(args.output) as out:
        writer = csv.writer(out)
        writer.writerow(LABEL_COLUMNS)
        rows = 0
        for row in rows_from_ndpi(paths, label=args.label, guesses=args.guesses):
            writer.writerow(row)
            rows += 1
    print(f"appsight: {rows} labelled flows from {len(paths)} listings", file=sys.stderr)
    return 0


def run_from_sockets(args: argparse.Namespace) -> int:
    from ..sockets import write_socket_labels

    captures = expand_captures(args.captures)
    if not captures or "-" in captures:
        raise UsageError("give the capture files of the session (not standard input)")
    refuse_input_as_output(args.output, [*captures, args.sockets, args.packages])
    with labels_output(args.output) as out:
        done = write_socket_labels(captures, args.sockets, args.packages,
                                   pipeline_options(args), out)
    share = f" ({100 * done.labelled / done.connections:.0f} %)" if done.connections else ""
    print(f"appsight: {done.labelled} of {done.connections} connections labelled by their "
          f"socket's owner"
          f"{share}; {done.ambiguous} left out as ambiguous", file=sys.stderr)
    return 0
