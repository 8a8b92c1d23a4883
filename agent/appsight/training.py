"""Training: labelled captures -> feature matrix -> random forest -> :class:`AppModel`.

Labelled input comes two ways (see :mod:`appsight.labels`): a labels file naming flows of
captures, or a folder per app (``DIR/<app>/*.pcap``) whose captures' flows all carry the
folder's name. The estimator, its forest and its threshold are :mod:`appsight.classifier`'s.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .classifier import (
    DEFAULT_MAX_LEAVES,
    DEFAULT_TREES,
    AppClassifier,
    check_forest_size,
)
from .errors import UsageError
from .features import FeatureSet
from .inputs import expand_captures
from .labels import LabelTable, is_background
from .model import AppModel
from .pipeline import CaptureSummary, PipelineOptions, iter_flow_blocks
from .report import flow_records


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
    """Fit an :class:`~appsight.classifier.AppClassifier` on the dataset, as a model file.

    Without a given threshold it is chosen on captures held out inside the training data
    (``groups``, default the captures; out-of-bag votes below 4 of them); with ``ambiguity``
    the checker is fitted on the capture ``groups`` (default: each capture its own group) and
    the threshold, 0.5 unless given, applies to its probability that an answer is right.
    """
    check_forest_size(trees, max_leaves)
    counts = dataset.class_counts()
    if len(dataset) == 0:
        raise UsageError("no labelled flows to train on")
    if len(counts) < 2:
        raise UsageError(f"need at least two apps to tell apart, found {sorted(counts)}")
    estimator = AppClassifier(trees, max_leaves, class_weight, threshold, ambiguity, seed)
    estimator.fit(dataset.features, dataset.labels,
                  dataset.captures if groups is None else groups)
    summary = {
        "flows": len(dataset),
        "flows_per_class": dict(sorted(counts.items())),
        "captures": len(set(dataset.captures.tolist())),
        "unlabelled_flows": dataset.unlabelled,
        "dropped_flows": dataset.dropped,
        "training_seconds": round(estimator.fit_seconds_, 3),
        "trees": trees,
        "max_leaves": max_leaves,
        "class_weight": class_weight,
        "threshold_chosen_by": estimator.threshold_chosen_by_,
        "ambiguity": ambiguity,
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return AppModel(estimator, dataset.feature_set, options.burst_gap,
                    {"training": summary, "decapsulate": options.decapsulate,
                     "device": list(options.device.specs) if options.device else []})
