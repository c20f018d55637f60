"""The incremental engine equals the naive oracle (tests/oracle.py) on random models, histories."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings

import oracle
from oracle import Alias, Group, Identify, Kind, Op, Track
from pqlkit import Client, MemoryStore, Model, SQLiteStore, Store, TrackResult
from pqlkit._engine import Context, Evaluation, Plan, SubjectState
from pqlkit.testing import FrozenClock
from strategies import DAY0, Case, apply, cases, describe_history

# CI searches deeper; PQLKIT_TEST_ORACLE_QUICK keeps the local counts (the Makefile sets it for
# the not-slow runs on the other promised Pythons: the main interpreter's runs search deeper).
DEEP = bool(os.environ.get("CI")) and not os.environ.get("PQLKIT_TEST_ORACLE_QUICK")
EXAMPLES = 500 if DEEP else 60

oracle_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Subject = tuple[Kind, str]


def newest(history: list[Op], subject: Subject) -> int:
    """The subject's newest event timestamp: its track-time evaluation time."""
    kind, subject_id = subject
    return max(e.ts for e in oracle.subject_events(history, subject_id, kind))


def context(history: list[Op], subject: Subject) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (user traits, account traits) an evaluation of the subject sees."""
    kind, subject_id = subject
    if kind == "account":
        return {}, oracle.account_traits(history, subject_id)
    account = oracle.account_of(history, subject_id)
    return oracle.user_traits(history, subject_id), oracle.account_traits(history, account)


def want(model: Model, history: list[Op], subject: Subject, t: int | None) -> dict[str, Any]:
    """What the oracle says about the subject at ``t`` (default: its newest event)."""
    kind, subject_id = subject
    users, accounts = context(history, subject)
    if t is None:
        t = newest(history, subject)
    return oracle.expected(model, history, subject_id, kind, t, users, accounts)


def assert_agrees(
    model: Model,
    history: list[Op],
    subject: Subject,
    signals: dict[str, bool],
    scores: dict[str, float],
    rule: bool | None = None,
    *,
    t: int | None = None,
    scores_only: bool = False,
) -> None:
    """The engine's signals and scores (and rule, when given) equal the oracle's at ``t``."""
    expect = want(model, history, subject, t)
    if scores_only:
        signals = expect["signals"]
    got_scores_ok = scores.keys() == expect["scores"].keys() and all(
        math.isclose(scores[k], v, rel_tol=1e-9, abs_tol=1e-9) for k, v in expect["scores"].items()
    )
    ok = signals == expect["signals"] and got_scores_ok
    if rule is not None:
        ok = ok and rule == expect["rule"]
    if not ok:
        raise AssertionError(
            f"{subject[0]} {subject[1]!r} after {len(history)} calls, at t={t}\n"
            f"model:\n{model.describe()}\n"
            f"history:\n{describe_history(history)}\n"
            f"engine signals: {signals}\noracle signals: {expect['signals']}\n"
            f"engine scores:  {scores}\noracle scores:  {expect['scores']}\n"
            f"engine rule: {rule}  oracle rule: {expect['rule']}"
        )


class PlanDriver:
    """Feeds a history to a :class:`Plan` as a client would.

    Each new event is applied to its user subject (the alias-resolved id) and to
    its account subject, which are then evaluated at their newest timestamp with
    ``latch=True``. An alias changes whose events are whose, so every subject is
    rebuilt by replaying the accepted events in arrival order.
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        self.plan = Plan(model)
        self.history: list[Op] = []
        self.states: dict[Subject, SubjectState] = {}
        self.seen_ids: set[str] = set()
        self.contexts: dict[Subject, Context] = {}

    def call(self, op: Op) -> dict[Subject, Evaluation]:
        """Record one call; return the evaluations of the subjects it concerns."""
        self.history.append(op)
        if isinstance(op, Track):
            if op.message_id in self.seen_ids:
                return {}
            if op.message_id is not None:
                self.seen_ids.add(op.message_id)
            return self.track(op)
        if isinstance(op, Alias):
            self.rebuild()
            return {s: self.evaluate(s) for s in self.states}
        if isinstance(op, Identify):
            concerned = {("user", op.user_id)}
        else:
            assert isinstance(op, Group)
            concerned = {("account", op.account_id)} | {
                s
                for s in self.states
                if s[0] == "user" and oracle.account_of(self.history, s[1]) == op.account_id
            }
        return {s: self.evaluate(s) for s in concerned if s in self.states}

    def track(self, op: Track) -> dict[Subject, Evaluation]:
        user = oracle.resolve(self.history, op.user_id)
        touched: list[Subject] = [("user", user)]
        if op.account_id is not None:
            touched.append(("account", op.account_id))
        for subject in touched:
            state = self.states.setdefault(subject, self.plan.new_state())
            apply(self.plan, state, op.ts, op.name, op.props, user)
        return {s: self.evaluate(s) for s in touched}

    def rebuild(self) -> None:
        self.states = {}
        newest_so_far: dict[Subject, int] = {}
        seen_ids: set[str] = set()
        for op in self.history:
            if not isinstance(op, Track) or op.message_id in seen_ids:
                continue
            if op.message_id is not None:
                seen_ids.add(op.message_id)
            user = oracle.resolve(self.history, op.user_id)
            touched: list[Subject] = [("user", user)]
            if op.account_id is not None:
                touched.append(("account", op.account_id))
            for subject in touched:
                state = self.states.setdefault(subject, self.plan.new_state())
                apply(self.plan, state, op.ts, op.name, op.props, user)
                newest_so_far[subject] = max(newest_so_far.get(subject, op.ts), op.ts)
                self.evaluate(subject, newest_so_far[subject])

    def evaluate(self, subject: Subject, t: int | None = None) -> Evaluation:
        """Evaluate at ``t`` (default: the newest event), latching TEV activations."""
        if t is None:
            t = newest(self.history, subject)
        return self.plan.evaluate(
            self.states[subject], t, subject[0], self.context(subject), latch=True
        )

    def context(self, subject: Subject) -> Context:
        """The subject's traits: the same Context object while they stay equal, as
        the Client hands the engine (values kept between evaluations are then used)."""
        users, accounts = context(self.history, subject)
        ctx = self.contexts.get(subject)
        if ctx is None or ctx.user_traits != users or ctx.account_traits != accounts:
            ctx = self.contexts[subject] = Context(users, accounts)
        return ctx


