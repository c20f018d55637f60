"""The recording API (API.md section 1), used as a user would, on every store."""

from __future__ import annotations

import gc
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import pqlkit
from conftest import T0
from pqlkit import (
    BulkResult,
    Client,
    ClientClosedError,
    Event,
    Model,
    PqlkitError,
    Qualification,
    TrackResult,
    ValidationError,
    active_days,
    active_users,
    count,
    did,
    distinct,
    last,
    points,
    total,
    trait,
)
from pqlkit._default import swap
from pqlkit.stores import Store
from pqlkit.testing import ClientFactory, FrozenClock

DAY = timedelta(days=1)

MODEL = Model(
    "client-tests",
    signals={
        "activated": did("dashboard_built"),
        "admin": trait("role") == "admin",
        "big": trait("employees", of="account") >= 200,
    },
    scores={
        "events": count(),
        "logins": count("login"),
        "rows": total("usage_reported", "rows"),
        "invitees": distinct("teammate_invited", "email"),
        "days": active_days(),
        "recent_days": active_days(within=timedelta(days=3)),
        "plan_seats": last("plan_chosen", "seats"),
        "users": active_users(),
        "seats": trait("seats"),
        "employees": trait("employees", of="account"),
        "behavior": points(activated=30, admin=20, big=10),
    },
    pql=(count("login") >= 3) | (trait("seats") >= 10),
    pqa=active_users() >= 2,
)


@pytest.fixture(name="client")
def fixture_client(make_client: ClientFactory) -> Client:
    """An inline-dispatch client for MODEL on each store, with the frozen clock."""
    return make_client(MODEL)


@pytest.fixture(name="delivered")
def fixture_delivered(client: Client) -> list[Qualification]:
    """Every qualification delivered to the client's callbacks, in order."""
    received: list[Qualification] = []
    client.on_pql(received.append)
    client.on_pqa(received.append)
    return received


def events_of(client: Client, *user_ids: str) -> list[Any]:
    with client.store.transaction() as tx:
        return list(tx.events(user_ids=list(user_ids)))


def all_events(client: Client) -> list[Any]:
    with client.store.transaction() as tx:
        return list(tx.events())


def qualification_records(client: Client, kind: str = "pql") -> Counter[str]:
    """How many qualification records each subject has."""
    with client.store.transaction() as tx:
        return Counter(q.subject_id for q in tx.qualifications(MODEL.name) if q.kind == kind)


# -- track() -------------------------------------------------------------------------


def test_track_returns_what_the_call_changed(client: Client) -> None:
    """TrackResult: the user's scores after the event, and the qualification it fired."""
    first = client.track("u1", "login", account_id="acme")
    assert isinstance(first, TrackResult)
    assert first == TrackResult(qualified=[], scores=client.scores("u1"), duplicate=False)
    assert first.scores["logins"] == 1
    client.track("u1", "login", account_id="acme")
    third = client.track("u1", "login", account_id="acme")
    assert third.duplicate is False
    assert third.scores["logins"] == 3
    [q] = third.qualified
    assert (q.kind, q.subject_id, q.account_id, q.model) == ("pql", "u1", "acme", MODEL.name)
    assert q.fingerprint == MODEL.fingerprint
    assert q.qualified_at == T0
    assert q.scores == third.scores
    fourth = client.track("u1", "login", account_id="acme")
    assert fourth.qualified == []
    assert fourth.scores["logins"] == 4


def test_repeated_message_id_is_a_duplicate_and_counted_once(client: Client) -> None:
    """A repeated message_id is ignored: duplicate=True, one stored event, scores unchanged."""
    first = client.track("u1", "login", message_id="m-1")
    again = client.track("u1", "login", message_id="m-1")
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.scores == first.scores
    assert again.qualified == []
    assert client.scores("u1")["logins"] == 1
    # Unique per store: the same id under another user, event or time is a duplicate too.
    other = client.track("u2", "dashboard_built", timestamp=T0 + DAY, message_id="m-1")
    assert other.duplicate is True
    assert client.scores("u2")["events"] == 0
    assert [e.message_id for e in all_events(client)] == ["m-1"]


def test_duplicates_never_fire_twice(client: Client, delivered: list[Qualification]) -> None:
    """Re-sending the events that qualified a user neither counts nor fires again."""
    for i in range(3):
        client.track("u1", "login", message_id=f"m-{i}")
    for i in range(3):
        assert client.track("u1", "login", message_id=f"m-{i}").duplicate
    assert client.scores("u1")["logins"] == 3
    assert [q.subject_id for q in delivered] == ["u1"]
    assert qualification_records(client) == {"u1": 1}


def test_default_message_ids_are_unique(client: Client) -> None:
    """Without a message_id every call is stored: each gets a fresh UUID."""
    for _ in range(5):
        assert client.track("u1", "login").duplicate is False
    ids = [e.message_id for e in all_events(client)]
    assert len(set(ids)) == 5


