"""``appsight classify``: the per-burst report with each flow's app and confidence."""

from __future__ import annotations

import argparse
import math
from typing import IO

from ..batch import run_captures
from ..errors import UsageError
from ..inputs import expand_captures
from ..model import load_model
from ..pipeline import PipelineOptions
from ..sinks import Sink, VerdictReporter, classifying_reporter, flow_reporter
from ..verdicts import DEFAULT_MIN_SHARE
from .options import add_model_options, pipeline_options, probability


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "classify", help="name the app of every flow of captures",
        description="The per-burst report with the predicted app (or 'unknown' below the "
        "model's confidence threshold) and the confidence of each flow. The burst gap is the "
        "model's unless given.",
        epilog="examples:\n  appsight classify -m model.skops phone.pcap\n"
        "  appsight classify -m model.skops --json phone.pcap | jq .app\n"
        "  appsight classify -m model.skops --sessions phone.pcap       # which apps ran\n"
        "  appsight classify -m model.skops --sessions --window 30 --device 10.0.0.0/24 "
        "gateway.pcap",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    verdicts = parser.add_argument_group(
        "which apps are running (--sessions)",
        "Instead of a line per flow, the apps each device was running: the answered flows\n"
        "vote with their confidence, and an app is named when it holds at least --min-share\n"
        "of the votes (none named: unknown). Without --device, all traffic of a capture is\n"
        "one device. With --json, one object per device and window.")
    verdicts.add_argument("--sessions", action="store_true",
                          help="report the active apps per device and window, not per flow")
    verdicts.add_argument("--window", type=seconds, metavar="SECONDS",
                          help="cut each device's traffic into windows of this length "
                          "(default: the whole capture)")
    verdicts.add_argument("--min-share", type=share, default=DEFAULT_MIN_SHARE, metavar="P",
                          help="an app's share of a window's votes to be named "
                          f"(default {DEFAULT_MIN_SHARE})")
    parser.set_defaults(run=run)


def seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def share(text: str) -> float:
    """An argparse type: a share of the votes, above 0 and at most 1."""
    value = probability(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError("0 would name every app that got a vote")
    return value


def reporting_sink(
    args: argparse.Namespace, json_log: IO[str] | None = None,
) -> tuple[PipelineOptions, Sink]:
    """For classify and live: the pipeline settings (the model's unless overridden) and the
    sink that reports each block, with app and confidence when a model is given."""
    if not args.model:
        if args.threshold is not None:
            raise UsageError("--threshold is the model's confidence threshold: "
                             "give a model with -m")
        return pipeline_options(args), flow_reporter(args.json, json_log)
    model = load_model(args.model)
    threshold = model.threshold if args.threshold is None else args.threshold
    return (pipeline_options(args, model),
            classifying_reporter(model, threshold, args.json, json_log))


def run(args: argparse.Namespace) -> int:
    if not args.sessions:
        if args.window is not None:
            raise UsageError("--window cuts the windows of --sessions: give --sessions too")
        options, handle = reporting_sink(args)
        return run_captures(expand_captures(args.captures), options, handle)
    model = load_model(args.model)
    options = pipeline_options(args, model)
    threshold = model.threshold if args.threshold is None else args.threshold
    reporter = VerdictReporter(model, threshold, args.json, options.device, args.window,
                               args.min_share)
    return run_captures(expand_captures(args.captures), options, reporter, reporter.finish)
