"""A naive oracle for the model DSL (API.md §2): every value recomputed from the whole history.

Nothing here is incremental and nothing is shared with :mod:`pqlkit._engine`:
each aggregate filters the subject's full list of events and computes its value
from scratch, straight from the written semantics. It is slow on purpose and
meant to be read as the executable form of the contract.

Vocabulary:

* a *history* is what a client was told, in arrival order: :class:`Track`,
  :class:`Alias`, :class:`Identify` and :class:`Group` records;
* times are integer microseconds since the Unix epoch;
* a *subject* is a user (``kind="user"``) or an account (``kind="account"``);
* T is the evaluation time and F the subject's first-seen time (its earliest
  event timestamp, over all of its events).
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

import attrs

from pqlkit import _dsl as d
from pqlkit._model import Model

SECOND = 1_000_000
HOUR = 3_600 * SECOND
DAY = 86_400 * SECOND

Kind = Literal["user", "account"]


# -- the history ------------------------------------------------------------------


@attrs.frozen
class Track:
    """``client.track(user_id, name, props, account_id=, timestamp=ts, message_id=)``."""

    user_id: str
    name: str
    ts: int
    props: Mapping[str, Any] = attrs.field(factory=dict)
    account_id: str | None = None
    message_id: str | None = None


@attrs.frozen
class Alias:
    """``client.alias(prev, user)``: ``prev``'s events count for ``user`` from now on."""

    prev: str
    user: str


@attrs.frozen
class Identify:
    """``client.identify(user_id, traits, account_id=)``: traits merged into the user's."""

    user_id: str
    traits: Mapping[str, Any]
    account_id: str | None = None


@attrs.frozen
class Group:
    """``client.group(account_id, traits)``: traits merged into the account's."""

    account_id: str
    traits: Mapping[str, Any]


Op = Track | Alias | Identify | Group


@attrs.frozen
class Event:
    """One event as a subject sees it: the user id is alias-resolved."""

    ts: int
    name: str
    props: Mapping[str, Any]
    user_id: str
    account_id: str | None


def resolve(history: Sequence[Op], user_id: str) -> str:
    """The id ``user_id``'s events count for, after every alias in the history.

    ``alias(prev, user)`` sends prev (and every id already aliased to prev) to
    user; chains are followed to their end.
    """
    target = {op.prev: op.user for op in history if isinstance(op, Alias)}
    seen = {user_id}
    while user_id in target:
        user_id = target[user_id]
        if user_id in seen:  # a cycle: stop where it closes
            break
        seen.add(user_id)
    return user_id


def tracks(history: Sequence[Op]) -> list[Track]:
    """The accepted tracks in arrival order: a repeated message_id is ignored entirely."""
    out: list[Track] = []
    seen: set[str] = set()
    for op in history:
        if not isinstance(op, Track):
            continue
        if op.message_id is not None:
            if op.message_id in seen:
                continue
            seen.add(op.message_id)
        out.append(op)
    return out


def subject_events(history: Sequence[Op], subject: str, kind: Kind) -> list[Event]:
    """The subject's events in arrival order.

    A user's events are those recorded under any id resolving to it; an
    account's are every event carrying its ``account_id``.
    """
    out = []
    for tr in tracks(history):
        user = resolve(history, tr.user_id)
        mine = user == subject if kind == "user" else tr.account_id == subject
        if mine:
            out.append(Event(tr.ts, tr.name, tr.props, user, tr.account_id))
    return out


def subjects(history: Sequence[Op]) -> set[tuple[Kind, str]]:
    """Every subject that has at least one event."""
    out: set[tuple[Kind, str]] = set()
    for tr in tracks(history):
        out.add(("user", resolve(history, tr.user_id)))
        if tr.account_id is not None:
            out.add(("account", tr.account_id))
    return out


def user_traits(history: Sequence[Op], user_id: str) -> dict[str, Any]:
    """The user's traits: every ``identify`` of it merged, later calls winning."""
    out: dict[str, Any] = {}
    for op in history:
        if isinstance(op, Identify) and op.user_id == user_id:
            out.update(op.traits)
    return out


def account_traits(history: Sequence[Op], account_id: str | None) -> dict[str, Any]:
    """The account's traits: every ``group`` of it merged, later calls winning."""
    out: dict[str, Any] = {}
    for op in history:
        if isinstance(op, Group) and op.account_id == account_id:
            out.update(op.traits)
    return out


def account_of(history: Sequence[Op], user_id: str) -> str | None:
    """The user's account: the ``account_id`` of its latest event that has one (by
    timestamp, then arrival), otherwise the last one given to ``identify``."""
    events = [e for e in subject_events(history, user_id, "user") if e.account_id is not None]
    if events:
        latest = max(enumerate(events), key=lambda ie: (ie[1].ts, ie[0]))[1]
        return latest.account_id
    identified = [
        op.account_id
        for op in history
        if isinstance(op, Identify) and op.user_id == user_id and op.account_id is not None
    ]
    return identified[-1] if identified else None


