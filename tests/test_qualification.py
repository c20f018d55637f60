"""Scores, the pql/pqa rules, and firing qualifications (API.md sections 2-4)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

import pqlkit._rebuild
from conftest import T0
from pqlkit import (
    Client,
    Event,
    Model,
    Qualification,
    SQLiteStore,
    Store,
    ValidationError,
    absent,
    active_days,
    active_users,
    count,
    days,
    did,
    distinct,
    fit,
    idle,
    points,
    score,
    signal,
    tev,
    trait,
)
from pqlkit.exceptions import ModelError
from pqlkit.stores import Transaction
from pqlkit.stores._base import StateRecord
from pqlkit.testing import ClientFactory, FrozenClock

US = timedelta(microseconds=1)
FREE_MAIL = ("gmail.com", "yahoo.com")


def model(
    name: str = "data-tooling", *, on_retune: Literal["fire", "record"] = "fire", **weights: float
) -> Model:
    """The model of API.md section 2, trimmed; ``weights`` override the behavior points."""
    behavior = {"activated": 30, "invited": 20, "api_key": 15, "dormant": -25, **weights}
    return Model(
        name,
        signals={
            "activated": did("warehouse_connected") & did("dashboard_built"),
            "invited": count("teammate_invited") >= 1,
            "api_key": did("api_key_generated"),
            "dormant": idle() >= days(14),
            "big_company": trait("employees", of="account") >= 200,
        },
        scores={
            "behavior": points(**behavior),
            "tev": tev(
                activation="activated",
                fast=days(2),
                slow=days(14),
                engagement=active_days(within=days(14)),
                engagement_target=7,
                virality=distinct("teammate_invited", "email"),
                virality_target=3,
            ),
            "fit": fit(
                (trait("employees", of="account") >= 200, 20),
                (trait("email_domain").is_in(FREE_MAIL), -30),
            ),
        },
        pql=(score("behavior") + score("fit") >= 50) & ~signal("dormant"),
        pqa=active_users(within=days(14)) >= 3,
        on_retune=on_retune,
    )


MODEL = model()

# Logged in 3 times within 7 days; turns false by itself when a login leaves the window.
ACTIVE = Model(
    "activity",
    signals={
        "active": count("login", within=days(7)) >= 3,
        "downgraded": did("downgraded"),
    },
    scores={"behavior": points(active=60, downgraded=-40)},
    pql=score("behavior") >= 50,
)


def requalifying(cool_down: timedelta | None) -> Model:
    return Model(
        "requalify",
        signals={"active": count("login", within=days(7)) >= 3},
        pql=signal("active"),
        requalify_after=cool_down,
    )


@pytest.fixture(name="client")
def fixture_client(make_client: ClientFactory) -> Client:
    """An inline Client for MODEL on the shared store and clock."""
    return make_client(MODEL)


class Received:
    """Every delivery, by kind, in order."""

    def __init__(self, client: Client) -> None:
        self.pql: list[Qualification] = []
        self.pqa: list[Qualification] = []
        self.disqualified: list[Qualification] = []
        client.on("pql", self.pql.append)
        client.on("pqa", self.pqa.append)
        client.on("disqualified", self.disqualified.append)


def at(delta: timedelta) -> datetime:
    return T0 + delta


def activate(client: Client, user: str, *, account_id: str | None = None) -> None:
    """Track the two events that make ``activated`` true, at the clock's now."""
    client.track(user, "warehouse_connected", account_id=account_id)
    client.track(user, "dashboard_built", account_id=account_id)


def logins(client: Client, user: str, n: int = 3, *, start: datetime) -> list[Qualification]:
    """``n`` logins a minute apart from ``start``; the qualifications they fired."""
    fired: list[Qualification] = []
    for i in range(n):
        fired += client.track(user, "login", timestamp=start + timedelta(minutes=i)).qualified
    return fired


# -- score arithmetic ----------------------------------------------------------------


def test_points_sum_the_weights_of_true_signals(client: Client) -> None:
    """points(): each true signal adds its weight, false ones add nothing."""
    client.track("u1", "api_key_generated")
    assert client.scores("u1")["behavior"] == 15
    activate(client, "u1")
    assert client.scores("u1")["behavior"] == 45
    client.track("u1", "teammate_invited", {"email": "a@x.io"})
    assert client.scores("u1")["behavior"] == 65


def test_points_negative_weight_applies_when_its_signal_turns_true(
    client: Client, clock: FrozenClock
) -> None:
    """A true signal with a negative weight subtracts it (dormant: -25 after 14 idle days)."""
    activate(client, "u1")
    clock.advance(days(14) - US)
    assert client.scores("u1")["behavior"] == 30
    clock.advance(US)
    assert client.scores("u1")["behavior"] == 5


def test_fit_sums_the_points_of_true_conditions(client: Client) -> None:
    """fit(): +20 for a big account, -30 for a free-mail domain, 0 with neither."""
    client.group("big", {"employees": 600})
    client.group("small", {"employees": 20})
    client.identify("u-big", {"email_domain": "big.io"}, account_id="big")
    client.identify("u-free", {"email_domain": "gmail.com"}, account_id="small")
    client.identify("u-both", {"email_domain": "yahoo.com"}, account_id="big")
    for user in ("u-big", "u-free", "u-both", "u-none"):
        client.track(user, "login")
    assert client.scores("u-big")["fit"] == 20
    assert client.scores("u-free")["fit"] == -30
    assert client.scores("u-both")["fit"] == -10
    assert client.scores("u-none")["fit"] == 0


def test_tev_is_the_mean_of_time_engagement_and_virality(
    client: Client, clock: FrozenClock
) -> None:
    """tev = 100 x mean(time, engagement/target, virality/target), each part capped at 1."""
    client.track("u1", "warehouse_connected")
    clock.advance(days(1))
    client.track("u1", "dashboard_built")  # activated 1 day after first seen: time part 1
    client.track("u1", "teammate_invited", {"email": "a@x.io"})
    client.track("u1", "teammate_invited", {"email": "a@x.io"})  # same email: still 1 distinct
    expected = 100 * (1 + 2 / 7 + 1 / 3) / 3  # 2 active days of 7, 1 invitee of 3
    assert client.scores("u1")["tev"] == pytest.approx(expected)
    for n in range(4):
        client.track("u1", "teammate_invited", {"email": f"b{n}@x.io"})  # 5 distinct: capped
    assert client.scores("u1")["tev"] == pytest.approx(100 * (1 + 2 / 7 + 1) / 3)


