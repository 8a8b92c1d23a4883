"""Flow labels: labels files, nDPI listings turned into labels, and their match with our flows.

A label that does not find its flow is silently lost training data, and a label that finds the
wrong flow is poison; so besides validating the labels file (every error names the file and
the line), these tests check that the labels derived from nDPI's listings land on appsight's
own flows of the same captures, which needs nDPI's odd IPv6 spellings read back correctly.
Tests marked by the ``shared_data`` fixture use the third-party corpus and skip without it.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from appsight.cli import main
from appsight.errors import AppsightError, UsageError
from appsight.labels import (
    BACKGROUND_PORTS,
    LABEL_COLUMNS,
    LabelTable,
    flow_key,
    is_background,
    rows_from_ndpi,
)
from appsight.ndpi_out import canonical_address, read_ndpi_out
from appsight.pipeline import PipelineOptions, iter_flow_blocks
from appsight.report import flow_records

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample.pcap"
WHOLE_CAPTURE = PipelineOptions(burst_gap=None)  # nDPI has no bursts: one flow per 5-tuple
PHONE, SERVER = "10.77.0.2", "10.77.0.1"


def write_labels(path: Path, rows: list[list[str]], header: tuple[str, ...] = LABEL_COLUMNS,
                 ) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def usage_error(path: Path) -> str:
    """The message of the UsageError reading ``path`` raises; it always names the file."""
    with pytest.raises(UsageError) as info:
        LabelTable.read_csv(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def sample_records() -> list[tuple[object, dict[str, object]]]:
    """(block, record) for every flow of the sample capture, one burst for the whole file."""
    return [(block, record) for block in iter_flow_blocks(SAMPLE, WHOLE_CAPTURE)
            for record in flow_records(block)]


# --------------------------------------------------------------------------- read_csv
GOOD_ROW = ["sample.pcap", "tcp", PHONE, "38228", SERVER, "443", "web"]


def test_read_csv_reads_a_good_file(tmp_path: Path) -> None:
    path = write_labels(tmp_path / "l.csv", [
        GOOD_ROW,
        ["sample.pcap", "udp", PHONE, "47604", SERVER, "5000", " udp-app "],
        GOOD_ROW,  # the same flow with the same label twice is harmless
    ])
    table = LabelTable.read_csv(path)
    assert table.captures() == {"sample.pcap"}
    assert sorted(table.labels.values()) == ["udp-app", "web"]  # label text is stripped


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = write_labels(tmp_path / "l.csv", [["sample.pcap", "tcp", PHONE, "1", SERVER]],
                        header=("capture", "proto", "src", "sport", "dst"))
    message = usage_error(path)
    assert "not a labels file" in message and "missing dport, label" in message
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "missing" in usage_error(empty)


BAD_ROWS = {
    "address": (["sample.pcap", "tcp", "10.77.0.300", "1", SERVER, "443", "web"], "10.77.0.300"),
    "ipv6-address": (["sample.pcap", "tcp", "2001:db8:::1", "1", SERVER, "443", "web"],
                     "2001:db8:::1"),
    "port-text": (["sample.pcap", "tcp", PHONE, "https", SERVER, "443", "web"], "https"),
    "port-empty": (["sample.pcap", "tcp", PHONE, "", SERVER, "443", "web"], "line 3"),
    "proto": (["sample.pcap", "tcpx", PHONE, "1", SERVER, "443", "web"],
              "unknown protocol 'tcpx'"),
    "label-empty": (["sample.pcap", "tcp", PHONE, "1", SERVER, "443", "  "], "empty"),
    "capture-empty": (["", "tcp", PHONE, "1", SERVER, "443", "web"], "empty"),
    "short-row": (["sample.pcap", "tcp", PHONE], "line 3"),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_bad_row_names_file_and_line(tmp_path: Path, case: str) -> None:
    """The second data row (line 3 of the file) is bad: the message says so."""
    row, fragment = BAD_ROWS[case]
    path = write_labels(tmp_path / "l.csv", [GOOD_ROW, row])
    message = usage_error(path)
    assert f"{path}, line 3:" in message
    assert fragment in message


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_port_out_of_range_is_refused(tmp_path: Path, port: str) -> None:
    path = write_labels(tmp_path / "l.csv", [
        GOOD_ROW, ["sample.pcap", "tcp", PHONE, port, SERVER, "443", "web"],
    ])
    assert f"{path}, line 3:" in usage_error(path)


def test_conflicting_label_names_both_and_the_line(tmp_path: Path) -> None:
    """The same flow written the other way round with another label is a conflict."""
    path = write_labels(tmp_path / "l.csv", [
        GOOD_ROW,
        ["sample.pcap", "udp", PHONE, "1", SERVER, "2", "x"],
        ["other/dir/sample.pcap", "6", SERVER, "443", PHONE, "38228", "video"],
    ])
    message = usage_error(path)
    assert f"{path}, line 4:" in message
    assert "'web'" in message and "'video'" in message


def test_unreadable_labels_file(tmp_path: Path) -> None:
    assert "cannot read labels" in usage_error(tmp_path / "absent.csv")


def test_labels_file_not_in_utf8_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        ",".join(LABEL_COLUMNS).encode() + b"\nsample.pcap,tcp,10.77.0.2,1,10.77.0.1,443,Caf\xe9\n"
    )
    usage_error(path)


def test_labels_file_with_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(
        b"\xef\xbb\xbf" + ",".join(LABEL_COLUMNS).encode() + b"\n" + ",".join(GOOD_ROW).encode()
        + b"\n"
    )
    assert list(LabelTable.read_csv(path).labels.values()) == ["web"]


# --------------------------------------------------------------------------- matching
def test_matching_ignores_direction_and_protocol_spelling(tmp_path: Path) -> None:
    """Rows written server-first, with protocol numbers or capitals, path-qualified capture
    names and long IPv6 spellings all find the sample capture's flows."""
    path = write_labels(tmp_path / "l.csv", [
        ["sample.pcap", "tcp", PHONE, "38228", SERVER, "443", "web"],  # as the flow goes
        ["sample.pcap", "6", SERVER, "38240", PHONE, "38240", "decoy"],  # wrong ports: no match
        ["captures/sample.pcap", "TCP", SERVER, "443", PHONE, "38240", "web2"],  # reversed
        ["sample.pcap", "17", SERVER, "5000", PHONE, "47604", "udp-app"],  # number, reversed
        ["sample.pcap", "udp", PHONE, "46079", SERVER, "5000", "udp-app"],
        ["sample.pcap", "58", "FF02:0:0:0:0:0:0:16", "0", "FE80:0:0:0:B88F:75FF:FE1D:8BF8", "0",
         "housekeeping"],
        ["other.pcap", "tcp", PHONE, "38250", SERVER, "443", "elsewhere"],  # another capture
        ["sample.pcap", "udp", PHONE, "38250", SERVER, "443", "wrong-proto"],
    ])
    table = LabelTable.read_csv(path)
    found: dict[tuple[object, ...], str | None] = {}
    for block in iter_flow_blocks(SAMPLE, WHOLE_CAPTURE):
        records = list(flow_records(block))
        for record, label in zip(records, table.label_block(block, records), strict=True):
            key = tuple(record[k] for k in ("proto", "src", "sport", "dst", "dport"))
            found[key] = label
    assert found[("tcp", PHONE, 38228, SERVER, 443)] == "web"
    assert found[("tcp", PHONE, 38240, SERVER, 443)] == "web2"
    assert found[("udp", PHONE, 47604, SERVER, 5000)] == "udp-app"
    assert found[("udp", PHONE, 46079, SERVER, 5000)] == "udp-app"
    assert found[("tcp", PHONE, 38250, SERVER, 443)] is None
    assert found[("tcp", PHONE, 32992, SERVER, 443)] is None
    assert found[("icmpv6", "fe80::b88f:75ff:fe1d:8bf8", 0, "ff02::16", 0)] == "housekeeping"
    assert Counter(found.values()) == {
        None: len(found) - 5, "web": 1, "web2": 1, "udp-app": 2, "housekeeping": 1,
    }


