"""The real-app benchmark's own parts: FG-Net's JSON sessions to pcaps, the time split, the votes.

The converter is run on a small archive in FG-Net's layout, made here with tarfile and lzma,
and its pcaps are read back by appsight itself and by scapy (IPv4 checksums).
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import fgnet_pcaps  # noqa: E402
from appsight import Flows  # noqa: E402
from appsight.evaluation import FoldResult, Predictions  # noqa: E402
from appsight.features import FEATURE_SETS  # noqa: E402
from appsight.training import Dataset  # noqa: E402

# Two flows of one session: the second starts between the first one's packets.
SESSION = [
    {"packet_length": [100, -1400, -1400, 50], "arrive_time_delta": [0, 0.5, 0.001, 0.2],
     "start_timestamp": 1592637446.25, "end_timestamp": 0, "src_port": 40000},
    {"packet_length": [-300, 20], "arrive_time_delta": [0, 0.1],
     "start_timestamp": 1592637446.5, "end_timestamp": 0, "src_port": 40001},
]


def _archive(path: Path, files: dict[str, object]) -> Path:
    with tarfile.open(path, "w:xz") as tar:
        for name, content in files.items():
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "fgnet"
    folder.mkdir(parents=True)
    _archive(folder / "D1.tar.xz", {
        "D1/com.example.chat/1.0/1592637446_clear.pcap.json": SESSION,
        "D1/com.example.maps/2.3/1592640000_clear.pcap.json": SESSION[:1],
    })
    return tmp_path / "data"


def test_sessions_become_pcaps_that_appsight_reads_with_true_sizes(data: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "pcaps"
    done = fgnet_pcaps.convert(data, out, progress=False)
    assert (done.sessions, done.apps, done.flows, done.packets) == (2, 2, 3, 10)
    chat = out / "com.example.chat" / "1592637446.pcap"
    assert sorted(p.name for p in out.iterdir()) == ["com.example.chat", "com.example.maps",
                                                     "manifest.json"]
    records = list(Flows(str(chat), features="payload38", burst_gap=None))
    # A flow's direction is its first packet's: the second flow starts with the server.
    by_port = {int(r["sport"]): r for r in records}
    assert set(by_port) == {40000, 443}
    assert by_port[443]["dport"] == 40001
    first = by_port[40000]
    assert (first["src"], first["dst"], first["dport"]) == ("10.0.0.2", "198.18.0.1", 443)
    assert (first["packets_fwd"], first["packets_bwd"]) == (2, 2)
    # Payload sizes are the listed lengths, although only the headers were kept.
    assert (first["out_data_max"], first["in_data_max"]) == (100, 1400)
    assert [first[f"data{i}_signed"] for i in range(1, 5)] == [100, -1400, -1400, 50]
    assert first["first_ts"] == pytest.approx(1592637446.25)
    assert first["last_ts"] == pytest.approx(1592637446.25 + 0.701)


def test_pcaps_are_valid_ipv4_in_time_order(data: Path, tmp_path: Path) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap

    out = tmp_path / "pcaps"
    fgnet_pcaps.convert(data, out, progress=False)
    packets = rdpcap(str(out / "com.example.chat" / "1592637446.pcap"))
    times = [float(p.time) for p in packets]
    assert times == sorted(times)
    assert [p[TCP].sport if p[IP].src == "10.0.0.2" else -p[TCP].dport for p in packets] == [
        40000, -40001, 40001, -40000, -40000, 40000]
    for packet in packets:
        claimed = packet[IP].chksum
        del packet[IP].chksum
        assert IP(bytes(packet[IP])).chksum == claimed
    # Sequence numbers advance by the payload, per direction.
    incoming = [p[TCP].seq for p in packets if p[IP].dst == "10.0.0.2" and p[TCP].dport == 40000]
    assert incoming == [1, 1401]


def test_a_finished_conversion_is_reused_and_a_changed_archive_is_not(data: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "pcaps"
    fgnet_pcaps.convert(data, out, progress=False)
    pcap = out / "com.example.maps" / "1592640000.pcap"
    pcap.write_bytes(b"kept")
    fgnet_pcaps.convert(data, out, progress=False)
    assert pcap.read_bytes() == b"kept"
    archive = data / fgnet_pcaps.ARCHIVE
    _archive(archive, {"D1/com.example.maps/2.3/1592640000_clear.pcap.json": SESSION})
    assert fgnet_pcaps.convert(data, out, progress=False).packets == 6
    assert pcap.read_bytes() != b"kept"


def test_unusable_flows_are_skipped_and_counted() -> None:
    broken = [*SESSION, {"packet_length": [1, 2], "arrive_time_delta": [0]},
              {"packet_length": [5], "arrive_time_delta": [0], "start_timestamp": 1.0,
               "src_port": 70000}, "not a flow"]
    records, skipped = fgnet_pcaps.session_records(broken)
    assert (len(records), skipped) == (6, 3)


@pytest.mark.parametrize("files, message", [
    ({"D1/app/1.0/notatime_clear.pcap.json": SESSION}, "unexpected session name"),
    ({"elsewhere/app/1.0/1_clear.pcap.json": SESSION}, "expected D1/<app>/<version>/<file>"),
    ({"D1/app/1.0/1_clear.pcap.json": {"not": "a list"}}, "JSON list of flows"),
    ({}, "no session files inside"),
])
def test_archives_of_another_shape_are_refused(tmp_path: Path, files: dict,
                                               message: str) -> None:
    (tmp_path / "fgnet").mkdir()
    _archive(tmp_path / "fgnet" / "D1.tar.xz", files)
    with pytest.raises(fgnet_pcaps.ConversionError, match=message):
        fgnet_pcaps.convert(tmp_path, tmp_path / "out", progress=False)


def test_a_missing_archive_is_one_line_and_exit_2(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert fgnet_pcaps.main(["--data", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    assert "D1.tar.xz: not found" in capsys.readouterr().err


def test_time_split_trains_on_each_apps_earliest_sessions() -> None:
    import bench_apps

    sessions = [("a", t, f"a{t}") for t in (5, 1, 4, 2, 3, 9, 8, 7, 6, 10)]
    sessions += [("b", t, f"b{t}") for t in (30, 10, 20)]
    train = bench_apps.time_split(sessions, 0.7)
    assert train == {"a1", "a2", "a3", "a4", "a5", "a6", "a7", "b10", "b20"}
    # An app with two sessions still has one on each side.
    assert bench_apps.time_split([("c", 1, "c1"), ("c", 2, "c2")], 0.9) == {"c1"}


def _test_side(truth: np.ndarray, sessions: list[str], times: list[float]) -> Dataset:
    records = [{"first_ts": t, "last_ts": t + 1.0} for t in times]
    return Dataset(np.zeros((len(truth), 1)), truth, np.array(sessions, dtype=object),
                   FEATURE_SETS["seed14"], records=records)


def test_session_votes_name_a_session_by_its_flows() -> None:
    import bench_apps

    classes = ["chat", "maps"]
    truth = np.array(["chat"] * 3 + ["maps"] * 2, dtype=object)
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.45, 0.55],   # s1: one sure right, two unsure
                      [0.3, 0.7], [0.2, 0.8]])                # s2: both right
    test = _test_side(truth, ["s1"] * 3 + ["s2"] * 2, [0.0, 3.0, 12.0, 0.0, 40.0])
    predictions = Predictions(classes, truth, proba, np.full(5, 0.65),
                              [FoldResult(1, 10, 5, ["s1", "s2"], 0.65, 0.0)])
    votes = bench_apps.session_votes(predictions, test)
    # Mean probability: s1 is 0.583 chat, right. Verdict: s1's only answered flow says chat,
    # s2's two say maps.
    assert votes == {"sessions": 2, "mean_probability": 100.0, "verdict": 100.0,
                     "verdict_unknown": 0.0}
    unsure = Predictions(classes, truth, proba, np.full(5, 0.95), predictions.folds)
    votes = bench_apps.session_votes(unsure, test)
    assert (votes["verdict"], votes["verdict_unknown"]) == (0.0, 100.0)
    # How soon: s2's second flow ends 41 s in, so before 30 s only its first flow counts.
    soon = bench_apps.how_soon(predictions, test)
    assert soon["2"] == 100.0 and list(soon) == [f"{t:g}" for t in bench_apps.SOON_SECONDS]
    early = Predictions(classes, truth, np.array([[0.9, 0.1], [0.4, 0.6], [0.45, 0.55],
                                                  [0.9, 0.1], [0.2, 0.8]]),
                        np.full(5, 0.65), predictions.folds)
    soon = bench_apps.how_soon(early, test)
    assert (soon["30"], soon["2"]) == (50.0, 50.0)  # s2's early flow says chat
