"""The flow engine against nDPI's own flow listings (ground truth from another implementation).

Each capture of nDPI's test suite comes with the ``.out`` listing ndpiReader printed for it.
Its per-flow packet and byte counters (captured frame bytes, both directions) must equal ours:
a differing capture is either a documented design difference (``KNOWN_DIFFERENCES``, mirrored
in ``docs/flow-validation.md``) or a regression. Only TCP and UDP flows are compared, as a
multiset of (protocol, endpoints, packets and bytes each way) with the direction left out,
because nDPI's idea of the client side and its handling of port-less protocols differ from
ours in ways that say nothing about the flow engine.

Run with ``.venv/bin/pytest tests/test_against_ndpi.py -v``; the whole corpus takes about a
second, so this runs with the ordinary test suite.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from appsight.addresses import pairs_to_addresses
from appsight.ndpi_out import read_ndpi_out
from appsight.pipeline import PipelineOptions, iter_flow_blocks

DOC = Path(__file__).resolve().parent.parent / "docs" / "flow-validation.md"

#: Share of captures whose TCP/UDP flows must agree exactly (500 of 517 did when written).
MIN_EXACT_SHARE = 0.95

#: Captures that differ by design; key: path under the shared data folder. Keep in sync with
#: the table in docs/flow-validation.md (a test checks that every name appears there).
KNOWN_DIFFERENCES: dict[str, str] = {
    "ndpi/badpackets.pcap": (
        "all 93 UDP packets hold less than their IP total length (7 cut by snaplen);"
        " ndpiReader drops truncated IP packets, we keep them"
    ),
    "ndpi/capwap.pcap": (
        "5 CAPWAP data frames carry a non-IP 802.11 payload (1 ARP, 4 Cisco SNAP 00:40:96);"
        " ndpiReader decapsulates then drops them, we keep them in the outer UDP 5247 flow"
    ),
    "ndpi/capwap_data.pcapng": (
        "the same CAPWAP-tunnelled TCP flow is captured on VLANs 3, 4 and 395; ndpiReader"
        " keys flows by VLAN id (3 flows), we do not (1 flow holding the sum)"
    ),
    "ndpi/dns_fragmented.pcap": (
        "7 non-first fragments (4 IPv4, 3 IPv6) of DNS responses: ndpiReader drops them,"
        " we add them to their first fragment's flow"
    ),
    "ndpi/dnscrypt-v1-and-resolver-pings.pcap": (
        "120 non-first IPv4 fragments of DNSCrypt queries: ndpiReader drops them, we add them"
        " to their first fragment's flow"
    ),
    "ndpi/fuzz-2006-06-26-2594.pcap": (
        "fuzzed: 28 non-first fragments and 23 truncated packets (ndpiReader drops both);"
        " a TCP packet whose IP length leaves 12 bytes of TCP header (ndpiReader: ports 0);"
        " a UDP packet with IHL 1 (we reject it as malformed, ndpiReader keeps it)"
    ),
    "ndpi/fuzz-2006-09-29-28586.pcap": (
        "fuzzed: 5 non-first fragments and 1 truncated packet (ndpiReader drops both); a TCP"
        " packet with IP total length 35 (15 bytes of TCP header) gets ports 0 in ndpiReader"
    ),
    "ndpi/fuzz-2020-02-16-11740.pcap": (
        "fuzzed: 22 non-first fragments and 7 truncated packets; ndpiReader drops both"
    ),
    "ndpi/fuzz-2021-06-07-c6c72a0a56.pcap": (
        "its one packet is truncated (34 of 35205 IP bytes captured); ndpiReader drops it"
        " (empty .out), we keep it"
    ),
    "ndpi/ip_fragmented_garbage.pcap": (
        "1248 non-first fragments (ndpiReader drops them); the 4 first fragments hold only"
        " 16 bytes of TCP, ndpiReader gives them ports 0 (1 flow), we read the ports (4 flows)"
    ),
    "ndpi/mongodb.pcap": (
        "every TCP connection is captured twice, on VLANs 50 and 300; ndpiReader keys flows"
        " by VLAN id, we merge the copies"
    ),
    "ndpi/ndpi_match_string_subprotocol__error.pcapng": (
        "one TCP packet is truncated (562 of 2610 IP bytes captured); ndpiReader drops it"
    ),
    "ndpi/rsh-syslog-false-positive.pcap": (
        "2 packets cut by snaplen (1010 of 1084 and 1400 IP bytes); ndpiReader drops them"
    ),
    "ndpi/syslog.pcap": (
        "one TCP connection whose two directions carry different VLAN ids (1506, 1906);"
        " ndpiReader lists two one-way flows, we one flow"
    ),
    "ndpi/telnet.pcap": (
        "5 packets hold 52 IP bytes but claim a larger IP total length; ndpiReader drops them"
    ),
    "ndpi/tls_invalid_reads.pcap": (
        "a SYN-ACK claims an IP total length of 4148 with 52 bytes captured; ndpiReader"
        " drops it"
    ),
    "ndpi_removed/gre.pcap": (
        "35 PPTP packets use enhanced GRE with the acknowledgment flag (0x0080); the nDPI"
        " revision that wrote this .out treated it as reserved (mask 0x00F8) and dropped them"
    ),
}

#: Differences that look like defects of our decoder, reported rather than accepted. Each
#: is an expected failure (strict), so fixing the decoder makes the test fail until the entry
#: is removed here and in docs/flow-validation.md.
SUSPECTED_DECODER_BUGS: dict[str, str] = {}

# (protocol, lower endpoint, upper endpoint, (packets, bytes) sent by the lower endpoint,
#  (packets, bytes) sent by the upper endpoint): a flow with its direction left out.
FlowKey = tuple[str, tuple[str, int], tuple[str, int], tuple[int, int], tuple[int, int]]
L4_NAMES = {6: "tcp", 17: "udp"}


def ndpi_address(text: str) -> str:
    """An address as ndpiReader prints it.

    ndpiReader post-processes ``inet_ntop`` output with ``ndpi_patchIPv6Address``, which
    replaces every ``:0:`` (scanning left to right, without overlap) by ``::``, so a single
    zero group prints as an empty one (``2001:db8:0:1::5`` becomes ``2001:db8::1::5``).
    """
    return text.replace(":0:", "::") if ":" in text else text


def _direction_free(
    l4: str, a: tuple[str, int], b: tuple[str, int], ca: tuple[int, int], cb: tuple[int, int]
) -> FlowKey:
    """Order the endpoints so the same flow gives the same key whoever sent first."""
    if a > b:
        a, b, ca, cb = b, a, cb, ca
    return (l4, a, b, ca, cb)


def expected_flows(listing: Path) -> Counter[FlowKey]:
    """The TCP and UDP flows of one ``.out`` listing."""
    flows: Counter[FlowKey] = Counter()
    for flow in read_ndpi_out(listing):
        if flow.l4 not in ("TCP", "UDP"):
            continue
        flows[
            _direction_free(
                flow.l4.lower(), (flow.src, flow.sport), (flow.dst, flow.dport),
                (flow.packets_c2s, flow.bytes_c2s), (flow.packets_s2c, flow.bytes_s2c),
            )
        ] += 1
    return flows


def our_flows(capture: Path) -> Counter[FlowKey]:
    """The TCP and UDP flows of our engine for one capture, as one burst (no burst gap)."""
    flows: Counter[FlowKey] = Counter()
    for block in iter_flow_blocks(capture, PipelineOptions(burst_gap=None)):
        f = block.flows
        src = [ndpi_address(a) for a in pairs_to_addresses(f.src_hi, f.src_lo)]
        dst = [ndpi_address(a) for a in pairs_to_addresses(f.dst_hi, f.dst_lo)]
        columns = zip(
            f.proto.tolist(), src, f.sport.tolist(), dst, f.dport.tolist(),
            f.packets_fwd.tolist(), f.bytes_fwd.tolist(),
            f.packets_bwd.tolist(), f.bytes_bwd.tolist(),
            strict=True,
        )
        for proto, s, sp, d, dp, pf, bf, pb, bb in columns:
            if proto in L4_NAMES:
                flows[_direction_free(L4_NAMES[proto], (s, sp), (d, dp), (pf, bf), (pb, bb))] += 1
    return flows


@dataclass
class Comparison:
    """nDPI's flows and ours for one capture."""

    expected: Counter[FlowKey]
    got: Counter[FlowKey]
    error: str = ""

    @property
    def exact(self) -> bool:
        return not self.error and self.expected == self.got

    def describe(self, limit: int = 3) -> str:
        """One line saying how the two sides differ, with a few example flows."""
        if self.error:
            return f"error: {self.error}"
        missing, extra = self.expected - self.got, self.got - self.expected
        return (
            f"nDPI {self.expected.total()} flows, ours {self.got.total()};"
            f" only nDPI: {sorted(missing.elements())[:limit]};"
            f" only ours: {sorted(extra.elements())[:limit]}"
        )


