"""The flow engine against nfstream's expected results (a second, independent flow meter).

nfstream's test suite stores, per capture, the (bidirectional packets, bidirectional bytes)
of every flow it exports, without the 5-tuple and in export order, so the comparison is a
multiset of (packets, bytes) over all our flows (every protocol, not only TCP and UDP).

nfstream differs from us on purpose in several ways, so exact agreement is not expected
everywhere: it counts wire length (``header->len``) where we count captured bytes, splits
flows at a 120 s idle and 1800 s active timeout (we keep one flow per 5-tuple and burst),
keys flows by VLAN id, and drops non-first IP fragments. Every capture that differs is listed
in ``KNOWN_DIFFERENCES`` with the reason (mirrored in ``docs/flow-validation.md``), so a
regression on a capture that agrees today fails.

Run with ``.venv/bin/pytest tests/test_against_nfstream.py -v``.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from appsight.pipeline import PipelineOptions, iter_flow_blocks
from appsight.reader import read_records

DOC = Path(__file__).resolve().parent.parent / "docs" / "flow-validation.md"

#: Share of available captures that must agree exactly (183 of 205 did when written).
MIN_EXACT_SHARE = 0.88

_IDLE = "nfstream splits a flow at its 120 s idle timeout"

#: Captures that differ by design or because of nfstream; key: capture path under the
#: shared data folder. Keep in sync with docs/flow-validation.md.
KNOWN_DIFFERENCES: dict[str, str] = {
    "ndpi/4in4tunnel.pcap": f"{_IDLE}: 1 flow cut 4 times",
    "ndpi/ajp.pcap": (
        "12 non-IP frames (ethertype 0x8903, Cisco FabricPath/DCE) start with nibble 4;"
        " nfstream parses them as IPv4 (2 bogus flows), we drop them as non-IP"
    ),
    "nfstream/pcaps/alexa-app.pcapng": f"{_IDLE}: 3 flows cut once each",
    "nfstream/pcaps/anydesk-2.pcap": (
        "438 TCP segmentation-offload frames have IP total length 0; nfstream drops them,"
        " we keep them (IP length taken from the captured bytes)"
    ),
    "ndpi/badpackets.pcap": (
        "caplen < wire length in 7 records (66 bytes in all): nfstream counts wire length,"
        " we count captured bytes; nothing else differs"
    ),
    "ndpi/bt_search.pcap": f"{_IDLE}: 1 flow cut once",
    "ndpi/capwap.pcap": (
        "nfstream decapsulates every CAPWAP data packet without checking the 802.11 frame"
        " type: garbage single-packet flows, other non-IP frames dropped; plus 1 idle split"
    ),
    "ndpi/dnp3.pcap": f"{_IDLE}: 1 flow cut once",
    "ndpi/dns_fragmented.pcap": (
        "7 non-first fragments: nfstream drops them, we add them to the first fragment's flow"
    ),
    "ndpi/dnscrypt-v1-and-resolver-pings.pcap": (
        "120 non-first fragments (nfstream drops them) and 6 flows cut at the idle timeout"
    ),
    "ndpi/dnscrypt_skype_false_positive.pcapng": f"{_IDLE}: 1 flow cut twice",
    "nfstream/pcaps/fuzz-2021-06-07-c6c72a0a56.pcap": (
        "fuzzed record header: wire length 4093509168, caplen 48; nfstream keeps the wire"
        " length in 16 bits (65072), we count 48 captured bytes"
    ),
    "nfstream/pcaps/ip_fragmented_garbage.pcap": (
        "9048 non-first fragments (nfstream drops them); 29 first fragments hold only 16"
        " bytes of TCP: nfstream gives them ports 0 (1 flow), we read the ports (29 flows)"
    ),
    "nfstream/pcaps/monero.pcap": f"{_IDLE}: 1 flow cut 3 times",
    "ndpi/mongodb.pcap": (
        "every TCP connection is captured on VLANs 50 and 300; nfstream keys flows by VLAN"
        " id, we merge the copies"
    ),
    "ndpi/nest_log_sink.pcap": f"{_IDLE}: 1 flow cut 3 times",
    "ndpi/sip.pcap": f"{_IDLE}: 1 flow cut twice",
    "nfstream/pcaps/skype.pcap": f"{_IDLE}: 1 flow cut once",
    "nfstream/pcaps/ssh.pcap": f"{_IDLE}: 1 flow cut once",
    "nfstream/pcaps/tor.pcap": f"{_IDLE}: 2 flows cut once each",
    "ndpi/wechat.pcap": f"{_IDLE}: 9 flows cut 18 times in all",
}

#: Captures whose only difference is caplen != wire length: checked to be exactly that.
WIRELEN_ONLY = ("ndpi/badpackets.pcap",)

#: Differences that look like defects of our decoder (see test_against_ndpi.py).
SUSPECTED_DECODER_BUGS: dict[str, str] = {}

FlowSize = tuple[int, int]  # (packets, bytes) of one flow, both directions


@dataclass
class Comparison:
    """nfstream's flow sizes and ours for one capture."""

    expected: Counter[FlowSize]
    got: Counter[FlowSize]
    error: str = ""

    @property
    def exact(self) -> bool:
        return not self.error and self.expected == self.got

    def describe(self, limit: int = 4) -> str:
        """One line saying how the two sides differ, with a few example flow sizes."""
        if self.error:
            return f"error: {self.error}"
        missing, extra = self.expected - self.got, self.got - self.expected
        return (
            f"nfstream {self.expected.total()} flows, ours {self.got.total()};"
            f" only nfstream: {sorted(missing.elements())[:limit]};"
            f" only ours: {sorted(extra.elements())[:limit]}"
        )


