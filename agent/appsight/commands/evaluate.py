"""``appsight evaluate``: accuracy on captures the model has not seen, by grouped
cross-validation or against separate test inputs; tables, results.json and plots."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..features import FeatureSet, get_feature_set
from ..labels import LabelTable
from ..pipeline import PipelineOptions
from ..progress import Progress
from .options import (
    AMBIGUITY_HELP,
    add_forest_options,
    add_pipeline_options,
    pipeline_options,
    probability,
    seed,
)

DESCRIPTION = """\
Measure how well the forest of 'train' names apps in captures it has not
seen: grouped cross-validation by capture (the flows of a capture, and captures that
share packets per --groups-file, never sit on both sides), or training inputs against
separate --test inputs. The confidence threshold is chosen as 'train' chooses it,
from the training side only: on its captures held out by a cross-validation inside it.

Prints the per-app table (% correct, % unknown), AppScanner's reject-option table
(thresholds 0.5 / 0.7 / 0.9) and macro-F1; writes results.json, confusion.png and
coverage.png to the results folder. Give --test after the training inputs."""

EPILOG = """\
examples:
  appsight labels from-ndpi ../shared/data/ndpi/ -o ndpi-labels.csv
  appsight evaluate --labels ndpi-labels.csv ../shared/data/ndpi/ \\
      --groups-file ../shared/data/pcap_overlaps.tsv --min-class-flows 10 --min-class-captures 2
  appsight evaluate captures/ --test new-captures/ -o results/new"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate", help="measure accuracy on captures the model has not seen",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pipeline_options(parser)
    parser.add_argument("--labels", metavar="CSV",
                        help="labels file (default: folders DIR/<app>/*.pcap name the app)")
    add_forest_options(parser)
    parser.add_argument("--folds", type=int, default=5, metavar="K",
                        help="cross-validation folds (default 5)")
    parser.add_argument("--test", nargs="+", metavar="INPUT",
                        help="test on these captures instead of cross-validating")
    parser.add_argument("--test-labels", metavar="CSV",
                        help="labels file for the --test inputs (default: --labels)")
    parser.add_argument("--groups-file", metavar="TSV", action="append",
                        help="pairs of captures that must stay together, tab-separated "
                        "with columns file_a and file_b relative to the file's folder "
                        "(as ../shared/data/pcap_overlaps.tsv); repeatable")
    parser.add_argument("--threshold", type=probability, metavar="P",
                        help="confidence below which a flow is 'unknown' (default: chosen "
                        "as train chooses it, on each training side)")
    parser.add_argument("--min-class-flows", type=int, default=1, metavar="N",
                        help="only apps with at least N flows (default 1)")
    parser.add_argument("--min-class-captures", type=int, default=1, metavar="N",
                        help="only apps seen in at least N independent captures; "
                        "overlapping captures count once (default 1)")
    parser.add_argument("-o", "--output", metavar="DIR",
                        help="results folder (default results/evaluate-<timestamp>)")
    parser.add_argument("--seed", type=seed, default=0,
                        help="random seed of the folds and forests (default 0)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (the contents of results.json)")
    parser.add_argument("--ambiguity", action="store_true", help=AMBIGUITY_HELP)
    parser.set_defaults(run=run)


@dataclass
class _Inputs:
    """The captures on each side, with their labels and groups of shared packets."""

    sources: list[tuple[str, str | None]]
    test_sources: list[tuple[str, str | None]]
    labels: LabelTable | None
    test_labels: LabelTable | None
    group_of: dict[str, str]


def _check_arguments(args: argparse.Namespace) -> None:
    for name, value, least in (("--folds", args.folds, 2), ("--trees", args.trees, 1),
                               ("--min-class-flows", args.min_class_flows, 1),
                               ("--min-class-captures", args.min_class_captures, 1)):
        if value < least:
            raise UsageError(f"{name} must be at least {least}, not {value}")
    if args.test_labels and not args.test:
        raise UsageError("--test-labels labels the --test inputs; give --test too")
    if "-" in args.captures or "-" in (args.test or []):
        raise UsageError("evaluate reads capture files, not standard input")


