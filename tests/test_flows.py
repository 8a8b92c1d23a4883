"""The flow engine: bursts -> full flows, their orientation, counters and invariants.

Unit tests pin the documented rules (forward = first packet's direction, or sent by the device
with ``--device``; one-way flows; IPv6; a 5-tuple seen in two bursts is two flows; counters
in frame bytes, features in IP lengths). Property tests then throw random packet sequences
between few hosts and ports (so that flows collide and interleave) at BurstSplitter +
build_flows and check what must hold for any input: every packet lands in exactly one flow,
packets and bytes are conserved, flows are maximal, bursts are cut exactly at the burst gap,
and nothing (flows, counters, features) depends on how the capture was cut into batches.
Finally the hash-collision fallback of ``flows._group`` is forced with engineered keys.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from appsight.addresses import NetworkMatcher, pairs_to_addresses
from appsight.bursts import BurstBlock, BurstSplitter
from appsight.decode import PacketBatch
from appsight.features import FEATURE_SETS
from appsight.flows import FlowTable, _group, _hash, build_flows
from hypothesis import given, settings
from hypothesis import strategies as st
from packet_tuples import TCP, UDP, Packet, make_batch, one_block

SECOND = 10**9

def endpoints(flows: FlowTable, k: int) -> tuple[str, int, str, int]:
    """Flow ``k``'s forward (source address, port, destination address, port) as text."""
    src = pairs_to_addresses(flows.src_hi[k:k + 1], flows.src_lo[k:k + 1])[0]
    dst = pairs_to_addresses(flows.dst_hi[k:k + 1], flows.dst_lo[k:k + 1])[0]
    return src, int(flows.sport[k]), dst, int(flows.dport[k])


def flow_packets(flows: FlowTable, k: int) -> list[tuple[int, int, bool]]:
    """Flow ``k``'s packets as (ts_ns, ip_len, forward)."""
    s, e = flows.start[k], flows.start[k + 1]
    return list(zip(flows.pkt_ts[s:e].tolist(), flows.pkt_len[s:e].tolist(),
                    flows.pkt_fwd[s:e].tolist(), strict=True))


C, S, DNS = "10.0.0.2", "93.184.216.34", "8.8.8.8"


# ----------------------------------------------------------------------- unit tests
def test_forward_is_the_first_packets_direction() -> None:
    """Without --device the first sender is the flow's source, even when it is the server."""
    packets = [
        (0.0, S, 443, C, 40000, TCP, 1500, 1514),
        (0.1, C, 40000, S, 443, TCP, 52, 66),
        (0.2, S, 443, C, 40000, TCP, 1400, 1414),
    ]
    flows = build_flows(one_block(make_batch(packets)))
    assert len(flows) == 1
    assert endpoints(flows, 0) == (S, 443, C, 40000)
    assert flow_packets(flows, 0) == [
        (0, 1500, True), (100_000_000, 52, False), (200_000_000, 1400, True),
    ]
    assert (flows.packets_fwd[0], flows.packets_bwd[0]) == (2, 1)


def test_device_makes_forward_sent_by_the_device() -> None:
    """--device 10.0.0.2: forward is what the device sent, whoever spoke first."""
    device = NetworkMatcher.parse([C])
    packets = [
        (0.0, S, 443, C, 40000, TCP, 1500, 1514),  # server first
        (0.1, C, 40000, S, 443, TCP, 52, 66),
        (0.2, DNS, 53, "10.0.0.9", 5353, UDP, 100, 114),  # device not involved
        (0.3, "10.0.0.9", 5353, DNS, 53, UDP, 60, 74),
        (0.4, C, 5000, DNS, 53, UDP, 70, 84),  # device first anyway
    ]
    flows = build_flows(one_block(make_batch(packets)), device)
    assert [endpoints(flows, k) for k in range(len(flows))] == [
        (C, 40000, S, 443), (DNS, 53, "10.0.0.9", 5353), (C, 5000, DNS, 53),
    ]
    assert flow_packets(flows, 0) == [(0, 1500, False), (100_000_000, 52, True)]
    assert flows.packets_fwd.tolist() == [1, 1, 1]
    assert flows.packets_bwd.tolist() == [1, 1, 0]
    assert flows.bytes_fwd.tolist() == [66, 114, 84]
    assert flows.bytes_bwd.tolist() == [1514, 74, 0]


