"""The ``appsight`` command as users run it: reports, JSON Lines, feature tables, errors.

In-process runs (``appsight.cli.main`` with capsys) check the output; subprocess runs check
what only a real process shows: exit statuses, stderr as a whole (one line, no traceback)
and behaviour when the reader of our output goes away (``| head``).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from appsight.cli import main
from appsight.features import FEATURE_SETS
from appsight.tables import ID_COLUMNS
from capture_builder import (
    Conversation,
    Packet,
    conversation_capture,
    many_flows_capture,
    write_pcap,
)
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import GRE, Ether

REPO = Path(__file__).resolve().parent.parent
JSON_KEYS = {
    "capture", "burst", "proto", "src", "sport", "dst", "dport", "first_ts", "last_ts",
    "packets_fwd", "packets_bwd", "bytes_fwd", "bytes_bwd",
}
DEVICE, DNS = "10.0.0.2", "10.0.0.53"
# Real captures besides the synthetic ones: a phone call (IPv4 + IPv6, TCP, UDP and ICMP, 37
# bursts at 0.5 s) and a single TLS flow that pauses (5 bursts at 0.5 s).
REAL_CAPTURES = ("ndpi/whatsapp_login_call.pcap", "ndpi/google_ssl.pcap")


@pytest.fixture
def conv(tmp_path: Path) -> tuple[Path, Conversation]:
    path = tmp_path / "conv.pcap"
    return path, conversation_capture(path)


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def json_rows(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def run_process(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appsight", *args], input=stdin, capture_output=True,
        timeout=120, cwd=REPO, check=False,
        text=stdin is None,
    )


def assert_one_error_line(stderr: str) -> None:
    """Bad input: exactly one line, starting 'appsight: error:', never a traceback."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("appsight: error:"), stderr
    assert "Traceback" not in stderr


def real_capture(shared_data: Path, name: str) -> Path:
    path = shared_data / name
    if not path.exists():
        pytest.skip(f"{name} not in the corpus")
    return path


# ------------------------------------------------------------------ flows report
def test_flows_report_has_a_header_per_burst_and_a_line_per_flow(
    capsys: pytest.CaptureFixture[str], conv: tuple[Path, Conversation]
) -> None:
    path, truth = conv
    status, out, err = run_main(capsys, "flows", str(path))
    assert status == 0 and err == ""
    lines = out.splitlines()
    headers = [line for line in lines if line.startswith("== ")]
    flow_lines = [line for line in lines if line.startswith("  ")]
    assert len(headers) == truth.bursts_by_gap[1.0]
    assert len(flow_lines) == truth.flows_by_gap[1.0]
    assert len(headers) + len(flow_lines) == len(lines)
    assert headers[0].startswith("== conv.pcap  burst 0  22:13:20.000000 .. 22:13:21.100000 UTC")
    assert headers[0].endswith("2 flows, 6 packets")
    assert headers[1].endswith("1 flow, 1 packets")
    assert [h.split()[3] for h in headers] == ["0", "1", "2"]
    # The first flow: TCP from the device, both ways, 1.1 s long.
    first = flow_lines[0].split()
    assert first[1:5] == ["tcp", f"{DEVICE}:40000", "<->", "93.184.216.34:443"]
    assert flow_lines[0].rstrip().endswith("1.100 s")
    # The one-way UDP flow is drawn with a one-way arrow (whatever its exact spelling).
    one_way = flow_lines[2].split()
    assert one_way[2] == f"{DEVICE}:1234" and one_way[4] == "198.51.100.7:4321"
    assert one_way[3] != "<->" and one_way[3].endswith(">")