def expected_sizes(results_csv: Path) -> Counter[FlowSize]:
    """nfstream's (bidirectional_packets, bidirectional_bytes) per flow."""
    with results_csv.open(newline="", encoding="utf-8") as handle:
        return Counter(
            (int(row["bidirectional_packets"]), int(row["bidirectional_bytes"]))
            for row in csv.DictReader(handle)
        )


def our_sizes(capture: Path) -> Counter[FlowSize]:
    """(packets, bytes) of every one of our flows, all protocols, one burst per capture."""
    sizes: Counter[FlowSize] = Counter()
    for block in iter_flow_blocks(capture, PipelineOptions(burst_gap=None)):
        f = block.flows
        packets = (f.packets_fwd + f.packets_bwd).tolist()
        size = (f.bytes_fwd + f.bytes_bwd).tolist()
        sizes.update(zip(packets, size, strict=True))
    return sizes


def manifest(data: Path) -> list[tuple[str, Path]]:
    """(capture path under ``data``, results CSV) for every capture that is available."""
    rows = []
    with (data / "nfstream" / "MANIFEST.tsv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            capture = row["pcap_path_under_shared_data"].strip()
            if capture and capture != "-" and (data / capture).is_file():
                rows.append((capture, data / "nfstream" / row["results_csv"]))
    return rows


@pytest.fixture(scope="module")
def nfstream_results(shared_data: Path) -> dict[str, Comparison]:
    """Comparisons for every available capture (computed once for all tests here)."""
    if not (shared_data / "nfstream" / "MANIFEST.tsv").is_file():
        pytest.skip("nfstream/MANIFEST.tsv not found in the shared data")
    results: dict[str, Comparison] = {}
    for capture, results_csv in manifest(shared_data):
        expected = expected_sizes(results_csv)
        try:
            results[capture] = Comparison(expected, our_sizes(shared_data / capture))
        except Exception as exc:  # report every capture, not just the first that breaks
            results[capture] = Comparison(expected, Counter(), repr(exc))
    return results


@pytest.mark.shared_data
def test_nfstream_captures_agree(nfstream_results: dict[str, Comparison]) -> None:
    """Our flow sizes equal nfstream's except for documented captures."""
    assert len(nfstream_results) >= 200, f"only {len(nfstream_results)} captures found"
    differing = {name for name, c in nfstream_results.items() if not c.exact}
    unexplained = differing - KNOWN_DIFFERENCES.keys() - SUSPECTED_DECODER_BUGS.keys()
    report = "\n".join(
        f"  {name}: {nfstream_results[name].describe()}" for name in sorted(unexplained)
    )
    assert not unexplained, f"captures that now differ from nfstream (regressions?):\n{report}"
    share = 1 - len(differing) / len(nfstream_results)
    assert share >= MIN_EXACT_SHARE, (
        f"{len(nfstream_results) - len(differing)} of {len(nfstream_results)} captures agree"
        f" exactly ({share:.1%} < {MIN_EXACT_SHARE:.0%})"
    )


@pytest.mark.shared_data
def test_known_differences_still_differ(nfstream_results: dict[str, Comparison]) -> None:
    """A documented difference that went away must leave the list (and the docs) too."""
    unknown = sorted(KNOWN_DIFFERENCES.keys() - nfstream_results.keys())
    assert not unknown, f"KNOWN_DIFFERENCES names captures that were not compared: {unknown}"
    now_exact = sorted(name for name in KNOWN_DIFFERENCES if nfstream_results[name].exact)
    assert not now_exact, f"these now agree with nfstream; drop them from the list: {now_exact}"


@pytest.mark.shared_data
@pytest.mark.parametrize("name", WIRELEN_ONLY)
def test_wirelen_only_differences(
    name: str, shared_data: Path, nfstream_results: dict[str, Comparison]
) -> None:
    """Same flows and packet counts; the byte totals differ by exactly sum(wirelen - caplen)."""
    comparison = nfstream_results[name]
    expected_packets = sorted(comparison.expected.elements())
    got_packets = sorted(comparison.got.elements())
    assert [p for p, _ in expected_packets] == [p for p, _ in got_packets]
    missing_bytes = 0
    with read_records(shared_data / name) as reader:
        for batch in reader:
            missing_bytes += int((batch.wirelen - batch.caplen).sum())
    assert missing_bytes > 0
    assert sum(b for _, b in expected_packets) - sum(b for _, b in got_packets) == missing_bytes


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=reason))
        for name, reason in SUSPECTED_DECODER_BUGS.items()
    ],
)
def test_suspected_decoder_bug(name: str, nfstream_results: dict[str, Comparison]) -> None:
    """Expected to fail until the decoder is fixed; then move the entry out of the list."""
    assert nfstream_results[name].exact, nfstream_results[name].describe()


def test_differences_are_documented() -> None:
    """Every listed capture appears in docs/flow-validation.md, so the two stay mirrored."""
    text = DOC.read_text(encoding="utf-8")
    missing = sorted(
        name for name in KNOWN_DIFFERENCES.keys() | SUSPECTED_DECODER_BUGS.keys()
        if f"`{name}`" not in text
    )
    assert not missing, f"not in {DOC.name}: {missing}"
