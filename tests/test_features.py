"""Every column of every feature set against a per-flow reference written with numpy/scipy.

The feature sets are computed for all flows of a block at once, through
:class:`appsight.groupstats.Series`; here each flow's features are recomputed from the packets
the test itself generated (not from the FlowTable), one flow at a time, with the plainest
numpy/scipy code and the conventions documented in :mod:`appsight.features`. The edge cases
that the documented rules single out (1-3 packets, one-way flows, zero gaps, constant lengths)
get their own flows, and a block of many random, interleaved flows in several bursts checks
that the vectorised code never mixes flows up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats
from appsight.addresses import NetworkMatcher
from appsight.errors import UsageError
from appsight.features import (
    APPSCANNER54,
    CONTEXT48,
    DEFAULT_FEATURE_SET,
    FEATURE_SETS,
    PAYLOAD38,
    SEED14,
    TIMING39,
    FeatureSet,
    get_feature_set,
)
from appsight.flows import FlowTable, build_flows
from appsight.pipeline import PipelineOptions, iter_flow_blocks
from capture_builder import Packet as CapturedPacket
from capture_builder import write_pcap
from hypothesis import given, settings
from hypothesis import strategies as st
from packet_tuples import ICMP, TCP, UDP, Packet, make_batch, one_block, payload_of
from scapy.layers.inet import IP as ScapyIP
from scapy.layers.inet import TCP as ScapyTCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Packet as ScapyPacket

REL, ABS = 1e-9, 1e-12

# ----------------------------------------------------------------------- references
@dataclass
class RefFlow:
    """One flow as the test generated it: its packets in capture order and their direction."""

    proto: int
    ts_ns: np.ndarray
    ip_len: np.ndarray
    fwd: np.ndarray
    payload: np.ndarray


def ref_flow(packets: Sequence[Packet], device: str | None = None) -> RefFlow:
    """A single flow's packets; forward = the first packet's direction, or sent by ``device``."""
    first = packets[0]
    sender = (first[1], first[2])
    if device is not None and device in (first[1], first[3]) and first[1] != first[3]:
        sender = (first[1], first[2]) if first[1] == device else (first[3], first[4])
    return RefFlow(
        proto=first[5],
        ts_ns=np.array([round(p[0] * 1e9) for p in packets], dtype=np.int64),
        ip_len=np.array([p[6] for p in packets], dtype=np.float64),
        fwd=np.array([(p[1], p[2]) == sender for p in packets], dtype=bool),
        payload=np.array([payload_of(p[5], p[6]) for p in packets], dtype=np.float64),
    )


def skew(x: np.ndarray) -> float:
    """Biased skewness (scipy), 0 when undefined (empty or constant series)."""
    if len(x) == 0 or np.ptp(x) == 0:
        return 0.0
    return float(scipy.stats.skew(x, bias=True))


def kurtosis(x: np.ndarray) -> float:
    """Biased Fisher kurtosis (scipy), 0 when undefined (empty or constant series)."""
    if len(x) == 0 or np.ptp(x) == 0:
        return 0.0
    return float(scipy.stats.kurtosis(x, fisher=True, bias=True))


def stat(f: Callable[[np.ndarray], Any], x: np.ndarray) -> float:
    """``f(x)``, or 0 for an empty series (the documented convention)."""
    return float(f(x)) if len(x) else 0.0


def ratio(forward: float, backward: float) -> float:
    """seed14: forward / backward, or backward / forward when backward is 0."""
    if backward > 0:
        return forward / backward
    return backward / forward if forward > 0 else 0.0


def ref_seed14(f: RefFlow) -> dict[str, float]:
    """The original project's 14 features, written out directly."""
    lengths, n = f.ip_len, len(f.ip_len)
    gaps = np.diff(f.ts_ns) / 1e9
    fwd_bytes, bwd_bytes = lengths[f.fwd].sum(), lengths[~f.fwd].sum()
    return {
        "byte_ratio": ratio(fwd_bytes, bwd_bytes),
        "packet_ratio": ratio(int(f.fwd.sum()), int((~f.fwd).sum())),
        "len_mean": float(np.mean(lengths)),
        "len_std": float(np.std(lengths)) if n > 2 else 0.0,
        "len_kurtosis": kurtosis(lengths),
        "len_skew": skew(lengths),
        "gap_mean": float(np.mean(gaps)) if n > 1 else 0.0,
        "gap_kurtosis": kurtosis(gaps),
        "gap_skew": skew(gaps),
        "len_min": float(np.min(lengths)),
        "len_max": float(np.max(lengths)),
        "gap_min": stat(np.min, gaps),
        "gap_max": stat(np.max, gaps),
        "protocol": {TCP: 1.0, UDP: 0.0}.get(f.proto, 2.0),
    }


