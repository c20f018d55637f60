"""The Store protocol suite: every store must pass it (see the ``store`` fixture).

It also runs through PgBouncer in transaction pooling mode (``postgres-pgbouncer``),
which the other tests taking ``store`` do not (conftest.py says why)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest

from conftest import T0, open_test_store, store_params
from pqlkit import MemoryStore, PqlkitError, SQLiteStore, Store, ValidationError
from pqlkit._events import Qualification
from pqlkit.stores import Transaction
from pqlkit.stores._base import (
    ABSENT,
    Checked,
    DeliveryRecord,
    DeliveryStatus,
    NewEvent,
    NudgeRecord,
    QualificationRecord,
    Rank,
    StateRecord,
)


@pytest.fixture(name="store", params=store_params(through_pgbouncer=True))
def fixture_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each kind (also through PgBouncer), closed after the test."""
    yield from open_test_store(request.param, tmp_path)


T0_US = T0 + timedelta(microseconds=123_456)
"""The records' time: T0 with microseconds, which every store must keep exactly."""


def at(seconds: float) -> datetime:
    return T0_US + timedelta(seconds=seconds)


def event(
    message_id: str,
    user_id: str = "u1",
    name: str = "login",
    *,
    account_id: str | None = None,
    timestamp: datetime = T0_US,
    properties: dict[str, Any] | None = None,
) -> NewEvent:
    return NewEvent(
        message_id=message_id,
        user_id=user_id,
        event=name,
        properties=properties or {},
        account_id=account_id,
        timestamp=timestamp,
    )


def qualification_record(
    subject_id: str = "u1",
    round: int = 0,
    *,
    model: str = "m",
    kind: str = "pql",
    fingerprint: str = "f1",
) -> QualificationRecord:
    return QualificationRecord(
        id=f"{model}:{kind}:{subject_id}:{round}",
        model=model,
        kind=kind,  # type: ignore[arg-type]
        subject_id=subject_id,
        round=round,
        fingerprint=fingerprint,
        qualified_at=at(60),
        first_seen=T0_US,
    )


def payload(subject_id: str = "u1", kind: str = "pql") -> Qualification:
    return Qualification(
        id=f"q-{subject_id}",
        kind=kind,  # type: ignore[arg-type]
        subject_id=subject_id,
        account_id="acme",
        model="m",
        fingerprint="f1",
        qualified_at=at(60),
        scores={"behavior": 55.0, "fit": 20.5},
        signals=("activated", "invited"),
        explanation=("activated: true", "behavior = 55"),
        context={"user_traits": {"plan": "pro", "seats": 3}, "events": [{"event": "login"}]},
    )


def delivery(
    delivery_id: str, *, kind: str = "pql", subject_id: str = "u1", **changes: Any
) -> DeliveryRecord:
    qualification_kind = kind if kind != "disqualified" else "pql"
    return DeliveryRecord(
        id=delivery_id,
        kind=kind,  # type: ignore[arg-type]
        subject_id=subject_id,
        qualification=payload(subject_id, qualification_kind),
        **changes,
    )


STATUSES: tuple[DeliveryStatus, ...] = ("pending", "delivered", "dead", "expired")


def put(
    tx: Transaction,
    delivery_id: str,
    callbacks: tuple[str, ...] = ("cb",),
    *,
    status: str = "pending",
    attempts: int = 0,
    last_error: str | None = None,
    now: datetime = T0_US,
    **changes: Any,
) -> None:
    """Enqueue a delivery with a record per callback, each then set to ``status``."""
    record = delivery(delivery_id, **changes)
    tx.enqueue(record, callbacks, now=now)
    if status != "pending" or attempts or last_error:
        for name in callbacks:
            tx.finish_delivery(
                delivery_id,
                name,
                status=status,  # type: ignore[arg-type]
                attempts=attempts,
                next_attempt_at=record.next_attempt_at,
                last_error=last_error,
                finished_at=None if status == "pending" else now,
            )


def nudge(
    user_id: str = "u1",
    key: str = "upgrade",
    *,
    created_at: datetime = T0_US,
    until: datetime | None = None,
    payload: dict[str, Any] | None = None,
    play: str | None = None,
) -> NudgeRecord:
    return NudgeRecord(
        user_id,
        key,
        {"title": f"{key} for {user_id}"} if payload is None else payload,
        created_at,
        until,
        model="m",
        play=play,
    )


def seqs(records: Any) -> list[str]:
    return [r.message_id for r in records]


# -- transactions ---------------------------------------------------------------------


def test_committed_writes_are_visible_to_the_next_transaction(store: Store) -> None:
    """What one transaction commits, the next one reads."""
    with store.transaction() as tx:
        tx.insert_event(event("m1"))
        tx.set_meta("k", "v")
    with store.transaction() as tx:
        assert tx.has_message("m1")
        assert tx.get_meta("k") == "v"


def test_exception_propagates_out_of_transaction(store: Store) -> None:
    """The exception that aborts a transaction reaches the caller unchanged."""

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction():
        raise Boom


def _populate(store: Store) -> None:
    with store.transaction() as tx:
        tx.insert_event(event("m1", "u1", account_id="acme"))
        tx.insert_event(event("m2", "u2", account_id="acme", timestamp=at(5)))
        tx.insert_event(event("m3", "anon", timestamp=at(1)))
        tx.set_alias("old", "u1")
        tx.set_traits("user", "u1", {"plan": "pro"})
        tx.set_traits("account", "acme", {"employees": 600})
        tx.save_state(StateRecord("m", "user", "u1", '{"n": 1}', due_at=at(100)))
        tx.save_state(StateRecord("m", "user", "u2", '{"n": 2}'))
        tx.insert_qualification(qualification_record("u1"))
        tx.register_callback("m", "pql", "slack", at(0), since=at(0))
        put(tx, "d1", ("cb",))
        put(tx, "d2", ("cb",), subject_id="u2", status="dead", attempts=10)
        put(tx, "d4", ("*",), subject_id="u2", status="dead", attempts=10)
        put(tx, "d5", (), subject_id="u2", now=at(-100))
        tx.set_meta("fingerprint:m", "f1")
        tx.save_ranks("m", "user", "u1", [Rank("behavior", 30.0, at(50))])
        tx.save_ranks("m", "user", "u2", [Rank("behavior", 40.0)])
        tx.open_nudge(nudge("u1", "upgrade", until=at(200)), at(0))
        tx.open_nudge(nudge("u2", "tour"), at(0))
        tx.open_nudge(nudge("u2", "seen"), at(0))
        tx.mark_nudge("u2", "seen", "seen", at(1))


def _snapshot(store: Store) -> dict[str, Any]:
    """Everything the protocol can read about the populated store."""
    users = ["u1", "u2", "anon", "old", "new"]
    with store.transaction() as tx:
        return {
            "events": list(tx.events()),
            "resolve": {u: tx.resolve(u) for u in users},
            "aliases": {u: tx.aliases_of(u) for u in users},
            "traits": {
                (k, s): tx.traits(k, s) for k in ("user", "account") for s in [*users, "acme"]
            },
            "accounts": tx.accounts_of(users),
            "users": tx.users_of("acme"),
            "states": [tx.load_state("m", "user", u) for u in users],
            "due": tx.due_subjects("m", at(10_000), 100),
            "count": tx.count_subjects("m", "user"),
            "qualifications": list(tx.qualifications("m")),
            "latest": tx.latest_qualification("m", "pql", "u1"),
            "deliveries": {s: tx.deliveries(s) for s in STATUSES},
            "meta": tx.get_meta("fingerprint:m"),
            "top": tx.top_ranks("m", "user", "behavior", 10),
            "stale": tx.stale_ranks("m", "user", "behavior", at(10_000), 10),
            "nudges": {u: tx.nudges(u, at(0)) for u in users},
        }


