"""Training: labelled captures -> feature matrix -> random forest -> :class:`AppModel`.

Labelled input comes two ways (see :mod:`appsight.labels`): a labels file naming flows of
captures, or a folder per app (``DIR/<app>/*.pcap``) whose captures' flows all carry the
folder's name. The forest follows AppScanner (150 trees, gini, sqrt of the features per
split) with a bound on the leaves per tree, so the model file stays small on large corpora.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError
from .features import FeatureSet
from .inputs import expand_captures
from .labels import LabelTable, is_background
from .model import AppModel
from .pipeline import CaptureSummary, PipelineOptions, iter_flow_blocks
from .report import flow_records

DEFAULT_TREES = 150
DEFAULT_MAX_LEAVES = 2048
THRESHOLD_GRID = np.round(np.arange(0.0, 0.96, 0.05), 2)
#: The ambiguity stage: folds and trees of the inner cross-validation that finds which
#: training flows a forest gets wrong on captures it has not seen.
CHECKER_FOLDS = 4
CHECKER_INNER_TREES = 50
#: With a checker, a flow is answered when its answer is more likely right than wrong.
CHECKER_THRESHOLD = 0.5


@dataclass
class Dataset:
    """Labelled flows: features, labels and the capture each flow came from."""

    features: np.ndarray
    labels: np.ndarray
    captures: np.ndarray
    feature_set: FeatureSet
    unlabelled: int = 0
    dropped: int = 0
    records: list[dict[str, object]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> Counter[str]:
        return Counter(self.labels.tolist())


@dataclass(frozen=True)
class FlowFilter:
    """Which labelled flows to keep for training and evaluation."""

    drop_background: bool = False
    min_packets: int = 1

    def keep(self, record: dict[str, object]) -> bool:
        packets = int(record["packets_fwd"]) + int(record["packets_bwd"])  # type: ignore[call-overload]
        if packets < self.min_packets:
            return False
        return not (self.drop_background and is_background(record))


def labelled_sources(inputs: list[str], labels: LabelTable | None) -> list[tuple[str, str | None]]:
    """(capture path, folder label or None) for every capture to train on."""
    if labels is not None:
        return [(path, None) for path in expand_captures(inputs)]
    sources: list[tuple[str, str | None]] = []
    for item in inputs:
        root = Path(item)
        if not root.is_dir():
            raise UsageError(
                f"{item}: without --labels, give folders of the form DIR/<app>/*.pcap "
                "(the folder name is the label)"
            )
        apps = sorted(p for p in root.iterdir() if p.is_dir())
        if not apps:
            raise UsageError(f"{item}: no app folders inside (expected {item}/<app>/*.pcap)")
        for app in apps:
            try:
                captures = expand_captures([str(app)])
            except UsageError:
                continue
            sources.extend((c, app.name) for c in captures)
    if not sources:
        raise UsageError("no captures found in the app folders")
    return sources


def build_dataset(
    sources: list[tuple[str, str | None]],
    labels: LabelTable | None,
    feature_set: FeatureSet,
    options: PipelineOptions,
    flow_filter: FlowFilter,
    on_summary: Callable[[CaptureSummary], None] | None = None,
    keep_records: bool = False,
) -> Dataset:
    """Read every capture once and collect the features of its labelled flows."""
    chunks: list[np.ndarray] = []
    names: list[str] = []
    groups: list[str] = []
    records_kept: list[dict[str, object]] = []
    unlabelled = dropped = 0
    for path, folder_label in sources:
        capture_id = str(Path(path))
        for block in iter_flow_blocks(path, options, on_summary):
            records = list(flow_records(block))
            found = (
                [folder_label] * len(records) if labels is None
                else labels.label_block(block, records)
            )
            keep = []
            for i, (record, label) in enumerate(zip(records, found, strict=True)):
                if label is None:
                    unlabelled += 1
                elif not flow_filter.keep(record):
                    dropped += 1
                else:
                    keep.append(i)
            if not keep:
                continue
            matrix = feature_set(block.flows)[keep]
            chunks.append(matrix)
            names.extend(str(found[i]) for i in keep)
            groups.extend([capture_id] * len(keep))
            if keep_records:
                records_kept.extend(records[i] for i in keep)
    features = np.vstack(chunks) if chunks else np.zeros((0, len(feature_set.columns)))
    return Dataset(features, np.array(names, dtype=object), np.array(groups, dtype=object),
                   feature_set, unlabelled, dropped, records_kept)


def check_forest_size(trees: int, max_leaves: int | None) -> None:
    """Refuse forest sizes scikit-learn would reject, before any capture is read."""
    if trees < 1:
        raise UsageError(f"--trees must be at least 1, not {trees}")
    if max_leaves is not None and max_leaves < 2:
        raise UsageError(f"--max-leaves must be at least 2 (or 0 for no bound), not {max_leaves}")


def make_forest(trees: int = DEFAULT_TREES, max_leaves: int | None = DEFAULT_MAX_LEAVES,
                class_weight: str | None = None, seed: int = 0, jobs: int = -1,
                oob: bool = False):
    """The forest every command trains: AppScanner's settings plus a size bound."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=trees, criterion="gini", max_features="sqrt",
        max_leaf_nodes=max_leaves, class_weight=class_weight, random_state=seed,
        n_jobs=jobs, oob_score=oob,
    )


