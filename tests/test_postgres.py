"""PostgresStore specifics: schema, migrations, advisory locks, retries, forks, joined writes."""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

import pqlkit
from conftest import T0, drop_postgres_schemas, new_postgres_schema
from pqlkit import Client, Model, Qualification, _process, count, did, points, score
from pqlkit.exceptions import SchemaError, StoreError, TransientStoreError, ValidationError
from pqlkit.stores import MemoryStore, SQLiteStore, Store, open_store
from pqlkit.stores import postgres as pg_module
from pqlkit.stores._base import DeliveryRecord, NewEvent, NudgeRecord, Rank
from pqlkit.stores.postgres import SCHEMA_VERSION, PostgresStore, lock_id
from pqlkit.testing import FrozenClock

pytestmark = pytest.mark.postgres

TABLES = {
    "aliases",
    "callback_deliveries",
    "callbacks",
    "checkpoints",
    "deliveries",
    "events",
    "generation",
    "meta",
    "nudges",
    "qualifications",
    "suppressions",
    "ranks",
    "schema_version",
    "states",
    "traits",
}
MODEL = Model(
    "pg-tests",
    signals={"activated": did("dashboard_built")},
    scores={"logins": count("login"), "behavior": points(activated=60)},
    pql=(count("login") >= 3) | (score("behavior") >= 50),
    pqa=count("login") >= 5,
)


def event(message_id: str, user_id: str = "u1") -> NewEvent:
    return NewEvent(message_id, user_id, "login", {}, None, T0)


def tables_in(dsn: str, schema: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return {row[0] for row in rows}


def schema_exists(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row is not None


def versions(dsn: str, schema: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT version FROM {} ORDER BY version").format(
                sql.Identifier(schema, "schema_version")
            )
        ).fetchall()
    return [row[0] for row in rows]


def count_rows(dsn: str, schema: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        ).fetchone()
    assert row is not None
    return int(row[0])


def message_ids(store: Store) -> list[str]:
    with store.transaction() as tx:
        return [e.message_id for e in tx.events()]


@pytest.fixture(name="pg_store")
def fixture_pg_store(postgres_dsn: str, pg_schema: str) -> Iterator[PostgresStore]:
    """A PostgresStore on a schema of the test's own."""
    with PostgresStore(postgres_dsn, schema=pg_schema, max_size=4) as store:
        yield store


@pytest.fixture(name="inherited")
def fixture_inherited() -> Iterator[None]:
    """Closes, after the test, the pools a store set aside as a forked parent's.

    Request it before ``pg_store``, so that it runs after the store is closed.
    """
    before = len(pg_module._inherited)
    yield
    for pool in pg_module._inherited[before:]:
        pool.close()
    del pg_module._inherited[before:]


# -- schema and migrations ----------------------------------------------------------


def test_first_use_creates_the_schema_and_its_tables(postgres_dsn: str, pg_schema: str) -> None:
    """Opening a store on a new schema creates it with every table, at the current version."""
    assert not schema_exists(postgres_dsn, pg_schema)
    with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        assert store.schema == pg_schema
    assert tables_in(postgres_dsn, pg_schema) == TABLES
    assert versions(postgres_dsn, pg_schema) == list(range(1, SCHEMA_VERSION + 1))


def make_v1_schema(
    dsn: str, schema: str, deliveries: list[tuple[str, str, str]], *, version: int = 1
) -> None:
    """A schema as pqlkit's schema version 1 wrote it, with (id, model, status) deliveries,
    then migrated up to ``version``."""
    from pqlkit._convert import dumps

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for statement in [*pg_module._MIGRATIONS[0], pg_module._SCHEMA_VERSION_TABLE]:
            conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema)))
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (1, 0)").format(sql.Identifier(schema, "schema_version"))
        )
        for delivery_id, model, status in deliveries:
            payload = {
                "id": delivery_id,
                "kind": "pql",
                "subject_id": "u1",
                "account_id": None,
                "model": model,
                "fingerprint": "f",
                "qualified_at": T0.isoformat(),
            }
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (id, kind, subject_id, qualification, status, attempts)"
                    " VALUES (%s, 'pql', 'u1', %s, %s, 1)"
                ).format(sql.Identifier(schema, "deliveries")),
                (delivery_id, dumps(payload), status),
            )
        for target in range(2, version + 1):
            for statement in pg_module._MIGRATIONS[target - 1]:
                conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema)))
            conn.execute(
                sql.SQL("INSERT INTO {} VALUES (%s, 0)").format(
                    sql.Identifier(schema, "schema_version")
                ),
                (target,),
            )


def test_a_version_1_schema_is_migrated_with_its_deliveries(
    postgres_dsn: str, pg_schema: str
) -> None:
    """A schema of version 1 is upgraded: its deliveries keep their model and status."""
    rows = [("d1", "a", "pending"), ("d2", "b", "pending"), ("d3", "a", "dead")]
    make_v1_schema(postgres_dsn, pg_schema, rows)
    with PostgresStore(postgres_dsn, schema=pg_schema) as store, store.transaction() as tx:
        assert [d.id for d in tx.deliveries("pending", model="a")] == ["d1"]
        assert [d.id for d in tx.deliveries("pending", model="b")] == ["d2"]
        assert [d.id for d in tx.deliveries("dead", model="a")] == ["d3"]
    assert versions(postgres_dsn, pg_schema) == list(range(1, SCHEMA_VERSION + 1))


