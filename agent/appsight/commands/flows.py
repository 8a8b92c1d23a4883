"""``appsight flows``: the per-burst flow report (or JSON Lines) of captures, a stream or an
interface."""

from __future__ import annotations

import argparse

from ..batch import run_captures
from ..inputs import expand_captures
from ..live_jobs import is_live, run_live
from ..sinks import flow_reporter
from .options import add_live_limits, add_pipeline_options, live_settings, pipeline_options

EPILOG = """\
examples:
  appsight flows phone.pcap                       per-burst report
  appsight flows --json captures/ > flows.jsonl   every capture below a folder, JSON Lines
  appsight flows --burst-gap none --device 10.0.2.15 phone.pcap
  tcpdump -U -w - -i eth1 | appsight flows -      a pcap stream on standard input
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "flows", help="print the flows of each burst of captures",
        description="Print the per-burst flow report: a header line per burst, then one line "
        "per flow with protocol, endpoints, packets and bytes each way, and duration. Bytes "
        "are captured frame bytes (as Wireshark, nDPI and nfstream count them); times are UTC.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pipeline_options(parser)
    parser.add_argument("--json", action="store_true", help="JSON Lines: one object per flow")
    parser.add_argument("--bpf", metavar="FILTER", help="capture filter, for an interface")
    parser.add_argument("--user", help="for an interface: user to switch to once it is open")
    add_live_limits(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = pipeline_options(args)
    handle = flow_reporter(args.json)
    if is_live(args.captures):
        return run_live(args.captures[0], lambda: (options, handle), live_settings(args))
    return run_captures(expand_captures(args.captures), options, handle)