def compare_folder(data: Path, folder: str) -> dict[str, Comparison]:
    """Compare every capture of ``data/folder`` that has a ``.out`` listing."""
    results: dict[str, Comparison] = {}
    for listing in sorted((data / folder).glob("*.out")):
        capture = listing.with_suffix("")
        if not capture.is_file():
            continue
        expected = expected_flows(listing)
        try:
            got = our_flows(capture)
        except Exception as exc:  # report every capture, not just the first that breaks
            results[f"{folder}/{capture.name}"] = Comparison(expected, Counter(), repr(exc))
            continue
        results[f"{folder}/{capture.name}"] = Comparison(expected, got)
    return results


@pytest.fixture(scope="module")
def ndpi_results(shared_data: Path) -> dict[str, Comparison]:
    """Comparisons for the current nDPI test captures (computed once for all tests here)."""
    return compare_folder(shared_data, "ndpi")


@pytest.fixture(scope="module")
def removed_results(shared_data: Path) -> dict[str, Comparison]:
    """Comparisons for captures nDPI deleted later (their last ``.out`` before deletion)."""
    results = compare_folder(shared_data, "ndpi_removed")
    if not results:
        pytest.skip("ndpi_removed/ holds no capture with a .out listing")
    return results


def _check(results: dict[str, Comparison], min_captures: int) -> None:
    """Assert the agreement share and that every differing capture is documented."""
    assert len(results) >= min_captures, f"only {len(results)} captures found"
    differing = {name for name, c in results.items() if not c.exact}
    share = 1 - len(differing) / len(results)
    unexplained = differing - KNOWN_DIFFERENCES.keys() - SUSPECTED_DECODER_BUGS.keys()
    report = "\n".join(f"  {name}: {results[name].describe()}" for name in sorted(unexplained))
    assert not unexplained, f"captures that now differ from nDPI (regressions?):\n{report}"
    assert share >= MIN_EXACT_SHARE, (
        f"{len(results) - len(differing)} of {len(results)} captures agree exactly"
        f" ({share:.1%} < {MIN_EXACT_SHARE:.0%})"
    )


