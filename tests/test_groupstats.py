"""Every statistic of :class:`appsight.groupstats.Series` against numpy/scipy, group by group.

``Series`` computes a statistic for all flows of a block in one vectorised pass, which is easy
to get subtly wrong (an off-by-one in the group bounds, a statistic leaking across groups, an
empty group shifting its neighbours). Each test therefore compares the vectorised result with
straightforward per-group numpy/scipy code, using the conventions documented in the module:
population std/var, biased Fisher skewness and kurtosis, linear percentiles, unscaled MAD,
and 0 for every undefined statistic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import scipy.stats
from appsight.groupstats import Series
from hypothesis import given, settings
from hypothesis import strategies as st

REL, ABS = 1e-9, 1e-12
PERCENTILES = (0.0, 10.0, 20.0, 25.0, 30.0, 33.3, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 90.0,
               99.0, 100.0)


# ----------------------------------------------------------------------- references
def ref_skew(x: np.ndarray) -> float:
    """scipy's biased skewness; 0 for an empty or constant series (the documented convention).

    Constancy is decided exactly (``ptp == 0``) rather than by scipy, whose own near-zero test
    can return nan or a rounding artefact for a constant float series.
    """
    if len(x) == 0 or np.ptp(x) == 0:
        return 0.0
    return float(scipy.stats.skew(x, bias=True))


def ref_kurtosis(x: np.ndarray) -> float:
    """scipy's biased Fisher kurtosis; 0 for an empty or constant series."""
    if len(x) == 0 or np.ptp(x) == 0:
        return 0.0
    return float(scipy.stats.kurtosis(x, fisher=True, bias=True))


def ref_percentile(x: np.ndarray, q: float) -> float:
    """numpy's linear percentile; 0 for an empty series."""
    return float(np.percentile(x, q)) if len(x) else 0.0


def ref_mad(x: np.ndarray) -> float:
    """Unscaled median absolute deviation from the median; 0 for an empty series."""
    if len(x) == 0:
        return 0.0
    return float(np.median(np.abs(x - np.median(x))))


def _or0(f: Callable[[np.ndarray], float]) -> Callable[[np.ndarray], float]:
    return lambda x: float(f(x)) if len(x) else 0.0


REFERENCES: dict[str, tuple[Callable[[Series], np.ndarray], Callable[[np.ndarray], float]]] = {
    "sum": (Series.sum, lambda x: float(np.sum(x))),
    "mean": (Series.mean, _or0(np.mean)),
    "var": (Series.var, _or0(np.var)),
    "std": (Series.std, _or0(np.std)),
    "skew": (Series.skew, ref_skew),
    "kurtosis": (Series.kurtosis, ref_kurtosis),
    "min": (Series.min, _or0(np.min)),
    "max": (Series.max, _or0(np.max)),
    "median": (Series.median, _or0(np.median)),
    "mad": (Series.mad, ref_mad),
    **{
        f"p{q}": ((lambda s, q=q: s.percentile(q)), (lambda x, q=q: ref_percentile(x, q)))
        for q in PERCENTILES
    },
}


def close(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Element-wise ``got == pytest.approx(expected, rel=REL, abs=ABS)``, vectorised for speed."""
    return np.abs(got - expected) <= np.maximum(REL * np.abs(expected), ABS)


def make_series(groups: Sequence[Sequence[float]]) -> Series:
    """A Series whose group ``g`` holds ``groups[g]`` (empty groups allowed)."""
    starts = np.zeros(len(groups) + 1, dtype=np.int64)
    np.cumsum([len(g) for g in groups], out=starts[1:])
    values = np.concatenate([np.asarray(g, dtype=np.float64) for g in groups] or [np.zeros(0)])
    return Series(values, starts)


def assert_all_stats(groups: Sequence[Sequence[float]]) -> None:
    """Every statistic of every group equals its per-group reference."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups]
    failures = []
    for name, (vectorised, reference) in REFERENCES.items():
        got = vectorised(make_series(groups))  # fresh Series: no cached state shared by stats
        assert got.shape == (len(groups),), name
        expected = np.array([reference(x) for x in groups])
        for g in np.flatnonzero(~close(got, expected)):
            failures.append(
                f"{name} of group {g} {groups[g].tolist()}: {got[g]!r} != {expected[g]!r}"
            )
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------------- tests
HAND_MADE = [
    [],
    [5.0],
    [3.0, 7.0],
    [1.0, 2.0, 9.0],
    [],
    [4.0, 4.0, 4.0, 4.0],  # constant: zero variance
    [1500.0] * 7,
    [0.0, 0.0],
    [60.0, 1500.0, 60.0, 60.0, 1500.0, 52.0, 40.0],
    [-3.0, 0.0, 2.5, 11.0, -0.25],  # negative values (out-of-order gaps)
    [0.001, 0.001, 0.001],  # constant, not exactly representable
    [0.0, 0.0, 0.0, 1e-9],  # one nanosecond gap among zero gaps
    [],
]


def test_hand_made_groups_match_numpy_and_scipy() -> None:
    """Edge cases (empty, 1, 2, 3 values, constant, negative) side by side in one Series."""
    assert_all_stats(HAND_MADE)


@pytest.mark.parametrize("seed", range(3))
def test_many_random_groups_do_not_mix(seed: int) -> None:
    """Hundreds of groups of random sizes (0..25): no statistic leaks across group bounds."""
    rng = np.random.default_rng(seed)
    groups: list[np.ndarray] = []
    for _ in range(300):
        size = int(rng.integers(0, 26))
        kind = rng.integers(0, 3)
        if kind == 0:  # packet lengths
            groups.append(rng.integers(40, 1501, size).astype(np.float64))
        elif kind == 1:  # gaps in seconds with nanosecond resolution
            groups.append(rng.integers(0, 2_000_000_000, size) / 1e9)
        else:  # few distinct values: ties everywhere
            groups.append(rng.choice([0.0, 60.0, 1500.0], size))
    assert_all_stats(groups)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(0, 65_535), max_size=12), min_size=1, max_size=12))
