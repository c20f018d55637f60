"""A backtest's results: frozen records, their JSON form and their terminal table.

:class:`Report` holds a :class:`ModelReport` per model, each with a
:class:`RuleReport` per rule (``pql`` over users, ``pqa`` over accounts), the
:class:`ModelComparison` of every two models on the same snapshots, and the warnings.
``Report.to_dict()`` is the JSON form (every figure; field names are the records'
attribute names; times are ISO 8601 strings and durations seconds), and
``str(report)`` / ``Report.table()`` the readable table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import attrs

from .stats import DecileRow, DistributionRow, ReliabilityRow

__all__ = [
    "HEALTHY",
    "ModelComparison",
    "ModelReport",
    "Report",
    "RuleReport",
    "ScoreReport",
    "SignalReport",
    "WeekRow",
]

HEALTHY = (0.05, 0.15)
"""The flag rate a PQL rule should have: 5 to 15% of the eligible subjects."""

Interval = tuple[float, float]


@attrs.frozen
class WeekRow:
    """One snapshot of a rule: how many subjects were eligible, flagged, converted.

    ``healthy`` is whether the flag rate lies within 5-15% (None when nobody was eligible).
    """

    at: datetime
    eligible: int
    flagged: int
    positives: int
    true_positives: int
    flag_rate: float | None
    healthy: bool | None


@attrs.frozen
class ScoreReport:
    """How well a score ranks the subjects that convert, over every snapshot.

    Attributes:
        auc: ROC AUC: the chance that a subject that converts within the horizon
            scores above one that does not (ties count half); 0.5 is chance.
        top10: The share of conversions among the 10% of observations scoring highest.
        top20: The same for the top 20%.
        top30: The same for the top 30%.
        deciles: Conversion rate per tenth of the observations, highest scores first.
        increasing: Whether the conversion rate rises (never falls) with the decile.
        probability: Whether the score is meant as a probability (a ``tev`` score,
            0-100, read as percent): then ``brier`` and ``reliability`` are set.
        brier: Mean squared error of the score / 100 as the chance of converting.
        reliability: Predicted chance against the observed conversion rate, in ten bins.
        distribution: How the scores of converting and other observations spread,
            in twenty equal bins from the lowest to the highest score.
    """

    auc: float | None
    top10: float | None
    top20: float | None
    top30: float | None
    deciles: tuple[DecileRow, ...]
    increasing: bool | None
    probability: bool
    brier: float | None
    reliability: tuple[ReliabilityRow, ...] | None
    distribution: tuple[DistributionRow, ...]


@attrs.frozen
class SignalReport:
    """How a signal's truth at the snapshots relates to converting.

    Attributes:
        holds: Observations (subject, snapshot) in which the signal held.
        holds_rate: ``holds`` / eligible observations.
        rate_when_true: Conversion rate of the observations where it held.
        rate_when_false: Conversion rate where it did not.
        lift: ``rate_when_true / rate_when_false``.
    """

    holds: int
    holds_rate: float | None
    rate_when_true: float | None
    rate_when_false: float | None
    lift: float | None


@attrs.frozen
class RuleReport:
    """One rule of one model (``pql`` over users, ``pqa`` over accounts), measured.

    The counts are of (subject, snapshot) pairs (see ``docs/lab.md``): at each
    snapshot t, a subject is *eligible* when it had an event in (t - lookback, t]
    and had not converted by t, *flagged* when the rule held at t, *positive* when
    it converted in (t, t + horizon].

    Attributes:
        kind: ``"pql"`` or ``"pqa"``.
        subjects: Distinct subjects eligible at some snapshot.
        conversions: Distinct subjects positive at some snapshot (what the figures
            learn from: fewer than 100 makes them unreliable).
        eligible: Eligible pairs.
        flagged: Flagged pairs.
        positives: Positive pairs.
        true_positives: Pairs both flagged and positive.
        precision: ``true_positives / flagged``: the conversion rate of the flagged.
        recall: ``true_positives / positives``: the share of conversions flagged first.
        flag_rate: ``flagged / eligible``.
        unflagged_rate: The conversion rate of the eligible pairs not flagged.
        lift: ``precision / unflagged_rate``.
        precision_ci: 95% bootstrap interval of ``precision`` (subjects resampled).
        recall_ci: The same for ``recall``.
        lift_ci: The same for ``lift``.
        healthy: Whether ``flag_rate`` lies within 5-15%.
        flagged_per_week: The median number flagged at a snapshot.
        weeks: Every snapshot's counts.
        scores: Score name to its :class:`ScoreReport`.
        signals: Signal name to its :class:`SignalReport`.
        qualified: Subjects whose rule held at some point of the replay (when a
            Client would have fired them first).
        converted: Subjects that converted within the replayed history.
        converted_after_qualifying: Of those, the ones that qualified at least 24 h
            before converting.
        converted_after_qualifying_share: ``converted_after_qualifying / converted``.
        lead_time_median: Median time from qualifying to converting, over the subjects
            that qualified before they converted.
        lead_time_p90: Its 90th percentile.
        time_to_qualify_median: Median time from a subject's first event to qualifying.
    """

    kind: Literal["pql", "pqa"]
    subjects: int
    conversions: int
    eligible: int
    flagged: int
    positives: int
    true_positives: int
    precision: float | None
    recall: float | None
    flag_rate: float | None
    unflagged_rate: float | None
    lift: float | None
    precision_ci: Interval | None
    recall_ci: Interval | None
    lift_ci: Interval | None
    healthy: bool | None
    flagged_per_week: float | None
    weeks: tuple[WeekRow, ...]
    scores: Mapping[str, ScoreReport]
    signals: Mapping[str, SignalReport]
    qualified: int
    converted: int
    converted_after_qualifying: int
    converted_after_qualifying_share: float | None
    lead_time_median: timedelta | None
    lead_time_p90: timedelta | None
    time_to_qualify_median: timedelta | None


@attrs.frozen
class ModelReport:
    """One model's rules, measured (a rule the model does not have is None).

    ``recorded``: the rules' flags are the qualifications the store recorded for the
    model (``backtest(..., recorded=...)``), not the replay's.
    """

    name: str
    model: str  # the Model's own name
    fingerprint: str
    pql: RuleReport | None
    pqa: RuleReport | None
    recorded: bool = False


@attrs.frozen
class ModelComparison:
    """Two models on the same snapshots and the same eligible subjects.

    Differences are ``b`` minus ``a``, with 95% intervals from a paired bootstrap
    (the same resampled subjects for both): an interval that excludes 0 says the
    difference is not chance at that level.

    Attributes:
        kind: ``"pql"`` or ``"pqa"``.
        a: The first model's name (as given to the backtest).
        b: The second's.
        precision_diff: ``b.precision - a.precision``.
        precision_diff_ci: Its interval.
        recall_diff: ``b.recall - a.recall``.
        recall_diff_ci: Its interval.
        lift_diff: ``b.lift - a.lift``.
        lift_diff_ci: Its interval.
        only_a: Subjects ``a`` flagged at some snapshot where ``b`` did not.
        only_b: Subjects ``b`` flagged at some snapshot where ``a`` did not.
        only_a_pairs: (subject, snapshot) pairs flagged by ``a`` alone.
        only_b_pairs: Pairs flagged by ``b`` alone.
        only_a_sample: Up to 10 of the ``only_a`` subjects.
        only_b_sample: Up to 10 of the ``only_b`` subjects.
    """

    kind: Literal["pql", "pqa"]
    a: str
    b: str
    precision_diff: float | None
    precision_diff_ci: Interval | None
    recall_diff: float | None
    recall_diff_ci: Interval | None
    lift_diff: float | None
    lift_diff_ci: Interval | None
    only_a: int
    only_b: int
    only_a_pairs: int
    only_b_pairs: int
    only_a_sample: tuple[str, ...]
    only_b_sample: tuple[str, ...]


@attrs.frozen
class Report:
    """What :func:`pqlkit.backtest` found: a :class:`ModelReport` per model, by name.

    ``report[name]`` is a model's report (``report[model.name]`` when one model was
    given). ``print(report)`` shows the table; ``report.to_dict()`` every figure.

    Attributes:
        models: Name to :class:`ModelReport`, in the order given.
        comparisons: Every two models compared, per rule they both have.
        warnings: What makes the figures less trustworthy (never silent).
        source: Where the events came from.
        outcome: What converting meant.
        horizon: How long after a snapshot a conversion counts.
        step: The time between snapshots.
        lookback: How recent an event makes a subject eligible.
        start: The time the snapshots count from (the first is ``start + step``).
        end: The end of the replayed history.
        snapshots: The snapshot times.
        events: Distinct events read (before ``end`` or not).
        duplicates: Events skipped because their ``message_id`` came before.
        late: Events counted from their arrival rather than their timestamp.
        users: Distinct users in the events.
        accounts: Distinct accounts in the events.
        first_event: The earliest event's timestamp.
        last_event: The latest event's timestamp.
    """

    models: Mapping[str, ModelReport]
    comparisons: tuple[ModelComparison, ...]
    warnings: list[str]
    source: str
    outcome: str
    horizon: timedelta
    step: timedelta
    lookback: timedelta
    start: datetime | None
    end: datetime | None
    snapshots: tuple[datetime, ...]
    events: int
    duplicates: int
    late: int
    users: int
    accounts: int
    first_event: datetime | None
    last_event: datetime | None

    def __getitem__(self, name: str) -> ModelReport:
        return self.models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def comparison(self, a: str, b: str, kind: Literal["pql", "pqa"] = "pql") -> ModelComparison:
        """The comparison of models ``a`` and ``b`` (``b`` minus ``a``).

        Raises:
            KeyError: No such comparison (a model not in the report, or without the rule).
        """
        for c in self.comparisons:
            if c.kind == kind and (c.a, c.b) == (a, b):
                return c
        raise KeyError(f"no {kind} comparison of {a!r} and {b!r}")

    def to_dict(self) -> dict[str, Any]:
        """Every figure as JSON-compatible data (times ISO 8601, durations in seconds)."""
        out = attrs.asdict(self, recurse=True, value_serializer=_json_value)
        return _plain(out)  # type: ignore[no-any-return]

    def to_json(self, **kwargs: Any) -> str:
        """``to_dict()`` as JSON text (keywords go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    def to_html(self, path: str | os.PathLike[str]) -> None:
        """Write the report as one self-contained HTML page, viewable offline.

        The headline figures, then charts drawn by matplotlib as inline SVG: the flag
        rate per snapshot against the healthy 5-15% band, the score distributions of
        converters and the rest, the conversion rate by decile, the signals' lift
        (and, for a :class:`~pqlkit.Calibration`'s report, the threshold sweep).

        Raises:
            ImportError: matplotlib is not installed: ``pip install 'pqlkit[lab]'``.
        """
        from .page import render_page

        Path(path).write_text(render_page(self), encoding="utf-8")

    def table(self) -> str:
        """The readable table ``print(report)`` shows."""
        from .table import render

        return render(self)

    def __str__(self) -> str:
        return self.table()


def _json_value(_: object, __: object, value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def _plain(value: Any) -> Any:
    """Tuples as lists and mappings as dicts, all the way down."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
