"""Outputs a failed run cannot destroy and a planted link cannot redirect (appsight.outputs).

Each case runs the command as a user would, in a real process, against real files and
symbolic links in a temporary folder.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from appsight.errors import UsageError
from appsight.outputs import AtomicFile, refuse_input_as_output

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample.pcap"
NDPI_LINE = ("\t1\tTCP 10.0.0.2:40000 <-> 93.184.216.34:443 [proto: 91.126/TLS.Google]"
             "[IP: 126/Google][Encrypted][Confidence: DPI][cat: Web/5][2 pkts/100 bytes]\n")


def appsight(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appsight", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_an_atomic_file_replaces_the_target_only_on_commit(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), AtomicFile(target) as output:
        output.handle.write("half")
        raise RuntimeError("the run failed")
    assert target.read_text() == "old\n" and leftovers(tmp_path) == []
    with AtomicFile(target) as output:
        output.handle.write("new\n")
        assert target.read_text() == "old\n"  # not yet
    assert target.read_text() == "new\n" and leftovers(tmp_path) == []
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("system file\n")
    link = tmp_path / "model.skops"
    link.symlink_to(victim)
    labels = tmp_path / "labels.csv"
    labels.write_text("capture,proto,src,sport,dst,dport,label\n"
                      "sample.pcap,tcp,10.77.0.2,38228,10.77.0.1,443,web\n"
                      "sample.pcap,udp,10.77.0.2,47604,10.77.0.1,5000,udp-app\n")
    done = appsight("train", "--labels", labels, SAMPLE, "-o", link, "--trees", "5")
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "system file\n"
    assert not link.is_symlink() and link.read_bytes().startswith(b"APPSIGHT")


def test_features_that_read_nothing_leave_the_old_table(tmp_path: Path) -> None:
    table = tmp_path / "features.csv"
    table.write_text("yesterday's table\n")
    not_a_capture = tmp_path / "notes.pcap"
    not_a_capture.write_text("not a capture\n")
    done = appsight("features", not_a_capture, "-o", table)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert table.read_text() == "yesterday's table\n" and leftovers(tmp_path) == []
    assert "wrote" not in done.stderr  # it says what happened: nothing written, file kept
    assert done.stderr.strip().splitlines()[-1] == (
        f"appsight: nothing written: no capture could be read ({table} is as it was)")
    done = appsight("features", SAMPLE, "-o", table)
    assert done.returncode == 0, done.stderr
    assert table.read_text().startswith("capture,burst,")


def test_features_refuse_to_overwrite_their_input(tmp_path: Path) -> None:
    capture = tmp_path / "s.pcap"
    capture.write_bytes(SAMPLE.read_bytes())
    done = appsight("features", capture, "-o", capture)
    assert done.returncode == 2
    assert f"{capture}: is also an input" in done.stderr
    assert capture.read_bytes() == SAMPLE.read_bytes()


def test_labels_from_ndpi_refuse_to_overwrite_their_listing(tmp_path: Path) -> None:
    listing = tmp_path / "x.out"
    listing.write_text(NDPI_LINE)
    done = appsight("labels", "from-ndpi", listing, "-o", listing)
    assert done.returncode == 2 and "is also an input" in done.stderr
    assert listing.read_text() == NDPI_LINE


def test_labels_from_sockets_that_fail_leave_the_old_labels(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("capture,proto,src,sport,dst,dport,label\n")
    done = appsight("labels", "from-sockets", "--sockets", tmp_path / "missing.txt",
                    "--packages", tmp_path / "missing-too.txt", SAMPLE, "-o", labels)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert labels.read_text() == "capture,proto,src,sport,dst,dport,label\n"
    assert leftovers(tmp_path) == []


def test_a_json_log_that_is_a_link_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0\n")
    log = tmp_path / "flows.jsonl"
    log.symlink_to(victim)
    with open(SAMPLE, "rb") as stream:
        done = subprocess.run([sys.executable, "-m", "appsight", "live", "-", "--json-log",
                               str(log)], stdin=stream, capture_output=True, text=True,
                              timeout=120, check=False, cwd=REPO)
    assert done.returncode == 2
    assert f"{log}: cannot write the JSON log: is a symbolic link" in done.stderr
    assert victim.read_text() == "root:x:0:0\n"


def test_refuse_input_as_output_sees_through_other_spellings(tmp_path: Path) -> None:
    data = tmp_path / "a.pcap"
    data.write_bytes(b"x")
    (tmp_path / "link.pcap").symlink_to(data)
    for spelling in (data, tmp_path / "." / "a.pcap", tmp_path / "link.pcap"):
        with pytest.raises(UsageError, match="is also an input"):
            refuse_input_as_output(spelling, [data])
    refuse_input_as_output(tmp_path / "new.csv", [data])  # does not exist yet: fine
    refuse_input_as_output("-", [data])


def test_live_write_pcap_starts_a_new_file_when_the_link_type_changes(tmp_path: Path) -> None:
    """A pcapng stream with an Ethernet and a raw-IP interface: each kept frame lands in a
    file of its own link type (raw IP under an Ethernet header would be unreadable)."""
    from capture_builder import DLT_EN10MB, DLT_RAW, PcapngBuilder
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import rdpcap

    ip = [bytes(IP(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=4000 + i, dport=53) / b"q")
          for i in range(4)]
    builder = PcapngBuilder().section()
    ether, raw = builder.interface(DLT_EN10MB, tsresol=9), builder.interface(DLT_RAW, tsresol=9)
    second = 1_600_000_000 * 10**9
    builder.enhanced(ether, second, bytes(Ether() / IP(ip[0])))
    builder.enhanced(raw, second + 10**6, ip[1])
    builder.enhanced(raw, second + 2 * 10**6, ip[2])
    builder.enhanced(ether, second + 3 * 10**6, bytes(Ether() / IP(ip[3])))
    stream = builder.write(tmp_path / "mixed.pcapng")
    kept = tmp_path / "kept"
    with open(stream, "rb") as data:
        done = subprocess.run([sys.executable, "-m", "appsight", "live", "-", "--write-pcap",
                               str(kept)], stdin=data, capture_output=True, text=True,
                              timeout=120, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    files = sorted(kept.iterdir())
    headers = [int.from_bytes(f.read_bytes()[20:24], "little") for f in files]
    assert headers == [DLT_EN10MB, DLT_RAW, DLT_EN10MB]
    sports = [[int(p[UDP].sport) for p in rdpcap(str(f))] for f in files]
    assert sports == [[4000], [4001, 4002], [4003]]
