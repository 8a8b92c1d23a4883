"""Accuracy on real Android apps: FG-Net's 53 apps, every feature set and nfstream's, one run.

Why this shape:

* **Data:** FG-Net D1's 7 525 recorded sessions, turned into pcaps by
  :mod:`fgnet_pcaps` (provenance there), a folder per app: the label of every flow is the app that
  owned its socket. The pcaps are made once and reused from ``--pcaps``.
* **The time split is the headline:** each app's earliest sessions (``--train-fraction``, 70 %)
  train, its later ones test, as a model trained today meets next week's traffic. A 5-fold
  cross-validation grouped by session (every flow of a session on the same side) is reported
  next to it.
* **The same forest for every set** (:class:`appsight.classifier.AppClassifier`, 150 trees),
  with the threshold that ``appsight train`` would save (chosen on the training side's sessions,
  held out by a cross-validation by session inside it).
* **Per flow:** macro-F1 and accuracy at that threshold (an unanswered flow is wrong for
  macro-F1; accuracy is over the answered flows, next to the share answered), and at equal
  coverage (every flow answered; 80 % answered), so that a set is not credited for the flows it
  dodges. **Per session:** the share of test sessions whose app is named by a vote over the
  session's flows (the mean of their probabilities, and the majority of answered flows).
* **Two flow units.** appsight's default cuts flows at 1 s of silence (bursts); nfstream has no
  such cut. So every set is run on whole flows too (burst gap none, nfstream with no timeouts),
  on exactly the flows that both tools see once per session: flow-for-flow comparable. Per
  session, all runs are comparable: the sessions are the same.

Usage::

    .venv/bin/pip install -e '.[test,bench]'                   # nfstream
    .venv/bin/python benchmarks/bench_apps.py                  # tables on standard output
    .venv/bin/python benchmarks/bench_apps.py --write-docs     # and docs/accuracy.md, plots
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from appsight.classifier import DEFAULT_TREES, UNKNOWN
from appsight.evaluation import (
    Predictions,
    confusion,
    coverage_curve,
    cross_validate,
    decide,
    fit_predict,
    group_folds,
    macro_f1,
    subset,
    threshold_for_coverage,
    train_test,
)
from appsight.features import DEFAULT_FEATURE_SET
from appsight.plots import Curve, confusion_png, coverage_png
from appsight.training import Dataset, labelled_sources
from appsight.verdicts import DEFAULT_MIN_SHARE, FlowAnswer, combine
from bench_accuracy import OUR_SETS, align, appsight_datasets, log, nfstream_dataset, take
from fgnet_pcaps import ConversionError, convert, default_output, shared_data_dir

#: Seconds after a session's first packet at which its verdict is scored (how soon it is right).
SOON_SECONDS = (2, 5, 10, 15, 20, 30)
#: Apps left out of training to see whether they come out unknown.
UNSEEN_APPS = 10
#: Thresholds of the unseen-apps trade-off.
UNSEEN_GRID = np.round(np.linspace(0.0, 0.95, 20), 2)

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "accuracy.md"
IMG = REPO / "docs" / "img"
#: Our sets on real apps: the protocol benchmark's, and the burst context.
APP_SETS = (*OUR_SETS, "context48")
#: Cross-validated by default (each costs 5 fits): the default and its closest rivals.
CV_DEFAULT = ("payload38 (1 s)", "context48 (1 s)", "appscanner54 (none)", "nfstream58 (none)")
#: The verdict's minimum shares tried on the unseen apps, at the model's threshold.
SHARE_GRID = (0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3)


@dataclass
class Variant:
    """One feature set at one flow unit, with the session of every flow."""

    name: str
    unit: str  # "1 s" (bursts, appsight's default) or "none" (whole flows)
    dataset: Dataset

    @property
    def label(self) -> str:
        return f"{self.name} ({self.unit})"


def session_times(dataset: Dataset) -> np.ndarray:
    """The recording time of each flow's session: the pcap's name is its unix time."""
    return np.array([int(Path(str(c)).stem) for c in dataset.captures.tolist()], dtype=np.int64)


def time_split(sessions: Sequence[tuple[str, int, str]], fraction: float) -> set[str]:
    """The training sessions: each app's earliest ``fraction`` of its (app, time, id) sessions."""
    by_app: dict[str, list[tuple[int, str]]] = {}
    for app, when, session in sessions:
        by_app.setdefault(app, []).append((when, session))
    train: set[str] = set()
    for runs in by_app.values():
        runs.sort()
        cut = max(1, min(len(runs) - 1, round(fraction * len(runs))))
        train.update(session for _, session in runs[:cut])
    return train