def test_device_on_both_ends_keeps_first_packets_direction() -> None:
    """When both endpoints are the device's, 'sent by the device' decides nothing."""
    device = NetworkMatcher.parse(["10.0.0.0/24"])
    packets = [
        (0.0, "10.0.0.7", 80, "10.0.0.3", 3000, TCP, 200, 214),
        (0.1, "10.0.0.3", 3000, "10.0.0.7", 80, TCP, 60, 74),
    ]
    flows = build_flows(one_block(make_batch(packets)), device)
    assert endpoints(flows, 0) == ("10.0.0.7", 80, "10.0.0.3", 3000)
    assert flows.pkt_fwd.tolist() == [True, False]


def test_one_way_flow() -> None:
    """A half flow with no reverse stays a flow, with empty backward counters."""
    packets = [(0.1 * k, C, 5004, S, 5004, UDP, 200 + k, 242 + k) for k in range(5)]
    flows = build_flows(one_block(make_batch(packets)))
    assert len(flows) == 1
    assert (flows.packets_fwd[0], flows.packets_bwd[0]) == (5, 0)
    assert (flows.bytes_fwd[0], flows.bytes_bwd[0]) == (sum(242 + k for k in range(5)), 0)
    assert flows.pkt_fwd.all()


def test_ipv6_and_ipv4_flows() -> None:
    """IPv6 addresses (both 64-bit halves) key flows just like IPv4-mapped ones."""
    a, b, c = "2001:db8::1", "2001:db8:1::1", "fe80::1"  # b and c differ in the high half
    packets = [
        (0.0, a, 1000, b, 443, TCP, 80, 94),
        (0.0, a, 1000, c, 443, TCP, 81, 95),
        (0.1, b, 443, a, 1000, TCP, 82, 96),
        (0.2, C, 1000, S, 443, TCP, 83, 97),
        (0.3, c, 443, a, 1000, TCP, 84, 98),
    ]
    flows = build_flows(one_block(make_batch(packets)))
    assert [endpoints(flows, k) for k in range(len(flows))] == [
        (a, 1000, b, 443), (a, 1000, c, 443), (C, 1000, S, 443),
    ]
    assert [len(flow_packets(flows, k)) for k in range(3)] == [2, 2, 1]
    assert flows.pkt_len.tolist() == [80, 82, 81, 84, 83]


def test_same_five_tuple_in_two_bursts_is_two_flows() -> None:
    """Flows never span bursts: the burst is part of the flow key."""
    packets = [
        (0.0, C, 40000, S, 443, TCP, 60, 74),
        (0.5, S, 443, C, 40000, TCP, 61, 75),
        (5.0, S, 443, C, 40000, TCP, 62, 76),  # after a silence: server speaks first now
        (5.1, C, 40000, S, 443, TCP, 63, 77),
    ]
    splitter = BurstSplitter(1.0)
    first = splitter.push(make_batch(packets))
    last = splitter.close()
    assert first is not None and last is not None
    a, b = build_flows(first), build_flows(last)
    assert len(a) == len(b) == 1
    assert endpoints(a, 0) == (C, 40000, S, 443)
    assert endpoints(b, 0) == (S, 443, C, 40000)
    # Same thing within one block of two bursts.
    both = build_flows(one_block(make_batch(packets), [0, 2, 4]))
    assert both.burst.tolist() == [0, 1]
    assert both.packets_fwd.tolist() == both.packets_bwd.tolist() == [1, 1]