def test_tev_time_part_is_linear_between_fast_and_slow(client: Client, clock: FrozenClock) -> None:
    """Activated 8 days after first seen (fast 2 d, slow 14 d): time part 0.5."""
    client.track("u1", "warehouse_connected")
    clock.advance(days(8))
    client.track("u1", "dashboard_built")
    assert client.scores("u1")["tev"] == pytest.approx(100 * (0.5 + 2 / 7 + 0) / 3)


def test_tev_time_part_is_zero_at_slow_and_when_never_activated(
    client: Client, clock: FrozenClock
) -> None:
    """Activation at ``slow`` or not at all scores no time part."""
    client.track("u-late", "warehouse_connected")
    client.track("u-never", "warehouse_connected")
    clock.advance(days(14))
    client.track("u-late", "dashboard_built")
    client.track("u-never", "login")
    # active days within 14 d at T0+14d: only today (T0 itself left the window)
    assert client.scores("u-late")["tev"] == pytest.approx(100 * (0 + 1 / 7 + 0) / 3)
    assert client.scores("u-never")["tev"] == pytest.approx(100 * (0 + 1 / 7 + 0) / 3)


# -- the rules ---------------------------------------------------------------------


def test_pql_fires_when_behavior_plus_fit_reaches_50(client: Client) -> None:
    """A user with activated (30) and a big account (20) qualifies; 30 alone does not."""
    rec = Received(client)
    client.group("acme", {"employees": 600})
    client.track("u-small", "login", account_id="tiny")
    activate(client, "u-small", account_id="tiny")
    assert rec.pql == []
    client.track("u1", "warehouse_connected", account_id="acme")
    result = client.track("u1", "dashboard_built", account_id="acme")
    assert [q.subject_id for q in result.qualified] == ["u1"]
    assert [q.subject_id for q in rec.pql] == ["u1"]
    assert rec.pql[0].scores["behavior"] + rec.pql[0].scores["fit"] == 50


def test_pql_rule_false_while_dormant(client: Client, clock: FrozenClock) -> None:
    """~signal("dormant"): a user idle for 14 days does not qualify on a late, backdated event."""
    rec = Received(client)
    client.track("u1", "warehouse_connected", timestamp=T0)
    client.track("u1", "teammate_invited", {"email": "a@x.io"}, timestamp=T0)
    clock.advance(days(20))
    client.track("u1", "dashboard_built", timestamp=T0 + days(1))  # late, yet not dormant at T
    assert [q.subject_id for q in rec.pql] == ["u1"]
    assert rec.pql[0].qualified_at == T0 + days(1)


def test_pqa_fires_when_three_users_are_active_within_14_days(
    client: Client, clock: FrozenClock
) -> None:
    """pqa: the third distinct active user of an account fires it, once."""
    rec = Received(client)
    client.track("u1", "login", account_id="acme")
    clock.advance(days(13))
    client.track("u2", "login", account_id="acme")
    client.track("u2", "login", account_id="acme")  # same user twice: still 2
    assert rec.pqa == []
    result = client.track("u3", "login", account_id="acme")
    assert [(q.kind, q.subject_id) for q in result.qualified] == [("pqa", "acme")]
    q = rec.pqa[0]
    assert (q.kind, q.subject_id, q.account_id) == ("pqa", "acme", "acme")
    client.track("u4", "login", account_id="acme")
    assert len(rec.pqa) == 1


def test_pqa_needs_the_users_inside_the_window(client: Client, clock: FrozenClock) -> None:
    """Users active more than 14 days apart do not make an account a PQA."""
    rec = Received(client)
    client.track("u1", "login", account_id="acme")
    client.track("u2", "login", account_id="acme")
    clock.advance(days(14))
    client.track("u3", "login", account_id="acme")
    assert rec.pqa == []


def test_no_pql_rule_means_never(make_client: ClientFactory) -> None:
    """A model without pql never fires a user, whatever its scores."""
    m = Model("no-rule", signals={"x": did("x")}, scores={"s": points(x=100)})
    client = make_client(m)
    rec = Received(client)
    assert client.track("u1", "x").qualified == []
    assert rec.pql == []
    assert client.scores("u1") == {"s": 100}


# -- callbacks ---------------------------------------------------------------------


def test_decorators_register_callbacks_and_return_the_function(client: Client) -> None:
    """@client.on_pql / on_pqa / on_disqualified register and return the decorated function."""
    calls: list[tuple[str, str]] = []

    @client.on_pql
    def on_pql(q: Qualification) -> None:
        calls.append(("pql", q.subject_id))

    @client.on_pqa
    def on_pqa(q: Qualification) -> None:
        calls.append(("pqa", q.subject_id))

    @client.on_disqualified
    def on_dq(q: Qualification) -> None:
        calls.append(("disqualified", q.subject_id))

    assert on_pql.__name__ == "on_pql"
    assert on_pqa.__name__ == "on_pqa"
    assert on_dq.__name__ == "on_dq"
    client.group("acme", {"employees": 600})
    for user in ("u2", "u3"):
        client.track(user, "login", account_id="acme")
    activate(client, "u1", account_id="acme")
    assert ("pqa", "acme") in calls
    assert ("pql", "u1") in calls
    client.group("acme", {"employees": 10})  # fit drops to 0: u1's rule turns false
    assert calls[-1] == ("disqualified", "u1")


def test_on_registers_a_callback_by_kind(client: Client) -> None:
    """client.on("pql", fn) is the non-decorator form; it returns fn."""
    got: list[Qualification] = []
    assert client.on("pql", got.append) == got.append
    client.track("u1", "teammate_invited", {"email": "a@x.io"})
    activate(client, "u1")
    assert [q.subject_id for q in got] == ["u1"]


def test_every_callback_of_a_kind_is_called(client: Client) -> None:
    """Several callbacks for one kind each get the delivery."""
    first: list[str] = []
    second: list[str] = []
    client.on("pql", lambda q: first.append(q.id), name="first")
    client.on("pql", lambda q: second.append(q.id), name="second")
    client.track("u1", "teammate_invited", {"email": "a@x.io"})
    activate(client, "u1")
    assert first == second
    assert len(first) == 1


# -- the payload -------------------------------------------------------------------


