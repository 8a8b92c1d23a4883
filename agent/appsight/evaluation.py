"""Evaluation: how well a model would do on captures it has never seen.

Two ways to get honest predictions, then one set of metrics over them:

* **Grouped cross-validation by capture.** Flows of one capture share hosts, timing and the
  session, so a flow-level split lets the forest recognise the session instead of the app.
  Every capture therefore sits wholly in one fold, and captures that share packets (listed
  together in a groups file such as ``pcap_overlaps.tsv``) are joined by union-find into one
  group that also stays in one fold.
* **Separate training and test inputs**, checked for the same leakage.

In both, each training side fits the :class:`~appsight.classifier.AppClassifier` that
``appsight train`` saves, so the confidence threshold is chosen as a saved model's is, from
the training side only (a cross-validation by capture inside it): choosing it on the test
flows would report a threshold no deployed model could have known.

The metrics are pure functions of ``(y_true, proba, classes, threshold)`` so that they can be
checked on hand-made predictions: the original project's per-app table (% correct, %
unknown), AppScanner's reject-option table (precision, recall, accuracy and share classified
at confidence thresholds), macro-F1 and the accuracy-versus-coverage curve. ``threshold`` is
``None`` (answer every flow), one number, or one number per flow (each fold's own threshold).
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .classifier import (
    DEFAULT_MAX_LEAVES,
    DEFAULT_TREES,
    UNKNOWN,
    AppClassifier,
)
from .errors import UsageError
from .training import Dataset

#: The thresholds of AppScanner's reject-option table.
CHECKPOINTS: tuple[float, ...] = (0.5, 0.7, 0.9)
#: Thresholds of the accuracy-versus-coverage curve.
CURVE_THRESHOLDS = np.round(np.linspace(0.0, 1.0, 101), 2)

Threshold = float | np.ndarray | None


# ======================================================================== grouping
class UnionFind:
    """Disjoint sets of hashable items; the representative of a set is its smallest item."""

    def __init__(self, items: Iterable[str] = ()) -> None:
        self.parent: dict[str, str] = {}
        for item in items:
            self.add(item)

    def add(self, item: str) -> None:
        self.parent.setdefault(item, item)

    def find(self, item: str) -> str:
        self.add(item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller name becomes the root, so group names do not depend on pair order.
            low, high = sorted((ra, rb))
            self.parent[high] = low


def read_groups_file(path: str | Path) -> list[tuple[str, str]]:
    """Pairs of captures that must stay on the same side, from a tab-separated file.

    The header names the columns; the pair is ``file_a`` and ``file_b`` as in
    ``pcap_overlaps.tsv``, or else the first two columns whose name starts with ``file`` or
    ``capture``. Paths are relative to the file's folder.
    """
    try:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the groups file: {exc.strerror}") from None
    reader = csv.reader(handle, delimiter="\t")
    try:
        with handle:
            return _group_pairs(path, reader)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    except csv.Error as exc:  # e.g. a field over the csv module's 131072-character limit
        raise UsageError(f"{path}, line {reader.line_num}: not a groups file ({exc})") from None


def _group_pairs(path: str | Path, reader: Any) -> list[tuple[str, str]]:
    """The (capture, capture) pairs of a groups file's rows, after its header."""
    header = [h.strip() for h in next(reader, [])]
    if "file_a" in header and "file_b" in header:
        ia, ib = header.index("file_a"), header.index("file_b")
    else:
        named = [i for i, h in enumerate(header) if h.startswith(("file", "capture"))]
        if len(named) < 2:
            raise UsageError(
                f"{path}: not a groups file: the tab-separated header needs the columns "
                "file_a and file_b (as pcap_overlaps.tsv)"
            )
        ia, ib = named[:2]
    pairs = []
    for line, row in enumerate(reader, start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(ia, ib) or not row[ia].strip() or not row[ib].strip():
            raise UsageError(f"{path}, line {line}: expected two capture names")
        pairs.append((row[ia].strip(), row[ib].strip()))
    return pairs


def _matches(entry: str, base: Path | None, captures: Sequence[str],
             resolved: dict[str, Path]) -> list[str]:
    """The captures a groups-file entry names: the same file, else the same trailing path."""
    entry_path = Path(entry)
    if base is not None:
        target = (base / entry_path).resolve()
        same = [c for c in captures if resolved[c] == target]
        if same:
            return same
    tail = entry_path.parts
    return [c for c in captures if Path(c).parts[-len(tail):] == tail]


def capture_groups(captures: Iterable[str], pairs: Iterable[tuple[str, str]] = (),
                   base: str | Path | None = None) -> dict[str, str]:
    """capture -> its group's name (the smallest capture path of the group).

    An entry of a pair names a capture by its path relative to ``base`` (the groups file's
    folder) or, failing that, by its trailing path components (``ndpi/x.pcap`` matches
    ``/data/ndpi/x.pcap``), so the groups file works wherever the corpus was copied. Pairs
    naming a capture that is not among ``captures`` join nothing.
    """
    names = sorted(set(captures))
    resolved = {c: Path(c).resolve() for c in names}
    base_path = Path(base) if base is not None else None
    sets = UnionFind(names)
    for a, b in pairs:
        joined = _matches(a, base_path, names, resolved) + _matches(b, base_path, names, resolved)
        for other in joined[1:]:
            sets.union(joined[0], other)
    return {c: sets.find(c) for c in names}


def groups_from_files(captures: Iterable[str], files: Iterable[str | Path]) -> dict[str, str]:
    """capture -> group over several groups files, each read relative to its own folder."""
    names = sorted(set(captures))
    sets = UnionFind(names)
    for path in files:
        for capture, group in capture_groups(names, read_groups_file(path),
                                             Path(path).parent).items():
            sets.union(capture, group)
    return {c: sets.find(c) for c in names}


def group_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int = 0) -> dict[str, int]:
    """group -> fold (0..k-1): StratifiedGroupKFold, so each app is spread over the folds.

    Returned per group rather than per flow so that other datasets of the same captures
    (another burst gap, another tool's flows) can be split with exactly the same folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    distinct = sorted(set(groups.tolist()))
    if k < 2:
        raise UsageError(f"--folds must be at least 2, not {k}")
    if len(distinct) < k:
        raise UsageError(
            f"{k} folds need at least {k} independent captures (or groups of overlapping "
            f"captures), found {len(distinct)}; use fewer --folds or give --test"
        )
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    assignment: dict[str, int] = {}
    with warnings.catch_warnings():
        # "The least populated class has only n members": expected with rare apps.
        warnings.simplefilter("ignore", UserWarning)
        for fold, (_, test) in enumerate(
            splitter.split(np.zeros(len(labels)), labels.astype(str), groups.astype(str))
        ):
            for g in set(groups[test].tolist()):
                assignment[g] = fold
    return assignment


def subset(dataset: Dataset, mask: np.ndarray) -> Dataset:
    """The flows of a dataset where ``mask`` holds (records too, when kept)."""
    records = ([r for r, keep in zip(dataset.records, mask.tolist(), strict=True) if keep]
               if dataset.records else [])
    return Dataset(dataset.features[mask], dataset.labels[mask], dataset.captures[mask],
                   dataset.feature_set, dataset.unlabelled, dataset.dropped, records)


# ======================================================================= predicting
@dataclass
class FoldResult:
    """What one training/test split did."""

    index: int
    train_flows: int
    test_flows: int
    test_captures: list[str]
    threshold: float
    fit_seconds: float
    unseen_apps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "fold": self.index, "train_flows": self.train_flows, "test_flows": self.test_flows,
            "threshold": self.threshold, "fit_seconds": round(self.fit_seconds, 3),
            "apps_not_in_training": self.unseen_apps, "test_captures": self.test_captures,
        }


@dataclass
class Predictions:
    """Test-side predictions of every flow, with the threshold its own model would apply."""

    classes: list[str]
    truth: np.ndarray
    proba: np.ndarray
    threshold: np.ndarray
    folds: list[FoldResult]

    @property
    def fit_seconds(self) -> float:
        return sum(f.fit_seconds for f in self.folds)


def fit_predict(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, classes: Sequence[str],
    trees: int = DEFAULT_TREES, max_leaves: int | None = DEFAULT_MAX_LEAVES, seed: int = 0,
    threshold: float | None = None, train_groups: np.ndarray | None = None,
    ambiguity: bool = False,
) -> tuple[np.ndarray, float, float]:
    """(test probabilities over ``classes``, threshold, fit seconds) from the training forest.

    The probability columns are widened to ``classes``: an app missing from this training
    side gets probability 0, so it is never predicted, as a deployed model could not.
    ``train_groups`` (the capture group of each training flow) is what the threshold is
    chosen on, as ``train`` chooses it; with ``ambiguity`` the checker is trained on them too
    and each row's top value is its probability that the answer is right.
    """
    estimator = AppClassifier(trees, max_leaves, threshold=threshold, seed=seed,
                              ambiguity=ambiguity)
    estimator.fit(train_x, train_y, train_groups)
    proba = np.zeros((len(test_x), len(classes)))
    if len(test_x):
        position = {c: i for i, c in enumerate(classes)}
        columns = [position[str(c)] for c in estimator.classes_]
        proba[:, columns] = estimator.predict_proba(test_x)
    return proba, estimator.threshold_, estimator.fit_seconds_


def cross_validate(
    dataset: Dataset, fold_of_group: dict[str, int], groups: np.ndarray,
    trees: int = DEFAULT_TREES, max_leaves: int | None = DEFAULT_MAX_LEAVES, seed: int = 0,
    threshold: float | None = None, on_fold: Any = None, ambiguity: bool = False,
) -> Predictions:
    """Out-of-fold predictions: each fold is predicted by a forest that never saw its groups
    (and, with ``ambiguity``, by a checker trained on the training folds only)."""
    classes = sorted(set(dataset.labels.astype(str).tolist()))
    fold = np.array([fold_of_group[g] for g in groups.tolist()], dtype=np.int64)
    proba = np.zeros((len(dataset), len(classes)))
    cut = np.zeros(len(dataset))
    results = []
    for k in sorted(set(fold.tolist())):
        test = fold == k
        train = ~test
        train_y = dataset.labels[train].astype(str)
        if len(set(train_y.tolist())) < 2:
            raise UsageError(f"fold {k + 1}: fewer than two apps left to train on")
        proba[test], chosen, seconds = fit_predict(
            dataset.features[train], train_y, dataset.features[test], classes, trees,
            max_leaves, seed, threshold, groups[train], ambiguity,
        )
        cut[test] = chosen
        unseen = sorted(set(dataset.labels[test].tolist()) - set(train_y.tolist()))
        results.append(FoldResult(
            k + 1, int(train.sum()), int(test.sum()),
            sorted(set(dataset.captures[test].tolist())), chosen, seconds, unseen,
        ))
        if on_fold is not None:
            on_fold(results[-1])
    return Predictions(classes, dataset.labels.astype(str), proba, cut, results)


def train_test(
    train: Dataset, test: Dataset, trees: int = DEFAULT_TREES,
    max_leaves: int | None = DEFAULT_MAX_LEAVES, seed: int = 0, threshold: float | None = None,
    train_groups: np.ndarray | None = None, ambiguity: bool = False,
) -> Predictions:
    """Predictions on separate test inputs from a forest trained on the training inputs
    (and an ambiguity checker with ``ambiguity``); the threshold is chosen on the training
    flows' capture groups (default: their captures), as ``train`` chooses it."""
    train_y = train.labels.astype(str)
    classes = sorted(set(train_y.tolist()) | set(test.labels.astype(str).tolist()))
    groups = train.captures if train_groups is None else train_groups
    proba, chosen, seconds = fit_predict(train.features, train_y, test.features, classes,
                                         trees, max_leaves, seed, threshold, groups, ambiguity)
    unseen = sorted(set(test.labels.tolist()) - set(train_y.tolist()))
    fold = FoldResult(1, len(train), len(test), sorted(set(test.captures.tolist())), chosen,
                      seconds, unseen)
    return Predictions(classes, test.labels.astype(str), proba,
                       np.full(len(test), chosen), [fold])


