"""Firing: deciding, from a subject's evaluation, that it qualifies or is disqualified,
recording that, and building the payload its callbacks receive.

A qualification is recorded (and its delivery enqueued) in the transaction of the
write that caused it; its id is stable, the same in every delivery.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import attrs

from ._clock import Clock
from ._convert import from_us, json_converter, to_us
from ._dispatch import Dispatcher
from ._engine import NO_QUALIFICATION, Context, Evaluation, LatestQualification, Plan, explained
from ._events import Qualification
from ._model import Model
from ._ranking import Ranking
from ._session import Due, Outcome, Subject
from ._traits import ACCOUNT_TRAIT, Traits
from .stores._base import DeliveryKind, DeliveryRecord, QualificationRecord, Transaction

__all__ = ["Firing", "redact", "remember"]

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
        if self._plan.rule_fns[subject.kind] is None:  # no rule for this kind
            return due
        cached = subject.state.qualification  # see remember()
        if cached is not None and cached.qualified == ev.rule:
            return due  # qualified and still true, or not qualified and still false
        requalify = self._fire(tx, subject, ev, out, deliver and self._deliver)
        if requalify is not None and requalify > t:
            due.at = requalify if due.at is None else min(due.at, requalify)
        return due

    def _fire(
        self, tx: Transaction, subject: Subject, ev: Evaluation, out: Outcome, deliver: bool
    ) -> int | None:
        """Record a qualification or disqualification as the evaluation's rule says (its
        standing changed) and enqueue its delivery; a rule true during the
        re-qualification cool-down returns when that ends (a sweep then fires it)."""
        t = ev.t
        rule_kind: Literal["pql", "pqa"] = "pql" if subject.kind == "user" else "pqa"
        name = self.model.name
        latest = self._latest(tx, subject, rule_kind)
        when = from_us(t)
        if ev.rule:
            round_ = None
            if latest is None:
                round_ = 0
            elif latest.disqualified_at is not None:
                cool = self.model.requalify_after
                if cool is not None and when >= latest.disqualified_at + cool:
                    round_ = latest.round + 1
                elif cool is not None:  # a sweep at the cool-down's end fires it
                    return to_us(latest.disqualified_at + cool)
            if round_ is None:
                return None
            assert subject.state.first is not None
            qid = _qualification_id(name, rule_kind, subject.id, round_, subject.state.first)
            record = QualificationRecord(
                qid,
                name,
                rule_kind,
                subject.id,
                round_,
                self.model.fingerprint,
                when,
                from_us(subject.state.first),
            )
            if not tx.insert_qualification(record):
                subject.state.qualification = None  # a concurrent writer got there first
                return None
            remember(subject, record)
            if not deliver:
                return None
            q = self._payload(
                tx, subject, ev, qid, rule_kind, when, self._traits.context(tx, subject)
            )
            self._enqueue(tx, rule_kind, q)
            out.qualified.append(q)
            out.enqueued = True
        elif latest is not None and latest.disqualified_at is None:
            tx.set_disqualified(latest.id, when)
            remember(subject, attrs.evolve(latest, disqualified_at=when))
            if not deliver:
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

    def _latest(
        self, tx: Transaction, subject: Subject, kind: Literal["pql", "pqa"]
    ) -> QualificationRecord | None:
        """The subject's latest qualification record, cached in its state."""
        cached = subject.state.qualification
        if cached is None:
            record = tx.latest_qualification(self.model.name, kind, subject.id)
            remember(subject, record)
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
        kind: Literal["pql", "pqa"],
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


def remember(subject: Subject, record: QualificationRecord | None) -> None:
    """Cache ``record`` (the subject's latest qualification) in its state."""
    if record is None:
        subject.state.qualification = NO_QUALIFICATION
        return
    dq = record.disqualified_at
    subject.state.qualification = LatestQualification(
        record.id,
        record.round,
        record.fingerprint,
        to_us(record.qualified_at),
        to_us(record.first_seen),
        None if dq is None else to_us(dq),
    )


def redact(tx: Transaction, accounts: set[str], user_ids: set[str]) -> None:
    """Remove these users' events from the stored payloads of these accounts' deliveries."""
    if not accounts:
        return
    done: set[str] = set()
    for status in ("pending", "delivered", "dead", "expired"):
        for d in tx.deliveries(status):
            q = d.qualification
            if q.kind != "pqa" or q.subject_id not in accounts or d.id in done:
                continue
            done.add(d.id)
            events = q.context.get("events", [])
            kept = [e for e in events if e.get("user_id") not in user_ids]
            if len(kept) != len(events):
                tx.replace_qualification(
                    d.id, attrs.evolve(q, context={**q.context, "events": kept})
                )