def test_qualification_payload(client: Client, clock: FrozenClock) -> None:
    """Qualification: kind, subject, account, model, fingerprint, T, scores, signals, context."""
    rec = Received(client)
    client.group("acme", {"employees": 600, "industry": "data"})
    client.identify("u1", {"email": "jane@acme.io", "email_domain": "acme.io"}, account_id="acme")
    for n in range(10):
        client.track("u1", "page_viewed", {"n": n}, account_id="acme")
        clock.advance(timedelta(minutes=1))
    client.track("u1", "warehouse_connected", account_id="acme")
    clock.advance(timedelta(minutes=1))
    result = client.track("u1", "dashboard_built", {"id": 7}, account_id="acme")
    assert len(rec.pql) == 1
    q = rec.pql[0]
    assert result.qualified == [q]
    assert q.kind == "pql"
    assert q.subject_id == "u1"
    assert q.account_id == "acme"
    assert q.model == "data-tooling"
    assert q.fingerprint == MODEL.fingerprint
    assert q.qualified_at == T0 + timedelta(minutes=11)
    assert q.disqualified_at is None
    assert q.scores == client.scores("u1")
    assert q.scores["behavior"] == 30
    assert q.scores["fit"] == 20
    assert q.signals == ("activated", "big_company")
    assert q.explanation == tuple(client.explain("u1"))
    assert any(line.startswith("activated:") and line.endswith("true") for line in q.explanation)
    assert any(line.startswith("behavior = 30") for line in q.explanation)
    ctx = q.context
    assert ctx["user_traits"] == {"email": "jane@acme.io", "email_domain": "acme.io"}
    assert ctx["account_traits"] == {"employees": 600, "industry": "data"}
    assert ctx["first_seen"] == T0.isoformat()
    events = ctx["events"]
    assert len(events) == 10  # the last 10 of 12, newest first
    assert [e["event"] for e in events[:2]] == ["dashboard_built", "warehouse_connected"]
    assert [e["properties"] for e in events[2:]] == [{"n": n} for n in range(9, 1, -1)]
    assert events[0] == {
        "event": "dashboard_built",
        "user_id": "u1",
        "timestamp": (T0 + timedelta(minutes=11)).isoformat(),
        "properties": {"id": 7},
    }


def test_account_id_is_none_for_a_user_without_account(client: Client) -> None:
    """A user with no account gets account_id None and empty account traits."""
    rec = Received(client)
    client.track("u1", "teammate_invited", {"email": "a@x.io"})
    activate(client, "u1")
    q = rec.pql[0]
    assert q.account_id is None
    assert q.context["account_traits"] == {}


def test_account_id_from_identify_when_events_carry_none(client: Client) -> None:
    """The account given to identify() is the user's account when its events have none."""
    rec = Received(client)
    client.group("acme", {"employees": 600})
    client.identify("u1", {"role": "data"}, account_id="acme")
    activate(client, "u1")
    assert rec.pql[0].account_id == "acme"
    assert rec.pql[0].context["user_traits"] == {"role": "data"}


def test_qualified_at_is_the_evaluation_time_not_the_clock(
    client: Client, clock: FrozenClock
) -> None:
    """qualified_at is the subject's newest event time, even if the clock is later."""
    rec = Received(client)
    clock.advance(days(5))
    client.track("u1", "teammate_invited", {"email": "a@x.io"}, timestamp=T0 + days(2))
    client.track("u1", "warehouse_connected", timestamp=T0)
    client.track("u1", "dashboard_built", timestamp=T0 + days(1))  # late: T is the newest, 2d
    assert rec.pql[0].qualified_at == T0 + days(2)


def test_pqa_payload_context_holds_the_account_events(client: Client) -> None:
    """A PQA's context: the account's traits, its users' latest events for that account."""
    rec = Received(client)
    client.group("acme", {"employees": 600})
    client.track("u1", "login", account_id="other")
    for user in ("u1", "u2", "u3"):
        client.track(user, "login", {"who": user}, account_id="acme")
    q = rec.pqa[0]
    assert q.context["account_traits"] == {"employees": 600}
    assert q.context["user_traits"] == {}
    assert [e["user_id"] for e in q.context["events"]] == ["u3", "u2", "u1"]
    assert {e["event"] for e in q.context["events"]} == {"login"}


def test_id_is_stable_across_redeliveries(client: Client, clock: FrozenClock) -> None:
    """A redelivered qualification carries the same id (and payload) as the first attempt."""
    seen: list[Qualification] = []

    def flaky(q: Qualification) -> None:
        seen.append(q)
        if len(seen) == 1:
            raise RuntimeError("receiver down")

    client.on("pql", flaky)
    client.track("u1", "teammate_invited", {"email": "a@x.io"})
    client.track("u1", "warehouse_connected")
    fired = client.track("u1", "dashboard_built").qualified
    assert [q.id for q in client.pending()] == [fired[0].id]
    clock.advance(timedelta(seconds=1))
    client.flush()
    assert len(seen) == 2
    assert seen[0].id == seen[1].id == fired[0].id
    assert seen[0] == seen[1] == fired[0]
    assert client.pending() == []


def test_ids_differ_by_subject_kind_and_model(make_client: ClientFactory, store: Store) -> None:
    """Two subjects, or two model names, never share a qualification id."""
    a = make_client(model("model-a"))
    b = make_client(model("model-b"))
    ids = set()
    for client in (a, b):
        for user in ("u1", "u2"):
            client.track(user, "teammate_invited", {"email": "x@y.z"})
            ids |= {q.id for q in client.track(user, "warehouse_connected").qualified}
            ids |= {q.id for q in client.track(user, "dashboard_built").qualified}
    assert len(ids) == 4


# -- fires once ------------------------------------------------------------------


def test_fires_once_not_on_later_events(client: Client, clock: FrozenClock) -> None:
    """Later events of a qualified user fire nothing more."""
    rec = Received(client)
    client.track("u1", "teammate_invited", {"email": "a@x.io"})
    activate(client, "u1")
    for n in range(5):
        clock.advance(days(1))
        result = client.track("u1", "teammate_invited", {"email": f"{n}@x.io"})
        assert result.qualified == []
    client.sweep()
    assert len(rec.pql) == 1


def test_fires_once_after_a_restart(tmp_path: Path, clock: FrozenClock) -> None:
    """A new Client on the same SQLite file does not fire a subject that already fired."""
    path = tmp_path / "pql.db"
    with Client(MODEL, store=SQLiteStore(path), clock=clock, dispatch="inline") as first:
        rec = Received(first)
        first.track("u1", "teammate_invited", {"email": "a@x.io"})
        activate(first, "u1")
        assert len(rec.pql) == 1
    first.store.close()
    clock.advance(days(1))
    store = SQLiteStore(path)
    with Client(MODEL, store=store, clock=clock, dispatch="inline") as second:
        rec2 = Received(second)
        assert second.track("u1", "api_key_generated").qualified == []
        assert second.track("u1", "dashboard_built").qualified == []
        second.flush()
        assert rec2.pql == []
    store.close()