def test_default_timestamp_comes_from_the_clock(client: Client, clock: FrozenClock) -> None:
    """An event without a timestamp happens at the client's clock's now."""
    client.track("u1", "login", message_id="a")
    clock.advance(timedelta(hours=5))
    client.track("u1", "login", message_id="b")
    stamps = {e.message_id: e.timestamp for e in events_of(client, "u1")}
    assert stamps == {"a": T0, "b": T0 + timedelta(hours=5)}


def test_timestamps_are_stored_in_utc(client: Client) -> None:
    """An aware timestamp in any zone is stored as the same instant, in UTC."""
    paris = timezone(timedelta(hours=2))
    client.track("u1", "login", timestamp=datetime(2026, 1, 5, 11, 30, tzinfo=paris))
    [event] = events_of(client, "u1")
    assert event.timestamp == datetime(2026, 1, 5, 9, 30, tzinfo=timezone.utc)
    assert event.timestamp.utcoffset() == timedelta(0)


def test_events_may_arrive_out_of_order(client: Client) -> None:
    """A late event counts, and "latest" is by timestamp, not by arrival."""
    client.track("u1", "plan_chosen", {"seats": 5}, timestamp=T0 + 3 * DAY)
    late = client.track("u1", "plan_chosen", {"seats": 2}, timestamp=T0 + DAY)
    assert late.scores["events"] == 2
    assert late.scores["plan_seats"] == 5  # the day-3 event is still the latest
    assert late.scores["days"] == 2
    client.track("u1", "plan_chosen", {"seats": 9}, timestamp=T0 + 5 * DAY)
    client.track("u1", "plan_chosen", {"seats": 1}, timestamp=T0)
    scores = client.scores("u1")
    assert (scores["events"], scores["plan_seats"], scores["days"]) == (4, 9, 4)
    assert scores["recent_days"] == 2  # days 3 and 5 are within 3 days of day 5


def test_a_late_event_can_qualify(client: Client, delivered: list[Qualification]) -> None:
    """The third login fires the PQL even when it arrives out of order."""
    client.track("u1", "login", timestamp=T0 + 2 * DAY)
    client.track("u1", "login", timestamp=T0 + 4 * DAY)
    result = client.track("u1", "login", timestamp=T0)
    [q] = result.qualified
    assert q.qualified_at == T0 + 4 * DAY  # evaluated as of the user's newest event
    assert [d.id for d in delivered] == [q.id]


# -- identify() and group() -------------------------------------------------------------


def test_identify_merges_traits_later_wins(client: Client) -> None:
    """identify() merges into the stored traits (Segment semantics): later values win."""
    client.identify("u1", {"role": "member", "seats": 3})
    client.identify("u1", {"seats": 8, "email": "jane@acme.io"})
    client.identify("u1")  # no traits: nothing changes
    client.identify("u1", {})
    with client.store.transaction() as tx:
        assert tx.traits("user", "u1") == {"role": "member", "seats": 8, "email": "jane@acme.io"}
    assert client.scores("u1")["seats"] == 8


def test_identify_traits_feed_trait_signals(client: Client) -> None:
    """trait() signals and scores follow the merged traits."""
    client.track("u1", "dashboard_built")
    assert client.signals("u1")["admin"] is False
    assert client.scores("u1")["behavior"] == 30
    client.identify("u1", {"role": "admin"})
    assert client.signals("u1")["admin"] is True
    assert client.scores("u1")["behavior"] == 50
    client.identify("u1", {"seats": 2})  # merging another trait keeps the role
    assert client.signals("u1")["admin"] is True
    client.identify("u1", {"role": "member"})
    assert client.signals("u1")["admin"] is False
    assert client.scores("u1")["behavior"] == 30


def test_identify_can_qualify_a_user(client: Client, delivered: list[Qualification]) -> None:
    """A trait that makes the rule true fires the PQL from identify()."""
    client.track("u1", "login")
    assert delivered == []
    client.identify("u1", {"seats": 12})
    assert [(q.kind, q.subject_id) for q in delivered] == [("pql", "u1")]
    assert delivered[0].context["user_traits"] == {"seats": 12}
    client.identify("u1", {"seats": 15})
    assert len(delivered) == 1


def test_group_merges_account_traits(client: Client) -> None:
    """group() merges into the account's traits; trait(of="account") follows them."""
    client.track("u1", "login", account_id="acme")
    client.group("acme", {"employees": 50, "industry": "data"})
    assert client.scores("acme", of="account")["employees"] == 50
    assert client.signals("u1")["big"] is False
    client.group("acme", {"employees": 600})
    with client.store.transaction() as tx:
        assert tx.traits("account", "acme") == {"employees": 600, "industry": "data"}
    assert client.scores("acme", of="account")["employees"] == 600
    assert client.signals("acme", of="account")["big"] is True
    assert client.scores("u1")["employees"] == 600  # users see their account's traits
    assert client.signals("u1")["big"] is True


