"""The lab's replay runs the engine a Client runs: the same values at every snapshot.

The replay folds events into each model's plan directly (a Client around it would
cost three times the time and more memory than the lab can spend at a million
events, docs/performance.md). These tests hold it to a real Client on a
MemoryStore with a FrozenClock, fed the very same events in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

import pqlkit
from pqlkit import (
    Model,
    active_days,
    active_users,
    count,
    days,
    did,
    distinct,
    fit,
    hours,
    idle,
    last,
    points,
    score,
    sequence,
    signal,
    tev,
    time_to,
    trait,
)
from pqlkit._convert import from_us, micros
from pqlkit._engine import Evaluation
from pqlkit._lab.outcome import parse_outcome
from pqlkit._lab.replay import Replay, Scan, Track, in_time_order
from pqlkit._lab.source import open_history
from pqlkit.testing import FrozenClock

MODEL = Model(
    "data-tooling",
    signals={
        "activated": did("warehouse_connected") & did("dashboard_built"),
        "invited": count("teammate_invited") >= 1,
        "api_key": did("api_key_generated"),
        "pricing_visit": did("page_viewed", where={"path": "/pricing"}, within=days(30)),
        "near_row_limit": last("usage_reported", "rows") >= trait("row_limit") * 0.8,
        "habit": active_days(within=days(7)) >= 3,
        "trial_projects": count("project_created", since_first_seen=days(14)) >= 2,
        "fast_start": sequence("contacts_imported", "email_sent", within=hours(48)),
        "fast_value": time_to("dashboard_built") <= days(2),
        "dormant": idle() >= days(14),
        "big_company": trait("employees", of="account") >= 200,
    },
    scores={
        "behavior": points(
            activated=30, invited=20, api_key=15, pricing_visit=10, near_row_limit=10, dormant=-25
        ),
        "tev": tev(
            activation="activated",
            fast=days(2),
            slow=days(14),
            engagement=active_days(within=days(14)),
            engagement_target=7,
            virality=distinct("teammate_invited", "email"),
            virality_target=3,
        ),
        "fit": fit((trait("employees", of="account") >= 200, 20)),
    },
    pql=(score("behavior") + score("fit") >= 30) & ~signal("dormant"),
    pqa=active_users(within=days(14)) >= 2,
)

STEP = timedelta(days=7)


def _replay(
    sim: pqlkit.Simulation, seen: dict[tuple[int, str, str], Evaluation]
) -> tuple[Replay, list[int]]:
    history = open_history(sim)
    scan = Scan(history, parse_outcome("subscription_started"))
    assert scan.first is not None
    assert scan.last is not None
    snapshots = list(range(scan.first + micros(STEP), scan.last, micros(STEP)))
    replay = Replay(
        [Track("m", MODEL, history, scan)],
        history,
        scan,
        scan.event_conversions(),
        snapshots=snapshots,
        end=scan.last,
        horizon=0,
        lookback=micros(timedelta(days=90)),
        step=micros(STEP),
        observe=lambda t, kind, sid, _, ev, __: seen.__setitem__((t, kind, sid), ev),
    )
    replay.run()
    return replay, snapshots


def _ordered(sim: pqlkit.Simulation) -> Iterator[tuple[int, dict[str, object]]]:
    """The events in the order the replay folds them (duplicates left out)."""
    history = open_history(sim)
    scan = Scan(history, parse_outcome("subscription_started"))
    for when, (ts, user, name, props, account, mid) in in_time_order(
        history, scan.skip, micros(STEP)
    ):
        yield (
            when,
            {
                "user_id": user,
                "event": name,
                "properties": dict(props),
                "account_id": account,
                "timestamp": from_us(ts),
                "message_id": mid,
            },
        )


@pytest.fixture(name="sim", scope="module")
def _sim() -> pqlkit.Simulation:
    return pqlkit.simulate(seed=5, users=250, accounts=25, days=70, late=0.05, duplicates=0.02)


def test_snapshot_values_equal_a_clients(sim: pqlkit.Simulation) -> None:
    """At every snapshot, each evaluated subject's signals, scores and rule are what a
    Client fed the same events reports for it at that time."""
    seen: dict[tuple[int, str, str], Evaluation] = {}
    replay, snapshots = _replay(sim, seen)
    assert len(seen) > 1_000  # users and accounts, over the snapshots
    assert any(ev.rule for ev in seen.values())
    assert any(not ev.rule for ev in seen.values())
    clock = FrozenClock(from_us(snapshots[0]) - timedelta(days=400))
    checked = 0
    with pqlkit.Client(MODEL, store=pqlkit.MemoryStore(), clock=clock) as client:
        for account, traits in sim.account_traits.items():
            client.group(account, traits)
        for user, traits in sim.user_traits.items():
            client.identify(user, traits)
        k = 0
        batch: list[dict[str, object]] = []

        def check(t: int) -> int:
            client.track_many(batch)
            batch.clear()
            clock.set(from_us(t))
            n = 0
            for (at, kind, sid), ev in seen.items():
                if at != t:
                    continue
                of = "user" if kind == "user" else "account"
                assert client.signals(sid, of=of) == ev.signals, (sid, from_us(t))
                assert client.scores(sid, of=of) == pytest.approx(ev.scores), (sid, from_us(t))
                rule = client.explain(sid, of=of)[-1]
                assert rule.endswith("-> true") == ev.rule, (sid, from_us(t), rule)
                n += 1
            return n

        for when, event in _ordered(sim):
            while k < len(snapshots) and when > snapshots[k]:
                checked += check(snapshots[k])
                k += 1
            clock.set(max(clock.now(), event["timestamp"]))  # type: ignore[type-var]
            batch.append(event)
        while k < len(snapshots):
            checked += check(snapshots[k])
            k += 1
        client.track_many(batch)
        assert checked == len(seen)
        # and the first time each subject qualified is when the Client fired it first
        for kind, rule in (("user", "pql"), ("account", "pqa")):
            fired = 0
            for subject in replay.all_subjects(kind):  # type: ignore[arg-type]
                at = client.qualified_at(subject.id, kind=rule)  # type: ignore[arg-type]
                q = subject.qualified[0]
                assert (from_us(q) if q is not None else None) == at, subject.id
                fired += at is not None
            assert fired > 10


def test_late_events_are_folded_at_their_time() -> None:
    """An event that arrives after later ones is folded before the snapshots after its
    timestamp, so no snapshot misses it (one a step late or more counts from arrival)."""
    t0 = pqlkit.simulate(seed=0, users=1, accounts=0, days=1).start
    events = [
        {"user_id": "u", "event": "a", "timestamp": t0},
        {"user_id": "u", "event": "c", "timestamp": t0 + timedelta(days=3)},
        {"user_id": "u", "event": "b", "timestamp": t0 + timedelta(days=1)},  # 2 days late
        {"user_id": "u", "event": "d", "timestamp": t0 + timedelta(days=20)},
        {"user_id": "u", "event": "e", "timestamp": t0 + timedelta(days=2)},  # 18 days late
    ]
    history = open_history(events)
    scan = Scan(history, parse_outcome("x"))
    order = [(from_us(when), e[2]) for when, e in in_time_order(history, scan.skip, micros(STEP))]
    assert [name for _, name in order] == ["a", "b", "c", "e", "d"]
    # "e" is placed at the newest time then, minus a step: where a live client met it
    assert order[3][0] == t0 + timedelta(days=20) - STEP
