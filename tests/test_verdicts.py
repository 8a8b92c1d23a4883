"""Which apps a device runs: the vote over flows (appsight.verdicts) and `classify --sessions`.

The end-to-end checks train on the embedded sample capture and compare the per-window verdicts
with what `classify --json` said about each flow: the windows must be exactly the vote of
those flows, so the two modes can never disagree about a capture.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from appsight.addresses import NetworkMatcher
from appsight.classifier import UNKNOWN
from appsight.cli import main
from appsight.pipeline import PipelineOptions, iter_flow_blocks
from appsight.verdicts import (
    ALL_TRAFFIC,
    DEFAULT_MIN_SHARE,
    CaptureWindows,
    FlowAnswer,
    RecentFlows,
    combine,
    flow_answers,
)

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample.pcap"
PHONE = "10.77.0.2"
LABELS = """\
capture,proto,src,sport,dst,dport,label
sample.pcap,tcp,10.77.0.2,38228,10.77.0.1,443,web
sample.pcap,tcp,10.77.0.2,38240,10.77.0.1,443,web
sample.pcap,tcp,10.77.0.2,38250,10.77.0.1,443,web
sample.pcap,tcp,10.77.0.2,32992,10.77.0.1,443,web
sample.pcap,tcp,10.77.0.2,32994,10.77.0.1,443,web
sample.pcap,udp,10.77.0.2,47604,10.77.0.1,5000,udp-app
sample.pcap,udp,10.77.0.2,49856,10.77.0.1,5000,udp-app
"""


def answer(app: str, confidence: float, first: float = 0.0, device: str = "d") -> FlowAnswer:
    return FlowAnswer(device, first, first + 1.0, app, confidence)


def test_answered_flows_vote_with_their_confidence() -> None:
    verdict = combine("c", "d", [answer("chat", 0.9), answer("chat", 0.7), answer("maps", 0.5),
                                 answer(UNKNOWN, 0.1), answer("mail", 0.1)], min_share=0.1)
    # Over 5 flows: chat 1.6, maps 0.5, mail 0.1; mail's 2 % is below the 10 % asked for.
    assert [a.app for a in verdict.apps] == ["chat", "maps"]
    chat, maps = verdict.apps
    assert chat.share == pytest.approx(1.6 / 5)
    assert (chat.flows, chat.confidence) == (2, pytest.approx(0.8))
    assert maps.share == pytest.approx(0.5 / 5)
    assert (verdict.flows, verdict.answered, verdict.top) == (5, 4, "chat")
    # The default (12 %): maps's tenth of the traffic is not enough.
    assert [a.app for a in combine("c", "d", [answer("chat", 0.9), answer("chat", 0.7),
                                              answer("maps", 0.5), answer(UNKNOWN, 0.1),
                                              answer("mail", 0.1)]).apps] == ["chat"]


def test_a_window_without_answered_flows_is_unknown() -> None:
    verdict = combine("c", "d", [answer(UNKNOWN, 0.3), answer(UNKNOWN, 0.2)])
    assert (verdict.apps, verdict.top, verdict.answered) == ((), UNKNOWN, 0)
    assert verdict.as_dict()["apps"] == []
    split = combine("c", "d", [answer(a, 0.5) for a in "abcdef"], min_share=0.2)
    assert split.top == UNKNOWN  # six apps at 0.5/6 each: none holds a fifth of the traffic
    # An app the model never saw: most flows unknown, a few answered as the nearest app.
    unseen = [answer(UNKNOWN, 0.3)] * 8 + [answer("chat", 0.5), answer("maps", 0.45)]
    assert combine("c", "d", unseen).top == UNKNOWN


def test_capture_windows_slice_each_device_from_its_first_flow() -> None:
    windows = CaptureWindows("c", window=10.0)
    windows.add([answer("chat", 0.9, 100.0, "a"), answer("chat", 0.9, 109.9, "a"),
                 answer("maps", 0.8, 110.0, "a"), answer("maps", 0.8, 205.0, "b")])
    verdicts = windows.verdicts()
    assert [(v.device, v.flows, v.top) for v in verdicts] == [
        ("a", 2, "chat"), ("a", 1, "maps"), ("b", 1, "maps")]
    assert (verdicts[0].start, verdicts[0].end) == (100.0, 110.9)
    whole = CaptureWindows("c")
    whole.add([answer("chat", 0.9, t, "a") for t in (0.0, 500.0, 1000.0)])
    assert [v.flows for v in whole.verdicts()] == [3]


def test_recent_flows_forget_what_ended_before_the_window() -> None:
    recent = RecentFlows(window=30.0)
    assert recent.add([answer("chat", 0.9, 0.0, "a"), answer("maps", 0.9, 50.0, "a")]) == {"a"}
    [verdict] = recent.verdicts("live", now=60.0, devices={"a"})
    assert (verdict.flows, verdict.top) == (1, "maps")  # chat ended at 1.0 < 60 - 30
    assert recent.verdicts("live", now=200.0, devices={"a"}) == []
    assert recent.answers == {}


def _blocks(options: PipelineOptions) -> list:
    return list(iter_flow_blocks(SAMPLE, options))


def test_flow_answers_are_about_the_device_end() -> None:
    options = PipelineOptions(device=NetworkMatcher.parse([PHONE]))
    block = _blocks(options)[0]
    n = len(block.flows)
    answers = flow_answers(block, ["web"] * n, [0.5] * n, options.device)
    assert answers and {a.device for a in answers} == {PHONE}
    assert all(a.first_ts <= a.last_ts for a in answers)
    elsewhere = flow_answers(block, ["web"] * n, [0.5] * n, NetworkMatcher.parse(["192.0.2.0/24"]))
    assert elsewhere == []
    assert {a.device for a in flow_answers(block, ["web"] * n, [0.5] * n, None)} == {ALL_TRAFFIC}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("verdict-model")
    (folder / "labels.csv").write_text(LABELS)
    path = folder / "sample.model"
    assert main(["train", "--labels", str(folder / "labels.csv"), str(SAMPLE), "-o", str(path),
                 "--trees", "20", "--threshold", "0.5", "--device", PHONE]) == 0
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out = capsys.readouterr()
    return status, out.out, out.err


def _expected_windows(rows: list[dict], window: float | None) -> list[tuple[int, int, dict]]:
    """(flows, answered, {app: share}) per window, recomputed from per-flow answers."""
    by_window: dict[int, list[dict]] = defaultdict(list)
    origin = min(r["first_ts"] for r in rows)
    for row in rows:
        by_window[0 if window is None else int((row["first_ts"] - origin) // window)].append(row)
    out = []
    for k in sorted(by_window):
        weight: dict[str, float] = defaultdict(float)
        for row in by_window[k]:
            if row["app"] != UNKNOWN:
                weight[row["app"]] += row["confidence"]
        total = len(by_window[k])
        shares = {a: w / total for a, w in weight.items() if w / total >= DEFAULT_MIN_SHARE}
        out.append((len(by_window[k]), sum(r["app"] != UNKNOWN for r in by_window[k]), shares))
    return out


@pytest.mark.parametrize("window", [None, 2.0])
def test_sessions_are_the_vote_of_classify_json(model: Path, capsys: pytest.CaptureFixture[str],
                                                window: float | None) -> None:
    given = ["--window", window] if window else []
    status, out, err = _run(capsys, "classify", "-m", model, "--json", "--device", PHONE, SAMPLE)
    assert status == 0, err
    rows = [r for r in map(json.loads, out.splitlines()) if r["src"] == PHONE or r["dst"] == PHONE]
    status, out, err = _run(capsys, "classify", "-m", model, "--json", "--sessions",
                            "--device", PHONE, *given, SAMPLE)
    assert status == 0, err
    verdicts = [json.loads(line) for line in out.splitlines()]
    assert {v["device"] for v in verdicts} == {PHONE}
    assert sum(v["flows"] for v in verdicts) == len(rows)
    expected = _expected_windows(rows, window)
    assert len(verdicts) == len(expected) >= (2 if window else 1)
    for verdict, (flows, answered, shares) in zip(verdicts, expected, strict=True):
        assert (verdict["flows"], verdict["answered"]) == (flows, answered)
        # Confidences in classify --json are rounded to 4 places.
        assert {a["app"]: a["share"] for a in verdict["apps"]} == pytest.approx(shares, abs=2e-3)
        assert verdict["start"] <= verdict["end"]
    assert verdicts[0]["apps"][0]["app"] == "web"


def test_sessions_report_names_the_apps(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _run(capsys, "classify", "-m", model, "--sessions", SAMPLE)
    assert status == 0, err
    [line] = out.splitlines()  # the model's --device: the phone's traffic only
    assert line.startswith(f"== sample.pcap  device {PHONE}  ")
    assert " answered: web " in line and "confidence" in line


@pytest.mark.parametrize("args, message", [
    (["--window", "5"], "--window cuts the windows of --sessions"),
    (["--sessions", "--window", "0"], "not a positive number of seconds"),
    (["--sessions", "--window", "inf"], "not a positive number of seconds"),
    (["--sessions", "--min-share", "0"], "would name every app"),
    (["--sessions", "--min-share", "1.5"], "not between 0 and 1"),
])
def test_bad_session_options_are_one_line_and_exit_2(
        model: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as stop:
        status = main(["classify", "-m", str(model), *args, str(SAMPLE)])
        raise SystemExit(status)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_session_shares_are_finite_and_add_up_to_at_most_one(
        model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "classify", "-m", model, "--json", "--sessions",
                          "--min-share", "0.01", SAMPLE)
    assert status == 0
    for verdict in map(json.loads, out.splitlines()):
        shares = [a["share"] for a in verdict["apps"]]
        assert all(math.isfinite(s) for s in shares)
        assert sum(shares) <= 1.0 + 1e-9
        assert np.all(np.diff(shares) <= 0)


def test_live_reports_each_devices_apps_after_every_burst(
        model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pcap stream through `live -`: the text report carries a device line under each report,
    and with --sessions --json the last verdict is the whole capture's, as the capture is
    shorter than the 30 s window."""
    import subprocess
    import sys

    def live(*args: str) -> list[str]:
        with open(SAMPLE, "rb") as stream:
            done = subprocess.run(
                [sys.executable, "-m", "appsight", "live", "-", "-m", str(model), *args],
                stdin=stream, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    report = live("--device", PHONE)
    bursts = [i for i, line in enumerate(report) if "  burst " in line]
    devices = [i for i, line in enumerate(report) if f"  device {PHONE}  " in line]
    # A device line closes every report; a stream read faster than real time reports
    # several bursts at once, so there may be fewer device lines than bursts.
    assert len(bursts) >= 2 and 1 <= len(devices) <= len(bursts)
    assert devices[-1] == len(report) - 1 and bursts[0] < devices[0]
    assert all("  burst " not in report[d - 1] for d in devices)
    streamed = [json.loads(line) for line in live("--device", PHONE, "--sessions", "--json")]
    assert len(streamed) == len(devices)
    status, out, _ = _run(capsys, "classify", "-m", model, "--json", "--sessions",
                          "--device", PHONE, SAMPLE)
    assert status == 0
    [whole] = [json.loads(line) for line in out.splitlines()]
    last = streamed[-1]
    assert (last["flows"], last["answered"], last["apps"]) == (
        whole["flows"], whole["answered"], whole["apps"])
