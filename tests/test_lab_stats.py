"""The lab's numerics against their textbook definitions (brute force where it is cheap)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pqlkit._lab.stats import (
    Histogram,
    bootstrap_intervals,
    lift,
    median,
    nearest_rank,
    poisson,
    rate,
)

scores = st.lists(
    st.tuples(st.sampled_from([0.0, 1.0, 2.5, 10.0, 10.0, 40.0, -3.0]), st.booleans()),
    min_size=1,
    max_size=60,
)


def _hist(pairs: list[tuple[float, bool]]) -> Histogram:
    h = Histogram()
    for value, positive in pairs:
        h.add(value, positive)
    return h


@given(scores)
def test_auc_is_the_chance_a_positive_outranks_a_negative(pairs: list[tuple[float, bool]]) -> None:
    """ROC AUC equals the Mann-Whitney count over every (positive, negative) pair."""
    pos = [v for v, p in pairs if p]
    neg = [v for v, p in pairs if not p]
    auc = _hist(pairs).auc()
    if not pos or not neg:
        assert auc is None
        return
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    assert auc == pytest.approx(wins / (len(pos) * len(neg)))


@given(scores, st.sampled_from([0.1, 0.2, 0.3, 0.5]))
def test_top_share_splits_ties_in_proportion(
    pairs: list[tuple[float, bool]], fraction: float
) -> None:
    """The share of positives in the top fraction: whole values above the cut, and the
    tied value at the cut in proportion."""
    h = _hist(pairs)
    share = h.top_share(fraction)
    positives = sum(p for _, p in pairs)
    if not positives:
        assert share is None
        return
    room = fraction * len(pairs)
    got = 0.0
    for value in sorted({v for v, _ in pairs}, reverse=True):
        at = [p for v, p in pairs if v == value]
        take = min(len(at), room)
        got += sum(at) * take / len(at)
        room -= take
    assert share == pytest.approx(got / positives)


@given(scores)
def test_deciles_cover_every_observation_from_the_top(pairs: list[tuple[float, bool]]) -> None:
    """Ten deciles of a tenth each, highest scores first, holding every positive."""
    rows = _hist(pairs).deciles()
    assert [r.decile for r in rows] == list(range(1, 11))
    for r in rows:
        assert r.count == pytest.approx(len(pairs) / 10)
    assert sum(r.positives for r in rows) == pytest.approx(sum(p for _, p in pairs))
    highs = [r.high for r in rows]
    assert highs == sorted(highs, reverse=True)


def test_increasing_tells_a_rising_conversion_rate() -> None:
    """``increasing`` is true when the rate rises with the score, false when it falls."""
    rising = Histogram()
    falling = Histogram()
    for i in range(100):
        rising.add(float(i), i % 10 < i // 10)
        falling.add(float(i), i % 10 >= i // 10)
    assert rising.increasing() is True
    assert falling.increasing() is False
    assert Histogram().increasing() is None
    assert Histogram().deciles() == []


def test_brier_and_reliability_read_a_score_as_a_probability() -> None:
    """Brier is the mean squared error of score/scale; reliability bins it."""
    pairs = [(20.0, False), (20.0, True), (80.0, True), (80.0, True), (0.0, False), (100.0, True)]
    h = _hist(pairs)
    expected = statistics.fmean((v / 100 - p) ** 2 for v, p in pairs)
    assert h.brier(100.0) == pytest.approx(expected)
    rows = h.reliability(100.0)
    assert [r.count for r in rows] == [1, 0, 2, 0, 0, 0, 0, 0, 2, 1]
    assert rows[2].predicted == pytest.approx(0.2)
    assert rows[2].observed == pytest.approx(0.5)
    assert rows[1].predicted is None
    assert Histogram().brier(100.0) is None


def test_distribution_bins_positives_and_negatives() -> None:
    """Twenty equal bins from the lowest score to the highest; one bin for one value."""
    h = _hist([(0.0, False), (5.0, True), (10.0, True), (10.0, False)])
    rows = h.distribution()
    assert len(rows) == 20
    assert (rows[0].low, rows[-1].high) == (0.0, 10.0)
    assert sum(r.positives for r in rows) == 2
    assert sum(r.negatives for r in rows) == 2
    assert rows[-1].positives == 1  # 10 falls in the last bin
    one = _hist([(3.0, True), (3.0, False)]).distribution()
    assert [(r.low, r.high, r.positives, r.negatives) for r in one] == [(3.0, 3.0, 1, 1)]
    assert Histogram().distribution() == []


def test_ratios_are_none_without_a_denominator() -> None:
    """rate and lift say None where a denominator is 0."""
    assert rate(1, 0) is None
    assert rate(1, 4) == 0.25
    assert lift(10, 2, 3, 1) == pytest.approx(0.5 / (2 / 8))
    assert lift(10, 0, 3, 0) is None  # nothing flagged
    assert lift(10, 10, 3, 3) is None  # everything flagged
    assert lift(10, 2, 1, 1) is None  # no unflagged subject converted


def test_median_and_nearest_rank() -> None:
    """The median of sorted values, and nearest-rank percentiles."""
    assert median([]) is None
    assert median([1, 3, 8]) == 3
    assert median([1, 3, 8, 10]) == 5.5
    values = list(range(1, 11))
    assert nearest_rank(values, 0.9) == 9
    assert nearest_rank(values, 1.0) == 10
    assert nearest_rank([], 0.9) is None


@pytest.mark.parametrize("mean", [0.5, 1.0, 7.0, 59.0, 250.0])
def test_poisson_draws_have_the_right_mean_and_variance(mean: float) -> None:
    """Exact inversion below 60, the normal approximation above: mean and variance ~ mean."""
    rng = random.Random(3)
    draws = [poisson(rng, mean) for _ in range(20_000)]
    assert statistics.fmean(draws) == pytest.approx(mean, rel=0.03)
    assert statistics.variance(draws) == pytest.approx(mean, rel=0.08)
    assert min(draws) >= 0


def test_bootstrap_is_seeded_and_covers_a_known_proportion() -> None:
    """The same seed gives the same interval; for 2,000 independent subjects converting
    at 20%, the interval is about the normal one (+- 1.96 standard errors)."""
    patterns = {(1, 1): 400, (1, 0): 1_600}  # (flagged, converted) per subject
    stat = [lambda s: rate(s[1], s[0])]
    one = bootstrap_intervals(patterns, stat, seed=1)[0]
    assert one == bootstrap_intervals(patterns, stat, seed=1)[0]
    assert one != bootstrap_intervals(patterns, stat, seed=2)[0]
    assert one is not None
    se = math.sqrt(0.2 * 0.8 / 2_000)
    assert one[0] == pytest.approx(0.2 - 1.96 * se, abs=0.4 * se)
    assert one[1] == pytest.approx(0.2 + 1.96 * se, abs=0.4 * se)


def test_bootstrap_resamples_subjects_not_observations() -> None:
    """A subject's observations move together: 100 subjects with 20 observations each
    give a wider interval than 2,000 independent observations at the same rate."""
    stat = [lambda s: rate(s[1], s[0])]
    clustered = bootstrap_intervals({(20, 20): 20, (20, 0): 80}, stat, seed=1)[0]
    independent = bootstrap_intervals({(1, 1): 400, (1, 0): 1_600}, stat, seed=1)[0]
    assert clustered is not None
    assert independent is not None
    assert clustered[1] - clustered[0] > 3 * (independent[1] - independent[0])


def test_bootstrap_without_data_has_no_interval() -> None:
    """No subjects, or a statistic undefined in most replicates: None."""
    stat = [lambda s: rate(s[1], s[0])]
    assert bootstrap_intervals({}, stat, seed=0) == [None]
    assert bootstrap_intervals({(0, 0): 5}, stat, seed=0) == [None]