def test_a_version_2_schema_is_migrated_to_a_record_per_callback(
    postgres_dsn: str, pg_schema: str
) -> None:
    """Upgrading from version 2: a pending delivery waits for callbacks (each registered one
    gets a record), delivered and dead ones become records of callback "*" (never delivered
    again; a dead one, retried, goes to every callback)."""
    rows = [("d1", "m", "pending"), ("d2", "m", "delivered"), ("d3", "m", "dead")]
    make_v1_schema(postgres_dsn, pg_schema, rows, version=2)
    now = datetime.now(timezone.utc)
    with PostgresStore(postgres_dsn, schema=pg_schema) as store, store.transaction() as tx:
        assert [(d.id, d.callback) for d in tx.deliveries("pending")] == [("d1", None)]
        assert [(d.id, d.callback) for d in tx.deliveries("delivered")] == [("d2", "*")]
        assert [(d.id, d.callback, d.attempts) for d in tx.deliveries("dead")] == [("d3", "*", 1)]
        tx.register_callback("m", "pql", "slack", now, since=now - timedelta(days=7))
        assert [(d.id, d.callback) for d in tx.deliveries("pending")] == [("d1", "slack")]
        assert tx.revive_dead(now) == 1
        assert [(d.id, d.callback) for d in tx.deliveries("pending")] == [
            ("d1", "slack"),
            ("d3", "slack"),
        ]
        assert [(d.id, d.callback) for d in tx.deliveries("delivered")] == [("d2", "*")]
    assert versions(postgres_dsn, pg_schema) == list(range(1, SCHEMA_VERSION + 1))


def test_a_version_3_schema_gets_nudges_and_ranks(postgres_dsn: str, pg_schema: str) -> None:
    """Upgrading from version 3 adds the nudge inbox and the ranks index, keeping what was
    stored; both work at once, and the version is recorded."""
    make_v1_schema(postgres_dsn, pg_schema, [("d1", "m", "pending")], version=3)
    assert versions(postgres_dsn, pg_schema) == [1, 2, 3]
    assert not {"nudges", "ranks"} & tables_in(postgres_dsn, pg_schema)
    with PostgresStore(postgres_dsn, schema=pg_schema) as store, store.transaction() as tx:
        assert [d.id for d in tx.deliveries("pending")] == ["d1"]
        tx.save_ranks("m", "user", "u1", [Rank("behavior", 5.0)])
        assert tx.top_ranks("m", "user", "behavior", 1) == [("u1", 5.0)]
        assert tx.open_nudge(NudgeRecord("u1", "k", None, T0), T0) is True
        assert tx.open_nudge(NudgeRecord("u1", "k", None, T0), T0) is False
        assert [n.key for n in tx.nudges("u1", T0)] == ["k"]
    assert tables_in(postgres_dsn, pg_schema) == TABLES
    assert versions(postgres_dsn, pg_schema) == list(range(1, SCHEMA_VERSION + 1))


def test_a_version_4_schema_gets_suppressions(postgres_dsn: str, pg_schema: str) -> None:
    """Upgrading from version 4 adds the suppressions table, keeping what was stored;
    suppressions work at once, and the version is recorded."""
    make_v1_schema(postgres_dsn, pg_schema, [("d1", "m", "pending")], version=4)
    assert versions(postgres_dsn, pg_schema) == [1, 2, 3, 4]
    assert "suppressions" not in tables_in(postgres_dsn, pg_schema)
    with PostgresStore(postgres_dsn, schema=pg_schema) as store, store.transaction() as tx:
        assert [d.id for d in tx.deliveries("pending")] == ["d1"]
        assert tx.has_suppressions() is False
        assert tx.suppress("digest", T0) is True
        assert tx.suppress("digest", T0) is False
        assert tx.drop_suppressed(["other", "digest"]) is True
        assert tx.suppressed_calls() == 1
    assert tables_in(postgres_dsn, pg_schema) == TABLES
    assert versions(postgres_dsn, pg_schema) == list(range(1, SCHEMA_VERSION + 1))


def test_a_version_5_schema_gets_checkpoints(postgres_dsn: str, pg_schema: str) -> None:
    """Upgrading from version 5 adds the checkpoints table (retention), keeping what was
    stored; checkpoints work at once, and the version is recorded."""
    make_v1_schema(postgres_dsn, pg_schema, [("d1", "m", "pending")], version=5)
    assert "checkpoints" not in tables_in(postgres_dsn, pg_schema)
    with PostgresStore(postgres_dsn, schema=pg_schema) as store, store.transaction() as tx:
        assert [d.id for d in tx.deliveries("pending")] == ["d1"]
        tx.save_checkpoint("m", "user", "u1", "[1]", 3, ["acme"])
        assert tx.load_checkpoint("m", "user", "u1") == ("[1]", 3)
        assert tx.checkpoint_accounts(["u1"]) == {"acme"}
    assert tables_in(postgres_dsn, pg_schema) == TABLES
    assert versions(postgres_dsn, pg_schema) == list(range(1, SCHEMA_VERSION + 1))


