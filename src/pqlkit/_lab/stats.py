"""The lab's numerics, in pure Python: ratios, a subject-level bootstrap, and score figures.

Nothing here knows about models or events: the backtest hands in counts and
histograms, and gets back figures. Pure Python on purpose, so that a plain
``pip install pqlkit`` runs a backtest; every figure is O(distinct values), not
O(observations).

* :func:`bootstrap_intervals`: a 95% percentile interval of a statistic of summed
  counts, resampling *subjects* (each subject's counts over every snapshot move
  together, since one subject's snapshots are not independent). It is the Poisson
  bootstrap (each subject drawn Poisson(1) times, Hanley & MacGibbon 2006), run on
  subjects grouped by identical counts: a group of ``c`` subjects is drawn
  Poisson(c) times, so a replicate costs one draw per distinct pattern of counts.
* :class:`Histogram`: a score's values at the snapshots with how many of each
  converted; from it ROC AUC (the Mann-Whitney rank statistic, ties counted half),
  the share of conversions in the top 10/20/30%, deciles, the Brier score and a
  reliability table.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import attrs

__all__ = [
    "RESAMPLES",
    "DecileRow",
    "DistributionRow",
    "Histogram",
    "ReliabilityRow",
    "bootstrap_intervals",
    "lift",
    "median",
    "nearest_rank",
    "poisson",
    "rate",
]

T = TypeVar("T")

RESAMPLES = 1000
"""Bootstrap replicates behind each interval."""

LEVEL = 0.95
"""The intervals' coverage."""


