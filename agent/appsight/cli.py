"""The ``appsight`` command: one entry point, a subcommand per job.

Every subcommand reads captures through the same pipeline (:mod:`appsight.pipeline`). Bad
input ends in a one-line ``appsight: error: ...`` and exit status 2, never a traceback; with
several captures, a bad one is reported and the others are still processed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from . import __version__
from .addresses import NetworkMatcher
from .bursts import DEFAULT_BURST_GAP, parse_burst_gap
from .errors import AppsightError, UsageError
from .features import DEFAULT_FEATURE_SET, FEATURE_SETS, get_feature_set
from .inputs import expand_captures
from .labels import LABEL_COLUMNS, LabelTable, rows_from_ndpi
from .limits import DEFAULT_MAX_FLOWS, DEFAULT_MAX_PACKETS, OpenBurstLimits
from .live import InterfaceSource, LiveMeter, drop_privileges, is_interface, stop_on_signals
from .model import load_model
from .pcapwriter import RotatingPcapWriter
from .pipeline import FlowBlock, PipelineOptions, iter_flow_blocks
from .progress import Progress
from .report import flow_records, write_json_lines, write_report
from .tables import FeatureTableWriter

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

    try:
        for capture in captures:
            try:
                for block in iter_flow_blocks(
                    capture, options, progress.capture_finished, progress.update
                ):
                    handle(block)
            except AppsightError as exc:
                progress.clear()
                print(f"appsight: error: {exc}", file=sys.stderr)
                status = exc.exit_status
    finally:
        progress.clear()
    return status


# ------------------------------------------------------------------ commands
def _flow_reporter(as_json: bool) -> Callable[[FlowBlock], None]:
    """The sink of ``flows`` (and of ``live`` without a model): the per-burst report or JSON
    Lines, flushed after every block."""
    out = sys.stdout
    writer = write_json_lines if as_json else write_report

    def handle(block: FlowBlock) -> None:
        writer(block, out)
        out.flush()  # a burst is reported as soon as it is complete, also into a pipe

    return handle


def cmd_flows(args: argparse.Namespace) -> int:
    options = _options(args)
    handle = _flow_reporter(args.json)
    if _is_live(args.captures):
        return run_live(args.captures[0], options, handle, args)
    return run_captures(expand_captures(args.captures), options, handle)


def _is_live(inputs: list[str]) -> bool:
    """One interface, or a stream on standard input: report bursts as the clock ends them."""
    return len(inputs) == 1 and (inputs[0] == "-" or is_interface(inputs[0]))


def run_live(
    source_name: str,
    options: PipelineOptions,
    handle: Callable[[FlowBlock], None],
    args: argparse.Namespace,
) -> int:
    """Run an interface or a pcap stream through the live loop until the end or a signal."""
    limits = OpenBurstLimits(max_flows=args.max_flows, max_packets=args.max_packets)
    writer = None
    if getattr(args, "write_pcap", None):
        writer = RotatingPcapWriter(args.write_pcap, linktype=1, prefix="live",
                                    rotate_bytes=_megabytes(args.rotate_mb),
                                    rotate_seconds=args.rotate_seconds)
    lock = threading.Lock()

    def keep_frames(frames: list[tuple[int, int, bytes]], linktype: int) -> None:
        assert writer is not None
        with lock:
            writer.linktype = linktype
            writer.write(frames)

    meter = LiveMeter(options, handle, keep_frames if writer else None, limits, _warn)
    stop_on_signals(meter.stop)
    source = None
    try:
        if source_name == "-":
            meter.run_stream("-")
        else:
            source = InterfaceSource(source_name, bpf=getattr(args, "bpf", None))
            _report_drops_on_sigusr1(source)
            dropped = drop_privileges(getattr(args, "user", None),
                                      writable=writer.folder if writer else None)
            if dropped:
                print(f"appsight: running as {dropped}", file=sys.stderr)
            # Supervisors wait for this line: from here on no packet of the interface is missed.
            print(f"appsight: listening on {source_name}", file=sys.stderr, flush=True)
            meter.run_interface(source)
    except KeyboardInterrupt:
        meter.stop.set()
    finally:
        if writer is not None:
            with lock:
                writer.close()
            print(f"appsight: wrote {writer.stats.packets} packets to {writer.stats.files} "
                  f"files in {args.write_pcap}", file=sys.stderr)
        evicted = meter.meter.evictions.summary(meter.meter.capture, limits) \
            if meter.meter is not None else None
        if evicted:
            print(f"appsight: {evicted}", file=sys.stderr)
        if source is not None:
            print(f"appsight: {source.read_drops().line()}", file=sys.stderr)
            source.close()
    return 0


def _warn(line: str) -> None:
    print(f"appsight: warning: {line}", file=sys.stderr, flush=True)


def _megabytes(value: float | None) -> int | None:
    return None if value is None else int(value * 1_000_000)


def _report_drops_on_sigusr1(source: InterfaceSource) -> None:
    def report(_signum: int, _frame: object) -> None:
        print(f"appsight: {source.read_drops().line()}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGUSR1, report)


def cmd_capture(args: argparse.Namespace) -> int:
    source = InterfaceSource(args.interface, bpf=args.bpf)
    _report_drops_on_sigusr1(source)
    writer = RotatingPcapWriter(
        args.output, linktype=source.linktype, label=args.label,
        rotate_bytes=_megabytes(args.rotate_mb), rotate_seconds=args.rotate_seconds,
    )
    dropped = drop_privileges(args.user, writable=writer.folder)
    if dropped:
        print(f"appsight: running as {dropped}", file=sys.stderr)
    stop = threading.Event()
    stop_on_signals(stop)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    print(f"appsight: capturing on {args.interface} into {args.output} (Ctrl-C to stop)",
          file=sys.stderr)
    status = 0
    try:
        for frames in source.frames(stop):  # after a stop, it drains the socket, then ends
            if args.count is not None:
                frames = frames[: max(args.count - writer.stats.packets, 0)]
            writer.write(frames)
            writer.rotate_if_due()
            if args.count is not None and writer.stats.packets >= args.count:
                break
            if deadline is not None and time.monotonic() >= deadline:
                stop.set()
    except KeyboardInterrupt:  # a signal before the handlers were in place
        status = 0
    finally:
        writer.close()
        print(f"appsight: wrote {writer.stats.packets} packets ({writer.stats.bytes} bytes) "
              f"to {writer.stats.files} files in {args.output}; {source.read_drops().line()}",
              file=sys.stderr)
        source.close()
    return status


def cmd_live(args: argparse.Namespace) -> int:
    json_log = _open_json_log(args.json_log) if args.json_log else None
    try:
        options, handle = (_classifier(args, json_log) if args.model
                           else _model_free(args, json_log))
        if _is_live(args.captures):
            return run_live(args.captures[0], options, handle, args)
        return run_captures(expand_captures(args.captures), options, handle)
    finally:
        if json_log is not None:
            json_log.close()


def _open_json_log(path: str) -> IO[str]:
    """The --json-log file, appended to, one line per flow, flushed with every report."""
    try:
        return open(path, "a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the JSON log: {exc.strerror}") from None


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


def cmd_labels_from_ndpi(args: argparse.Namespace) -> int:
    import csv

    paths = []
    for item in args.listings:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(path.rglob("*.out")))
        elif path.exists():
            paths.append(path)
        else:
            raise UsageError(f"{item}: no such file or folder")
    if not paths:
        raise UsageError("no ndpiReader .out listings found")
    out = sys.stdout if args.output in (None, "-") else _open_output(args.output)
    writer = csv.writer(out)
    writer.writerow(LABEL_COLUMNS)
    rows = 0
    for row in rows_from_ndpi(paths, label=args.label, guesses=args.guesses):
        writer.writerow(row)
        rows += 1
    if out is not sys.stdout:
        out.close()
    print(f"appsight: {rows} labelled flows from {len(paths)} listings", file=sys.stderr)
    return 0


def cmd_labels_from_sockets(args: argparse.Namespace) -> int:
    from .sockets import write_socket_labels

    captures = expand_captures(args.captures)
    if not captures or "-" in captures:
        raise UsageError("give the capture files of the session (not standard input)")
    out = sys.stdout if args.output in (None, "-") else _open_output(args.output)
    try:
        done = write_socket_labels(captures, args.sockets, args.packages, _options(args), out)
    finally:
        if out is not sys.stdout:
            out.close()
    share = f" ({100 * done.labelled / done.flows:.0f} %)" if done.flows else ""
    print(f"appsight: {done.labelled} of {done.flows} flows labelled by their socket's owner"
          f"{share}; {done.ambiguous} left out as ambiguous", file=sys.stderr)
    return 0


def _open_output(path: str):
    try:
        return open(path, "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from .training import FlowFilter, build_dataset, labelled_sources, train_model

    feature_set = get_feature_set(args.features)
    options = _options(args)
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
    groups = None
    if args.ambiguity:
        import numpy as np

        from .evaluation import groups_from_files

        group_of = groups_from_files(dataset.captures.tolist(), args.groups_file or [])
        groups = np.array([group_of[c] for c in dataset.captures.tolist()], dtype=object)
    elif args.groups_file:
        raise UsageError("--groups-file is for --ambiguity")
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


def _classifier(
    args: argparse.Namespace, json_log: IO[str] | None = None,
) -> tuple[PipelineOptions, Callable[[FlowBlock], None]]:
    """For classify and live: the model's pipeline settings (unless overridden) and a sink
    that prints each block with the predicted app and confidence of every flow (and, for
    live's --json-log, also writes them as JSON Lines)."""
    model = load_model(args.model)
    gap = model.burst_gap if args.burst_gap is None else parse_burst_gap(args.burst_gap)
    options = PipelineOptions(
        burst_gap=gap,
        device=NetworkMatcher.parse(args.device) if args.device else None,
        decapsulate=not args.no_decap and model.metadata.get("decapsulate", True),
    )
    threshold = model.threshold if args.threshold is None else args.threshold
    out = sys.stdout
    writer = write_json_lines if args.json else write_report

    def handle(block: FlowBlock) -> None:
        apps, confidence = model.predict(model.feature_set(block.flows), threshold)
        extra = {"app": apps, "confidence": [round(float(c), 4) for c in confidence]}
        writer(block, out, extra)
        out.flush()
        if json_log is not None:
            write_json_lines(block, json_log, extra)
            json_log.flush()

    return options, handle


def _model_free(
    args: argparse.Namespace, json_log: IO[str] | None = None,
) -> tuple[PipelineOptions, Callable[[FlowBlock], None]]:
    """For live without a model (a gateway set up before any model is trained): the pipeline
    options as ``flows`` takes them and its report, without app or confidence."""
    if args.threshold is not None:
        raise UsageError("--threshold is the model's confidence threshold: give a model with -m")
    gap = DEFAULT_BURST_GAP if args.burst_gap is None else parse_burst_gap(args.burst_gap)
    options = PipelineOptions(
        burst_gap=gap,
        device=NetworkMatcher.parse(args.device) if args.device else None,
        decapsulate=not args.no_decap,
    )
    report = _flow_reporter(args.json)
    if json_log is None:
        return options, report

    def handle(block: FlowBlock) -> None:
        report(block)
        write_json_lines(block, json_log)
        json_log.flush()

    return options, handle


def cmd_classify(args: argparse.Namespace) -> int:
    options, handle = _classifier(args)
    return run_captures(expand_captures(args.captures), options, handle)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Grouped cross-validation by capture, or separate test inputs; tables, JSON, plots."""
    import json
    import time

    import numpy as np

    from .evaluation import (
        FoldResult,
        cross_validate,
        format_report,
        group_folds,
        groups_from_files,
        subset,
        summarise,
        train_test,
    )
    from .plots import Curve, confusion_png, coverage_png
    from .training import FlowFilter, build_dataset, classes_with_enough_data, labelled_sources

    for name, value, least in (("--folds", args.folds, 2), ("--trees", args.trees, 1),
                               ("--min-class-flows", args.min_class_flows, 1),
                               ("--min-class-captures", args.min_class_captures, 1)):
        if value < least:
            raise UsageError(f"{name} must be at least {least}, not {value}")
    if args.test_labels and not args.test:
        raise UsageError("--test-labels labels the --test inputs; give --test too")
    if "-" in args.captures or "-" in (args.test or []):
        raise UsageError("evaluate reads capture files, not standard input")
    feature_set = get_feature_set(args.features)
    options = _options(args)
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

    flow_filter = FlowFilter(drop_background=args.drop_background, min_packets=args.min_packets)
    progress = Progress(len(sources) + len(test_sources))

    print(f"appsight: reading {len(sources) + len(test_sources)} captures "
          f"({feature_set.tag} features)", file=sys.stderr)
    try:
        train = build_dataset(
            sources, labels, feature_set, options, flow_filter, progress.capture_finished
        )
        test = (build_dataset(test_sources, test_labels, feature_set, options, flow_filter,
                              progress.capture_finished) if test_sources else None)
    finally:
        progress.clear()
    if len(train) == 0:
        raise UsageError("no labelled flows to evaluate on (do the labels name these captures?)")
    if test is not None and len(test) == 0:
        raise UsageError("no labelled flows in the --test inputs")

    train_groups_array = np.array([group_of[c] for c in train.captures.tolist()], dtype=object)
    kept = classes_with_enough_data(train.labels, train_groups_array, args.min_class_flows,
                                    args.min_class_captures)
    restricted = args.min_class_flows > 1 or args.min_class_captures > 1
    if restricted:
        mask = np.isin(train.labels.astype(str), kept)
        left_out = sorted(set(train.labels.tolist()) - set(kept))
        print(f"appsight: {len(left_out)} apps with fewer than {args.min_class_flows} flows or "
              f"{args.min_class_captures} independent captures left out "
              f"({int((~mask).sum())} flows)", file=sys.stderr)
        train, train_groups_array = subset(train, mask), train_groups_array[mask]
        if test is not None:
            test = subset(test, np.isin(test.labels.astype(str), kept))
            if len(test) == 0:
                raise UsageError("no test flows of the apps kept for training")
    apps = sorted(set(train.labels.tolist()))
    if len(apps) < 2:
        raise UsageError(f"need at least two apps to tell apart, found {apps}")
    max_leaves = args.max_leaves or None

    def fold_done(fold: FoldResult) -> None:
        print(f"appsight: fold {fold.index}: trained on {fold.train_flows} flows in "
              f"{fold.fit_seconds:.1f} s, threshold {fold.threshold:.2f}, tested on "
              f"{fold.test_flows} flows of {len(fold.test_captures)} captures",
              file=sys.stderr)

    if test is None:
        mode = f"grouped {args.folds}-fold cross-validation by capture"
        n_groups = len(set(train_groups_array.tolist()))
        print(f"appsight: {len(train)} flows of {len(apps)} apps from "
              f"{len(set(train.captures.tolist()))} captures in {n_groups} independent groups; "
              f"{mode}, {args.trees} trees", file=sys.stderr)
        fold_of = group_folds(train.labels, train_groups_array, args.folds, args.seed)
        predictions = cross_validate(train, fold_of, train_groups_array, args.trees,
                                     max_leaves, args.seed, args.threshold, fold_done,
                                     args.ambiguity)
    else:
        mode = "training inputs against separate test inputs"
        print(f"appsight: training on {len(train)} flows of {len(apps)} apps, testing on "
              f"{len(test)} flows; {args.trees} trees", file=sys.stderr)
        predictions = train_test(train, test, args.trees, max_leaves, args.seed, args.threshold,
                                 train_groups_array if args.ambiguity else None)
        fold_done(predictions.folds[0])
        unseen = predictions.folds[0].unseen_apps
        if unseen:
            print(f"appsight: warning: test apps absent from training (always wrong): "
                  f"{', '.join(unseen)}", file=sys.stderr)

    result = summarise(predictions)
    out_dir = Path(args.output or Path("results") / f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot create the results folder: {exc.strerror}") from None
    title = f"{feature_set.tag}, {len(predictions.truth)} flows, {result['apps']} apps"
    confusion_png(out_dir / "confusion.png", result["confusion"],
                  f"Confusion matrix ({title}; row-normalised %)")
    chosen = (result["chosen"]["classified"], result["chosen"]["accuracy"])
    coverage_png(out_dir / "coverage.png",
                 [Curve(feature_set.tag, **result["curve"], chosen=chosen)],
                 f"Accuracy versus coverage ({title})")
    document = {
        "command": "evaluate",
        "mode": mode,
        "settings": {
            "inputs": args.captures, "test": args.test, "labels": args.labels,
            "test_labels": args.test_labels, "groups_file": args.groups_file,
            "features": feature_set.tag, "folds": None if test is not None else args.folds,
            "trees": args.trees, "max_leaves": max_leaves, "seed": args.seed,
            "threshold": args.threshold if args.threshold is not None
            else "0.5 on the ambiguity checker's probability" if args.ambiguity
            else "chosen from out-of-bag predictions of each training side",
            "ambiguity": args.ambiguity,
            "burst_gap": options.burst_gap, "drop_background": args.drop_background,
            "min_packets": args.min_packets, "min_class_flows": args.min_class_flows,
            "min_class_captures": args.min_class_captures,
        },
        "unlabelled_flows": train.unlabelled + (test.unlabelled if test is not None else 0),
        "filtered_flows": train.dropped + (test.dropped if test is not None else 0),
        **result,
        "output_dir": str(out_dir),
        "files": {"confusion": str(out_dir / "confusion.png"),
                  "coverage": str(out_dir / "coverage.png")},
    }
    text = json.dumps(_json_safe(document), indent=1)
    try:
        (out_dir / "results.json").write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot write results.json: {exc.strerror}") from None
    if args.json:
        print(json.dumps(_json_safe(document)))
        print(f"appsight: results in {out_dir}", file=sys.stderr)
    else:
        print(f"{mode}: {len(predictions.truth)} flows, {result['apps']} apps, "
              f"{feature_set.tag}, {args.trees} trees\n")
        print(format_report(result))
        print(f"\nresults: {out_dir}  (results.json, confusion.png, coverage.png)")
    return 0


def _json_safe(value: object) -> object:
    """NaN (an undefined measure, e.g. accuracy with nothing classified) becomes null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


# ------------------------------------------------------------------- parser
AMBIGUITY_HELP = (
    "AppScanner's second stage: also train a forest that predicts when the first is wrong, "
    "learnt from a cross-validation by capture inside the training data (every app needs 2 or "
    "more independent captures; training takes about 3 times as long). A flow's confidence "
    "is then that forest's probability that the answer is right (threshold 0.5 unless "
    "given); docs/accuracy.md measures the gain"
)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _add_forest_options(parser: argparse.ArgumentParser) -> None:
    """What train and evaluate share: the feature set, which flows count, the forest's size."""
    parser.add_argument("--features", default=DEFAULT_FEATURE_SET, metavar="SET",
                        help=f"feature set: {', '.join(FEATURE_SETS)} "
                        f"(default {DEFAULT_FEATURE_SET})")
    parser.add_argument("--drop-background", action="store_true",
                        help="leave out DNS, DHCP, NTP, NetBIOS, SSDP, mDNS and LLMNR flows")
    parser.add_argument("--min-packets", type=int, default=1, metavar="N",
                        help="leave out flows with fewer packets (default 1)")
    parser.add_argument("--trees", type=int, default=150, metavar="N",
                        help="trees in each forest (default 150)")
    parser.add_argument("--max-leaves", type=int, default=2048, metavar="N",
                        help="leaves per tree at most, bounds the model size (default 2048; "
                        "0: unbounded)")


def _add_model_options(parser: argparse.ArgumentParser, model_required: bool = True) -> None:
    """The options of the commands that classify: pipeline settings (the model's by default),
    the model, JSON output and the threshold."""
    _add_pipeline_options(parser)
    parser.set_defaults(burst_gap=None)
    if model_required:
        parser.add_argument("-m", "--model", required=True, metavar="MODEL", help="model file")
        json_help = "JSON Lines: the objects of 'flows --json' plus app, confidence"
    else:
        parser.add_argument("-m", "--model", metavar="MODEL",
                            help="model file; without one, the flows are reported as 'flows' "
                            f"reports them, with no app (burst gap {DEFAULT_BURST_GAP} s "
                            "unless given)")
        json_help = "JSON Lines: the objects of 'flows --json' (plus app, confidence with -m)"
    parser.add_argument("--json", action="store_true", help=json_help)
    parser.add_argument("--threshold", type=_probability, metavar="P",
                        help="override the model's confidence threshold")


def _add_live_limits(parser: argparse.ArgumentParser) -> None:
    """Caps on the open burst of an interface or stream (see appsight.limits)."""
    parser.add_argument(
        "--max-flows", type=int, default=DEFAULT_MAX_FLOWS, metavar="N",
        help="for an interface or -: flows an open burst may hold (default "
        f"{DEFAULT_MAX_FLOWS}); beyond, the flows silent longest are reported before the burst "
        "ends (a burst lasts as long as traffic never pauses for the burst gap)",
    )
    parser.add_argument(
        "--max-packets", type=int, default=DEFAULT_MAX_PACKETS, metavar="N",
        help="for an interface or -: packets an open burst may hold, about 84 bytes each "
        f"(default {DEFAULT_MAX_PACKETS}); beyond, as with --max-flows",
    )


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
    flows.add_argument("--bpf", metavar="FILTER", help="capture filter, for an interface")
    flows.add_argument("--user", help="for an interface: user to switch to once it is open")
    _add_live_limits(flows)
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

    labels = sub.add_parser(
        "labels", help="make flow labels files",
        description="Make labels files (CSV: capture,proto,src,sport,dst,dport,label) for "
        "'appsight train --labels'.",
    )
    labels_sub = labels.add_subparsers(dest="labels_command", metavar="SOURCE", required=True)
    from_ndpi = labels_sub.add_parser(
        "from-ndpi", help="labels from ndpiReader listings (.out files)",
        description="Turn ndpiReader flow listings (the .out files of nDPI's test suite, "
        "named CAPTURE.out) into a labels file. Flows nDPI did not identify are left out, "
        "and so are its guesses by port or IP address unless --guesses is given.",
        epilog="example:\n  appsight labels from-ndpi ../shared/data/ndpi/ -o ndpi-labels.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from_ndpi.add_argument("listings", nargs="+", metavar="LISTING",
                           help=".out files or folders of them")
    from_ndpi.add_argument("-o", "--output", metavar="FILE", help="CSV file (default: stdout)")
    from_ndpi.add_argument(
        "--label", choices=("app", "master"), default="app",
        help="app: the application (YouTube of TLS.YouTube; default); master: the protocol (TLS)",
    )
    from_ndpi.add_argument("--guesses", action="store_true",
                           help="also keep flows nDPI matched only by port or IP address")
    from_ndpi.set_defaults(run=cmd_labels_from_ndpi)
    from_sockets = labels_sub.add_parser(
        "from-sockets", help="labels from the phone's own socket tables (per-app UIDs)",
        description="Label every flow of a session's captures with the app that owned its "
        "socket on the phone: Android gives each app its own UID, and the kernel lists each "
        "socket's UID in /proc/net/tcp, tcp6, udp and udp6. Sample those tables on the phone "
        "while the session runs, list the apps with 'pm list packages -U', and capture on the "
        "gateway's internal side (before NAT). UIDs below 10000 are labelled 'system'. Flows "
        "whose socket was never sampled (it lived between two samples) are left out.",
        epilog="""\
on the phone while the session runs (adb shell, or ssh on the emulated phone):
  while :; do cat /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6; sleep 0.05; \\
      done > /data/local/tmp/sockets.txt
  pm list packages -U > /data/local/tmp/packages.txt
then:
  appsight labels from-sockets --sockets sockets.txt --packages packages.txt \\
      --device 192.168.56.0/24 session.pcap -o labels.csv""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_pipeline_options(from_sockets)
    from_sockets.add_argument("--sockets", required=True, metavar="FILE",
                              help="the phone's socket tables, sampled during the session")
    from_sockets.add_argument("--packages", required=True, metavar="FILE",
                              help="output of 'pm list packages -U' (package:NAME uid:UID)")
    from_sockets.add_argument("-o", "--output", metavar="FILE", help="CSV file (default: stdout)")
    from_sockets.set_defaults(run=cmd_labels_from_sockets)

    train = sub.add_parser(
        "train", help="train a model from labelled captures",
        description="Train a random forest (AppScanner's settings: 150 trees, gini, sqrt "
        "features) on labelled flows and save it as a verified, pickle-free model file. "
        "Labels come from folders (DIR/<app>/*.pcap: every flow gets the folder's name) or "
        "from a labels file (--labels).",
        epilog="examples:\n  appsight train captures/ -o model.skops --drop-background\n"
        "  appsight train --labels labels.csv ../shared/data/ndpi/ -o ndpi.skops",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_pipeline_options(train)
    train.add_argument("-o", "--output", required=True, metavar="MODEL",
                       help="where to write the model")
    train.add_argument("--labels", metavar="CSV", help="labels file (see 'appsight labels')")
    _add_forest_options(train)
    train.add_argument("--class-weight", choices=("none", "balanced", "balanced_subsample"),
                       default="none", help="weigh rare apps up (default none)")
    train.add_argument("--threshold", type=_probability, metavar="P",
                       help="confidence below which a flow is 'unknown' (default: chosen "
                       "from out-of-bag predictions and stored in the model)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--ambiguity", action="store_true", help=AMBIGUITY_HELP)
    train.add_argument("--groups-file", metavar="TSV", action="append",
                       help="for --ambiguity: pairs of captures that share packets, as for "
                       "'evaluate'; repeatable")
    train.set_defaults(run=cmd_train)

    classify = sub.add_parser(
        "classify", help="name the app of every flow of captures",
        description="The per-burst report with the predicted app (or 'unknown' below the "
        "model's confidence threshold) and the confidence of each flow. The burst gap is the "
        "model's unless given.",
        epilog="examples:\n  appsight classify -m model.skops phone.pcap\n"
        "  appsight classify -m model.skops --json phone.pcap | jq .app",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_options(classify)
    classify.set_defaults(run=cmd_classify)

    capture = sub.add_parser(
        "capture", help="record an interface to rotating pcap files",
        description="Record the packets of a network interface into classic pcap files "
        "(nanosecond timestamps; readable by tcpdump, Wireshark and appsight), rotated by size "
        "and/or time. Ctrl-C or SIGTERM closes the current file cleanly; SIGUSR1 prints the "
        "kernel's drop counters. Needs root or CAP_NET_RAW.",
        epilog="examples:\n  appsight capture eth1 -o captures/youtube --label youtube "
        "--rotate-mb 100\n  appsight capture eth1 -o /tmp/cap --bpf 'host 192.168.56.101' "
        "--duration 600",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    capture.add_argument("interface", metavar="IFACE", help="network interface")
    capture.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    capture.add_argument("--label", help="app label put into the file names (for training)")
    capture.add_argument("--bpf", metavar="FILTER", help="capture filter (tcpdump syntax)")
    capture.add_argument("--rotate-mb", type=float, metavar="MB",
                         help="start a new file after this many megabytes")
    capture.add_argument("--rotate-seconds", type=float, metavar="S",
                         help="start a new file after this many seconds")
    capture.add_argument("--count", type=int, metavar="N", help="stop after N packets")
    capture.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    capture.add_argument("--user", help="user to switch to once the socket is open "
                         "(default: the sudo caller, if any)")
    capture.set_defaults(run=cmd_capture)

    live = sub.add_parser(
        "live", help="classify (or, without a model, report) the flows of an interface or a "
        "pcap stream as it happens",
        description="The per-burst report with the predicted app (or 'unknown') and the\n"
        "confidence of each flow, printed about a second after each burst ends. The source\n"
        "is a network interface, or - for a pcap stream on standard input. SIGUSR1 prints\n"
        "the kernel's drop counters.\n\n"
        "Without -m: the per-burst flow report of 'appsight flows' (no app column), so that a\n"
        "gateway can run the agent before a model is trained.\n\n"
        "Traffic that never pauses for the burst gap makes one endless burst. An open burst\n"
        "holds at most --max-flows flows and --max-packets packets: beyond, its flows silent\n"
        "longest are reported early (one warning line per burst, their count at exit).",
        epilog="examples:\n  appsight live eth1 -m model.skops --device 192.168.56.0/24\n"
        "  ssh gateway tcpdump -U -w - -i eth1 | appsight live - -m model.skops --json\n"
        "  appsight live eth1 --device 192.168.56.0/24    no model yet: the flows only",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_options(live, model_required=False)
    live.add_argument("--json-log", metavar="FILE",
                      help="also append every reported flow to FILE as JSON Lines (with app "
                      "and confidence when classifying), next to the report on stdout")
    live.add_argument("--bpf", metavar="FILTER", help="capture filter (tcpdump syntax)")
    live.add_argument("--write-pcap", metavar="DIR", help="also keep the packets, as pcap files")
    live.add_argument("--rotate-mb", type=float, metavar="MB", help="with --write-pcap")
    live.add_argument("--rotate-seconds", type=float, metavar="S", help="with --write-pcap")
    live.add_argument("--user", help="user to switch to once the socket is open")
    _add_live_limits(live)
    live.set_defaults(run=cmd_live)

    evaluate = sub.add_parser(
        "evaluate", help="measure accuracy on captures the model has not seen",
        description="Measure how well the forest of 'train' names apps in captures it has not\n"
        "seen: grouped cross-validation by capture (the flows of a capture, and captures that\n"
        "share packets per --groups-file, never sit on both sides), or training inputs against\n"
        "separate --test inputs. The confidence threshold is chosen as 'train' chooses it,\n"
        "from out-of-bag predictions of the training side only.\n\n"
        "Prints the per-app table (% correct, % unknown), AppScanner's reject-option table\n"
        "(thresholds 0.5 / 0.7 / 0.9) and macro-F1; writes results.json, confusion.png and\n"
        "coverage.png to the results folder. Give --test after the training inputs.",
        epilog="examples:\n"
        "  appsight labels from-ndpi ../shared/data/ndpi/ -o ndpi-labels.csv\n"
        "  appsight evaluate --labels ndpi-labels.csv ../shared/data/ndpi/ \\\n"
        "      --groups-file ../shared/data/pcap_overlaps.tsv --min-class-flows 10 "
        "--min-class-captures 2\n"
        "  appsight evaluate captures/ --test new-captures/ -o results/new",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_pipeline_options(evaluate)
    evaluate.add_argument("--labels", metavar="CSV",
                          help="labels file (default: folders DIR/<app>/*.pcap name the app)")
    _add_forest_options(evaluate)
    evaluate.add_argument("--folds", type=int, default=5, metavar="K",
                          help="cross-validation folds (default 5)")
    evaluate.add_argument("--test", nargs="+", metavar="INPUT",
                          help="test on these captures instead of cross-validating")
    evaluate.add_argument("--test-labels", metavar="CSV",
                          help="labels file for the --test inputs (default: --labels)")
    evaluate.add_argument("--groups-file", metavar="TSV", action="append",
                          help="pairs of captures that must stay together, tab-separated "
                          "with columns file_a and file_b relative to the file's folder "
                          "(as ../shared/data/pcap_overlaps.tsv); repeatable")
    evaluate.add_argument("--threshold", type=_probability, metavar="P",
                          help="confidence below which a flow is 'unknown' (default: chosen "
                          "from out-of-bag predictions of each training side)")
    evaluate.add_argument("--min-class-flows", type=int, default=1, metavar="N",
                          help="only apps with at least N flows (default 1)")
    evaluate.add_argument("--min-class-captures", type=int, default=1, metavar="N",
                          help="only apps seen in at least N independent captures; "
                          "overlapping captures count once (default 1)")
    evaluate.add_argument("-o", "--output", metavar="DIR",
                          help="results folder (default results/evaluate-<timestamp>)")
    evaluate.add_argument("--seed", type=int, default=0,
                          help="random seed of the folds and forests (default 0)")
    evaluate.add_argument("--json", action="store_true",
                          help="print one JSON object (the contents of results.json)")
    evaluate.add_argument("--ambiguity", action="store_true", help=AMBIGUITY_HELP)
    evaluate.set_defaults(run=cmd_evaluate)
    return parser


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run as Ctrl-C does: files closed, counts printed


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
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
