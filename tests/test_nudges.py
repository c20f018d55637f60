"""The nudge inbox (API.md section 6): open, list, mark, forget, on every store; one nudge per
user and key however many threads and processes open it at once."""

from __future__ import annotations

import asyncio
import json
import threading
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import pqlkit
from conftest import (
    T0,
    drop_postgres_schemas,
    new_postgres_schema,
    require_postgres,
    worker_context,
)
from pqlkit import Client, Model, Nudge, ValidationError, count, did, signal
from pqlkit.stores import SQLiteStore, Store
from pqlkit.testing import ClientFactory, FrozenClock, recorder

MODEL = Model(
    "nudge-tests",
    signals={
        "activated": did("dashboard_built"),
        # "a user who dismissed the upgrade nudge twice can be left alone"
        "tired_of_upgrade": count("nudge_dismissed", where={"key": "upgrade"}) >= 2,
    },
    scores={"events": count()},
    pql=signal("activated") & ~signal("tired_of_upgrade"),
)

TITLE = {"title": "You're close to your row limit", "cta": "/billing"}


@pytest.fixture(name="client")
def fixture_client(make_client: ClientFactory) -> Client:
    """A client of MODEL on every store, at T0."""
    return make_client(MODEL)


def events_of(store: Store, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    with store.transaction() as tx:
        return [(e.event, e.properties) for e in tx.events(user_ids=[user_id])]


# -- opening and listing ---------------------------------------------------------------------


def test_a_nudge_is_listed_for_its_user(client: Client, clock: FrozenClock) -> None:
    """nudge() opens it (True); nudges() lists it with its payload and times; others see none."""
    assert client.nudge("u1", "upgrade", TITLE, until=timedelta(days=7)) is True
    assert client.nudges("u1") == [
        Nudge("u1", "upgrade", TITLE, T0, until=T0 + timedelta(days=7), seen_at=None, play=None)
    ]
    assert client.nudges("u2") == []


def test_opening_a_key_again_while_open_opens_nothing(client: Client, clock: FrozenClock) -> None:
    """A second nudge() with an open key returns False and keeps the first payload."""
    assert client.nudge("u1", "upgrade", TITLE) is True
    clock.advance(timedelta(hours=1))
    assert client.nudge("u1", "upgrade", {"title": "another"}) is False
    assert [n.payload for n in client.nudges("u1")] == [TITLE]
    assert client.nudge("u2", "upgrade") is True  # per user
    assert client.nudge("u1", "tour") is True  # per key


def test_nudges_are_listed_oldest_first(client: Client, clock: FrozenClock) -> None:
    """Open nudges come oldest first."""
    for key in ("c", "a", "b"):
        client.nudge("u1", key)
        clock.advance(timedelta(minutes=1))
    assert [n.key for n in client.nudges("u1")] == ["c", "a", "b"]


def test_a_nudge_past_until_is_not_shown_and_can_open_again(
    client: Client, clock: FrozenClock
) -> None:
    """At ``until`` it leaves the inbox; the key may then be opened again."""
    client.nudge("u1", "upgrade", TITLE, until=T0 + timedelta(days=2))
    clock.advance(timedelta(days=2) - timedelta(microseconds=1))
    assert [n.key for n in client.nudges("u1")] == ["upgrade"]
    clock.advance(timedelta(microseconds=1))
    assert client.nudges("u1") == []
    assert client.nudge("u1", "upgrade", {"title": "again"}) is True
    assert [n.payload for n in client.nudges("u1")] == [{"title": "again"}]


def test_an_alias_reads_the_users_nudges(client: Client) -> None:
    """Nudges are kept under the user's final id: an alias opens, lists and marks them."""
    client.track("u1", "login")
    client.alias("anon-1", "u1")
    assert client.nudge("anon-1", "upgrade") is True
    assert client.nudge("u1", "upgrade") is False
    assert [n.user_id for n in client.nudges("anon-1")] == ["u1"]
    assert client.mark("anon-1", "upgrade", "clicked") is True
    assert client.nudges("u1") == []


def test_nudges_are_shared_by_clients_of_the_store(store: Store, clock: FrozenClock) -> None:
    """A nudge opened by one client (one worker) is listed and marked by another."""
    with (
        Client(MODEL, store=store, clock=clock) as first,
        Client(MODEL, store=store, clock=clock) as second,
    ):
        first.nudge("u1", "upgrade", TITLE)
        assert [n.key for n in second.nudges("u1")] == ["upgrade"]
        assert second.mark("u1", "upgrade", "dismissed") is True
        assert first.nudges("u1") == []


# -- marks -----------------------------------------------------------------------------------


def test_seen_sets_seen_at_and_keeps_it_open(client: Client, clock: FrozenClock) -> None:
    """ "seen" sets seen_at the first time only; the nudge stays listed."""
    client.nudge("u1", "upgrade", TITLE)
    clock.advance(timedelta(minutes=5))
    assert client.mark("u1", "upgrade", "seen") is True
    clock.advance(timedelta(minutes=5))
    assert client.mark("u1", "upgrade", "seen") is False
    [nudge] = client.nudges("u1")
    assert nudge.seen_at == T0 + timedelta(minutes=5)


@pytest.mark.parametrize("action", ["clicked", "dismissed"])
def test_clicked_and_dismissed_close_it(client: Client, action: Any) -> None:
    """ "clicked" and "dismissed" close the nudge; marking it again changes nothing."""
    client.nudge("u1", "upgrade")
    client.nudge("u1", "tour")
    assert client.mark("u1", "upgrade", action) is True
    assert [n.key for n in client.nudges("u1")] == ["tour"]
    assert client.mark("u1", "upgrade", action) is False  # a double click is harmless
    assert client.mark("u1", "upgrade", "seen") is False


def test_each_mark_is_an_event_with_its_key(client: Client, store: Store) -> None:
    """A mark that changes the nudge is recorded as nudge_<action> with property key."""
    client.nudge("u1", "upgrade")
    client.mark("u1", "upgrade", "seen")
    client.mark("u1", "upgrade", "seen")  # changes nothing: no event
    client.mark("u1", "upgrade", "clicked")
    assert events_of(store, "u1") == [
        ("nudge_seen", {"key": "upgrade"}),
        ("nudge_clicked", {"key": "upgrade"}),
    ]
    assert client.scores("u1")["events"] == 2


def test_the_model_can_read_dismissals(client: Client) -> None:
    """A signal counting dismissals of one key: dismissed twice, the user is left alone
    (the rule that reads it does not fire)."""
    rec = recorder(client)
    for _ in range(2):
        client.nudge("u1", "upgrade")
        client.mark("u1", "upgrade", "dismissed")
    client.nudge("u1", "tour")
    client.mark("u1", "tour", "dismissed")  # another key: not counted
    assert client.signals("u1")["tired_of_upgrade"] is True
    client.track("u1", "dashboard_built")
    client.track("u2", "dashboard_built")
    assert [q.subject_id for q in rec.pql] == ["u2"]


def test_a_mark_can_fire(client: Client) -> None:
    """A mark's event is evaluated like any other: one that makes the rule true fires."""
    model = Model("mark-fires", pql=did("nudge_clicked", where={"key": "upgrade"}))
    with Client(model, store=client.store, clock=client.clock, dispatch="inline") as other:
        rec = recorder(other)
        other.nudge("u1", "upgrade")
        other.mark("u1", "upgrade", "clicked")
        assert [q.subject_id for q in rec.pql] == ["u1"]


# -- forget ----------------------------------------------------------------------------------


def test_forget_removes_the_users_nudges(client: Client) -> None:
    """forget(user) deletes the user's nudges, open and closed (and those of its aliases)."""
    client.track("u1", "login")
    client.nudge("u1", "upgrade")
    client.nudge("u1", "tour")
    client.mark("u1", "tour", "clicked")
    client.nudge("u2", "upgrade")
    client.forget("u1")
    assert client.nudges("u1") == []
    with pytest.raises(ValidationError) as info:
        client.mark("u1", "tour", "seen")  # the closed one is gone too
    assert info.value.field == "key"
    assert [n.user_id for n in client.nudges("u2")] == ["u2"]


# -- bad input -------------------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    ("args", "kwargs", "field", "reason"),
    [
        (("", "upgrade"), {}, "user_id", "empty"),
        ((None, "upgrade"), {}, "user_id", "must be a str"),
        (("u1", ""), {}, "key", "empty"),
        (("u1", "   "), {}, "key", "empty"),
        (("u1", 7), {}, "key", "must be a str"),
        (
            ("u1", "k", {"when": datetime(2026, 1, 1, tzinfo=timezone.utc)}),
            {},
            "payload.when",
            "JSON",
        ),
        (("u1", "k", {"x": Opaque()}), {}, "payload.x", "JSON"),
        (("u1", "k", {"x": float("nan")}), {}, "payload.x", "finite"),
        (("u1", "k", ["title"]), {}, "payload", "must be a dict"),
        (("u1", "k", "title"), {}, "payload", "must be a dict"),
        (("u1", "k", {"body": "x" * 16_384}), {}, "payload", "limit is 16384"),
        (("u1", "k"), {"until": datetime(2027, 1, 1)}, "until", "timezone-aware"),
        (("u1", "k"), {"until": T0}, "until", "not after now"),
        (("u1", "k"), {"until": T0 - timedelta(days=1)}, "until", "not after now"),
        (("u1", "k"), {"until": timedelta(0)}, "until", "positive"),
        (("u1", "k"), {"until": "7d"}, "until", "datetime or a timedelta"),
    ],
)
def test_bad_nudges_are_refused_and_store_nothing(
    client: Client, args: tuple[Any, ...], kwargs: dict[str, Any], field: str, reason: str
) -> None:
    """Each bad argument raises ValidationError naming its field; nothing is opened."""
    with pytest.raises(ValidationError) as info:
        client.nudge(*args, **kwargs)
    assert info.value.field == field
    assert reason in info.value.reason
    assert client.nudges("u1") == []
    assert client.nudge("u1", "k") is True  # the key was not used up