def test_reopening_does_not_migrate_again(postgres_dsn: str, pg_schema: str) -> None:
    """A second store on a migrated schema keeps its data and adds no version."""
    with PostgresStore(postgres_dsn, schema=pg_schema) as store, store.transaction() as tx:
        tx.insert_event(event("m1"))
    with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        assert message_ids(store) == ["m1"]
    assert versions(postgres_dsn, pg_schema) == list(range(1, SCHEMA_VERSION + 1))


def test_a_schema_without_tables_is_migrated(postgres_dsn: str, pg_schema: str) -> None:
    """An existing, empty schema (created by a DBA, say) gets pqlkit's tables."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    with PostgresStore(postgres_dsn, schema=pg_schema):
        pass
    assert tables_in(postgres_dsn, pg_schema) == TABLES


def test_a_newer_schema_is_refused(postgres_dsn: str, pg_schema: str) -> None:
    """A schema written by a newer pqlkit raises SchemaError instead of being used."""
    with PostgresStore(postgres_dsn, schema=pg_schema):
        pass
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (%s, 0)").format(
                sql.Identifier(pg_schema, "schema_version")
            ),
            (SCHEMA_VERSION + 1,),
        )
    with pytest.raises(SchemaError, match="upgrade pqlkit"):
        PostgresStore(postgres_dsn, schema=pg_schema)


def test_many_processes_migrating_at_once(postgres_dsn: str, pg_schema: str) -> None:
    """12 stores opened at once on a new schema: all work, the schema is migrated once."""
    barrier = threading.Barrier(12)
    errors: list[BaseException] = []

    def open_one(n: int) -> None:
        try:
            barrier.wait()
            with (
                PostgresStore(postgres_dsn, schema=pg_schema, max_size=1) as store,
                store.transaction() as tx,
            ):
                tx.insert_event(event(f"m{n}"))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert versions(postgres_dsn, pg_schema) == list(range(1, SCHEMA_VERSION + 1))
    assert count_rows(postgres_dsn, pg_schema, "events") == 12


def test_custom_schema_names_are_isolated(postgres_dsn: str) -> None:
    """Two stores on two schemas of one database share nothing."""
    first, second = new_postgres_schema(), new_postgres_schema()
    try:
        with (
            PostgresStore(postgres_dsn, schema=first) as a,
            PostgresStore(postgres_dsn, schema=second) as b,
        ):
            with a.transaction() as tx:
                tx.insert_event(event("only-in-a"))
                tx.set_meta("k", "a")
            assert message_ids(a) == ["only-in-a"]
            assert message_ids(b) == []
            with b.transaction() as tx:
                assert tx.get_meta("k") is None
        assert tables_in(postgres_dsn, first) == TABLES == tables_in(postgres_dsn, second)
    finally:
        drop_postgres_schemas(first, second)


def test_schema_from_the_url(postgres_dsn: str, pg_schema: str) -> None:
    """``?schema=`` in a postgresql:// URL picks the schema, for open_store() and Client too."""
    store = open_store(f"{postgres_dsn}?schema={pg_schema}")
    try:
        assert isinstance(store, PostgresStore)
        assert store.schema == pg_schema
    finally:
        store.close()
    assert tables_in(postgres_dsn, pg_schema) == TABLES


def test_schema_given_twice_must_agree(postgres_dsn: str, pg_schema: str) -> None:
    """A schema= argument that contradicts the URL's ?schema= is refused."""
    with pytest.raises(ValidationError) as info:
        PostgresStore(f"{postgres_dsn}?schema={pg_schema}", schema="other")
    assert info.value.field == "schema"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "1abc",
        "a-b",
        "a b",
        'x"; DROP TABLE events; --',
        "Robert'); DROP TABLE students;--",
        "pg_catalog",
        "PG_mine",
        "a" * 64,
        "é",
        42,
    ],
)
def test_bad_schema_names_are_rejected(postgres_dsn: str, bad: Any) -> None:
    """A schema name that is not a plain identifier raises ValidationError("schema", ...)."""
    with pytest.raises(ValidationError) as info:
        PostgresStore(postgres_dsn, schema=bad)
    assert info.value.field == "schema"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"min_size": 0}, "min_size"),
        ({"max_size": 0}, "max_size"),
        ({"min_size": 3, "max_size": 2}, "max_size"),
        ({"max_size": True}, "max_size"),
    ],
)
def test_bad_pool_sizes_are_rejected(postgres_dsn: str, settings: Any, field: str) -> None:
    """Pool sizes must be positive ints with min_size <= max_size."""
    with pytest.raises(ValidationError) as info:
        PostgresStore(postgres_dsn, **settings)
    assert info.value.field == field


def test_a_bad_dsn_is_rejected() -> None:
    """A connection string libpq cannot parse raises ValidationError("dsn", ...)."""
    with pytest.raises(ValidationError) as info:
        PostgresStore("host=localhost nonsense")
    assert info.value.field == "dsn"


