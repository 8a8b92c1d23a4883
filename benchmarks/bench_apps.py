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
  with the threshold that ``appsight train`` would save (out-of-bag votes of the training side).
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
from appsight.classifier import DEFAULT_TREES
from appsight.evaluation import (
    Predictions,
    confusion,
    coverage_curve,
    cross_validate,
    decide,
    group_folds,
    macro_f1,
    subset,
    threshold_for_coverage,
    train_test,
)
from appsight.features import DEFAULT_FEATURE_SET
from appsight.plots import Curve, confusion_png, coverage_png
from appsight.training import Dataset, labelled_sources
from bench_accuracy import OUR_SETS, align, appsight_datasets, log, nfstream_dataset, take
from fgnet_pcaps import ConversionError, convert, default_output, shared_data_dir

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "accuracy.md"
IMG = REPO / "docs" / "img"
#: Cross-validated by default (each costs 5 fits): the default and its closest rivals.
CV_DEFAULT = ("payload38 (1 s)", "payload38 (none)", "appscanner54 (none)", "nfstream58 (none)")


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


def session_votes(predictions: Predictions, sessions: np.ndarray) -> dict[str, float]:
    """Per-session accuracy (%) of two votes over each session's flows."""
    names, index = np.unique(sessions.astype(str), return_inverse=True)
    classes = np.asarray(predictions.classes, dtype=object)
    mean = np.zeros((len(names), len(classes)))
    np.add.at(mean, index, predictions.proba)
    truth = np.empty(len(names), dtype=object)
    truth[index] = predictions.truth
    soft = classes[mean.argmax(axis=1)] == truth
    answer, confidence, answered = decide(predictions.proba, predictions.classes,
                                          predictions.threshold)
    position = {c: i for i, c in enumerate(predictions.classes)}
    votes = np.zeros((len(names), len(classes)))
    for row in np.flatnonzero(answered):
        # One vote per answered flow; the summed confidence breaks ties.
        votes[index[row], position[answer[row]]] += 1.0 + 1e-6 * confidence[row]
    has_vote = votes.max(axis=1) > 0
    majority = has_vote & (classes[votes.argmax(axis=1)] == truth)
    return {"sessions": len(names), "mean_probability": 100.0 * float(soft.mean()),
            "majority_of_answered": 100.0 * float(majority.mean()),
            "no_answered_flow": 100.0 * float((~has_vote).mean())}


def measures(predictions: Predictions, sessions: np.ndarray) -> dict[str, Any]:
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
        "session": session_votes(predictions, sessions),
        "fit_seconds": round(predictions.fit_seconds, 1),
        "curve": coverage_curve(y, p, classes),
        "confusion": confusion(y, p, classes, cut),
    }


def run_time_split(variant: Variant, train_sessions: set[str], trees: int,
                   seed: int) -> dict[str, Any]:
    data = variant.dataset
    is_train = np.isin(data.captures.astype(str), np.array(sorted(train_sessions), dtype=str))
    test = subset(data, ~is_train)
    predictions = train_test(subset(data, is_train), test, trees=trees, seed=seed)
    result = measures(predictions, test.captures)
    _log_result("time split", variant, result)
    return result