def classes_with_enough_data(labels: np.ndarray, groups: np.ndarray, min_flows: int = 1,
                             min_groups: int = 1) -> list[str]:
    """Apps with at least ``min_flows`` flows from at least ``min_groups`` capture groups.

    Groups, not captures, are counted: two overlapping captures of one app are one piece of
    evidence, and only an app in two independent groups can be on both sides of a split.
    """
    flows: dict[str, int] = {}
    seen: dict[str, set[str]] = {}
    for label, group in zip(labels.tolist(), groups.tolist(), strict=True):
        flows[label] = flows.get(label, 0) + 1
        seen.setdefault(label, set()).add(group)
    return sorted(a for a in flows if flows[a] >= min_flows and len(seen[a]) >= min_groups)


def check_checker_groups(labels: np.ndarray, groups: np.ndarray) -> None:
    """The ambiguity stage learns from flows of captures held out; refuse data where an app
    has a single capture group (it would always be held out with all its flows, and the
    checker would learn that the app is always wrong)."""
    kept = classes_with_enough_data(labels.astype(str), groups, min_groups=2)
    single = sorted(set(labels.astype(str).tolist()) - set(kept))
    if single:
        raise UsageError(
            "--ambiguity needs every app in at least 2 independent captures; only one for "
            + ", ".join(single[:8]) + (" ..." if len(single) > 8 else ""))