def test_flows_json_has_the_documented_keys_and_counts(
    capsys: pytest.CaptureFixture[str], conv: tuple[Path, Conversation]
) -> None:
    path, truth = conv
    status, out, _ = run_main(capsys, "flows", "--json", str(path))
    assert status == 0
    rows = json_rows(out)
    assert len(rows) == truth.flows_by_gap[1.0]
    assert all(set(row) == JSON_KEYS for row in rows)
    assert sum(r["packets_fwd"] + r["packets_bwd"] for r in rows) == len(truth.packets)
    assert sum(r["bytes_fwd"] + r["bytes_bwd"] for r in rows) == sum(
        len(p.data) for p in truth.packets
    )
    tcp = rows[0]
    assert (tcp["proto"], tcp["src"], tcp["sport"], tcp["dst"], tcp["dport"]) == (
        "tcp", DEVICE, 40000, "93.184.216.34", 443)
    assert (tcp["packets_fwd"], tcp["packets_bwd"]) == (2, 2)
    assert math.isclose(tcp["first_ts"], 1_700_000_000.0)
    assert math.isclose(tcp["last_ts"], 1_700_000_001.1)
    assert [r["burst"] for r in rows] == [0, 0, 1, 2]


@pytest.mark.parametrize("gap", ["none", "0.5", "1", "5"])
def test_burst_gap_sets_the_bursts(
    capsys: pytest.CaptureFixture[str], conv: tuple[Path, Conversation], gap: str
) -> None:
    path, truth = conv
    key = None if gap == "none" else float(gap)
    status, out, _ = run_main(capsys, "flows", "--json", "--burst-gap", gap, str(path))
    assert status == 0
    rows = json_rows(out)
    assert len({r["burst"] for r in rows}) == truth.bursts_by_gap[key]
    assert len(rows) == truth.flows_by_gap[key]
    assert sum(r["packets_fwd"] + r["packets_bwd"] for r in rows) == len(truth.packets)


@pytest.mark.shared_data
@pytest.mark.parametrize("name", REAL_CAPTURES)
def test_burst_gap_on_real_captures(
    capsys: pytest.CaptureFixture[str], shared_data: Path, name: str
) -> None:
    """On real traffic: one burst without a gap, more bursts with 0.5 s than with 5 s, and
    every setting accounts for the same packets."""
    path = real_capture(shared_data, name)
    bursts, packets = {}, {}
    for gap in ("none", "0.5", "5"):
        status, out, _ = run_main(capsys, "flows", "--json", "--burst-gap", gap, str(path))
        assert status == 0
        rows = json_rows(out)
        assert rows and all(set(r) == JSON_KEYS for r in rows)
        bursts[gap] = len({r["burst"] for r in rows})
        packets[gap] = sum(r["packets_fwd"] + r["packets_bwd"] for r in rows)
    assert bursts["none"] == 1
    assert bursts["0.5"] > bursts["5"]
    assert len(set(packets.values())) == 1


def test_device_flips_direction(
    capsys: pytest.CaptureFixture[str], conv: tuple[Path, Conversation]
) -> None:
    """The DNS flow starts with the server's packet; --device makes the device's side
    forward, and leaves flows that already start at the device alone."""
    path, _ = conv
    _, plain, _ = run_main(capsys, "flows", "--json", str(path))
    _, device, _ = run_main(capsys, "flows", "--json", "--device", DEVICE, str(path))
    _, network, _ = run_main(capsys, "flows", "--json", "--device", "10.0.0.0/30", str(path))
    plain_rows, device_rows = json_rows(plain), json_rows(device)
    assert json_rows(network) == device_rows
    dns_plain = next(r for r in plain_rows if r["proto"] == "udp" and r["burst"] == 0)
    dns_device = next(r for r in device_rows if r["proto"] == "udp" and r["burst"] == 0)
    assert (dns_plain["src"], dns_plain["sport"], dns_plain["dst"]) == (DNS, 53, DEVICE)
    assert (dns_device["src"], dns_device["sport"], dns_device["dst"]) == (DEVICE, 5353, DNS)
    assert (dns_device["packets_fwd"], dns_device["bytes_fwd"]) == (
        dns_plain["packets_bwd"], dns_plain["bytes_bwd"])
    assert (dns_device["bytes_bwd"], dns_plain["bytes_fwd"]) == (72, 72)
    others = [(p, d) for p, d in zip(plain_rows, device_rows, strict=True) if p is not dns_plain]
    assert all(p == d for p, d in others)