def _answers(predictions: Predictions, test: Dataset) -> list[FlowAnswer]:
    """Each test flow's answer at its model's threshold, with its times when they were kept."""
    answer, confidence, _ = decide(predictions.proba, predictions.classes, predictions.threshold)
    times = ([(float(r["first_ts"]), float(r["last_ts"])) for r in test.records]  # type: ignore[arg-type]
             if test.records else [(0.0, 0.0)] * len(answer))
    return [FlowAnswer("phone", t0, t1, str(a), float(c))
            for (t0, t1), a, c in zip(times, answer.tolist(), confidence.tolist(), strict=True)]


def _by_session(test: Dataset, answers: list[FlowAnswer]) -> dict[str, tuple[str, list]]:
    """session -> (its app, its flows' answers)."""
    out: dict[str, tuple[str, list[FlowAnswer]]] = {}
    for session, app, answer in zip(test.captures.tolist(), test.labels.tolist(), answers,
                                    strict=True):
        out.setdefault(str(session), (str(app), []))[1].append(answer)
    return out


def session_votes(predictions: Predictions, test: Dataset) -> dict[str, float]:
    """Per-session accuracy (%): the mean of the flows' probabilities, and appsight's verdict
    (``classify --sessions``: the answered flows' confidence-weighted vote)."""
    sessions = test.captures
    names, index = np.unique(sessions.astype(str), return_inverse=True)
    classes = np.asarray(predictions.classes, dtype=object)
    mean = np.zeros((len(names), len(classes)))
    np.add.at(mean, index, predictions.proba)
    truth = np.empty(len(names), dtype=object)
    truth[index] = predictions.truth
    soft = classes[mean.argmax(axis=1)] == truth
    grouped = _by_session(test, _answers(predictions, test)).values()
    verdicts = [combine("", "phone", flows) for _, flows in grouped]
    named = [v.top == app for v, (app, _) in zip(verdicts, grouped, strict=True)]
    return {"sessions": len(names), "mean_probability": 100.0 * float(soft.mean()),
            "verdict": 100.0 * float(np.mean(named)),
            "verdict_unknown": 100.0 * float(np.mean([v.top == UNKNOWN for v in verdicts]))}


def how_soon(predictions: Predictions, test: Dataset) -> dict[str, float]:
    """Share (%) of test sessions whose verdict is right from the flows that ended within t
    seconds of the session's first packet, for each t of :data:`SOON_SECONDS`."""
    sessions = _by_session(test, _answers(predictions, test))
    out = {}
    for t in SOON_SECONDS:
        right = 0
        for app, flows in sessions.values():
            start = min(f.first_ts for f in flows)
            early = [f for f in flows if f.last_ts - start <= t]
            right += combine("", "phone", early).top == app
        out[f"{t:g}"] = 100.0 * right / len(sessions) if sessions else math.nan
    return out


def measures(predictions: Predictions, test: Dataset) -> dict[str, Any]:
    """Per flow at the model's threshold and at equal coverage, and per session."""
    y, p, classes, cut = (predictions.truth, predictions.proba, predictions.classes,
                          predictions.threshold)
    answer, _, answered = decide(p, classes, cut)
    right = answer == y
    every, _, _ = decide(p, classes, None)
    at_80 = threshold_for_coverage(p, 0.8)
    return {
        "flows": len(y),
        "threshold": [f.threshold for f in predictions.folds],
        "answered": 100.0 * float(answered.mean()) if len(y) else math.nan,
        "accuracy_answered": 100.0 * float(right[answered].mean()) if answered.any() else math.nan,
        "macro_f1_threshold": macro_f1(y, p, classes, cut),
        "macro_f1_all": macro_f1(y, p, classes, None),
        "accuracy_all": 100.0 * float((every == y).mean()) if len(y) else math.nan,
        "macro_f1_80": macro_f1(y, p, classes, at_80),
        "session": session_votes(predictions, test),
        "how_soon": how_soon(predictions, test) if test.records else {},
        "fit_seconds": round(predictions.fit_seconds, 1),
        "curve": coverage_curve(y, p, classes),
        "confusion": confusion(y, p, classes, cut),
    }