# ========================================================================= metrics
def decide(proba: np.ndarray, classes: Sequence[str],
           threshold: Threshold = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(answer, confidence, answered): the top app, its probability, and whether it passes.

    A flow is answered when its top probability is at least the threshold (as
    :meth:`~appsight.model.AppModel.predict` does); an unanswered flow's answer is ``unknown``.
    """
    names = np.asarray(list(classes), dtype=object)
    if len(proba) == 0:
        empty = np.zeros(0)
        return np.zeros(0, dtype=object), empty, empty.astype(bool)
    best = proba.argmax(axis=1)
    confidence = proba[np.arange(len(best)), best]
    answered = (np.ones(len(best), dtype=bool) if threshold is None
                else confidence >= np.asarray(threshold))
    answer = np.where(answered, names[best], UNKNOWN).astype(object)
    return answer, confidence, answered


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else math.nan


def per_app_table(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str],
                  threshold: Threshold) -> dict[str, Any]:
    """The original project's table: per true app, % of its flows right and confident, %
    unknown (below the threshold) and % confidently wrong; plus the unweighted average over
    apps, which is what the original project's "average" row is (every app counts once)."""
    answer, _, answered = decide(proba, classes, threshold)
    truth = np.asarray(y_true, dtype=object)
    rows = []
    for app in sorted(set(truth.tolist())):
        mine = truth == app
        n = int(mine.sum())
        right = int(np.sum(mine & (answer == app)))
        unknown = int(np.sum(mine & ~answered))
        rows.append({"app": app, "flows": n, "correct": _pct(right, n),
                     "unknown": _pct(unknown, n), "wrong": _pct(n - right - unknown, n)})
    average = {key: float(np.mean([r[key] for r in rows])) if rows else math.nan
               for key in ("correct", "unknown", "wrong")}
    return {"apps": rows, "average": {"flows": len(truth), **average}}


def reject_option_row(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str],
                      threshold: Threshold) -> dict[str, Any]:
    """AppScanner's measures over the flows classified at ``threshold``.

    Precision is averaged over the apps predicted at least once, recall over the apps present
    among the classified flows (an average over apps for which the measure is defined, not
    padded with zeros); accuracy is the share of classified flows that are right; and
    ``classified`` the share of all flows that got an answer. As AppScanner insists, accuracy
    means nothing without the share classified next to it.
    """
    answer, _, answered = decide(proba, classes, threshold)
    truth = np.asarray(y_true, dtype=object)[answered]
    guess = answer[answered]
    right = truth == guess
    precision = [float(np.mean(right[guess == app])) for app in sorted(set(guess.tolist()))]
    recall = [float(np.mean(right[truth == app])) for app in sorted(set(truth.tolist()))]
    return {
        "threshold": None if threshold is None else _threshold_value(threshold),
        "precision": 100.0 * float(np.mean(precision)) if precision else math.nan,
        "recall": 100.0 * float(np.mean(recall)) if recall else math.nan,
        "accuracy": 100.0 * float(np.mean(right)) if len(right) else math.nan,
        "classified": _pct(int(answered.sum()), len(answered)),
        "flows_classified": int(answered.sum()),
    }