def test_flow_key_is_direction_free() -> None:
    a, b = ("10.0.0.1", 1), ("10.0.0.2", 2)
    assert flow_key("c", "tcp", a, b) == flow_key("c", "tcp", b, a)
    assert flow_key("c", "tcp", a, b) != flow_key("c", "udp", a, b)
    assert flow_key("c", "tcp", a, b) != flow_key("d", "tcp", a, b)


def test_is_background_by_either_port() -> None:
    """DNS and friends are background whichever side the well-known port is on."""
    def record(sport: int, dport: int) -> dict[str, object]:
        return {"sport": sport, "dport": dport}

    assert is_background(record(53000, 53)) and is_background(record(53, 53000))
    assert is_background(record(5353, 5353)) and is_background(record(68, 67))
    assert not is_background(record(40000, 443))
    assert not is_background(record(40000, 5000))
    assert {53, 67, 123, 5353} <= BACKGROUND_PORTS


# --------------------------------------------------------------------------- nDPI addresses
@pytest.mark.parametrize(("printed", "canonical"), [
    ("2600:1901::7a0b::", "2600:1901:0:7a0b::"),
    ("2a03:2880:1010:3f20:face:b00c::25de", "2a03:2880:1010:3f20:face:b00c:0:25de"),
    ("2a03:2880:f030:13:face:b00c::3", "2a03:2880:f030:13:face:b00c:0:3"),
    ("192.168.1.7", "192.168.1.7"),
    ("10.0.0.1", "10.0.0.1"),
    ("2a00:d40:1:3:7aac:c0ff:fea7:d4c", "2a00:d40:1:3:7aac:c0ff:fea7:d4c"),
    ("ff02::1", "ff02::1"),
    ("fe80::1", "fe80::1"),
    ("::1", "::1"),
    ("2001:db8::", "2001:db8::"),
])
def test_canonical_address(printed: str, canonical: str) -> None:
    assert canonical_address(printed) == canonical