def unseen_apps(variant: Variant, train_sessions: set[str], trees: int,
                seed: int) -> dict[str, Any]:
    """Leave :data:`UNSEEN_APPS` apps out of training (time split otherwise): how often their
    test flows and sessions come out ``unknown``, against how often the known apps' are
    answered right, over a grid of thresholds and at the model's own."""
    data = variant.dataset
    labels = data.labels.astype(str)
    rng = np.random.default_rng(seed)
    held = sorted(rng.choice(sorted(set(labels.tolist())), UNSEEN_APPS, replace=False).tolist())
    is_train_time = np.isin(data.captures.astype(str), np.array(sorted(train_sessions), dtype=str))
    is_unseen = np.isin(labels, np.array(held, dtype=str))
    train, test = is_train_time & ~is_unseen, ~is_train_time
    classes = sorted(set(labels[train].tolist()))
    proba, chosen, _ = fit_predict(data.features[train], labels[train], data.features[test],
                                   classes, trees, seed=seed, train_groups=data.captures[train])
    test_data = subset(data, test)
    unseen_flow = is_unseen[test]
    truth = labels[test]

    def point(threshold: float, min_share: float = DEFAULT_MIN_SHARE) -> dict[str, float]:
        cut = np.full(len(truth), threshold)
        answer, _, answered = decide(proba, classes, cut)
        sessions = _by_session(test_data, _answers(
            Predictions(classes, truth, proba, cut, []), test_data))
        known_right, unseen_unknown = [], []
        for app, flows in sessions.values():
            top = combine("", "phone", flows, min_share).top
            (unseen_unknown.append(top == UNKNOWN) if app in held
             else known_right.append(top == app))
        return {
            "threshold": float(threshold), "min_share": min_share,
            "known_flows_right": 100.0 * float(np.mean((answer == truth)[~unseen_flow])),
            "known_flows_answered": 100.0 * float(np.mean(answered[~unseen_flow])),
            "unseen_flows_unknown": 100.0 * float(np.mean(~answered[unseen_flow])),
            "known_sessions_right": 100.0 * float(np.mean(known_right)),
            "unseen_sessions_unknown": 100.0 * float(np.mean(unseen_unknown)),
        }

    result = {"held_out": held, "threshold": chosen, "at_threshold": point(chosen),
              "grid": [point(float(t)) for t in UNSEEN_GRID],
              "shares": [point(chosen, m) for m in SHARE_GRID]}
    a = result["at_threshold"]
    log(f"  unseen apps {variant.label}: threshold {chosen:.2f}: unseen flows unknown "
        f"{a['unseen_flows_unknown']:.1f} %, sessions {a['unseen_sessions_unknown']:.1f} %; "
        f"known flows right {a['known_flows_right']:.1f} %, sessions "
        f"{a['known_sessions_right']:.1f} %")
    return result


