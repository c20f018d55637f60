"""``pqlkit.backtest``: replay a history through models and measure them against conversions.

This module checks the arguments, runs the passes over the events (a scan, a
replay of a condition outcome if there is one, the replay: see ``replay``), and
turns what the replay tallied into a :class:`~.report.Report`, with the warnings.
"""

from __future__ import annotations

import contextlib
import gc
import random
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal, TypedDict

from .. import _dsl as d
from .._convert import from_us, micros, to_us
from .._events import SubjectKind
from .._model import Model
from .._validation import check_timestamp
from ..exceptions import ValidationError
from .outcome import Outcome, parse_outcome
from .replay import Observer, Replay, Scan, Tally, Track, condition_conversions
from .report import (
    HEALTHY,
    ModelComparison,
    ModelReport,
    Report,
    RuleReport,
    ScoreReport,
    SignalReport,
    WeekRow,
)
from .source import History, Recorded, open_history
from .stats import Histogram, bootstrap_intervals, lift, median, nearest_rank, rate

__all__ = ["MIN_CONVERSIONS", "backtest", "measure"]

MIN_CONVERSIONS = 100
"""Below this many converting subjects, a report warns that its figures are unreliable."""

_SEED = 0  # the bootstrap's: the same history gives the same intervals
_DAY = timedelta(days=1)
_RULES: dict[SubjectKind, Literal["pql", "pqa"]] = {"user": "pql", "account": "pqa"}
_NOUNS: dict[SubjectKind, str] = {"user": "users", "account": "accounts"}


def backtest(
    models: Model | Mapping[str, Model],
    events: object,
    *,
    outcome: object,
    horizon: timedelta = timedelta(days=30),
    start: datetime | None = None,
    end: datetime | None = None,
    step: timedelta = timedelta(days=7),
    lookback: timedelta = timedelta(days=90),
    progress: Callable[[int, int], None] | None = None,
    recorded: bool | Collection[str] = False,
) -> Report:
    """Replay a history through one or more models and measure their rules against conversions.

    At every snapshot t (``start + step``, ``start + 2 * step``, ... while
    ``t + horizon <= end``) each *eligible* subject (an event in
    ``(t - lookback, t]``, not converted by t) is evaluated at t over the events up
    to t: *flagged* when its rule holds, *positive* when it converts in
    ``(t, t + horizon]``. Users are measured for ``pql``, accounts for ``pqa``. The
    events go through the same engine a :class:`~pqlkit.Client` runs; the source
    is only read. See ``docs/lab.md`` for every figure.

    Args:
        models: A :class:`~pqlkit.Model`, or a dict of name to Model (compared on
            the same snapshots).
        events: A :class:`~pqlkit.Store`; a store URL (``sqlite:///app.db``,
            ``postgresql://...``: opened read-only, never created); a JSON Lines file
            in the ``pqlkit export`` format; an iterable of dicts with ``track()``'s
            parameter names (or :class:`~pqlkit.Event`s; each needs a timestamp), and
            ``traits``/``alias`` records of the export format; or a
            :func:`~pqlkit.simulate` history.
        outcome: What converting is: an event name (a user's first such event; an
            account's first of any of its users'), a condition (its first time true,
            e.g. ``did("plan_changed", where={"to": "pro"})``), a mapping of subject id
            to aware datetime, or a CSV file (a path ending in ``.csv``) with the
            columns ``subject_id,converted_at`` (times without an offset read as UTC).
        horizon: How soon after a snapshot a conversion counts.
        start: When the snapshots start counting (default: the earliest event).
        end: Where the history ends (default: the latest event); later events are
            not replayed.
        step: The time between snapshots.
        lookback: How recent an event must be for a subject to be eligible.
        progress: Called as the replay goes, every 10,000 events and at the end, with
            (events replayed, events in all): for a progress bar.
        recorded: Measure what the store (``events``) recorded instead of what the
            replay decides: a model's rule flags a subject at t when the store holds a
            qualification of the model's name (as a live client or a shadow recorded
            it) from at or before t, not disqualified by t; its qualification times
            (lead time, time to PQL) are the recorded ones. Scores and signals are
            still replayed. ``True`` for every model, or the names (as given in
            ``models``) of those to read so (the others are replayed). See
            ``docs/lab.md``, "Report a shadow".

    Returns:
        The :class:`Report`: ``report[name].pql`` and ``.pqa``, ``report.warnings``.

    Raises:
        ValidationError: A bad argument, naming it: ``models`` not a Model (or a dict
            of them) or with no rule, an ``outcome`` that is no event, condition,
            mapping or CSV (or a CSV with missing columns or bad dates), a duration
            that is not positive, ``start`` not before ``end``, ``events`` naming no
            file or store, or holding a bad event, ``recorded`` with ``events`` that
            are not a store, or naming no model given.

    Example:
        >>> import pqlkit
        >>> from pqlkit import Model, did
        >>> sim = pqlkit.simulate(seed=3, users=300, accounts=30, days=120)
        >>> model = Model("teams", pql=did("teammate_invited"))
        >>> report = pqlkit.backtest(model, sim, outcome="subscription_started")
        >>> report["teams"].pql.lift > 1
        True
    """
    return measure(
        models,
        events,
        outcome=outcome,
        horizon=horizon,
        start=start,
        end=end,
        step=step,
        lookback=lookback,
        progress=progress,
        recorded=recorded,
    )