def test_fires_once_after_a_restart_from_a_url(tmp_path: Path, clock: FrozenClock) -> None:
    """Clients opening ``sqlite:///file`` themselves share the once-only guarantee."""
    url = f"sqlite:///{tmp_path / 'pql.db'}"
    fired = []
    for _ in range(3):
        with Client(MODEL, store=url, clock=clock, dispatch="inline") as client:
            client.track("u1", "teammate_invited", {"email": "a@x.io"})
            fired += client.track("u1", "warehouse_connected").qualified
            fired += client.track("u1", "dashboard_built").qualified
    assert len(fired) == 1


def test_retuned_model_rebuilds_and_fires_newly_qualified_only(
    make_client: ClientFactory, clock: FrozenClock
) -> None:
    """A changed weight: construction rebuilds; newly qualified fire then, nobody twice."""
    v1 = make_client(model(api_key=15))
    rec1 = Received(v1)
    v1.track("u1", "teammate_invited", {"email": "a@x.io"})
    activate(v1, "u1")  # 30 + 20: qualifies under v1
    v1.track("u2", "api_key_generated")
    activate(v1, "u2")  # 30 + 15: does not
    assert [q.subject_id for q in rec1.pql] == ["u1"]
    v1.close()

    clock.advance(days(1))
    tuned = model(api_key=25)  # u2 now has 55
    assert tuned.fingerprint != MODEL.fingerprint
    v2 = make_client(tuned)
    pending = v2.pending()
    assert [(q.subject_id, q.fingerprint) for q in pending] == [("u2", tuned.fingerprint)]
    assert pending[0].qualified_at == T0  # the evaluation time: u2's newest event
    got: list[Qualification] = []
    v2.on("pql", got.append)
    assert got == []  # neither construction nor registration dispatches
    v2.flush()
    assert [q.subject_id for q in got] == ["u2"]
    assert v2.track("u1", "login").qualified == []
    assert v2.track("u2", "login").qualified == []
    assert v2.rebuild() == 8  # every stored event replayed; nothing fires again
    v2.flush()
    assert [q.subject_id for q in got] == ["u2"]


def test_rolling_deploy_old_and_new_clients_share_one_store(make_client: ClientFactory) -> None:
    """Two model versions on one store rebuild a subject the other wrote; counts stay exact."""
    old = make_client(model(api_key=15))
    old.track("u1", "warehouse_connected")
    new = make_client(model(api_key=25))  # rebuilds every subject with its own layout
    old.track("u1", "dashboard_built")  # old reads a state the new version wrote
    assert old.scores("u1")["behavior"] == 30
    assert old.signals("u1")["activated"] is True
    new.track("u1", "api_key_generated")  # and the other way round
    assert new.scores("u1")["behavior"] == 30 + 25
    assert old.scores("u1")["behavior"] == 30 + 15


def test_qualification_records_the_fingerprint_that_fired_it(
    make_client: ClientFactory, store: Store
) -> None:
    """After a re-tune, the old qualification keeps the old fingerprint."""
    v1 = make_client(model(api_key=15))
    v1.track("u1", "teammate_invited", {"email": "a@x.io"})
    activate(v1, "u1")
    v1.close()
    v2 = make_client(model(api_key=25))
    v2.track("u2", "api_key_generated")
    activate(v2, "u2")
    with store.transaction() as tx:
        fired = {q.subject_id: q.fingerprint for q in tx.qualifications("data-tooling")}
    assert fired == {"u1": v1.model.fingerprint, "u2": v2.model.fingerprint}


def test_same_model_on_a_new_client_does_not_rebuild(make_client: ClientFactory) -> None:
    """An unchanged fingerprint leaves the stored state alone: no replay, nothing fires."""
    accepted = {"plans": {"pro"}}
    m = Model(
        "where-model",
        signals={"upgraded": did("plan_chosen", where=lambda p: p["plan"] in accepted["plans"])},
        pql=signal("upgraded"),
    )
    first = make_client(m)
    first.track("u1", "plan_chosen", {"plan": "team"})
    first.close()
    accepted["plans"] = {"pro", "team"}  # invisible to the fingerprint
    second = make_client(m)
    rec = Received(second)
    assert second.pending() == []
    second.flush()
    assert rec.pql == []
    assert second.signals("u1") == {"upgraded": False}


def test_explicit_rebuild_picks_up_a_changed_where_callable(
    make_client: ClientFactory,
) -> None:
    """client.rebuild() replays the log: subjects that now qualify fire, once."""
    accepted = {"plans": {"pro"}}
    m = Model(
        "where-model",
        signals={
            "upgraded": did("plan_chosen", where=lambda p: p.get("plan") in accepted["plans"])
        },
        pql=signal("upgraded"),
    )
    client = make_client(m)
    rec = Received(client)
    client.track("u1", "plan_chosen", {"plan": "team"})
    client.track("u2", "plan_chosen", {"plan": "pro"})
    assert [q.subject_id for q in rec.pql] == ["u2"]
    accepted["plans"] = {"pro", "team"}
    assert client.rebuild() == 2
    assert [q.subject_id for q in rec.pql] == ["u2", "u1"]
    client.rebuild()
    assert [q.subject_id for q in rec.pql] == ["u2", "u1"]


# -- the re-tune policy (Model(on_retune=...)) ------------------------------------


def test_on_retune_is_not_part_of_the_fingerprint() -> None:
    """on_retune says what a rebuild delivers, not how subjects score."""
    assert model(on_retune="record").fingerprint == MODEL.fingerprint


def test_on_retune_must_be_fire_or_record() -> None:
    """Any other value is a ModelError naming the field."""
    with pytest.raises(ModelError) as info:
        Model("m", pql=did("x"), on_retune="quietly")  # type: ignore[arg-type]
    assert info.value.name == "on_retune"


@pytest.mark.parametrize("policy", ["fire", "record"])
def test_retune_that_qualifies_fires_or_records(
    make_client: ClientFactory, store: Store, clock: FrozenClock, policy: str
) -> None:
    """A lowered bar: "fire" delivers the newly qualified; "record" only records them."""
    v1 = make_client(model(api_key=15))
    rec1 = Received(v1)
    v1.track("u1", "teammate_invited", {"email": "a@x.io"})
    activate(v1, "u1")  # 30 + 20: qualifies under v1
    v1.track("u2", "api_key_generated")
    activate(v1, "u2")  # 30 + 15: does not
    assert [q.subject_id for q in rec1.pql] == ["u1"]
    v1.close()

    clock.advance(days(1))
    v2 = make_client(model(api_key=25, on_retune=policy))  # u2 has 55 now
    rec = Received(v2)
    newly = ["u2"] if policy == "fire" else []
    assert [q.subject_id for q in v2.pending()] == newly
    v2.flush()
    assert [q.subject_id for q in rec.pql] == newly
    assert v2.qualified_at("u2") == T0  # the time of u2's newest event, either way
    assert v2.stats().pqls == 2
    with store.transaction() as tx:
        record = tx.latest_qualification("data-tooling", "pql", "u2")
    assert record is not None
    assert record.fingerprint == v2.model.fingerprint
    assert v2.track("u2", "login").qualified == []  # recorded: it never fires later
    v2.flush()
    assert [q.subject_id for q in rec.pql] == newly
    assert v2.pending() == []