@oracle_settings
@given(case=cases())
def test_plan_equals_oracle(case: Case) -> None:
    """After every call, and later, every subject's signals, scores and rule equal the oracle's."""
    model, history = case.model, case.history
    driver = PlanDriver(model)
    for op in history:
        for subject, ev in driver.call(op).items():
            assert_agrees(model, driver.history, subject, ev.signals, ev.scores, ev.rule)
    for subject in sorted(oracle.subjects(history)):
        for offset in case.later:
            t = newest(history, subject) + offset
            ev = driver.plan.evaluate(
                driver.states[subject], t, subject[0], driver.context(subject)
            )
            assert_agrees(model, history, subject, ev.signals, ev.scores, ev.rule, t=t)


# -- through the Client ---------------------------------------------------------------

CLIENT_EXAMPLES = 200 if DEEP else 25

STORES: dict[str, Callable[[Path], Store]] = {
    "memory": lambda tmp: MemoryStore(),
    "sqlite": lambda tmp: SQLiteStore(tmp / "oracle.db"),
}


def at(ts: int) -> datetime:
    """The aware UTC datetime of a µs timestamp."""
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=ts)


def concerned(history: list[Op], op: Op) -> set[Subject]:
    """The subjects whose values the call may have changed (and that have events)."""
    have = oracle.subjects(history)
    if isinstance(op, Track):
        out: set[Subject] = {("user", oracle.resolve(history, op.user_id))}
        if op.account_id is not None:
            out.add(("account", op.account_id))
    elif isinstance(op, Alias):
        out = set(have)
    elif isinstance(op, Identify):
        out = {("user", op.user_id)}
    else:
        assert isinstance(op, Group)
        users = {s for s in have if s[0] == "user"}
        out = {("account", op.account_id)}
        out |= {s for s in users if oracle.account_of(history, s[1]) == op.account_id}
    return out & have