def _threshold_value(threshold: float | np.ndarray) -> float | str:
    values = np.unique(np.asarray(threshold, dtype=float))
    return float(values[0]) if len(values) == 1 else "per fold"


def appscanner_table(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str],
                     thresholds: Sequence[float] = CHECKPOINTS) -> list[dict[str, Any]]:
    """The reject-option table: no threshold first, then each of ``thresholds``."""
    return [reject_option_row(y_true, proba, classes, None)] + [
        reject_option_row(y_true, proba, classes, t) for t in thresholds
    ]


def macro_f1(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str],
             threshold: Threshold = None) -> float:
    """Mean over the true apps of F1, where ``unknown`` is a wrong answer.

    An unanswered flow lowers its app's recall and no app's precision, so a threshold can
    only raise macro-F1 by removing wrong answers, never by hiding the hard flows.
    """
    answer, _, _ = decide(proba, classes, threshold)
    truth = np.asarray(y_true, dtype=object)
    scores = []
    for app in sorted(set(truth.tolist())):
        hit = int(np.sum((truth == app) & (answer == app)))
        said = int(np.sum(answer == app))
        real = int(np.sum(truth == app))
        scores.append(0.0 if hit == 0 else 2.0 * hit / (said + real))
    return float(np.mean(scores)) if scores else math.nan