def _inputs(args: argparse.Namespace) -> _Inputs:
    """The labelled inputs; refuses a test capture that is, or shares packets with, a
    training capture."""
    from ..evaluation import groups_from_files
    from ..training import labelled_sources

    labels = LabelTable.read_csv(args.labels) if args.labels else None
    sources = [(str(Path(p)), app) for p, app in labelled_sources(args.captures, labels)]
    test_labels = LabelTable.read_csv(args.test_labels) if args.test_labels else labels
    test_sources = ([(str(Path(p)), app) for p, app in labelled_sources(args.test, test_labels)]
                    if args.test else [])
    train_paths = {Path(p).resolve(): p for p, _ in sources}
    for path, _ in test_sources:
        if Path(path).resolve() in train_paths:
            raise UsageError(f"{path} is both a training and a test input")
    group_of = groups_from_files([p for p, _ in sources + test_sources], args.groups_file or [])
    if test_sources:
        train_groups = {group_of[p]: p for p, _ in sources}
        for path, _ in test_sources:
            if group_of[path] in train_groups:
                raise UsageError(
                    f"test capture {path} shares packets with training capture "
                    f"{train_groups[group_of[path]]} (per --groups-file); move one of them"
                )
    return _Inputs(sources, test_sources, labels, test_labels, group_of)


def _read(args: argparse.Namespace, inputs: _Inputs, feature_set: FeatureSet,
          options: PipelineOptions) -> tuple[Any, Any]:
    """The training and (with --test) test datasets."""
    from ..training import FlowFilter, build_dataset

    flow_filter = FlowFilter(drop_background=args.drop_background, min_packets=args.min_packets)
    total = len(inputs.sources) + len(inputs.test_sources)
    progress = Progress(total)
    print(f"appsight: reading {total} captures ({feature_set.tag} features)", file=sys.stderr)
    try:
        train = build_dataset(inputs.sources, inputs.labels, feature_set, options, flow_filter,
                              progress.capture_finished)
        test = (build_dataset(inputs.test_sources, inputs.test_labels, feature_set, options,
                              flow_filter, progress.capture_finished)
                if inputs.test_sources else None)
    finally:
        progress.clear()
    if len(train) == 0:
        raise UsageError("no labelled flows to evaluate on (do the labels name these captures?)")
    if test is not None and len(test) == 0:
        raise UsageError("no labelled flows in the --test inputs")
    return train, test


def _keep_apps_with_enough_data(args: argparse.Namespace, train: Any, test: Any,
                                groups: np.ndarray) -> tuple[Any, Any, np.ndarray]:
    """--min-class-flows and --min-class-captures: leave out the apps with too little data."""
    from ..classifier import classes_with_enough_data
    from ..evaluation import subset

    if args.min_class_flows <= 1 and args.min_class_captures <= 1:
        return train, test, groups
    kept = classes_with_enough_data(train.labels, groups, args.min_class_flows,
                                    args.min_class_captures)
    mask = np.isin(train.labels.astype(str), kept)
    left_out = sorted(set(train.labels.tolist()) - set(kept))
    print(f"appsight: {len(left_out)} apps with fewer than {args.min_class_flows} flows or "
          f"{args.min_class_captures} independent captures left out "
          f"({int((~mask).sum())} flows)", file=sys.stderr)
    train, groups = subset(train, mask), groups[mask]
    if test is not None:
        test = subset(test, np.isin(test.labels.astype(str), kept))
        if len(test) == 0:
            raise UsageError("no test flows of the apps kept for training")
    return train, test, groups


def _fold_done(fold: Any) -> None:
    print(f"appsight: fold {fold.index}: trained on {fold.train_flows} flows in "
          f"{fold.fit_seconds:.1f} s, threshold {fold.threshold:.2f}, tested on "
          f"{fold.test_flows} flows of {len(fold.test_captures)} captures", file=sys.stderr)


