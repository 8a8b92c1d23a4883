"""The estimator every command trains: a random forest, a reject threshold, and optionally
AppScanner's ambiguity checker, as one scikit-learn classifier.

``AppClassifier().fit(X, y, groups)`` is what ``train`` saves, what ``evaluate`` fits on each
training side, and what the benchmarks compare feature sets with, so a threshold or a
checker is chosen the same way wherever a number is reported. It follows scikit-learn's
estimator contract (``get_params``, ``clone``, ``predict_proba``, ``predict``, ``classes_``),
so sklearn's splitters and model-selection helpers work on it.

The forest follows AppScanner (gini, the square root of the features per split; 150 trees by
default) with a bound on the leaves per tree, so the model file stays small on large corpora.

Confidence is the forest's top vote share, or, with the ambiguity checker, the checker's
probability that the forest's answer is right. A row whose confidence is below the threshold
is answered :data:`UNKNOWN`.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from .errors import UsageError

UNKNOWN = "unknown"
DEFAULT_TREES = 150
DEFAULT_MAX_LEAVES = 2048
THRESHOLD_GRID = np.round(np.arange(0.0, 0.96, 0.05), 2)
#: The ambiguity stage: folds and trees of the inner cross-validation that finds which
#: training flows a forest gets wrong on captures it has not seen.
CHECKER_FOLDS = 4
CHECKER_INNER_TREES = 50
#: With a checker, a flow is answered when its answer is more likely right than wrong.
CHECKER_THRESHOLD = 0.5
#: Rows per predict call: joblib's start-up costs more than it saves on small batches, so
#: prediction is single-threaded, and batches keep the forest's working memory small.
PREDICT_BATCH = 256


def check_forest_size(trees: int, max_leaves: int | None) -> None:
    """Refuse forest sizes scikit-learn would reject, before any capture is read."""
    if trees < 1:
        raise UsageError(f"--trees must be at least 1, not {trees}")
    if max_leaves is not None and max_leaves < 2:
        raise UsageError(f"--max-leaves must be at least 2 (or 0 for no bound), not {max_leaves}")


def make_forest(trees: int = DEFAULT_TREES, max_leaves: int | None = DEFAULT_MAX_LEAVES,
                class_weight: str | None = None, seed: int = 0, jobs: int = -1,
                oob: bool = False) -> Any:
    """AppScanner's forest settings plus a size bound."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=trees, criterion="gini", max_features="sqrt",
        max_leaf_nodes=max_leaves, class_weight=class_weight, random_state=seed,
        n_jobs=jobs, oob_score=oob,
    )


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


def oob_threshold(forest: Any, labels: np.ndarray) -> float:
    """:func:`choose_threshold` over the forest's out-of-bag votes on its training rows.

    Rows that every tree drew into its sample (likely only with few trees) have no vote and
    are left out; with no vote at all the threshold is 0.5.
    """
    oob = np.nan_to_num(forest.oob_decision_function_)
    truth = np.searchsorted(forest.classes_, labels)
    voted = oob.sum(axis=1) > 0
    return choose_threshold(oob[voted], truth[voted]) if voted.any() else 0.5