def test_user_account_is_latest_event_with_one_else_identify(client: Client) -> None:
    """A user's account: its latest event's account_id, otherwise the one given to identify()."""
    client.group("acme", {"employees": 600})
    client.group("beta", {"employees": 10})
    client.identify("u1", account_id="beta")
    assert client.scores("u1")["employees"] == 10  # no event with an account yet
    client.track("u1", "login", timestamp=T0)
    assert client.scores("u1")["employees"] == 10  # still none: identify's applies
    client.track("u1", "login", account_id="acme", timestamp=T0 + 2 * DAY)
    assert client.scores("u1")["employees"] == 600  # an event's account wins over identify
    client.identify("u1", account_id="beta")
    assert client.scores("u1")["employees"] == 600
    client.track("u1", "login", account_id="beta", timestamp=T0 + DAY)  # older: not latest
    assert client.scores("u1")["employees"] == 600
    client.track("u1", "login", timestamp=T0 + 3 * DAY)  # latest, but without an account
    assert client.scores("u1")["employees"] == 600
    result = client.track("u1", "dashboard_built", account_id="beta", timestamp=T0 + 4 * DAY)
    assert result.scores["employees"] == 10


def test_qualification_names_the_users_account(
    client: Client, delivered: list[Qualification]
) -> None:
    """Qualification.account_id is the user's account (from identify when no event has one)."""
    client.identify("u1", {"seats": 3}, account_id="beta")
    client.track("u1", "login")
    client.track("u1", "login")
    client.track("u1", "login")
    client.identify("u2", account_id="beta")
    client.track("u2", "login", account_id="acme")
    client.identify("u2", {"seats": 10})
    client.identify("u3", {"seats": 10})
    client.track("u3", "login")
    assert {q.subject_id: q.account_id for q in delivered} == {
        "u1": "beta",
        "u2": "acme",
        "u3": None,
    }


def test_identify_through_an_alias_reaches_the_user(client: Client) -> None:
    """identify() with a previous id merges into the user it is aliased to."""
    client.track("u1", "login")
    client.alias("anon-1", "u1")
    client.identify("anon-1", {"seats": 4})
    with client.store.transaction() as tx:
        assert tx.traits("user", "u1") == {"seats": 4}
    assert client.scores("u1")["seats"] == 4


# -- alias() ------------------------------------------------------------------------------

HISTORY: list[tuple[str, str, dict[str, Any], int]] = [
    # (who: "prev" or "user", event, properties, day)
    ("prev", "login", {}, 0),
    ("prev", "usage_reported", {"rows": 120}, 0),
    ("prev", "teammate_invited", {"email": "a@x.io"}, 1),
    ("prev", "plan_chosen", {"seats": 5}, 2),
    ("user", "login", {}, 3),
    ("user", "usage_reported", {"rows": 30}, 3),
    ("user", "teammate_invited", {"email": "a@x.io"}, 4),
    ("user", "teammate_invited", {"email": "b@x.io"}, 4),
    ("user", "plan_chosen", {"seats": 3}, 1),
    ("user", "dashboard_built", {}, 5),
]


def play(client: Client, prev: str, user: str, account: str) -> None:
    for who, event, properties, day in HISTORY:
        uid = prev if who == "prev" else user
        client.track(uid, event, properties, account_id=account, timestamp=T0 + day * DAY)


def test_alias_counts_previous_events_for_the_user_in_every_aggregate(client: Client) -> None:
    """After alias(prev, user), every aggregate equals one user having done it all."""
    client.group("acme", {"employees": 600})
    client.group("ref-acme", {"employees": 600})
    play(client, "ref", "ref", "ref-acme")  # the reference: one id all along
    play(client, "anon-1", "u1", "acme")
    assert client.scores("u1") != client.scores("ref")
    client.alias("anon-1", "u1")
    expected = client.scores("ref")
    assert expected["events"] == len(HISTORY)
    assert expected["rows"] == 150
    assert expected["invitees"] == 2
    assert expected["plan_seats"] == 5
    assert client.scores("u1") == expected
    assert client.scores("anon-1") == expected  # reads resolve the previous id
    assert client.signals("u1") == client.signals("ref")
    assert client.scores("acme", of="account") == client.scores("ref-acme", of="account")


def test_events_under_the_previous_id_after_alias_count_for_the_user(client: Client) -> None:
    """track() with the previous id, after alias(), records for the user."""
    client.track("u1", "login")
    client.alias("anon-1", "u1")
    result = client.track("anon-1", "login")
    assert result.scores["logins"] == 2
    assert client.scores("u1")["logins"] == 2