def fit_checker(features: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                trees: int = DEFAULT_TREES, max_leaves: int | None = DEFAULT_MAX_LEAVES,
                seed: int = 0) -> Any:
    """AppScanner's ambiguity stage: a second forest that predicts whether the first is right.

    (Inside a cross-validation an app may have one capture group on the training side: its
    flows are then labelled by a forest that never saw the app, wrong, which is what a
    deployed model meeting such an app in a new capture would face too.)

    AppScanner labelled each training flow right or wrong by re-classifying the training
    set. Across captures that is as optimistic as out-of-bag votes: a flow's capture is in
    the training data. Here a flow is labelled by a forest that never saw its capture (a
    cross-validation grouped by capture inside the training data, with smaller forests), so
    the checker learns which flows are hard on *new* captures. ``docs/accuracy.md`` measures
    the gain at equal coverage.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if len(set(groups.tolist())) < CHECKER_FOLDS:
        raise UsageError(f"--ambiguity needs at least {CHECKER_FOLDS} independent captures")
    y = labels.astype(str)
    right = np.zeros(len(y), dtype=bool)
    splitter = StratifiedGroupKFold(n_splits=CHECKER_FOLDS, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" with rare apps
        for inner_train, inner_test in splitter.split(features, y, groups.astype(str)):
            forest = make_forest(CHECKER_INNER_TREES, max_leaves, seed=seed)
            forest.fit(features[inner_train], y[inner_train])
            said = forest.classes_[forest.predict_proba(features[inner_test]).argmax(axis=1)]
            right[inner_test] = said == y[inner_test]
    checker = make_forest(trees, max_leaves, seed=seed)
    checker.fit(features, right)
    return checker


def choose_threshold(probabilities: np.ndarray, truth_index: np.ndarray) -> float:
    """The confidence threshold that maximises (right answers - wrong answers).

    A flow below the threshold is "unknown" and scores 0; a confident right answer +1, a
    confident wrong one -1. So the threshold lands where a flow's answer is as likely wrong as
    right, the point past which answering costs more than it gains.
    """
    best = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(best)), best]
    right = best == truth_index
    scores = [int(np.sum(right & (confidence >= t)) - np.sum(~right & (confidence >= t)))
              for t in THRESHOLD_GRID]
    return float(THRESHOLD_GRID[int(np.argmax(scores))])


def train_model(
    dataset: Dataset,
    options: PipelineOptions,
    trees: int = DEFAULT_TREES,
    max_leaves: int | None = DEFAULT_MAX_LEAVES,
    class_weight: str | None = None,
    threshold: float | None = None,
    seed: int = 0,
    ambiguity: bool = False,
    groups: np.ndarray | None = None,
) -> AppModel:
    """Fit the forest; without a given threshold, choose one from out-of-bag predictions.

    With ``ambiguity``, also fit the ambiguity checker (:func:`fit_checker`) on the capture
    ``groups`` (default: each capture its own group); the threshold then applies to the
    checker's probability that an answer is right, and is 0.5 unless given.
    """
    check_forest_size(trees, max_leaves)
    counts = dataset.class_counts()
    if len(dataset) == 0:
        raise UsageError("no labelled flows to train on")
    if len(counts) < 2:
        raise UsageError(f"need at least two apps to tell apart, found {sorted(counts)}")
    if groups is None:
        groups = dataset.captures
    if ambiguity:
        check_checker_groups(dataset.labels, groups)
    started = time.perf_counter()
    forest = make_forest(trees, max_leaves, class_weight, seed,
                         oob=threshold is None and not ambiguity)
    with warnings.catch_warnings():
        # With few trees some flows are in every tree's sample; they are left out below.
        warnings.filterwarnings("ignore", message="Some inputs do not have OOB scores")
        forest.fit(dataset.features, dataset.labels.astype(str))
    checker = None
    chosen_by = "given"
    if ambiguity:
        checker = fit_checker(dataset.features, dataset.labels, groups, trees, max_leaves, seed)
        if threshold is None:
            threshold, chosen_by = CHECKER_THRESHOLD, "ambiguity checker: more likely right"
    seconds = time.perf_counter() - started
    if threshold is None:
        oob = np.nan_to_num(forest.oob_decision_function_)
        truth = np.searchsorted(forest.classes_, dataset.labels.astype(str))
        voted = oob.sum(axis=1) > 0  # flows that some tree left out of its sample
        threshold = choose_threshold(oob[voted], truth[voted]) if voted.any() else 0.5
        chosen_by = "out-of-bag predictions"
        del forest.oob_decision_function_  # training-set data has no place in the model file
    summary = {
        "flows": len(dataset),
        "flows_per_class": dict(sorted(counts.items())),
        "captures": len(set(dataset.captures.tolist())),
        "unlabelled_flows": dataset.unlabelled,
        "dropped_flows": dataset.dropped,
        "training_seconds": round(seconds, 3),
        "trees": trees,
        "max_leaves": max_leaves,
        "class_weight": class_weight,
        "threshold_chosen_by": chosen_by,
        "ambiguity": ambiguity,
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return AppModel(
        forest=forest,
        feature_set=dataset.feature_set,
        threshold=float(threshold),
        burst_gap=options.burst_gap,
        metadata={"training": summary, "decapsulate": options.decapsulate},
        checker=checker,
    )
