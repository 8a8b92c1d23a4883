"""Flows stage: half flows per direction, matched into full flows at the end of a burst.

A half flow is the packets of one direction of one 5-tuple (protocol, source address and
port, destination address and port) inside one burst. Matching a half flow with its reverse
is the same as grouping packets by the direction-free form of their 5-tuple, which is what
:func:`build_flows` does for a whole burst at once; a half flow without a reverse stays a
one-way flow.

A flow's forward direction is that of its first packet; with a device matcher (``--device``),
forward is "sent by the device" whenever exactly one endpoint belongs to the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .addresses import NetworkMatcher
from .bursts import BurstBlock
from .decode import PacketBatch

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


@dataclass
class FlowTable:
    """The full flows of one or more consecutive bursts, in order of their first packet.

    ``burst`` numbers each flow's burst within the block (flows of a burst are contiguous).
    Per-flow columns hold the 5-tuple in forward orientation and the counters. The packets of
    flow ``k`` are ``pkt_*[start[k]:start[k + 1]]`` in capture order, with ``pkt_fwd``
    telling their direction; features are computed from these.
    """

    burst: np.ndarray
    proto: np.ndarray
    src_hi: np.ndarray
    src_lo: np.ndarray
    sport: np.ndarray
    dst_hi: np.ndarray
    dst_lo: np.ndarray
    dport: np.ndarray
    first_ts: np.ndarray
    last_ts: np.ndarray
    packets_fwd: np.ndarray
    packets_bwd: np.ndarray
    bytes_fwd: np.ndarray
    bytes_bwd: np.ndarray
    start: np.ndarray
    pkt_ts: np.ndarray
    pkt_len: np.ndarray
    pkt_fwd: np.ndarray
    pkt_payload: np.ndarray

    def __len__(self) -> int:
        return len(self.proto)

    @property
    def packet_count(self) -> int:
        return len(self.pkt_ts)


def _mix(h: np.ndarray, value: np.ndarray) -> np.ndarray:
    """One round of a 64-bit hash (splitmix64 finaliser); wraps around by design."""
    h = (h ^ value.astype(np.uint64)) * _M1
    h ^= h >> np.uint64(31)
    h *= _M2
    h ^= h >> np.uint64(29)
    return h * _M3


def _hash(keys: list[np.ndarray]) -> np.ndarray:
    """A 64-bit hash of each row of ``keys``."""
    h = np.zeros(len(keys[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for key in keys:
            h = _mix(h, key)
    return h


def _group(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stable grouping of equal key rows: (order of packets sorted by group, group starts).

    A 64-bit hash of the key sorts in one pass; the groups are then checked against the keys
    themselves, and a full multi-key sort is used in the (astronomically rare) case of a
    collision, so the result is always exact.
    """
    n = len(keys[0])
    h = _hash(keys)
    order = np.argsort(h, kind="stable")
    sorted_hash = h[order]
    boundary = np.empty(n, dtype=bool)
    boundary[0] = True
    np.not_equal(sorted_hash[1:], sorted_hash[:-1], out=boundary[1:])
    exact = np.empty(n, dtype=bool)
    exact[0] = True
    differs = np.zeros(n - 1, dtype=bool)
    for key in keys:
        ks = key[order]
        differs |= ks[1:] != ks[:-1]
    exact[1:] = differs
    if (exact & ~boundary).any():
        order = np.lexsort(keys[::-1])
        exact[1:] = False
        for key in keys:
            ks = key[order]
            exact[1:] |= ks[1:] != ks[:-1]
    return order, np.flatnonzero(exact)


def _undirected_keys(packets: PacketBatch) -> tuple[np.ndarray, list[np.ndarray]]:
    """Whether each packet travels from the larger endpoint, and its direction-free 5-tuple
    (protocol, then the smaller (address, port) endpoint first): equal for both halves of a
    full flow."""
    sh, sl, sp = packets.src_hi, packets.src_lo, packets.sport
    dh, dl, dp = packets.dst_hi, packets.dst_lo, packets.dport
    swapped = (sh > dh) | ((sh == dh) & ((sl > dl) | ((sl == dl) & (sp > dp))))
    a_hi, a_lo = np.where(swapped, dh, sh), np.where(swapped, dl, sl)
    b_hi, b_lo = np.where(swapped, sh, dh), np.where(swapped, sl, dl)
    a_port, b_port = np.where(swapped, dp, sp), np.where(swapped, sp, dp)
    return swapped, [packets.proto, a_hi, a_lo, b_hi, b_lo, a_port, b_port]


