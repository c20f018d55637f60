"""``measure_play()``: did a play change conversion? Its treated subjects against its held-out ones.

A play with ``holdout=h`` withholds its action from a stable, hash-chosen share h of the
subjects it fires for (recorded with ``Qualification.holdout``, never delivered nor
nudged). The two groups are chosen by the hash, not by anything the subjects did, so
the difference in their conversion rates within a horizon after qualifying estimates
the play's effect. This reads the play's recorded qualifications from a store (only
read) and the conversions from the store's events or a given mapping / CSV.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from .._convert import to_us
from .._events import JsonRecord
from .._model import Model, held_out, play_kind
from .._validation import check_timestamp
from ..exceptions import ValidationError
from ..stores import Store, open_store
from .outcome import parse_outcome
from .stats import bootstrap_intervals, rate

__all__ = ["PlayReport", "measure_play"]

_PAGE = 1_000
_SEED = 20_261_206


@attrs.frozen
class PlayReport(JsonRecord):
    """Conversion of a play's treated subjects against its held-out ones.

    Attributes:
        model: The model's name.
        play: The play's name.
        holdout: The play's declared holdout share.
        horizon: How long after qualifying a conversion counts.
        treated: Subjects the play acted on (qualified at least ``horizon`` before ``end``).
        treated_converted: Of them, those that converted within the horizon.
        held_out: Subjects it held out (same window).
        held_out_converted: Of them, those that converted within the horizon.
        treated_rate: ``treated_converted / treated`` (None without treated subjects).
        held_out_rate: ``held_out_converted / held_out`` (None without held-out ones).
        difference: ``treated_rate - held_out_rate``: the play's effect on conversion.
        difference_ci: Its 95% interval (bootstrap over subjects), or None with too little data.
        lift: ``treated_rate / held_out_rate``.
        warnings: What limits the figures (too few subjects in a group, ...).
    """

    model: str
    play: str
    holdout: float
    horizon: timedelta
    treated: int
    treated_converted: int
    held_out: int
    held_out_converted: int
    treated_rate: float | None
    held_out_rate: float | None
    difference: float | None
    difference_ci: tuple[float, float] | None
    lift: float | None
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.1%}"

        ci = self.difference_ci
        interval = "" if ci is None else f" [{ci[0]:+.1%}, {ci[1]:+.1%}]"
        diff = "-" if self.difference is None else f"{self.difference:+.1%}"
        lines = [
            f"play {self.play!r} of {self.model!r} (holdout {self.holdout:.0%}, converted"
            f" within {self.horizon.days}d of qualifying)",
            f"  treated    {self.treated:>7,}  converted {self.treated_converted:>6,}"
            f"  {pct(self.treated_rate)}",
            f"  held out   {self.held_out:>7,}  converted {self.held_out_converted:>6,}"
            f"  {pct(self.held_out_rate)}",
            f"  difference {diff}{interval}"
            + ("" if self.lift is None else f"; lift {self.lift:.2f}"),
        ]
        lines += [f"  ! {w}" for w in self.warnings]
        return "\n".join(lines)


def measure_play(
    model: Model,
    play: str,
    store: Store | str,
    *,
    outcome: object,
    horizon: timedelta = timedelta(days=30),
    end: datetime | None = None,
) -> PlayReport:
    """Treated against held-out conversion of one of ``model``'s plays, from a store.

    Args:
        model: The model whose play fired (its name keys the store's records).
        play: The play's name; it must declare ``holdout`` > 0.
        store: A :class:`~pqlkit.stores.Store` or a store URL (opened read-only; never
            created).
        outcome: An event name (a subject's first such event after it qualified is
            its conversion: a user's own events, an account's any of its users'), a
            mapping of subject id to aware datetime, or a CSV file
            ``subject_id,converted_at``.
        horizon: How long after qualifying a conversion counts.
        end: Where the data ends (default: now). Subjects that qualified less than
            ``horizon`` before it are left out: their outcome is not known yet.

    Raises:
        ValidationError: A bad argument, naming it (an unknown play, one without a
            holdout, a condition as outcome, a horizon not above zero, ...).
    """
    if not isinstance(model, Model):
        raise ValidationError("model", f"must be a pqlkit.Model, got {type(model).__name__}")
    declared = model.plays.get(play) if isinstance(play, str) else None
    if declared is None:
        known = ", ".join(repr(n) for n in model.plays) or "none"
        raise ValidationError("play", f"unknown play {play!r} (the model's plays: {known})")
    if declared.holdout <= 0:
        raise ValidationError(
            "play", f"{play!r} holds nobody out (holdout=0): there is no group to compare with"
        )
    if not isinstance(horizon, timedelta) or horizon <= timedelta(0):
        raise ValidationError("horizon", f"must be a timedelta above zero, got {horizon!r}")
    until = check_timestamp(datetime.now(timezone.utc) if end is None else end, "end")
    checked = parse_outcome(outcome)
    if checked.model is not None:
        raise ValidationError(
            "outcome", "measure_play takes an event name or given conversions, not a condition"
        )
    opened = open_store(store, read_only=True) if isinstance(store, str) else None
    source = store if opened is None else opened
    if isinstance(source, str):  # pragma: no cover - opened above
        raise AssertionError(source)
    try:
        with source.transaction() as tx:
            records = []
            before: tuple[datetime, str] | None = None
            while True:
                page = tx.recent_qualifications(
                    model.name, kinds=[play_kind(play)], before=before, limit=_PAGE
                )
                records += [record for record, _ in page]
                if len(page) < _PAGE:
                    break
                before = (page[-1][0].qualified_at, page[-1][0].id)
            first: dict[str, Any] = {}
            for record in records:  # a subject's first qualification, if it fired again
                held = first.get(record.subject_id)
                if held is None or record.qualified_at < held.qualified_at:
                    first[record.subject_id] = record
            patterns: Counter[tuple[int, ...]] = Counter()
            for sid, record in first.items():
                if record.qualified_at + horizon > until:
                    continue
                start, stop = to_us(record.qualified_at), to_us(record.qualified_at + horizon)
                converted = _converts(tx, checked, declared.of, sid, start, stop)
                if held_out(model.name, play, sid, declared.holdout):
                    patterns[(0, 0, 1, int(converted))] += 1
                else:
                    patterns[(1, int(converted), 0, 0)] += 1
    finally:
        if opened is not None:
            opened.close()
    return _report(model.name, play, declared.holdout, horizon, patterns)


def _converts(tx: Any, outcome: Any, of: str, sid: str, start: int, stop: int) -> bool:
    """Whether ``sid`` converts in (start, stop] (µs)."""
    if outcome.times is not None:
        when = outcome.times.get(sid)
        return when is not None and start < when <= stop
    events = tx.events(user_ids=[sid]) if of == "user" else tx.events(account_id=sid)
    return any(e.event == outcome.event and start < to_us(e.timestamp) <= stop for e in events)


def _report(
    model: str,
    play: str,
    holdout: float,
    horizon: timedelta,
    patterns: Mapping[tuple[int, ...], int],
) -> PlayReport:
    sums = [sum(n * p[i] for p, n in patterns.items()) for i in range(4)]
    treated, treated_converted, held, held_converted = sums

    def difference(s: Sequence[float]) -> float | None:
        a, b = rate(s[1], s[0]), rate(s[3], s[2])
        return None if a is None or b is None else a - b

    (interval,) = bootstrap_intervals(patterns, [difference], seed=_SEED)
    treated_rate, held_rate = rate(treated_converted, treated), rate(held_converted, held)
    warnings = []
    for name, size in (("treated", treated), ("held-out", held)):
        if size < 100:
            warnings.append(
                f"only {size} {name} subjects qualified at least {horizon.days} days before the"
                " data's end: the interval is wide"
            )
    return PlayReport(
        model=model,
        play=play,
        holdout=holdout,
        horizon=horizon,
        treated=treated,
        treated_converted=treated_converted,
        held_out=held,
        held_out_converted=held_converted,
        treated_rate=treated_rate,
        held_out_rate=held_rate,
        difference=difference([float(v) for v in sums]),
        difference_ci=interval,
        lift=None if treated_rate is None or not held_rate else treated_rate / held_rate,
        warnings=tuple(warnings),
    )