def test_alias_chains_resolve(client: Client) -> None:
    """a -> b, then b -> c: events of a and b count for c."""
    client.track("a", "login", timestamp=T0)
    client.track("b", "login", timestamp=T0 + DAY)
    client.track("c", "dashboard_built", timestamp=T0 + 2 * DAY)
    client.alias("a", "b")
    assert client.scores("b")["events"] == 2
    client.alias("b", "c")
    scores = client.scores("c")
    assert (scores["events"], scores["logins"], scores["days"]) == (3, 2, 3)
    assert client.scores("a") == scores
    with client.store.transaction() as tx:
        assert (tx.resolve("a"), tx.resolve("b"), tx.resolve("c")) == ("c", "c", "c")
    client.track("a", "login", timestamp=T0 + 3 * DAY)
    assert client.scores("c")["logins"] == 3


def test_alias_merging_two_histories_can_qualify(
    client: Client, delivered: list[Qualification]
) -> None:
    """Two logins as anon plus two as the user make four: the merged user fires once."""
    for day in (0, 1):
        client.track("anon-1", "login", timestamp=T0 + day * DAY)
        client.track("u1", "login", timestamp=T0 + (day + 2) * DAY)
    assert delivered == []
    client.alias("anon-1", "u1")
    assert client.scores("u1")["logins"] == 4
    assert [(q.kind, q.subject_id) for q in delivered] == [("pql", "u1")]
    client.track("anon-1", "login", timestamp=T0 + 5 * DAY)
    assert qualification_records(client) == {"u1": 1}


def test_alias_counts_the_merged_user_once_in_account_aggregates(client: Client) -> None:
    """active_users counts anon and the user as two, then as one after alias()."""
    client.track("anon-1", "login", account_id="acme")
    client.track("u1", "login", account_id="acme")
    client.track("u2", "login", account_id="acme")
    assert client.scores("acme", of="account")["users"] == 3
    client.alias("anon-1", "u1")
    scores = client.scores("acme", of="account")
    assert scores["users"] == 2
    assert scores["events"] == 3


# -- forget() --------------------------------------------------------------------------


def test_forget_deletes_everything_about_the_user(
    client: Client, delivered: list[Qualification]
) -> None:
    """Events (also under aliases), traits, aliases, state and qualifications are gone."""
    client.identify("u1", {"email": "jane@acme.io", "seats": 3}, account_id="acme")
    client.track("anon-1", "login", {"path": "/pricing"}, account_id="acme", message_id="a1")
    client.alias("anon-1", "u1")
    for i in range(3):
        client.track("u1", "login", account_id="acme", message_id=f"u1-{i}")
    client.track("u2", "login", account_id="acme", message_id="u2-0")
    client.identify("u2", {"email": "bob@acme.io"})
    assert [q.subject_id for q in delivered if q.kind == "pql"] == ["u1"]
    u2_before = client.scores("u2")

    client.forget("u1")

    assert client.scores("u1")["events"] == 0
    assert client.scores("anon-1")["events"] == 0
    assert client.signals("u1") == {"activated": False, "admin": False, "big": False}
    with client.store.transaction() as tx:
        assert list(tx.events(user_ids=["u1", "anon-1"])) == []
        assert not any(tx.has_message(m) for m in ("a1", "u1-0", "u1-1", "u1-2"))
        assert tx.traits("user", "u1") == {}
        assert tx.traits("user", "anon-1") == {}
        assert tx.resolve("anon-1") == "anon-1"
        assert tx.aliases_of("u1") == []
        assert tx.load_state(MODEL.name, "user", "u1") is None
        assert tx.load_state(MODEL.name, "user", "anon-1") is None
        assert tx.latest_qualification(MODEL.name, "pql", "u1") is None
        assert [q for q in tx.qualifications(MODEL.name) if q.subject_id == "u1"] == []
        for status in ("pending", "delivered", "dead"):
            assert [d for d in tx.deliveries(status) if d.subject_id == "u1"] == []
        # Nobody else was touched.
        assert [e.message_id for e in tx.events()] == ["u2-0"]
        assert tx.traits("user", "u2") == {"email": "bob@acme.io"}
    assert client.scores("u2") == u2_before


def test_forget_updates_account_aggregates(client: Client) -> None:
    """The account's aggregates no longer include the forgotten user's events."""
    client.track("u1", "login", account_id="acme")
    client.track("u1", "usage_reported", {"rows": 100}, account_id="acme")
    client.track("anon-1", "usage_reported", {"rows": 5}, account_id="acme")
    client.alias("anon-1", "u1")
    client.track("u2", "usage_reported", {"rows": 7}, account_id="acme")
    before = client.scores("acme", of="account")
    assert (before["users"], before["events"], before["rows"]) == (2, 4, 112)
    client.forget("u1")
    after = client.scores("acme", of="account")
    assert (after["users"], after["events"], after["rows"], after["logins"]) == (1, 1, 7, 0)