# -- the oracle -------------------------------------------------------------------


def expected(
    model: Model,
    events: Sequence[Op],
    subject: str,
    kind: Kind,
    t: int,
    user_traits: Mapping[str, Any],
    account_traits: Mapping[str, Any],
) -> dict[str, Any]:
    """Signals, scores and the rule of ``subject`` evaluated at time ``t``.

    Args:
        model: The model.
        events: The history (tracks, aliases, traits calls) in arrival order.
        subject: The user id or account id.
        kind: ``"user"`` or ``"account"``.
        t: The evaluation time T (µs).
        user_traits: The user's traits (ignored for accounts).
        account_traits: The traits of the user's account, or of the account itself.

    Returns:
        ``{"signals": {name: bool}, "scores": {name: float}, "rule": bool}``
        (``rule`` is the ``pql`` for users and the ``pqa`` for accounts).
    """
    mine = subject_events(events, subject, kind)
    if not mine:
        raise ValueError(f"{kind} {subject!r} has no events")
    ev = Evaluator(model, mine, kind, t, user_traits, account_traits)
    signals = {name: ev.signal(name) for name in model.signals}
    scores = {name: ev.score(name) for name in model.scores}
    rule_expr = model.pql if kind == "user" else model.pqa
    rule = bool(ev.value(rule_expr)) if rule_expr is not None else False
    return {"signals": signals, "scores": scores, "rule": rule}


