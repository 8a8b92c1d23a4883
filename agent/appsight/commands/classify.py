"""``appsight classify``: the per-burst report with each flow's app and confidence."""

from __future__ import annotations

import argparse

from ..batch import run_captures
from ..errors import UsageError
from ..inputs import expand_captures
from ..pipeline import PipelineOptions
from ..sinks import JsonLog, Sink, VerdictReporter, classifying_reporter, flow_reporter
from ..verdicts import RecentFlows
from .options import add_model_options, add_verdict_options, open_model, pipeline_options


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
    add_verdict_options(parser, window_default=None)
    parser.set_defaults(run=run)


def reporting_sink(
    args: argparse.Namespace, json_log: JsonLog | None = None, live: bool = False,
) -> tuple[PipelineOptions, Sink]:
    """For classify and live: the pipeline settings (the model's unless overridden) and the
    sink that reports each block, with app and confidence when a model is given (and, live,
    each device's current apps: with --sessions, or under the text report with --device)."""
    if not args.model:
        for given, flag in ((args.threshold is not None, "--threshold"),
                            (args.sessions, "--sessions"),
                            (args.trusted_models is not None, "--trusted-models")):
            if given:
                raise UsageError(f"{flag} needs a model: give one with -m")
        return pipeline_options(args), flow_reporter(args.json, json_log)
    model = open_model(args)
    threshold = model.threshold if args.threshold is None else args.threshold
    options = pipeline_options(args, model)
    recent = None
    if live and (args.sessions or (options.device is not None and not args.json)):
        recent = RecentFlows(args.window, args.min_share)
    return options, classifying_reporter(model, threshold, args.json, json_log, recent,
                                         options.device, show_flows=not args.sessions)


def run(args: argparse.Namespace) -> int:
    if not args.sessions:
        if args.window is not None:
            raise UsageError("--window cuts the windows of --sessions: give --sessions too")
        options, handle = reporting_sink(args)
        return run_captures(expand_captures(args.captures), options, handle)
    model = open_model(args)
    options = pipeline_options(args, model)
    threshold = model.threshold if args.threshold is None else args.threshold
    reporter = VerdictReporter(model, threshold, args.json, options.device, args.window,
                               args.min_share)
    return run_captures(expand_captures(args.captures), options, reporter, reporter.finish)
