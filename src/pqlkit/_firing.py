"""Firing: deciding, from a subject's evaluation, that it qualifies or is disqualified,
recording that, and building the payload its callbacks receive.

A qualification is recorded (and its delivery enqueued) in the transaction of the
write that caused it; its id is stable, the same in every delivery.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import attrs

from ._clock import Clock
from ._convert import from_us, json_converter, to_us
from ._dispatch import Dispatcher
from ._engine import NO_QUALIFICATION, Context, Evaluation, LatestQualification, Plan, explained
from ._events import Qualification
from ._model import Model, held_out, play_kind
from ._ranking import Ranking
from ._session import Due, Outcome, Subject
from ._traits import ACCOUNT_TRAIT, Traits
from .stores._base import (
    DeliveryKind,
    DeliveryRecord,
    NudgeRecord,
    QualificationRecord,
    Transaction,
)

__all__ = ["FORGOTTEN", "Firing", "of_account", "personal_values", "redact", "remember"]

_NAMESPACE = uuid.UUID("5a7e2b1c-9d1f-4c43-8f0e-2b9a1c7d6e01")


def _qualification_id(model: str, kind: str, subject: str, round_: int, first_seen: int) -> str:
    """A stable id: the same in every delivery, new for a subject forgotten and seen again."""
    key = f"{model}\x00{kind}\x00{subject}\x00{round_}\x00{first_seen}"
    return str(uuid.uuid5(_NAMESPACE, key))


def _public_traits(traits: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in traits.items() if k != ACCOUNT_TRAIT}


class Firing:
    """Fires and disqualifies one model's subjects (see the module docstring)."""

    def __init__(
        self,
        model: Model,
        plan: Plan,
        clock: Clock,
        dispatcher: Dispatcher,
        traits: Traits,
        context_events: int,
        *,
        ranking: Ranking | None = None,
        deliver: bool = True,
    ) -> None:
        self.model = model
        # False for a shadow model: it records qualifications, and never enqueues one
        self._deliver = deliver
        self._plan = plan
        self._clock = clock
        self._dispatcher = dispatcher
        self._traits = traits
        self._context_events = context_events
        self._ranking = ranking  # every evaluation finds the ranked scores and records them
        self._ranked = ranking is not None

    def evaluate(
        self,
        tx: Transaction,
        subject: Subject,
        t: int,
        out: Outcome,
        *,
        latch: bool = True,
        scores: bool = False,
        deliver: bool = True,
    ) -> Due:
        """Evaluate the subject at ``t``; fire or disqualify as its rule says; return
        when time alone may next change that (what the subject's save stores).

        Only what the rule reads is evaluated unless ``scores`` asks for every
        score (a user's, for ``TrackResult.scores``: ``out.scores``), and the
        model's ranked scores (recorded in the store where they changed, see
        :mod:`._ranking`); a payload is built from a
        full evaluation. Without ``deliver`` (a re-tune under ``on_retune="record"``)
        a qualification or disqualification is recorded, and nothing is enqueued
        (nor ever for a shadow model's Firing, made with ``deliver=False``).
        """
        ctx = self._traits.context(tx, subject, full=False)
        ev = self._plan.evaluate(
            subject.state,
            t,
            subject.kind,
            ctx,
            latch=latch,
            full=False,
            scores=scores,
            ranked=self._ranked,
        )
        if scores:
            out.scores = ev.scores
        if self._ranking is not None:
            self._ranking.record(tx, subject, ev)
        due = Due(t, subject.state.events, ev.until)
        deliver = deliver and self._deliver  # a shadow model's firing delivers nothing
        if self._plan.rule_fns[subject.kind] is not None:  # a rule for this kind
            cached = subject.state.qualification  # see remember()
            # (qualified and still true, or not qualified and still false: nothing to do)
            if cached is None or cached.qualified != ev.rule:
                requalify = self._fire(tx, subject, ev, out, deliver, None, ev.rule)
                if requalify is not None and requalify > t:
                    due.at = requalify if due.at is None else min(due.at, requalify)
        if ev.plays:  # (empty for a model without plays, or none of this kind)
            cache = subject.state.plays
            for play, holds in ev.plays.items():
                known = cache.get(play)
                if known is not None and known.qualified == holds:
                    continue
                requalify = self._fire(tx, subject, ev, out, deliver, play, holds)
                if requalify is not None and requalify > t:
                    due.at = requalify if due.at is None else min(due.at, requalify)
        return due

    def _fire(
        self,
        tx: Transaction,
        subject: Subject,
        ev: Evaluation,
        out: Outcome,
        deliver: bool,
        play: str | None,
        holds: bool,
    ) -> int | None:
        """Record a qualification or disqualification as the rule (or ``play``) says, its
        standing having changed, and enqueue its delivery; a rule true during the
        re-qualification cool-down returns when that ends (a sweep then fires it).

        A play's qualification held out (its ``holdout`` share) is recorded and
        enqueued nowhere; one that is not opens the play's nudge, if it declares one.
        A play's disqualification is recorded (for ``requalify_after``), not delivered.
        """
        t = ev.t
        rule_kind: Literal["pql", "pqa", "play"]
        if play is not None:
            rule_kind = "play"
            store_kind = play_kind(play)
            declared = self.model.plays[play]
            cool = declared.requalify_after
        else:
            rule_kind = "pql" if subject.kind == "user" else "pqa"
            store_kind = rule_kind
            cool = self.model.requalify_after
        name = self.model.name
        latest = self._latest(tx, subject, store_kind, play)
        when = from_us(t)
        if holds:
            round_ = None
            if latest is None:
                round_ = 0
            elif latest.disqualified_at is not None:
                if cool is not None and when >= latest.disqualified_at + cool:
                    round_ = latest.round + 1
                elif cool is not None:  # a sweep at the cool-down's end fires it
                    return to_us(latest.disqualified_at + cool)
            if round_ is None:
                return None
            assert subject.state.first is not None
            qid = _qualification_id(name, store_kind, subject.id, round_, subject.state.first)
            record = QualificationRecord(
                qid,
                name,
                store_kind,
                subject.id,
                round_,
                self.model.fingerprint,
                when,
                from_us(subject.state.first),
            )
            if not tx.insert_qualification(record):
                _forget_cached(subject, play)  # a concurrent writer got there first
                return None
            remember(subject, record, play)
            if not deliver:
                return None
            q = self._payload(
                tx, subject, ev, qid, rule_kind, when, self._traits.context(tx, subject)
            )
            if play is None:
                self._enqueue(tx, rule_kind, q)
            elif held_out(name, play, subject.id, declared.holdout):
                q = attrs.evolve(q, play=play, holdout=True)  # recorded: no action taken
            else:
                q = attrs.evolve(q, play=play)
                self._enqueue(tx, store_kind, q)
                if declared.nudge is not None:
                    self._open_nudge(tx, subject, play, declared.nudge, declared.until)
            out.qualified.append(q)
            out.enqueued = True
        elif latest is not None and latest.disqualified_at is None:
            tx.set_disqualified(latest.id, when)
            remember(subject, attrs.evolve(latest, disqualified_at=when), play)
            if not deliver or play is not None:
                return None
            dq_id = _qualification_id(
                name, "disqualified", subject.id, latest.round, to_us(latest.first_seen)
            )
            q = attrs.evolve(
                self._payload(
                    tx,
                    subject,
                    ev,
                    dq_id,
                    rule_kind,
                    latest.qualified_at,
                    self._traits.context(tx, subject),
                ),
                disqualified_at=when,
            )
            self._enqueue(tx, "disqualified", q)
            out.disqualified.append(q)
            out.enqueued = True
        return None

    def _enqueue(self, tx: Transaction, kind: DeliveryKind, q: Qualification) -> None:
        """Enqueue the delivery of ``q`` to the callbacks of ``kind``."""
        # the first attempt is due now on the client's clock (T, an event's
        # timestamp or a sweep's `now`, may lie in the clock's future)
        now = self._clock.now()
        tx.enqueue(
            DeliveryRecord(q.id, kind, q.subject_id, q, next_attempt_at=now),
            self._dispatcher.names(kind),
            now=now,
            known_since=now - self._dispatcher.window,
        )

    def _open_nudge(
        self,
        tx: Transaction,
        subject: Subject,
        play: str,
        payload: Mapping[str, Any],
        until: timedelta | None,
    ) -> None:
        """Open the play's nudge for the user (keyed by the play's name), in this transaction."""
        now = self._clock.now()
        end = None if until is None else now + until
        record = NudgeRecord(
            subject.id, play, dict(payload), now, end, model=self.model.name, play=play
        )
        tx.open_nudge(record, now)

    def _latest(
        self, tx: Transaction, subject: Subject, kind: str, play: str | None
    ) -> QualificationRecord | None:
        """The subject's latest record of the rule (or ``play``), cached in its state."""
        state = subject.state
        cached = state.qualification if play is None else state.plays.get(play)
        if cached is None:
            record = tx.latest_qualification(self.model.name, kind, subject.id)
            remember(subject, record, play)
            return record
        if cached is NO_QUALIFICATION:
            return None
        disqualified = cached.disqualified_at
        return QualificationRecord(
            cached.id,
            self.model.name,
            kind,
            subject.id,
            cached.round,
            cached.fingerprint,
            from_us(cached.qualified_at),
            from_us(cached.first_seen),
            None if disqualified is None else from_us(disqualified),
        )

    def _payload(
        self,
        tx: Transaction,
        subject: Subject,
        ev: Evaluation,
        qid: str,
        kind: Literal["pql", "pqa", "play"],
        when: datetime,
        ctx: Context,
    ) -> Qualification:
        # one evaluation of everything: the explanation, and the signals and scores it read
        lines, signals, scores = explained(self._plan, subject.state, ev.t, subject.kind, ctx)
        if subject.kind == "user":
            ids = [subject.id, *tx.aliases_of(subject.id)]
            recent = tx.recent_events(ids, self._context_events)
        else:
            users = sorted(tx.users_of(subject.id))
            recent = [
                e
                for e in tx.recent_events(users, self._context_events * 10)
                if e.account_id == subject.id
            ][: self._context_events]
        first = subject.state.first
        context = {
            "user_traits": _public_traits(ctx.user_traits),
            "account_traits": dict(ctx.account_traits),
            "first_seen": from_us(first).isoformat() if first is not None else None,
            "events": [
                json_converter.unstructure(
                    {
                        "event": e.event,
                        "user_id": e.user_id,
                        "timestamp": e.timestamp,
                        "properties": e.properties,
                    }
                )
                for e in recent
            ],
        }
        return Qualification(
            id=qid,
            kind=kind,
            subject_id=subject.id,
            account_id=subject.account if subject.kind == "user" else subject.id,
            model=self.model.name,
            fingerprint=self.model.fingerprint,
            qualified_at=when,
            scores=scores,
            signals=tuple(sorted(name for name, true in signals.items() if true)),
            explanation=tuple(lines),
            context=context,
        )


