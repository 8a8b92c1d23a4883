"""``appsight evaluate``: metrics on hand-made predictions, grouping by capture, the command.

The metric tests use six flows of three apps whose expected values are worked out by hand in
the comments, so a change of definition (macro over which apps, ``>=`` or ``>`` at the
threshold, unknown as wrong) shows up as a failing number, not as a silent drift.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from appsight.classifier import UNKNOWN, classes_with_enough_data, with_confidence
from appsight.cli import main
from appsight.errors import UsageError
from appsight.evaluation import (
    appscanner_table,
    capture_groups,
    confused_pairs,
    confusion,
    coverage_curve,
    cross_validate,
    decide,
    group_folds,
    macro_f1,
    per_app_table,
    read_groups_file,
    reject_option_row,
    threshold_for_coverage,
)
from appsight.features import FEATURE_SETS
from appsight.training import Dataset

CLASSES = ["a", "b", "c"]
Y_TRUE = np.array(["a", "a", "a", "b", "b", "c"], dtype=object)
PROBA = np.array([
    [0.90, 0.10, 0.00],  # a, confident 0.90: right
    [0.60, 0.40, 0.00],  # a, 0.60: right
    [0.30, 0.60, 0.10],  # b, 0.60: wrong (truth a)
    [0.20, 0.80, 0.00],  # b, 0.80: right
    [0.45, 0.35, 0.20],  # a, 0.45: wrong (truth b); unknown from threshold 0.5
    [0.10, 0.20, 0.70],  # c, 0.70: right
])


def approx(value: float) -> object:
    return pytest.approx(value, abs=1e-9)


# ===================================================================== metrics
def test_decide_marks_flows_below_the_threshold_unknown() -> None:
    answer, confidence, answered = decide(PROBA, CLASSES, 0.6)
    assert answer.tolist() == ["a", "a", "b", "b", UNKNOWN, "c"]  # 0.60 >= 0.6 is answered
    assert confidence.tolist() == [0.9, 0.6, 0.6, 0.8, 0.45, 0.7]
    assert answered.tolist() == [True, True, True, True, False, True]
    assert decide(PROBA, CLASSES, None)[0].tolist() == ["a", "a", "b", "b", "a", "c"]


def test_per_app_table_at_one_half() -> None:
    table = per_app_table(Y_TRUE, PROBA, CLASSES, 0.5)
    rows = {r["app"]: r for r in table["apps"]}
    # a: rows 1, 2 right, row 3 wrong -> 2/3 correct, 1/3 wrong
    assert (rows["a"]["flows"], rows["a"]["correct"], rows["a"]["unknown"]) == (3, approx(
        200 / 3), 0.0)
    assert rows["a"]["wrong"] == approx(100 / 3)
    # b: row 4 right, row 5 below the threshold -> 50 % correct, 50 % unknown
    assert (rows["b"]["correct"], rows["b"]["unknown"], rows["b"]["wrong"]) == (50.0, 50.0, 0.0)
    assert rows["c"]["correct"] == 100.0
    # the average weighs every app once: (66.67 + 50 + 100) / 3, (0 + 50 + 0) / 3
    assert table["average"]["correct"] == approx((200 / 3 + 50 + 100) / 3)
    assert table["average"]["unknown"] == approx(50 / 3)
    assert table["average"]["wrong"] == approx(100 / 9)
    assert table["average"]["flows"] == 6


def test_per_app_table_with_a_threshold_per_flow() -> None:
    cut = np.array([0.5, 0.5, 0.5, 0.95, 0.95, 0.95])  # two folds, two thresholds
    rows = {r["app"]: r for r in per_app_table(Y_TRUE, PROBA, CLASSES, cut)["apps"]}
    assert rows["a"]["correct"] == approx(200 / 3)
    assert (rows["b"]["unknown"], rows["c"]["unknown"]) == (100.0, 100.0)


def test_reject_option_rows_by_hand() -> None:
    rows = appscanner_table(Y_TRUE, PROBA, CLASSES)
    assert [r["threshold"] for r in rows] == [None, 0.5, 0.7, 0.9]
    none, half, seven, nine = rows
    # no threshold: answers a a b b a c; precision a 2/3, b 1/2, c 1; recall the same
    assert none["accuracy"] == approx(400 / 6)
    assert none["precision"] == approx(100 * (2 / 3 + 1 / 2 + 1) / 3)
    assert none["recall"] == approx(100 * (2 / 3 + 1 / 2 + 1) / 3)
    assert none["classified"] == 100.0
    # 0.5: row 5 unanswered; of 5 answers 4 right; precision a 1, b 1/2, c 1;
    # recall over the classified: a 2/3, b 1 (row 4 only), c 1
    assert half["classified"] == approx(500 / 6)
    assert half["accuracy"] == 80.0
    assert half["precision"] == approx(100 * (1 + 0.5 + 1) / 3)
    assert half["recall"] == approx(100 * (2 / 3 + 1 + 1) / 3)
    assert half["flows_classified"] == 5
    # 0.7: rows 1, 4, 6 answered, all right
    assert (seven["classified"], seven["accuracy"], seven["precision"], seven["recall"]) == (
        50.0, 100.0, 100.0, 100.0)
    assert nine["classified"] == approx(100 / 6)


def test_nothing_classified_is_undefined_not_zero() -> None:
    row = reject_option_row(Y_TRUE, PROBA, CLASSES, 0.99)
    assert row["classified"] == 0.0
    assert all(math.isnan(row[k]) for k in ("precision", "recall", "accuracy"))


def test_macro_f1_counts_unknown_as_wrong() -> None:
    # no threshold: F1 a = 2*2/(3+3), b = 2*1/(2+2), c = 1
    assert macro_f1(Y_TRUE, PROBA, CLASSES) == approx((4 / 6 + 2 / 4 + 1) / 3)
    # 0.5: row 5 (truth b) unknown: a said 2 real 3 hit 2 -> 0.8; b said 2 real 2 hit 1
    assert macro_f1(Y_TRUE, PROBA, CLASSES, 0.5) == approx((0.8 + 0.5 + 1) / 3)
    # everything unknown: every app's F1 is 0
    assert macro_f1(Y_TRUE, PROBA, CLASSES, 1.0) == 0.0


def test_threshold_for_coverage() -> None:
    # confidences sorted: 0.9 0.8 0.7 0.6 0.6 0.45
    assert threshold_for_coverage(PROBA, 0.5) == 0.7
    assert threshold_for_coverage(PROBA, 0.8) == 0.6  # 5 of 6 at >= 0.6
    assert threshold_for_coverage(PROBA, 1.0) == 0.45
    with pytest.raises(ValueError):
        threshold_for_coverage(PROBA, 0.0)


def test_coverage_curve() -> None:
    curve = coverage_curve(Y_TRUE, PROBA, CLASSES, [0.0, 0.5, 0.95])
    assert curve["coverage"] == [100.0, approx(500 / 6), 0.0]
    assert curve["accuracy"][:2] == [approx(400 / 6), 80.0]
    assert math.isnan(curve["accuracy"][2])


def test_confusion_counts_and_pairs() -> None:
    matrix = confusion(Y_TRUE, PROBA, CLASSES, 0.5)
    assert matrix["rows"] == ["a", "b", "c"]
    assert matrix["columns"] == ["a", "b", "c", UNKNOWN]
    assert matrix["counts"] == [[2, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]
    assert confused_pairs(matrix) == [
        {"true": "a", "answer": "b", "flows": 1, "share_of_true": approx(100 / 3)}
    ]


def test_an_app_missing_from_training_is_never_answered() -> None:
    proba = np.array([[0.0, 0.7, 0.3]])  # app "a" got no column from its forest: zeros
    assert macro_f1(np.array(["a"], dtype=object), proba, CLASSES) == 0.0


# ==================================================================== grouping
OVERLAPS_HEADER = "shared_identical_packets\tfile_a\tpackets_a\tfile_b\tpackets_b\n"


def test_read_groups_file_uses_its_header(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text(OVERLAPS_HEADER + "10\tndpi/a.pcap\t10\tother/x.pcap\t12\n\n")
    assert read_groups_file(path) == [("ndpi/a.pcap", "other/x.pcap")]
    path.write_text("count\tleft\tright\n1\ta\tb\n")
    with pytest.raises(UsageError, match="file_a and file_b"):
        read_groups_file(path)
    path.write_text(OVERLAPS_HEADER + "10\tndpi/a.pcap\n")
    with pytest.raises(UsageError, match="line 2"):
        read_groups_file(path)
    with pytest.raises(UsageError, match="cannot read"):
        read_groups_file(tmp_path / "missing.tsv")


def test_capture_groups_join_pairs_transitively(tmp_path: Path) -> None:
    for name in ("ndpi/a.pcap", "ndpi/b.pcap", "ndpi/c.pcap", "other/x.pcap"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).touch()
    captures = [str(tmp_path / n) for n in ("ndpi/a.pcap", "ndpi/b.pcap", "ndpi/c.pcap",
                                            "other/x.pcap")]
    pairs = [("ndpi/a.pcap", "other/x.pcap"), ("other/x.pcap", "ndpi/b.pcap"),
             ("ndpi/absent.pcap", "ndpi/c.pcap")]
    groups = capture_groups(captures, pairs, base=tmp_path)
    a, b, c, x = captures
    assert groups[a] == groups[b] == groups[x] == a  # named after its smallest member
    assert groups[c] == c  # a pair with a capture not given joins nothing
    # the groups file's folder need not be where the corpus is: trailing paths match too
    assert capture_groups(captures, pairs, base=tmp_path / "elsewhere") == groups
    assert capture_groups(captures) == {p: p for p in captures}


def _synthetic(n_captures: int = 12, apps: int = 3, per_capture: int = 10,
               seed: int = 1) -> Dataset:
    """Flows whose features depend on the app: capture i holds app i % apps."""
    rng = np.random.default_rng(seed)
    rows, labels, captures = [], [], []
    for i in range(n_captures):
        app = i % apps
        rows.append(rng.normal(app * 3.0, 1.0, size=(per_capture, 4)))
        labels += [f"app{app}"] * per_capture
        captures += [f"cap{i:02d}.pcap"] * per_capture
    return Dataset(np.vstack(rows), np.array(labels, dtype=object),
                   np.array(captures, dtype=object), FEATURE_SETS["seed14"])


def test_folds_keep_overlapping_captures_together_and_no_capture_on_both_sides() -> None:
    data = _synthetic()
    pairs = [("cap00.pcap", "cap05.pcap"), ("cap05.pcap", "cap07.pcap"),
             ("cap01.pcap", "cap02.pcap")]
    group_of = capture_groups(data.captures.tolist(), pairs)
    groups = np.array([group_of[c] for c in data.captures.tolist()], dtype=object)
    for seed in range(5):
        fold_of = group_folds(data.labels, groups, 4, seed)
        fold = {c: fold_of[group_of[c]] for c in group_of}
        assert fold["cap00.pcap"] == fold["cap05.pcap"] == fold["cap07.pcap"]
        assert fold["cap01.pcap"] == fold["cap02.pcap"]
        assert set(fold_of.values()) == {0, 1, 2, 3}
    predictions = cross_validate(data, fold_of, groups, trees=10)
    seen: set[str] = set()
    for result in predictions.folds:
        tested = set(result.test_captures)
        assert not tested & seen  # every capture is tested exactly once
        seen |= tested
        train_captures = set(data.captures.tolist()) - tested
        assert {group_of[c] for c in tested}.isdisjoint({group_of[c] for c in train_captures})
    assert seen == set(data.captures.tolist())
    # well separated apps: out-of-fold predictions are right
    assert macro_f1(predictions.truth, predictions.proba, predictions.classes) > 0.9
    assert predictions.proba.shape == (len(data), 3)


def test_too_few_groups_for_the_folds() -> None:
    data = _synthetic(n_captures=4)
    groups = capture_groups(data.captures.tolist(), [("cap00.pcap", "cap01.pcap")])
    flows = np.array([groups[c] for c in data.captures.tolist()], dtype=object)
    with pytest.raises(UsageError, match="at least 4 independent captures"):
        group_folds(data.labels, flows, 4)


def test_classes_with_enough_data_count_groups_not_captures() -> None:
    labels = np.array(["a"] * 6 + ["b"] * 3 + ["c"] * 12, dtype=object)
    groups = np.array(["g1"] * 3 + ["g2"] * 3 + ["g1", "g2", "g3"] + ["g1"] * 12,
                      dtype=object)
    assert classes_with_enough_data(labels, groups, 1, 1) == ["a", "b", "c"]
    assert classes_with_enough_data(labels, groups, 5, 2) == ["a"]
    assert classes_with_enough_data(labels, groups, 3, 3) == ["b"]


# ==================================================================== command
# 13 captures of the nDPI corpus in which WhatsApp, TLS, Google and DNS each have at least
# 30 flows from 3 or more captures (nDPI's DPI labels, `appsight labels from-ndpi`).
SUBSET = (
    "reddit.pcap", "android.pcap", "wechat.pcap", "alexa-app.pcapng", "pinterest.pcap",
    "webex.pcap", "anyconnect-vpn.pcap", "starcraft_battle.pcap", "no_sni.pcap",
    "safari.pcap", "whatsapp.pcap", "whatsapp_voice_and_message.pcap",
    "whatsapp_login_call.pcap",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR", f"{path} is not a PNG"
    assert len(data) > 10_000, f"{path} is only {len(data)} bytes"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def subset_labels(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    labels = tmp_path_factory.mktemp("labels") / "labels.csv"
    listings = [str(shared_data / "ndpi" / f"{name}.out") for name in SUBSET]
    assert main(["labels", "from-ndpi", *listings, "-o", str(labels)]) == 0
    return labels


def evaluate_args(shared_data: Path, labels: Path, out: Path, *extra: str) -> list[str]:
    return [
        "evaluate", "--labels", str(labels), *[str(shared_data / "ndpi" / n) for n in SUBSET],
        "--min-class-flows", "30", "--min-class-captures", "3", "--trees", "20", "--folds",
        "3", "--burst-gap", "none", "-o", str(out), *extra,
    ]


@pytest.mark.shared_data
def test_evaluate_on_a_real_subset(shared_data: Path, subset_labels: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    groups = tmp_path / "pairs.tsv"  # pretend two captures overlap: they must share a fold
    groups.write_text(OVERLAPS_HEADER + "9\tndpi/reddit.pcap\t9\tndpi/android.pcap\t9\n")
    out = tmp_path / "results"
    status = main(evaluate_args(shared_data, subset_labels, out, "--groups-file",
                                str(shared_data / "pcap_overlaps.tsv"), "--groups-file",
                                str(groups)))
    captured = capsys.readouterr()
    assert status == 0, captured.err
    text = captured.out
    for heading in ("Per app", "average", "Reject option", "Macro-F1", str(out)):
        assert heading in text
    for app in ("DNS", "Google", "TLS", "WhatsApp"):
        assert f"  {app} " in text
    assert "fold 3:" in captured.err
    result = json.loads((out / "results.json").read_text())
    assert result["apps"] == 4
    assert [r["threshold"] for r in result["appscanner"]] == [None, 0.5, 0.7, 0.9]
    tested = [c for fold in result["folds"] for c in fold["test_captures"]]
    assert len(tested) == len(set(tested))  # no capture tested twice
    fold_of = {Path(c).name: f["fold"] for f in result["folds"] for c in f["test_captures"]}
    assert fold_of["reddit.pcap"] == fold_of["android.pcap"]
    assert 0.0 <= result["macro_f1"]["no_threshold"] <= 1.0
    assert len(result["thresholds"]) == 3
    width, height = png_size(out / "confusion.png")
    assert width > 400 and height > 400
    png_size(out / "coverage.png")


@pytest.mark.shared_data
def test_evaluate_json_and_separate_test_inputs(shared_data: Path, subset_labels: Path,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ndpi = shared_data / "ndpi"
    out = tmp_path / "tt"
    status = main([
        "evaluate", "--labels", str(subset_labels),
        *[str(ndpi / n) for n in SUBSET if n not in ("whatsapp_voice_and_message.pcap",
                                                     "safari.pcap", "android.pcap")],
        "--test", str(ndpi / "whatsapp_voice_and_message.pcap"), str(ndpi / "safari.pcap"),
        str(ndpi / "android.pcap"), "--trees", "20", "--json", "-o", str(out),
    ])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    document = json.loads(captured.out)  # one JSON object on stdout, nothing else
    assert document["mode"].startswith("training inputs against separate test inputs")
    assert document["output_dir"] == str(out)
    assert {Path(c).name for c in document["folds"][0]["test_captures"]} == {
        "whatsapp_voice_and_message.pcap", "safari.pcap", "android.pcap"}
    assert (out / "results.json").is_file()
    png_size(out / "coverage.png")


@pytest.mark.shared_data
@pytest.mark.parametrize(("extra", "message"), [
    (["--folds", "1"], "--folds must be at least 2"),
    (["--folds", "20"], "20 folds need at least 20 independent captures"),
    (["--test-labels", "x.csv"], "give --test too"),
    (["--features", "nope"], "unknown feature set"),
    (["--groups-file", "/nonexistent.tsv"], "cannot read the groups file"),
    (["--test", "/nonexistent.pcap"], "no such file"),
])
def test_evaluate_bad_input_is_one_line_and_status_2(
    shared_data: Path, subset_labels: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], extra: list[str], message: str,
) -> None:
    status = main(evaluate_args(shared_data, subset_labels, tmp_path / "r", *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("appsight: error: ") and message in err[-1]


@pytest.mark.shared_data
def test_evaluate_refuses_leaky_test_inputs(shared_data: Path, subset_labels: Path,
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    ndpi = shared_data / "ndpi"
    groups = tmp_path / "pairs.tsv"
    groups.write_text(OVERLAPS_HEADER + "9\tndpi/reddit.pcap\t9\tndpi/android.pcap\t9\n")
    base = ["evaluate", "--labels", str(subset_labels), str(ndpi / "reddit.pcap"),
            str(ndpi / "whatsapp.pcap"), "-o", str(tmp_path / "r")]
    assert main([*base, "--test", str(ndpi / "reddit.pcap")]) == 2
    assert "both a training and a test input" in capsys.readouterr().err
    groups_args = ["--groups-file", str(groups), "--test", str(ndpi / "android.pcap")]
    assert main([*base, *groups_args]) == 2
    assert "shares packets with training capture" in capsys.readouterr().err


# ===================================================================== ambiguity stage
def test_with_confidence_keeps_answers_and_sets_the_top_value() -> None:
    """Rows carry the checker's confidence as their top value; the answer never changes,
    not even for a confidence of 0."""
    confidence = np.array([0.5, 0.0, 1.0, 0.25, 0.9, 0.1])
    scaled = with_confidence(PROBA, confidence)
    assert scaled.argmax(axis=1).tolist() == PROBA.argmax(axis=1).tolist()
    assert scaled.max(axis=1) == pytest.approx(np.maximum(confidence, 1e-12))
    answer, _, answered = decide(scaled, CLASSES, 0.5)
    assert answered.tolist() == [True, False, True, False, True, False]
    assert answer[0] == "a" and answer[2] == "b"


def test_cross_validate_with_ambiguity_answers_the_same_flows_the_same_way() -> None:
    """The ambiguity stage changes confidences only: with no threshold every flow gets the
    answer the plain forest gives; each fold's threshold is the checker's 0.5; overlapping
    noisy apps leave the checker unsure of some flows."""
    data = _synthetic(n_captures=12, apps=3, per_capture=30)
    data.features[:, :2] += np.random.default_rng(5).normal(0, 3.0, size=(len(data), 2))
    groups = data.captures
    fold_of = group_folds(data.labels, groups, 3, seed=0)
    plain = cross_validate(data, fold_of, groups, trees=20, seed=0)
    checked = cross_validate(data, fold_of, groups, trees=20, seed=0, ambiguity=True)
    assert (decide(checked.proba, checked.classes, None)[0].tolist()
            == decide(plain.proba, plain.classes, None)[0].tolist())
    assert [f.threshold for f in checked.folds] == [0.5, 0.5, 0.5]
    confidence = checked.proba.max(axis=1)
    assert ((confidence >= 0) & (confidence <= 1)).all()
    assert not np.array_equal(confidence, plain.proba.max(axis=1))
    assert 0 < int((confidence < 0.5).sum()) < len(data)


def test_evaluate_without_matplotlib_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A gateway installs the agent without the plots extra: evaluate says what to install."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    out = tmp_path / "results"
    status = main(["evaluate", str(Path(__file__).parents[1] / "examples" / "sample.pcap"),
                   "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err == ["appsight: error: evaluate draws its figures with matplotlib, which is not "
                   "installed: pip install 'appsight[plots]'"]
    assert not out.exists()