def test_unreachable_server_raises_store_error_without_the_password() -> None:
    """No server: StoreError at once, naming the host but never the password."""
    started = time.monotonic()
    with pytest.raises(StoreError, match="cannot connect") as info:
        PostgresStore("postgresql://someone:s3cret@127.0.0.1:1/db", timeout=2)
    assert "s3cret" not in str(info.value)
    assert time.monotonic() - started < 10


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg, opening a PostgresStore says how to install it."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreError, match=r"pip install \"pqlkit\[postgres\]\""):
        PostgresStore("postgresql://localhost/db")


def test_repr_hides_the_password(postgres_dsn: str, pg_schema: str) -> None:
    """The repr names host, database and schema, not the password."""
    dsn = postgres_dsn.replace("postgres@", "postgres:hunter2@", 1)
    with PostgresStore(dsn, schema=pg_schema) as store:
        text = repr(store)
    assert "hunter2" not in text
    assert pg_schema in text
    assert "closed" in repr(store)


def test_closed_store_refuses_transactions(pg_store: PostgresStore) -> None:
    """After close(), transaction() raises StoreError; close() is idempotent."""
    pg_store.close()
    pg_store.close()
    with pytest.raises(StoreError, match="closed"), pg_store.transaction():
        pass


def test_close_inside_a_transaction_is_refused(pg_store: PostgresStore) -> None:
    """close() inside the store's own transaction raises StoreError."""
    with pg_store.transaction(), pytest.raises(StoreError, match="inside its own transaction"):
        pg_store.close()


def test_nested_transactions_are_refused(pg_store: PostgresStore) -> None:
    """A transaction opened inside another in the same thread raises StoreError."""
    with (
        pg_store.transaction(),
        pytest.raises(StoreError, match="do not nest"),
        pg_store.transaction(),
    ):
        pass
    with pg_store.transaction() as tx:  # the outer one ended cleanly
        tx.set_meta("k", "v")


def test_values_are_bound_not_formatted(pg_store: PostgresStore) -> None:
    """Event names, ids and properties full of SQL come back verbatim."""
    nasty = "x'); DROP TABLE events; --"
    with pg_store.transaction() as tx:
        tx.insert_event(NewEvent(nasty, nasty, nasty, {nasty: nasty}, nasty, T0))
        tx.set_traits("user", nasty, {"k": nasty})
    with pg_store.transaction() as tx:
        stored = next(tx.events())
        assert (stored.message_id, stored.event, stored.properties) == (
            nasty,
            nasty,
            {nasty: nasty},
        )
        assert tx.traits("user", nasty) == {"k": nasty}


def test_json_values_round_trip_exactly(pg_store: PostgresStore) -> None:
    """Large and small floats, big ints and NUL characters in properties come back unchanged."""
    properties = {"big": 1e308, "tiny": 5e-324, "int": 2**63 + 1, "nul": "a\x00b", "neg": -0.0}
    with pg_store.transaction() as tx:
        tx.insert_event(NewEvent("m1", "u1", "e", properties, None, T0))
        tx.set_traits("user", "u1", properties)
    with pg_store.transaction() as tx:
        stored = next(tx.events()).properties
        assert stored == properties
        assert repr(stored["big"]) == "1e+308"
        assert tx.traits("user", "u1") == properties


# -- advisory locks ------------------------------------------------------------------------


def test_lock_ids_are_stable_64_bit_and_per_schema() -> None:
    """A key's lock id is the same in every process and differs between schemas."""
    assert lock_id("pqlkit", "user:u1") == lock_id("pqlkit", "user:u1")
    assert lock_id("pqlkit", "user:u1") != lock_id("other", "user:u1")
    assert lock_id("pqlkit", "user:u1") != lock_id("pqlkit", "user:u2")
    assert -(2**63) <= lock_id("pqlkit", "user:u1") < 2**63
    assert lock_id("pqlkit", "user:u1") == -1104267011408765274  # fixed: blake2b, not hash()


def test_lock_serializes_two_threads(pg_store: PostgresStore) -> None:
    """A second transaction locking the same key waits until the first commits."""
    locked = threading.Event()
    timeline: list[str] = []

    def first() -> None:
        with pg_store.transaction() as tx:
            tx.lock(["user:u1"])
            locked.set()
            time.sleep(0.3)
            timeline.append("first commits")

    thread = threading.Thread(target=first)
    thread.start()
    assert locked.wait(5)
    with pg_store.transaction() as tx:
        tx.lock(["user:u1"])
        timeline.append("second has the lock")
    thread.join()
    assert timeline == ["first commits", "second has the lock"]


def test_lock_on_other_keys_does_not_wait(pg_store: PostgresStore) -> None:
    """Transactions locking different keys run side by side."""
    locked, release = threading.Event(), threading.Event()

    def holder() -> None:
        with pg_store.transaction() as tx:
            tx.lock(["user:u1"])
            locked.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    assert locked.wait(5)
    started = time.monotonic()
    with pg_store.transaction() as tx:
        tx.lock(["user:u2", "account:acme"])
    assert time.monotonic() - started < 1
    release.set()
    thread.join()