def appscanner_stats(x: np.ndarray) -> dict[str, float]:
    """AppScanner's 18 statistics of one series."""
    out = {
        "min": stat(np.min, x),
        "max": stat(np.max, x),
        "mean": stat(np.mean, x),
        "mad": stat(lambda v: np.median(np.abs(v - np.median(v))), x),
        "std": stat(np.std, x),
        "var": stat(np.var, x),
        "skew": skew(x),
        "kurtosis": kurtosis(x),
    }
    for q in range(10, 100, 10):
        out[f"p{q}"] = stat(lambda v, q=q: np.percentile(v, q), x)
    out["count"] = float(len(x))
    return out


def ref_appscanner54(f: RefFlow) -> dict[str, float]:
    """in = backward (received), out = forward (sent), both = all packets."""
    out: dict[str, float] = {}
    for name, x in (("in", f.ip_len[~f.fwd]), ("out", f.ip_len[f.fwd]), ("both", f.ip_len)):
        out.update({f"{name}_{k}": v for k, v in appscanner_stats(x).items()})
    return out


def ref_timing39(f: RefFlow) -> dict[str, float]:
    """Lengths and same-direction inter-arrival times per direction, plus the flow's shape."""
    out: dict[str, float] = {}
    everything = np.ones(len(f.fwd), dtype=bool)
    for name, mask in (("out", f.fwd), ("in", ~f.fwd), ("both", everything)):
        x = f.ip_len[mask]
        gaps = np.diff(f.ts_ns[mask]) / 1e9
        out.update({
            f"{name}_len_count": float(len(x)),
            f"{name}_len_min": stat(np.min, x),
            f"{name}_len_max": stat(np.max, x),
            f"{name}_len_mean": stat(np.mean, x),
            f"{name}_len_std": stat(np.std, x),
            f"{name}_len_median": stat(np.median, x),
            f"{name}_gap_min": stat(np.min, gaps),
            f"{name}_gap_max": stat(np.max, gaps),
            f"{name}_gap_mean": stat(np.mean, gaps),
            f"{name}_gap_std": stat(np.std, gaps),
            f"{name}_gap_median": stat(np.median, gaps),
        })
    out.update({
        "duration": (int(f.ts_ns.max()) - int(f.ts_ns.min())) / 1e9,
        "out_bytes": float(f.ip_len[f.fwd].sum()),
        "in_bytes": float(f.ip_len[~f.fwd].sum()),
        "direction_changes": float(np.count_nonzero(f.fwd[1:] != f.fwd[:-1])),
        "is_tcp": float(f.proto == TCP),
        "is_udp": float(f.proto == UDP),
    })
    return out


def ref_payload38(f: RefFlow) -> dict[str, float]:
    """seed14, then the payload sizes of the packets that carry data: per direction, and the
    first eight in capture order, positive when sent forward, negative when received; then
    the protocol as yes/no."""
    out = ref_seed14(f)
    data = f.payload > 0
    for name, mask in (("out", f.fwd), ("in", ~f.fwd)):
        x = f.payload[data & mask]
        out.update({
            f"{name}_data_count": float(len(x)),
            f"{name}_data_min": stat(np.min, x),
            f"{name}_data_max": stat(np.max, x),
            f"{name}_data_mean": stat(np.mean, x),
            f"{name}_data_std": stat(np.std, x),
            f"{name}_data_median": stat(np.median, x),
            f"{name}_data_bytes": float(x.sum()),
        })
    signed = [size if forward else -size
              for size, forward in zip(f.payload.tolist(), f.fwd.tolist(), strict=True) if size]
    signed += [0.0] * 8
    out.update({f"data{i + 1}_signed": float(signed[i]) for i in range(8)})
    out.update({"is_tcp": float(f.proto == TCP), "is_udp": float(f.proto == UDP)})
    return out