def test_unreadable_address_is_an_appsight_error() -> None:
    with pytest.raises(AppsightError, match="cannot read the address"):
        canonical_address("2001:::1::2::")


# --------------------------------------------------------------------------- listings
LISTING = "\n".join([
    "Detected protocols:",
    "\t1\tUDP 192.168.1.7:56074 <-> 216.58.198.33:443 [proto: 188.124/QUIC.YouTube]"
    "[Confidence: DPI][113 pkts/16111 bytes <-> 145 pkts/162384 bytes]",
    "\t2\tTCP [2a01:cb01::f629]:47032 <-> [2600:1901::7a0b::]:443 [proto: 91/TLS]"
    "[Confidence: DPI][20 pkts/3545 bytes <-> 21 pkts/7861 bytes]",
    "\t3\tTCP 119.235.235.84:443 <-> 192.168.5.16:53406 [proto: 91/TLS]"
    "[Confidence: Match by port][13 pkts/6269 bytes <-> 10 pkts/1165 bytes]",
    "\t4\tUDP 10.28.168.252:1985 -> 224.0.0.2:1985 [VLAN: 10][proto: 282/HSRP]"
    "[Confidence: DPI (cache)][1 pkts/62 bytes -> 0 pkts/0 bytes]",
    "\t5\tPGM 10.0.0.1:0 -> 10.0.0.2:0 [proto: 999/Odd][Confidence: DPI]"
    "[1 pkts/62 bytes -> 0 pkts/0 bytes]",
    "\t6\t118 10.0.0.1:0 -> 10.0.0.2:0 [proto: 998/Raw][Confidence: DPI]"
    "[1 pkts/62 bytes -> 0 pkts/0 bytes]",
    "",
    "Undetected flows:",
    "\t1\tUDP 192.168.10.110:60480 -> 255.255.255.255:62976 [proto: 0/Unknown]"
    "[Confidence: Unknown][5 pkts/1795 bytes -> 0 pkts/0 bytes]",
    "\t2\tUDP 192.168.10.111:60480 -> 255.255.255.255:62976 [proto: 5/DNS]"
    "[Confidence: Match by port][5 pkts/1795 bytes -> 0 pkts/0 bytes]",
]) + "\n"


@pytest.fixture
def listing(tmp_path: Path) -> Path:
    path = tmp_path / "capture.pcapng.out"
    path.write_text(LISTING)
    return path


def test_rows_from_handmade_listing(listing: Path) -> None:
    """DPI verdicts are kept, guesses only on request, unknown and undetected never."""
    rows = list(rows_from_ndpi([listing]))
    assert rows == [
        ("capture.pcapng", "udp", "192.168.1.7", "56074", "216.58.198.33", "443", "YouTube"),
        ("capture.pcapng", "tcp", "2a01:cb01::f629", "47032", "2600:1901:0:7a0b::", "443",
         "TLS"),
        ("capture.pcapng", "udp", "10.28.168.252", "1985", "224.0.0.2", "1985", "HSRP"),
        ("capture.pcapng", "118", "10.0.0.1", "0", "10.0.0.2", "0", "Raw"),
    ]
    guessed = list(rows_from_ndpi([listing], guesses=True))
    assert guessed[:2] == rows[:2]
    assert ("capture.pcapng", "tcp", "119.235.235.84", "443", "192.168.5.16", "53406",
            "TLS") in guessed
    assert len(guessed) == len(rows) + 1  # the undetected DNS guess stays out
    masters = [row[-1] for row in rows_from_ndpi([listing], label="master")]
    assert masters == ["QUIC", "TLS", "HSRP", "Raw"]


