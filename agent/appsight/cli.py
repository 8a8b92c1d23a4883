"""The ``appsight`` command: one entry point, a subcommand per job.

Every subcommand reads captures through the same pipeline (:mod:`appsight.pipeline`). Bad
input ends in a one-line ``appsight: error: ...`` and exit status 2, never a traceback; with
several captures, a bad one is reported and the others are still processed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .addresses import NetworkMatcher
from .bursts import DEFAULT_BURST_GAP, parse_burst_gap
from .errors import AppsightError, UsageError
from .features import DEFAULT_FEATURE_SET, FEATURE_SETS, get_feature_set
from .pipeline import CaptureSummary, FlowBlock, PipelineOptions, iter_flow_blocks
from .progress import Progress
from .report import flow_records, write_json_lines, write_report
from .tables import FeatureTableWriter

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz")

EPILOG_FLOWS = """\
examples:
  appsight flows phone.pcap                       per-burst report
  appsight flows --json captures/ > flows.jsonl   every capture below a folder, JSON Lines
  appsight flows --burst-gap none --device 10.0.2.15 phone.pcap
  tcpdump -U -w - -i eth1 | appsight flows -      a pcap stream on standard input
"""

EPILOG_FEATURES = """\
examples:
  appsight features phone.pcap -o phone.csv
  appsight features --features timing39 captures/ -o features.parquet
  appsight features --list                        the feature sets and their columns
"""


def _add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "captures", nargs="*", metavar="CAPTURE",
        help="pcap or pcapng files (optionally .gz), folders of them, or - for standard input",
    )
    parser.add_argument(
        "--burst-gap", default=str(DEFAULT_BURST_GAP), metavar="SECONDS",
        help="silence that ends a burst, over all traffic of the capture "
        f"(default {DEFAULT_BURST_GAP}); 'none' makes the whole capture one burst",
    )
    parser.add_argument(
        "--device", action="append", metavar="ADDRESS_OR_CIDR",
        help="the phone's address or network: a flow's forward direction is then 'sent by the "
        "device' (repeatable); by default it is the direction of the flow's first packet",
    )
    parser.add_argument(
        "--no-decap", action="store_true",
        help="do not decapsulate tunnels (IP-in-IP, GRE, GTP-U, VXLAN, CAPWAP, TZSP): "
        "count the outer flows instead of the inner ones",
    )


def _options(args: argparse.Namespace) -> PipelineOptions:
    return PipelineOptions(
        burst_gap=parse_burst_gap(args.burst_gap),
        device=NetworkMatcher.parse(args.device) if args.device else None,
        decapsulate=not args.no_decap,
    )


def expand_captures(inputs: list[str]) -> list[str]:
    """Files as given, folders replaced by the captures below them (sorted), ``-`` kept."""
    if not inputs:
        raise UsageError("no capture given (a file, a folder, or - for standard input)")
    found: list[str] = []
    for item in inputs:
        if item == "-":
            found.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            below = sorted(
                str(p) for p in path.rglob("*")
                if p.is_file() and p.name.lower().endswith(CAPTURE_SUFFIXES)
            )
            if not below:
                raise UsageError(f"{item}: folder holds no .pcap/.pcapng/.cap files")
            found.extend(below)
        elif path.exists():
            found.append(item)
        else:
            raise UsageError(f"{item}: no such file or folder")
    return found


def run_captures(
    captures: list[str],
    options: PipelineOptions,
    handle: Callable[[FlowBlock], None],
) -> int:
    """Feed every capture's flow blocks to ``handle``; report per-capture problems.

    Returns the exit status: 0, or 2 if any capture could not be read at all.
    """
    status = 0
    progress = Progress(len(captures))

    def summary(s: CaptureSummary) -> None:
        progress.capture_done(s.packets, s.flows)
        warning = s.warning()
        if warning:
            progress.clear()
            print(f"appsight: warning: {warning}", file=sys.stderr)

    try:
        for capture in captures:
            try:
                for block in iter_flow_blocks(capture, options, summary, progress.update):
                    handle(block)
            except AppsightError as exc:
                progress.clear()
                print(f"appsight: error: {exc}", file=sys.stderr)
                status = exc.exit_status
    finally:
        progress.clear()
    return status


# ------------------------------------------------------------------ commands
def cmd_flows(args: argparse.Namespace) -> int:
    options = _options(args)
    captures = expand_captures(args.captures)
    out = sys.stdout
    writer = write_json_lines if args.json else write_report

    def handle(block: FlowBlock) -> None:
        writer(block, out)
        out.flush()  # a burst is reported as soon as it is complete, also into a pipe

    return run_captures(captures, options, handle)


def cmd_features(args: argparse.Namespace) -> int:
    if args.list:
        for fs in FEATURE_SETS.values():
            default = " (default)" if fs.name == DEFAULT_FEATURE_SET else ""
            print(f"{fs.tag}{default}: {fs.summary}")
            print("    " + ", ".join(fs.columns))
        return 0
    if not args.output:
        raise UsageError("features: say where to write with -o FILE.csv or -o FILE.parquet")
    feature_set = get_feature_set(args.features)
    options = _options(args)
    captures = expand_captures(args.captures)
    table = FeatureTableWriter(args.output, feature_set.columns)
    interrupted = False

    def handle(block: FlowBlock) -> None:
        table.write(list(flow_records(block)), feature_set(block.flows))

    try:
        status = run_captures(captures, options, handle)
    except KeyboardInterrupt:
        interrupted = True
        status = 130
    finally:
        table.close()
    where = "standard output" if args.output == "-" else args.output
    state = "interrupted: " if interrupted else ""
    print(
        f"appsight: {state}wrote {table.rows} flows x {len(feature_set.columns)} "
        f"{feature_set.tag} features to {where}",
        file=sys.stderr,
    )
    return status


# ------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appsight",
        description="Tell which app a network flow came from, although its payload is "
        "encrypted: packets are cut into bursts (1 s of silence) and flows, flows into "
        "features (packet sizes and timing), and a random forest names the app.",
        epilog="Run 'appsight COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"appsight {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    flows = sub.add_parser(
        "flows", help="print the flows of each burst of captures",
        description="Print the per-burst flow report: a header line per burst, then one line "
        "per flow with protocol, endpoints, packets and bytes each way, and duration. Bytes "
        "are captured frame bytes (as Wireshark, nDPI and nfstream count them); times are UTC.",
        epilog=EPILOG_FLOWS, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_pipeline_options(flows)
    flows.add_argument("--json", action="store_true", help="JSON Lines: one object per flow")
    flows.set_defaults(run=cmd_flows)

    features = sub.add_parser(
        "features", help="write per-flow feature tables (CSV or Parquet)",
        description="Write one row per flow: the identifying fields of 'flows --json' plus the "
        "columns of a feature set. Packet lengths in features are IP-layer lengths, so "
        "Ethernet, Linux cooked and raw-IP captures give the same features.",
        epilog=EPILOG_FEATURES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_pipeline_options(features)
    features.add_argument(
        "-o", "--output", metavar="FILE",
        help="FILE.csv, FILE.parquet, or - for CSV on standard output",
    )
    features.add_argument(
        "--features", default=DEFAULT_FEATURE_SET, metavar="SET",
        help=f"feature set: {', '.join(FEATURE_SETS)} (default {DEFAULT_FEATURE_SET})",
    )
    features.add_argument("--list", action="store_true", help="list the feature sets and exit")
    features.set_defaults(run=cmd_features)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except AppsightError as exc:
        print(f"appsight: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("appsight: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. '| head'): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