def test_forget_redacts_the_user_from_account_qualifications(store: pqlkit.Store) -> None:
    """A forgotten user's events leave the context of its account's stored PQA payloads."""
    model = pqlkit.Model("m", signals={"x": pqlkit.did("login")}, pqa=pqlkit.active_users() >= 1)
    with pqlkit.Client(model, store=store) as client:
        got: list[pqlkit.Qualification] = []
        client.on_pqa(got.append)
        client.track("u1", "login", {"email": "jane@acme.io"}, account_id="acme")
        assert got[0].context["events"][0]["user_id"] == "u1"
        client.forget("u1")
        with store.transaction() as tx:
            (delivered,) = tx.deliveries("delivered")
        assert delivered.qualification.id == got[0].id
        assert delivered.qualification.context["events"] == []


def test_forget_through_a_previous_id_forgets_the_user(client: Client) -> None:
    """forget() with an id aliased to a user forgets that user entirely."""
    client.track("u1", "login")
    client.track("anon-1", "login")
    client.alias("anon-1", "u1")
    client.forget("anon-1")
    assert all_events(client) == []
    assert client.scores("u1")["events"] == 0


def test_track_after_forget_starts_fresh(client: Client, delivered: list[Qualification]) -> None:
    """A forgotten id is a new user: counts restart and it can qualify again."""
    client.identify("u1", {"role": "admin"})
    for _ in range(3):
        client.track("u1", "login")
    client.forget("u1")
    first = client.track("u1", "login")
    assert first.scores["logins"] == 1
    assert first.qualified == []
    assert client.signals("u1")["admin"] is False  # the old traits are gone too
    client.track("u1", "login")
    third = client.track("u1", "login")
    assert [q.subject_id for q in third.qualified] == ["u1"]
    assert [q.subject_id for q in delivered] == ["u1", "u1"]
    assert qualification_records(client) == {"u1": 1}


def test_forget_of_an_id_with_a_nul_keeps_the_other_user(client: Client) -> None:
    """track("a\\x00b") and forget("a\\x00b") are refused: they once deleted user a's events
    on SQLite (whose JSON functions cut text at the NUL) and mixed a's events into the
    other's context."""
    client.track("a", "login", account_id="acme")
    client.track("a", "login", account_id="acme")
    with pytest.raises(pqlkit.ValidationError, match="NUL"):
        client.track("a\x00b", "login", account_id="acme")
    with pytest.raises(pqlkit.ValidationError, match="NUL"):
        client.forget("a\x00b")
    assert [e.user_id for e in all_events(client)] == ["a", "a"]
    assert client.scores("a")["logins"] == 2


def test_forget_of_an_unknown_user_is_a_no_op(client: Client) -> None:
    """Forgetting someone never seen changes nothing."""
    client.track("u1", "login")
    client.forget("nobody")
    assert [e.user_id for e in all_events(client)] == ["u1"]


# -- the module-level default client ------------------------------------------------------


@pytest.fixture(name="default_slot")
def fixture_default_slot(store: Store) -> Iterator[None]:
    """Empty the module-level default client for the test; restore it afterwards.

    It depends on ``store`` so that the configured client is closed before the store.
    """
    previous = swap(None)
    try:
        yield
    finally:
        current = swap(previous)
        if current is not None:
            current.close()


@pytest.mark.usefixtures("default_slot")
def test_module_level_functions_use_the_configured_client(store: Store) -> None:
    """pqlkit.configure(model, store=...) then pqlkit.track(...) and friends."""
    received: list[Qualification] = []
    client = pqlkit.configure(MODEL, store=store, clock=FrozenClock(T0), dispatch="inline")
    assert pqlkit.get_client() is client
    client.on_pql(received.append)
    client.on_pqa(received.append)

    result = pqlkit.track("anon-1", "login", {"path": "/"}, account_id="acme", message_id="m1")
    assert isinstance(result, TrackResult)
    assert pqlkit.track("anon-1", "login", message_id="m1").duplicate is True
    pqlkit.identify("u1", {"seats": 2}, account_id="acme")
    pqlkit.group("acme", {"employees": 600})
    pqlkit.track("u1", "login", account_id="acme", timestamp=T0 + DAY)
    pqlkit.alias("anon-1", "u1")
    pqlkit.track("u2", "login", account_id="acme")
    pqlkit.track("u1", "login", account_id="acme")
    pqlkit.flush()
    scores = client.scores("u1")
    assert (scores["logins"], scores["seats"], scores["employees"]) == (3, 2, 600)
    assert sorted((q.kind, q.subject_id) for q in received) == [("pqa", "acme"), ("pql", "u1")]

    pqlkit.forget("u1")
    assert client.scores("u1")["events"] == 0
    assert [e.user_id for e in all_events(client)] == ["u2"]


@pytest.mark.usefixtures("default_slot")
def test_module_level_track_needs_configure() -> None:
    """Before configure(), the module-level functions raise PqlkitError."""
    with pytest.raises(PqlkitError, match="configure"):
        pqlkit.track("u1", "login")
    with pytest.raises(PqlkitError, match="configure"):
        pqlkit.get_client()


