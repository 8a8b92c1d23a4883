"""``appsight features``: one row per flow, its identifying fields and a feature set's
columns, into CSV or Parquet."""

from __future__ import annotations

import argparse
import sys

from ..batch import run_captures
from ..errors import UsageError
from ..features import DEFAULT_FEATURE_SET, FEATURE_SETS, get_feature_set
from ..inputs import expand_captures
from ..outputs import refuse_input_as_output
from ..pipeline import FlowBlock
from ..report import flow_records
from ..tables import FeatureTableWriter
from .options import add_pipeline_options, pipeline_options

EPILOG = """\
examples:
  appsight features phone.pcap -o phone.csv
  appsight features --features timing39 captures/ -o features.parquet
  appsight features --list                        the feature sets and their columns
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "features", help="write per-flow feature tables (CSV or Parquet)",
        description="Write one row per flow: the identifying fields of 'flows --json' plus the "
        "columns of a feature set. Packet lengths in features are IP-layer lengths, so "
        "Ethernet, Linux cooked and raw-IP captures give the same features.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pipeline_options(parser)
    parser.add_argument(
        "-o", "--output", metavar="FILE",
        help="FILE.csv, FILE.parquet, or - for CSV on standard output",
    )
    parser.add_argument(
        "--features", default=DEFAULT_FEATURE_SET, metavar="SET",
        help=f"feature set: {', '.join(FEATURE_SETS)} (default {DEFAULT_FEATURE_SET})",
    )
    parser.add_argument("--list", action="store_true", help="list the feature sets and exit")
    parser.set_defaults(run=run)


def _list_feature_sets() -> int:
    for fs in FEATURE_SETS.values():
        default = " (default)" if fs.name == DEFAULT_FEATURE_SET else ""
        print(f"{fs.tag}{default}: {fs.summary}")
        print("    " + ", ".join(fs.columns))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list_feature_sets()
    if not args.output:
        raise UsageError("features: say where to write with -o FILE.csv or -o FILE.parquet")
    feature_set = get_feature_set(args.features)
    options = pipeline_options(args)
    captures = expand_captures(args.captures)
    refuse_input_as_output(args.output, captures)
    table = FeatureTableWriter(args.output, feature_set.columns)
    interrupted = False
    status = 2  # until run_captures returns: an exception keeps only what was written

    def handle(block: FlowBlock) -> None:
        table.write(list(flow_records(block)), feature_set(block.flows))

    try:
        status = run_captures(captures, options, handle)
    except KeyboardInterrupt:
        interrupted = True
        status = 130
    finally:
        # Keep what was written unless every capture failed: then the old file stays.
        kept = interrupted or status == 0 or table.rows > 0
        table.close(keep=kept)
    where = "standard output" if args.output == "-" else args.output
    if not kept:
        print(f"appsight: nothing written: no capture could be read ({where} is as it was)",
              file=sys.stderr)
        return status
    state = "interrupted: " if interrupted else ""
    print(
        f"appsight: {state}wrote {table.rows} flows x {len(feature_set.columns)} "
        f"{feature_set.tag} features to {where}",
        file=sys.stderr,
    )
    return status