def measure(
    models: Model | Mapping[str, Model],
    events: object,
    *,
    outcome: object,
    horizon: timedelta = timedelta(days=30),
    start: datetime | None = None,
    end: datetime | None = None,
    step: timedelta = timedelta(days=7),
    lookback: timedelta = timedelta(days=90),
    progress: Callable[[int, int], None] | None = None,
    observe: Observer | None = None,
    recorded: bool | Collection[str] = False,
) -> Report:
    """:func:`backtest`, with ``observe`` called at each snapshot evaluation as
    ``(t, kind, subject id, model name, evaluation, positive)`` (what a calibration
    fits its weights on)."""
    tracks_by_name = _check_models(models)
    for name, value in (("horizon", horizon), ("step", step), ("lookback", lookback)):
        if not isinstance(value, timedelta) or value <= timedelta(0):
            raise ValidationError(name, f"must be a positive timedelta, got {value!r}")
    start_at = check_timestamp(start, "start") if start is not None else None
    end_at = check_timestamp(end, "end") if end is not None else None
    if start_at is not None and end_at is not None and start_at >= end_at:
        raise ValidationError("start", f"{start_at.isoformat()} is not before end")
    if progress is not None and not callable(progress):
        raise ValidationError("progress", "must be callable (done, total), or None")
    reading = _check_recorded(recorded, tracks_by_name)
    goal = parse_outcome(outcome)
    history = open_history(events)
    try:
        records: dict[str, Recorded] = {}
        for name in reading:
            found = history.recorded(tracks_by_name[name].name)
            if found is None:
                raise ValidationError(
                    "recorded",
                    f"reads the qualifications a store recorded, but the events come from"
                    f" {history.label}: give the store (or its URL) as events",
                )
            records[name] = found
        with _collector_paused():
            return _run(
                tracks_by_name,
                records,
                history,
                goal,
                horizon,
                step,
                lookback,
                start_at,
                end_at,
                progress,
                observe,
            )
    finally:
        history.close()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the history is replayed.

    The replay makes no cyclic garbage, but it keeps millions of live objects (the
    subjects' states), and each full collection walks all of them: at a million
    events that is a third of the time (docs/performance.md). The collector is
    running again (if it was) when the backtest returns or raises.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _check_models(models: object) -> dict[str, Model]:
    if isinstance(models, Model):
        named = {models.name: models}
    elif isinstance(models, Mapping) and models:
        named = {}
        for name, model in models.items():
            if not isinstance(name, str) or not name.strip():
                raise ValidationError("models", f"names must be non-empty str, got {name!r}")
            if not isinstance(model, Model):
                raise ValidationError(
                    f"models[{name!r}]", f"must be a pqlkit.Model, got {type(model).__name__}"
                )
            named[name] = model
    else:
        raise ValidationError(
            "models",
            f"must be a pqlkit.Model or a non-empty dict of name to Model, got {models!r}",
        )
    for name, model in named.items():
        if model.pql is None and model.pqa is None:
            raise ValidationError(
                "models", f"{name!r} has no pql or pqa rule: there is nothing to measure"
            )
    return named


def _check_recorded(recorded: object, models: Mapping[str, Model]) -> list[str]:
    """The names of the models whose recorded qualifications are measured."""
    if isinstance(recorded, bool):
        return list(models) if recorded else []
    if isinstance(recorded, str) or not isinstance(recorded, Collection):
        raise ValidationError(
            "recorded", f"must be True, False or a collection of model names, got {recorded!r}"
        )
    names = list(recorded)
    for name in names:
        if name not in models:
            known = ", ".join(repr(n) for n in models)
            raise ValidationError("recorded", f"{name!r} is none of the models given ({known})")
    return names


def _run(
    named: dict[str, Model],
    records: Mapping[str, Recorded],
    history: History,
    goal: Outcome,
    horizon: timedelta,
    step: timedelta,
    lookback: timedelta,
    start: datetime | None,
    end: datetime | None,
    progress: Callable[[int, int], None] | None,
    observe: Observer | None,
) -> Report:
    step_us = micros(step)
    scan = Scan(history, goal)
    if scan.first is None or scan.last is None:
        raise ValidationError("events", f"{history.label} holds no events")
    if goal.event is not None:
        conversions = scan.event_conversions()
    elif goal.model is not None:
        conversions = condition_conversions(history, scan, goal.model, step_us)
    else:
        assert goal.times is not None
        conversions = scan.given_conversions(goal.times)
    first, last = scan.first, scan.last
    t0 = to_us(start) if start is not None else first
    t_end = to_us(end) if end is not None else last
    horizon_us = micros(horizon)
    snapshots: list[int] = []
    t = t0 + step_us
    while t + horizon_us <= t_end:
        snapshots.append(t)
        t += step_us
    tracks = [Track(name, model, history, scan, records.get(name)) for name, model in named.items()]
    replay = Replay(
        tracks,
        history,
        scan,
        conversions,
        snapshots=snapshots,
        end=t_end,
        horizon=horizon_us,
        lookback=micros(lookback),
        step=step_us,
        progress=progress,
        observe=observe,
    )
    replay.run()
    reports: dict[str, ModelReport] = {}
    for i, track in enumerate(tracks):
        rules: dict[SubjectKind, RuleReport | None] = {}
        for kind in _kinds():
            tally = replay.tallies[kind][i]
            rules[kind] = _rule(replay, tally, i, t_end) if tally is not None else None
        reports[track.name] = ModelReport(
            track.name,
            track.model.name,
            track.model.fingerprint,
            rules["user"],
            rules["account"],
            recorded=track.recorded is not None,
        )
    comparisons = tuple(
        _compare(replay, kind, i, j)
        for kind in _kinds()
        for i, j in replay.pairs
        if tracks[i].rule[kind] and tracks[j].rule[kind]
    )
    report = Report(
        models=reports,
        comparisons=comparisons,
        warnings=[],
        source=history.label,
        outcome=goal.description,
        horizon=horizon,
        step=step,
        lookback=lookback,
        start=from_us(t0),
        end=from_us(t_end),
        snapshots=tuple(from_us(s) for s in snapshots),
        events=scan.events,
        duplicates=scan.duplicates,
        late=replay.late,
        users=len(scan.final_users()),
        accounts=len(scan.accounts),
        first_event=from_us(first),
        last_event=from_us(last),
    )
    report.warnings.extend(_warnings(report, replay, goal, scan, conversions))
    return report


def _kinds() -> tuple[SubjectKind, ...]:
    return ("user", "account")


def _patterns(
    replay: Replay, kind: SubjectKind, columns: Sequence[int]
) -> dict[tuple[int, ...], int]:
    """Subjects grouped by their counts in ``columns`` (for the bootstrap)."""
    out: dict[tuple[int, ...], int] = {}
    for subject in replay.all_subjects(kind):
        counts = subject.counts
        if counts is None:
            continue
        key = tuple(counts[c] for c in columns)
        out[key] = out.get(key, 0) + 1
    return out


def _rule(replay: Replay, tally: Tally, i: int, end: int) -> RuleReport:
    kind = tally.kind
    eligible = sum(w.eligible for w in tally.weeks)
    flagged = sum(w.flagged for w in tally.weeks)
    positives = sum(w.positives for w in tally.weeks)
    tp = sum(w.true_positives for w in tally.weeks)
    # columns of a subject's counts: eligible, positive, flagged, true positive
    patterns = _patterns(replay, kind, (0, 1, 2 + 2 * i, 3 + 2 * i))
    precision_ci, recall_ci, lift_ci = bootstrap_intervals(
        patterns,
        [
            lambda s: rate(s[3], s[2]),
            lambda s: rate(s[3], s[1]),
            lambda s: lift(s[0], s[2], s[1], s[3]),
        ],
        seed=_SEED,
    )
    subjects = sum(n for key, n in patterns.items() if key[0])
    conversions = sum(n for key, n in patterns.items() if key[1])
    flag_rate = rate(flagged, eligible)
    weeks = tuple(
        WeekRow(
            from_us(w.at),
            w.eligible,
            w.flagged,
            w.positives,
            w.true_positives,
            rate(w.flagged, w.eligible),
            _healthy(rate(w.flagged, w.eligible)),
        )
        for w in tally.weeks
    )
    volumes = sorted(float(w.flagged) for w in tally.weeks)
    per_week = median(volumes)
    events = _event_figures(replay, kind, i, end)
    return RuleReport(
        kind=_RULES[kind],
        subjects=subjects,
        conversions=conversions,
        eligible=eligible,
        flagged=flagged,
        positives=positives,
        true_positives=tp,
        precision=rate(tp, flagged),
        recall=rate(tp, positives),
        flag_rate=flag_rate,
        unflagged_rate=rate(positives - tp, eligible - flagged),
        lift=lift(eligible, flagged, positives, tp),
        precision_ci=precision_ci,
        recall_ci=recall_ci,
        lift_ci=lift_ci,
        healthy=_healthy(flag_rate),
        flagged_per_week=float(per_week) if per_week is not None else None,
        weeks=weeks,
        scores={
            name: _score(hist, name in tally.track.probability)
            for name, hist in tally.scores.items()
        },
        signals={name: _signal(cell, eligible, positives) for name, cell in tally.signals.items()},
        **events,
    )


def _healthy(flag_rate: float | None) -> bool | None:
    if flag_rate is None:
        return None
    return HEALTHY[0] <= flag_rate <= HEALTHY[1]


def _score(hist: Histogram, probability: bool) -> ScoreReport:
    return ScoreReport(
        auc=hist.auc(),
        top10=hist.top_share(0.1),
        top20=hist.top_share(0.2),
        top30=hist.top_share(0.3),
        deciles=tuple(hist.deciles()),
        increasing=hist.increasing(),
        probability=probability,
        brier=hist.brier(100.0) if probability else None,
        reliability=tuple(hist.reliability(100.0)) if probability else None,
        distribution=tuple(hist.distribution()),
    )


def _signal(cell: list[int], eligible: int, positives: int) -> SignalReport:
    holds, holds_pos = cell
    when_true = rate(holds_pos, holds)
    when_false = rate(positives - holds_pos, eligible - holds)
    return SignalReport(
        holds=holds,
        holds_rate=rate(holds, eligible),
        rate_when_true=when_true,
        rate_when_false=when_false,
        lift=when_true / when_false if when_true is not None and when_false else None,
    )


class _Events(TypedDict):
    qualified: int
    converted: int
    converted_after_qualifying: int
    converted_after_qualifying_share: float | None
    lead_time_median: timedelta | None
    lead_time_p90: timedelta | None
    time_to_qualify_median: timedelta | None


def _event_figures(replay: Replay, kind: SubjectKind, i: int, end: int) -> _Events:
    """Qualifications against conversions, subject by subject, over the whole replay."""
    qualified = converted = early = 0
    leads: list[int] = []
    waits: list[int] = []
    for subject in replay.all_subjects(kind):
        q = subject.qualified[i]
        if q is not None:
            qualified += 1
            if subject.first is not None:
                waits.append(q - subject.first)
        conv = subject.converted
        if conv is None or conv > end:
            continue
        converted += 1
        if q is not None and q < conv:
            leads.append(conv - q)
            if conv - q >= micros(_DAY):
                early += 1
    leads.sort()
    waits.sort()
    return _Events(
        qualified=qualified,
        converted=converted,
        converted_after_qualifying=early,
        converted_after_qualifying_share=rate(early, converted),
        lead_time_median=_duration(median(leads)),
        lead_time_p90=_duration(nearest_rank(leads, 0.9)),
        time_to_qualify_median=_duration(median(waits)),
    )


def _duration(us: float | None) -> timedelta | None:
    return None if us is None else timedelta(microseconds=round(us))


def _compare(replay: Replay, kind: SubjectKind, i: int, j: int) -> ModelComparison:
    a, b = replay.tracks[i], replay.tracks[j]
    ta, tb = replay.tallies[kind][i], replay.tallies[kind][j]
    assert ta is not None
    assert tb is not None
    # columns: eligible, positive, a's flagged and true positives, b's
    patterns = _patterns(replay, kind, (0, 1, 2 + 2 * i, 3 + 2 * i, 2 + 2 * j, 3 + 2 * j))

    def precision(s: Sequence[float], o: int) -> float | None:
        return rate(s[o + 1], s[o])

    def recall(s: Sequence[float], o: int) -> float | None:
        return rate(s[o + 1], s[1])

    def lift_of(s: Sequence[float], o: int) -> float | None:
        return lift(s[0], s[o], s[1], s[o + 1])

    figures: tuple[Figure, ...] = (precision, recall, lift_of)
    statistics = [_difference(f) for f in figures]
    intervals = bootstrap_intervals(patterns, statistics, seed=_SEED)
    totals = [0.0] * 6
    for key, n in patterns.items():
        for c, v in enumerate(key):
            totals[c] += n * v
    point = [stat(totals) for stat in statistics]
    only_a = replay.only.get((kind, i, j), set())
    only_b = replay.only.get((kind, j, i), set())
    return ModelComparison(
        kind=_RULES[kind],
        a=a.name,
        b=b.name,
        precision_diff=point[0],
        precision_diff_ci=intervals[0],
        recall_diff=point[1],
        recall_diff_ci=intervals[1],
        lift_diff=point[2],
        lift_diff_ci=intervals[2],
        only_a=len(only_a),
        only_b=len(only_b),
        only_a_pairs=replay.only_pairs.get((kind, i, j), 0),
        only_b_pairs=replay.only_pairs.get((kind, j, i), 0),
        only_a_sample=_sample(only_a),
        only_b_sample=_sample(only_b),
    )


Figure = Callable[[Sequence[float], int], "float | None"]
"""A figure of one model from a comparison's column sums, its columns at an offset."""


def _difference(figure: Figure) -> Callable[[Sequence[float]], float | None]:
    """The statistic ``b - a`` of ``figure`` (``a``'s columns at 2, ``b``'s at 4)."""

    def statistic(s: Sequence[float]) -> float | None:
        va, vb = figure(s, 2), figure(s, 4)
        return None if va is None or vb is None else vb - va

    return statistic


def _sample(ids: set[str], n: int = 10) -> tuple[str, ...]:
    ordered = sorted(ids)
    if len(ordered) <= n:
        return tuple(ordered)
    return tuple(sorted(random.Random(_SEED).sample(ordered, n)))


def _warnings(
    report: Report,
    replay: Replay,
    goal: Outcome,
    scan: Scan,
    conversions: Mapping[SubjectKind, Mapping[str, int]],
) -> list[str]:
    out: list[str] = []
    assert report.first_event is not None
    assert report.last_event is not None
    assert report.start is not None
    assert report.end is not None
    span = report.end - report.first_event
    if goal.event is not None and not scan.outcome_events:
        out.append(
            f"the outcome event {goal.event!r} never occurs in the events: nobody converts,"
            " so no figure means anything (is it spelled as the product sends it?)"
        )
    if goal.times is not None:
        users = scan.final_users()
        resolve = scan.history.resolve
        missing = sum(1 for k in goal.times if k not in scan.accounts and resolve(k) not in users)
        if missing == len(goal.times):
            out.append(
                "none of the outcome's subjects appears in the events: nobody converts"
                " (do the ids match the user_id / account_id the events carry?)"
            )
        elif missing:
            out.append(
                f"{missing} of the outcome's {len(goal.times)} subjects never appear in the"
                " events; they are left out"
            )
    if not report.snapshots:
        out.append(
            f"no snapshot fits: the first is start + step and each needs horizon after it"
            f" ({_days(report.step + report.horizon)} in all), but start to end spans"
            f" {_days(report.end - report.start)}"
        )
    if report.end > report.last_event:
        out.append(
            f"end ({report.end:%Y-%m-%d}) is after the last event"
            f" ({report.last_event:%Y-%m-%d}): horizons running past it count as not"
            " converting, since nothing after it is known"
        )
    windows = [("lookback", report.lookback), ("horizon", report.horizon)]
    for name, track in zip(report.models, replay.tracks, strict=True):
        windows += [(f"{name}: {where}", w) for where, w in _windows(track.model)]
    long = [(where, w) for where, w in windows if w > span]
    if long:
        where, w = max(long, key=lambda x: x[1])
        others = f" (and {len(long) - 1} more)" if len(long) > 1 else ""
        out.append(
            f"{where} ({_days(w)}) is longer than the replayed history ({_days(span)}){others}:"
            " what it measures never fills"
        )
    for track in replay.tracks:
        out.extend(_recorded_warnings(track))
    if report.late:
        out.append(
            f"{report.late} events arrived after events more than a step ({_days(report.step)})"
            " later than them; each counts from when it arrived, as a live Client saw it"
        )
    readers = [
        name
        for name, t in zip(report.models, replay.tracks, strict=True)
        if t.plan.reads_user_traits or t.plan.reads_account_traits
    ]
    if readers and (scan.history.user_traits or scan.history.account_traits):
        out.append(
            f"{', '.join(repr(n) for n in readers)} read traits, which the source holds as"
            " they are now, not as they were at each snapshot: a trait that changes when a"
            " subject converts (a plan, a seat count) leaks the outcome into the figures"
        )
    for name, model in report.models.items():
        for rule in (model.pql, model.pqa):
            if rule is None:
                continue
            label = f"{name} {rule.kind}"
            noun = "users" if rule.kind == "pql" else "accounts"
            if rule.conversions < MIN_CONVERSIONS:
                out.append(
                    f"{label}: only {rule.conversions} {noun} converted within the horizon of a"
                    f" snapshot (fewer than {MIN_CONVERSIONS}): the intervals are wide and the"
                    " figures may not hold on new data"
                )
            if rule.healthy is False and rule.flag_rate is not None:
                out.append(
                    f"{label}: the rule flags {rule.flag_rate:.1%} of eligible {noun}, outside"
                    f" the healthy {HEALTHY[0]:.0%}-{HEALTHY[1]:.0%}"
                )
            for score, figures in rule.scores.items():
                if figures.increasing is False:
                    out.append(
                        f"{label}: the conversion rate does not rise with score {score!r}'s"
                        " deciles (see its decile table)"
                    )
    return out


def _recorded_warnings(track: Track) -> list[str]:
    """What limits a model's figures read from the store's records."""
    found = track.recorded
    if found is None:
        return []
    name, model = track.name, track.model
    if not found.count:
        return [
            f"{name}: the store records no pql or pqa qualification of model {model.name!r}:"
            " was it run on this store, live or as a shadow? Its rule flags nobody"
        ]
    out = []
    for kind in _kinds():
        if track.rule[kind] and not found.spans[kind]:
            out.append(
                f"{name}: the store records no {_RULES[kind]} qualification of {model.name!r}"
            )
    other = found.count - found.fingerprints.get(model.fingerprint, 0)
    if other:
        out.append(
            f"{name}: {other} of the {found.count} recorded qualifications of {model.name!r}"
            " were made by another definition of it (another fingerprint) than the one given:"
            " the flags are the store's, the scores and signals the given model's"
        )
    return out


def _windows(model: Model) -> list[tuple[str, timedelta]]:
    """Every window and duration a model's expressions hold, with where."""
    roots: list[tuple[str, d.Expr]] = [
        *((f"signal {n!r}", e) for n, e in model.signals.items()),
        *((f"score {n!r}", e) for n, e in model.scores.items()),
        *((rule, e) for rule, e in (("pql", model.pql), ("pqa", model.pqa)) if e is not None),
    ]
    found: list[tuple[str, timedelta]] = []
    for where, root in roots:
        for node in d.walk(root):
            for attr in ("within", "since_first_seen", "slow"):
                value = getattr(node, attr, None)
                if isinstance(value, timedelta):
                    found.append((f"{attr}={_days(value)} in {where}", value))
            if isinstance(node, d.Const) and isinstance(node.value, timedelta):
                found.append((f"{_days(node.value)} in {where}", node.value))
    return found


def _days(value: timedelta) -> str:
    days = value / _DAY
    return f"{days:g} days" if days != 1 else "1 day"