REFERENCES = {"seed14": ref_seed14, "appscanner54": ref_appscanner54, "timing39": ref_timing39,
              "payload38": ref_payload38}


def assert_features_match(flows: FlowTable, refs: Sequence[RefFlow]) -> None:
    """Row ``r`` of every feature set equals the reference features of ``refs[r]``.

    Element-wise ``got == pytest.approx(expected, rel=REL, abs=ABS)``, vectorised so that
    blocks of hundreds of flows stay fast.
    """
    assert len(flows) == len(refs)
    failures: list[str] = []
    # context48 is payload38 plus columns about a flow's burst, not the flow alone:
    # test_burst_context_is_each_bursts_flows_seen_from_the_flow checks those.
    assert set(FEATURE_SETS) - set(REFERENCES) == {"context48"}
    for name in REFERENCES:
        fs = FEATURE_SETS[name]
        matrix = fs(flows)
        assert matrix.shape == (len(refs), len(fs.columns))
        rows = [REFERENCES[name](ref) for ref in refs]
        for row in rows:
            assert set(row) == set(fs.columns), name
        expected = np.array([[row[c] for c in fs.columns] for row in rows]).reshape(matrix.shape)
        bad = ~(np.abs(matrix - expected) <= np.maximum(REL * np.abs(expected), ABS))
        for r, c in zip(*np.nonzero(bad), strict=True):
            failures.append(
                f"{name}.{fs.columns[c]} flow {r}: {matrix[r, c]!r} != {expected[r, c]!r}"
            )
    assert not failures, "\n".join(failures[:40])


# ------------------------------------------------------------------- hand-made flows
C, S = "10.0.0.2", "93.184.216.34"  # client, server
C6, S6 = "2001:db8::2", "2001:db8:ffff::1"


def out(t: float, n: int, proto: int = TCP) -> Packet:
    """Client -> server packet of IP length ``n`` at ``t`` (frame: + Ethernet header)."""
    return (t, C, 40000, S, 443, proto, n, n + 14)


def back(t: float, n: int, proto: int = TCP) -> Packet:
    """Server -> client packet."""
    return (t, S, 443, C, 40000, proto, n, n + 14)


HAND_MADE: dict[str, list[Packet]] = {
    "one packet": [out(0.0, 60)],
    "one packet from server": [back(0.0, 1500)],
    "two packets one way": [out(0.0, 60), out(0.25, 100)],
    "two packets both ways": [out(0.0, 60), back(0.1, 1500)],
    "three packets": [out(0.0, 60), back(0.1, 1500), out(0.35, 52)],
    "three packets one way": [back(0.0, 1500), back(0.001, 1500), back(0.5, 40)],
    "one way, many": [out(0.01 * k, 40 + 37 * k % 1400, UDP) for k in range(20)],
    "zero gaps": [out(1.0, 60), back(1.0, 70), out(1.0, 80), back(1.0, 1500)],
    "some zero gaps": [out(1.0, 60), out(1.0, 70), back(1.5, 80), back(1.5, 90), out(3.0, 5)],
    "constant lengths": [out(0.0, 100), back(0.3, 100), out(0.4, 100), back(1.9, 100)],
    "constant lengths one way": [out(0.1 * k, 1500) for k in range(6)],
    "constant lengths and gaps": [out(0.5 * k, 576) for k in range(5)],
    "mixed directions": [
        out(0.0, 74), back(0.02, 74), out(0.021, 66), out(0.05, 583), back(0.09, 66),
        back(0.093, 1514), back(0.094, 1514), back(0.094, 875), out(0.2, 66), out(0.9, 97),
    ],
    "udp": [out(0.0, 80, UDP), back(0.03, 200, UDP), out(0.04, 80, UDP)],
    "icmp": [(0.0, C, 0, S, 0, ICMP, 84, 98), (0.01, S, 0, C, 0, ICMP, 84, 98)],
    "ipv6": [
        (0.0, C6, 5353, S6, 53, UDP, 90, 104), (0.2, S6, 53, C6, 5353, UDP, 250, 264),
        (0.2, C6, 5353, S6, 53, UDP, 91, 105),
    ],
    "large epoch timestamps": [
        (1_700_000_000.0, C, 1, S, 2, TCP, 60, 74),
        (1_700_000_000.000000001, S, 2, C, 1, TCP, 61, 75),
        (1_700_000_003.5, C, 1, S, 2, TCP, 62, 76),
    ],
}


