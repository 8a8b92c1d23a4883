"""Training and classifying end to end, as a user runs `appsight train` and `appsight classify`.

Two kinds of labelled input feed the same trainer: a labels file (hand-written for the
embedded sample capture, or derived from nDPI's listings for the corpus) and a folder per
app. A model that classifies its own training captures badly would reveal that training and
classification disagree on flows, bursts or features, so the checks go beyond output shape:
the flows of a training capture must mostly come back with the app they were trained as.
The sample-capture tests always run; the corpus tests skip without the shared data.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from appsight.classifier import THRESHOLD_GRID, UNKNOWN, choose_threshold
from appsight.cli import main
from appsight.labels import is_background
from appsight.model import load_model
from appsight.pipeline import PipelineOptions, iter_flow_blocks
from appsight.report import flow_records

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample.pcap"
JSON_KEYS = {
    "capture", "burst", "proto", "src", "sport", "dst", "dport", "first_ts", "last_ts",
    "packets_fwd", "packets_bwd", "bytes_fwd", "bytes_bwd",
}

# The sample capture's phone (10.77.0.2) fetches over TLS from 10.77.0.1:443 ('web') and
# sends three small UDP requests to port 5000 ('udp-app'); its ICMPv6 housekeeping is left
# unlabelled. Two rows are written server-first: matching ignores direction.
SAMPLE_LABELS = """\
capture,proto,src,sport,dst,dport,label
sample.pcap,tcp,10.77.0.2,38228,10.77.0.1,443,web
sample.pcap,tcp,10.77.0.2,38240,10.77.0.1,443,web
sample.pcap,tcp,10.77.0.2,38250,10.77.0.1,443,web
sample.pcap,tcp,10.77.0.2,32992,10.77.0.1,443,web
sample.pcap,tcp,10.77.0.2,32994,10.77.0.1,443,web
sample.pcap,tcp,10.77.0.2,33004,10.77.0.1,443,web
sample.pcap,tcp,10.77.0.2,33018,10.77.0.1,443,web
sample.pcap,tcp,10.77.0.2,33024,10.77.0.1,443,web
sample.pcap,6,10.77.0.1,443,10.77.0.2,33040,web
sample.pcap,tcp,10.77.0.2,33054,10.77.0.1,443,web
sample.pcap,udp,10.77.0.2,47604,10.77.0.1,5000,udp-app
sample.pcap,17,10.77.0.1,5000,10.77.0.2,46079,udp-app
sample.pcap,udp,10.77.0.2,49856,10.77.0.1,5000,udp-app
"""

# ~20 small nDPI captures of a few apps (WhatsApp, Netflix, Zoom, Signal, Teams...) plus the
# housekeeping every capture carries: trains with 20 trees in a few seconds.
NDPI_CAPTURES = (
    "whatsapp.pcap", "whatsapp_login_call.pcap", "whatsapp_voice_and_message.pcap",
    "whatsappfiles.pcap", "netflix.pcap", "telegram.pcap", "zoom.pcap", "zoom_p2p.pcapng",
    "signal.pcap", "stun_signal.pcapng", "teams.pcap", "instagram.pcap", "quic.pcap",
    "youtube_quic.pcap", "youtubeupload.pcap", "facebook.pcap", "avast_securedns.pcapng",
    "dns_fragmented.pcap", "1kxun.pcap", "skype-conference-call.pcap",
)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The command line in this process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def json_rows(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def assert_classified(rows: list[dict[str, object]], classes: list[str]) -> None:
    """Every flow object: the keys of `flows --json` plus an app and a confidence."""
    assert rows
    for row in rows:
        assert set(row) == JSON_KEYS | {"app", "confidence"}, row
        assert row["app"] in {*classes, UNKNOWN}, row
        assert isinstance(row["confidence"], float | int)
        assert 0.0 <= row["confidence"] <= 1.0, row


# --------------------------------------------------------------------------- sample capture
@pytest.fixture(scope="module")
def sample_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`appsight train` as a real process on the sample capture and its hand-written labels."""
    folder = tmp_path_factory.mktemp("sample-model")
    (folder / "labels.csv").write_text(SAMPLE_LABELS)
    model = folder / "sample.model"
    done = subprocess.run(
        [sys.executable, "-m", "appsight", "train", "--labels", str(folder / "labels.csv"),
         str(SAMPLE), "-o", str(model), "--trees", "20"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "13 labelled flows in 2 apps" in done.stderr
    # the result goes to standard output: one line per app, then the summary
    assert done.stdout.splitlines()[0].split() == ["web", "10", "flows"]
    assert done.stdout.splitlines()[-1].startswith("appsight: trained in")
    return model


def test_train_on_sample_stores_what_it_learned(sample_model: Path) -> None:
    model = load_model(sample_model)
    assert model.classes == ["udp-app", "web"]
    training = model.metadata["training"]
    assert training["flows"] == 13
    assert training["flows_per_class"] == {"udp-app": 3, "web": 10}
    assert training["captures"] == 1
    assert training["trees"] == 20 and len(model.forest.estimators_) == 20
    assert training["dropped_flows"] == 0
    # Flows of the default 1 s bursts: the 13 labelled ones and the ICMPv6 housekeeping.
    total = sum(len(b.flows) for b in iter_flow_blocks(SAMPLE, PipelineOptions()))
    assert training["unlabelled_flows"] == total - 13 > 0
    assert training["threshold_chosen_by"] == (  # one capture: none to hold out
        "out-of-bag predictions (too few captures to hold out: 4 or more, and 2 apps in 2 or "
        "more)")
    assert model.threshold in THRESHOLD_GRID
    assert model.burst_gap == 1.0


def test_classify_sample_json(sample_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The training capture comes back with its apps: train and classify see the same flows."""
    status, out, err = run(capsys, "classify", "-m", sample_model, "--json", SAMPLE)
    assert status == 0, err
    rows = json_rows(out)
    assert_classified(rows, ["udp-app", "web"])
    tls = [r for r in rows if r["proto"] == "tcp" and r["dport"] == 443]
    udp = [r for r in rows if r["proto"] == "udp" and r["dport"] == 5000]
    assert len(tls) == 10 and len(udp) == 3
    assert all(r["app"] == "web" for r in tls)
    assert all(r["app"] == "udp-app" for r in udp)


def test_classify_sample_report(sample_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "classify", "-m", sample_model, SAMPLE)
    assert status == 0, err
    headers = [line for line in out.splitlines() if line.startswith("== sample.pcap")]
    flows = [line for line in out.splitlines() if line.startswith("  ")]
    assert headers and len(flows) == 19
    assert all("  app " in line and "  confidence " in line for line in flows)
    assert sum("app web" in line for line in flows) == 10


def test_classify_threshold_override(
    sample_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--threshold 1 leaves an app only where every tree agreed; the rest is 'unknown'."""
    status, out, _ = run(capsys, "classify", "-m", sample_model, "--json", "--threshold", "1",
                         SAMPLE)
    assert status == 0
    rows = json_rows(out)
    assert all((r["app"] == UNKNOWN) == (r["confidence"] < 1.0) for r in rows)
    status, out, _ = run(capsys, "classify", "-m", sample_model, "--json", "--threshold", "0",
                         SAMPLE)
    assert not any(r["app"] == UNKNOWN for r in json_rows(out))


def test_given_threshold_is_stored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "labels.csv").write_text(SAMPLE_LABELS)
    status, _, err = run(capsys, "train", "--labels", tmp_path / "labels.csv", SAMPLE, "-o",
                         tmp_path / "m", "--trees", "5", "--threshold", "0.35")
    assert status == 0, err
    model = load_model(tmp_path / "m")
    assert model.threshold == 0.35
    assert model.metadata["training"]["threshold_chosen_by"] == "given"


def sample_copies(folder: Path, count: int) -> tuple[list[Path], Path]:
    """``count`` copies of the sample capture under their own names, and a labels file
    labelling each copy's flows as the sample's."""
    copies, rows = [], [SAMPLE_LABELS.splitlines()[0]]
    for i in range(count):
        copy = folder / f"copy{i}.pcap"
        copy.write_bytes(SAMPLE.read_bytes())
        copies.append(copy)
        rows += [line.replace("sample.pcap", copy.name)
                 for line in SAMPLE_LABELS.splitlines()[1:]]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return copies, folder / "labels.csv"


def test_train_with_ambiguity_stores_a_checker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--ambiguity: the model carries its checker (format 2), the threshold is the checker's
    0.5, and classify reports the checker's confidence."""
    copies, labels = sample_copies(tmp_path, 5)
    status, out, err = run(capsys, "train", "--labels", labels, *copies, "-o", tmp_path / "m",
                           "--trees", "5", "--ambiguity")
    assert status == 0, err
    assert "threshold 0.50 (ambiguity checker: more likely right)" in out
    model = load_model(tmp_path / "m")
    assert model.checker is not None and model.threshold == 0.5
    assert model.metadata["training"]["ambiguity"] is True
    status, out, err = run(capsys, "classify", "-m", tmp_path / "m", "--json", copies[0])
    assert status == 0, err
    rows = json_rows(out)
    assert_classified(rows, model.classes)
    features = np.vstack([model.feature_set(b.flows)
                          for b in iter_flow_blocks(copies[0], PipelineOptions())])
    _, expected = model.predict(features)
    assert [r["confidence"] for r in rows] == pytest.approx(expected.tolist())


@pytest.mark.parametrize(("case", "message"), [
    ("one capture", "needs every app in at least 2 independent captures; only one for "
                    "udp-app, web"),
    ("all overlapping", "needs every app in at least 2 independent captures"),
    ("groups without ambiguity", "--groups-file is for --ambiguity"),
])
def test_train_with_ambiguity_refuses_single_capture_apps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    """The checker learns from captures held out: an app in one capture (or in captures
    that all overlap) cannot be held out and kept, so training stops with one line."""
    copies, labels = sample_copies(tmp_path, 1 if case == "one capture" else 4)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("file_a\tfile_b\n" + "".join(
        f"{copies[0].name}\t{c.name}\n" for c in copies[1:]))
    extra = {"one capture": ["--ambiguity"],
             "all overlapping": ["--ambiguity", "--groups-file", pairs],
             "groups without ambiguity": ["--groups-file", pairs]}[case]
    status, _, err = run(capsys, "train", "--labels", labels, *copies, "-o", tmp_path / "m",
                         "--trees", "5", *extra)
    assert status == 2
    last = err.splitlines()[-1]
    assert last.startswith("appsight: error:") and message in last, last
    assert "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_train_with_one_class_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = "\n".join(line for line in SAMPLE_LABELS.splitlines() if "udp" not in line)
    (tmp_path / "labels.csv").write_text(labels + "\n")
    status, _, err = run(capsys, "train", "--labels", tmp_path / "labels.csv", SAMPLE, "-o",
                         tmp_path / "m", "--trees", "5")
    assert status == 2
    last = err.splitlines()[-1]
    assert last.startswith("appsight: error:")
    assert "need at least two apps" in last and "web" in last
    assert not (tmp_path / "m").exists()


def test_train_without_labelled_flows_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Labels naming another capture leave nothing to learn: a clear error, no model."""
    (tmp_path / "labels.csv").write_text(SAMPLE_LABELS.replace("sample.pcap", "other.pcap"))
    status, _, err = run(capsys, "train", "--labels", tmp_path / "labels.csv", SAMPLE, "-o",
                         tmp_path / "m", "--trees", "5")
    assert status == 2
    assert err.splitlines()[-1] == "appsight: error: no labelled flows to train on"
    assert not (tmp_path / "m").exists()


def test_train_folder_mode_needs_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "train", SAMPLE, "-o", tmp_path / "m")
    assert status == 2
    assert "give folders of the form DIR/<app>/*.pcap" in err.splitlines()[-1]
    (tmp_path / "apps").mkdir()
    status, _, err = run(capsys, "train", tmp_path / "apps", "-o", tmp_path / "m")
    assert status == 2
    assert "no app folders inside" in err.splitlines()[-1]


@pytest.mark.parametrize("option", [("--trees", "0"), ("--max-leaves", "1")],
                         ids=["trees-0", "max-leaves-1"])
def test_train_with_impossible_forest_size_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: tuple[str, str]
) -> None:
    (tmp_path / "labels.csv").write_text(SAMPLE_LABELS)
    status, _, err = run(capsys, "train", "--labels", tmp_path / "labels.csv", SAMPLE, "-o",
                         tmp_path / "m", *option)
    assert status == 2
    assert err.splitlines()[-1].startswith("appsight: error:")


# --------------------------------------------------------------------------- choose_threshold
def probabilities(confidences: list[float], right: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Rows over 4 classes whose best class 0 has the given confidence; truth 0 or 1."""
    rows = np.array([[c, *[(1 - c) / 3] * 3] for c in confidences])
    assert (rows.argmax(axis=1) == 0).all()
    return rows, np.array([0 if r else 1 for r in right])


def test_choose_threshold_cuts_between_right_and_wrong() -> None:
    """Right answers at 0.9, wrong ones at 0.6: the lowest cut that drops the wrong ones."""
    probs, truth = probabilities([0.9] * 5 + [0.6] * 3, [True] * 5 + [False] * 3)
    assert choose_threshold(probs, truth) == 0.65


def test_choose_threshold_all_right_answers_everything() -> None:
    probs, truth = probabilities([0.3, 0.5, 0.99], [True] * 3)
    assert choose_threshold(probs, truth) == 0.0


def test_choose_threshold_all_wrong_answers_nothing() -> None:
    probs, truth = probabilities([0.5, 0.45], [False, False])
    assert choose_threshold(probs, truth) == 0.55


def test_choose_threshold_maximises_right_minus_wrong() -> None:
    """Right at 0.3, 0.5, 0.8, 0.9 and wrong at 0.4, 0.55, 0.7: (right - wrong) peaks at 2
    for cuts in (0.7, 0.8], so 0.75; a flow exactly at the cut counts as answered."""
    probs, truth = probabilities([0.3, 0.5, 0.8, 0.9, 0.4, 0.55, 0.7],
                                 [True] * 4 + [False] * 3)
    assert choose_threshold(probs, truth) == 0.75
    probs, truth = probabilities([0.7, 0.7, 0.65], [True, True, False])
    assert choose_threshold(probs, truth) == 0.7


def test_choose_threshold_against_brute_force() -> None:
    """On random forests' worth of probabilities, no grid threshold scores better."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        n, k = int(rng.integers(1, 60)), int(rng.integers(2, 6))
        probs = rng.dirichlet(np.ones(k) * 0.5, size=n)
        truth = rng.integers(0, k, size=n)
        chosen = choose_threshold(probs, truth)
        best, confidence = probs.argmax(axis=1), probs.max(axis=1)

        def score(t: float, best: np.ndarray = best, confidence: np.ndarray = confidence,
                  truth: np.ndarray = truth) -> int:
            answered = confidence >= t
            return int((answered & (best == truth)).sum() - (answered & (best != truth)).sum())

        scores = [score(t) for t in THRESHOLD_GRID]
        assert chosen in THRESHOLD_GRID
        assert score(chosen) == max(scores)
        assert chosen == THRESHOLD_GRID[scores.index(max(scores))]  # ties: the lowest cut


# --------------------------------------------------------------------------- the corpus
@pytest.fixture(scope="module")
def ndpi_model(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """labels from-ndpi over the whole folder, then train on ~20 of its captures."""
    folder = tmp_path_factory.mktemp("ndpi-model")
    labels, model = folder / "ndpi-labels.csv", folder / "ndpi.model"
    assert main(["labels", "from-ndpi", str(shared_data / "ndpi"), "-o", str(labels)]) == 0
    captures = [str(shared_data / "ndpi" / name) for name in NDPI_CAPTURES]
    status = main(["train", "--labels", str(labels), *captures, "-o", str(model),
                   "--trees", "20"])
    assert status == 0
    return model


def test_ndpi_model_trained_on_the_chosen_captures(ndpi_model: Path) -> None:
    model = load_model(ndpi_model)
    training = model.metadata["training"]
    assert training["captures"] == len(NDPI_CAPTURES)
    assert sum(training["flows_per_class"].values()) == training["flows"] > 500
    assert model.classes == sorted(training["flows_per_class"])
    assert {"WhatsApp", "NetFlix", "Zoom", "SignalVoip"} <= set(model.classes)


def test_ndpi_model_classifies_a_training_capture(
    ndpi_model: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = load_model(ndpi_model)
    status, out, err = run(capsys, "classify", "-m", ndpi_model, "--json",
                           shared_data / "ndpi" / "whatsapp.pcap")
    assert status == 0, err
    rows = json_rows(out)
    assert_classified(rows, model.classes)
    assert {r["capture"] for r in rows} == {"whatsapp.pcap"}
    apps = Counter(r["app"] for r in rows)
    assert apps["WhatsApp"] >= 0.8 * len(rows), apps

    status, out, _ = run(capsys, "classify", "-m", ndpi_model,
                         shared_data / "ndpi" / "whatsapp.pcap")
    assert status == 0
    flows = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(flows) == len(rows)
    assert all("  app " in line and "  confidence " in line for line in flows)


FOLDERS = {
    "whatsapp": ("whatsapp.pcap", "whatsapp_login_call.pcap", "whatsapp_voice_and_message.pcap"),
    "netflix": ("netflix.pcap",),
}


def test_train_on_app_folders(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DIR/<app>/ of symlinked captures: folder names become the classes, and the summary
    counts what --drop-background and --min-packets 2 leave, capture by capture."""
    root = tmp_path / "apps"
    for app, names in FOLDERS.items():
        (root / app).mkdir(parents=True)
        for name in names:
            (root / app / name).symlink_to(shared_data / "ndpi" / name)
    (root / "notes").mkdir()  # a folder without captures is no app
    (root / "notes" / "README.txt").write_text("not a capture\n")

    status, _, err = run(capsys, "train", root, "-o", tmp_path / "m", "--trees", "20",
                         "--drop-background", "--min-packets", "2")
    assert status == 0, err
    model = load_model(tmp_path / "m")
    assert model.classes == ["netflix", "whatsapp"]

    kept: Counter[str] = Counter()
    dropped = 0
    for app, names in FOLDERS.items():
        for name in names:
            for block in iter_flow_blocks(shared_data / "ndpi" / name, PipelineOptions()):
                for record in flow_records(block):
                    packets = int(record["packets_fwd"]) + int(record["packets_bwd"])  # type: ignore[call-overload]
                    if packets >= 2 and not is_background(record):
                        kept[app] += 1
                    else:
                        dropped += 1
    training = model.metadata["training"]
    assert training["flows_per_class"] == dict(kept)
    assert training["flows"] == sum(kept.values())
    assert training["dropped_flows"] == dropped > 0
    assert training["unlabelled_flows"] == 0
    assert training["captures"] == 4
    assert f"{sum(kept.values())} labelled flows in 2 apps" in err


# ------------------------------------------------------------------ --device in the model
def test_the_model_keeps_its_devices_and_refuses_others(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--device decides each flow's direction, so its features: the model file records it,
    classify uses it when none is given, and a conflicting one is one line and exit 2."""
    (tmp_path / "labels.csv").write_text(SAMPLE_LABELS)
    with_device, without = tmp_path / "device.model", tmp_path / "plain.model"
    for path, extra in ((with_device, ["--device", "10.77.0.2"]), (without, [])):
        status, _, err = run(capsys, "train", "--labels", tmp_path / "labels.csv", SAMPLE,
                             "-o", path, "--trees", "5", *extra)
        assert status == 0, err
    assert load_model(with_device).metadata["device"] == ["10.77.0.2/32"]
    assert load_model(without).metadata["device"] == []

    _, implicit, _ = run(capsys, "classify", "--json", "-m", with_device, SAMPLE)
    _, explicit, _ = run(capsys, "classify", "--json", "-m", with_device,
                         "--device", "10.77.0.2/32", SAMPLE)
    assert implicit == explicit and implicit
    for model, device, message in (
        (with_device, "10.77.0.0/24", "the model was trained with --device 10.77.0.2/32"),
        (without, "10.77.0.2", "the model was trained without --device"),
    ):
        status, _, err = run(capsys, "classify", "-m", model, "--device", device, SAMPLE)
        assert status == 2 and message in err, err


def test_a_model_from_before_devices_were_stored_takes_any(
        sample_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import appsight.model as model_module

    old = load_model(sample_model)
    old.metadata.pop("device", None)
    path = tmp_path / "old.model"
    old.save(path)
    assert "device" not in model_module.read_header(path)[0]
    status, out, err = run(capsys, "classify", "--json", "-m", path, "--device", "10.77.0.2",
                           SAMPLE)
    assert status == 0 and out, err