def test_protocol_is_part_of_the_key() -> None:
    """TCP and UDP between the same endpoints and ports are different flows."""
    packets = [
        (0.0, C, 443, S, 443, TCP, 60, 74),
        (0.1, C, 443, S, 443, UDP, 1200, 1242),
        (0.2, S, 443, C, 443, UDP, 1200, 1242),
    ]
    flows = build_flows(one_block(make_batch(packets)))
    assert flows.proto.tolist() == [TCP, UDP]
    assert flows.packets_bwd.tolist() == [0, 1]


def test_counters_and_packet_layout() -> None:
    """Counters in frame bytes; per-packet lengths are IP lengths; flows by first packet."""
    packets = [
        (1.0, C, 1, S, 2, TCP, 100, 114),  # flow A
        (1.2, C, 3, DNS, 53, UDP, 50, 64),  # flow B
        (1.2, S, 2, C, 1, TCP, 1500, 1518),  # A, backward, VLAN-tagged frame
        (1.7, DNS, 53, C, 3, UDP, 90, 94),  # B, backward, cooked capture header
        (2.5, C, 1, S, 2, TCP, 40, 40),  # A, raw IP
    ]
    flows = build_flows(one_block(make_batch(packets)))
    assert len(flows) == 2 and flows.packet_count == 5
    assert flows.start.tolist() == [0, 3, 5]
    assert flows.first_ts.tolist() == [SECOND, 1_200_000_000]
    assert flows.last_ts.tolist() == [2_500_000_000, 1_700_000_000]
    assert flows.packets_fwd.tolist() == [2, 1]
    assert flows.packets_bwd.tolist() == [1, 1]
    assert flows.bytes_fwd.tolist() == [154, 64]
    assert flows.bytes_bwd.tolist() == [1518, 94]
    assert flows.pkt_len.tolist() == [100, 1500, 40, 50, 90]
    assert flows.pkt_fwd.tolist() == [True, False, True, True, False]
    assert flows.pkt_ts.tolist() == [SECOND, 1_200_000_000, 2_500_000_000, 1_200_000_000,
                                     1_700_000_000]
    assert flows.burst.tolist() == [0, 0]


def test_empty_burst_is_rejected() -> None:
    """A burst has at least one packet; an empty block is a caller bug, reported as such."""
    with pytest.raises(ValueError, match="at least one packet"):
        build_flows(one_block(PacketBatch.empty()))


# ----------------------------------------------------------------- hash collisions
def full_hash(keys: Sequence[np.ndarray]) -> np.ndarray:
    """The 64-bit key hash exactly as ``_group`` computes it."""
    return _hash(list(keys))


def prefix_hash(values: Sequence[int]) -> int:
    """Hash state after mixing the given leading key values of a single row."""
    return int(full_hash([np.array([v], dtype=np.uint64) for v in values])[0])


def reference_groups(keys: Sequence[np.ndarray]) -> list[list[int]]:
    """Groups of equal key rows, each as ascending row indices, by plain Python."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, row in enumerate(zip(*(k.tolist() for k in keys), strict=True)):
        groups.setdefault(row, []).append(i)
    return sorted(groups.values())


def groups_of(keys: list[np.ndarray]) -> list[list[int]]:
    """``_group``'s result as a sorted list of groups; also checks its own structure."""
    order, starts = _group(keys)
    n = len(keys[0])
    assert sorted(order.tolist()) == list(range(n))  # a permutation
    assert starts[0] == 0 and np.all(np.diff(starts) > 0)
    groups = [order[a:b].tolist() for a, b in itertools.pairwise([*starts.tolist(), n])]
    for g in groups:
        assert g == sorted(g), "grouping must be stable (capture order within a group)"
    return sorted(groups)


def test_group_separates_engineered_hash_collisions() -> None:
    """Rows whose 64-bit hashes collide but whose keys differ must still be two groups.

    With two keys, hash(a, b) = g(g(a) ^ b) for a bijection g, so (a, b) and
    (c, g(a) ^ b ^ g(c)) collide: the collision is built, not hoped for.
    """
    a, b, c = 1, 2, 3
    d = prefix_hash([a]) ^ b ^ prefix_hash([c])
    k0 = np.array([a, c, a, c, a, 9], dtype=np.uint64)
    k1 = np.array([b, d, b, d, b, 9], dtype=np.uint64)
    h = full_hash([k0, k1])
    assert h[0] == h[1] and k0[0] != k0[1]  # the collision is real
    assert groups_of([k0, k1]) == reference_groups([k0, k1]) == [[0, 2, 4], [1, 3], [5]]


