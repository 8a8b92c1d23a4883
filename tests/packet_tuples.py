"""Readable packet tuples turned into the decoder's output, for flow and feature tests.

A test writes each packet as ``(t_seconds, src, sport, dst, dport, proto, ip_len,
frame_len)``; :func:`make_batch` makes the :class:`~appsight.decode.PacketBatch` the decoder
would have produced for it. The transport payload length is derived from the IP length by
:func:`payload_of` (IPv4 without options, TCP without options), so tests that check payload
features compute their expectations with the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from appsight.addresses import address_to_pair
from appsight.bursts import BurstBlock
from appsight.decode import PacketBatch

TCP, UDP, ICMP = 6, 17, 1

# (t_seconds, src, sport, dst, dport, proto, ip_len, frame_len)
Packet = tuple[float, str, int, str, int, int, int, int]


def payload_of(proto: int, ip_len: int) -> int:
    """The payload bytes of an IPv4 packet of ``ip_len`` bytes without IP or TCP options."""
    header = 20 + {TCP: 20, UDP: 8}.get(proto, 0)
    return max(ip_len - header, 0)


def make_batch(packets: Sequence[Packet]) -> PacketBatch:
    """A PacketBatch, in the given (capture) order, from readable packet tuples."""
    if not packets:
        return PacketBatch.empty()
    t, src, sport, dst, dport, proto, ip_len, frame_len = zip(*packets, strict=True)
    s = [address_to_pair(a) for a in src]
    d = [address_to_pair(a) for a in dst]

    def i64(values: Sequence[int]) -> np.ndarray:
        return np.array(values, dtype=np.int64)

    def u64(values: Sequence[int]) -> np.ndarray:
        return np.array(values, dtype=np.uint64)

    return PacketBatch(
        ts_ns=i64([round(x * 1e9) for x in t]), frame_len=i64(frame_len), ip_len=i64(ip_len),
        proto=i64(proto), src_hi=u64([p[0] for p in s]), src_lo=u64([p[1] for p in s]),
        dst_hi=u64([p[0] for p in d]), dst_lo=u64([p[1] for p in d]),
        sport=i64(sport), dport=i64(dport),
        payload_len=np.array([payload_of(p, n) for p, n in zip(proto, ip_len, strict=True)],
                             dtype=np.int32),
    )


def one_block(batch: PacketBatch, starts: Sequence[int] | None = None) -> BurstBlock:
    """The batch as one BurstBlock (one burst unless burst ``starts`` are given)."""
    bounds = [0, len(batch)] if starts is None else list(starts)
    return BurstBlock(batch, np.array(bounds, dtype=np.int64))