@pytest.mark.shared_data
def test_ndpi_captures_agree(ndpi_results: dict[str, Comparison]) -> None:
    """Our TCP/UDP flows equal nDPI's except for documented captures."""
    _check(ndpi_results, min_captures=500)


@pytest.mark.shared_data
def test_ndpi_removed_captures_agree(removed_results: dict[str, Comparison]) -> None:
    """The same check over the captures nDPI removed from its suite (older nDPI revisions)."""
    _check(removed_results, min_captures=30)


@pytest.mark.shared_data
def test_known_differences_still_differ(
    ndpi_results: dict[str, Comparison], removed_results: dict[str, Comparison]
) -> None:
    """A documented difference that went away must leave the list (and the docs) too."""
    results = ndpi_results | removed_results
    unknown = sorted(KNOWN_DIFFERENCES.keys() - results.keys())
    assert not unknown, f"KNOWN_DIFFERENCES names captures that are not in the corpus: {unknown}"
    now_exact = sorted(name for name in KNOWN_DIFFERENCES if results[name].exact)
    assert not now_exact, f"these now agree with nDPI; drop them from the list: {now_exact}"


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=reason))
        for name, reason in SUSPECTED_DECODER_BUGS.items()
    ],
)
def test_suspected_decoder_bug(name: str, ndpi_results: dict[str, Comparison]) -> None:
    """Expected to fail until the decoder is fixed; then move the entry out of the list."""
    assert ndpi_results[name].exact, ndpi_results[name].describe()


def test_differences_are_documented() -> None:
    """Every listed capture appears in docs/flow-validation.md, so the two stay mirrored."""
    text = DOC.read_text(encoding="utf-8")
    missing = sorted(
        name for name in KNOWN_DIFFERENCES.keys() | SUSPECTED_DECODER_BUGS.keys()
        if f"`{name}`" not in text
    )
    assert not missing, f"not in {DOC.name}: {missing}"


def test_ndpi_address_matches_ndpi_printing() -> None:
    """The address patch reproduces ndpiReader's, including its non-overlapping scan."""
    assert ndpi_address("2001:470:765b:0:a25::53") == "2001:470:765b::a25::53"
    assert ndpi_address("1:0:0:2:3::") == "1::0:2:3::"
    assert ndpi_address("10.0.0.1") == "10.0.0.1"