def test_locked_read_modify_write_loses_no_update(pg_store: PostgresStore) -> None:
    """4 threads x 25 increments of one counter under lock(): exactly 100 (READ COMMITTED)."""
    with pg_store.transaction() as tx:
        tx.set_meta("counter", "0")

    def work() -> None:
        for _ in range(25):
            with pg_store.transaction() as tx:
                tx.lock(["counter"])
                value = int(tx.get_meta("counter") or 0)
                tx.set_meta("counter", str(value + 1))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with pg_store.transaction() as tx:
        assert tx.get_meta("counter") == "100"


def advisory_locks(conn: psycopg.Connection[Any], pid: int) -> list[tuple[str, bool]]:
    """The advisory locks session ``pid`` holds: (lock id as text, granted)."""
    rows = conn.execute(
        "SELECT (classid::bigint << 32 | objid::bigint)::text, granted FROM pg_locks"
        " WHERE locktype = 'advisory' AND pid = %s",
        (pid,),
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def test_locks_are_transaction_level_only(postgres_dsn: str, pg_store: PostgresStore) -> None:
    """Locks are held during the transaction and gone after it: nothing at session level."""
    with psycopg.connect(postgres_dsn, autocommit=True) as observer:
        with pg_store.transaction() as tx:
            tx.lock(["user:u1", "account:acme"])
            backend = tx._cur.connection.info.backend_pid
            assert len(advisory_locks(observer, backend)) == 2
        assert advisory_locks(observer, backend) == []
        backends: list[int] = []

        def fail() -> None:
            with pg_store.transaction() as tx:
                tx.lock(["user:u1"])
                backends.append(tx._cur.connection.info.backend_pid)
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError):
            fail()
        assert advisory_locks(observer, backends[0]) == []