def test_random_integer_groups(groups: list[list[int]]) -> None:
    """Integer series (the packet-length case) of any shape, including all-constant ones."""
    assert_all_stats(groups)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5_000), max_size=10), min_size=1, max_size=10))
def test_random_millisecond_groups(groups: list[list[int]]) -> None:
    """Fractional series (gaps in seconds), kept at ms resolution so float error stays tiny."""
    assert_all_stats([[v / 1000 for v in g] for g in groups])


def test_constant_series_have_zero_skew_and_kurtosis() -> None:
    """Zero variance -> skewness and kurtosis are 0 by convention, never nan or inf."""
    series = make_series([[7.0] * n for n in range(1, 12)] + [[0.25] * 9, [1e6] * 50])
    assert np.array_equal(series.skew(), np.zeros(series.n_groups))
    assert np.array_equal(series.kurtosis(), np.zeros(series.n_groups))
    assert np.array_equal(series.std(), np.zeros(series.n_groups))


@pytest.mark.parametrize(("value", "n"), [(0.1, 1000), (0.3, 1000), (0.1, 5000)])
def test_long_constant_float_series_have_zero_skew_and_kurtosis(value: float, n: int) -> None:
    """A periodic stream (e.g. one packet every 100 ms) has constant gaps: skew must be 0."""
    series = make_series([[value] * n])
    assert series.skew()[0] == 0.0
    assert series.kurtosis()[0] == 0.0


def test_statistics_do_not_depend_on_call_order() -> None:
    """mean, moments and sorted values are cached: any call order gives the same numbers."""
    groups = HAND_MADE
    first = make_series(groups)
    forward = [first.mean(), first.skew(), first.mad(), first.percentile(30), first.var()]
    second = make_series(groups)
    backward = [second.var(), second.percentile(30), second.mad(), second.skew(), second.mean()]
    for a, b in zip(forward, reversed(backward), strict=True):
        assert np.array_equal(a, b)


def test_empty_series_of_groups() -> None:
    """No values at all (every group empty): every statistic is 0 for every group."""
    series = make_series([[], [], []])
    for name, (vectorised, _) in REFERENCES.items():
        assert np.array_equal(vectorised(series), np.zeros(3)), name
    assert np.array_equal(series.count, [0, 0, 0])


def test_gaps_per_group() -> None:
    """Gaps are differences within a group only: n - 1 per non-empty group, none across groups.

    Timestamps are integer ns, differenced exactly before conversion to seconds, so large
    epoch timestamps lose no precision.
    """
    base = 1_700_000_000 * 10**9
    groups = [
        [],
        [base],
        [base, base],  # zero gap
        [base, base + 1, base + 1_000_000_001],
        [],
        [base + 5, base + 2, base + 9],  # out of order: negative gap kept
        [base + 10**9 * k for k in range(6)],
    ]
    series = make_series([[0.0] * len(g) for g in groups])
    times = np.concatenate([np.asarray(g, dtype=np.int64) for g in groups])
    gaps = series.gaps(times)
    assert gaps.n_groups == len(groups)
    assert np.array_equal(gaps.count, [max(len(g) - 1, 0) for g in groups])
    for g, ts in enumerate(groups):
        expected = np.diff(np.asarray(ts, dtype=np.int64)) / 1e9
        got = gaps.values[gaps.starts[g]:gaps.starts[g + 1]]
        assert np.array_equal(got, expected), g


def test_gaps_of_no_packets() -> None:
    """An empty Series (no values) has an empty gap Series with the same number of groups."""
    series = make_series([[], []])
    gaps = series.gaps(np.zeros(0, dtype=np.int64))
    assert gaps.n_groups == 2
    assert len(gaps.values) == 0


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_select_keeps_grouping(data: st.DataObject) -> None:
    """``select`` keeps, per group, exactly the masked values in order (groups may empty out)."""
    groups = data.draw(st.lists(st.lists(st.integers(0, 100), max_size=8), min_size=1,
                                max_size=8))
    series = make_series(groups)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=len(series.values),
                                       max_size=len(series.values))), dtype=bool)
    chosen = Series.select(series.values, series.starts, mask)
    assert chosen.n_groups == len(groups)
    offset = 0
    for g, values in enumerate(groups):
        keep = mask[offset:offset + len(values)]
        expected = np.asarray(values, dtype=np.float64)[keep]
        offset += len(values)
        assert np.array_equal(chosen.values[chosen.starts[g]:chosen.starts[g + 1]], expected)
