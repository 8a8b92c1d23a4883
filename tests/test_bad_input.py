"""Careless input to the commands: one line `appsight: error: ...` and exit 2, never a traceback.

Each case is run as a user runs it, in a real process (so that a closed standard input is
really closed), and the check is on the exit status and the whole of standard error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample.pcap"
HEADER = "capture,proto,src,sport,dst,dport,label\n"


def appsight(*args: object, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appsight", *map(str, args)], stdin=stdin,
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)


def assert_one_line_error(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert message in done.stderr.strip().splitlines()[-1], done.stderr


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize("value, message", [
    ("-1", "-1 is not between 0 and 4294967295"),
    ("4294967296", "4294967296 is not between 0 and 4294967295"),
    ("1.5", "'1.5' is not a whole number"),
])
def test_seeds_scikit_learn_refuses_are_refused_first(tmp_path: Path, command: str, value: str,
                                                       message: str) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(HEADER + "sample.pcap,udp,10.77.0.2,47604,10.77.0.1,5000,a\n")
    extra = ["-o", tmp_path / "m"] if command == "train" else []
    done = appsight(command, "--labels", labels, SAMPLE, *extra, "--seed", value)
    assert_one_line_error(done, f"argument --seed: {message}")


def test_a_closed_standard_input_is_an_error_not_a_crash() -> None:
    """`appsight flows - <&-`: the shell starts the process with descriptor 0 closed, so
    Python has no sys.stdin at all."""
    for command in (["flows", "-"], ["live", "-"]):
        done = subprocess.run([sys.executable, "-m", "appsight", *command],
                              preexec_fn=lambda: os.close(0), capture_output=True,
                              text=True, timeout=60, check=False, cwd=REPO)
        assert_one_line_error(done, "-: standard input is closed")


def test_a_labels_field_past_the_csv_limit_names_the_file_and_line(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text(HEADER + "sample.pcap,tcp,10.77.0.2,1,10.77.0.1,2," + "x" * 140_000 + "\n")
    done = appsight("train", "--labels", labels, SAMPLE, "-o", tmp_path / "m")
    assert_one_line_error(done, f"{labels}, line 2: not a labels CSV (field larger than")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("content, message", [
    (b"file_a\tfile_b\n" + b"a.pcap\t" + b"y" * 140_000 + b"\n", "line 2: not a groups file"),
    (b"file_a\tfile_b\n\xff\xfe.pcap\tb.pcap\n", "not a UTF-8 text file"),
])
def test_a_broken_groups_file_is_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    groups = tmp_path / "groups.tsv"
    groups.write_bytes(content)
    labels = tmp_path / "labels.csv"
    labels.write_text(HEADER + "sample.pcap,udp,10.77.0.2,47604,10.77.0.1,5000,a\n")
    done = appsight("evaluate", "--labels", labels, SAMPLE, "--groups-file", groups)
    assert_one_line_error(done, message)


NDPI_TAIL = " [proto: 7/HTTP][Confidence: DPI][cat: Web/5][1 pkts/60 bytes <-> 1 pkts/60 bytes]\n"


@pytest.mark.parametrize("flow", [
    "TCP [" + ":" * 12_000 + "]:1 <-> [::1]:2",     # each '::' was a guess: quadratic
    "TCP 10.0.0.1:70000 <-> 10.0.0.2:80",           # no such port
    "UDP [2001:db8::1]:53 <-> [2001:db8::2]:65536",
])
def test_ndpi_lines_no_ndpireader_could_print_are_not_labels(tmp_path: Path, flow: str) -> None:
    listing = tmp_path / "x.out"
    listing.write_text(f"\t1\t{flow}{NDPI_TAIL}\t2\tTCP 10.0.0.1:1000 <-> 10.0.0.2:80{NDPI_TAIL}")
    done = appsight("labels", "from-ndpi", listing)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["x,tcp,10.0.0.1,1000,10.0.0.2,80,HTTP"]
    assert "1 labelled flows from 1 listings" in done.stderr


def test_an_overlong_address_is_refused_before_any_guess() -> None:
    from appsight.errors import AppsightError
    from appsight.ndpi_out import MAX_ADDRESS_TEXT, canonical_address

    assert canonical_address("2600:1901::7a0b::") == "2600:1901:0:7a0b::"
    with pytest.raises(AppsightError, match="cannot read the address"):
        canonical_address("1::" * 1000)
    assert len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255") == MAX_ADDRESS_TEXT


FULL = Path("/dev/full")  # every write fails with ENOSPC, as on a full disk
needs_full = pytest.mark.skipif(not FULL.is_char_device(), reason="no /dev/full")


@needs_full
@pytest.mark.parametrize("args", [["flows"], ["flows", "--json"]])
def test_a_full_disk_on_standard_output_is_one_line(args: list[str]) -> None:
    with open(FULL, "w") as full:
        done = subprocess.run([sys.executable, "-m", "appsight", *args, str(SAMPLE)],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
                              check=False, cwd=REPO)
    assert_one_line_error(done, "cannot write the output: No space left on device")


@needs_full
def test_a_full_disk_on_an_output_file_is_one_line_and_the_device_stays(tmp_path: Path) -> None:
    """-o /dev/full is written in place (a device is not a file to replace): the error is
    one line, and the device node is still there afterwards."""
    labels = tmp_path / "labels.csv"
    labels.write_text(HEADER + "sample.pcap,udp,10.77.0.2,47604,10.77.0.1,5000,a\n"
                      "sample.pcap,tcp,10.77.0.2,38228,10.77.0.1,443,b\n")
    for args in (["features", SAMPLE, "-o", FULL],
                 ["train", "--labels", labels, SAMPLE, "-o", FULL, "--trees", "3"]):
        done = appsight(*args)
        assert_one_line_error(done, "/dev/full: cannot write")
        assert FULL.is_char_device()


@needs_full
def test_the_live_agent_outlives_a_full_json_log() -> None:
    """The gateway's agent on a full /var/log: it says once that logging stopped and goes on
    reporting every flow (it used to crash, and crash again when restarted)."""
    with open(SAMPLE, "rb") as stream:
        done = subprocess.run([sys.executable, "-m", "appsight", "live", "-", "--json",
                               "--json-log", str(FULL)], stdin=stream, capture_output=True,
                              text=True, timeout=60, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("the JSON log stopped (No space left on device)") == 1
    flows = subprocess.run([sys.executable, "-m", "appsight", "flows", "--json", str(SAMPLE)],
                           capture_output=True, text=True, timeout=60, check=True, cwd=REPO)
    assert len(done.stdout.splitlines()) == len(flows.stdout.splitlines()) > 0