def remember(subject: Subject, record: QualificationRecord | None, play: str | None = None) -> None:
    """Cache ``record`` (the subject's latest qualification, of ``play`` if given) in its state."""
    if record is None:
        cached = NO_QUALIFICATION
    else:
        dq = record.disqualified_at
        cached = LatestQualification(
            record.id,
            record.round,
            record.fingerprint,
            to_us(record.qualified_at),
            to_us(record.first_seen),
            None if dq is None else to_us(dq),
        )
    if play is None:
        subject.state.qualification = cached
    else:
        subject.state.plays[play] = cached


def _forget_cached(subject: Subject, play: str | None) -> None:
    """Drop what the state caches of the rule's (or ``play``'s) latest record: unknown."""
    if play is None:
        subject.state.qualification = None
    else:
        subject.state.plays.pop(play, None)


FORGOTTEN = "[forgotten]"
"""What ``forget`` writes in a stored payload where a forgotten user's value was."""


def _strings(value: Any, into: set[str]) -> None:
    """Add every string in ``value`` (a JSON-like value: its texts, not its keys)."""
    if isinstance(value, str):
        into.add(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            _strings(item, into)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _strings(item, into)


def personal_values(tx: Transaction, user_ids: list[str]) -> set[str]:
    """The texts a stored payload may quote about these users: their ids, and every
    string in their events' properties and their traits (read before they are deleted)."""
    found = set(user_ids)
    for e in tx.events(user_ids=user_ids):
        _strings(e.properties, found)
    for uid in user_ids:
        _strings(tx.traits("user", uid), found)
    found.discard("")
    return found


def _scrub(value: Any, values: set[str]) -> Any:
    """``value`` with every string that is one of ``values`` replaced by FORGOTTEN."""
    if isinstance(value, str):
        return FORGOTTEN if value in values else value
    if isinstance(value, Mapping):
        return {k: _scrub(v, values) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, values) for v in value]
    return value