@pytest.mark.parametrize("packets", HAND_MADE.values(), ids=HAND_MADE.keys())
def test_hand_made_flow(packets: list[Packet]) -> None:
    """Each edge-case flow on its own: every column of every set equals the reference."""
    flows = build_flows(one_block(make_batch(packets)))
    assert_features_match(flows, [ref_flow(packets)])


def test_hand_made_flows_side_by_side() -> None:
    """All edge-case flows in one burst (distinct ports): same rows as one by one."""
    packets: list[Packet] = []
    refs = []
    for k, flow in enumerate(HAND_MADE.values()):
        shifted = [
            (10.0 * k + p[0] % 10, p[1], p[2] + k if p[2] else 0, p[3], p[4] + k if p[4] else 0,
             *p[5:]) for p in flow
        ]
        packets += shifted
        refs.append(ref_flow(shifted))
    flows = build_flows(one_block(make_batch(packets)))
    assert_features_match(flows, refs)


def test_seed14_worked_example() -> None:
    """The documented seed14 rules on numbers worked out by hand (guards the reference too)."""
    packets = [out(0.0, 100), back(0.5, 300), out(2.0, 200)]
    row = dict(zip(SEED14.columns, SEED14(build_flows(one_block(make_batch(packets))))[0],
                   strict=True))
    assert row["byte_ratio"] == pytest.approx(300 / 300)
    assert row["packet_ratio"] == pytest.approx(2 / 1)
    assert row["len_mean"] == pytest.approx(200.0)
    assert row["len_std"] == pytest.approx(np.sqrt(20_000 / 3))
    assert row["len_skew"] == pytest.approx(0.0, abs=1e-12)
    assert row["len_kurtosis"] == pytest.approx(-1.5)
    assert row["gap_mean"] == pytest.approx(1.0)
    assert (row["gap_min"], row["gap_max"]) == pytest.approx((0.5, 1.5))
    assert (row["len_min"], row["len_max"], row["protocol"]) == (100.0, 300.0, 1.0)

    one_way = SEED14(build_flows(one_block(make_batch([out(0.0, 60), out(1.0, 70)]))))[0]
    one_way_row = dict(zip(SEED14.columns, one_way, strict=True))
    assert one_way_row["byte_ratio"] == 0.0  # backward is 0: bwd / fwd
    assert one_way_row["packet_ratio"] == 0.0
    assert one_way_row["len_std"] == 0.0  # n <= 2
    assert one_way_row["gap_mean"] == pytest.approx(1.0)

    received_only = dict(zip(SEED14.columns, SEED14(build_flows(one_block(make_batch(
        [out(0.0, 60)]))))[0], strict=True))
    assert received_only["gap_mean"] == 0.0  # n <= 1
    assert received_only["gap_min"] == received_only["gap_max"] == 0.0


def test_device_orientation_swaps_in_and_out() -> None:
    """With --device, "out" means sent by the device even when the server spoke first."""
    packets = [back(0.0, 1500), back(0.1, 1400), out(0.2, 60)]
    device = NetworkMatcher.parse([C])
    flows = build_flows(one_block(make_batch(packets)), device)
    assert_features_match(flows, [ref_flow(packets, device=C)])
    row = dict(zip(APPSCANNER54.columns, APPSCANNER54(flows)[0], strict=True))
    assert (row["out_count"], row["in_count"], row["out_max"], row["in_max"]) == (1, 2, 60, 1500)