def test_gzip_capture_and_folder_expansion(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, conv: tuple[Path, Conversation]
) -> None:
    """A folder stands for the captures below it (.pcap.gz included), in name order."""
    path, truth = conv
    folder = tmp_path / "captures"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "b.pcap.gz").write_bytes(gzip.compress(path.read_bytes()))
    (folder / "a.pcap").write_bytes(path.read_bytes())
    (folder / "notes.txt").write_text("not a capture, and not named like one")
    status, out, err = run_main(capsys, "flows", "--json", str(folder))
    assert status == 0, err
    rows = json_rows(out)
    assert [r["capture"] for r in rows] == ["a.pcap"] * 4 + ["b.pcap.gz"] * 4
    strip = [{k: v for k, v in r.items() if k != "capture"} for r in rows]
    assert strip[:4] == strip[4:]
    assert len(rows) == 2 * truth.flows_by_gap[1.0]


def test_no_decap_counts_outer_flows(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--no-decap: three inner TCP flows in one GRE tunnel are one outer GRE flow."""
    frames = [
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="203.0.113.1", dst="203.0.113.2") / GRE()
        / IP(src="10.1.0.1", dst="10.1.0.2") / TCP(sport=1000 + i, dport=443)
        for i in range(3)
    ]
    path = write_pcap(tmp_path / "gre.pcap",
                      [Packet(10**18 + i * 1000, bytes(f)) for i, f in enumerate(frames)])
    _, inner, _ = run_main(capsys, "flows", "--json", str(path))
    _, outer, _ = run_main(capsys, "flows", "--json", "--no-decap", str(path))
    assert [(r["proto"], r["src"], r["sport"]) for r in json_rows(inner)] == [
        ("tcp", "10.1.0.1", 1000 + i) for i in range(3)]
    assert [(r["proto"], r["src"], r["packets_fwd"]) for r in json_rows(outer)] == [
        ("gre", "203.0.113.1", 3)]


# --------------------------------------------------------------------- features
@pytest.mark.parametrize("suffix", ["csv", "parquet"])
@pytest.mark.parametrize("feature_set", list(FEATURE_SETS))
def test_features_tables_load_in_pandas(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, conv: tuple[Path, Conversation],
    suffix: str, feature_set: str,
) -> None:
    """Each feature set, in each format: identifying columns, then the set's columns, one
    row per flow, the same flows as 'flows --json', and finite numbers."""
    path, truth = conv
    out_path = tmp_path / f"x.{suffix}"
    status, out, err = run_main(capsys, "features", "--features", feature_set,
                                "-o", str(out_path), str(path))
    assert status == 0
    assert out == ""
    columns = FEATURE_SETS[feature_set].columns
    assert err.strip() == (
        f"appsight: wrote {truth.flows_by_gap[1.0]} flows x {len(columns)} "
        f"{FEATURE_SETS[feature_set].tag} features to {out_path}"
    )
    table = pd.read_csv(out_path) if suffix == "csv" else pd.read_parquet(out_path)
    assert list(table.columns) == [*ID_COLUMNS, *columns]
    assert len(table) == truth.flows_by_gap[1.0]
    assert np.isfinite(table[list(columns)].to_numpy(dtype=float)).all()
    _, flows_out, _ = run_main(capsys, "flows", "--json", str(path))
    expected = pd.DataFrame(json_rows(flows_out))
    for column in ID_COLUMNS:
        if column in ("first_ts", "last_ts"):
            assert np.allclose(table[column], expected[column])
        else:
            assert table[column].tolist() == expected[column].tolist(), column


def test_feature_values_are_those_of_the_feature_set(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, conv: tuple[Path, Conversation]
) -> None:
    """Spot-check values a person can verify: the first TCP flow's packets are IP lengths
    40 and 140 outgoing, 40 and 940 incoming (SYN, data 100; SYN-ACK, data 900)."""
    path, _ = conv
    out_path = tmp_path / "f.csv"
    assert run_main(capsys, "features", "--features", "appscanner54", "-o", str(out_path),
                    str(path))[0] == 0
    first = pd.read_csv(out_path).iloc[0]
    assert (first["out_min"], first["out_max"], first["out_count"]) == (40, 140, 2)
    assert (first["in_min"], first["in_max"], first["in_count"]) == (40, 940, 2)
    assert first["both_mean"] == pytest.approx((40 + 140 + 40 + 940) / 4)


def test_features_list(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main(capsys, "features", "--list")
    assert status == 0
    for feature_set in FEATURE_SETS.values():
        assert feature_set.tag in out
        assert ", ".join(feature_set.columns) in out
    assert "(default)" in out


def test_features_csv_to_standard_output(
    capsys: pytest.CaptureFixture[str], conv: tuple[Path, Conversation]
) -> None:
    path, truth = conv
    status, out, err = run_main(capsys, "features", "-o", "-", str(path))
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split(",")[: len(ID_COLUMNS)] == list(ID_COLUMNS)
    assert len(lines) == 1 + truth.flows_by_gap[1.0]
    assert "standard output" in err


# ----------------------------------------------------------------- exit statuses
def test_not_a_capture_is_one_error_line_and_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "notes.pcap"
    bad.write_text("these are my notes, not a capture\n")
    result = run_process("flows", str(bad))
    assert result.returncode == 2
    assert_one_error_line(result.stderr)
    assert str(bad) in result.stderr
    assert result.stdout == ""


def test_missing_file_is_status_2(tmp_path: Path) -> None:
    result = run_process("flows", str(tmp_path / "absent.pcap"))
    assert result.returncode == 2
    assert_one_error_line(result.stderr)


def test_folder_with_a_good_and_a_bad_capture(tmp_path: Path) -> None:
    """One bad capture does not stop the others: the good one is reported, status is 2."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    truth = conversation_capture(folder / "a_good.pcap")
    (folder / "b_bad.pcap").write_bytes(b"\x00" * 100)
    result = run_process("flows", "--json", str(folder))
    assert result.returncode == 2
    assert_one_error_line(result.stderr)
    assert "b_bad.pcap" in result.stderr
    rows = json_rows(result.stdout)
    assert {r["capture"] for r in rows} == {"a_good.pcap"}
    assert len(rows) == truth.flows_by_gap[1.0]


def test_bad_capture_first_does_not_hide_the_good_one(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a_bad.pcapng").write_bytes(b"<html>not a capture</html>\n")
    conversation_capture(folder / "b_good.pcap")
    result = run_process("features", "-o", str(tmp_path / "f.csv"), str(folder))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "a_bad.pcapng" in errors[0]
    assert "Traceback" not in result.stderr
    assert len(pd.read_csv(tmp_path / "f.csv")) == 4


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", ""])
def test_bad_burst_gap_is_one_error_line(tmp_path: Path, value: str) -> None:
    path = tmp_path / "c.pcap"
    conversation_capture(path)
    result = run_process("flows", "--burst-gap", value, str(path))
    assert result.returncode == 2
    assert_one_error_line(result.stderr)
    assert "--burst-gap" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("value", ["1e300", "1.7e308"])
def test_huge_burst_gap_is_not_a_crash(tmp_path: Path, value: str) -> None:
    """A gap too large to matter either means 'one burst' or is refused in one line."""
    path = tmp_path / "c.pcap"
    conversation_capture(path)
    result = run_process("flows", "--json", "--burst-gap", value, str(path))
    assert "Traceback" not in result.stderr
    if result.returncode == 0:
        assert len({r["burst"] for r in json_rows(result.stdout)}) == 1
    else:
        assert result.returncode == 2
        assert_one_error_line(result.stderr)


@pytest.mark.parametrize(
    "args",
    [
        ["flows"],
        ["flows", "--device", "not-an-address", "X"],
        ["features", "X"],
        ["features", "--features", "nope", "-o", "f.csv", "X"],
        ["features", "-o", "f.xlsx", "X"],
    ],
    ids=["no-capture", "bad-device", "no-output", "unknown-set", "bad-suffix"],
)
def test_usage_errors_are_one_line_and_status_2(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "c.pcap"
    conversation_capture(path)
    args = [str(path) if a == "X" else str(tmp_path / a) if a.startswith("f.") else a
            for a in args]
    result = run_process(*args)
    assert result.returncode == 2
    assert_one_error_line(result.stderr)


def test_no_command_prints_help_and_status_2() -> None:
    result = run_process()
    assert result.returncode == 2
    assert "flows" in result.stdout and "features" in result.stdout


def test_damaged_capture_is_a_warning_not_an_error(tmp_path: Path) -> None:
    """A capture cut short is still processed: status 0, one warning line naming it."""
    path = tmp_path / "cut.pcap"
    conversation_capture(path)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    result = run_process("flows", "--json", str(path))
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("appsight: warning: cut.pcap:")
    assert "Traceback" not in result.stderr
    assert sum(r["packets_fwd"] + r["packets_bwd"] for r in json_rows(result.stdout)) == 8


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize(
    "args", [["flows"], ["flows", "--json"], ["features", "-o", "-"]],
    ids=["report", "json", "features-csv"],
)
def test_output_to_a_closed_pipe_has_no_traceback(tmp_path: Path, args: list[str],
                                                  unbuffered: bool) -> None:
    """'appsight flows big.pcap | head -1' must end quietly when head goes away, whether
    the broken pipe shows up in a write or only in the final flush."""
    path = many_flows_capture(tmp_path / "many.pcap")
    command = [sys.executable, "-m", "appsight", *args, str(path)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    producer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=REPO, env=env)
    assert producer.stdout is not None and producer.stderr is not None
    first = producer.stdout.readline()
    producer.stdout.close()  # what 'head -1' does after its line
    stderr = producer.stderr.read().decode()
    status = producer.wait(timeout=60)
    assert first.strip()
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr and "Exception ignored" not in stderr
    assert status == 0


def test_shell_pipeline_into_head(tmp_path: Path) -> None:
    """The same through a real shell pipeline, as users type it."""
    path = many_flows_capture(tmp_path / "many.pcap")
    result = subprocess.run(
        f'"{sys.executable}" -m appsight flows "{path}" | head -1', shell=True,
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )
    assert result.stdout.startswith("== many.pcap  burst 0")
    assert len(result.stdout.splitlines()) == 1
    assert result.stderr == ""


@pytest.mark.shared_data
@pytest.mark.parametrize("name", REAL_CAPTURES)
def test_real_capture_through_the_process(shared_data: Path, tmp_path: Path,
                                          name: str) -> None:
    """A real capture end to end in a separate process: text report and JSON agree."""
    path = real_capture(shared_data, name)
    report = run_process("flows", str(path))
    as_json = run_process("flows", "--json", str(path))
    assert report.returncode == as_json.returncode == 0
    rows = json_rows(as_json.stdout)
    flow_lines = [line for line in report.stdout.splitlines() if line.startswith("  ")]
    headers = [line for line in report.stdout.splitlines() if line.startswith("== ")]
    assert len(flow_lines) == len(rows)
    assert len(headers) == len({r["burst"] for r in rows})
    header_packets = sum(int(h.rsplit(" ", 2)[1]) for h in headers)
    assert header_packets == sum(r["packets_fwd"] + r["packets_bwd"] for r in rows)
