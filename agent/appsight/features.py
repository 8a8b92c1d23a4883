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

FEATURE_SETS: dict[str, FeatureSet] = {fs.name: fs for fs in (SEED14, APPSCANNER54, TIMING39)}
#: The set with the best macro-F1 across captures in docs/accuracy.md (grouped cross-validation
#: on nDPI's captures), ahead of appscanner54 and level with or ahead of nfstream's statistics.
DEFAULT_FEATURE_SET = "seed14"


def get_feature_set(name: str) -> FeatureSet:
    """Look a feature set up by name (``--features``), with a helpful error."""
    try:
        return FEATURE_SETS[name]
    except KeyError:
        known = ", ".join(FEATURE_SETS)
        raise UsageError(f"--features: unknown feature set {name!r} (known: {known})") from None
