"""``appsight classify``: the per-burst report with each flow's app and confidence."""

from __future__ import annotations

import argparse
from typing import IO

from ..batch import run_captures
from ..errors import UsageError
from ..inputs import expand_captures
from ..model import load_model
from ..pipeline import PipelineOptions
from ..sinks import Sink, classifying_reporter, flow_reporter
from .options import add_model_options, pipeline_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "classify", help="name the app of every flow of captures",
        description="The per-burst report with the predicted app (or 'unknown' below the "
        "model's confidence threshold) and the confidence of each flow. The burst gap is the "
        "model's unless given.",
        epilog="examples:\n  appsight classify -m model.skops phone.pcap\n"
        "  appsight classify -m model.skops --json phone.pcap | jq .app",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    parser.set_defaults(run=run)


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
    options, handle = reporting_sink(args)
    return run_captures(expand_captures(args.captures), options, handle)