@pytest.mark.usefixtures("default_slot")
def test_configure_again_closes_the_previous_client(store: Store) -> None:
    """A second configure() replaces the default client and closes the first."""
    first = pqlkit.configure(MODEL, store=store, clock=FrozenClock(T0))
    second = pqlkit.configure(MODEL, store=store, clock=FrozenClock(T0))
    assert pqlkit.get_client() is second
    with pytest.raises(ClientClosedError):
        first.track("u1", "login")
    pqlkit.track("u1", "login")
    assert second.scores("u1")["logins"] == 1


# -- flush(), close(), the context manager -----------------------------------------------


def test_context_manager_closes_the_client(store: Store) -> None:
    """Leaving the with-block closes the client, also when the block raises."""
    with Client(MODEL, store=store, clock=FrozenClock(T0)) as client:
        client.track("u1", "login")
    with pytest.raises(ClientClosedError):
        client.track("u1", "login")
    with pytest.raises(RuntimeError, match="boom"), Client(MODEL, store=store) as other:
        raise RuntimeError("boom")
    with pytest.raises(ClientClosedError):
        other.track("u1", "login")
    with store.transaction() as tx:
        assert len(list(tx.events())) == 1


def test_close_is_idempotent(store: Store) -> None:
    """close() twice is fine."""
    client = Client(MODEL, store=store)
    client.close()
    client.close()


CLOSED_CALLS: dict[str, Callable[[Client], object]] = {
    "track": lambda c: c.track("u1", "login"),
    "track_many": lambda c: c.track_many([{"user_id": "u1", "event": "login"}]),
    "identify": lambda c: c.identify("u1", {"seats": 1}),
    "group": lambda c: c.group("acme", {"employees": 1}),
    "alias": lambda c: c.alias("anon-1", "u1"),
    "forget": lambda c: c.forget("u1"),
    "flush": lambda c: c.flush(),
    "scores": lambda c: c.scores("u1"),
    "signals": lambda c: c.signals("u1"),
    "explain": lambda c: c.explain("u1"),
    "sweep": lambda c: c.sweep(),
    "rebuild": lambda c: c.rebuild(),
    "pending": lambda c: c.pending(),
    "dead_letters": lambda c: c.dead_letters(),
    "retry_dead_letters": lambda c: c.retry_dead_letters(),
    "stats": lambda c: c.stats(),
}


@pytest.mark.parametrize("call", list(CLOSED_CALLS.values()), ids=list(CLOSED_CALLS))
def test_a_closed_client_raises_client_closed_error(
    store: Store, call: Callable[[Client], object]
) -> None:
    """Every method of a closed client raises ClientClosedError (a RuntimeError)."""
    client = Client(MODEL, store=store, clock=FrozenClock(T0))
    client.track("u1", "login")
    client.close()
    with pytest.raises(ClientClosedError) as info:
        call(client)
    assert isinstance(info.value, RuntimeError)
    with store.transaction() as tx:
        assert len(list(tx.events())) == 1


def test_a_closed_client_with_an_owned_store_raises_client_closed_error(tmp_path: Any) -> None:
    """A client that opened its store from a URL raises ClientClosedError, not a store error."""
    client = Client(MODEL, store=f"sqlite:///{tmp_path / 'owned.db'}")
    client.close()
    for call in CLOSED_CALLS.values():
        with pytest.raises(ClientClosedError):
            call(client)


def test_unclosed_client_warns(store: Store) -> None:
    """A client garbage-collected while open emits a ResourceWarning."""
    with pytest.warns(ResourceWarning, match="never closed"):
        open_and_drop(store)


def open_and_drop(store: Store) -> None:
    """Open a client and lose it without closing it."""
    Client(MODEL, store=store)
    gc.collect()