def _write_everything_then_fail(tx: Transaction) -> None:
    tx.insert_event(event("m4", "u1", account_id="other"))
    tx.set_alias("u1", "new")
    tx.set_traits("user", "u2", {"plan": "free"})
    tx.forget_users(["u2"])
    tx.save_state(StateRecord("m", "user", "u1", "{}", due_at=T0_US))
    tx.delete_state("m", "user", "u2")
    tx.clear_states("m")
    tx.insert_qualification(qualification_record("u1", 1))
    tx.set_disqualified("m:pql:u1:0", at(90))
    tx.delete_qualifications("u1", "pql")
    tx.enqueue(delivery("d3"), ["cb"], now=at(1_000))
    tx.register_callback("m", "pql", "new", at(1_000), since=at(0))
    tx.claim_due(at(1_000), at(1_000), at(2_000), ["pql:cb"], 10)
    tx.finish_delivery(
        "d1", "cb", status="delivered", attempts=1, next_attempt_at=None, last_error=None
    )
    tx.revive_dead(at(1_000))
    tx.close_deliveries(at(1), at(1_000), model="m")
    tx.purge_deliveries(at(2_000), model="m")
    tx.set_meta("fingerprint:m", "f2")
    tx.save_ranks("m", "user", "u1", [Rank("behavior", 99.0)])
    tx.open_nudge(nudge("u1", "upgrade", until=at(500)), at(300))  # expires the open one
    tx.open_nudge(nudge("u2", "new"), at(0))
    tx.mark_nudge("u2", "tour", "dismissed", at(2))
    tx.mark_nudge("u2", "seen", "clicked", at(2))
    raise RuntimeError("abort")


def test_rollback_leaves_the_store_exactly_as_it_was(store: Store) -> None:
    """A transaction that raises after every kind of write changes nothing."""
    _populate(store)
    before = _snapshot(store)

    with pytest.raises(RuntimeError), store.transaction() as tx:
        _write_everything_then_fail(tx)

    assert _snapshot(store) == before


# -- event log -----------------------------------------------------------------------


def test_insert_event_returns_the_stored_record(store: Store) -> None:
    """insert_event returns the event as stored, with its seq."""
    new = event("m1", "u1", "signup", account_id="acme", properties={"plan": "pro"})
    with store.transaction() as tx:
        record = tx.insert_event(new)
        assert record is not None
        assert list(tx.events()) == [record]
    assert attrs.asdict(record) == {"seq": record.seq, **attrs.asdict(new)}


def test_seq_increases_in_arrival_order(store: Store) -> None:
    """Each stored event gets a larger seq than the one stored before it."""
    with store.transaction() as tx:
        records = [tx.insert_event(event(f"m{i}")) for i in range(5)]
    numbers = [r.seq for r in records if r is not None]
    assert len(numbers) == 5
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == 5


def test_seq_is_not_reused_after_forgetting_the_newest_event(store: Store) -> None:
    """A forgotten event's seq is never given to a later event."""
    with store.transaction() as tx:
        kept = tx.insert_event(event("m1", "u1"))
        gone = tx.insert_event(event("m2", "u2"))
        tx.forget_users(["u2"])
        later = tx.insert_event(event("m3", "u1"))
    assert kept is not None
    assert gone is not None
    assert later is not None
    assert later.seq > gone.seq


def test_an_id_with_a_nul_never_matches_another_user(store: Store) -> None:
    """forget_users(["u1\\x00b"]) refuses (or deletes nothing of u1's): SQLite's JSON
    functions cut text at a NUL, which once made it delete user u1's events."""
    with store.transaction() as tx:
        tx.insert_event(event("m1", "u1", account_id="acme"))
        tx.insert_event(event("m2", "u1", account_id="acme"))
    with contextlib.suppress(PqlkitError), store.transaction() as tx:
        assert tx.accounts_of(["u1\x00b"]) == set()
        assert tx.recent_events(["u1\x00b"], 10) == []
        assert list(tx.events(user_ids=["u1\x00b"])) == []
        tx.forget_users(["u1\x00b"])
    with store.transaction() as tx:
        assert [e.message_id for e in tx.events(user_ids=["u1"])] == ["m1", "m2"]


def test_duplicate_message_id_is_ignored(store: Store) -> None:
    """A second event with a stored message_id returns None and stores nothing."""
    with store.transaction() as tx:
        tx.insert_event(event("m1", "u1", "login"))
    with store.transaction() as tx:
        assert tx.insert_event(event("m1", "u2", "logout")) is None
        assert [(e.user_id, e.event) for e in tx.events()] == [("u1", "login")]


def test_has_message(store: Store) -> None:
    """has_message is true exactly for stored message ids."""
    with store.transaction() as tx:
        tx.insert_event(event("m1"))
        assert tx.has_message("m1")
        assert not tx.has_message("m2")


def test_events_are_in_arrival_order_not_timestamp_order(store: Store) -> None:
    """events() yields events by seq, whatever their timestamps."""
    with store.transaction() as tx:
        tx.insert_event(event("late", timestamp=at(50)))
        tx.insert_event(event("early", timestamp=at(-50)))
        tx.insert_event(event("middle", timestamp=at(0)))
        assert seqs(tx.events()) == ["late", "early", "middle"]


def test_events_of_some_users(store: Store) -> None:
    """events(user_ids=...) keeps only those users' events."""
    with store.transaction() as tx:
        for i, user in enumerate(["u1", "u2", "u3", "u1", "u2"]):
            tx.insert_event(event(f"m{i}", user))
        assert seqs(tx.events(user_ids=["u1", "u2"])) == ["m0", "m1", "m3", "m4"]
        assert seqs(tx.events(user_ids=["u3"])) == ["m2"]


def test_events_of_no_users(store: Store) -> None:
    """events(user_ids=[]) yields nothing."""
    with store.transaction() as tx:
        tx.insert_event(event("m1"))
        assert list(tx.events(user_ids=[])) == []


def test_events_of_one_account(store: Store) -> None:
    """events(account_id=...) keeps only events carrying that account."""
    with store.transaction() as tx:
        tx.insert_event(event("m1", "u1", account_id="acme"))
        tx.insert_event(event("m2", "u2", account_id="globex"))
        tx.insert_event(event("m3", "u1"))
        tx.insert_event(event("m4", "u3", account_id="acme"))
        assert seqs(tx.events(account_id="acme")) == ["m1", "m4"]


def test_events_of_users_and_account(store: Store) -> None:
    """Both filters together keep the events matching both."""
    with store.transaction() as tx:
        tx.insert_event(event("m1", "u1", account_id="acme"))
        tx.insert_event(event("m2", "u2", account_id="acme"))
        tx.insert_event(event("m3", "u1", account_id="globex"))
        assert seqs(tx.events(user_ids=["u1"], account_id="acme")) == ["m1"]


def test_events_after_seq(store: Store) -> None:
    """events(after_seq=n) starts after seq n."""
    with store.transaction() as tx:
        records = [tx.insert_event(event(f"m{i}")) for i in range(4)]
        second = records[1]
        assert second is not None
        assert seqs(tx.events(after_seq=second.seq)) == ["m2", "m3"]


def test_events_limit(store: Store) -> None:
    """events(limit=n) yields the first n matching events."""
    with store.transaction() as tx:
        for i in range(5):
            tx.insert_event(event(f"m{i}", "u1" if i % 2 else "u2"))
        assert seqs(tx.events(limit=2)) == ["m0", "m1"]
        assert seqs(tx.events(user_ids=["u2"], limit=2)) == ["m0", "m2"]


def test_events_of_a_long_log(store: Store) -> None:
    """events() yields every event of a log longer than any page, in order."""
    with store.transaction() as tx:
        for i in range(2345):
            tx.insert_event(event(f"m{i:05}", "u1" if i % 3 else "u2"))
    with store.transaction() as tx:
        assert seqs(tx.events()) == [f"m{i:05}" for i in range(2345)]
        assert seqs(tx.events(limit=1500)) == [f"m{i:05}" for i in range(1500)]
        assert len(list(tx.events(user_ids=["u2"]))) == 782


@pytest.mark.parametrize("existing", [10, 2345])
def test_events_inserted_while_iterating_are_not_returned(store: Store, existing: int) -> None:
    """events() yields the log as it was when iteration began (one page or several)."""
    with store.transaction() as tx:
        for i in range(existing):
            tx.insert_event(event(f"m{i:05}", "u1"))
    with store.transaction() as tx:
        seen = []
        for n, record in enumerate(tx.events(user_ids=["u1"])):
            seen.append(record.message_id)
            if n > existing:  # a store that returns late ones would go on forever
                break
            tx.insert_event(event(f"late{n:05}", "u1"))
        assert seen == [f"m{i:05}" for i in range(existing)]


def test_recent_events_newest_first(store: Store) -> None:
    """recent_events orders by timestamp then seq, newest first, and limits."""
    with store.transaction() as tx:
        tx.insert_event(event("a", "u1", timestamp=at(10)))
        tx.insert_event(event("b", "u2", timestamp=at(30)))
        tx.insert_event(event("c", "u1", timestamp=at(30)))
        tx.insert_event(event("d", "u3", timestamp=at(40)))
        tx.insert_event(event("e", "u1", timestamp=at(20)))
        assert seqs(tx.recent_events(["u1", "u2"], 10)) == ["c", "b", "e", "a"]
        assert seqs(tx.recent_events(["u1", "u2"], 2)) == ["c", "b"]