def test_rows_from_listing_refuse_unknown_label_mode(listing: Path) -> None:
    with pytest.raises(UsageError, match="--label must be app or master"):
        list(rows_from_ndpi([listing], label="category"))


def test_labels_from_ndpi_cli_without_corpus(
    listing: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "labels.csv"
    assert main(["labels", "from-ndpi", str(listing.parent), "-o", str(out)]) == 0
    assert capsys.readouterr().err.strip() == "appsight: 4 labelled flows from 1 listings"
    with open(out, newline="") as handle:
        lines = list(csv.reader(handle))
    assert tuple(lines[0]) == LABEL_COLUMNS
    assert [tuple(line) for line in lines[1:]] == list(rows_from_ndpi([listing]))
    assert LabelTable.read_csv(out).captures() == {"capture.pcapng"}


def test_labels_from_ndpi_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["labels", "from-ndpi", str(tmp_path / "absent")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["labels", "from-ndpi", str(tmp_path)]) == 2
    assert "no ndpiReader .out listings found" in capsys.readouterr().err


# --------------------------------------------------------------------------- the corpus
def corpus_listings(shared_data: Path) -> list[Path]:
    listings = sorted((shared_data / "ndpi").glob("*.out"))
    listings += sorted((shared_data / "ndpi_removed").glob("*.out"))
    assert len(listings) > 400
    return listings


def test_every_corpus_listing_gives_rows(shared_data: Path) -> None:
    """All listings parse; no Unknown; guesses only with guesses=True; app vs master."""
    listings = corpus_listings(shared_data)
    # nDPI's confidences per direction-free flow of each capture, read with the plain parser
    confidences: dict[tuple[str, ...], set[str]] = {}
    for listing in listings:
        capture = listing.name[: -len(".out")]
        for flow in read_ndpi_out(listing):
            ends = sorted((canonical_address(flow.src), canonical_address(flow.dst)))
            confidences.setdefault((capture, flow.l4.lower(), *ends), set()).add(flow.confidence)

    def kinds(row: tuple[str, ...]) -> set[str]:
        return confidences[(row[0], row[1], *sorted((row[2], row[4])))]

    rows = list(rows_from_ndpi(listings))
    guessed = list(rows_from_ndpi(listings, guesses=True))
    masters = list(rows_from_ndpi(listings, label="master"))
    assert len(rows) > 5000
    assert not any(row[-1] == "Unknown" for row in guessed)
    assert all(len(row) == len(LABEL_COLUMNS) and all(row) for row in guessed)
    assert not Counter(rows) - Counter(guessed)  # guesses only add rows
    extra = list((Counter(guessed) - Counter(rows)).elements())
    assert len(extra) > 100
    assert all(any(k.startswith("DPI") for k in kinds(row)) for row in rows)
    assert all(any(not k.startswith("DPI") for k in kinds(row)) for row in extra)
    assert {"Match by port", "Match by IP"} <= set().union(*(kinds(row) for row in extra))
    # label="master" changes only the label, and only where nDPI named an app on top
    assert [row[:-1] for row in masters] == [row[:-1] for row in rows]
    youtube = [(r, m) for r, m in zip(rows, masters, strict=True)
               if r[0] == "youtube_quic.pcap" and r[-1] == "YouTube"]
    assert youtube and all(m[-1] == "QUIC" for _, m in youtube)
    assert sum(r[-1] != m[-1] for r, m in zip(rows, masters, strict=True)) > 500


def test_corpus_rows_agree_with_the_corpus_flow_table(shared_data: Path) -> None:
    """ndpi_flows.csv was parsed independently (it skips VLAN-tagged lines): every DPI
    verdict in it is a row of ours, with the same app and master."""
    listings = corpus_listings(shared_data)
    ours_app = Counter((r[0], r[1], r[3], r[5], r[6]) for r in rows_from_ndpi(listings))
    ours_master = Counter(
        (r[0], r[1], r[3], r[5], r[6]) for r in rows_from_ndpi(listings, label="master")
    )
    theirs_app: Counter[tuple[str, ...]] = Counter()
    theirs_master: Counter[tuple[str, ...]] = Counter()
    with open(shared_data / "ndpi_flows.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if (row["section"] != "detected" or row["ndpi_label"] == "Unknown"
                    or not row["confidence"].startswith("DPI")):
                continue
            proto = row["l4"].lower()
            if proto == "pgm":  # no number known to appsight: left out of labels
                continue
            base = (row["pcap"], proto, row["src_port"], row["dst_port"])
            theirs_app[(*base, row["ndpi_app"])] += 1
            theirs_master[(*base, row["ndpi_master"])] += 1
    assert sum(theirs_app.values()) > 5000
    assert not theirs_app - ours_app
    assert not theirs_master - ours_master
    assert sum((ours_app - theirs_app).values()) < 0.02 * sum(ours_app.values())


def test_corpus_labels_file_is_a_valid_labels_file(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`labels from-ndpi` over both corpus folders writes what `train --labels` accepts."""
    out = tmp_path / "ndpi-labels.csv"
    status = main(["labels", "from-ndpi", str(shared_data / "ndpi"),
                   str(shared_data / "ndpi_removed"), "-o", str(out)])
    assert status == 0
    listings = corpus_listings(shared_data)
    expected = list(rows_from_ndpi(listings))
    summary = f"{len(expected)} labelled flows from {len(listings)} listings"
    assert summary in capsys.readouterr().err
    with open(out, newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert tuple(lines[0]) == LABEL_COLUMNS
    assert sorted(tuple(line) for line in lines[1:]) == sorted(expected)
    table = LabelTable.read_csv(out)  # no conflicting duplicates, every row valid
    assert len(table.labels) >= 0.99 * len(expected)


def captures_with_rows(shared_data: Path) -> list[tuple[Path, list[tuple[str, ...]]]]:
    found = []
    for listing in sorted((shared_data / "ndpi").glob("*.out")):
        capture = listing.with_suffix("")
        rows = list(rows_from_ndpi([listing]))
        if rows and capture.exists():
            found.append((capture, rows))
    return found


def flow_keys_of(capture: Path) -> set[tuple[object, ...]]:
    keys = set()
    for block in iter_flow_blocks(capture, WHOLE_CAPTURE):
        for record in flow_records(block):
            keys.add(flow_key(block.capture, str(record["proto"]),
                              (str(record["src"]), int(record["sport"])),  # type: ignore[call-overload]
                              (str(record["dst"]), int(record["dport"]))))  # type: ignore[call-overload]
    return keys


def test_ndpi_labels_find_our_flows(shared_data: Path, tmp_path: Path) -> None:
    """For 30 captures spread over the corpus, >= 95 % of label rows label one of our flows.

    Goes the way training goes: rows -> labels file -> LabelTable -> label_block on the
    flows of the whole capture (one burst, as nDPI sees it).
    """
    candidates = captures_with_rows(shared_data)
    step = max(1, len(candidates) // 30)
    chosen = candidates[::step][:30]
    assert len(chosen) == 30
    rows = [row for _, capture_rows in chosen for row in capture_rows]
    table = LabelTable.read_csv(write_labels(tmp_path / "l.csv", [list(r) for r in rows]))
    hit: set[tuple[object, ...]] = set()
    labelled = 0
    for capture, _ in chosen:
        for block in iter_flow_blocks(capture, WHOLE_CAPTURE):
            records = list(flow_records(block))
            for record, label in zip(records, table.label_block(block, records), strict=True):
                if label is None:
                    continue
                labelled += 1
                hit.add(flow_key(block.capture, str(record["proto"]),
                                 (str(record["src"]), int(record["sport"])),  # type: ignore[call-overload]
                                 (str(record["dst"]), int(record["dport"]))))  # type: ignore[call-overload]
    keys = set(table.labels)
    assert len(keys) >= 60
    share = len(hit & keys) / len(keys)
    assert share >= 0.95, f"only {share:.1%} of {len(keys)} labels found their flow"
    assert labelled >= len(hit & keys)  # every hit key labelled at least one flow


@pytest.mark.parametrize(("capture", "address", "guesses"), [
    ("pinterest.pcap", "2600:1901:0:7a0b::", False),
    ("http_ipv6.pcap", "2a03:2880:1010:3f20:face:b00c:0:25de", True),
])
def test_quirky_ipv6_labels_find_their_flow(
    shared_data: Path, capture: str, address: str, guesses: bool
) -> None:
    """nDPI's doubled '::' and dropped zero group, read back, name a flow we really have."""
    rows = [row for row in rows_from_ndpi([shared_data / "ndpi" / f"{capture}.out"],
                                          guesses=guesses)
            if address in (row[2], row[4])]
    assert rows
    keys = flow_keys_of(shared_data / "ndpi" / capture)
    for row in rows:
        key = flow_key(row[0], row[1], (row[2], int(row[3])), (row[4], int(row[5])))
        assert key in keys, row