def _scrub_line(line: str, quoted: list[tuple[str, str]]) -> str:
    """An explanation line with each quoted value (as explanations quote it) replaced."""
    for text, replacement in quoted:
        if text in line:
            line = line.replace(text, replacement)
    return line


def of_account(q: Qualification) -> bool:
    """Whether a payload is an account's: a pqa, or a play of="account" (whose
    account_id is the subject itself). ``forget()`` redacts these of a user's accounts."""
    return q.kind == "pqa" or (q.kind == "play" and q.account_id == q.subject_id)


def redact(tx: Transaction, accounts: set[str], user_ids: set[str], values: set[str]) -> None:
    """Remove these users from the stored payloads of these accounts' deliveries: their
    events leave the context, and every one of ``values`` (see :func:`personal_values`)
    quoted in an explanation line or held in the context becomes ``"[forgotten]"``."""
    if not accounts:
        return
    quoted = [(repr(v), repr(FORGOTTEN)) for v in sorted(values, key=len, reverse=True)]
    done: set[str] = set()
    for status in ("pending", "delivered", "dead", "expired"):
        for d in tx.deliveries(status):
            q = d.qualification
            if not of_account(q) or q.subject_id not in accounts or d.id in done:
                continue
            done.add(d.id)
            events = q.context.get("events", [])
            kept = [e for e in events if e.get("user_id") not in user_ids]
            context = _scrub({**q.context, "events": kept}, values)
            explanation = tuple(_scrub_line(line, quoted) for line in q.explanation)
            if context != q.context or explanation != q.explanation:
                tx.replace_qualification(
                    d.id, attrs.evolve(q, context=context, explanation=explanation)
                )