def test_closed_client_does_not_warn(store: Store, recwarn: pytest.WarningsRecorder) -> None:
    """A closed client is collected silently."""
    client = Client(MODEL, store=store)
    client.close()
    del client
    gc.collect()
    assert [w for w in recwarn if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.parametrize("dispatch", ["inline", "background"])
def test_flush_delivers_what_is_due(store: Store, dispatch: str) -> None:
    """flush() returns once due deliveries were attempted, in either dispatch mode."""
    received: list[Qualification] = []
    with Client(MODEL, store=store, clock=FrozenClock(T0), dispatch=dispatch) as client:
        for _ in range(3):
            client.track("u1", "login")
        client.on_pql(received.append)  # registered after: the delivery is pending
        assert [q.subject_id for q in client.pending()] == ["u1"]
        client.flush()
        assert [q.subject_id for q in received] == ["u1"]
        assert client.pending() == []


def test_close_delivers_what_is_due(store: Store) -> None:
    """close() attempts due deliveries before it stops (background mode)."""
    received: list[Qualification] = []
    client = Client(MODEL, store=store, clock=FrozenClock(T0), dispatch="background")
    client.on_pql(received.append)
    for _ in range(3):
        client.track("u1", "login")
    client.close()
    assert [q.subject_id for q in received] == ["u1"]


# -- track_many() -----------------------------------------------------------------------


def bulk_input(user_prefix: str) -> list[Event | dict[str, Any]]:
    """A backfill with dicts and Events, users and accounts, and duplicate message ids."""
    rng = random.Random(7)
    items: list[Event | dict[str, Any]] = []
    for i in range(1_200):
        user = f"{user_prefix}u{rng.randrange(30)}"
        account = f"{user_prefix}acct{rng.randrange(4)}" if rng.random() < 0.8 else None
        event = rng.choice(["login", "login", "usage_reported", "dashboard_built"])
        props = {"rows": rng.randrange(100)} if event == "usage_reported" else None
        when = T0 + timedelta(hours=rng.randrange(24 * 10))
        mid = f"{user_prefix}m{i if rng.random() < 0.9 else rng.randrange(i + 1)}"
        if i % 2:
            items.append(Event(user, event, props, account, when, mid))
        else:
            items.append(
                {
                    "user_id": user,
                    "event": event,
                    "properties": props,
                    "account_id": account,
                    "timestamp": when,
                    "message_id": mid,
                }
            )
    return items


def as_kwargs(item: Event | dict[str, Any]) -> dict[str, Any]:
    if isinstance(item, Event):
        return {
            "user_id": item.user_id,
            "event": item.event,
            "properties": item.properties,
            "account_id": item.account_id,
            "timestamp": item.timestamp,
            "message_id": item.message_id,
        }
    return dict(item)


def test_track_many_is_repeated_track(client: Client) -> None:
    """track_many() stores, dedupes, scores and fires exactly like repeated track()."""
    bulk = bulk_input("bulk-")
    loop = bulk_input("loop-")
    result = client.track_many(bulk)
    assert isinstance(result, BulkResult)

    stored = duplicates = 0
    fired: list[Qualification] = []
    for item in loop:
        kw = as_kwargs(item)
        r = client.track(
            kw["user_id"],
            kw["event"],
            kw["properties"],
            account_id=kw["account_id"],
            timestamp=kw["timestamp"],
            message_id=kw["message_id"],
        )
        duplicates += r.duplicate
        stored += not r.duplicate
        fired.extend(r.qualified)

    assert duplicates > 0
    assert (result.stored, result.duplicates) == (stored, duplicates)
    assert result.stored + result.duplicates == len(bulk)

    def strip(subject: str) -> str:
        return subject.removeprefix("bulk-").removeprefix("loop-")

    assert [(q.kind, strip(q.subject_id)) for q in result.qualified] == [
        (q.kind, strip(q.subject_id)) for q in fired
    ]
    assert result.qualified  # the data set is big enough to qualify someone
    for i in range(30):
        assert client.scores(f"bulk-u{i}") == client.scores(f"loop-u{i}")
    for i in range(4):
        assert client.scores(f"bulk-acct{i}", of="account") == client.scores(
            f"loop-acct{i}", of="account"
        )
    events = all_events(client)
    assert len(events) == 2 * stored
    assert len({e.message_id for e in events}) == len(events)


def test_track_many_skips_ids_already_stored(client: Client) -> None:
    """An item whose message_id track() already stored counts as a duplicate."""
    client.track("u1", "login", message_id="m-1")
    result = client.track_many(
        [
            {"user_id": "u1", "event": "login", "message_id": "m-1"},
            Event("u1", "login", message_id="m-2"),
            Event("u1", "login", message_id="m-2"),
        ]
    )
    assert (result.stored, result.duplicates) == (1, 2)
    assert client.scores("u1")["logins"] == 2


def test_track_many_bad_item_raises_naming_its_index(client: Client) -> None:
    """A bad item raises ValidationError naming events[i].field."""
    items: list[Event | dict[str, Any]] = [
        Event("u1", "login"),
        {"user_id": "u1", "event": "login", "properties": {"tags": {"a"}}},
    ]
    with pytest.raises(ValidationError) as info:
        client.track_many(items)
    assert info.value.field == "events[1].properties.tags"
    assert all_events(client) == []


def test_track_many_accepts_a_generator(client: Client) -> None:
    """events may be any iterable, consumed once."""
    result = client.track_many(Event(f"u{i % 3}", "login") for i in range(9))
    assert (result.stored, result.duplicates) == (9, 0)
    assert sorted(q.subject_id for q in result.qualified) == ["u0", "u1", "u2"]


# -- threads ---------------------------------------------------------------------------

THREADS = 8
PER_THREAD = 500
USERS = 20


def run_threads(target: Callable[[int], None]) -> list[BaseException]:
    """Run target(0..THREADS-1) on threads started together; return their exceptions."""
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as error:  # reported to the test
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_threads_sharing_one_client_store_every_event_once(client: Client) -> None:
    """8 threads x 500 events over overlapping users: every event stored once, counts exact."""
    plan = {
        t: [
            (f"u{(t * 7 + i) % USERS}", "login" if (t + i) % 3 else "dashboard_built", f"t{t}-{i}")
            for i in range(PER_THREAD)
        ]
        for t in range(THREADS)
    }
    fired: list[Qualification] = []
    fired_lock = threading.Lock()

    def work(t: int) -> None:
        for user, event, mid in plan[t]:
            account = "even" if int(user[1:]) % 2 == 0 else "odd"
            result = client.track(user, event, account_id=account, message_id=mid)
            assert result.duplicate is False
            with fired_lock:
                fired.extend(result.qualified)

    assert run_threads(work) == []

    events = all_events(client)
    assert len(events) == THREADS * PER_THREAD
    assert {e.message_id for e in events} == {mid for p in plan.values() for *_, mid in p}
    expected = Counter(user for p in plan.values() for user, _, _ in p)
    logins = Counter(user for p in plan.values() for user, event, _ in p if event == "login")
    for user, n in expected.items():
        scores = client.scores(user)
        assert (scores["events"], scores["logins"]) == (n, logins[user])
    for account, parity in (("even", 0), ("odd", 1)):
        scores = client.scores(account, of="account")
        assert scores["users"] == USERS // 2
        assert scores["events"] == sum(n for u, n in expected.items() if int(u[1:]) % 2 == parity)
    assert Counter(q.subject_id for q in fired if q.kind == "pql") == dict.fromkeys(expected, 1)
    assert Counter(q.subject_id for q in fired if q.kind == "pqa") == {"even": 1, "odd": 1}
    assert qualification_records(client) == dict.fromkeys(expected, 1)


def test_threads_racing_with_the_same_message_ids_store_each_once(client: Client) -> None:
    """8 threads sending the same 100 message ids: each is stored once, one call wins it."""
    ids = [f"m{i}" for i in range(100)]
    winners: list[str] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        order = ids[:]
        random.Random(t).shuffle(order)
        for mid in order:
            result = client.track(f"u{int(mid[1:]) % 5}", "login", message_id=mid)
            if not result.duplicate:
                with lock:
                    winners.append(mid)

    assert run_threads(work) == []
    assert sorted(winners) == sorted(ids)
    assert sorted(e.message_id for e in all_events(client)) == sorted(ids)
    for u in range(5):
        assert client.scores(f"u{u}")["logins"] == 20


def test_forgotten_user_qualifying_again_gets_a_new_id(store: pqlkit.Store) -> None:
    """A receiver de-duplicating on Qualification.id still hears of a forgotten user's new PQL."""
    model = pqlkit.Model("m", signals={"x": pqlkit.did("x")}, pql=pqlkit.signal("x"))
    clock = FrozenClock(T0)
    with pqlkit.Client(model, store=store, clock=clock) as client:
        first = client.track("u1", "x").qualified[0].id
        client.forget("u1")
        clock.advance(timedelta(days=1))
        second = client.track("u1", "x").qualified[0].id
    assert first != second


def test_identify_rejects_the_reserved_account_trait(store: pqlkit.Store) -> None:
    """The key pqlkit keeps identify()'s account under cannot be set as a trait."""
    model = pqlkit.Model("m", signals={"x": pqlkit.did("x")})
    with pqlkit.Client(model, store=store) as client, pytest.raises(pqlkit.ValidationError) as info:
        client.identify("u1", {"$account_id": "evil"})
    assert info.value.field == "traits.$account_id"


def test_default_message_ids_are_unique_time_ordered_uuid7s() -> None:
    from pqlkit._process import new_message_id

    ids = [new_message_id() for _ in range(2_000)]
    assert len(set(ids)) == 2_000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)
        ms = parsed.int >> 80  # the first 48 bits: the Unix time in milliseconds
        assert abs(ms / 1000 - time.time()) < 60
    time.sleep(0.002)
    later = new_message_id()
    assert later > max(ids)  # a later millisecond sorts after (as text too)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
def test_a_forked_child_draws_other_message_ids_than_its_parent() -> None:
    """The id stream is seeded again in a child: a parent and its children (gunicorn
    --preload workers) never hand out the same ids, and the child knows its pid."""
    from pqlkit import _process

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through the pipe)
        try:
            ok = _process.pid == os.getpid()
            line = " ".join([str(ok)] + [_process.new_message_id() for _ in range(50)])
            os.write(write, line.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        ok, *theirs = pipe.read().split()
    os.waitpid(child, 0)
    ours = {_process.new_message_id() for _ in range(50)}
    assert ok == "True"
    assert _process.pid == os.getpid() != child
    assert len(theirs) == 50
    assert not ours & set(theirs)