def test_build_flows_survives_a_hash_collision() -> None:
    """Two different IPv6 flows engineered to share their 64-bit hash stay two flows.

    The flow key is (proto, a_hi, a_lo, b_hi, b_lo, a_port, b_port) with a the smaller
    endpoint; choosing the second flow's b_hi cancels the difference in a_lo.
    """
    a_hi = 0x2001_0DB8_0000_0000
    b_hi1 = 0x2001_0DB8_FFFF_0000
    h1 = prefix_hash([TCP, a_hi, 1])
    for a_lo2 in itertools.count(2):
        b_hi2 = h1 ^ b_hi1 ^ prefix_hash([TCP, a_hi, a_lo2])
        if b_hi2 > a_hi:  # keep a the smaller endpoint so the key layout is as planned
            break

    def v6(hi: int, lo: int) -> str:
        return pairs_to_addresses(np.array([hi], dtype=np.uint64),
                                  np.array([lo], dtype=np.uint64))[0]

    a1, b1, a2, b2 = v6(a_hi, 1), v6(b_hi1, 7), v6(a_hi, a_lo2), v6(b_hi2, 7)
    packets = [
        (0.0, a1, 1000, b1, 443, TCP, 100, 114),
        (0.1, a2, 1000, b2, 443, TCP, 200, 214),
        (0.2, b1, 443, a1, 1000, TCP, 101, 115),
        (0.3, b2, 443, a2, 1000, TCP, 201, 215),
        (0.4, a1, 1000, b1, 443, TCP, 102, 116),
    ]
    batch = make_batch(packets)
    key = [batch.proto, batch.src_hi, batch.src_lo, batch.dst_hi, batch.dst_lo, batch.sport,
           batch.dport]
    h = full_hash(key)
    assert h[0] == h[1]  # the two flows' keys really collide
    flows = build_flows(one_block(batch))
    assert [endpoints(flows, k) for k in range(len(flows))] == [
        (a1, 1000, b1, 443), (a2, 1000, b2, 443),
    ]
    assert flows.pkt_len.tolist() == [100, 101, 102, 200, 201]
    assert flows.pkt_fwd.tolist() == [True, False, True, True, False]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_group_equals_plain_grouping(data: st.DataObject) -> None:
    """On random keys (few values: many equal rows) ``_group`` is an exact, stable grouping."""
    n = data.draw(st.integers(1, 60))
    n_keys = data.draw(st.integers(1, 5))
    keys = []
    for _ in range(n_keys):
        dtype = data.draw(st.sampled_from([np.int64, np.uint64]))
        top = data.draw(st.sampled_from([1, 2, 3, 2**40]))
        keys.append(np.array(data.draw(st.lists(st.integers(0, top), min_size=n, max_size=n)),
                             dtype=dtype))
    assert groups_of(keys) == reference_groups(keys)


# ----------------------------------------------------------------- property tests
HOSTS_V4 = ("10.0.0.1", "10.0.0.2", "8.8.8.8")
HOSTS_V6 = ("2001:db8::1", "2001:db8::2")
PORTS = (0, 53, 443)