def test_periodic_flow_has_zero_gap_skew() -> None:
    """A flow with perfectly regular gaps has zero gap variance: gap skew/kurtosis are 0."""
    packets = [out(0.1 * k, 100, UDP) for k in range(1001)]
    row = dict(zip(SEED14.columns, SEED14(build_flows(one_block(make_batch(packets))))[0],
                   strict=True))
    assert row["gap_skew"] == 0.0
    assert row["gap_kurtosis"] == 0.0


# ------------------------------------------------------------------ many random flows
def random_flow(rng: np.random.Generator, k: int, t0: float) -> list[Packet]:
    """A random flow with index ``k`` (unique ports): 1-15 packets, any direction mix."""
    proto = int(rng.choice([TCP, TCP, UDP, ICMP]))
    if rng.random() < 0.3:
        client, server = f"2001:db8::{k + 1:x}", "2001:db8:ffff::1"
    else:
        client, server = f"10.0.{k // 200}.{k % 200 + 1}", "93.184.216.34"
    cport, sport = (0, 0) if proto == ICMP else (1024 + k, 443)
    n = int(rng.integers(1, 16))
    p_out = rng.choice([0.0, 0.5, 0.8, 1.0])
    directions = rng.random(n) < p_out
    gaps = np.where(rng.random(n) < 0.25, 0, rng.integers(1, 300_000_000, n))
    gaps[0] = 0
    ts_ns = int(t0 * 1e9) + np.cumsum(gaps)
    if rng.random() < 0.2:
        lengths = np.full(n, int(rng.integers(40, 1501)))
    else:
        lengths = rng.integers(40, 1501, n)
    packets: list[Packet] = []
    for forward, t, size in zip(directions, ts_ns, lengths, strict=True):
        ends = (client, cport, server, sport) if forward else (server, sport, client, cport)
        packets.append((int(t) / 1e9, *ends, proto, int(size), int(size) + 18))
    return packets


@pytest.mark.parametrize("seed", range(2))
def test_many_random_flows_in_several_bursts(seed: int) -> None:
    """Hundreds of interleaved random flows in 3 bursts (5-tuples repeat across bursts).

    Each row of each feature set is compared with the per-flow reference of the flow that the
    row's 5-tuple and burst designate, so mixed-up rows cannot go unnoticed.
    """
    rng = np.random.default_rng(seed)
    packets: list[Packet] = []
    refs: list[RefFlow] = []
    starts = [0]
    for burst in range(3):
        flows = [random_flow(rng, k, 100.0 * burst + rng.random()) for k in range(80)]
        tagged = [(p[0], k, i, p) for k, flow in enumerate(flows) for i, p in enumerate(flow)]
        tagged.sort(key=lambda item: item[:3])  # capture order; a flow keeps its order
        first_seen = list(dict.fromkeys(k for _, k, _, _ in tagged))
        packets += [p for *_, p in tagged]
        refs += [ref_flow(flows[k]) for k in first_seen]
        starts.append(len(packets))
    table = build_flows(one_block(make_batch(packets), starts))
    assert np.array_equal(np.bincount(table.burst), [80, 80, 80])
    assert_features_match(table, refs)


# ------------------------------------------------------------------- set definitions
def test_feature_set_definitions() -> None:
    """Column counts, names and order are part of a model's contract."""
    assert set(FEATURE_SETS) == {"seed14", "appscanner54", "timing39", "payload38", "context48"}
    assert DEFAULT_FEATURE_SET == "payload38"
    assert SEED14.columns == (
        "byte_ratio", "packet_ratio", "len_mean", "len_std", "len_kurtosis", "len_skew",
        "gap_mean", "gap_kurtosis", "gap_skew", "len_min", "len_max", "gap_min", "gap_max",
        "protocol",
    )
    stats = ["min", "max", "mean", "mad", "std", "var", "skew", "kurtosis",
             *(f"p{q}" for q in range(10, 100, 10)), "count"]
    assert APPSCANNER54.columns == tuple(f"{d}_{s}" for d in ("in", "out", "both") for s in stats)
    assert len(TIMING39.columns) == 39
    assert TIMING39.columns[-6:] == (
        "duration", "out_bytes", "in_bytes", "direction_changes", "is_tcp", "is_udp",
    )
    assert PAYLOAD38.columns[:14] == SEED14.columns
    assert PAYLOAD38.columns[14:21] == tuple(
        f"out_data_{s}" for s in ("count", "min", "max", "mean", "std", "median", "bytes"))
    assert PAYLOAD38.columns[-10:] == (
        *(f"data{i}_signed" for i in range(1, 9)), "is_tcp", "is_udp")
    assert CONTEXT48.columns[:38] == PAYLOAD38.columns
    for name, fs in FEATURE_SETS.items():
        assert fs.name == name
        assert len(fs.columns) == len(set(fs.columns)) == int("".join(filter(str.isdigit, name)))
        assert fs.tag == f"{name}/v{fs.version}"
        assert get_feature_set(name) is fs


