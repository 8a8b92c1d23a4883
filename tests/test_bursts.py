"""BurstSplitter and ``--burst-gap`` parsing: where exactly a capture is cut into bursts.

A burst ends where the capture stays silent for *more than* the burst gap; an off-by-one at
the boundary, a gap lost between two pushed batches, or a negative (out-of-order) gap taken
for silence would each move flows into the wrong burst, so each rule has its own test.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pytest
from appsight.bursts import DEFAULT_BURST_GAP, BurstBlock, BurstSplitter, parse_burst_gap
from appsight.decode import PacketBatch
from appsight.errors import UsageError
from hypothesis import given, settings
from hypothesis import strategies as st

SECOND = 10**9
T0 = 1_700_000_000 * SECOND  # realistic epoch timestamps (ns)


def batch(ts_ns: Sequence[int]) -> PacketBatch:
    """Packets that differ only in time; ``ip_len`` numbers them so order can be checked."""
    n = len(ts_ns)
    zeros_u = np.zeros(n, dtype=np.uint64)
    ints = np.arange(n, dtype=np.int64)
    return PacketBatch(
        ts_ns=np.asarray(ts_ns, dtype=np.int64), frame_len=ints + 14, ip_len=ints,
        proto=np.full(n, 17, dtype=np.int64), src_hi=zeros_u, src_lo=zeros_u + 1,
        dst_hi=zeros_u, dst_lo=zeros_u + 2, sport=ints * 0 + 1, dport=ints * 0 + 2,
        payload_len=(ints * 0).astype(np.int32),
    )


def bursts_of(block: BurstBlock | None) -> list[list[int]]:
    """The timestamps of each burst of a block (none for ``None``)."""
    if block is None:
        return []
    ts = block.packets.ts_ns.tolist()
    s = block.starts.tolist()
    return [ts[a:b] for a, b in itertools.pairwise(s)]


def split(ts_ns: Sequence[int], gap: float | None, chunks: Sequence[int] = ()) -> list[list[int]]:
    """All bursts (as timestamp lists) from pushing ``ts_ns`` cut at ``chunks``, then close()."""
    splitter = BurstSplitter(gap)
    bounds = [0, *chunks, len(ts_ns)]
    out: list[list[int]] = []
    for a, b in itertools.pairwise(bounds):
        out += bursts_of(splitter.push(batch(list(ts_ns[a:b]))))
    out += bursts_of(splitter.close())
    return out


def test_gap_equal_to_burst_gap_does_not_split() -> None:
    """Silence of exactly the burst gap keeps one burst: only *longer* silence cuts."""
    assert split([T0, T0 + SECOND], 1.0) == [[T0, T0 + SECOND]]
    assert split([T0, T0 + SECOND // 2], 0.5) == [[T0, T0 + SECOND // 2]]


def test_gap_one_nanosecond_longer_splits() -> None:
    """One nanosecond above the burst gap is enough to cut."""
    assert split([T0, T0 + SECOND + 1], 1.0) == [[T0], [T0 + SECOND + 1]]
    assert split([T0, T0 + SECOND // 2 + 1], 0.5) == [[T0], [T0 + SECOND // 2 + 1]]


@pytest.mark.parametrize("chunks", [(), (1,), (1, 1), (2,), (0, 3)])
def test_boundary_rule_holds_across_pushes(chunks: tuple[int, ...]) -> None:
    """The gap between the last packet of one push and the first of the next counts too."""
    ts = [T0, T0 + SECOND, T0 + 2 * SECOND + 1, T0 + 2 * SECOND + 2]
    assert split(ts, 1.0, chunks) == [[T0, T0 + SECOND], [T0 + 2 * SECOND + 1, T0 + 2 * SECOND + 2]]


def test_default_gap_is_one_second() -> None:
    """The documented default (1 s) is what a splitter without arguments uses."""
    assert DEFAULT_BURST_GAP == 1.0
    assert BurstSplitter().gap_ns == SECOND


def test_no_gap_means_one_burst() -> None:
    """``None``: however long the silences, nothing is cut until close()."""
    splitter = BurstSplitter(None)
    assert splitter.push(batch([T0, T0 + 3600 * SECOND])) is None
    assert splitter.push(batch([T0 + 7200 * SECOND])) is None
    assert bursts_of(splitter.close()) == [[T0, T0 + 3600 * SECOND, T0 + 7200 * SECOND]]


def test_push_returns_completed_bursts_and_keeps_the_open_one() -> None:
    """A push returns every burst it completed in one block; the last burst stays open."""
    splitter = BurstSplitter(1.0)
    ts = [T0, T0 + 5 * SECOND, T0 + 5 * SECOND + 1, T0 + 9 * SECOND, T0 + 20 * SECOND]
    block = splitter.push(batch(ts))
    assert block is not None
    assert bursts_of(block) == [[ts[0]], ts[1:3], [ts[3]]]
    assert block.count == 3
    assert block.burst_of_packet().tolist() == [0, 1, 1, 2]
    assert block.packets.ip_len.tolist() == [0, 1, 2, 3]  # order and payload kept
    assert splitter.last_packet_ts == ts[4]
    closed = splitter.close()
    assert bursts_of(closed) == [[ts[4]]]
    assert closed is not None and closed.count == 1


def test_close_returns_the_open_burst_once() -> None:
    """close() hands over the open burst, then the splitter is empty and starts afresh."""
    splitter = BurstSplitter(1.0)
    assert splitter.close() is None  # nothing pushed yet
    assert splitter.push(batch([T0, T0 + 1])) is None
    assert splitter.push(batch([T0 + 2])) is None
    assert bursts_of(splitter.close()) == [[T0, T0 + 1, T0 + 2]]
    assert splitter.close() is None
    assert splitter.last_packet_ts is None
    # After close the next packet opens a new burst whatever its distance to the old one.
    assert splitter.push(batch([T0 + 3])) is None
    assert bursts_of(splitter.close()) == [[T0 + 3]]


def test_empty_pushes_change_nothing() -> None:
    """Empty batches (e.g. a read that decoded no IP packet) neither cut nor lose anything."""
    splitter = BurstSplitter(1.0)
    assert splitter.push(PacketBatch.empty()) is None
    assert splitter.push(batch([T0])) is None
    assert splitter.push(PacketBatch.empty()) is None
    assert splitter.last_packet_ts == T0
    block = splitter.push(batch([T0 + 2 * SECOND]))
    assert bursts_of(block) == [[T0]]
    assert splitter.push(PacketBatch.empty()) is None
    assert bursts_of(splitter.close()) == [[T0 + 2 * SECOND]]


def test_out_of_order_timestamps_never_split() -> None:
    """A negative gap (capture clock stepping back) is not silence, however large."""
    ts = [T0 + 10 * SECOND, T0, T0 + 1, T0 - 3600 * SECOND, T0 - 3600 * SECOND + SECOND]
    assert split(ts, 1.0) == [ts]
    # A real silence after a step back is still measured from the previous packet.
    ts = [T0 + 10 * SECOND, T0, T0 + 2 * SECOND]
    assert split(ts, 1.0) == [ts[:2], ts[2:]]
    assert split(ts, 1.0, (1,)) == [ts[:2], ts[2:]]
    assert split(ts, 1.0, (2,)) == [ts[:2], ts[2:]]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from([0, 1, SECOND // 2, SECOND, SECOND + 1, 3 * SECOND, -SECOND * 5]),
             min_size=1, max_size=40),
    st.sampled_from([0.5, 1.0, 2.0, None]),
    st.data(),
)
def test_bursts_are_maximal_and_chunking_free(
    gaps: list[int], gap: float | None, data: st.DataObject
) -> None:
    """Bursts partition the input in order, have no inner gap > burst gap, are separated by
    gaps > burst gap, and do not depend on how the input is cut into pushes."""
    ts = (T0 + np.cumsum(gaps)).tolist()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ts)), max_size=6)))
    bursts = split(ts, gap, cuts)
    assert bursts == split(ts, gap)
    assert [t for b in bursts for t in b] == ts
    assert all(b for b in bursts)
    limit = float("inf") if gap is None else round(gap * 1e9)
    for b in bursts:
        assert all(later - earlier <= limit for earlier, later in itertools.pairwise(b))
    for before, after in itertools.pairwise(bursts):
        assert after[0] - before[-1] > limit


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1.0), ("0.5", 0.5), ("2.25", 2.25), ("none", None), ("None", None), (" NONE ", None)],
)
def test_parse_burst_gap_accepts(text: str, expected: float | None) -> None:
    """Seconds > 0, or 'none' (any case) for one burst per capture."""
    assert parse_burst_gap(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "abc", "", "nan", "-0.5", "1e400"])
def test_parse_burst_gap_rejects(text: str) -> None:
    """Zero, negative, non-numeric and non-finite values are the user's error, not a crash."""
    with pytest.raises(UsageError, match="burst-gap"):
        parse_burst_gap(text)
