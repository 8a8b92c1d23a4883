"""Statistics of many small series at once: one numpy pass for all flows of a block.

A flow's packet lengths or gaps form a short series; computing statistics flow by flow in
Python would cost more than reading the packets. Here every series of a block lives in one
array, contiguous per group, and each statistic is one vectorised pass. Conventions (the
ones documented for the feature sets):

* standard deviation and variance are population ones (``ddof=0``);
* skewness and kurtosis are the biased moment estimators of ``scipy.stats.skew`` and
  ``scipy.stats.kurtosis`` (Fisher: normal = 0);
* percentiles interpolate linearly between order statistics (numpy's default method);
* MAD is the median absolute deviation from the median, unscaled;
* a statistic that is undefined for a series (any statistic of an empty series; skewness and
  kurtosis of a series with zero variance) is 0, so models always see finite numbers.
"""

from __future__ import annotations

import numpy as np


class Series:
    """Groups of values: group ``g`` is ``values[starts[g]:starts[g + 1]]`` (may be empty)."""

    def __init__(self, values: np.ndarray, starts: np.ndarray, divisor: float = 1.0) -> None:
        """``values / divisor`` are the series; integer values (packet lengths, gaps in
        nanoseconds) keep their integer form too, which sorts much faster."""
        values = np.asarray(values)
        self._integers = values if values.dtype.kind in "iu" else None
        self.divisor = divisor
        self.values = values.astype(np.float64)
        if divisor != 1.0:
            self.values /= divisor
        self.starts = starts
        self.count = np.diff(starts)
        self.n_groups = len(self.count)
        self.group = np.repeat(np.arange(self.n_groups), self.count)
        self._sorted: np.ndarray | None = None
        self._mean: np.ndarray | None = None
        self._moments: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def select(cls, values: np.ndarray, starts: np.ndarray, mask: np.ndarray) -> Series:
        """The sub-series of the values where ``mask`` holds, keeping the grouping."""
        group = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
        counts = np.bincount(group[mask], minlength=len(starts) - 1)
        new_starts = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=new_starts[1:])
        return cls(values[mask], new_starts)

    def gaps(self, times: np.ndarray) -> Series:
        """Differences between consecutive values within each group (one fewer per group).

        ``times`` are integers (nanoseconds): differences are taken exactly, then converted to
        seconds.
        """
        n = len(times)
        if n == 0:
            return Series(np.zeros(0), np.zeros(self.n_groups + 1, dtype=np.int64))
        keep = np.ones(n, dtype=bool)
        keep[self.starts[:-1][self.count > 0]] = False  # the first entry of each group
        diffs = np.empty(n, dtype=np.int64)
        diffs[0] = 0
        np.subtract(times[1:], times[:-1], out=diffs[1:])
        counts = np.maximum(self.count - 1, 0)
        starts = np.zeros(self.n_groups + 1, dtype=np.int64)
        np.cumsum(counts, out=starts[1:])
        return Series(diffs[keep], starts, divisor=1e9)

    # ------------------------------------------------------------ moments
    def sum(self) -> np.ndarray:
        return np.bincount(self.group, weights=self.values, minlength=self.n_groups)

    def mean(self) -> np.ndarray:
        if self._mean is None:
            with np.errstate(invalid="ignore", divide="ignore"):
                self._mean = np.where(self.count > 0, self.sum() / self.count, 0.0)
        return self._mean

    def _central_moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._moments is None:
            d = self.values - self.mean()[self.group]
            d2 = d * d
            count = np.maximum(self.count, 1)
            m2 = np.bincount(self.group, weights=d2, minlength=self.n_groups) / count
            m3 = np.bincount(self.group, weights=d2 * d, minlength=self.n_groups) / count
            m4 = np.bincount(self.group, weights=d2 * d2, minlength=self.n_groups) / count
            self._moments = (m2, m3, m4)
        return self._moments

    def var(self) -> np.ndarray:
        return self._central_moments()[0]

    def std(self) -> np.ndarray:
        return np.sqrt(self.var())

    def _spread(self) -> np.ndarray:
        """Groups whose values are not all equal: only these have a skewness and kurtosis.

        Decided on the values themselves, not on the computed variance, which rounding can
        leave slightly above zero for a long constant series (e.g. 1000 gaps of 0.1 s).
        """
        return self.max() > self.min()

    def skew(self) -> np.ndarray:
        m2, m3, _ = self._central_moments()
        ok = self._spread()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ok, m3 / np.where(ok, m2, 1.0) ** 1.5, 0.0)

    def kurtosis(self) -> np.ndarray:
        m2, _, m4 = self._central_moments()
        ok = self._spread()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ok, m4 / np.where(ok, m2, 1.0) ** 2 - 3.0, 0.0)

    # ---------------------------------------------------------- order stats
    def _sorted_values(self) -> np.ndarray:
        """The values sorted within each group (groups stay in place)."""
        if self._sorted is None:
            ints = self._integers
            value_bits = int(ints.max()).bit_length() if ints is not None and len(ints) else 64
            group_bits = max(self.n_groups, 1).bit_length()
            if ints is not None and len(ints) and ints.min() >= 0 and value_bits + group_bits < 63:
                # One packed key (group, value): a single-key sort instead of a lexsort.
                key = (self.group.astype(np.int64) << value_bits) | ints.astype(np.int64)
                key.sort()
                self._sorted = (key & ((1 << value_bits) - 1)).astype(np.float64)
                if self.divisor != 1.0:
                    self._sorted /= self.divisor
            else:
                self._sorted = self.values[np.lexsort((self.values, self.group))]
        return self._sorted

    def min(self) -> np.ndarray:
        return self.percentile(0.0)

    def max(self) -> np.ndarray:
        return self.percentile(100.0)

    def percentile(self, q: float) -> np.ndarray:
        """The q-th percentile of each group (linear interpolation), 0 for empty groups."""
        return self.percentiles((q,))[:, 0]

    def percentiles(self, qs: tuple[float, ...]) -> np.ndarray:
        """Several percentiles of each group at once: shape (groups, len(qs))."""
        out = np.zeros((self.n_groups, len(qs)))
        has = self.count > 0
        if not has.any():
            return out
        v = self._sorted_values()
        count = self.count[has][:, None]
        start = self.starts[:-1][has][:, None]
        position = (count - 1) * (np.asarray(qs, dtype=np.float64)[None, :] / 100.0)
        lo = np.floor(position).astype(np.int64)
        hi = np.minimum(lo + 1, count - 1)
        frac = position - lo
        low, high = v[start + lo], v[start + hi]
        out[has] = low + (high - low) * frac
        return out

    def median(self) -> np.ndarray:
        return self.percentile(50.0)

    def mad(self) -> np.ndarray:
        """Median absolute deviation from the median (unscaled)."""
        if self._integers is not None:
            # The median of integers is a whole or half number: doubled, every deviation is
            # an integer again, which keeps the fast sort.
            twice = np.rint(2.0 * self.median() * self.divisor).astype(np.int64)[self.group]
            deviation = np.abs(2 * self._integers.astype(np.int64) - twice)
            return Series(deviation, self.starts).median() / (2.0 * self.divisor)
        deviation = np.abs(self.values - self.median()[self.group])
        return Series(deviation, self.starts).median()