@pytest.mark.parametrize("policy", ["fire", "record"])
def test_retune_that_disqualifies_delivers_or_records(
    make_client: ClientFactory, store: Store, clock: FrozenClock, policy: str
) -> None:
    """A raised bar: "fire" delivers the disqualification; "record" only records it."""
    v1 = make_client(model(api_key=15))
    rec1 = Received(v1)
    v1.track("u1", "teammate_invited", {"email": "a@x.io"})
    activate(v1, "u1")  # 30 + 20: qualifies
    assert [q.subject_id for q in rec1.pql] == ["u1"]
    v1.close()

    clock.advance(days(1))
    v2 = make_client(model(invited=10, on_retune=policy))  # u1 has 40 now
    expected = [("u1", T0)] if policy == "fire" else []
    assert [(q.subject_id, q.disqualified_at) for q in v2.pending()] == expected
    with store.transaction() as tx:
        latest = tx.latest_qualification("data-tooling", "pql", "u1")
    assert latest is not None
    assert latest.disqualified_at == T0
    rec = Received(v2)
    v2.track("u1", "login")
    v2.flush()
    assert len(rec.disqualified) == len(expected)
    assert rec.pql == []
    assert v2.pending() == []


def test_explicit_rebuild_can_record_instead_of_firing(make_client: ClientFactory) -> None:
    """client.rebuild(on_retune="record") overrides the model's policy for that rebuild."""
    accepted = {"plans": {"pro"}}
    m = Model(
        "where-model",
        signals={
            "upgraded": did("plan_chosen", where=lambda p: p.get("plan") in accepted["plans"])
        },
        pql=signal("upgraded"),
    )
    client = make_client(m)
    rec = Received(client)
    client.track("u1", "plan_chosen", {"plan": "team"})
    client.track("u2", "plan_chosen", {"plan": "pro"})
    accepted["plans"] = {"pro", "team"}
    assert client.rebuild(on_retune="record") == 2
    client.flush()
    assert [q.subject_id for q in rec.pql] == ["u2"]
    assert client.pending() == []
    assert client.qualified_at("u1") == T0
    with pytest.raises(ValidationError) as info:
        client.rebuild(on_retune="later")  # type: ignore[arg-type]
    assert info.value.field == "on_retune"