def is_number(v: Any) -> bool:
    """A finite int or float; bool is not a number."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def canonical(v: Any) -> str:
    """The text distinct() compares values by."""
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def matches(match: d.Match, e: Event) -> bool:
    """The event has the name (any name for None) and passes ``where``."""
    if match.event is not None and e.name != match.event:
        return False
    where = match.where
    if where is None:
        return True
    if callable(where):
        return bool(where(e.props))
    return all(k in e.props and e.props[k] == v for k, v in where.items())


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def compare(op: str, a: Any, b: Any) -> bool:
    """False when either side is None (``!=`` too) or the values cannot be compared."""
    if a is None or b is None:
        return False
    try:
        return bool(_COMPARE[op](a, b))
    except TypeError:
        return False


def arith(op: str, a: Any, b: Any) -> Any:
    """None unless both sides are numbers; None on division by zero."""
    if not is_number(a) or not is_number(b):
        return None
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return None
    return a / b


def us(td: timedelta) -> int:
    """A duration in whole microseconds."""
    return (td.days * 86_400 + td.seconds) * SECOND + td.microseconds


class Evaluator:
    """One subject at one time T, over the full list of its events."""

    def __init__(
        self,
        model: Model,
        events: Sequence[Event],
        kind: Kind,
        t: int,
        user_traits: Mapping[str, Any],
        account_traits: Mapping[str, Any],
    ) -> None:
        self.model = model
        self.events = list(events)  # arrival order
        self.kind = kind
        self.t = t
        self.user_traits = user_traits
        self.account_traits = account_traits
        self.first = min(e.ts for e in self.events)  # F
        self.newest = max(e.ts for e in self.events)

    # -- declared names ----------------------------------------------------------
    def signal(self, name: str) -> bool:
        return bool(self.value(self.model.signals[name]))

    def score(self, name: str) -> float:
        v = self.value(self.model.scores[name])
        return float(v) if is_number(v) else 0.0

    # -- event selection ---------------------------------------------------------
    def selected(
        self,
        match: d.Match,
        within: timedelta | None = None,
        since_first_seen: timedelta | None = None,
    ) -> list[Event]:
        """Matching events, in arrival order, inside the window.

        ``within=D``: ts in (T - D, T]. ``since_first_seen=D``: ts in [F, F + D).
        """
        out = [e for e in self.events if matches(match, e)]
        if within is not None:
            out = [e for e in out if self.t - us(within) < e.ts <= self.t]
        if since_first_seen is not None:
            out = [e for e in out if self.first <= e.ts < self.first + us(since_first_seen)]
        return out

    # -- values ------------------------------------------------------------------
    def value(self, node: d.Expr) -> Any:
        if isinstance(node, d.Const):
            return node.value
        if isinstance(node, d.Count):
            return len(self.selected(node.match, node.within, node.since_first_seen))
        if isinstance(node, d.Total):
            chosen = self.selected(node.match, node.within, node.since_first_seen)
            values = [e.props.get(node.prop) for e in chosen]
            return sum(v if is_number(v) else 0 for v in values)
        if isinstance(node, d.Distinct):
            chosen = self.selected(node.match, node.within, node.since_first_seen)
            values = [e.props.get(node.prop) for e in chosen]
            return len({canonical(v) for v in values if v is not None})
        if isinstance(node, d.ActiveDays):
            chosen = self.selected(node.match, node.within, node.since_first_seen)
            return len({e.ts // DAY for e in chosen})
        if isinstance(node, d.ActiveUsers):
            if self.kind != "account":
                return None
            return len({e.user_id for e in self.selected(node.match, node.within)})
        if isinstance(node, d.Last):
            arrivals = list(enumerate(self.selected(node.match)))
            if not arrivals:
                return None
            # latest by timestamp; on a tie, the later arrival
            latest = max(arrivals, key=lambda ie: (ie[1].ts, ie[0]))[1]
            return latest.props.get(node.prop)
        if isinstance(node, d.Trait):
            if node.of == "user":
                return self.user_traits.get(node.trait) if self.kind == "user" else None
            return self.account_traits.get(node.trait)
        if isinstance(node, d.TimeTo):
            chosen = self.selected(node.match)
            if not chosen:
                return None
            return timedelta(microseconds=min(e.ts for e in chosen) - self.first)
        if isinstance(node, d.Idle):
            return timedelta(microseconds=self.t - self.newest)
        if isinstance(node, d.Sequence):
            return self.sequence(node)
        if isinstance(node, d.Absent):
            return self.absent(node)
        if isinstance(node, d.Arith):
            return arith(node.op, self.value(node.left), self.value(node.right))
        if isinstance(node, d.Compare):
            return compare(node.op, self.value(node.left), self.value(node.right))
        if isinstance(node, d.IsIn):
            v = self.value(node.value)
            return v is not None and any(v == o for o in node.options)
        if isinstance(node, d.All):
            return all(self.value(i) for i in node.items)
        if isinstance(node, d.Any_):
            return any(self.value(i) for i in node.items)
        if isinstance(node, d.Not):
            return not self.value(node.item)
        if isinstance(node, d.AtLeast):
            return sum(bool(self.value(i)) for i in node.items) >= node.k
        if isinstance(node, d.SignalRef):
            return self.signal(node.signal)
        if isinstance(node, d.ScoreRef):
            return self.score(node.score)
        if isinstance(node, d.Points):
            return sum(w for name, w in node.weights if self.signal(name))
        if isinstance(node, d.Fit):
            return sum(p for cond, p in node.rules if self.value(cond))
        if isinstance(node, d.Tev):
            return self.tev(node)
        raise TypeError(f"the oracle does not know {type(node).__name__}")

    def sequence(self, node: d.Sequence) -> bool:
        """Some e1..ek match the steps at strictly increasing times with tk - t1 <= within.

        For each candidate first event, taking the earliest possible event for
        every later step gives the smallest tk for that t1, so checking that
        greedy chain for every t1 decides existence.
        """
        first_step, *rest = node.steps
        for start in self.selected(first_step):
            t_prev = start.ts
            for step in rest:
                later = [e.ts for e in self.selected(step) if e.ts > t_prev]
                if not later:
                    break
                t_prev = min(later)
            else:
                if node.within is None or t_prev - start.ts <= us(node.within):
                    return True
        return False

    def absent(self, node: d.Absent) -> bool:
        """The first ``after`` at t, T >= t + D, and no watched event in [t, t + D]."""
        afters = self.selected(node.after)
        if not afters:
            return False
        t = min(e.ts for e in afters)
        end = t + us(node.within)
        if self.t < end:
            return False
        return not any(t <= e.ts <= end for e in self.selected(node.match))

    def activation_time(self, name: str) -> int | None:
        """L: the first track-time evaluation at which the activation signal was true.

        The subject's events are replayed in arrival order; after each one the
        signal is evaluated over the events so far at T = their newest timestamp.
        If it never was, but is true now, it latches now.
        """
        for n in range(1, len(self.events) + 1):
            so_far = self.events[:n]
            t_n = max(e.ts for e in so_far)
            replay = Evaluator(
                self.model, so_far, self.kind, t_n, self.user_traits, self.account_traits
            )
            if replay.signal(name):
                return t_n
        return self.t if self.signal(name) else None

    def tev(self, node: d.Tev) -> float:
        """100 x the weighted mean of Time, Engagement and Virality."""
        latched = self.activation_time(node.activation)
        fast, slow = us(node.fast), us(node.slow)
        if latched is None:
            time_part = 0.0
        else:
            elapsed = latched - self.first
            if elapsed <= fast:
                time_part = 1.0
            elif elapsed >= slow:
                time_part = 0.0
            else:
                time_part = (slow - elapsed) / (slow - fast)

        def ratio(expr: d.Expr, target: float) -> float:
            v = self.value(expr)
            if not is_number(v):
                return 0.0
            return min(max(float(v) / target, 0.0), 1.0)

        parts = (
            time_part,
            ratio(node.engagement, node.engagement_target),
            ratio(node.virality, node.virality_target),
        )
        weights = node.weights
        return 100 * sum(w * p for w, p in zip(weights, parts, strict=True)) / sum(weights)