def run_cv(variant: Variant, fold_of: dict[str, int], trees: int, seed: int) -> dict[str, Any]:
    data = variant.dataset
    predictions = cross_validate(data, fold_of, data.captures, trees=trees, seed=seed)
    result = measures(predictions, data.captures)
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
    gapped, _, info["extract_seconds"]["appsight_1s"] = appsight_datasets(sources, None, 1.0)
    log(f"appsight, burst gap 1 s: {len(gapped[DEFAULT_FEATURE_SET])} flows in "
        f"{info['extract_seconds']['appsight_1s']:.0f} s")
    variants = [Variant(n, "1 s", gapped[n]) for n in OUR_SETS]
    whole, keys, info["extract_seconds"]["appsight_none"] = appsight_datasets(sources, None, None)
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
        "(majority of answered flows) |",
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
            f"{_f(r['session']['majority_of_answered'], 1)} % |")
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
    add(f"* **Per session**, the mean of the flows' probabilities names the app of "
        f"{_f(d['session']['mean_probability'], 1)} % of the test sessions "
        f"({d['session']['sessions']} sessions); a majority of the answered flows names "
        f"{_f(d['session']['majority_of_answered'], 1)} %.")
    for name in ("appscanner54 (none)", "nfstream58 (none)", "appscanner54 (1 s)"):
        if name in split:
            o = split[name]
            add(f"* **{name}:** per-flow macro-F1 {_f(o['macro_f1_threshold'])} at its "
                f"threshold ({_f(o['macro_f1_all'])} all answered), sessions named "
                f"{_f(o['session']['mean_probability'], 1)} %.")
    ranking = ", ".join(f"{k} {_f(split[k]['macro_f1_all'])}"
                        for k in _ranked(split, "macro_f1_all"))
    add(f"* Ranked by per-flow macro-F1 with every flow answered (equal coverage): {ranking}.")
    add("")
    add("## The time split")
    add("")
    add(f"Each app's earliest {round(100 * results['args']['train_fraction'])} % of sessions "
        "train, its later ones test. The same forest for every set (150 trees, as `appsight "
        "train`), its threshold chosen from out-of-bag votes of the training side. *Burst gap 1 "
        "s* are appsight's flows (cut at 1 s of silence); *none* are whole flows, on exactly "
        "the flows that appsight and nfstream both see once per session, so those rows compare "
        "flow for flow. Session columns compare every row: the sessions are the same.")
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
    add("## What the columns mean")
    add("")
    add("* *answered*: the flows whose top probability reaches the threshold; the rest are "
        "`unknown`. *right among answered*: AppScanner's accuracy, which means nothing without "
        "the share answered next to it.")
    add("* *macro-F1 at threshold*: the mean over apps of F1, an `unknown` counting as wrong; "
        "*all answered* and *at 80 % answered* compare sets at equal coverage, so a set is not "
        "credited for the flows it leaves unanswered.")
    add("* *sessions named*: the share of test sessions whose app comes out on top of a vote "
        "over the session's flows: their mean probability, or one vote per answered flow (a "
        "session with no answered flow is wrong).")
    add("")
    if "confusion" in images:
        add(f"The default's confusions on the time split: [confusion matrix]"
            f"({images['confusion']}).")
        add("")
    add("## What this does not show")
    add("")
    add("* **Apps the model has never seen.** Every test app is also a training app; how often "
        "an unseen app comes out `unknown` rather than as the nearest known app is not "
        "measured here.")
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
    add(f"Reading the sessions took {results['extract_seconds'].get('appsight_1s', math.nan):.0f} "
        f"s (burst gap 1 s) and {results['extract_seconds'].get('appsight_none', math.nan):.0f} "
        f"s (none) with appsight, "
        f"{results['extract_seconds'].get('nfstream', math.nan):.0f} s with nfstream.")
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
    parser.add_argument("--write-docs", action="store_true",
                        help="rewrite docs/accuracy.md (and its plots) from this run")
    args = parser.parse_args(argv)
    if not 0.0 < args.train_fraction < 1.0:
        parser.error("--train-fraction must be between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
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
    images: dict[str, str] = {}
    if args.write_docs:
        IMG.mkdir(parents=True, exist_ok=True)
        split = results["time_split"]
        coverage_png(IMG / "accuracy-apps-coverage.png", [
            Curve(label, **r["curve"], chosen=(r["answered"], r["accuracy_answered"]))
            for label, r in split.items()
        ], "Real apps (FG-Net D1), time split: accuracy versus the share of flows answered")
        images["coverage"] = "img/accuracy-apps-coverage.png"
        default = f"{DEFAULT_FEATURE_SET} (1 s)"
        confusion_png(IMG / "accuracy-apps-confusion.png", split[default]["confusion"],
                      f"{default} on FG-Net D1, time split, at its threshold (row-normalised %)")
        images["confusion"] = "img/accuracy-apps-confusion.png"
    text = write_docs(results, images)
    print(text)
    if args.write_docs:
        DOCS.write_text(text + "\n", encoding="utf-8")
        log(f"wrote {DOCS.relative_to(REPO)} and docs/img/accuracy-apps-*.png")
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