def held_out_proba(features: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                   max_leaves: int | None = DEFAULT_MAX_LEAVES, seed: int = 0,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities, their classes (sorted), whether the row's app was on the training side)
    of every training row from a forest that never saw its capture group: CHECKER_FOLDS folds
    grouped by capture, CHECKER_INNER_TREES trees.

    What a deployed model meets is new captures. Out-of-bag votes come from trees that saw
    the row's own capture (other flows of the same session, a day's repeats), so they are
    sure of themselves where the model on new captures is not; rows held out by capture
    are not. An app whose every group lands on the held-out side gets probability 0 there.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = labels.astype(str)
    classes = np.array(sorted(set(y.tolist())))
    proba = np.zeros((len(y), len(classes)))
    seen = np.zeros(len(y), dtype=bool)
    splitter = StratifiedGroupKFold(n_splits=CHECKER_FOLDS, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" with rare apps
        for inner_train, inner_test in splitter.split(features, y, groups.astype(str)):
            forest = make_forest(CHECKER_INNER_TREES, max_leaves, seed=seed)
            forest.fit(features[inner_train], y[inner_train])
            columns = np.searchsorted(classes, forest.classes_.astype(str))
            proba[np.ix_(inner_test, columns)] = forest.predict_proba(features[inner_test])
            seen[inner_test] = np.isin(y[inner_test], forest.classes_.astype(str))
    return proba, classes, seen


def grouped_threshold(features: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                      max_leaves: int | None = DEFAULT_MAX_LEAVES, seed: int = 0) -> float:
    """:func:`choose_threshold` over :func:`held_out_proba`: the threshold ``train`` saves.

    Only rows whose app was on the training side count: an app with one capture is held out
    whole, and its flows, always wrong there, say nothing about the model that knows it.
    (Call it when at least two apps have two capture groups or more: :func:`can_hold_out`.)
    """
    proba, classes, seen = held_out_proba(features, labels, groups, max_leaves, seed)
    truth = np.searchsorted(classes, labels.astype(str))
    return choose_threshold(proba[seen], truth[seen])


def can_hold_out(labels: np.ndarray, groups: np.ndarray) -> bool:
    """Whether captures can be held out to choose a threshold: CHECKER_FOLDS groups or more,
    and two or more apps in two groups or more."""
    return len(set(groups.tolist())) >= CHECKER_FOLDS and len(
        classes_with_enough_data(labels.astype(str), groups, min_groups=2)) >= 2


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

    AppScanner labelled each training flow right or wrong by re-classifying the training
    set. Across captures that is as optimistic as out-of-bag votes: a flow's capture is in
    the training data. Here a flow is labelled by a forest that never saw its capture (a
    cross-validation grouped by capture inside the training data, with smaller forests), so
    the checker learns which flows are hard on *new* captures.
    ``docs/accuracy-protocols.md`` measures the gain at equal coverage.

    (Inside a cross-validation an app may have one capture group on the training side: its
    flows are then labelled by a forest that never saw the app, wrong, which is what a
    deployed model meeting such an app in a new capture would face too.)
    """
    if len(set(groups.tolist())) < CHECKER_FOLDS:
        raise UsageError(f"--ambiguity needs at least {CHECKER_FOLDS} independent captures")
    y = labels.astype(str)
    proba, classes, _ = held_out_proba(features, y, groups, max_leaves, seed)
    right = classes[proba.argmax(axis=1)] == y
    checker = make_forest(trees, max_leaves, seed=seed)
    checker.fit(features, right)
    return checker


def right_probability(checker: Any, features: np.ndarray) -> np.ndarray:
    """The ambiguity checker's probability that the main forest's answer is right.

    A checker trained where the forest was always right (or always wrong) knows one class
    only; its answer is then that class with certainty.
    """
    proba = checker.predict_proba(features)
    where = [i for i, c in enumerate(checker.classes_) if bool(c)]
    return proba[:, where[0]] if where else np.zeros(len(features))


def with_confidence(proba: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Rows scaled so that each row's top value is ``confidence`` and its answer unchanged.

    Every metric reads an answer (the top column) and a confidence (its value) from a row;
    with an ambiguity checker the confidence is the checker's, so the rows carry it.
    """
    top = proba.max(axis=1, initial=0.0)
    # A confidence of 0 is kept a hair above 0, so the row still names its answer.
    wanted = np.maximum(confidence, 1e-12)
    scale = np.divide(wanted, top, out=np.zeros(len(proba)), where=top > 0)
    return proba * scale[:, None]


class AppClassifier(ClassifierMixin, BaseEstimator):
    """Random forest + reject threshold (+ ambiguity checker): the model of every command.

    Parameters are those of ``appsight train``. ``threshold=None`` chooses it on fit: on
    flows of captures held out inside the training data when ``groups`` allows it
    (:func:`can_hold_out`, :func:`grouped_threshold`), else from out-of-bag votes
    (:func:`oob_threshold`); with the ambiguity checker it is :data:`CHECKER_THRESHOLD`.
    After fit: ``forest_``, ``checker_`` (None without ambiguity), ``threshold_``,
    ``threshold_chosen_by_``, ``classes_`` and ``fit_seconds_``.
    """

    def __init__(self, trees: int = DEFAULT_TREES, max_leaves: int | None = DEFAULT_MAX_LEAVES,
                 class_weight: str | None = None, threshold: float | None = None,
                 ambiguity: bool = False, seed: int = 0, jobs: int = -1) -> None:
        self.trees = trees
        self.max_leaves = max_leaves
        self.class_weight = class_weight
        self.threshold = threshold
        self.ambiguity = ambiguity
        self.seed = seed
        self.jobs = jobs

    @classmethod
    def from_fitted(cls, forest: Any, threshold: float, checker: Any = None) -> AppClassifier:
        """A fitted classifier around a forest (and checker) loaded from a model file."""
        estimator = cls(trees=len(getattr(forest, "estimators_", ())) or DEFAULT_TREES,
                        threshold=threshold, ambiguity=checker is not None)
        estimator.forest_, estimator.checker_ = forest, checker
        estimator.threshold_ = float(threshold)
        estimator.threshold_chosen_by_ = "given"
        estimator.classes_ = forest.classes_
        estimator.fit_seconds_ = 0.0
        return estimator

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None,
            ) -> AppClassifier:
        """Fit the forest, then the checker (on capture ``groups``: default one per row's own
        group, i.e. every row independent) and the threshold (held out by ``groups``)."""
        check_forest_size(self.trees, self.max_leaves)
        labels = np.asarray(y).astype(str)
        if self.ambiguity:
            groups = np.asarray(groups if groups is not None else np.arange(len(labels))
                                ).astype(str)
            check_checker_groups(labels, groups)
        started = time.perf_counter()
        choose = self.threshold is None and not self.ambiguity
        group_ids = None if groups is None else np.asarray(groups).astype(str)
        by_groups = choose and group_ids is not None and can_hold_out(labels, group_ids)
        choose_by_oob = choose and not by_groups
        forest = make_forest(self.trees, self.max_leaves, self.class_weight, self.seed,
                             self.jobs, oob=choose_by_oob)
        with warnings.catch_warnings():
            # Few trees leave some rows without out-of-bag votes: oob_threshold skips them.
            warnings.filterwarnings("ignore", message="Some inputs do not have OOB scores")
            forest.fit(X, labels)
        checker = None
        threshold, chosen_by = self.threshold, "given"
        if self.ambiguity:
            checker = fit_checker(X, labels, groups, self.trees, self.max_leaves, self.seed)
            if threshold is None:
                threshold, chosen_by = CHECKER_THRESHOLD, "ambiguity checker: more likely right"
        if by_groups:
            threshold = grouped_threshold(X, labels, group_ids, self.max_leaves, self.seed)
            chosen_by = "cross-validation by capture"
        self.fit_seconds_ = time.perf_counter() - started
        if threshold is None:
            threshold, chosen_by = oob_threshold(forest, labels), "out-of-bag predictions"
            if groups is not None:
                chosen_by += (f" (too few captures to hold out: {CHECKER_FOLDS} or more, "
                              "and 2 apps in 2 or more)")
            del forest.oob_decision_function_  # training-set data has no place in a model file
        self.forest_, self.checker_ = forest, checker
        self.threshold_, self.threshold_chosen_by_ = float(threshold), chosen_by
        self.classes_ = forest.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Per-class probabilities; with the checker, each row's top value is its confidence.

        For large matrices (evaluation): one call on ``jobs`` cores, where :meth:`decide`,
        the serving path, works in small single-threaded batches.
        """
        if len(X) == 0:
            return np.zeros((0, len(self.classes_)))
        self.forest_.n_jobs = self.jobs
        proba = self.forest_.predict_proba(X)
        if self.checker_ is not None:
            self.checker_.n_jobs = self.jobs
            proba = with_confidence(proba, right_probability(self.checker_, X))
        return proba

    def decide(self, X: np.ndarray, threshold: float | None = None,
               ) -> tuple[list[str], np.ndarray]:
        """(app or :data:`UNKNOWN`, confidence) per row, at the fitted or a given threshold."""
        cut = self.threshold_ if threshold is None else threshold
        if len(X) == 0:
            return [], np.zeros(0)
        proba = self._batched(self.forest_, X, lambda f, c: f.predict_proba(c))
        best = proba.argmax(axis=1)
        confidence = proba[np.arange(len(best)), best]
        if self.checker_ is not None:
            confidence = self._batched(self.checker_, X, right_probability)
        classes = self.classes_
        apps = [str(classes[b]) if c >= cut else UNKNOWN
                for b, c in zip(best.tolist(), confidence.tolist(), strict=True)]
        return apps, confidence

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The app of each row, or :data:`UNKNOWN` below the threshold."""
        return np.array(self.decide(X)[0], dtype=object)

    @staticmethod
    def _batched(estimator: Any, X: np.ndarray, call: Any) -> np.ndarray:
        """``call(estimator, chunk)`` over batches of rows (at least one), single-threaded."""
        estimator.n_jobs = 1
        parts = [call(estimator, X[i : i + PREDICT_BATCH])
                 for i in range(0, len(X), PREDICT_BATCH)]
        return np.vstack(parts) if parts[0].ndim == 2 else np.concatenate(parts)