def test_unknown_feature_set_is_a_usage_error() -> None:
    """A typo in --features is the user's error (one line), not a traceback."""
    with pytest.raises(UsageError, match="known: seed14"):
        get_feature_set("appscanner")


# ------------------------------------------------------------------ random packet soup
HOSTS = ("10.0.0.1", "10.0.0.2", "8.8.8.8", "2001:db8::1", "2001:db8::2")


@st.composite
def packet_soup(draw: st.DrawFn) -> list[Packet]:
    """Random packets between few hosts/ports: flows collide, gaps may be 0 or negative.

    Time advances in whole nanoseconds so that the packets' timestamps are exact.
    """
    n = draw(st.integers(1, 40))
    t_ns = 0
    packets: list[Packet] = []
    for _ in range(n):
        t_ns += draw(st.sampled_from([0, 0, 1, 1_000_000, 300_000_000, 2 * 10**9, -5 * 10**8]))
        v6 = draw(st.booleans())
        pool = HOSTS[3:] if v6 else HOSTS[:3]
        src, dst = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
        ip_len = draw(st.integers(0, 65_535))
        packets.append((
            t_ns / 1e9, src, draw(st.sampled_from([0, 53, 443])), dst,
            draw(st.sampled_from([0, 53, 443])), draw(st.sampled_from([TCP, UDP, ICMP, 50])),
            ip_len, ip_len + draw(st.sampled_from([0, 4, 14, 18])),
        ))
    return packets


def all_features(flows: FlowTable) -> dict[str, np.ndarray]:
    return {name: fs(flows) for name, fs in FEATURE_SETS.items()}


def group_by_hand(packets: Sequence[Packet], cut: int) -> list[list[Packet]]:
    """Flows by plain Python: same burst (before/after ``cut``), protocol and endpoint pair;
    in order of their first packet."""
    flows: dict[tuple[object, ...], list[Packet]] = {}
    for i, p in enumerate(packets):
        key = (i >= cut, p[5], frozenset([(p[1], p[2]), (p[3], p[4])]))
        flows.setdefault(key, []).append(p)
    return list(flows.values())


@settings(max_examples=50, deadline=None)
@given(packet_soup())
def test_random_soup_matches_reference_and_is_finite(packets: list[Packet]) -> None:
    """Colliding, interleaved, out-of-order random flows in two bursts: every feature equals
    the per-flow reference, and models only ever see finite numbers."""
    batch = make_batch(packets)
    cut = len(batch) // 2
    starts = [0, cut, len(batch)] if cut > 0 else None
    flows = build_flows(one_block(batch, starts))
    for name, matrix in all_features(flows).items():
        assert np.isfinite(matrix).all(), name
    assert_features_match(flows, [ref_flow(f) for f in group_by_hand(packets, cut)])


@settings(max_examples=60, deadline=None)
@given(packet_soup(), st.data())
def test_features_do_not_depend_on_the_link_layer(
    packets: list[Packet], data: st.DataObject
) -> None:
    """Same IP packets, other frame lengths (Ethernet, VLAN, cooked, raw IP): same features."""
    batch = make_batch(packets)
    relinked = make_batch([
        (*p[:7], p[6] + data.draw(st.sampled_from([0, 14, 16, 18, 22, 4000]))) for p in packets
    ])
    a, b = all_features(build_flows(one_block(batch))), all_features(
        build_flows(one_block(relinked)))
    for name in FEATURE_SETS:
        assert np.array_equal(a[name], b[name]), name