def test_properties_round_trip(store: Store) -> None:
    """Nested JSON properties come back equal."""
    properties = {
        "path": "/pricing",
        "n": 3,
        "x": 1.5,
        "ok": True,
        "none": None,
        "tags": ["a", "é", "日本"],
        "nested": {"deep": {"list": [1, {"k": "v"}]}},
    }
    with store.transaction() as tx:
        tx.insert_event(event("m1", properties=properties))
    with store.transaction() as tx:
        assert next(tx.events()).properties == properties


# -- identity --------------------------------------------------------------------------


def test_resolve_without_alias_is_identity(store: Store) -> None:
    """An id with no alias resolves to itself."""
    with store.transaction() as tx:
        assert tx.resolve("u1") == "u1"
        assert tx.aliases_of("u1") == []


def test_set_alias(store: Store) -> None:
    """An aliased id resolves to its target, which lists it."""
    with store.transaction() as tx:
        tx.set_alias("anon-1", "u1")
        assert tx.resolve("anon-1") == "u1"
        assert tx.aliases_of("u1") == ["anon-1"]


def test_set_alias_compresses_chains(store: Store) -> None:
    """Aliasing an id moves the ids aliased to it, so every alias points at the final id."""
    with store.transaction() as tx:
        tx.set_alias("a", "b")
        tx.set_alias("x", "b")
        tx.set_alias("b", "c")
        assert tx.resolve("a") == "c"
        assert tx.resolve("x") == "c"
        assert tx.resolve("b") == "c"
        assert tx.aliases_of("c") == ["a", "b", "x"]
        assert tx.aliases_of("b") == []


def test_set_alias_again_retargets(store: Store) -> None:
    """Aliasing an already aliased id points it at the new target."""
    with store.transaction() as tx:
        tx.set_alias("a", "u1")
        tx.set_alias("a", "u2")
        assert tx.resolve("a") == "u2"
        assert tx.aliases_of("u1") == []


def test_traits_are_empty_when_none(store: Store) -> None:
    """A subject with no traits has an empty dict."""
    with store.transaction() as tx:
        assert tx.traits("user", "u1") == {}


def test_set_traits_replaces(store: Store) -> None:
    """set_traits replaces the stored traits (merging is the caller's job)."""
    with store.transaction() as tx:
        tx.set_traits("user", "u1", {"email": "jane@acme.io", "role": "marketing"})
        tx.set_traits("user", "u1", {"role": "admin", "meta": {"x": [1, 2]}})
    with store.transaction() as tx:
        assert tx.traits("user", "u1") == {"role": "admin", "meta": {"x": [1, 2]}}


def test_traits_are_kept_per_kind(store: Store) -> None:
    """A user and an account with the same id have separate traits."""
    with store.transaction() as tx:
        tx.set_traits("user", "same", {"of": "user"})
        tx.set_traits("account", "same", {"of": "account"})
        assert tx.traits("user", "same") == {"of": "user"}
        assert tx.traits("account", "same") == {"of": "account"}


def test_accounts_of(store: Store) -> None:
    """accounts_of lists the accounts the users' events carry."""
    with store.transaction() as tx:
        tx.insert_event(event("m1", "u1", account_id="acme"))
        tx.insert_event(event("m2", "u1", account_id="acme"))
        tx.insert_event(event("m3", "u2", account_id="globex"))
        tx.insert_event(event("m4", "u2"))
        tx.insert_event(event("m5", "u3", account_id="initech"))
        assert tx.accounts_of(["u1", "u2"]) == {"acme", "globex"}
        assert tx.accounts_of(["nobody"]) == set()


def test_users_of(store: Store) -> None:
    """users_of lists the user ids with an event for the account."""
    with store.transaction() as tx:
        tx.insert_event(event("m1", "u1", account_id="acme"))
        tx.insert_event(event("m2", "u2", account_id="acme"))
        tx.insert_event(event("m3", "u2", account_id="acme"))
        tx.insert_event(event("m4", "u3", account_id="globex"))
        tx.insert_event(event("m5", "u4"))
        assert tx.users_of("acme") == {"u1", "u2"}
        assert tx.users_of("nobody") == set()


def test_forget_users(store: Store) -> None:
    """forget_users deletes the users' events, user traits and aliases, nothing else."""
    with store.transaction() as tx:
        tx.insert_event(event("m1", "u1", account_id="acme"))
        tx.insert_event(event("m2", "anon", account_id="acme"))
        tx.insert_event(event("m3", "u2", account_id="acme"))
        tx.set_alias("anon", "u1")
        tx.set_alias("u1", "u9")
        tx.set_alias("other", "u2")
        tx.set_traits("user", "u1", {"email": "jane@acme.io"})
        tx.set_traits("user", "u2", {"email": "joe@acme.io"})
        tx.set_traits("account", "acme", {"employees": 600})
        tx.forget_users(["u1", "anon"])
    with store.transaction() as tx:
        assert seqs(tx.events()) == ["m3"]
        assert not tx.has_message("m1")
        assert tx.traits("user", "u1") == {}
        assert tx.traits("user", "u2") == {"email": "joe@acme.io"}
        assert tx.traits("account", "acme") == {"employees": 600}
        assert tx.resolve("anon") == "anon"
        assert tx.resolve("u1") == "u1"
        assert tx.aliases_of("u9") == []
        assert tx.resolve("other") == "u2"
        assert tx.users_of("acme") == {"u2"}


def test_forgotten_message_id_can_be_stored_again(store: Store) -> None:
    """After forget_users, the deleted events' message ids are free again."""
    with store.transaction() as tx:
        tx.insert_event(event("m1", "u1"))
        tx.forget_users(["u1"])
        assert tx.insert_event(event("m1", "u1")) is not None


# -- derived state ---------------------------------------------------------------------


def test_load_missing_state(store: Store) -> None:
    """load_state is None for a subject without state."""
    with store.transaction() as tx:
        assert tx.load_state("m", "user", "u1") is None


def test_save_and_load_state(store: Store) -> None:
    """A saved state loads back equal, due time included."""
    records = [
        StateRecord("m", "user", "u1", '{"count": 3}', due_at=at(3600)),
        StateRecord("m", "account", "acme", "{}"),
    ]
    with store.transaction() as tx:
        for record in records:
            tx.save_state(record)
    with store.transaction() as tx:
        assert tx.load_state("m", "user", "u1") == records[0]
        assert tx.load_state("m", "account", "acme") == records[1]
        assert tx.load_state("m", "account", "u1") is None
        assert tx.load_state("other", "user", "u1") is None


def test_save_state_replaces(store: Store) -> None:
    """Saving a subject's state again replaces it."""
    with store.transaction() as tx:
        tx.save_state(StateRecord("m", "user", "u1", "old", due_at=T0_US))
        tx.save_state(StateRecord("m", "user", "u1", "new"))
        assert tx.load_state("m", "user", "u1") == StateRecord("m", "user", "u1", "new")
        assert tx.count_subjects("m", "user") == 1


def test_delete_state(store: Store) -> None:
    """delete_state forgets one subject's state, and ignores a missing one."""
    with store.transaction() as tx:
        tx.save_state(StateRecord("m", "user", "u1", "s1"))
        tx.save_state(StateRecord("m", "user", "u2", "s2"))
        tx.delete_state("m", "user", "u1")
        tx.delete_state("m", "user", "nobody")
        assert tx.load_state("m", "user", "u1") is None
        assert tx.load_state("m", "user", "u2") is not None


def test_clear_states(store: Store) -> None:
    """clear_states forgets every state of one model only."""
    with store.transaction() as tx:
        tx.save_state(StateRecord("m", "user", "u1", "s"))
        tx.save_state(StateRecord("m", "account", "acme", "s"))
        tx.save_state(StateRecord("other", "user", "u1", "s"))
        tx.clear_states("m")
        assert tx.count_subjects("m", "user") == 0
        assert tx.count_subjects("m", "account") == 0
        assert tx.load_state("other", "user", "u1") is not None


