"""``appsight live`` without ``-m``: a gateway can run the agent before any model exists.

Without a model, ``live`` prints what ``flows`` prints for the same input (the per-burst
report, or ``--json`` objects with no ``app`` or ``confidence``), with ``flows``'s default
burst gap. Checked on a pcap stream on standard input (the live path), on a file, and for
the options that only make sense with a model. The interface case is in ``test_live.py``
(``test_live_without_model_equals_flows``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from capture_builder import Conversation, conversation_capture

REPO = Path(__file__).resolve().parent.parent
APPSIGHT = [sys.executable, "-m", "appsight"]


@pytest.fixture(scope="module")
def conv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Conversation]:
    path = tmp_path_factory.mktemp("conv") / "conv.pcap"
    return path, conversation_capture(path)


def run(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*APPSIGHT, *(str(a) for a in args)], input=stdin,
                          capture_output=True, timeout=120, cwd=REPO, check=False)


@pytest.mark.parametrize("extra", [[], ["--json"], ["--json", "--burst-gap", "0.5"],
                                   ["--device", "10.0.0.2", "--burst-gap", "none"]])
def test_live_stdin_without_model_prints_what_flows_prints(
    conv: tuple[Path, Conversation], extra: list[str]
) -> None:
    path, _ = conv
    data = path.read_bytes()
    live = run("live", "-", *extra, stdin=data)
    flows = run("flows", "-", *extra, stdin=data)
    assert live.returncode == 0, live.stderr.decode()
    assert flows.returncode == 0
    assert live.stdout == flows.stdout
    assert live.stdout.strip()
    assert live.stderr == b""


def test_live_stdin_json_has_no_app_column(conv: tuple[Path, Conversation]) -> None:
    path, truth = conv
    done = run("live", "-", "--json", stdin=path.read_bytes())
    rows = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert len(rows) == truth.flows_by_gap[1.0]  # flows's default gap: 1 s
    assert len({r["burst"] for r in rows}) == truth.bursts_by_gap[1.0]
    assert all("app" not in r and "confidence" not in r for r in rows)
    assert {r["capture"] for r in rows} == {"stdin"}


def test_live_report_without_model_has_no_app_column(conv: tuple[Path, Conversation]) -> None:
    path, _ = conv
    done = run("live", "-", stdin=path.read_bytes())
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("== stdin  burst 0 ")
    assert not any(" app " in line or "confidence" in line for line in lines)


def test_live_file_without_model_equals_flows(conv: tuple[Path, Conversation]) -> None:
    path, _ = conv
    live = run("live", path, "--json")
    assert live.returncode == 0, live.stderr.decode()
    assert live.stdout == run("flows", path, "--json").stdout


def test_threshold_without_model_is_one_error_line(conv: tuple[Path, Conversation]) -> None:
    path, _ = conv
    done = run("live", "-", "--threshold", "0.5", stdin=path.read_bytes())
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("appsight: error: --threshold"), lines
    assert "-m" in lines[0]
    assert done.stdout == b""


def test_classify_still_needs_a_model(conv: tuple[Path, Conversation]) -> None:
    path, _ = conv
    done = run("classify", path)
    assert done.returncode == 2
    assert b"-m/--model" in done.stderr


def test_live_help_says_the_model_is_optional() -> None:
    done = run("live", "--help")
    text = " ".join(done.stdout.decode().split())
    assert "Without -m: the per-burst flow report of 'appsight flows' (no app column)" in text
    assert "[-m MODEL]" in text
    assert "--max-flows N" in text and "--max-packets N" in text