def _predict(args: argparse.Namespace, train: Any, test: Any, groups: np.ndarray,
             apps: list[str]) -> tuple[str, Any]:
    """Out-of-sample predictions of every test flow, and the name of how they were made."""
    from ..evaluation import cross_validate, group_folds, train_test

    max_leaves = args.max_leaves or None
    if test is None:
        mode = f"grouped {args.folds}-fold cross-validation by capture"
        print(f"appsight: {len(train)} flows of {len(apps)} apps from "
              f"{len(set(train.captures.tolist()))} captures in {len(set(groups.tolist()))} "
              f"independent groups; {mode}, {args.trees} trees", file=sys.stderr)
        fold_of = group_folds(train.labels, groups, args.folds, args.seed)
        return mode, cross_validate(train, fold_of, groups, args.trees, max_leaves, args.seed,
                                    args.threshold, _fold_done, args.ambiguity)
    mode = "training inputs against separate test inputs"
    print(f"appsight: training on {len(train)} flows of {len(apps)} apps, testing on "
          f"{len(test)} flows; {args.trees} trees", file=sys.stderr)
    predictions = train_test(train, test, args.trees, max_leaves, args.seed, args.threshold,
                             groups, args.ambiguity)
    _fold_done(predictions.folds[0])
    unseen = predictions.folds[0].unseen_apps
    if unseen:
        print(f"appsight: warning: test apps absent from training (always wrong): "
              f"{', '.join(unseen)}", file=sys.stderr)
    return mode, predictions


def _settings(args: argparse.Namespace, feature_set: FeatureSet, options: PipelineOptions,
              cross_validated: bool) -> dict[str, Any]:
    """The settings block of results.json."""
    return {
        "inputs": args.captures, "test": args.test, "labels": args.labels,
        "test_labels": args.test_labels, "groups_file": args.groups_file,
        "features": feature_set.tag, "folds": args.folds if cross_validated else None,
        "trees": args.trees, "max_leaves": args.max_leaves or None, "seed": args.seed,
        "threshold": args.threshold if args.threshold is not None
        else "0.5 on the ambiguity checker's probability" if args.ambiguity
        else "chosen on each training side's captures held out inside it",
        "ambiguity": args.ambiguity,
        "burst_gap": options.burst_gap, "drop_background": args.drop_background,
        "min_packets": args.min_packets, "min_class_flows": args.min_class_flows,
        "min_class_captures": args.min_class_captures,
    }


def run(args: argparse.Namespace) -> int:
    from ..evaluation import format_report, summarise
    from ..plots import require_matplotlib
    from ..results import make_results_folder, write_plots, write_results_json

    require_matplotlib()
    _check_arguments(args)
    feature_set = get_feature_set(args.features)
    options = pipeline_options(args)
    inputs = _inputs(args)
    train, test = _read(args, inputs, feature_set, options)
    groups = np.array([inputs.group_of[c] for c in train.captures.tolist()], dtype=object)
    train, test, groups = _keep_apps_with_enough_data(args, train, test, groups)
    apps = sorted(set(train.labels.tolist()))
    if len(apps) < 2:
        raise UsageError(f"need at least two apps to tell apart, found {apps}")
    mode, predictions = _predict(args, train, test, groups, apps)

    result = summarise(predictions)
    out_dir = make_results_folder(
        Path(args.output or Path("results") / f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}"))
    title = f"{feature_set.tag}, {len(predictions.truth)} flows, {result['apps']} apps"
    files = write_plots(out_dir, result, feature_set.tag, title)
    document = {
        "command": "evaluate",
        "mode": mode,
        "settings": _settings(args, feature_set, options, cross_validated=test is None),
        "unlabelled_flows": train.unlabelled + (test.unlabelled if test is not None else 0),
        "filtered_flows": train.dropped + (test.dropped if test is not None else 0),
        **result,
        "output_dir": str(out_dir),
        "files": files,
    }
    line = write_results_json(out_dir, document)
    if args.json:
        print(line)
        print(f"appsight: results in {out_dir}", file=sys.stderr)
    else:
        print(f"{mode}: {len(predictions.truth)} flows, {result['apps']} apps, "
              f"{feature_set.tag}, {args.trees} trees\n")
        print(format_report(result))
        print(f"\nresults: {out_dir}  (results.json, confusion.png, coverage.png)")
    return 0