def unseen_png(path: Path, result: dict[str, Any], title: str) -> None:
    """The trade-off: known apps answered right against unseen apps called unknown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 5.0))
    for unit, colour in (("flows", "tab:blue"), ("sessions", "tab:orange")):
        x = [p[f"unseen_{unit}_unknown"] for p in result["grid"]]
        y = [p[f"known_{unit}_right"] for p in result["grid"]]
        axes.plot(x, y, marker=".", color=colour, label=f"per {unit[:-1]}")
        for p, xi, yi in zip(result["grid"], x, y, strict=True):
            if round(p["threshold"] * 100) % 20 == 0:
                axes.annotate(f"{p['threshold']:.1f}", (xi, yi), fontsize=7,
                              textcoords="offset points", xytext=(3, 3))
        own = result["at_threshold"]
        axes.plot(own[f"unseen_{unit}_unknown"], own[f"known_{unit}_right"], marker="*",
                  markersize=14, color=colour, linestyle="none",
                  label=f"per {unit[:-1]}, at the model's threshold ({result['threshold']:.2f})")
    axes.set_xlabel("unseen apps answered 'unknown' (%)")
    axes.set_ylabel("known apps answered right (%)")
    axes.set_xlim(-2, 102)
    axes.set_ylim(-2, 102)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize=8)
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_time_split(variant: Variant, train_sessions: set[str], trees: int,
                   seed: int) -> dict[str, Any]:
    data = variant.dataset
    is_train = np.isin(data.captures.astype(str), np.array(sorted(train_sessions), dtype=str))
    test = subset(data, ~is_train)
    predictions = train_test(subset(data, is_train), test, trees=trees, seed=seed)
    result = measures(predictions, test)
    _log_result("time split", variant, result)
    return result


def run_cv(variant: Variant, fold_of: dict[str, int], trees: int, seed: int) -> dict[str, Any]:
    data = variant.dataset
    predictions = cross_validate(data, fold_of, data.captures, trees=trees, seed=seed)
    result = measures(predictions, data)
    _log_result("5-fold", variant, result)
    return result


def _log_result(split: str, variant: Variant, r: dict[str, Any]) -> None:
    log(f"  {split:<10} {variant.label:<20} {r['flows']:>7} flows  macro-F1 "
        f"{r['macro_f1_threshold']:.3f} at threshold ({r['answered']:.0f} % answered, "
        f"{r['accuracy_answered']:.1f} % right), {r['macro_f1_all']:.3f} all answered; sessions "
        f"{r['session']['mean_probability']:.1f} %  fit {r['fit_seconds']:.0f} s")


def build_variants(pcaps: Path, with_nfstream: bool) -> tuple[list[Variant], dict[str, Any]]:
    """Every set's labelled flows: ours at both flow units, nfstream's on the shared flows."""
    sources = labelled_sources([str(pcaps)], None)
    log(f"{len(sources)} sessions of {len({a for _, a in sources})} apps in {pcaps}")
    info: dict[str, Any] = {"sessions": len(sources), "extract_seconds": {}}
    gapped, _, info["extract_seconds"]["appsight_1s"] = appsight_datasets(sources, None, 1.0,
                                                                          APP_SETS)
    log(f"appsight, burst gap 1 s: {len(gapped[DEFAULT_FEATURE_SET])} flows in "
        f"{info['extract_seconds']['appsight_1s']:.0f} s")
    variants = [Variant(n, "1 s", gapped[n]) for n in APP_SETS]
    whole, keys, info["extract_seconds"]["appsight_none"] = appsight_datasets(sources, None, None,
                                                                              APP_SETS)
    log(f"appsight, burst gap none: {len(keys)} flows in "
        f"{info['extract_seconds']['appsight_none']:.0f} s")
    theirs: dict[str, Dataset] = {}
    if with_nfstream:
        theirs, their_keys, info["extract_seconds"]["nfstream"], failed = nfstream_dataset(
            sources, None)
        log(f"nfstream: {len(their_keys)} flows in {info['extract_seconds']['nfstream']:.0f} s "
            f"({failed} captures failed)")
        mine, their_rows, info["alignment"] = align(keys, their_keys)
        info["alignment"].update(common=len(mine), nfstream_failed_captures=failed)
        whole = {n: take(d, mine) for n, d in whole.items()}
        theirs = {n: take(d, their_rows) for n, d in theirs.items()}
    variants += [Variant(n, "none", d) for n, d in [*whole.items(), *theirs.items()]]
    return variants, info


def _f(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _table(runs: dict[str, dict[str, Any]], default: str) -> list[str]:
    lines = [
        "| feature set (burst gap) | flows | threshold | answered | right among answered | "
        "macro-F1 at threshold | macro-F1, all answered | accuracy, all answered | "
        "macro-F1 at 80 % answered | sessions named (mean probability) | sessions named "
        "(appsight's verdict) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in runs.items():
        bold = "**" if label == default else ""
        cut = r["threshold"]
        shown = _f(cut[0], 2) if len(set(cut)) == 1 else f"{min(cut):.2f}-{max(cut):.2f}"
        lines.append(
            f"| {bold}{label}{bold} | {r['flows']} | {shown} | {_f(r['answered'], 1)} % | "
            f"{_f(r['accuracy_answered'], 1)} % | {bold}{_f(r['macro_f1_threshold'])}{bold} | "
            f"{_f(r['macro_f1_all'])} | {_f(r['accuracy_all'], 1)} % | {_f(r['macro_f1_80'])} | "
            f"{bold}{_f(r['session']['mean_probability'], 1)} %{bold} | "
            f"{_f(r['session']['verdict'], 1)} % |")
    return lines


def _ranked(runs: dict[str, dict[str, Any]], measure: str) -> list[str]:
    return sorted(runs, key=lambda k: -runs[k][measure])


def write_docs(results: dict[str, Any], images: dict[str, str]) -> str:
    """docs/accuracy.md: real apps first, with the command that reproduces every number."""
    split, cv = results["time_split"], results["cv"]
    default = f"{DEFAULT_FEATURE_SET} (1 s)"
    d = split[default]
    out: list[str] = []
    add = out.append
    add("# Accuracy: naming real Android apps")
    add("")
    add(f"Measured {results['date']} with `benchmarks/bench_apps.py` on {results['machine']} "
        f"({', '.join(f'{k} {v}' for k, v in results['versions'].items())}); the whole run "
        f"took {results['seconds'] / 60:.1f} minutes. The data is FG-Net's D1: "
        f"{results['conversion']['sessions']} recorded sessions of "
        f"{results['conversion']['apps']} Android apps (about 30 s each, June 2020, apps driven "
        "by UI fuzzing on real phones), every flow labelled with the app that owned its socket. "
        "nDPI's protocol-test captures are the other benchmark: "
        "[accuracy-protocols.md](accuracy-protocols.md).")
    add("")
    add("## In short")
    add("")
    add(f"* **Trained on each app's earlier sessions and tested on its later ones** (the time "
        f"split: {results['train_sessions']} training sessions, {results['test_sessions']} test "
        f"sessions), the default model (`{DEFAULT_FEATURE_SET}`, burst gap 1 s, the threshold "
        f"`appsight train` saves, {_f(d['threshold'][0], 2)}) answers "
        f"{_f(d['answered'], 0)} % of the flows and is right on {_f(d['accuracy_answered'], 1)} "
        f"% of those it answers: per-flow macro-F1 {_f(d['macro_f1_threshold'])} "
        f"({_f(d['macro_f1_all'])} when every flow is answered).")
    add(f"* **Per session**, appsight's verdict (`classify --sessions`: the answered flows "
        f"vote with their confidence) names the app of {_f(d['session']['verdict'], 1)} % of "
        f"the {d['session']['sessions']} test sessions; the mean of all the flows' "
        f"probabilities names {_f(d['session']['mean_probability'], 1)} %.")
    soon = d.get("how_soon", {})
    if soon:
        add("* **How soon:** counting only the flows that ended within t seconds of a "
            "session's first packet, the verdict is right for "
            + ", ".join(f"{_f(v, 0)} % of the sessions at {k} s" for k, v in soon.items())
            + ".")
    u = results.get("unseen")
    if u:
        a = u["at_threshold"]
        add(f"* **Apps the model never saw** ({len(u['held_out'])} apps left out of training): "
            f"at the model's threshold ({_f(u['threshold'], 2)}) "
            f"{_f(a['unseen_flows_unknown'], 0)} % of their flows and "
            f"{_f(a['unseen_sessions_unknown'], 0)} % of their sessions come out `unknown`, "
            f"while {_f(a['known_flows_right'], 0)} % of the known apps' flows and "
            f"{_f(a['known_sessions_right'], 0)} % of their sessions are named right.")
    for name in ("appscanner54 (none)", "nfstream58 (none)", "appscanner54 (1 s)"):
        if name in split:
            o = split[name]
            add(f"* **{name}:** per-flow macro-F1 {_f(o['macro_f1_threshold'])} at its "
                f"threshold ({_f(o['macro_f1_all'])} all answered), sessions named "
                f"{_f(o['session']['mean_probability'], 1)} %.")
    if "context48 (1 s)" in split:
        c = split["context48 (1 s)"]
        holds = c["session"]["verdict"] >= d["session"]["verdict"]
        add(f"* **context48** (payload38 plus the flow's burst) raises per-flow macro-F1 from "
            f"{_f(d['macro_f1_threshold'])} to {_f(c['macro_f1_threshold'])} at 1 s "
            f"(whole flows: {_f(split['payload38 (none)']['macro_f1_threshold'])} to "
            f"{_f(split['context48 (none)']['macro_f1_threshold'])}), while sessions are named "
            f"{_f(c['session']['verdict'], 1)} % of the time against "
            f"{_f(d['session']['verdict'], 1)} %"
            + (": it holds per session too." if holds else
               ": the other flows of a burst are what a session vote already uses, so it does "
               "not name more sessions. It is offered (`--features context48`), not the "
               "default."))
    ranking = ", ".join(f"{k} {_f(split[k]['macro_f1_all'])}"
                        for k in _ranked(split, "macro_f1_all"))
    add(f"* Ranked by per-flow macro-F1 with every flow answered (equal coverage): {ranking}.")
    add("")
    add("## The time split")
    add("")
    add(f"Each app's earliest {round(100 * results['args']['train_fraction'])} % of sessions "
        f"train, its later ones test. The same forest for every set ({results['args']['trees']} "
        "trees; `appsight train` makes 150), its threshold chosen as `train` chooses it: on "
        "the training side's sessions, held out by a 4-fold cross-validation by session "
        "inside it. *Burst gap 1 s* are appsight's flows (cut at 1 s of silence); "
        "*none* are whole flows, on exactly the flows that appsight and nfstream both see "
        "once per session, so those rows compare flow for flow. Session columns compare "
        "every row: the sessions are the same.")
    add("")
    out.extend(_table(split, default))
    add("")
    if "coverage" in images:
        add(f"![Accuracy versus coverage, time split]({images['coverage']})")
        add("")
    if cv:
        add(f"## {results['args']['folds']}-fold cross-validation grouped by session")
        add("")
        add("All sessions, each in one fold (stratified by app); the same folds for every set. "
            "It mixes earlier and later sessions on both sides, so it is the easier test.")
        add("")
        out.extend(_table(cv, default))
        add("")
    soon_rows = {k: r["how_soon"] for k, r in split.items() if r.get("how_soon")}
    if soon_rows:
        add("## How soon a session is named")
        add("")
        add("The verdict of each test session from the flows that ended within t seconds of "
            "its first packet (a flow that is still open then does not count yet), as the live "
            "agent would report it; time split.")
        add("")
        ts = list(next(iter(soon_rows.values())))
        add("| feature set (burst gap) | " + " | ".join(f"{t} s" for t in ts) + " |")
        add("|---|" + "---:|" * len(ts))
        for k, row in soon_rows.items():
            add(f"| {k} | " + " | ".join(f"{_f(row[t], 1)} %" for t in ts) + " |")
        add("")
    if u:
        add("## Apps the model never saw")
        add("")
        add(f"{len(u['held_out'])} apps, drawn with the seed, are left out of training (time "
            f"split otherwise): {', '.join(u['held_out'])}. Their test sessions should come "
            "out `unknown`, and the known apps' should still be named. The reject threshold "
            "trades one for the other; the star is the threshold the model saves (chosen on "
            "training sessions held out inside the training data, which never include an "
            "unseen app).")
        add("")
        if "unseen" in images:
            add(f"![Unseen apps against known apps]({images['unseen']})")
            add("")
        add("| threshold | unseen flows unknown | known flows right | known flows answered | "
            "unseen sessions unknown | known sessions right |")
        add("|---:|---:|---:|---:|---:|---:|")
        shown = [p for p in u["grid"] if round(p["threshold"] * 100) % 10 == 0]
        for p in sorted([*shown, {**u["at_threshold"], "own": True}],
                        key=lambda p: p["threshold"]):
            mark = " (the model's)" if p.get("own") else ""
            add(f"| {_f(p['threshold'], 2)}{mark} | {_f(p['unseen_flows_unknown'], 1)} % | "
                f"{_f(p['known_flows_right'], 1)} % | {_f(p['known_flows_answered'], 1)} % | "
                f"{_f(p['unseen_sessions_unknown'], 1)} % | "
                f"{_f(p['known_sessions_right'], 1)} % |")
        add("")
        add(f"Per session the verdict's `--min-share` (default {DEFAULT_MIN_SHARE}) is the "
            "other lever: an app is named only when its answered flows' confidence adds up to "
            "that part of the session's flows. At the model's threshold:")
        add("")
        add("| --min-share | unseen sessions unknown | known sessions right |")
        add("|---:|---:|---:|")
        for p in u["shares"]:
            add(f"| {p['min_share']:g} | {_f(p['unseen_sessions_unknown'], 1)} % | "
                f"{_f(p['known_sessions_right'], 1)} % |")
        add("")
    add("## What the columns mean")
    add("")
    add("* *answered*: the flows whose top probability reaches the threshold; the rest are "
        "`unknown`. *right among answered*: AppScanner's accuracy, which means nothing without "
        "the share answered next to it.")
    add("* *macro-F1 at threshold*: the mean over apps of F1, an `unknown` counting as wrong; "
        "*all answered* and *at 80 % answered* compare sets at equal coverage, so a set is not "
        "credited for the flows it leaves unanswered.")
    add("* *sessions named*: the share of test sessions whose app comes out on top of a vote "
        "over the session's flows: their mean probability, or appsight's verdict, where the "
        "answered flows vote with their confidence and an app needs votes worth "
        f"{DEFAULT_MIN_SHARE:g} of the session's flows (`--min-share`; a session where no app "
        "has them is `unknown`, and wrong).")
    add("")
    if "confusion" in images:
        add(f"The default's confusions on the time split: [confusion matrix]"
            f"({images['confusion']}).")
        add("")
    add("## What this does not show")
    add("")
    add("* **Other networks and later app versions.** All sessions come from one recording "
        "setup in one month; FG-Net's second collection, two weeks later after 22 of the apps "
        "were updated, is not in this data.")
    add("* **What the converter cannot give back.** FG-Net published payload sizes and times "
        "per flow, not packets: no handshake packets without payload, no retransmissions, no "
        "server addresses (every flow gets the same server, so addresses say nothing). Features "
        "that look at those see less here than on a real capture.")
    add("")
    add("## Reproduce")
    add("")
    add("```sh")
    add(".venv/bin/pip install -e '.[test,bench]'                 # nfstream")
    add(".venv/bin/python benchmarks/fgnet_pcaps.py               # the pcaps, once (about 1 GB)")
    add(".venv/bin/python benchmarks/bench_apps.py --write-docs   # this page and its plots")
    add("```")
    add("")
    seconds = results["extract_seconds"]
    add(f"Reading the sessions took {seconds['appsight_1s']:.0f} s (burst gap 1 s) and "
        f"{seconds['appsight_none']:.0f} s (none) with appsight"
        + (f", {seconds['nfstream']:.0f} s with nfstream (a process per capture)."
           if "nfstream" in seconds else "."))
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=shared_data_dir(),
                        help="the data folder holding fgnet/D1.tar.xz "
                             "(default: $APPSIGHT_DATA or <repo>/../shared/data)")
    parser.add_argument("--pcaps", type=Path, default=default_output(),
                        help="where the sessions' pcaps are made once and reused "
                             "(default: %(default)s)")
    parser.add_argument("--train-fraction", type=float, default=0.7,
                        help="each app's earliest share of sessions that trains (default 0.7)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--trees", type=int, default=DEFAULT_TREES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-nfstream", action="store_true")
    parser.add_argument("--skip-cv", action="store_true", help="the time split only")
    parser.add_argument("--cv-sets", default=",".join(CV_DEFAULT),
                        help="the runs to cross-validate, comma-separated, or 'all' "
                             "(default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="measure nothing: write the page from the results of an earlier "
                             "--json run")
    parser.add_argument("--write-docs", action="store_true",
                        help="rewrite docs/accuracy.md (and its plots) from this run")
    args = parser.parse_args(argv)
    if not 0.0 < args.train_fraction < 1.0:
        parser.error("--train-fraction must be between 0 and 1")
    return args


#: The curves of the coverage plot (all of them would be unreadable).
PLOTTED = ("payload38 (1 s)", "context48 (1 s)", "appscanner54 (1 s)", "payload38 (none)",
           "appscanner54 (none)", "nfstream58 (none)")


def publish(results: dict[str, Any], write: bool) -> None:
    """The page on standard output; with ``write``, docs/accuracy.md and its plots too."""
    images: dict[str, str] = {}
    if write:
        IMG.mkdir(parents=True, exist_ok=True)
        split = results["time_split"]
        coverage_png(IMG / "accuracy-apps-coverage.png", [
            Curve(label, **r["curve"], chosen=(r["answered"], r["accuracy_answered"]))
            for label, r in split.items() if label in PLOTTED
        ], "Real apps (FG-Net D1), time split: accuracy versus the share of flows answered")
        images["coverage"] = "img/accuracy-apps-coverage.png"
        default = f"{DEFAULT_FEATURE_SET} (1 s)"
        confusion_png(IMG / "accuracy-apps-confusion.png", split[default]["confusion"],
                      f"{default} on FG-Net D1, time split, at its threshold (row-normalised %)")
        images["confusion"] = "img/accuracy-apps-confusion.png"
        unseen_png(IMG / "accuracy-apps-unseen.png", results["unseen"],
                   f"{default} on FG-Net D1, time split, {len(results['unseen']['held_out'])} "
                   "apps left out of training: the reject threshold's trade-off")
        images["unseen"] = "img/accuracy-apps-unseen.png"
    text = write_docs(results, images)
    print(text)
    if write:
        DOCS.write_text(text + "\n", encoding="utf-8")
        log(f"wrote {DOCS.relative_to(REPO)} and docs/img/accuracy-apps-*.png")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.from_json:
        try:
            saved = json.loads(args.from_json.read_text())
        except (OSError, ValueError) as error:
            log(f"bench_apps: {args.from_json}: {error}")
            return 2
        publish(saved, args.write_docs)
        return 0
    try:
        conversion = convert(args.data, args.pcaps)
    except (ConversionError, OSError) as error:
        log(f"bench_apps: {error}")
        return 2
    variants, info = build_variants(args.pcaps, not args.skip_nfstream)
    base = variants[0].dataset
    sessions = sorted({(str(a), int(t), str(c)) for a, t, c in zip(
        base.labels.tolist(), session_times(base).tolist(), base.captures.tolist(),
        strict=True)})
    train_sessions = time_split(sessions, args.train_fraction)
    log(f"time split: {len(train_sessions)} training sessions, "
        f"{len(sessions) - len(train_sessions)} test sessions")
    results: dict[str, Any] = {"time_split": {}, "cv": {}}
    for variant in variants:
        results["time_split"][variant.label] = run_time_split(variant, train_sessions,
                                                              args.trees, args.seed)
    default_variant = next(v for v in variants if v.label == f"{DEFAULT_FEATURE_SET} (1 s)")
    results["unseen"] = unseen_apps(default_variant, train_sessions, args.trees, args.seed)
    if not args.skip_cv:
        session_ids = np.array([c for _, _, c in sessions], dtype=object)
        session_apps = np.array([a for a, _, _ in sessions], dtype=object)
        fold_of = group_folds(session_apps, session_ids, args.folds, args.seed)
        wanted = args.cv_sets.split(",")
        for variant in variants:
            if args.cv_sets == "all" or variant.label in wanted:
                results["cv"][variant.label] = run_cv(variant, fold_of, args.trees, args.seed)

    import sklearn

    versions = {"scikit-learn": sklearn.__version__}
    if not args.skip_nfstream:
        import nfstream

        versions["nfstream"] = nfstream.__version__
    results.update(
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        machine=f"{platform.machine()} Linux, {os.cpu_count()} cores, Python "
                f"{platform.python_version()}",
        versions=versions, seconds=time.perf_counter() - started, conversion=vars(conversion),
        args={k: v if isinstance(v, int | float | bool) else str(v) for k, v in vars(args).items()},
        train_sessions=len(train_sessions), test_sessions=len(sessions) - len(train_sessions),
        **info,
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    publish(results, args.write_docs)
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