@st.composite
def capture(draw: st.DrawFn, unique_lengths: bool = False) -> tuple[list[Packet], float | None]:
    """Random packets between few hosts/ports (flows collide) and a burst gap.

    Gaps include 0, exactly the burst gap, one ns more, and negative ones (clock steps).
    With ``unique_lengths`` each packet's IP length is its index + 1000, so tests can tell
    which input packet ended up where.
    """
    gap = draw(st.sampled_from([1.0, 0.5, None]))
    gap_ns = SECOND if gap is None else round(gap * 1e9)
    n = draw(st.integers(1, 50))
    t = 1_700_000_000 * SECOND
    packets: list[Packet] = []
    for i in range(n):
        t += draw(st.sampled_from([0, 0, 1, gap_ns // 2, gap_ns, gap_ns + 1, 3 * SECOND,
                                   -SECOND // 2]))
        pool = HOSTS_V6 if draw(st.booleans()) else HOSTS_V4
        ip_len = 1000 + i if unique_lengths else draw(st.integers(20, 1500))
        packets.append((
            t / 1e9, draw(st.sampled_from(pool)), draw(st.sampled_from(PORTS)),
            draw(st.sampled_from(pool)), draw(st.sampled_from(PORTS)),
            draw(st.sampled_from([TCP, UDP])), ip_len,
            ip_len + draw(st.sampled_from([0, 14, 18])),
        ))
    return packets, gap


def run(
    batch: PacketBatch, gap: float | None, cuts: Sequence[int],
    device: NetworkMatcher | None = None,
) -> list[tuple[int, BurstBlock, FlowTable]]:
    """Push ``batch`` cut at ``cuts`` through a BurstSplitter, then close it; build flows for
    every block. Returns (number of bursts before the block, block, flows) per block."""
    splitter = BurstSplitter(gap)
    blocks = []
    for a, b in itertools.pairwise([0, *sorted(cuts), len(batch)]):
        blocks.append(splitter.push(batch.take(slice(a, b))))
    blocks.append(splitter.close())
    out = []
    seen = 0
    for block in blocks:
        if block is not None:
            out.append((seen, block, build_flows(block, device)))
            seen += block.count
    return out


def records(results: list[tuple[int, BurstBlock, FlowTable]]) -> list[tuple[Any, ...]]:
    """Every flow, in output order, as a comparable tuple: global burst, 5-tuple, counters,
    packets and the rows of all three feature matrices."""
    out = []
    for offset, _, flows in results:
        matrices = [fs(flows).tolist() for fs in FEATURE_SETS.values()]
        for k in range(len(flows)):
            s, e = flows.start[k], flows.start[k + 1]
            out.append((
                offset + int(flows.burst[k]),
                *(int(getattr(flows, c)[k]) for c in (
                    "first_ts", "proto", "src_hi", "src_lo", "sport", "dst_hi", "dst_lo",
                    "dport", "last_ts", "packets_fwd", "packets_bwd", "bytes_fwd", "bytes_bwd",
                )),
                tuple(flows.pkt_ts[s:e].tolist()), tuple(flows.pkt_len[s:e].tolist()),
                tuple(flows.pkt_fwd[s:e].tolist()),
                *(tuple(m[k]) for m in matrices),
            ))
    return out


DEVICES = [None, NetworkMatcher.parse(["10.0.0.2"]), NetworkMatcher.parse(["2001:db8::/64"])]


@settings(max_examples=120, deadline=None)
@given(capture(unique_lengths=True), st.data())
def test_flow_engine_invariants(capture_and_gap: tuple[list[Packet], float | None],
                                data: st.DataObject) -> None:
    """Partition, conservation, orientation, maximality and burst rules on random input."""
    packets, gap = capture_and_gap
    batch = make_batch(packets)
    n = len(batch)
    device = data.draw(st.sampled_from(DEVICES))
    cuts = data.draw(st.lists(st.integers(0, n), max_size=4))
    results = run(batch, gap, cuts, device)

    # Bursts: the blocks hold the input in order, cut exactly where the gap is exceeded.
    blocks = [block for _, block, _ in results]
    joined = PacketBatch.concat([b.packets for b in blocks])
    for column in PacketBatch.COLUMNS:
        assert np.array_equal(getattr(joined, column), getattr(batch, column)), column
    bursts = [b.packets.ts_ns[s:e].tolist() for b in blocks
              for s, e in itertools.pairwise(b.starts.tolist())]
    limit = float("inf") if gap is None else round(gap * 1e9)
    assert all(bursts)
    for ts in bursts:
        assert all(later - earlier <= limit for earlier, later in itertools.pairwise(ts))
    for before, after in itertools.pairwise(bursts):
        assert after[0] - before[-1] > limit
    burst_of_packet = np.repeat(np.arange(len(bursts)), [len(b) for b in bursts])

    tuples = list(zip(batch.proto.tolist(), batch.src_hi.tolist(), batch.src_lo.tolist(),
                      batch.sport.tolist(), batch.dst_hi.tolist(), batch.dst_lo.tolist(),
                      batch.dport.tolist(), strict=True))
    frame = batch.frame_len.tolist()
    ts_in = batch.ts_ns.tolist()
    seen: list[int] = []
    keys = set()
    total_packets = total_bytes = 0
    for offset, _, flows in results:
        assert np.all(np.diff(flows.burst) >= 0), "flows of a burst are contiguous"
        for k in range(len(flows)):
            s, e = flows.start[k], flows.start[k + 1]
            index = [v - 1000 for v in flows.pkt_len[s:e].tolist()]
            fwd = flows.pkt_fwd[s:e].tolist()
            seen += index
            assert index == sorted(index), "a flow's packets are in capture order"
            assert flows.pkt_ts[s:e].tolist() == [ts_in[i] for i in index]
            burst = offset + int(flows.burst[k])
            assert all(burst_of_packet[i] == burst for i in index), "flows stay in a burst"

            proto = int(flows.proto[k])
            src = (int(flows.src_hi[k]), int(flows.src_lo[k]), int(flows.sport[k]))
            dst = (int(flows.dst_hi[k]), int(flows.dst_lo[k]), int(flows.dport[k]))
            for i, forward in zip(index, fwd, strict=True):
                expected = (proto, *src, *dst) if forward else (proto, *dst, *src)
                assert tuples[i] == expected, "a packet shares its flow's 5-tuple"
            key = (burst, proto, frozenset((src, dst)))
            assert key not in keys, "flows are maximal: one flow per 5-tuple and burst"
            keys.add(key)

            # Orientation: the first packet's, or sent by the device.
            src_in, dst_in = (
                (False, False) if device is None else
                tuple(device.contains(np.array([x[0]], dtype=np.uint64),
                                      np.array([x[1]], dtype=np.uint64))[0] for x in (src, dst))
            )
            if src_in != dst_in:
                assert src_in, "with --device, forward is sent by the device"
            else:
                assert fwd[0], "forward is the first packet's direction"

            # Counters.
            assert flows.packets_fwd[k] == sum(fwd)
            assert flows.packets_bwd[k] == len(fwd) - sum(fwd)
            sent = sum(frame[i] for i, f in zip(index, fwd, strict=True) if f)
            received = sum(frame[i] for i in index) - sent
            assert (flows.bytes_fwd[k], flows.bytes_bwd[k]) == (sent, received)
            assert flows.first_ts[k] == min(ts_in[i] for i in index)
            assert flows.last_ts[k] == max(ts_in[i] for i in index)
            total_packets += int(flows.packets_fwd[k] + flows.packets_bwd[k])
            total_bytes += int(flows.bytes_fwd[k] + flows.bytes_bwd[k])
    assert sorted(seen) == list(range(n)), "every packet lands in exactly one flow"
    assert total_packets == n
    assert total_bytes == sum(frame)


@settings(max_examples=100, deadline=None)
@given(capture(), st.data())
def test_result_does_not_depend_on_chunking(
    capture_and_gap: tuple[list[Packet], float | None], data: st.DataObject
) -> None:
    """Flows, counters and all feature matrices are identical however the input is batched.

    Reading a capture in batches of any size (or live, packet by packet) must not change a
    single number: the reference is the whole capture pushed at once, then close().
    """
    packets, gap = capture_and_gap
    batch = make_batch(packets)
    device = data.draw(st.sampled_from(DEVICES))
    cuts = data.draw(st.lists(st.integers(0, len(batch)), max_size=8))
    expected = records(run(batch, gap, [], device))
    assert records(run(batch, gap, cuts, device)) == expected
    one_by_one = records(run(batch, gap, range(1, len(batch)), device))
    assert one_by_one == expected