def test_due_subjects_earliest_first(store: Store) -> None:
    """due_subjects lists subjects due at or before now, by due time, then kind and id."""
    with store.transaction() as tx:
        tx.save_state(StateRecord("m", "user", "late", "s", due_at=at(30)))
        tx.save_state(StateRecord("m", "user", "b", "s", due_at=at(10)))
        tx.save_state(StateRecord("m", "user", "a", "s", due_at=at(10)))
        tx.save_state(StateRecord("m", "account", "z", "s", due_at=at(10)))
        tx.save_state(StateRecord("m", "user", "first", "s", due_at=at(-5)))
        tx.save_state(StateRecord("m", "user", "future", "s", due_at=at(31)))
        tx.save_state(StateRecord("m", "user", "never", "s"))
        tx.save_state(StateRecord("other", "user", "x", "s", due_at=at(0)))
        assert tx.due_subjects("m", at(30), 100) == [
            ("user", "first"),
            ("account", "z"),
            ("user", "a"),
            ("user", "b"),
            ("user", "late"),
        ]


def test_due_subjects_limit(store: Store) -> None:
    """due_subjects returns at most ``limit`` subjects, the earliest."""
    with store.transaction() as tx:
        for i in range(5):
            tx.save_state(StateRecord("m", "user", f"u{i}", "s", due_at=at(10 - i)))
        assert tx.due_subjects("m", at(100), 2) == [("user", "u4"), ("user", "u3")]


def test_count_subjects(store: Store) -> None:
    """count_subjects counts states of one model and kind."""
    with store.transaction() as tx:
        for user in ("u1", "u2", "u3"):
            tx.save_state(StateRecord("m", "user", user, "s"))
        tx.save_state(StateRecord("m", "account", "acme", "s"))
        tx.save_state(StateRecord("other", "user", "u1", "s"))
        assert tx.count_subjects("m", "user") == 3
        assert tx.count_subjects("m", "account") == 1
        assert tx.count_subjects("nope", "user") == 0


# -- ranked scores -------------------------------------------------------------------------


def test_top_ranks_highest_first_ties_by_subject(store: Store) -> None:
    """top_ranks lists the highest values first, ties in subject order, at most n."""
    with store.transaction() as tx:
        for sid, value in [("u1", 10.0), ("u2", 30.5), ("u3", 10.0), ("u4", -5.0), ("u0", 10.0)]:
            tx.save_ranks("m", "user", sid, [Rank("behavior", value)])
    with store.transaction() as tx:
        assert tx.top_ranks("m", "user", "behavior", 4) == [
            ("u2", 30.5),
            ("u0", 10.0),
            ("u1", 10.0),
            ("u3", 10.0),
        ]
        assert tx.top_ranks("m", "user", "behavior", 100)[-1] == ("u4", -5.0)


def test_ranks_are_kept_per_model_kind_and_score(store: Store) -> None:
    """A rank belongs to one model, kind and score; saving one again replaces it."""
    with store.transaction() as tx:
        tx.save_ranks("m", "user", "u1", [Rank("behavior", 1.0), Rank("fit", 2.0)])
        tx.save_ranks("m", "account", "u1", [Rank("behavior", 3.0)])
        tx.save_ranks("other", "user", "u1", [Rank("behavior", 4.0)])
        tx.save_ranks("m", "user", "u1", [Rank("behavior", 5.0)])
    with store.transaction() as tx:
        assert tx.top_ranks("m", "user", "behavior", 10) == [("u1", 5.0)]
        assert tx.top_ranks("m", "user", "fit", 10) == [("u1", 2.0)]
        assert tx.top_ranks("m", "account", "behavior", 10) == [("u1", 3.0)]
        assert tx.top_ranks("other", "user", "behavior", 10) == [("u1", 4.0)]
        assert tx.top_ranks("m", "user", "tev", 10) == []


def test_stale_ranks_are_those_whose_time_has_come(store: Store) -> None:
    """stale_ranks lists the subjects whose changes_at is at or before now, earliest first;
    a rank time alone never changes is never stale."""
    with store.transaction() as tx:
        tx.save_ranks("m", "user", "u1", [Rank("behavior", 1.0, at(20))])
        tx.save_ranks("m", "user", "u2", [Rank("behavior", 1.0, at(10))])
        tx.save_ranks("m", "user", "u3", [Rank("behavior", 1.0, at(30))])
        tx.save_ranks("m", "user", "u4", [Rank("behavior", 1.0)])
        tx.save_ranks("m", "user", "u5", [Rank("fit", 1.0, at(0))])
    with store.transaction() as tx:
        assert tx.stale_ranks("m", "user", "behavior", at(20), 10) == ["u2", "u1"]
        assert tx.stale_ranks("m", "user", "behavior", at(99), 2) == ["u2", "u1"]
        assert tx.stale_ranks("m", "user", "behavior", at(9), 10) == []
        tx.save_ranks("m", "user", "u2", [Rank("behavior", 2.0, at(40))])
        assert tx.stale_ranks("m", "user", "behavior", at(30), 10) == ["u1", "u3"]


def test_save_ranks_keeps_a_time_that_is_early_enough(store: Store) -> None:
    """With ``at``, a stored rank of the same value whose time is still after ``at`` and not
    after the new one is kept; a new value, an earlier time or a time that has come is written."""
    with store.transaction() as tx:
        for sid in ("keep", "value", "earlier", "come", "never"):
            tx.save_ranks("m", "user", sid, [Rank("b", 1.0, at(20))])
        tx.save_ranks("m", "user", "keep", [Rank("b", 1.0, at(40))], at=at(10))
        tx.save_ranks("m", "user", "value", [Rank("b", 2.0, at(40))], at=at(10))
        tx.save_ranks("m", "user", "earlier", [Rank("b", 1.0, at(10))], at=at(0))
        tx.save_ranks("m", "user", "come", [Rank("b", 1.0, at(40))], at=at(20))
        tx.save_ranks("m", "user", "never", [Rank("b", 1.0, None)], at=at(10))
    with store.transaction() as tx:
        values = dict(tx.top_ranks("m", "user", "b", 10))
        # each subject's stored time: the first of these at which it is stale
        stale = {t: tx.stale_ranks("m", "user", "b", at(t), 10) for t in (10, 20, 40)}
    first = {sid: min(t for t, sids in stale.items() if sid in sids) for sid in values}
    assert values == {"keep": 1.0, "value": 2.0, "earlier": 1.0, "come": 1.0, "never": 1.0}
    assert first == {"keep": 20, "value": 40, "earlier": 10, "come": 40, "never": 20}


def test_deleting_a_state_deletes_its_ranks(store: Store) -> None:
    """delete_state and clear_states take the subjects' ranks with them (theirs only)."""
    with store.transaction() as tx:
        for sid in ("u1", "u2"):
            tx.save_state(StateRecord("m", "user", sid, "s"))
            tx.save_ranks("m", "user", sid, [Rank("behavior", 1.0), Rank("fit", 1.0)])
        tx.save_ranks("m", "account", "u1", [Rank("behavior", 1.0)])
        tx.save_ranks("other", "user", "u1", [Rank("behavior", 1.0)])
        tx.delete_state("m", "user", "u1")
        assert tx.top_ranks("m", "user", "behavior", 10) == [("u2", 1.0)]
        assert tx.top_ranks("m", "user", "fit", 10) == [("u2", 1.0)]
        assert tx.top_ranks("m", "account", "behavior", 10) == [("u1", 1.0)]
        tx.clear_states("m")
        assert tx.top_ranks("m", "user", "behavior", 10) == []
        assert tx.top_ranks("m", "account", "behavior", 10) == []
        assert tx.top_ranks("other", "user", "behavior", 10) == [("u1", 1.0)]


# -- nudges ----------------------------------------------------------------------------------


def test_open_nudge_round_trip(store: Store) -> None:
    """An opened nudge reads back equal: payload, times (to the microsecond), model, play."""
    record = NudgeRecord(
        "u1",
        "upgrade",
        {"title": "Near your limit", "rows": [1, 2.5], "ok": True, "x": None},
        T0_US,
        at(3600),
        model="m",
        play="upgrade_nudge",
    )
    bare = NudgeRecord("u1", "tour", None, at(1))
    with store.transaction() as tx:
        assert tx.open_nudge(record, T0_US) is True
        assert tx.open_nudge(bare, T0_US) is True
    with store.transaction() as tx:
        assert tx.nudges("u1", T0_US) == [record, bare]
        assert tx.nudges("u2", T0_US) == []