def send(client: Client, op: Op) -> TrackResult | None:
    """Make the call on the client."""
    if isinstance(op, Track):
        return client.track(
            op.user_id,
            op.name,
            dict(op.props),
            account_id=op.account_id,
            timestamp=at(op.ts),
            message_id=op.message_id,
        )
    if isinstance(op, Alias):
        client.alias(op.prev, op.user)
    elif isinstance(op, Identify):
        client.identify(op.user_id, dict(op.traits), account_id=op.account_id)
    else:
        client.group(op.account_id, dict(op.traits))
    return None


@pytest.mark.parametrize("store_name", list(STORES))
@settings(oracle_settings, max_examples=CLIENT_EXAMPLES)
@given(case=cases())
def test_client_equals_oracle(store_name: str, case: Case) -> None:
    """Through the Client (aliases, duplicates, traits), scores and signals equal the oracle's."""
    model, history = case.model, case.history
    clock = FrozenClock(at(DAY0) - timedelta(days=400))  # before every event: T = the newest one
    with tempfile.TemporaryDirectory() as tmp:
        store = STORES[store_name](Path(tmp))
        with Client(model, store=store, clock=clock, dispatch="inline") as client:
            done: list[Op] = []
            for op in history:
                done.append(op)
                result = send(client, op)
                if result is not None:
                    assert isinstance(op, Track)
                    user: Subject = ("user", oracle.resolve(done, op.user_id))
                    if user in oracle.subjects(done):
                        assert_agrees(model, done, user, {}, result.scores, None, scores_only=True)
                for kind, subject_id in concerned(done, op):
                    signals = client.signals(subject_id, of=kind)
                    scores = client.scores(subject_id, of=kind)
                    assert_agrees(model, done, (kind, subject_id), signals, scores)
            for kind, subject_id in sorted(oracle.subjects(history)):
                for offset in case.later:
                    t = newest(history, (kind, subject_id)) + offset
                    clock.set(at(t))
                    signals = client.signals(subject_id, of=kind)
                    scores = client.scores(subject_id, of=kind)
                    assert_agrees(model, history, (kind, subject_id), signals, scores, t=t)
        store.close()


# Two stores on one file for SQLite (another process, as SQLite sees it); one shared
# MemoryStore for memory (another Client in the same process).
PAIRS: dict[str, Callable[[Path], tuple[Store, Store]]] = {
    "memory": lambda tmp: (lambda store: (store, store))(MemoryStore()),
    "sqlite": lambda tmp: (SQLiteStore(tmp / "oracle.db"), SQLiteStore(tmp / "oracle.db")),
}


@pytest.mark.parametrize("store_name", list(PAIRS))
@settings(oracle_settings, max_examples=CLIENT_EXAMPLES)
@given(case=cases())
def test_two_clients_taking_turns_equal_oracle(store_name: str, case: Case) -> None:
    """Two Clients on one store take turns in streaks and read each other's subjects.

    Each keeps its warm cache (stored state written back only every 2 events here,
    the other client's newer events caught up from the log; one client keeps just
    2 subjects warm, so it evicts): every read equals the oracle.
    """
    model, history = case.model, case.history
    clock = FrozenClock(at(DAY0) - timedelta(days=400))
    with tempfile.TemporaryDirectory() as tmp, mock.patch("pqlkit._core._TAIL_EVENTS", 2):
        first, second = PAIRS[store_name](Path(tmp))
        with (
            Client(model, store=first, clock=clock, dispatch="inline") as a,
            Client(model, store=second, clock=clock, dispatch="inline", warm_subjects=2) as b,
        ):
            clients = (a, b)
            done: list[Op] = []
            for i, op in enumerate(history):
                done.append(op)
                send(clients[(i // 3) % 2], op)
                reader = clients[i % 2]
                for kind, subject_id in concerned(done, op):
                    signals = reader.signals(subject_id, of=kind)
                    scores = reader.scores(subject_id, of=kind)
                    assert_agrees(model, done, (kind, subject_id), signals, scores)
        with Client(model, store=first, clock=clock, dispatch="inline") as cold:
            for kind, subject_id in sorted(oracle.subjects(history)):
                signals = cold.signals(subject_id, of=kind)
                scores = cold.scores(subject_id, of=kind)
                assert_agrees(model, history, (kind, subject_id), signals, scores)
        first.close()
        second.close()
