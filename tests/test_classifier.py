"""AppClassifier: one estimator for train, evaluate and the benchmarks, on scikit-learn's
contract, so a threshold is chosen the same way wherever it is reported."""

from __future__ import annotations

import numpy as np
import pytest
from appsight.classifier import (
    UNKNOWN,
    AppClassifier,
    choose_threshold,
    grouped_threshold,
    held_out_proba,
)
from appsight.errors import UsageError
from appsight.evaluation import fit_predict
from appsight.features import FEATURE_SETS
from appsight.pipeline import PipelineOptions
from appsight.training import Dataset, train_model
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, cross_val_predict


def blobs(seed: int = 0, per_class: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three apps as overlapping clouds of points, in eight 'captures' of each app."""
    rng = np.random.default_rng(seed)
    centres = {"mail": (0.0, 0.0), "maps": (2.0, 0.0), "chat": (1.0, 1.5)}
    rows, labels, groups = [], [], []
    for app, centre in centres.items():
        rows.append(rng.normal(centre, 0.9, size=(per_class, 2)))
        labels += [app] * per_class
        groups += [f"{app}-{i % 8}" for i in range(per_class)]
    return np.vstack(rows), np.array(labels, dtype=object), np.array(groups, dtype=object)


def test_it_is_a_scikit_learn_classifier() -> None:
    """get_params/clone keep every setting, and sklearn's grouped helpers run on it."""
    x, y, groups = blobs()
    estimator = AppClassifier(trees=12, max_leaves=16, threshold=0.4, seed=3)
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params()
    assert copy.get_params()["trees"] == 12 and copy.get_params()["threshold"] == 0.4
    proba = cross_val_predict(copy, x, y, groups=groups, cv=GroupKFold(4),
                              method="predict_proba")
    assert proba.shape == (len(y), 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
    # On these overlapping clouds the held-out answer is right far more often than chance.
    classes = sorted(set(y.tolist()))
    assert np.mean(np.array(classes, dtype=object)[proba.argmax(axis=1)] == y) > 0.6


def test_predict_answers_unknown_below_the_threshold() -> None:
    x, y, _ = blobs()
    strict = AppClassifier(trees=20, threshold=0.95, seed=1).fit(x, y)
    lenient = AppClassifier(trees=20, threshold=0.0, seed=1).fit(x, y)
    between = np.array([[1.0, 0.5]])  # equidistant from the three centres
    assert strict.predict(between).tolist() == [UNKNOWN]
    assert lenient.predict(between)[0] in {"mail", "maps", "chat"}
    apps, confidence = strict.decide(x)
    assert all((a == UNKNOWN) == (c < 0.95) for a, c in zip(apps, confidence, strict=True))


def capture_clouds(seed: int, per_app: int = 8, flows: int = 30) -> tuple[np.ndarray, ...]:
    """Three apps whose captures each sit at their own spot near the app's centre, flows
    tight around it: a flow's twins in its own capture give it away, other captures of the
    app do not (as one session's flows resemble each other more than the app's other
    sessions do)."""
    rng = np.random.default_rng(seed)
    centres = {"mail": (0.0, 0.0), "maps": (2.0, 0.0), "chat": (1.0, 1.7)}
    rows, labels, groups = [], [], []
    for app, centre in centres.items():
        for k in range(per_app):
            spot = np.array(centre) + rng.normal(0, 1.0, 2)
            rows.append(spot + rng.normal(0, 0.05, (flows, 2)))
            labels += [app] * flows
            groups += [f"{app}-{seed}-{k}.pcap"] * flows
    return np.vstack(rows), np.array(labels, dtype=object), np.array(groups, dtype=object)


def right_minus_wrong(proba: np.ndarray, classes: np.ndarray, truth: np.ndarray,
                      threshold: float) -> int:
    answered = proba.max(axis=1) >= threshold
    right = classes[proba.argmax(axis=1)] == truth
    return int(np.sum(right & answered) - np.sum(~right & answered))


def test_threshold_held_out_by_capture_rejects_where_out_of_bag_votes_do_not() -> None:
    """Out-of-bag votes see each flow's twins from its own capture and choose 0 (never
    unknown); held out by capture, the threshold is the one new captures need: on captures
    of another day it scores more right-minus-wrong answers than the out-of-bag one."""
    x, y, groups = capture_clouds(1)
    new_x, new_y, _ = capture_clouds(2)
    by_votes = AppClassifier(trees=50, seed=0).fit(x, y)
    held_out = AppClassifier(trees=50, seed=0).fit(x, y, groups)
    assert held_out.threshold_chosen_by_ == "cross-validation by capture"
    assert by_votes.threshold_ == 0.0 < held_out.threshold_
    proba = held_out.predict_proba(new_x)  # the same forest: only the threshold differs
    classes = held_out.classes_
    assert right_minus_wrong(proba, classes, new_y, held_out.threshold_) > \
        right_minus_wrong(proba, classes, new_y, by_votes.threshold_)
    assert held_out.predict(new_x).tolist().count(UNKNOWN) > 0


def test_apps_in_one_capture_each_fall_back_to_out_of_bag_votes() -> None:
    """As in a lab with one recording per app: held out by capture, every app is unseen, so
    the threshold would learn only that unseen apps are wrong. It comes from out-of-bag votes
    then, and says why."""
    x, y, groups = capture_clouds(1, per_app=1)
    fitted = AppClassifier(trees=30, seed=0).fit(x, y, groups)
    assert fitted.threshold_chosen_by_.startswith("out-of-bag predictions (too few captures")


def test_only_apps_on_the_training_side_choose_the_threshold() -> None:
    """An app with one capture among apps with many is held out whole in its fold; its flows
    are left out of the choice, not counted as wrong answers."""
    x, y, groups = capture_clouds(1)
    single, single_y, single_g = capture_clouds(3, per_app=1)
    keep = single_y == "mail"  # one extra app, one capture
    x = np.vstack([x, single[keep] + 10.0])
    y = np.concatenate([y, np.array(["solo"] * int(keep.sum()), dtype=object)])
    groups = np.concatenate([groups, single_g[keep]])
    proba, classes, seen = held_out_proba(x, y, groups, seed=0)
    assert not seen[y == "solo"].any() and seen[y != "solo"].all()
    assert grouped_threshold(x, y, groups, seed=0) == choose_threshold(
        proba[seen], np.searchsorted(classes, y[seen].astype(str)))


def test_threshold_is_chosen_from_out_of_bag_votes_when_not_given() -> None:
    x, y, _ = blobs()
    fitted = AppClassifier(trees=30, seed=0).fit(x, y)
    assert fitted.threshold_chosen_by_ == "out-of-bag predictions"
    assert 0.0 <= fitted.threshold_ <= 0.95
    assert not hasattr(fitted.forest_, "oob_decision_function_")  # no training rows kept


def test_train_and_evaluate_choose_the_same_threshold() -> None:
    """With few trees some rows have no out-of-bag vote: train and evaluate both leave them
    out, so evaluate reports the threshold a saved model would carry."""
    x, y, groups = blobs(seed=5, per_class=25)
    feature_set = FEATURE_SETS["seed14"]
    wide = np.zeros((len(y), len(feature_set.columns)))
    wide[:, :2] = x
    dataset = Dataset(wide, y, groups, feature_set)
    for trees in (3, 5, 40):
        model = train_model(dataset, PipelineOptions(), trees=trees, seed=2)
        _, chosen, _ = fit_predict(wide, y, wide[:0], sorted(set(y.tolist())), trees, seed=2,
                                   train_groups=groups)
        assert chosen == model.threshold, trees


def test_ambiguity_checker_gives_the_confidence() -> None:
    x, y, groups = blobs()
    fitted = AppClassifier(trees=10, ambiguity=True, seed=0).fit(x, y, groups)
    assert fitted.checker_ is not None and fitted.threshold_ == 0.5
    proba = fitted.predict_proba(x)
    _, confidence = fitted.decide(x)
    assert np.allclose(proba.max(axis=1), np.maximum(confidence, 1e-12))


def test_ambiguity_needs_every_app_in_two_captures() -> None:
    x, y, _ = blobs()
    with pytest.raises(UsageError, match="at least 2 independent captures"):
        AppClassifier(trees=5, ambiguity=True).fit(x, y, np.array(["one"] * len(y)))
