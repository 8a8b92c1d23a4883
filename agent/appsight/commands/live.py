"""``appsight live``: an interface or a pcap stream classified (or, without a model,
reported) burst by burst as it happens."""

from __future__ import annotations

import argparse

from ..batch import run_captures
from ..inputs import expand_captures
from ..live_jobs import is_live, run_live
from ..sinks import open_json_log
from .classify import reporting_sink
from .options import add_live_limits, add_model_options, add_verdict_options, live_settings

#: How far back a device's current apps look, live.
LIVE_WINDOW = 30.0

DESCRIPTION = """\
The per-burst report with the predicted app (or 'unknown') and the
confidence of each flow, printed about a second after each burst ends. The source
is a network interface, or - for a pcap stream on standard input. SIGUSR1 prints
the kernel's drop counters.

Without -m: the per-burst flow report of 'appsight flows' (no app column), so that a
gateway can run the agent before a model is trained.

Traffic that never pauses for the burst gap makes one endless burst. An open burst
holds at most --max-flows flows and --max-packets packets: beyond, its flows silent
longest are reported early (one warning line per burst, their count at exit)."""

EPILOG = """\
examples:
  appsight live eth1 -m model.skops --device 192.168.56.0/24
  appsight live eth1 -m model.skops --device 192.168.56.0/24 --sessions --json
  ssh gateway tcpdump -U -w - -i eth1 | appsight live - -m model.skops --json
  appsight live eth1 --device 192.168.56.0/24    no model yet: the flows only"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "live", help="classify (or, without a model, report) the flows of an interface or a "
        "pcap stream as it happens",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser, model_required=False)
    parser.add_argument("--json-log", metavar="FILE",
                        help="also append every reported flow to FILE as JSON Lines (with app "
                        "and confidence when classifying), next to the report on stdout")
    parser.add_argument("--bpf", metavar="FILTER", help="capture filter (tcpdump syntax)")
    parser.add_argument("--write-pcap", metavar="DIR",
                        help="also keep the packets, as pcap files")
    parser.add_argument("--rotate-mb", type=float, metavar="MB", help="with --write-pcap")
    parser.add_argument("--rotate-seconds", type=float, metavar="S", help="with --write-pcap")
    parser.add_argument("--user", help="user to switch to once the socket is open")
    add_live_limits(parser)
    add_verdict_options(parser, window_default=LIVE_WINDOW)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    json_log = open_json_log(args.json_log) if args.json_log else None
    try:
        if is_live(args.captures):
            # The model is loaded after the interface is open and root is dropped.
            return run_live(args.captures[0], lambda: reporting_sink(args, json_log, live=True),
                            live_settings(args))
        options, handle = reporting_sink(args, json_log, live=True)
        return run_captures(expand_captures(args.captures), options, handle)
    finally:
        if json_log is not None:
            json_log.close()
