"""``appsight train``: a random forest from labelled captures, saved as a verified model."""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from ..features import get_feature_set
from ..labels import LabelTable
from ..progress import Progress
from .options import (
    AMBIGUITY_HELP,
    add_forest_options,
    add_pipeline_options,
    pipeline_options,
    probability,
    seed,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train", help="train a model from labelled captures",
        description="Train a random forest (AppScanner's settings: 150 trees, gini, sqrt "
        "features) on labelled flows and save it as a verified, pickle-free model file. "
        "Labels come from folders (DIR/<app>/*.pcap: every flow gets the folder's name) or "
        "from a labels file (--labels).",
        epilog="examples:\n  appsight train captures/ -o model.skops --drop-background\n"
        "  appsight train --labels labels.csv ../shared/data/ndpi/ -o ndpi.skops",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pipeline_options(parser)
    parser.add_argument("-o", "--output", required=True, metavar="MODEL",
                        help="where to write the model")
    parser.add_argument("--labels", metavar="CSV", help="labels file (see 'appsight labels')")
    add_forest_options(parser)
    parser.add_argument("--class-weight", choices=("none", "balanced", "balanced_subsample"),
                        default="none", help="weigh rare apps up (default none)")
    parser.add_argument("--threshold", type=probability, metavar="P",
                        help="confidence below which a flow is 'unknown' (default: chosen on "
                        "flows of training captures held out by a 4-fold cross-validation by "
                        "capture, where the forest answers as right as wrong; stored in the "
                        "model. With fewer captures, or fewer than 2 apps in 2 captures or "
                        "more: from out-of-bag votes)")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    parser.add_argument("--ambiguity", action="store_true", help=AMBIGUITY_HELP)
    parser.add_argument("--groups-file", metavar="TSV", action="append",
                        help="for --ambiguity: pairs of captures that share packets, as for "
                        "'evaluate'; repeatable")
    parser.set_defaults(run=run)


def _capture_groups(args: argparse.Namespace, captures: list[str]):
    """For --ambiguity: each flow's group of captures that share packets (else None)."""
    if not args.ambiguity:
        if args.groups_file:
            raise UsageError("--groups-file is for --ambiguity")
        return None
    import numpy as np

    from ..evaluation import groups_from_files

    group_of = groups_from_files(captures, args.groups_file or [])
    return np.array([group_of[c] for c in captures], dtype=object)


def run(args: argparse.Namespace) -> int:
    from ..training import FlowFilter, build_dataset, labelled_sources, train_model

    feature_set = get_feature_set(args.features)
    options = pipeline_options(args)
    labels = LabelTable.read_csv(args.labels) if args.labels else None
    sources = labelled_sources(args.captures, labels)
    flow_filter = FlowFilter(drop_background=args.drop_background, min_packets=args.min_packets)
    progress = Progress(len(sources))
    print(f"appsight: reading {len(sources)} captures ({feature_set.tag} features)",
          file=sys.stderr)

    try:
        dataset = build_dataset(
            sources, labels, feature_set, options, flow_filter, progress.capture_finished
        )
    finally:
        progress.clear()
    counts = dataset.class_counts()
    print(f"appsight: {len(dataset)} labelled flows in {len(counts)} apps "
          f"({dataset.unlabelled} unlabelled, {dataset.dropped} filtered out); training "
          f"{args.trees} trees", file=sys.stderr)
    groups = _capture_groups(args, dataset.captures.tolist())
    model = train_model(
        dataset, options, trees=args.trees, max_leaves=args.max_leaves or None,
        class_weight=None if args.class_weight == "none" else args.class_weight,
        threshold=args.threshold, seed=args.seed, ambiguity=args.ambiguity, groups=groups,
    )
    size = model.save(args.output)
    training = model.metadata["training"]
    width = max(len(c) for c in counts)
    for app, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {app:<{width}}  {n:>7} flows")
    print(
        f"appsight: trained in {training['training_seconds']:.1f} s on {len(dataset)} flows, "
        f"{len(feature_set.columns)} features; threshold {model.threshold:.2f} "
        f"({training['threshold_chosen_by']}); model {args.output} ({size / 1e6:.1f} MB)"
    )
    return 0