def test_a_payload_at_the_limit_is_accepted(client: Client) -> None:
    """16 KiB of compact JSON is the limit, inclusive."""
    body = "x" * (16_384 - len('{"b":""}'))
    assert client.nudge("u1", "k", {"b": body}) is True


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("u1", "upgrade", "opened"), "action"),
        (("u1", "upgrade", None), "action"),
        (("u1", "upgrade", ["seen"]), "action"),
        (("u1", "unknown", "seen"), "key"),
        (("u2", "upgrade", "clicked"), "key"),
        (("u1", "", "seen"), "key"),
        (("", "upgrade", "seen"), "user_id"),
    ],
)
def test_bad_marks_are_refused_and_store_nothing(
    client: Client, store: Store, args: tuple[Any, ...], field: str
) -> None:
    """An unknown action or key raises ValidationError naming it; no event, no change."""
    client.nudge("u1", "upgrade")
    with pytest.raises(ValidationError) as info:
        client.mark(*args)
    assert info.value.field == field
    assert events_of(store, "u1") == []
    assert events_of(store, "u2") == []
    assert [(n.key, n.seen_at) for n in client.nudges("u1")] == [("upgrade", None)]


def test_a_closed_client_refuses_nudges(store: Store, clock: FrozenClock) -> None:
    """nudge(), nudges() and mark() on a closed client raise ClientClosedError."""
    client = Client(MODEL, store=store, clock=clock)
    client.close()
    for call in (
        lambda: client.nudge("u1", "k"),
        lambda: client.nudges("u1"),
        lambda: client.mark("u1", "k", "seen"),
    ):
        with pytest.raises(pqlkit.ClientClosedError):
            call()