def test_one_open_nudge_per_user_and_key(store: Store) -> None:
    """open_nudge refuses a key the user has open (even with another payload), not another
    user's or another key."""
    with store.transaction() as tx:
        assert tx.open_nudge(nudge("u1", "upgrade"), T0_US) is True
        assert tx.open_nudge(nudge("u1", "upgrade", payload={"other": 1}), at(1)) is False
        assert tx.open_nudge(nudge("u2", "upgrade"), T0_US) is True
        assert tx.open_nudge(nudge("u1", "tour"), T0_US) is True
    with store.transaction() as tx:
        assert [n.payload for n in tx.nudges("u1", at(1))] == [
            {"title": "upgrade for u1"},
            {"title": "tour for u1"},
        ]


def test_nudges_are_oldest_first(store: Store) -> None:
    """nudges() lists by creation time, then in the order they were opened."""
    with store.transaction() as tx:
        tx.open_nudge(nudge(key="c", created_at=at(5)), at(5))
        tx.open_nudge(nudge(key="a", created_at=at(1)), at(5))
        tx.open_nudge(nudge(key="b", created_at=at(5)), at(5))
    with store.transaction() as tx:
        assert [n.key for n in tx.nudges("u1", at(5))] == ["a", "c", "b"]


def test_a_nudge_past_until_is_not_listed_and_its_key_opens_again(store: Store) -> None:
    """At its ``until`` a nudge stops being listed, and opening its key opens a new one."""
    with store.transaction() as tx:
        tx.open_nudge(nudge(until=at(10)), T0_US)
    with store.transaction() as tx:
        assert [n.until for n in tx.nudges("u1", at(9))] == [at(10)]
        assert tx.nudges("u1", at(10)) == []
        assert tx.open_nudge(nudge(until=at(20)), at(9)) is False  # still open at 9
        assert tx.open_nudge(nudge(created_at=at(10), until=at(30)), at(10)) is True
        assert [n.until for n in tx.nudges("u1", at(10))] == [at(30)]


def test_marking_a_nudge(store: Store) -> None:
    """seen sets seen_at once and keeps it open; clicked and dismissed close it."""
    with store.transaction() as tx:
        tx.open_nudge(nudge(key="a"), T0_US)
        tx.open_nudge(nudge(key="b"), T0_US)
        tx.open_nudge(nudge(key="c"), T0_US)
        assert tx.mark_nudge("u1", "a", "seen", at(1)) is True
        assert tx.mark_nudge("u1", "a", "seen", at(2)) is False  # seen already
        assert tx.mark_nudge("u1", "b", "clicked", at(3)) is True
        assert tx.mark_nudge("u1", "a", "dismissed", at(4)) is True
    with store.transaction() as tx:
        assert [(n.key, n.seen_at) for n in tx.nudges("u1", at(5))] == [("c", None)]
        assert tx.mark_nudge("u1", "b", "dismissed", at(5)) is False  # closed already
        assert tx.mark_nudge("u1", "b", "seen", at(5)) is False
        assert tx.mark_nudge("u1", "zzz", "seen", at(5)) is None  # never opened
        assert tx.mark_nudge("u2", "c", "seen", at(5)) is None  # another user's key
        assert tx.open_nudge(nudge(key="b"), at(5)) is True  # closed: the key opens again
        assert [n.key for n in tx.nudges("u1", at(5))] == ["c", "b"]


def test_a_seen_nudge_keeps_its_seen_at(store: Store) -> None:
    """seen_at is the first mark's time; closing a nudge never seen sets it too."""
    with store.transaction() as tx:
        tx.open_nudge(nudge(key="a"), T0_US)
        tx.mark_nudge("u1", "a", "seen", at(1))
        tx.mark_nudge("u1", "a", "seen", at(2))
        assert [n.seen_at for n in tx.nudges("u1", at(3))] == [at(1)]


def test_forget_users_removes_their_nudges(store: Store) -> None:
    """forget_users deletes every nudge of the users, open or closed; others stay."""
    with store.transaction() as tx:
        tx.open_nudge(nudge("u1", "a"), T0_US)
        tx.open_nudge(nudge("u1", "b"), T0_US)
        tx.mark_nudge("u1", "b", "clicked", at(1))
        tx.open_nudge(nudge("u2", "a"), T0_US)
        tx.forget_users(["u1"])
    with store.transaction() as tx:
        assert tx.nudges("u1", at(2)) == []
        assert tx.mark_nudge("u1", "b", "seen", at(2)) is None  # the closed one went too
        assert [n.user_id for n in tx.nudges("u2", at(2))] == ["u2"]


# -- qualifications ------------------------------------------------------------------------


def test_qualification_is_unique_per_round(store: Store) -> None:
    """A second record for the same (model, kind, subject, round) is refused and not stored."""
    with store.transaction() as tx:
        assert tx.insert_qualification(qualification_record("u1", fingerprint="f1"))
        assert not tx.insert_qualification(qualification_record("u1", fingerprint="f2"))
        assert [q.fingerprint for q in tx.qualifications("m")] == ["f1"]


def test_qualification_rounds_models_and_kinds_are_distinct(store: Store) -> None:
    """Another round, model, kind or subject is a different qualification."""
    with store.transaction() as tx:
        assert tx.insert_qualification(qualification_record("u1", 0))
        assert tx.insert_qualification(qualification_record("u1", 1))
        assert tx.insert_qualification(qualification_record("u1", 0, model="m2"))
        assert tx.insert_qualification(qualification_record("u1", 0, kind="pqa"))
        assert tx.insert_qualification(qualification_record("u2", 0))


def test_qualification_round_trip(store: Store) -> None:
    """A stored qualification record reads back equal."""
    record = attrs.evolve(qualification_record("u1"), disqualified_at=at(120))
    with store.transaction() as tx:
        tx.insert_qualification(record)
    with store.transaction() as tx:
        assert list(tx.qualifications("m")) == [record]


def test_latest_qualification(store: Store) -> None:
    """latest_qualification is the subject's highest round under that model and kind."""
    with store.transaction() as tx:
        assert tx.latest_qualification("m", "pql", "u1") is None
        for round in (0, 2, 1):
            tx.insert_qualification(qualification_record("u1", round))
        tx.insert_qualification(qualification_record("u1", 5, model="m2"))
        tx.insert_qualification(qualification_record("u1", 6, kind="pqa"))
        latest = tx.latest_qualification("m", "pql", "u1")
        assert latest is not None
        assert latest.round == 2
        assert tx.latest_qualification("m", "pql", "u2") is None


def test_set_disqualified(store: Store) -> None:
    """set_disqualified records when the qualification's rule turned false."""
    with store.transaction() as tx:
        tx.insert_qualification(qualification_record("u1", 0))
        tx.insert_qualification(qualification_record("u2", 0))
        tx.set_disqualified("m:pql:u1:0", at(500))
        tx.set_disqualified("unknown", at(500))
    with store.transaction() as tx:
        u1 = tx.latest_qualification("m", "pql", "u1")
        u2 = tx.latest_qualification("m", "pql", "u2")
        assert u1 is not None
        assert u1.disqualified_at == at(500)
        assert u2 is not None
        assert u2.disqualified_at is None


def test_qualifications_of_one_model(store: Store) -> None:
    """qualifications(model) yields that model's records only."""
    with store.transaction() as tx:
        tx.insert_qualification(qualification_record("u1"))
        tx.insert_qualification(qualification_record("u2"))
        tx.insert_qualification(qualification_record("u3", model="m2"))
        assert sorted(q.subject_id for q in tx.qualifications("m")) == ["u1", "u2"]
        assert [q.subject_id for q in tx.qualifications("m2")] == ["u3"]


def listed(
    store: Store, *, kinds: tuple[str, ...] = ("pql", "pqa"), **options: Any
) -> list[tuple[str, str | None]]:
    """recent_qualifications as (record id, payload id or None), in the order given."""
    options.setdefault("limit", 100)
    with store.transaction() as tx:
        page = tx.recent_qualifications("m", kinds=kinds, **options)
    return [(record.id, None if q is None else q.id) for record, q in page]


def test_recent_qualifications_newest_first_ties_by_id(store: Store) -> None:
    """Records come by qualified_at, latest first, then by id (both descending)."""
    with store.transaction() as tx:
        for subject, seconds in [("b", 10), ("a", 30), ("c", 30), ("d", 20)]:
            tx.insert_qualification(
                attrs.evolve(qualification_record(subject), qualified_at=at(seconds))
            )
    assert [i for i, _ in listed(store)] == ["m:pql:c:0", "m:pql:a:0", "m:pql:d:0", "m:pql:b:0"]