def threshold_for_coverage(proba: np.ndarray, coverage: float) -> float:
    """The highest threshold that still answers at least ``coverage`` of the flows.

    For comparing feature sets at equal coverage: chosen on the predictions being scored,
    so it is a yardstick, not a threshold to deploy.
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], not {coverage}")
    if len(proba) == 0:
        return 0.0
    confidence = np.sort(proba.max(axis=1))[::-1]
    return float(confidence[max(math.ceil(coverage * len(confidence)) - 1, 0)])


def coverage_curve(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str],
                   thresholds: Sequence[float] | np.ndarray = CURVE_THRESHOLDS,
                   ) -> dict[str, list[float]]:
    """Share classified and accuracy over the classified flows at every threshold (in %)."""
    answer, confidence, _ = decide(proba, classes, None)
    right = answer == np.asarray(y_true, dtype=object)
    coverage, accuracy = [], []
    for t in thresholds:
        answered = confidence >= t
        coverage.append(_pct(int(answered.sum()), len(answered)))
        accuracy.append(_pct(int(np.sum(right & answered)), int(answered.sum())))
    return {"threshold": [float(t) for t in thresholds], "coverage": coverage,
            "accuracy": accuracy}


def confusion(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str],
              threshold: Threshold) -> dict[str, Any]:
    """Counts of (true app, answer): rows the true apps, columns every app plus ``unknown``."""
    answer, _, _ = decide(proba, classes, threshold)
    truth = np.asarray(y_true, dtype=object)
    rows = sorted(set(truth.tolist()), key=str.casefold)
    columns = [*sorted(set(rows) | set(classes), key=str.casefold), UNKNOWN]
    r = {app: i for i, app in enumerate(rows)}
    c = {app: i for i, app in enumerate(columns)}
    counts = np.zeros((len(rows), len(columns)), dtype=np.int64)
    np.add.at(counts, ([r[t] for t in truth.tolist()], [c[a] for a in answer.tolist()]), 1)
    return {"rows": rows, "columns": columns, "counts": counts.tolist()}


def confused_pairs(matrix: dict[str, Any], top: int = 10) -> list[dict[str, Any]]:
    """The largest off-diagonal cells of a confusion matrix (``unknown`` left out)."""
    counts = np.asarray(matrix["counts"])
    pairs = []
    for i, true_app in enumerate(matrix["rows"]):
        total = int(counts[i].sum())
        for j, answer in enumerate(matrix["columns"]):
            if answer in (true_app, UNKNOWN) or counts[i, j] == 0:
                continue
            pairs.append({"true": true_app, "answer": answer, "flows": int(counts[i, j]),
                          "share_of_true": _pct(int(counts[i, j]), total)})
    pairs.sort(key=lambda p: (-p["flows"], p["true"], p["answer"]))
    return pairs[:top]


def summarise(predictions: Predictions) -> dict[str, Any]:
    """Every metric of one evaluation, ready for results.json and the printed tables."""
    y, p, classes, cut = (predictions.truth, predictions.proba, predictions.classes,
                          predictions.threshold)
    answered = decide(p, classes, cut)[2]
    at_80 = threshold_for_coverage(p, 0.8)
    return {
        "flows": len(y),
        "apps": len(set(y.tolist())),
        "thresholds": [f.threshold for f in predictions.folds],
        "classified_at_chosen": _pct(int(answered.sum()), len(answered)),
        "per_app": per_app_table(y, p, classes, cut),
        "appscanner": appscanner_table(y, p, classes),
        "chosen": reject_option_row(y, p, classes, cut),
        "macro_f1": {
            "chosen_threshold": macro_f1(y, p, classes, cut),
            "no_threshold": macro_f1(y, p, classes, None),
            "coverage_80": macro_f1(y, p, classes, at_80),
            "coverage_80_threshold": at_80,
        },
        "confusion": confusion(y, p, classes, cut),
        "curve": coverage_curve(y, p, classes),
        "folds": [f.as_dict() for f in predictions.folds],
        "fit_seconds": round(predictions.fit_seconds, 3),
    }


# ======================================================================== printing
def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def format_report(summary: dict[str, Any]) -> str:
    """The tables for a person: per-app table, AppScanner's table, macro-F1, threshold."""
    lines: list[str] = []
    apps = summary["per_app"]["apps"]
    width = max([len(r["app"]) for r in apps] + [len("average")])
    thresholds = sorted(set(summary["thresholds"]))
    if len(thresholds) == 1:
        cut = f"threshold {thresholds[0]:.2f}"
    else:
        cut = "thresholds " + "/".join(f"{t:.2f}" for t in summary["thresholds"]) + " by fold"
    lines.append(f"Per app ({cut}; % of the app's flows)")
    lines.append(f"  {'app':<{width}}  {'flows':>6}  {'correct':>7}  {'unknown':>7}  {'wrong':>6}")
    for r in apps:
        lines.append(f"  {r['app']:<{width}}  {r['flows']:>6}  {_num(r['correct']):>7}  "
                     f"{_num(r['unknown']):>7}  {_num(r['wrong']):>6}")
    avg = summary["per_app"]["average"]
    lines.append(f"  {'average':<{width}}  {avg['flows']:>6}  {_num(avg['correct']):>7}  "
                 f"{_num(avg['unknown']):>7}  {_num(avg['wrong']):>6}")
    lines.append("")
    lines.append("Reject option (AppScanner; precision and recall are macro over apps, all "
                 "measures over the flows classified)")
    lines.append(f"  {'threshold':>9}  {'precision':>9}  {'recall':>6}  {'accuracy':>8}  "
                 f"{'classified':>10}")
    chosen = dict(summary["chosen"], threshold=f"{thresholds[0]:.2f}*"
                  if len(thresholds) == 1 else "per fold*")
    for row in [*summary["appscanner"], chosen]:
        t = row["threshold"]
        name = "none" if t is None else t if isinstance(t, str) else f"{t:.1f}"
        lines.append(f"  {name:>9}  {_num(row['precision']):>9}  {_num(row['recall']):>6}  "
                     f"{_num(row['accuracy']):>8}  {_num(row['classified']):>9}%")
    lines.append("  * the chosen threshold (from the training side only)")
    lines.append("")
    f1 = summary["macro_f1"]
    lines.append(
        f"Macro-F1 (unknown counts as wrong): {f1['chosen_threshold']:.3f} at the chosen "
        f"threshold, {f1['no_threshold']:.3f} with no threshold, {f1['coverage_80']:.3f} at "
        f"80% coverage (threshold {f1['coverage_80_threshold']:.2f})"
    )
    return "\n".join(lines)