def test_deadlock_raises_transient_store_error(pg_store: PostgresStore) -> None:
    """Two transactions locking two keys in opposite orders: one gets TransientStoreError."""
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def work(first: str, second: str) -> None:
        try:
            with pg_store.transaction() as tx:
                tx.lock([first])
                barrier.wait()
                tx.lock([second])
                time.sleep(0.1)
            outcomes.append("committed")
        except TransientStoreError as error:
            cause = error.__cause__
            outcomes.append(
                "deadlock" if isinstance(cause, psycopg.errors.DeadlockDetected) else "?"
            )

    threads = [
        threading.Thread(target=work, args=("a", "b")),
        threading.Thread(target=work, args=("b", "a")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["committed", "deadlock"]


# -- retries --------------------------------------------------------------------------


class FlakyStore:
    """Wraps a store; its first ``failures`` transactions raise TransientStoreError at exit."""

    def __init__(self, store: Store, failures: int) -> None:
        self._store = store
        self.failures = failures
        self.attempts = 0

    def transaction(self) -> Any:
        from contextlib import contextmanager

        @contextmanager
        def flaky() -> Iterator[Any]:
            with self._store.transaction() as tx:
                self.attempts += 1
                yield tx
                if self.failures > 0:
                    self.failures -= 1
                    raise TransientStoreError("simulated deadlock")

        return flaky()

    def close(self) -> None:
        self._store.close()


def test_client_retries_a_transient_conflict() -> None:
    """A write aborted by the store is run again; the event is stored once."""
    flaky = FlakyStore(MemoryStore(), failures=0)
    with Client(MODEL, store=flaky, clock=FrozenClock(T0)) as client:
        flaky.failures, flaky.attempts = 3, 0
        result = client.track("u1", "login", message_id="m1")
        assert result.duplicate is False
        assert flaky.attempts == 4
        assert client.scores("u1")["logins"] == 1


def test_client_gives_up_after_five_attempts() -> None:
    """A conflict that keeps coming raises TransientStoreError after 5 attempts; nothing stored."""
    flaky = FlakyStore(MemoryStore(), failures=0)
    with Client(MODEL, store=flaky, clock=FrozenClock(T0)) as client:
        flaky.failures, flaky.attempts = 100, 0
        with pytest.raises(TransientStoreError):
            client.track("u1", "login", message_id="m1")
        assert flaky.attempts == 5
        flaky.failures = 0
        assert client.scores("u1")["logins"] == 0


def test_client_retries_every_kind_of_write() -> None:
    """identify, group, alias, forget, sweep, rebuild and track_many are retried too."""
    flaky = FlakyStore(MemoryStore(), failures=0)
    with Client(MODEL, store=flaky, clock=FrozenClock(T0)) as client:
        calls = [
            lambda: client.track_many([{"user_id": "u2", "event": "login", "message_id": "b1"}]),
            lambda: client.identify("u2", {"role": "admin"}),
            lambda: client.group("acme", {"employees": 10}),
            lambda: client.alias("anon", "u2"),
            lambda: client.sweep(),
            lambda: client.rebuild(),
            lambda: client.forget("u2"),
            lambda: client.retry_dead_letters(),
        ]
        for call in calls:
            flaky.failures = 1
            call()
            assert flaky.failures == 0


def test_a_broken_pooled_connection_is_replaced(postgres_dsn: str, pg_store: PostgresStore) -> None:
    """A pooled connection killed by the server is replaced when BEGIN fails on it."""
    with pg_store.transaction() as tx:
        backend = tx._cur.connection.info.backend_pid
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    time.sleep(0.2)
    with pg_store.transaction() as tx:
        tx.set_meta("k", "v")
        assert tx._cur.connection.info.backend_pid != backend


# -- deliveries ------------------------------------------------------------------------


def test_a_callback_registered_while_a_delivery_is_enqueued_still_gets_it(
    pg_store: PostgresStore,
) -> None:
    """A registration never misses a qualification whose transaction was open meanwhile:
    it does not happen while one is uncommitted (nor waits for it), and happens after."""
    payload = Qualification(
        id="q", kind="pql", subject_id="u1", account_id=None, model="m", fingerprint="f",
        qualified_at=T0,
    )  # fmt: skip
    enqueued, release = threading.Event(), threading.Event()

    def enqueue() -> None:
        with pg_store.transaction() as tx:
            tx.enqueue(DeliveryRecord("d1", "pql", "u1", payload, next_attempt_at=T0), now=T0)
            enqueued.set()
            release.wait(5)

    writer = threading.Thread(target=enqueue)
    writer.start()
    try:
        assert enqueued.wait(5)
        started = time.monotonic()
        with pg_store.transaction() as tx:  # the writer has not committed: not now
            assert not tx.register_callback("m", "pql", "slack", T0, since=T0)
        assert time.monotonic() - started < 2  # and it did not wait for the writer
    finally:
        release.set()
        writer.join(5)
    with pg_store.transaction() as tx:
        assert tx.register_callback("m", "pql", "slack", T0, since=T0)
        assert [(d.id, d.callback) for d in tx.deliveries("pending")] == [("d1", "slack")]


def test_flush_waits_for_a_registration_another_process_is_committing(
    pg_store: PostgresStore,
) -> None:
    """flush() right after start-up delivers what is due even while another registers.

    Two processes starting at once: one holds the registration lock while it
    backfills; the other's flush() used to find no records of its callback yet
    and return 0 ("all attempted") having delivered nothing.
    """
    model = Model("reg-race", signals={"x": did("x")}, pql=did("x"))
    with Client(model, store=pg_store, clock=FrozenClock(T0)) as client:  # no callback
        client.track("u1", "x")
    registering, release = threading.Event(), threading.Event()

    def other_process() -> None:
        with pg_store.transaction() as tx:
            assert tx.register_callback(model.name, "pql", "other", T0, since=T0 - timedelta(1))
            registering.set()
            release.wait(5)

    holder = threading.Thread(target=other_process)
    holder.start()
    calls: list[str] = []
    try:
        assert registering.wait(5)
        threading.Timer(0.05, release.set).start()
        with Client(model, store=pg_store, clock=FrozenClock(T0)) as client:
            client.on_pql(lambda q: calls.append(q.subject_id), name="sink")
            assert client.flush(timeout=10) == 0
            assert calls == ["u1"]
    finally:
        release.set()
        holder.join(5)


def test_claim_due_skips_rows_another_transaction_is_claiming(pg_store: PostgresStore) -> None:
    """Two concurrent claims take different deliveries, and the second does not wait."""
    payload = Qualification(
        id="q", kind="pql", subject_id="u1", account_id=None, model="m", fingerprint="f",
        qualified_at=T0,
    )  # fmt: skip
    with pg_store.transaction() as tx:
        for n in range(2):
            tx.enqueue(
                DeliveryRecord(f"d{n}", "pql", "u1", payload, next_attempt_at=T0), ["cb"], now=T0
            )
    first_claimed, release = threading.Event(), threading.Event()
    claimed: dict[str, list[str]] = {}
    lease = T0 + timedelta(minutes=1)

    def first() -> None:
        with pg_store.transaction() as tx:
            claimed["first"] = [d.id for d in tx.claim_due(T0, T0, lease, ["pql:cb"], 1)]
            first_claimed.set()
            release.wait(5)

    thread = threading.Thread(target=first)
    thread.start()
    assert first_claimed.wait(5)
    started = time.monotonic()
    with pg_store.transaction() as tx:
        claimed["second"] = [d.id for d in tx.claim_due(T0, T0, lease, ["pql:cb"], 5)]
    waited = time.monotonic() - started
    release.set()
    thread.join()
    assert claimed == {"first": ["d0"], "second": ["d1"]}
    assert waited < 1


# -- forks -----------------------------------------------------------------------------


def test_new_pool_after_pid_change(
    inherited: None, pg_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the pid changes (a fork), the store opens a new pool and keeps the old one untouched."""
    with pg_store.transaction() as tx:
        tx.insert_event(event("m1"))
    before = pg_store._pool()
    parent_pid = os.getpid()
    monkeypatch.setattr(_process, "pid", parent_pid + 1)

    after = pg_store._pool()
    with pg_store.transaction() as tx:
        tx.insert_event(event("m2"))

    assert after is not before
    assert before in pg_module._inherited
    assert not before.closed
    with before.connection() as conn:  # the parent's pool still works
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert message_ids(pg_store) == ["m1", "m2"]


def test_close_after_pid_change_leaves_the_parent_pool_open(
    inherited: None, pg_store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() in a forked child does not close the parent's pool."""
    parent = pg_store._pool()
    parent_pid = os.getpid()
    monkeypatch.setattr(_process, "pid", parent_pid + 1)
    pg_store.close()
    assert not parent.closed
    with parent.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_client_created_before_fork_works_in_children(pg_store: PostgresStore) -> None:
    """A Client made before fork() tracks in 3 children; the parent's client still works after."""
    fired: list[str] = []
    with Client(MODEL, store=pg_store, clock=FrozenClock(T0)) as client:
        client.on_pql(lambda q: fired.append(q.subject_id))
        client.track("parent-user", "login")
        children = []
        for n in range(3):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork()..."
                pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                status = 1
                try:
                    for i in range(3):
                        client.track(f"child-{n}", "login", message_id=f"c{n}-{i}")
                    assert client.qualified_at(f"child-{n}") is not None
                    status = 0
                except BaseException:
                    traceback.print_exc()
                finally:
                    os._exit(status)
            children.append(pid)
        for pid in children:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        client.track("parent-user", "login")
        client.track("parent-user", "login")
        client.flush()
        for n in range(3):
            assert client.scores(f"child-{n}")["logins"] == 3
        assert client.stats().pqls == 4
    with pg_store.transaction() as tx:
        assert len(list(tx.events())) == 12
    # the children delivered the children's PQLs (inline), the parent its own: each once
    assert fired == ["parent-user"]
    delivered = sorted(d.subject_id for d in deliveries_of(pg_store, "delivered"))
    assert delivered == ["child-0", "child-1", "child-2", "parent-user"]
    assert deliveries_of(pg_store, "pending") == []


def deliveries_of(store: Store, status: str) -> list[DeliveryRecord]:
    with store.transaction() as tx:
        return tx.deliveries(status)


# -- transactional tracking --------------------------------------------------------------


@pytest.fixture(name="pg_client")
def fixture_pg_client(pg_store: PostgresStore) -> Iterator[Client]:
    """An inline Client on the test's PostgresStore."""
    with Client(MODEL, store=pg_store, clock=FrozenClock(T0)) as client:
        yield client


@pytest.fixture(name="app_conn")
def fixture_app_conn(postgres_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """The application's own connection (not autocommit, dict rows, like many apps)."""
    with psycopg.connect(postgres_dsn, row_factory=dict_row) as conn:
        conn.execute("CREATE TEMP TABLE orders (id int PRIMARY KEY)")
        conn.commit()
        yield conn


def test_joined_commit_keeps_event_and_qualification(
    pg_client: Client, app_conn: psycopg.Connection[Any]
) -> None:
    """Tracked on the app's connection: invisible until the app commits, then all there."""
    fired: list[Qualification] = []
    pg_client.on_pql(fired.append)
    app_conn.execute("INSERT INTO orders VALUES (1)")
    result = pg_client.track("u1", "dashboard_built", message_id="m1", connection=app_conn)
    assert [q.subject_id for q in result.qualified] == ["u1"]
    assert result.scores["behavior"] == 60

    assert pg_client.qualified_at("u1") is None  # not committed: other sessions see nothing
    pg_client.flush()
    assert fired == []

    app_conn.commit()
    assert pg_client.qualified_at("u1") is not None
    with pg_client.store.transaction() as tx:
        assert tx.has_message("m1")
    pg_client.flush()
    assert [q.subject_id for q in fired] == ["u1"]
    assert app_conn.execute("SELECT id FROM orders").fetchall() == [{"id": 1}]


def test_joined_qualification_is_delivered_by_flush_after_commit(
    pg_client: Client, app_conn: psycopg.Connection[Any]
) -> None:
    """After the app commits, flush() runs the callback (a track() that fired nothing does not)."""
    fired: list[Qualification] = []
    pg_client.on_pql(fired.append)
    pg_client.track("u1", "dashboard_built", connection=app_conn)
    app_conn.commit()
    assert fired == []
    pg_client.track("u2", "login")
    assert fired == []
    pg_client.flush()
    assert [q.subject_id for q in fired] == ["u1"]


def test_joined_rollback_leaves_nothing(
    pg_client: Client, app_conn: psycopg.Connection[Any]
) -> None:
    """The app rolls back: no event, no state, no qualification, no delivery."""
    fired: list[Qualification] = []
    pg_client.on_pql(fired.append)
    app_conn.execute("INSERT INTO orders VALUES (1)")
    pg_client.track("u1", "dashboard_built", message_id="m1", connection=app_conn)
    app_conn.rollback()
    pg_client.flush()
    assert fired == []
    assert pg_client.qualified_at("u1") is None
    assert pg_client.scores("u1")["behavior"] == 0
    assert pg_client.pending() == []
    with pg_client.store.transaction() as tx:
        assert not tx.has_message("m1")
        assert tx.load_state(MODEL.name, "user", "u1") is None
    # the message id was not used up
    assert pg_client.track("u1", "dashboard_built", message_id="m1").duplicate is False


def test_joined_inside_an_autocommit_connections_transaction_block(
    pg_client: Client, postgres_dsn: str
) -> None:
    """An autocommit connection works inside ``with conn.transaction():``."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        with conn.transaction():
            pg_client.track("u1", "login", message_id="a1", connection=conn)
            pg_client.track("u1", "login", message_id="a2", connection=conn)

        def change_of_mind() -> None:
            with conn.transaction():
                pg_client.track("u1", "login", message_id="a3", connection=conn)
                raise RuntimeError("the app changes its mind")

        with pytest.raises(RuntimeError):
            change_of_mind()
    assert pg_client.scores("u1")["logins"] == 2


def test_joined_track_many(pg_client: Client, app_conn: psycopg.Connection[Any]) -> None:
    """track_many(connection=) writes every batch inside the app's transaction."""
    events = [{"user_id": "u1", "event": "login", "message_id": f"b{i}"} for i in range(3)]
    result = pg_client.track_many(events, connection=app_conn)
    assert (result.stored, [q.subject_id for q in result.qualified]) == (3, ["u1"])
    assert pg_client.scores("u1")["logins"] == 0
    app_conn.commit()
    assert pg_client.scores("u1")["logins"] == 3


def test_joined_autocommit_connection_outside_a_transaction_is_refused(
    pg_client: Client, postgres_dsn: str
) -> None:
    """An autocommit connection with no transaction open raises ValidationError; nothing stored."""
    with (
        psycopg.connect(postgres_dsn, autocommit=True) as conn,
        pytest.raises(ValidationError) as info,
    ):
        pg_client.track("u1", "login", message_id="m1", connection=conn)
    assert info.value.field == "connection"
    with pg_client.store.transaction() as tx:
        assert not tx.has_message("m1")


def test_joined_failed_transaction_is_refused(
    pg_client: Client, app_conn: psycopg.Connection[Any]
) -> None:
    """A connection whose transaction already failed raises ValidationError."""
    with pytest.raises(psycopg.errors.UndefinedTable):
        app_conn.execute("SELECT * FROM no_such_table")
    with pytest.raises(ValidationError, match="roll it back"):
        pg_client.track("u1", "login", connection=app_conn)


def test_joined_connection_must_be_a_psycopg_connection(pg_client: Client) -> None:
    """Anything but a psycopg Connection raises ValidationError("connection", ...)."""
    with pytest.raises(ValidationError) as info:
        pg_client.track("u1", "login", connection="not a connection")
    assert info.value.field == "connection"


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_connection_is_refused_on_other_stores(
    store_kind: str, tmp_path: Any, app_conn: psycopg.Connection[Any]
) -> None:
    """track(connection=) on a MemoryStore or SQLiteStore raises ValidationError; nothing stored."""
    store: Store = MemoryStore() if store_kind == "memory" else SQLiteStore(tmp_path / "db")
    with Client(MODEL, store=store, clock=FrozenClock(T0)) as client:
        with pytest.raises(ValidationError, match="needs a PostgresStore") as info:
            client.track("u1", "login", message_id="m1", connection=app_conn)
        assert info.value.field == "connection"
        with pytest.raises(ValidationError):
            client.track_many([{"user_id": "u1", "event": "login"}], connection=app_conn)
        with store.transaction() as tx:
            assert not tx.has_message("m1")
    store.close()


def test_postgres_store_is_exported() -> None:
    """PostgresStore and TransientStoreError are public names."""
    assert pqlkit.PostgresStore is PostgresStore
    assert issubclass(pqlkit.TransientStoreError, pqlkit.StoreError)


def test_a_grown_log_is_not_read_whole_for_a_payload(postgres_dsn: str, pg_schema: str) -> None:
    """With autovacuum off (so no ANALYZE), a payload's recent events are still read by
    index once the log has grown: they are planned with the table as it is. A prepared
    statement's generic plan, chosen while the log was small, was a sequential scan of the
    whole log on every qualification (5.8 ms at 100,000 events), and throughput fell as
    the log grew."""
    store = PostgresStore(postgres_dsn, schema=pg_schema, max_size=1)  # one connection
    try:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            events = sql.Identifier(pg_schema, "events")
            conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(events))
            # a log growing while qualifications read it: past psycopg's and
            # PostgreSQL's thresholds for prepared statements and generic plans
            for n in range(200):
                with store.transaction() as tx:
                    tx.insert_event(event(f"m{n}", f"u{n % 100}"))
                    if n % 2:
                        assert tx.recent_events([f"u{n % 100}"], 10)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (message_id, user_id, event, properties, ts)"
                    " SELECT 'bulk-' || i, 'bulk-' || i, 'x', '{{}}', 0"
                    " FROM generate_series(1, 100000) AS i"
                ).format(events)
            )

            read = 0
            for n in range(20):
                with store.transaction() as tx:
                    assert len(tx.recent_events([f"u{n}"], 10)) == 2
                    # what this transaction's sequential scans of the log read so far
                    row = tx._cur.execute(  # type: ignore[attr-defined]
                        "SELECT seq_tup_read FROM pg_stat_xact_user_tables"
                        " WHERE schemaname = %s AND relname = 'events'",
                        (pg_schema,),
                        prepare=False,
                    ).fetchone()
                    read += int(row[0])
            assert read == 0, f"{read} rows of the log read by sequential scans"
    finally:
        store.close()