@settings(max_examples=40, deadline=None)
@given(packet_soup())
def test_burst_context_is_each_bursts_flows_seen_from_the_flow(packets: list[Packet]) -> None:
    """context48's last 10 columns against plain Python over each burst's flows (by hand
    from payload38 and the flow table): counts, times, place, shares, first data packets."""
    batch = make_batch(packets)
    cut = len(batch) // 2
    flows = build_flows(one_block(batch, [0, cut, len(batch)] if cut > 0 else None))
    own, context = PAYLOAD38(flows), CONTEXT48(flows)[:, 38:]
    assert np.array_equal(CONTEXT48(flows)[:, :38], own)
    column = {c: i for i, c in enumerate(PAYLOAD38.columns)}
    for burst in sorted(set(flows.burst.tolist())):
        rows = np.flatnonzero(flows.burst == burst)
        first = flows.first_ts[rows] / 1e9
        payload = own[rows, column["out_data_bytes"]] + own[rows, column["in_data_bytes"]]
        data1, data2 = own[rows, column["data1_signed"]], own[rows, column["data2_signed"]]
        for k, row in enumerate(rows.tolist()):
            expected = [
                len(rows), float(np.sum(flows.packets_fwd[rows] + flows.packets_bwd[rows])),
                float((flows.last_ts[rows].max() - flows.first_ts[rows].min()) / 1e9),
                data1.min(), float(np.median(data1)), data1.max(), float(np.median(data2)),
                k, first[k] - first.min(),
                payload[k] / payload.sum() if payload.sum() > 0 else 0.0,
            ]
            assert context[row] == pytest.approx(expected, rel=1e-9, abs=1e-9), (burst, k)


def test_feature_set_call_checks_the_shape() -> None:
    """A FeatureSet returns exactly one row per flow and one column per name."""
    flows = build_flows(one_block(make_batch(HAND_MADE["mixed directions"])))
    broken = FeatureSet("broken", 1, ("a", "b"), lambda f: np.zeros((len(f), 3)), "")
    with pytest.raises(AssertionError):
        broken(flows)


def test_payload_columns_do_not_depend_on_ip_version_or_tcp_options(tmp_path: Path) -> None:
    """One TLS-like exchange, written once over IPv4 without TCP options and once over IPv6
    with timestamps on every segment and an ACK after each: the IP lengths differ, the payload
    columns of payload38 do not (that is why they carry across networks)."""
    sizes = [(True, 517), (False, 1400), (False, 1400), (False, 900), (True, 126), (False, 51)]

    def conversation(ip: Callable[..., ScapyPacket], client: str, server: str,
                     options: list[tuple[str, Any]], acks: bool) -> list[bytes]:
        frames = []
        for sent, size in sizes:
            src, dst, sport, dport = ((client, server, 40000, 443) if sent
                                      else (server, client, 443, 40000))
            frames.append(bytes(Ether() / ip(src=src, dst=dst) / ScapyTCP(
                sport=sport, dport=dport, flags="PA", options=options) / (b"x" * size)))
            if acks:
                frames.append(bytes(Ether() / ip(src=dst, dst=src) / ScapyTCP(
                    sport=dport, dport=sport, flags="A", options=options)))
        return frames

    def payload_columns(frames: list[bytes]) -> np.ndarray:
        path = write_pcap(tmp_path / "c.pcap", [
            CapturedPacket(1_700_000_000 * 10**9 + i * 10**7, f) for i, f in enumerate(frames)])
        blocks = list(iter_flow_blocks(path, PipelineOptions(burst_gap=None)))
        assert len(blocks) == 1 and len(blocks[0].flows) == 1
        return PAYLOAD38(blocks[0].flows)[0, len(SEED14.columns):]

    plain = payload_columns(conversation(ScapyIP, "10.0.0.2", "93.184.216.34", [], False))
    other = payload_columns(conversation(IPv6, "2001:db8::2", "2001:db8:ffff::1",
                                         [("Timestamp", (1, 2)), ("NOP", None)], True))
    assert np.array_equal(plain, other)
    assert plain[-10:].tolist() == [517, -1400, -1400, -900, 126, -51, 0, 0, 1, 0]
