"""Features stage: named, versioned feature sets computed per flow.

A feature set turns a :class:`~appsight.flows.FlowTable` into a matrix with one row per flow.
Its name and version travel with every model trained on it, so a model is never fed features
it was not trained on. All packet lengths here are IP-layer lengths (the IP total length of
the innermost IP header), so a model trained on Ethernet captures works on Linux cooked or
raw-IP captures; all gaps are in seconds. "Outgoing" is the flow's forward direction (sent by
the device with ``--device``, else by the flow's first sender), "incoming" the reverse.

Sets:

* ``seed14`` (v1): the 14 features of the original course project, with its edge cases.
* ``appscanner54`` (v1): AppScanner's 3 series (incoming, outgoing, both) x 18 statistics.
* ``timing39`` (v1): lengths *and* inter-arrival times per direction, plus flow shape.
* ``payload38`` (v1, the default): seed14 plus the transport payload sizes of the packets that
  carry data, per direction, the first data packets' sizes in order, signed by direction, and
  the transport protocol as two yes/no columns.

Why ``payload38`` carries across captures best (``docs/accuracy-protocols.md``): an IP length
mixes the data an app sends with things of the network and the operating system (IPv4 or IPv6,
extension headers, TCP options such as timestamps), and bare acknowledgements, whose number
follows the receiver's acknowledgement policy, dilute every statistic. Payload sizes of data
packets are what the app itself decides, and the first few in order (a TLS client hello, the
server's certificate flight, a request and its reply) are the handshake that tells apps and
protocols apart; AppScanner's statistics and nfstream's average them away. The protocol appears
twice (seed14's code and the yes/no columns) on purpose: each split of a tree draws from a
random sixth of the columns, and protocol is the strongest single feature across captures, so
offering it more often measurably helps (+0.01 to +0.02 of macro-F1 in that benchmark).

Statistical conventions (population standard deviation, biased skewness and kurtosis, linear
percentiles, unscaled median absolute deviation, undefined statistics = 0) are those of
:mod:`appsight.groupstats`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import UsageError
from .flows import FlowTable
from .groupstats import Series

PROTO_TCP, PROTO_UDP = 6, 17


@dataclass(frozen=True)
class FeatureSet:
    """A named, versioned list of per-flow features and the function computing them."""

    name: str
    version: int
    columns: tuple[str, ...]
    compute: Callable[[FlowTable], np.ndarray]
    summary: str

    @property
    def tag(self) -> str:
        """``name/version``, the identity stored with models."""
        return f"{self.name}/v{self.version}"

    def __call__(self, flows: FlowTable) -> np.ndarray:
        matrix = self.compute(flows)
        assert matrix.shape == (len(flows), len(self.columns))
        return matrix


def _ratio(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """``forward / backward``, or the reciprocal ``backward / forward`` when backward is 0.

    The original project's "sent / received, or the reciprocal" is read this way: the
    reciprocal is taken exactly when the first form would divide by zero, which makes a
    one-way flow's ratio 0 (both counts cannot be 0: a flow has a packet).
    """
    forward = forward.astype(np.float64)
    backward = backward.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            backward > 0, forward / np.where(backward > 0, backward, 1.0),
            np.where(forward > 0, backward / np.where(forward > 0, forward, 1.0), 0.0),
        )


def _directional(flows: FlowTable) -> tuple[Series, Series, Series]:
    """Packet-length series: (incoming, outgoing, both directions)."""
    both = Series(flows.pkt_len, flows.start)
    incoming = Series.select(flows.pkt_len, flows.start, ~flows.pkt_fwd)
    outgoing = Series.select(flows.pkt_len, flows.start, flows.pkt_fwd)
    return incoming, outgoing, both


def _seed14(flows: FlowTable) -> np.ndarray:
    lengths = Series(flows.pkt_len, flows.start)
    gaps = lengths.gaps(flows.pkt_ts)
    n = lengths.count
    fwd_bytes = np.bincount(
        np.repeat(np.arange(len(flows)), n), weights=flows.pkt_len * flows.pkt_fwd,
        minlength=len(flows),
    )
    bwd_bytes = lengths.sum() - fwd_bytes
    protocol = np.select([flows.proto == PROTO_TCP, flows.proto == PROTO_UDP], [1.0, 0.0], 2.0)
    return np.column_stack([
        _ratio(fwd_bytes, bwd_bytes),
        _ratio(flows.packets_fwd, flows.packets_bwd),
        lengths.mean(),
        np.where(n > 2, lengths.std(), 0.0),
        lengths.kurtosis(),
        lengths.skew(),
        np.where(n > 1, gaps.mean(), 0.0),
        gaps.kurtosis(),
        gaps.skew(),
        lengths.min(),
        lengths.max(),
        gaps.min(),
        gaps.max(),
        protocol,
    ])


SEED14 = FeatureSet(
    name="seed14",
    version=1,
    columns=(
        "byte_ratio", "packet_ratio", "len_mean", "len_std", "len_kurtosis", "len_skew",
        "gap_mean", "gap_kurtosis", "gap_skew", "len_min", "len_max", "gap_min", "gap_max",
        "protocol",
    ),
    compute=_seed14,
    summary="the original project's 14 features (sizes, gaps, ratios, protocol)",
)

_APPSCANNER_STATS = (
    "min", "max", "mean", "mad", "std", "var", "skew", "kurtosis",
    *(f"p{q}" for q in range(10, 100, 10)), "count",
)


def _series_stats(series: Series) -> list[np.ndarray]:
    deciles = series.percentiles(tuple(range(10, 100, 10)))
    return [
        series.min(), series.max(), series.mean(), series.mad(), series.std(), series.var(),
        series.skew(), series.kurtosis(),
        *deciles.T,
        series.count.astype(np.float64),
    ]


def _appscanner54(flows: FlowTable) -> np.ndarray:
    columns: list[np.ndarray] = []
    for series in _directional(flows):
        columns.extend(_series_stats(series))
    return np.column_stack(columns)


APPSCANNER54 = FeatureSet(
    name="appscanner54",
    version=1,
    columns=tuple(
        f"{series}_{stat}" for series in ("in", "out", "both") for stat in _APPSCANNER_STATS
    ),
    compute=_appscanner54,
    summary="AppScanner: packet-length statistics of incoming, outgoing and all packets",
)

_TIMING_SERIES_STATS = (
    "len_count", "len_min", "len_max", "len_mean", "len_std", "len_median",
    "gap_min", "gap_max", "gap_mean", "gap_std", "gap_median",
)


def _timing39(flows: FlowTable) -> np.ndarray:
    columns: list[np.ndarray] = []
    both = Series(flows.pkt_len, flows.start)
    for mask in (flows.pkt_fwd, ~flows.pkt_fwd, None):
        lengths = both if mask is None else Series.select(flows.pkt_len, flows.start, mask)
        ts = flows.pkt_ts if mask is None else flows.pkt_ts[mask]
        gaps = lengths.gaps(ts)
        columns += [
            lengths.count.astype(np.float64), lengths.min(), lengths.max(), lengths.mean(),
            lengths.std(), lengths.median(),
            gaps.min(), gaps.max(), gaps.mean(), gaps.std(), gaps.median(),
        ]
    duration = (flows.last_ts - flows.first_ts) / 1e9
    group = np.repeat(np.arange(len(flows)), both.count)
    fwd = flows.pkt_fwd.astype(np.int8)
    turns = np.zeros(len(fwd), dtype=np.float64)
    turns[1:] = fwd[1:] != fwd[:-1]
    turns[flows.start[:-1][both.count > 0]] = 0  # a flow's first packet turns nothing
    direction_changes = np.bincount(group, weights=turns, minlength=len(flows))
    out_bytes = np.bincount(group, weights=flows.pkt_len * flows.pkt_fwd, minlength=len(flows))
    in_bytes = both.sum() - out_bytes
    columns += [
        duration,
        out_bytes,
        in_bytes,
        direction_changes,
        (flows.proto == PROTO_TCP).astype(np.float64),
        (flows.proto == PROTO_UDP).astype(np.float64),
    ]
    return np.column_stack(columns)


TIMING39 = FeatureSet(
    name="timing39",
    version=1,
    columns=(
        *(f"{series}_{stat}" for series in ("out", "in", "both") for stat in _TIMING_SERIES_STATS),
        "duration", "out_bytes", "in_bytes", "direction_changes", "is_tcp", "is_udp",
    ),
    compute=_timing39,
    summary="sizes and inter-arrival times per direction, duration, turns, protocol",
)

#: How many data packets of a flow ``payload38`` lists in order.
FIRST_DATA_PACKETS = 8
_PAYLOAD_STATS = ("count", "min", "max", "mean", "std", "median", "bytes")


def _first_values(series: Series, k: int) -> np.ndarray:
    """The first ``k`` values of each group in order, 0 where a group has fewer."""
    out = np.zeros((series.n_groups, k))
    for j in range(k):
        has = series.count > j
        out[has, j] = series.values[series.starts[:-1][has] + j]
    return out


def _payload38(flows: FlowTable) -> np.ndarray:
    payload = flows.pkt_payload
    data = payload > 0
    columns = [_seed14(flows)]
    for direction in (flows.pkt_fwd, ~flows.pkt_fwd):
        sizes = Series.select(payload, flows.start, data & direction)
        columns.append(np.column_stack([
            sizes.count.astype(np.float64), sizes.min(), sizes.max(), sizes.mean(), sizes.std(),
            sizes.median(), sizes.sum(),
        ]))
    signed = np.where(flows.pkt_fwd, payload, -payload)
    columns.append(_first_values(Series.select(signed, flows.start, data), FIRST_DATA_PACKETS))
    columns.append(np.column_stack([flows.proto == PROTO_TCP, flows.proto == PROTO_UDP]))
    return np.hstack(columns).astype(np.float64)


PAYLOAD38 = FeatureSet(
    name="payload38",
    version=1,
    columns=(
        *SEED14.columns,
        *(f"{d}_data_{stat}" for d in ("out", "in") for stat in _PAYLOAD_STATS),
        *(f"data{i}_signed" for i in range(1, FIRST_DATA_PACKETS + 1)),
        "is_tcp", "is_udp",
    ),
    compute=_payload38,
    summary="seed14 + payload sizes of data packets per direction, the first 8 in order, "
    "protocol",
)

def _burst_context(flows: FlowTable, own: np.ndarray) -> np.ndarray:
    """Each flow's burst, seen from the flow: what else the phone did at the same time.

    An app opens several connections at once (its API, its CDN, its analytics), so the other
    flows of a burst say which app this is as much as the flow itself does, the idea FG-Net
    builds its graphs on. ``own`` is payload38 of the same flows. Per burst: how many flows,
    their packets, its duration; the flow's place in it (position, start offset, share of the
    payload bytes); and over the burst's flows, the first data packet's signed size (min,
    median, max: the handshakes) and the median second one.
    """
    n = len(flows)
    if n == 0:
        return np.zeros((0, len(_CONTEXT_COLUMNS)))
    cut = np.flatnonzero(np.diff(flows.burst)) + 1
    starts = np.concatenate([[0], cut, [n]]).astype(np.int64)
    size = np.diff(starts)
    which = np.repeat(np.arange(len(size)), size)
    first = flows.first_ts.astype(np.float64) / 1e9
    last = flows.last_ts.astype(np.float64) / 1e9
    packets = (flows.packets_fwd + flows.packets_bwd).astype(np.float64)
    payload = own[:, _OUT_BYTES] + own[:, _IN_BYTES]
    burst_first = np.minimum.reduceat(first, starts[:-1])
    burst_last = np.maximum.reduceat(last, starts[:-1])
    burst_payload = np.add.reduceat(payload, starts[:-1])[which]
    first_data = Series(own[:, _DATA1], starts)
    second_data = Series(own[:, _DATA1 + 1], starts)
    per_burst = np.column_stack([
        size.astype(np.float64), np.add.reduceat(packets, starts[:-1]), burst_last - burst_first,
        first_data.min(), first_data.median(), first_data.max(), second_data.median(),
    ])[which]
    position = (np.arange(n) - starts[:-1][which]).astype(np.float64)
    share = np.divide(payload, burst_payload, out=np.zeros(n), where=burst_payload > 0)
    return np.column_stack([per_burst, position, first - burst_first[which], share])


_CONTEXT_COLUMNS = (
    "burst_flows", "burst_packets", "burst_duration", "burst_data1_min", "burst_data1_median",
    "burst_data1_max", "burst_data2_median", "burst_position", "burst_offset",
    "burst_payload_share",
)
_OUT_BYTES = PAYLOAD38.columns.index("out_data_bytes")
_IN_BYTES = PAYLOAD38.columns.index("in_data_bytes")
_DATA1 = PAYLOAD38.columns.index("data1_signed")


def _context48(flows: FlowTable) -> np.ndarray:
    own = _payload38(flows)
    return np.hstack([own, _burst_context(flows, own)])


CONTEXT48 = FeatureSet(
    name="context48",
    version=1,
    columns=(*PAYLOAD38.columns, *_CONTEXT_COLUMNS),
    compute=_context48,
    summary="payload38 + the flow's burst: its flows, packets and duration, the flow's place "
    "in it, the first data packets of its other flows",
)

FEATURE_SETS: dict[str, FeatureSet] = {
    fs.name: fs for fs in (SEED14, APPSCANNER54, TIMING39, PAYLOAD38, CONTEXT48)
}
#: The set with the best macro-F1 across captures in docs/accuracy-protocols.md (grouped
#: cross-validation on nDPI's captures, same forest and folds), ahead of the other sets and of
#: nfstream's statistics with and without a threshold, in every repetition.
DEFAULT_FEATURE_SET = "payload38"


def get_feature_set(name: str) -> FeatureSet:
    """Look a feature set up by name (``--features``), with a helpful error."""
    try:
        return FEATURE_SETS[name]
    except KeyError:
        known = ", ".join(FEATURE_SETS)
        raise UsageError(f"--features: unknown feature set {name!r} (known: {known})") from None