def rate(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``; None when the denominator is 0."""
    return numerator / denominator if denominator else None


def lift(eligible: float, flagged: float, positives: float, true_positives: float) -> float | None:
    """Conversion rate of the flagged over that of the unflagged; None when either is undefined
    (nothing flagged, everything flagged, or no unflagged subject converted)."""
    precision = rate(true_positives, flagged)
    base = rate(positives - true_positives, eligible - flagged)
    if precision is None or not base:
        return None
    return precision / base


def median(values: Sequence[T]) -> T | float | None:
    """The median of sorted ``values`` (the mean of the middle two for an even count)."""
    n = len(values)
    if not n:
        return None
    mid = n // 2
    if n % 2:
        return values[mid]
    return (values[mid - 1] + values[mid]) / 2  # type: ignore[operator, no-any-return]


def nearest_rank(values: Sequence[T], q: float) -> T | None:
    """The ``q`` quantile of sorted ``values`` by the nearest-rank method (p90: ``q=0.9``)."""
    if not values:
        return None
    return values[max(0, math.ceil(q * len(values)) - 1)]


# -- the bootstrap ---------------------------------------------------------------------------

_EXACT = 60.0  # Poisson means up to this are drawn exactly (inversion); above, a normal


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson(``mean``) draw: exact by inversion for small means, else the rounded
    normal approximation (for a mean above 60 the two differ by less than a draw's
    rounding matters to a percentile interval)."""
    if mean > _EXACT:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    return bisect.bisect_right(_cdf(mean), rng.random())


@functools.lru_cache(maxsize=256)
def _cdf(mean: float) -> list[float]:
    """P(X <= k) for k = 0, 1, ... while it is below 1 (the draw is the first k above u)."""
    out: list[float] = []
    p = cdf = math.exp(-mean)
    k = 0
    while cdf < 1.0 and (not out or cdf > out[-1]):
        out.append(cdf)
        k += 1
        p *= mean / k
        cdf += p
    return out


def bootstrap_intervals(
    patterns: Mapping[tuple[int, ...], int],
    statistics: Sequence[Callable[[Sequence[float]], float | None]],
    *,
    seed: int,
    resamples: int = RESAMPLES,
) -> list[tuple[float, float] | None]:
    """Percentile intervals of ``statistics`` over resampled subjects, from one set of draws.

    Args:
        patterns: Each distinct tuple of per-subject counts, with how many subjects
            have it. Each statistic gets the column sums of a resample.
        statistics: The figures, each from column sums (None where undefined).
        seed: Seeds the draws: the same input and seed give the same intervals.
        resamples: Replicates.

    Returns:
        For each statistic, (low, high) at 95%, or None when it is undefined in
        more than half of the replicates (too little data for an interval).
    """
    if not patterns:
        return [None for _ in statistics]
    rng = random.Random(seed)
    rand, gauss, bisect_right = rng.random, rng.gauss, bisect.bisect_right
    width = len(next(iter(patterns)))
    # per pattern: the CDF to draw its weight from (None: the normal approximation),
    # its subjects, and its nonzero counts (what poisson() does, inlined: hot loop)
    prepared = [
        (
            _cdf(n) if n <= _EXACT else None,
            n,
            math.sqrt(n),
            [(i, c) for i, c in enumerate(counts) if c],
        )
        for counts, n in sorted(patterns.items())
    ]
    values: list[list[float]] = [[] for _ in statistics]
    for _ in range(resamples):
        sums = [0.0] * width
        for table, n, sd, nonzero in prepared:
            w = bisect_right(table, rand()) if table is not None else max(0, round(gauss(n, sd)))
            if w:
                for i, c in nonzero:
                    sums[i] += w * c
        for out, statistic in zip(values, statistics, strict=True):
            v = statistic(sums)
            if v is not None and math.isfinite(v):
                out.append(v)
    tail = (1 - LEVEL) / 2
    intervals: list[tuple[float, float] | None] = []
    for out in values:
        if len(out) * 2 < resamples:
            intervals.append(None)
            continue
        out.sort()
        intervals.append((_percentile(out, tail), _percentile(out, 1 - tail)))
    return intervals


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = q * (len(values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


# -- score figures -------------------------------------------------------------------------


@attrs.frozen
class DecileRow:
    """One tenth of the observations, by score (decile 1 holds the highest scores).

    Tied scores are shared between deciles in proportion, so ``count`` and
    ``positives`` may be fractional.
    """

    decile: int
    count: float
    positives: float
    rate: float | None  # positives / count
    low: float  # the lowest score in it
    high: float  # the highest score in it


@attrs.frozen
class ReliabilityRow:
    """Observations whose predicted probability fell in [low, high)."""

    low: float
    high: float
    count: int
    predicted: float | None  # the mean predicted probability
    observed: float | None  # the share that converted


@attrs.frozen
class DistributionRow:
    """Observations whose score fell in [low, high) (the last bin includes ``high``)."""

    low: float
    high: float
    positives: int  # converted within the horizon
    negatives: int  # did not


class Histogram:
    """A score's values at the snapshots: value -> [observations, of them positive]."""

    def __init__(self) -> None:
        self.counts: dict[float, list[int]] = {}
        self.n = 0
        self.positives = 0

    def add(self, value: float, positive: bool) -> None:
        cell = self.counts.get(value)
        if cell is None:
            cell = self.counts[value] = [0, 0]
        cell[0] += 1
        self.n += 1
        if positive:
            cell[1] += 1
            self.positives += 1

    def _ascending(self) -> list[tuple[float, int, int]]:
        return [(v, c[0], c[1]) for v, c in sorted(self.counts.items())]

    def auc(self) -> float | None:
        """ROC AUC: the chance that a positive scores above a negative (ties count half)."""
        negatives = self.n - self.positives
        if not self.positives or not negatives:
            return None
        below = 0  # negatives with a lower score
        total = 0.0
        for _, n, pos in self._ascending():
            neg = n - pos
            total += pos * below + 0.5 * pos * neg
            below += neg
        return total / (self.positives * negatives)

    def _from_top(self) -> list[tuple[float, int, int]]:
        return self._ascending()[::-1]

    def top_share(self, fraction: float) -> float | None:
        """The share of positives among the ``fraction`` of observations scoring highest
        (ties at the cut shared in proportion)."""
        if not self.positives:
            return None
        room = fraction * self.n
        got = 0.0
        for _, n, pos in self._from_top():
            if room <= 0:
                break
            take = min(n, room)
            got += pos * take / n
            room -= take
        return got / self.positives

    def deciles(self) -> list[DecileRow]:
        """Ten rows from the highest scores down (none when there are no observations)."""
        if not self.n:
            return []
        size = self.n / 10
        rows: list[DecileRow] = []
        cells = self._from_top()
        i = 0
        left = float(cells[0][1])  # what is left of cell i
        for decile in range(1, 11):
            room, count, positives = size, 0.0, 0.0
            high = low = cells[min(i, len(cells) - 1)][0]
            while room > 1e-9 and i < len(cells):
                value, n, pos = cells[i]
                take = min(left, room)
                count += take
                positives += pos * take / n
                low = value
                room -= take
                left -= take
                if left <= 1e-9:
                    i += 1
                    left = float(cells[i][1]) if i < len(cells) else 0.0
            rows.append(DecileRow(decile, count, positives, rate(positives, count), low, high))
        return rows

    def increasing(self) -> bool | None:
        """Whether the conversion rate never falls from one decile to the next higher one
        (None without observations). Equal rates count as increasing."""
        rates = [r.rate for r in self.deciles() if r.rate is not None]
        if not rates:
            return None
        return all(a >= b - 1e-12 for a, b in itertools.pairwise(rates))

    def brier(self, scale: float) -> float | None:
        """Mean squared error of ``value / scale`` as the probability of converting."""
        if not self.n:
            return None
        total = 0.0
        for value, n, pos in self._ascending():
            p = _clamp(value / scale)
            total += pos * (1 - p) ** 2 + (n - pos) * p * p
        return total / self.n

    def reliability(self, scale: float, bins: int = 10) -> list[ReliabilityRow]:
        """Predicted (``value / scale``) against observed conversion, in ``bins`` equal bins."""
        count = [0] * bins
        predicted = [0.0] * bins
        positives = [0] * bins
        for value, n, pos in self._ascending():
            p = _clamp(value / scale)
            b = min(bins - 1, int(p * bins))
            count[b] += n
            predicted[b] += p * n
            positives[b] += pos
        return [
            ReliabilityRow(
                b / bins,
                (b + 1) / bins,
                count[b],
                rate(predicted[b], count[b]),
                rate(positives[b], count[b]),
            )
            for b in range(bins)
        ]

    def distribution(self, bins: int = 20) -> list[DistributionRow]:
        """The scores of positives and negatives in ``bins`` equal bins from min to max."""
        cells = self._ascending()
        if not cells:
            return []
        lo, hi = cells[0][0], cells[-1][0]
        if hi == lo:
            n = sum(c[1] for c in cells)
            pos = sum(c[2] for c in cells)
            return [DistributionRow(lo, hi, pos, n - pos)]
        width = (hi - lo) / bins
        edges = [lo + width * b for b in range(bins)]
        pos_in = [0] * bins
        neg_in = [0] * bins
        for value, n, pos in cells:
            b = min(bins - 1, bisect.bisect_right(edges, value) - 1)
            pos_in[b] += pos
            neg_in[b] += n - pos
        return [
            DistributionRow(
                edges[b], edges[b] + width if b < bins - 1 else hi, pos_in[b], neg_in[b]
            )
            for b in range(bins)
        ]


def _clamp(p: float) -> float:
    return 0.0 if p < 0 else 1.0 if p > 1 else p