def flow_hash(packets: PacketBatch) -> np.ndarray:
    """A 64-bit hash of each packet's full flow (its direction-free 5-tuple).

    For bookkeeping that may merge two flows on a collision without harm (counting and
    choosing the flows of an open burst, :mod:`appsight.limits`); :func:`build_flows` itself
    never relies on the hash alone.
    """
    return _hash(_undirected_keys(packets)[1])


def build_flows(block: BurstBlock, device: NetworkMatcher | None = None) -> FlowTable:
    """Group the packets of each burst of a block into full flows (see the module docstring)."""
    burst = block.packets
    n = len(burst)
    if n == 0:
        raise ValueError("a burst has at least one packet")
    burst_of = block.burst_of_packet()
    sh, sl, sp = burst.src_hi, burst.src_lo, burst.sport
    dh, dl, dp = burst.dst_hi, burst.dst_lo, burst.dport
    swapped, keys = _undirected_keys(burst)
    if block.count > 1:
        keys.insert(0, burst_of)
    order, starts = _group(keys)

    # Groups in order of their first packet (stable sort: a group's first entry is its earliest).
    first_pos = order[starts]
    flow_rank = np.argsort(first_pos, kind="stable")
    sizes = np.diff(np.append(starts, n))
    group_of_sorted = np.repeat(np.arange(len(starts)), sizes)
    rank_of_group = np.empty_like(flow_rank)
    rank_of_group[flow_rank] = np.arange(len(flow_rank))
    packet_order = order[np.argsort(rank_of_group[group_of_sorted], kind="stable")]
    sizes = sizes[flow_rank]
    start = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=start[1:])
    first = packet_order[start[:-1]]
    flow_id = np.repeat(np.arange(len(sizes)), sizes)

    # Forward orientation of each flow: its first packet's, or "from the device".
    forward_swapped = swapped[first]
    if device is not None:
        src_in = device.contains(sh[first], sl[first])
        dst_in = device.contains(dh[first], dl[first])
        forward_swapped = np.where(dst_in & ~src_in, ~forward_swapped, forward_swapped)
    pkt_swapped = swapped[packet_order]
    pkt_fwd = pkt_swapped == forward_swapped[flow_id]

    flip = forward_swapped != swapped[first]  # first packet travels backwards
    f_sh, f_sl, f_sp = sh[first], sl[first], sp[first]
    f_dh, f_dl, f_dp = dh[first], dl[first], dp[first]
    frame = burst.frame_len[packet_order]
    ts = burst.ts_ns[packet_order]
    n_flows = len(sizes)
    packets_fwd = np.bincount(flow_id, weights=pkt_fwd, minlength=n_flows).astype(np.int64)
    bytes_fwd = np.bincount(flow_id, weights=frame * pkt_fwd, minlength=n_flows).astype(np.int64)
    bytes_all = np.add.reduceat(frame, start[:-1])
    return FlowTable(
        burst=burst_of[first],
        proto=burst.proto[first],
        src_hi=np.where(flip, f_dh, f_sh),
        src_lo=np.where(flip, f_dl, f_sl),
        sport=np.where(flip, f_dp, f_sp),
        dst_hi=np.where(flip, f_sh, f_dh),
        dst_lo=np.where(flip, f_sl, f_dl),
        dport=np.where(flip, f_sp, f_dp),
        first_ts=np.minimum.reduceat(ts, start[:-1]),
        last_ts=np.maximum.reduceat(ts, start[:-1]),
        packets_fwd=packets_fwd,
        packets_bwd=sizes - packets_fwd,
        bytes_fwd=bytes_fwd,
        bytes_bwd=bytes_all - bytes_fwd,
        start=start,
        pkt_ts=ts,
        pkt_len=burst.ip_len[packet_order],
        pkt_fwd=pkt_fwd,
        pkt_payload=burst.payload_len[packet_order],
    )