def test_recent_qualifications_filters(store: Store) -> None:
    """Only the model's records of the kinds asked, qualified at or after ``since``."""
    with store.transaction() as tx:
        tx.insert_qualification(attrs.evolve(qualification_record("u1"), qualified_at=at(10)))
        tx.insert_qualification(attrs.evolve(qualification_record("u2"), qualified_at=at(20)))
        tx.insert_qualification(qualification_record("acme", kind="pqa"))
        tx.insert_qualification(qualification_record("u3", model="m2"))
    assert [i for i, _ in listed(store, kinds=("pqa",))] == ["m:pqa:acme:0"]
    assert [i for i, _ in listed(store, kinds=("pql",))] == ["m:pql:u2:0", "m:pql:u1:0"]
    assert [i for i, _ in listed(store, kinds=("pql",), since=at(20))] == ["m:pql:u2:0"]
    assert listed(store, kinds=("play",)) == []
    assert len(listed(store, limit=2)) == 2


def test_recent_qualifications_pages_with_a_cursor(store: Store) -> None:
    """``before=(at, id)`` starts after that record, through ties at the same time."""
    with store.transaction() as tx:
        for i in range(7):
            tx.insert_qualification(
                attrs.evolve(qualification_record(f"u{i}"), qualified_at=at(i // 3))
            )
    everything = [i for i, _ in listed(store)]
    pages: list[str] = []
    cursor: tuple[datetime, str] | None = None
    while True:
        with store.transaction() as tx:
            page = tx.recent_qualifications("m", kinds=("pql",), before=cursor, limit=2)
        pages += [record.id for record, _ in page]
        if len(page) < 2:
            break
        cursor = (page[-1][0].qualified_at, page[-1][0].id)
    assert pages == everything
    assert len(set(pages)) == 7


def test_recent_qualifications_carry_their_payload(store: Store) -> None:
    """A record comes with its delivery's payload while the outbox holds it, else None."""
    with store.transaction() as tx:
        tx.insert_qualification(attrs.evolve(qualification_record("u1"), id="q-u1"))
        tx.insert_qualification(attrs.evolve(qualification_record("u2"), id="q-u2"))
        put(tx, "q-u1", subject_id="u1", status="delivered")
    with store.transaction() as tx:
        page = {
            record.id: q for record, q in tx.recent_qualifications("m", kinds=("pql",), limit=9)
        }
    assert page["q-u1"] == payload("u1")
    assert page["q-u2"] is None


def test_find_qualification(store: Store) -> None:
    """find_qualification reads a record by its id, of any model."""
    record = qualification_record("u1", model="m2")
    with store.transaction() as tx:
        tx.insert_qualification(record)
        assert tx.find_qualification(record.id) == record
        assert tx.find_qualification("nope") is None


def test_delete_qualifications(store: Store) -> None:
    """delete_qualifications deletes a subject's records of one kind, and their deliveries."""
    with store.transaction() as tx:
        tx.insert_qualification(qualification_record("u1", 0))
        tx.insert_qualification(qualification_record("u1", 1))
        tx.insert_qualification(qualification_record("u1", 0, model="m2"))
        tx.insert_qualification(qualification_record("u1", 0, kind="pqa"))
        tx.insert_qualification(qualification_record("u2", 0))
        put(tx, "d1", subject_id="u1")
        put(tx, "d2", kind="disqualified", subject_id="u1")
        put(tx, "d3", kind="pqa", subject_id="u1")
        put(tx, "d4", ("cb", "other"), subject_id="u2")
        put(tx, "d5", (), subject_id="u1")
        tx.delete_qualifications("u1", "pql")
    with store.transaction() as tx:
        assert tx.latest_qualification("m", "pql", "u1") is None
        assert tx.latest_qualification("m2", "pql", "u1") is None
        assert tx.latest_qualification("m", "pqa", "u1") is not None
        assert tx.latest_qualification("m", "pql", "u2") is not None
        assert [d.id for d in tx.deliveries("pending")] == ["d3", "d4", "d4"]


# -- outbox --------------------------------------------------------------------------


def test_delivery_round_trip(store: Store) -> None:
    """An enqueued delivery reads back as one record per callback, its Qualification included."""
    record = delivery("d1", next_attempt_at=at(5))
    with store.transaction() as tx:
        tx.enqueue(record, ["a", "b"], now=at(1))
    with store.transaction() as tx:
        assert tx.deliveries("pending") == [
            attrs.evolve(record, callback="a"),
            attrs.evolve(record, callback="b"),
        ]


def test_a_delivery_no_callback_took_is_pending_with_no_callback(store: Store) -> None:
    """Enqueued with no callback (none registered anywhere): one record, callback None."""
    with store.transaction() as tx:
        tx.enqueue(delivery("d1", next_attempt_at=at(2)), now=at(3))
        assert tx.deliveries("pending") == [delivery("d1", next_attempt_at=at(2))]
        assert tx.deliveries("pending", callback="cb") == []
        assert tx.claim_due(at(9), at(0), at(30), ["pql:cb"], 10) == []


def test_enqueue_is_idempotent(store: Store) -> None:
    """Enqueueing an existing delivery id again changes nothing."""
    with store.transaction() as tx:
        put(tx, "d1")
        tx.enqueue(delivery("d1", attempts=5, status="dead"), ["cb", "other"], now=T0_US)
        assert [(d.id, d.callback, d.attempts) for d in tx.deliveries("pending")] == [
            ("d1", "cb", 0)
        ]
        assert tx.deliveries("dead") == []


def test_deliveries_by_status_oldest_first(store: Store) -> None:
    """deliveries(status) lists that status's records in enqueue order."""
    with store.transaction() as tx:
        put(tx, "b")
        put(tx, "a", status="dead")
        put(tx, "c")
        put(tx, "0", status="delivered")
        assert [d.id for d in tx.deliveries("pending")] == ["b", "c"]
        assert [d.id for d in tx.deliveries("dead")] == ["a"]
        assert [d.id for d in tx.deliveries("delivered")] == ["0"]


def test_enqueue_adds_records_for_registered_callbacks(store: Store) -> None:
    """enqueue gives a record to each callback register_callback recorded for the model and
    kind, seen at or after known_since, as well as to the callbacks it is given."""
    with store.transaction() as tx:
        assert tx.register_callback("m", "pql", "slack", at(10), since=at(0))
        assert tx.register_callback("m", "pql", "stale", at(1), since=at(0))
        assert tx.register_callback("m", "pqa", "accounts", at(10), since=at(0))
        assert tx.register_callback("other", "pql", "elsewhere", at(10), since=at(0))
        tx.enqueue(delivery("d1"), ["local", "slack"], now=at(10), known_since=at(5))
        records = tx.deliveries("pending")
    assert sorted(d.callback or "" for d in records) == ["local", "slack"]


def test_register_callback_gives_it_the_open_deliveries(store: Store) -> None:
    """A callback registered later gets a record of each open delivery of its model and kind
    enqueued since ``since``, due at once; one it has already is left as it is."""
    with store.transaction() as tx:
        put(tx, "old", (), now=at(0))
        put(tx, "d1", (), now=at(10))
        put(tx, "d2", ("slack",), now=at(10), status="delivered", attempts=1)
        put(tx, "d3", (), kind="pqa", now=at(10))
        tx.register_callback("m", "pql", "slack", at(20), since=at(5))
        slack = tx.deliveries("pending", callback="slack")
        assert [(d.id, d.next_attempt_at) for d in slack] == [("d1", at(20))]
        assert [d.id for d in tx.deliveries("delivered", callback="slack")] == ["d2"]
        assert [(d.id, d.callback) for d in tx.deliveries("pending")] == [
            ("old", None),
            ("d1", "slack"),
            ("d3", None),
        ]


def test_claim_due_leases_due_deliveries(store: Store) -> None:
    """claim_due returns due pending records and records their lease."""
    with store.transaction() as tx:
        put(tx, "d1")
        put(tx, "d2", next_attempt_at=at(10))
    with store.transaction() as tx:
        claimed = tx.claim_due(at(10), at(0), at(30), ["pql:cb"], 10)
        assert [(d.id, d.callback, d.lease_until) for d in claimed] == [
            ("d1", "cb", at(30)),
            ("d2", "cb", at(30)),
        ]
        assert [d.lease_until for d in tx.deliveries("pending")] == [at(30), at(30)]


def test_claim_due_only_given_callbacks(store: Store) -> None:
    """claim_due claims records of the given "kind:name" callbacks only, each on its own."""
    with store.transaction() as tx:
        put(tx, "d1", ("a", "b"))
        put(tx, "d2", ("a",), kind="pqa")
        put(tx, "d3", ("a",), kind="disqualified")
        claimed = tx.claim_due(at(0), at(0), at(30), ["pql:b", "pqa:a"], 10)
        assert [(d.id, d.kind, d.callback) for d in claimed] == [
            ("d1", "pql", "b"),
            ("d2", "pqa", "a"),
        ]
        assert tx.claim_due(at(0), at(0), at(30), [], 10) == []
        assert [d.id for d in tx.claim_due(at(0), at(0), at(30), ["pql:a"], 10)] == ["d1"]


def test_claim_due_only_given_ids(store: Store) -> None:
    """With ids, claim_due claims only those deliveries' records."""
    with store.transaction() as tx:
        put(tx, "d1")
        put(tx, "d2")
        claimed = tx.claim_due(at(0), at(0), at(30), ["pql:cb"], 10, model="m", ids=["d2"])
        assert [d.id for d in claimed] == ["d2"]


def test_replace_qualification_rewrites_the_payload(store: Store) -> None:
    """replace_qualification swaps a delivery's payload and keeps everything else."""
    with store.transaction() as tx:
        put(tx, "d1", attempts=2)
        (before,) = tx.deliveries("pending")
        changed = attrs.evolve(before.qualification, context={"events": []})
        tx.replace_qualification("d1", changed)
        (after,) = tx.deliveries("pending")
    assert after.qualification == changed
    assert attrs.evolve(after, qualification=before.qualification) == before


def test_claim_due_counts_the_attempt(store: Store) -> None:
    """Each claim uses up an attempt, so a process dying mid-callback still counts one."""
    with store.transaction() as tx:
        put(tx, "d1", attempts=2)
        assert [d.attempts for d in tx.claim_due(at(0), at(0), at(30), ["pql:cb"], 10)] == [3]
        assert [d.attempts for d in tx.deliveries("pending")] == [3]
        assert [d.attempts for d in tx.claim_due(at(0), at(30), at(60), ["pql:cb"], 10)] == [4]


def test_claim_due_skips_deliveries_not_yet_due(store: Store) -> None:
    """A record whose next attempt is after now is not claimed."""
    with store.transaction() as tx:
        put(tx, "d1", next_attempt_at=at(11))
        assert tx.claim_due(at(10), at(0), at(30), ["pql:cb"], 10) == []


def test_claim_due_skips_leased_deliveries(store: Store) -> None:
    """A leased record is claimed again only once its lease expired (on the wall clock)."""
    with store.transaction() as tx:
        put(tx, "d1")
        assert len(tx.claim_due(at(0), at(0), at(30), ["pql:cb"], 10)) == 1
        assert tx.claim_due(at(100), at(29), at(60), ["pql:cb"], 10) == []
        assert [d.id for d in tx.claim_due(at(0), at(30), at(60), ["pql:cb"], 10)] == ["d1"]


def test_claim_due_deliveries_and_revive_dead_of_one_model(store: Store) -> None:
    """With ``model``, claim_due, deliveries and revive_dead see only that model's records."""
    other = attrs.evolve(payload("u2"), model="other")
    with store.transaction() as tx:
        put(tx, "d1")
        tx.enqueue(DeliveryRecord("d2", "pql", "u2", other), ["cb"], now=T0_US)
        tx.enqueue(DeliveryRecord("d3", "pql", "u3", other), ["cb"], now=T0_US)
        tx.finish_delivery(
            "d3", "cb", status="dead", attempts=1, next_attempt_at=None, last_error=None
        )
        assert [d.id for d in tx.deliveries("pending", model="other")] == ["d2"]
        assert [d.id for d in tx.deliveries("pending", model="m")] == ["d1"]
        assert [d.id for d in tx.deliveries("pending")] == ["d1", "d2"]
        assert tx.revive_dead(at(0), model="m") == 0
        claimed = tx.claim_due(at(0), at(0), at(30), ["pql:cb"], 10, model="other")
        assert [d.id for d in claimed] == ["d2"]
        assert tx.claim_due(at(0), at(0), at(30), ["pql:cb"], 10, model="third") == []
        assert tx.revive_dead(at(0), model="other") == 1
        assert [d.model for d in tx.claim_due(at(0), at(0), at(30), ["pql:cb"], 10)] == [
            "m",
            "other",
        ]


def test_claim_due_limit_oldest_first(store: Store) -> None:
    """claim_due claims at most ``limit`` records, the oldest enqueued."""
    with store.transaction() as tx:
        for name in ("c", "a", "b"):
            put(tx, name)
        assert [d.id for d in tx.claim_due(at(0), at(0), at(30), ["pql:cb"], 2)] == ["c", "a"]


def test_claim_due_skips_finished_deliveries(store: Store) -> None:
    """Delivered and dead records are never claimed."""
    with store.transaction() as tx:
        put(tx, "d1", status="delivered")
        put(tx, "d2", status="dead")
        assert tx.claim_due(at(0), at(0), at(30), ["pql:cb"], 10) == []


def test_renew_lease_extends_a_claimed_delivery(store: Store) -> None:
    """renew_lease extends the lease of the claim whose attempt count it names, and only that."""
    with store.transaction() as tx:
        put(tx, "d1", ("cb", "other"))
        (claimed,) = tx.claim_due(at(0), at(0), at(30), ["pql:cb"], 10)
        assert tx.renew_lease("d1", "cb", claimed.attempts, at(60))
        assert tx.claim_due(at(0), at(45), at(90), ["pql:cb"], 10) == []  # still leased at 45
        assert not tx.renew_lease("d1", "cb", claimed.attempts + 1, at(500))  # not that claim
        assert not tx.renew_lease("d1", "other", claimed.attempts, at(500))  # not claimed
        assert not tx.renew_lease("unknown", "cb", 1, at(500))
        assert [d.lease_until for d in tx.deliveries("pending")] == [at(60), None]
        tx.finish_delivery(
            "d1", "cb", status="delivered", attempts=1, next_attempt_at=None, last_error=None
        )
        assert not tx.renew_lease("d1", "cb", claimed.attempts, at(500))  # finished


def test_finish_delivery(store: Store) -> None:
    """finish_delivery records one callback's outcome and releases its lease."""
    with store.transaction() as tx:
        put(tx, "d1", ("cb", "other"))
        tx.claim_due(at(0), at(0), at(30), ["pql:cb"], 10)
        tx.finish_delivery(
            "d1", "cb", status="pending", attempts=1, next_attempt_at=at(1), last_error="boom"
        )
        tx.finish_delivery(
            "unknown", "cb", status="dead", attempts=1, next_attempt_at=None, last_error=None
        )
    with store.transaction() as tx:
        [d1, other] = tx.deliveries("pending")
        assert (d1.attempts, d1.next_attempt_at, d1.last_error, d1.lease_until) == (
            1,
            at(1),
            "boom",
            None,
        )
        assert (other.callback, other.attempts) == ("other", 0)
        tx.finish_delivery(
            "d1",
            "cb",
            status="delivered",
            attempts=2,
            next_attempt_at=None,
            last_error=None,
            finished_at=at(7),
        )
        assert [(d.id, d.finished_at) for d in tx.deliveries("delivered")] == [("d1", at(7))]
        assert [d.callback for d in tx.deliveries("pending")] == ["other"]


def test_claim_due_follows_creation_order_through_revivals_and_rollbacks(store: Store) -> None:
    """A revived dead letter is claimed in its place among the pending ones, and a
    rolled-back claim or finish leaves the record claimable as before."""
    with store.transaction() as tx:
        put(tx, "a")
        put(tx, "b", status="dead")
        put(tx, "c")
        tx.finish_delivery(
            "a", "cb", status="delivered", attempts=1, next_attempt_at=None, last_error=None
        )
        tx.revive_dead(at(0))

    def claim_finish_and_fail() -> None:
        with store.transaction() as tx:
            tx.claim_due(at(0), at(0), at(30), ["pql:cb"], 10)
            tx.finish_delivery(
                "c", "cb", status="dead", attempts=1, next_attempt_at=None, last_error=None
            )
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError, match="rolled back"):
        claim_finish_and_fail()
    with store.transaction() as tx:
        assert [d.id for d in tx.claim_due(at(0), at(0), at(30), ["pql:cb"], 10)] == ["b", "c"]


def test_claim_due_order_survives_forgotten_deliveries(store: Store) -> None:
    """Deliveries enqueued after others were deleted (forget) still come after the
    ones enqueued before them, whatever order they turned pending in."""
    with store.transaction() as tx:
        put(tx, "a", subject_id="gone")
        put(tx, "b")
        put(tx, "c", status="dead")
        tx.delete_qualifications("gone", "pql")
        put(tx, "d")
        tx.revive_dead(at(0))  # c turns pending after d
        claimed = tx.claim_due(at(0), at(0), at(30), ["pql:cb"], 10)
        assert [d.id for d in claimed] == ["b", "c", "d"]


def test_revive_dead(store: Store) -> None:
    """revive_dead makes dead records pending again, due now, and counts them."""
    with store.transaction() as tx:
        put(tx, "d1", status="dead", attempts=10, last_error="boom")
        put(tx, "d2", ("cb", "other"), status="dead", attempts=10)
        put(tx, "d3", status="delivered", attempts=1)
        assert tx.revive_dead(at(100), callback="other") == 1
        assert tx.revive_dead(at(100)) == 2
        assert tx.revive_dead(at(100)) == 0
    with store.transaction() as tx:
        revived = tx.deliveries("pending")
        assert [
            (d.id, d.callback, d.attempts, d.next_attempt_at, d.lease_until, d.finished_at)
            for d in revived
        ] == [
            ("d1", "cb", 0, at(100), None, None),
            ("d2", "cb", 0, at(100), None, None),
            ("d2", "other", 0, at(100), None, None),
        ]
        assert [d.id for d in tx.deliveries("delivered")] == ["d3"]


def test_close_deliveries_expires_what_nobody_took(store: Store) -> None:
    """Closing the window of deliveries enqueued before ``before``: records never attempted
    and deliveries no callback took expire; a later callback does not get them."""
    with store.transaction() as tx:
        put(tx, "untaken", (), now=at(0))
        put(tx, "d1", ("done", "never", "failing"), now=at(0))
        put(tx, "late", (), now=at(50))
        tx.finish_delivery(
            "d1", "done", status="delivered", attempts=1, next_attempt_at=None, last_error=None
        )
        tx.finish_delivery(
            "d1", "failing", status="pending", attempts=1, next_attempt_at=at(9), last_error="x"
        )
        assert tx.close_deliveries(at(10), at(20), model="other") == 0
        assert tx.close_deliveries(at(10), at(20), model="m") == 2
        assert tx.close_deliveries(at(10), at(20), model="m") == 0
        expired = tx.deliveries("expired")
        assert [(d.id, d.callback, d.finished_at) for d in expired] == [
            ("untaken", None, at(20)),
            ("d1", "never", at(20)),
        ]
        assert [(d.id, d.callback) for d in tx.deliveries("pending")] == [
            ("d1", "failing"),
            ("late", None),
        ]
        tx.register_callback("m", "pql", "new", at(30), since=at(-100))
        assert [(d.id, d.callback) for d in tx.deliveries("pending", callback="new")] == [
            ("late", "new")
        ]


def test_purge_deliveries_deletes_what_finished_before(store: Store) -> None:
    """purge_deliveries deletes closed deliveries whose records all finished (delivered or
    expired) before ``before``; an open one, a pending or dead record, keeps it."""
    with store.transaction() as tx:
        put(tx, "done", ("a", "b"), status="delivered", attempts=1, now=at(0))
        put(tx, "dead", ("a",), status="dead", attempts=1, now=at(0))
        put(tx, "untaken", (), now=at(0))
        put(tx, "open", ("a",), status="delivered", attempts=1, now=at(40))
        tx.close_deliveries(at(10), at(20), model="m")
        assert tx.purge_deliveries(at(20), model="m") == 0  # finished at 20: not before
        assert tx.purge_deliveries(at(21), model="other") == 0
        assert tx.purge_deliveries(at(21), model="m") == 2
        assert sorted({d.id for s in STATUSES for d in tx.deliveries(s)}) == ["dead", "open"]


def test_reviving_a_migrated_dead_letter_opens_it_to_every_callback(store: Store) -> None:
    """A dead record of callback "*" (migrated, for every callback of its kind) is replaced
    on revival by a record for each callback registered for its model and kind."""
    with store.transaction() as tx:
        put(tx, "d1", ("*",), status="dead", attempts=10, now=at(0))
        assert tx.close_deliveries(at(1), at(1), model="m") == 0  # as migrated: closed
        tx.register_callback("m", "pql", "slack", at(0), since=at(0))
        tx.register_callback("m", "pql", "gone", at(-500), since=at(-500))
        assert [d.callback for d in tx.deliveries("dead")] == ["*"]
        assert tx.revive_dead(at(100), known_since=at(-100)) == 1
        pending = tx.deliveries("pending")
        assert [(d.id, d.callback, d.next_attempt_at) for d in pending] == [
            ("d1", "slack", at(100))
        ]
        tx.register_callback("m", "pql", "later", at(101), since=at(50))  # open again
        assert [d.callback for d in tx.deliveries("pending")] == ["slack", "later"]


# -- metadata ------------------------------------------------------------------------------


def test_meta(store: Store) -> None:
    """set_meta stores a setting that get_meta reads; setting it again replaces it."""
    with store.transaction() as tx:
        assert tx.get_meta("fingerprint:m") is None
        tx.set_meta("fingerprint:m", "f1")
        tx.set_meta("fingerprint:m", "f2")
        tx.set_meta("other", "")
    with store.transaction() as tx:
        assert tx.get_meta("fingerprint:m") == "f2"
        assert tx.get_meta("other") == ""


def test_lock_is_accepted(store: Store) -> None:
    """lock() can be called inside any transaction."""
    with store.transaction() as tx:
        tx.lock(["user:u1", "account:acme"])
        tx.lock([])


# -- datetimes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        T0_US,
        datetime(1970, 1, 1, tzinfo=timezone.utc),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(1, 1, 1, tzinfo=timezone.utc),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
    ],
    ids=["now", "epoch", "before-epoch", "min", "max"],
)
def test_datetimes_round_trip_exactly(store: Store, moment: datetime) -> None:
    """Every stored datetime comes back equal to the microsecond, in UTC."""
    with store.transaction() as tx:
        tx.insert_event(event("m1", timestamp=moment))
        tx.save_state(StateRecord("m", "user", "u1", "s", due_at=moment))
        tx.insert_qualification(
            attrs.evolve(qualification_record(), qualified_at=moment, first_seen=moment)
        )
        tx.enqueue(
            attrs.evolve(
                delivery("d1", next_attempt_at=moment),
                qualification=attrs.evolve(payload(), qualified_at=moment),
            ),
            ["cb"],
            now=moment,
        )
        tx.claim_due(moment, moment, moment, ["pql:cb"], 1)
    with store.transaction() as tx:
        state = tx.load_state("m", "user", "u1")
        qualification = tx.latest_qualification("m", "pql", "u1")
        [pending] = tx.deliveries("pending")
        assert state is not None
        assert qualification is not None
        found = [
            next(tx.events()).timestamp,
            state.due_at,
            qualification.qualified_at,
            qualification.first_seen,
            pending.next_attempt_at,
            pending.lease_until,
            pending.qualification.qualified_at,
        ]
    assert found == [moment] * len(found)
    assert {d.utcoffset() for d in found if d is not None} == {timedelta(0)}


def test_every_store_answers_the_capability_operations(store: Store) -> None:
    """cache_token, try_lock, check_integrity, batch and check_state are declared by every
    store, each with its "cannot" answer where the store lacks the capability; nothing asks
    by getattr."""
    with store.transaction() as tx:
        token = tx.cache_token()
        assert isinstance(token, tuple)
        assert isinstance(token[1], int)
        assert tx.try_lock(["user:u1", "account:acme"]) is True  # nobody else holds them
        assert tx.check_integrity() is None  # a healthy store
        assert tx.batch() is None
        assert tx.check_state("m", "user", "nobody", ABSENT) is None  # holds: no row
    # only a store whose writers run concurrently checks writes at commit instead
    assert isinstance(token[0], Checked) == (type(store).__name__ == "PostgresStore")


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_only_postgres_joins_a_callers_transaction(kind: str, tmp_path: Path) -> None:
    """Store.joined() on a store that cannot join raises ValidationError naming connection
    (PostgresStore's joined() is tested in tests/test_postgres.py)."""
    store: Store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "db")
    with pytest.raises(ValidationError) as info:
        store.joined(object())
    assert info.value.field == "connection"
    store.close()