# -- AsyncClient -----------------------------------------------------------------------------


def test_the_async_client_has_the_inbox(store: Store, clock: FrozenClock) -> None:
    """AsyncClient.nudge, nudges and mark, awaited, do what the Client's do."""

    async def main() -> tuple[bool, list[str], bool, list[Nudge]]:
        async with pqlkit.AsyncClient(MODEL, store=store, clock=clock) as client:
            opened = await client.nudge("u1", "upgrade", TITLE, until=timedelta(days=1))
            keys = [n.key for n in await client.nudges("u1")]
            marked = await client.mark("u1", "upgrade", "dismissed")
            return opened, keys, marked, await client.nudges("u1")

    assert asyncio.run(main()) == (True, ["upgrade"], True, [])


# -- one nudge, however many open it at once ---------------------------------------------------


def test_threads_opening_one_key_open_one_nudge(client: Client) -> None:
    """16 threads of one client open the same key at once: one True, one nudge."""
    barrier = threading.Barrier(16)
    results: list[bool] = []

    def open_it() -> None:
        barrier.wait()
        results.append(client.nudge("u1", "upgrade", TITLE))

    threads = [threading.Thread(target=open_it) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 15 + [True]
    assert [n.key for n in client.nudges("u1")] == ["upgrade"]


USERS = 5
KEYS = 4


def open_in_child(location: str, worker: int, out: str, barrier: Any) -> None:
    """A worker process: its own Client; open every (user, key) once, all at once with the
    other workers (a barrier before each round), and record which opened."""
    try:
        if "#" in location:
            from pqlkit.stores.postgres import PostgresStore

            dsn, schema = location.split("#")
            store: Store = PostgresStore(dsn, schema=schema, max_size=2)
        else:
            store = SQLiteStore(location, timeout=60)
        opened: list[str] = []
        with Client(MODEL, store=store, clock=FrozenClock(T0)) as client:
            for user in range(USERS):
                for key in range(KEYS):
                    barrier.wait(timeout=60)
                    if client.nudge(f"u{user}", f"k{key}", {"by": worker}):
                        opened.append(f"u{user}/k{key}")
        store.close()
        Path(out).write_text(json.dumps(opened))
    except BaseException:
        traceback.print_exc()
        raise


def race(location: str, tmp_path: Path, workers: int = 4) -> list[list[str]]:
    context = worker_context()
    barrier = context.Barrier(workers)
    outs = [tmp_path / f"worker-{n}.json" for n in range(workers)]
    processes = [
        context.Process(target=open_in_child, args=(location, n, str(outs[n]), barrier))
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * workers
    return [json.loads(out.read_text()) for out in outs]


def check_one_each(store: Store, opened: list[list[str]]) -> None:
    everything = sorted(key for keys in opened for key in keys)
    expected = sorted(f"u{u}/k{k}" for u in range(USERS) for k in range(KEYS))
    assert everything == expected  # each opened by exactly one process
    with Client(MODEL, store=store, clock=FrozenClock(T0)) as client:
        for user in range(USERS):
            assert [n.key for n in client.nudges(f"u{user}")] == [f"k{k}" for k in range(KEYS)]


def test_processes_opening_one_key_on_sqlite_open_one_nudge(tmp_path: Path) -> None:
    """4 processes on one SQLite file open the same 20 (user, key) pairs at once: each pair
    opened by exactly one of them, one nudge each."""
    path = str(tmp_path / "shared.db")
    SQLiteStore(path).close()  # the schema, before the race
    opened = race(path, tmp_path)
    with SQLiteStore(path) as store:
        check_one_each(store, opened)


@pytest.mark.postgres
def test_processes_opening_one_key_on_postgres_open_one_nudge(tmp_path: Path) -> None:
    """4 processes on one PostgreSQL schema open the same 20 (user, key) pairs at once: each
    pair opened by exactly one of them, one nudge each."""
    from pqlkit.stores.postgres import PostgresStore

    dsn = require_postgres()
    schema = new_postgres_schema()
    try:
        PostgresStore(dsn, schema=schema).close()  # the schema, before the race
        opened = race(f"{dsn}#{schema}", tmp_path)
        with PostgresStore(dsn, schema=schema) as store:
            check_one_each(store, opened)
    finally:
        drop_postgres_schemas(schema)


# -- the example -----------------------------------------------------------------------------


def test_the_example_runs(tmp_path: Path) -> None:
    """``python examples/nudges.py``: one worker's callback opens the nudge, the other's page
    shows it until it is clicked, a bad mark is a 400, and the marks are events."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-W", "error", "examples/nudges.py", str(tmp_path / "nudges.db")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("page 1: <script>window.NUDGES = [{")
    assert '"seen_at": null' in lines[0]
    assert "You're close to your row limit" in lines[0]
    assert '"seen_at": "2026-01-05T09:00:00+00:00"' in lines[1]
    assert lines[2:] == [
        "click: (204, '')",
        "page 3: <script>window.NUDGES = [];</script>",
        "bad mark: (400, \"key: user 'ada' has no nudge 'tour'\")",
        "events: ['nudge_seen', 'nudge_clicked']",
    ]