def test_an_interrupted_rebuild_resumes_where_it_stopped(
    make_client: ClientFactory, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild that fails half-way keeps what it did; the next client does the rest, once."""
    monkeypatch.setattr(pqlkit._rebuild, "_REBUILD_SLICE", 0.0)  # one subject per transaction
    monkeypatch.setattr(pqlkit._rebuild, "_REBUILD_PAUSE", 0.0)
    seen: list[int] = []
    failing = {"n": 5}

    def upgraded(properties: dict[str, Any]) -> bool:
        seen.append(properties["n"])
        if properties["n"] == failing["n"]:
            raise RuntimeError("a bug in a where= callable")
        return True

    old = Model("resume", signals={"upgraded": did("upgrade", where={"n": -1})})
    new = Model(
        "resume", signals={"upgraded": did("upgrade", where=upgraded)}, pql=signal("upgraded")
    )
    v1 = make_client(old)
    for n in range(10):
        v1.track(f"u{n}", "upgrade", {"n": n})
    v1.close()
    with pytest.raises(RuntimeError, match="a bug"):
        make_client(new)  # rebuilds u0..u4, fails on u5
    assert sorted(set(seen)) == [0, 1, 2, 3, 4, 5]
    with store.transaction() as tx:
        assert tx.get_meta("model:resume:fingerprint") == old.fingerprint

    failing["n"] = -1
    seen.clear()
    v2 = make_client(new)
    assert sorted(set(seen)) == [5, 6, 7, 8, 9]  # resumed after u4
    rec = Received(v2)
    v2.flush()
    assert sorted(q.subject_id for q in rec.pql) == [f"u{n}" for n in range(10)]
    seen.clear()
    make_client(new)
    assert seen == []  # done: the fingerprint is stored


def test_a_client_waits_for_another_clients_rebuild(make_client: ClientFactory) -> None:
    """Two clients that need the same rebuild: the second waits for the first, replaying nothing."""

    def pro(log: list[str], started: threading.Event) -> Callable[[dict[str, Any]], bool]:
        def is_pro(properties: dict[str, Any]) -> bool:
            log.append(properties["user"])
            started.set()
            time.sleep(0.01)  # a slow rebuild: several transactions
            return True

        return is_pro

    def tuned(log: list[str], started: threading.Event) -> Model:
        return Model(
            "waits",
            signals={"pro": did("plan_chosen", where=pro(log, started))},
            pql=signal("pro"),
        )

    first = make_client(Model("waits", signals={"pro": did("plan_chosen", where={"x": 1})}))
    for n in range(30):
        first.track(f"u{n}", "plan_chosen", {"user": f"u{n}"})
    first.close()
    a_log: list[str] = []
    b_log: list[str] = []
    a_started, b_started = threading.Event(), threading.Event()
    assert tuned(a_log, a_started).fingerprint == tuned(b_log, b_started).fingerprint
    built: list[Client] = []
    rebuilding = threading.Thread(target=lambda: built.append(make_client(tuned(a_log, a_started))))
    rebuilding.start()
    try:
        assert a_started.wait(30)
        b = make_client(tuned(b_log, b_started))
    finally:
        rebuilding.join(60)
    assert len(built) == 1
    assert sorted(a_log) == sorted(f"u{n}" for n in range(30))
    assert b_log == []
    rec = Received(b)
    b.flush()
    assert sorted(q.subject_id for q in rec.pql) == sorted(f"u{n}" for n in range(30))


def test_another_model_name_fires_again(make_client: ClientFactory) -> None:
    """Once per model *name*: a model with another name fires the same subject anew."""
    a = make_client(model("first"))
    rec_a = Received(a)
    a.track("u1", "teammate_invited", {"email": "a@x.io"})
    activate(a, "u1")
    b = make_client(model("second"))  # new to this store: built from the shared log
    rec_b = Received(b)
    assert [q.model for q in b.pending()] == ["second"]
    b.flush()
    assert [q.subject_id for q in rec_a.pql] == ["u1"]
    assert [(q.subject_id, q.model) for q in rec_b.pql] == [("u1", "second")]
    assert rec_a.pql[0].id != rec_b.pql[0].id


def test_track_result_reports_only_what_this_call_fired(client: Client) -> None:
    """TrackResult.qualified holds the qualifications of this call (user and account)."""
    client.group("acme", {"employees": 600})
    client.track("u2", "login", account_id="acme")
    client.track("u3", "login", account_id="acme")
    client.track("u1", "warehouse_connected", account_id="acme")  # 3 active users: pqa
    result = client.track("u1", "dashboard_built", account_id="acme")
    assert [(q.kind, q.subject_id) for q in result.qualified] == [("pql", "u1")]
    assert result.disqualified == []
    assert result.scores == client.scores("u1")
    assert not result.duplicate


def test_duplicate_message_fires_nothing(client: Client) -> None:
    """A repeated message_id is ignored: nothing fires, duplicate is True."""
    client.track("u1", "teammate_invited", {"email": "a@x.io"})
    client.track("u1", "warehouse_connected")
    first = client.track("u1", "dashboard_built", message_id="m-1")
    again = client.track("u1", "dashboard_built", message_id="m-1")
    assert len(first.qualified) == 1
    assert again.duplicate
    assert again.qualified == []


def test_subject_qualifies_inside_a_track_many_batch(client: Client) -> None:
    """track_many: a user crossing the rule mid-batch fires once, reported in BulkResult."""
    rec = Received(client)
    events: list[Event | dict[str, Any]] = [
        {"user_id": "u1", "event": "warehouse_connected", "timestamp": T0},
        Event("u1", "teammate_invited", {"email": "a@x.io"}, timestamp=T0 + days(1)),
        {"user_id": "u2", "event": "login", "timestamp": T0},
        {"user_id": "u1", "event": "dashboard_built", "timestamp": T0 + days(2)},
        {"user_id": "u1", "event": "dashboard_built", "timestamp": T0 + days(3)},
    ]
    result = client.track_many(events)
    assert (result.stored, result.duplicates) == (5, 0)
    assert [(q.subject_id, q.qualified_at) for q in result.qualified] == [("u1", T0 + days(2))]
    assert rec.pql == result.qualified
    assert client.track_many(events[:1]).qualified == []


# -- disqualification --------------------------------------------------------------


def test_disqualified_on_an_event(make_client: ClientFactory) -> None:
    """on_disqualified fires once when an event turns the rule false; its id is its own."""
    client = make_client(ACTIVE)
    rec = Received(client)
    (q,) = logins(client, "u1", start=T0)
    result = client.track("u1", "downgraded", timestamp=T0 + days(1))
    assert len(result.disqualified) == 1
    dq = result.disqualified[0]
    assert rec.disqualified == [dq]
    assert (dq.kind, dq.subject_id, dq.model) == ("pql", "u1", "activity")
    assert dq.id != q.id
    assert dq.qualified_at == q.qualified_at == T0 + timedelta(minutes=2)
    assert dq.disqualified_at == T0 + days(1)
    assert dq.scores["behavior"] == 20
    assert client.track("u1", "login", timestamp=T0 + days(1)).disqualified == []
    assert len(rec.disqualified) == 1


def test_disqualified_by_a_sweep_when_a_window_ends(
    make_client: ClientFactory, clock: FrozenClock
) -> None:
    """Window expiry: the sweep at the first instant the count drops disqualifies, once."""
    client = make_client(ACTIVE)
    rec = Received(client)
    logins(client, "u1", start=T0)
    assert client.sweep(T0 + days(7) - US) == []
    fired = client.sweep(T0 + days(7))
    assert [(q.subject_id, q.disqualified_at) for q in fired] == [("u1", T0 + days(7))]
    assert rec.disqualified == fired
    assert client.sweep(T0 + days(30)) == []
    assert len(rec.disqualified) == 1


def test_disqualified_by_a_sweep_when_idle(client: Client, clock: FrozenClock) -> None:
    """idle(): a qualified user going dormant is disqualified by sweep() at exactly 14 days."""
    rec = Received(client)
    client.track("u1", "teammate_invited", {"email": "a@x.io"})
    activate(client, "u1")
    clock.advance(days(14) - US)
    assert client.sweep() == []
    clock.advance(US)
    (dq,) = client.sweep()
    assert (dq.subject_id, dq.disqualified_at) == ("u1", T0 + days(14))
    assert dq.signals == ("activated", "dormant", "invited")
    assert rec.disqualified == [dq]
    clock.advance(days(1))
    assert client.sweep() == []


def test_pqa_disqualified_by_a_sweep(client: Client) -> None:
    """An account whose active users leave the window is disqualified (kind "pqa") by sweep()."""
    rec = Received(client)
    for user in ("u1", "u2", "u3"):
        client.track(user, "login", account_id="acme", timestamp=T0)
    (q,) = rec.pqa
    assert client.sweep(T0 + days(14) - US) == []
    (dq,) = client.sweep(T0 + days(14))
    assert (dq.kind, dq.subject_id, dq.disqualified_at) == ("pqa", "acme", T0 + days(14))
    assert dq.id != q.id
    assert rec.disqualified == [dq]


def test_identify_can_qualify_a_user(client: Client) -> None:
    """A trait from identify() that completes the rule fires the user, at its newest event."""
    rec = Received(client)
    client.group("acme", {"employees": 600})
    activate(client, "u1")
    assert rec.pql == []
    client.identify("u1", {"role": "data"}, account_id="acme")
    assert [(q.subject_id, q.account_id, q.qualified_at) for q in rec.pql] == [("u1", "acme", T0)]


def test_without_requalify_after_a_disqualified_user_never_fires_again(
    make_client: ClientFactory,
) -> None:
    """No requalify_after: the rule holding again fires nothing, ever."""
    client = make_client(requalifying(None))
    rec = Received(client)
    logins(client, "u1", start=T0)
    client.sweep(T0 + days(7))
    assert len(rec.disqualified) == 1
    for start in (T0 + days(8), T0 + days(100)):
        assert logins(client, "u1", start=start) == []
    assert len(rec.pql) == 1


def test_requalify_after_fires_again_only_after_the_cool_down(
    make_client: ClientFactory,
) -> None:
    """requalify_after: a second round fires once the cool-down has passed, with a new id."""
    client = make_client(requalifying(days(10)))
    rec = Received(client)
    (first,) = logins(client, "u1", start=T0)
    client.sweep(T0 + days(7))  # disqualified at T0 + 7d; cool-down until T0 + 17d
    assert logins(client, "u1", start=T0 + days(8)) == []  # rule true, too soon
    client.sweep(T0 + days(16))  # rule false again (window): nothing to report
    assert rec.disqualified[-1].disqualified_at == T0 + days(7)
    (second,) = logins(client, "u1", start=T0 + days(17))
    assert second.id != first.id
    assert second.qualified_at == T0 + days(17) + timedelta(minutes=2)
    assert rec.pql == [first, second]
    assert logins(client, "u1", start=T0 + days(18)) == []  # still qualified: no third


def test_requalify_round_two_can_be_disqualified_again(make_client: ClientFactory) -> None:
    """Round 2 is disqualified like round 1, with a disqualification id of its own."""
    client = make_client(requalifying(days(1)))
    rec = Received(client)
    logins(client, "u1", start=T0)
    client.sweep(T0 + days(7))
    logins(client, "u1", start=T0 + days(9))
    client.sweep(T0 + days(16))
    assert len(rec.pql) == 2
    assert len(rec.disqualified) == 2
    assert len({q.id for q in rec.pql + rec.disqualified}) == 4


def test_requalify_fires_on_the_sweep_when_the_cool_down_ends(
    make_client: ClientFactory,
) -> None:
    """A rule that holds all through the cool-down fires at its end, from a sweep alone."""
    client = make_client(requalifying(days(2)))
    rec = Received(client)
    logins(client, "u1", start=T0)
    client.sweep(T0 + days(7))  # disqualified; cool-down until T0 + 9d
    assert logins(client, "u1", start=T0 + days(8)) == []  # true until T0 + 15d
    assert client.sweep(T0 + days(9) - US) == []
    fired = client.sweep(T0 + days(9))
    assert [(q.subject_id, q.qualified_at) for q in fired] == [("u1", T0 + days(9))]
    assert len(rec.pql) == 2


# -- stats -------------------------------------------------------------------------


def stats_model() -> Model:
    return Model(
        "funnel",
        signals={"activated": did("activated")},
        pql=signal("activated"),
        pqa=active_users() >= 2,
    )


def test_stats_counts_and_time_to_pql(make_client: ClientFactory) -> None:
    """stats(): users, accounts, pqls, pqas, rate, median and p90 time to PQL, health."""
    client = make_client(stats_model())
    events: list[dict[str, Any]] = []
    for n in range(100):
        events.append({"user_id": f"u{n}", "event": "signup", "timestamp": T0})
    for n in range(11):  # 11 PQLs, waiting 1 h, 2 h, ..., 11 h
        events.append(
            {"user_id": f"u{n}", "event": "activated", "timestamp": T0 + timedelta(hours=n + 1)}
        )
    for n in range(4):  # one account with 2 users (a PQA), one with 1
        events.append({"user_id": f"u{n}", "event": "x", "account_id": f"acc{n // 3}"})
    client.track_many(events)
    stats = client.stats()
    assert (stats.users, stats.accounts, stats.pqls, stats.pqas) == (100, 2, 11, 1)
    assert stats.pql_rate == pytest.approx(0.11)
    assert stats.time_to_pql_median == timedelta(hours=6)
    assert stats.time_to_pql_p90 == timedelta(hours=10)
    assert stats.pql_rate_healthy is True


def test_stats_median_of_an_even_count(make_client: ClientFactory) -> None:
    """With an even number of PQLs the median is the mean of the middle two."""
    client = make_client(stats_model())
    for n, hours in enumerate((1, 2, 4, 8)):
        client.track(f"u{n}", "signup", timestamp=T0)
        client.track(f"u{n}", "activated", timestamp=T0 + timedelta(hours=hours))
    stats = client.stats()
    assert stats.time_to_pql_median == timedelta(hours=3)
    assert stats.time_to_pql_p90 == timedelta(hours=8)


def test_stats_one_pql(make_client: ClientFactory) -> None:
    """One PQL: median and p90 are its own time to PQL."""
    client = make_client(stats_model())
    client.track("u1", "signup", timestamp=T0)
    client.track("u1", "activated", timestamp=T0 + timedelta(minutes=90))
    stats = client.stats()
    assert stats.time_to_pql_median == stats.time_to_pql_p90 == timedelta(minutes=90)
    assert stats.pql_rate == 1.0
    assert stats.pql_rate_healthy is False


def test_stats_time_to_pql_counts_the_first_round(make_client: ClientFactory) -> None:
    """A requalified user counts once, with its first qualification's wait."""
    m = Model(
        "funnel-rq",
        signals={"active": count("login", within=days(7)) >= 3},
        pql=signal("active"),
        requalify_after=days(1),
    )
    client = make_client(m)
    client.track("u1", "signup", timestamp=T0)
    logins(client, "u1", start=T0 + days(1))
    client.sweep(T0 + days(8))
    logins(client, "u1", start=T0 + days(10))
    stats = client.stats()
    assert stats.pqls == 1
    assert stats.time_to_pql_median == days(1) + timedelta(minutes=2)


@pytest.mark.parametrize(
    ("pqls", "healthy"),
    [(0, False), (4, False), (5, True), (10, True), (15, True), (16, False)],
)
def test_stats_pql_rate_healthy_band(make_client: ClientFactory, pqls: int, healthy: bool) -> None:
    """pql_rate_healthy is True inside 5-15% (inclusive), False outside."""
    client = make_client(stats_model())
    events = [{"user_id": f"u{n}", "event": "signup"} for n in range(100)]
    events += [{"user_id": f"u{n}", "event": "activated"} for n in range(pqls)]
    client.track_many(events)
    stats = client.stats()
    assert stats.pql_rate == pytest.approx(pqls / 100)
    assert stats.pql_rate_healthy is healthy


def test_stats_without_users(make_client: ClientFactory) -> None:
    """No users: zero counts, rate 0.0, no durations, health None."""
    stats = make_client(stats_model()).stats()
    assert (stats.users, stats.accounts, stats.pqls, stats.pqas) == (0, 0, 0, 0)
    assert stats.pql_rate == 0.0
    assert stats.time_to_pql_median is None
    assert stats.time_to_pql_p90 is None
    assert stats.pql_rate_healthy is None


# -- sweep -----------------------------------------------------------------------------

STALLED = Model(
    "stalled",
    signals={"stalled": absent("dashboard_built", after="signup", within=days(3))},
    pql=signal("stalled"),
)
QUIET = Model(
    "quiet",
    signals={"activated": did("activated"), "erroring": did("error", within=days(7))},
    pql=signal("activated") & ~signal("erroring"),
)
IDLE_TRIAL = Model(
    "idle-trial",
    signals={"trial": did("trial_started"), "idle": idle() >= days(3)},
    pql=signal("trial") & signal("idle"),
)
DORMANT = Model(
    "dormant",
    signals={"signed_up": did("signup"), "dormant": idle() >= days(14)},
    pql=signal("signed_up") & ~signal("dormant"),
)


def test_sweep_fires_absent_when_its_window_has_passed(make_client: ClientFactory) -> None:
    """absent(): fires at after + within, not a microsecond before; an event in time prevents it."""
    client = make_client(STALLED)
    rec = Received(client)
    client.track("u1", "signup", timestamp=T0)
    client.track("u2", "signup", timestamp=T0)
    client.track("u2", "dashboard_built", timestamp=T0 + days(1))
    client.track("u3", "signup", timestamp=T0)
    client.track("u3", "dashboard_built", timestamp=T0 + days(3))  # at the end: still inside
    assert client.sweep(T0 + days(3) - US) == []
    fired = client.sweep(T0 + days(3))
    assert [(q.subject_id, q.qualified_at) for q in fired] == [("u1", T0 + days(3))]
    assert rec.pql == fired
    assert client.sweep(T0 + days(30)) == []


def test_sweep_fires_when_a_window_expires(make_client: ClientFactory) -> None:
    """A condition that turns true when an event leaves its window fires on the sweep."""
    client = make_client(QUIET)
    rec = Received(client)
    client.track("u1", "error", timestamp=T0)
    assert client.track("u1", "activated", timestamp=T0 + days(1)).qualified == []
    assert client.sweep(T0 + days(7) - US) == []
    (q,) = client.sweep(T0 + days(7))
    assert (q.subject_id, q.qualified_at, q.signals) == ("u1", T0 + days(7), ("activated",))
    assert rec.pql == [q]


def test_sweep_fires_on_idle_and_uses_the_clock(
    make_client: ClientFactory, clock: FrozenClock
) -> None:
    """sweep() with no argument evaluates at the clock's now (idle() >= 3 days)."""
    client = make_client(IDLE_TRIAL)
    rec = Received(client)
    client.track("u1", "trial_started")
    clock.advance(days(3) - US)
    assert client.sweep() == []
    clock.advance(US)
    (q,) = client.sweep()
    assert q.qualified_at == T0 + days(3)
    assert rec.pql == [q]


def test_sweep_is_deterministic() -> None:
    """The same events and sweeps on two stores fire identical qualifications."""
    results = []
    for _ in range(2):
        clock = FrozenClock(T0)
        with Client(QUIET, store="memory://", clock=clock, dispatch="inline") as client:
            for n in range(5):
                client.track(f"u{n}", "error", timestamp=T0 + timedelta(hours=n))
                client.track(f"u{n}", "activated", timestamp=T0 + timedelta(hours=n))
            fired = []
            for hours in range(7 * 24, 7 * 24 + 6):
                fired.append(client.sweep(T0 + timedelta(hours=hours)))
            results.append(fired)
    assert results[0] == results[1]
    assert [[q.subject_id for q in batch] for batch in results[0]] == [
        ["u0"],
        ["u1"],
        ["u2"],
        ["u3"],
        ["u4"],
        [],
    ]


def test_sweep_handles_more_due_subjects_than_one_batch(make_client: ClientFactory) -> None:
    """Every due subject is swept, however many (more than one internal batch of 500)."""
    client = make_client(DORMANT)
    client.track_many({"user_id": f"u{n}", "event": "signup", "timestamp": T0} for n in range(600))
    fired = client.sweep(T0 + days(14))
    assert len(fired) == 600
    assert {q.subject_id for q in fired} == {f"u{n}" for n in range(600)}
    assert all(q.disqualified_at == T0 + days(14) for q in fired)


class CountingStore:
    """A store delegating to another, counting the subject states loaded."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.loads = 0

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.inner.transaction() as tx:
            yield _CountingTransaction(tx, self)

    def close(self) -> None:
        self.inner.close()


class _CountingTransaction:
    def __init__(self, tx: Transaction, owner: CountingStore) -> None:
        self._tx = tx
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def load_state(self, model: str, kind: Any, subject_id: str) -> StateRecord | None:
        self._owner.loads += 1
        return self._tx.load_state(model, kind, subject_id)


def test_sweep_cost_follows_the_subjects_due(store: Store, clock: FrozenClock) -> None:
    """1,000 subjects, 10 due: a sweep loads 10 states, not 1,000."""
    counting = CountingStore(store)
    early = [f"early{n}" for n in range(10)]
    late = [f"late{n}" for n in range(990)]
    with Client(DORMANT, store=counting, clock=clock, dispatch="inline") as client:
        events = [{"user_id": u, "event": "signup", "timestamp": T0} for u in early]
        events += [{"user_id": u, "event": "signup", "timestamp": T0 + days(5)} for u in late]
        client.track_many(events)
    # a client that starts cold (another process, a restart) reads only what is due
    with Client(DORMANT, store=counting, clock=clock, dispatch="inline") as client:
        counting.loads = 0
        fired = client.sweep(T0 + days(14))
        assert sorted(q.subject_id for q in fired) == sorted(early)
        assert counting.loads == 10
        counting.loads = 0
        assert client.sweep(T0 + days(14)) == []
        assert counting.loads == 0
        assert client.stats().users == 1000


def test_only_a_rule_that_time_can_flip_makes_its_subject_due(
    store: Store, clock: FrozenClock
) -> None:
    """The due time follows what the rule's evaluation read: with a time-free part
    false, the window the rule reads next can change nothing, so no sweep loads it."""
    model = Model(
        "due",
        signals={"paid": did("upgraded"), "busy": count("x", within=days(1)) >= 1},
        pql=signal("paid") & signal("busy"),
    )
    with Client(model, store=store, clock=clock, dispatch="inline") as client:
        client.track("free", "x", timestamp=T0)  # busy for a day, never paid
        client.track("payer", "upgraded", timestamp=T0)
        client.track("payer", "x", timestamp=T0)  # qualifies: busy ends in a day
        with store.transaction() as tx:
            due = tx.due_subjects("due", T0 + days(2), 10)
        assert due == [("user", "payer")]
        fired = client.sweep(T0 + days(2))
        assert [(q.subject_id, q.disqualified_at) for q in fired] == [("payer", T0 + days(2))]
