"""SQLiteStore specifics: pragmas, schema versions, fork and thread safety, store URLs."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import T0
from pqlkit import _process
from pqlkit._convert import dumps, from_us, json_converter, to_us
from pqlkit.exceptions import SchemaError, StoreError, ValidationError
from pqlkit.stores import MemoryStore, SQLiteStore, Store, Transaction, open_store
from pqlkit.stores import sqlite as sqlite_module
from pqlkit.stores._base import NewEvent, NudgeRecord, Rank, StateRecord

STORE_ERROR = 3  # a child's exit status when it saw a StoreError (SQLite's errors arrive as one)


def event(message_id: str, user_id: str = "u1") -> NewEvent:
    return NewEvent(message_id, user_id, "login", {}, None, T0)


def message_ids(store: Store) -> list[str]:
    with store.transaction() as tx:
        return [e.message_id for e in tx.events()]


@pytest.fixture(name="db_path")
def fixture_db_path(tmp_path: Path) -> Path:
    """The path of a database file that does not exist yet."""
    return tmp_path / "pqlkit.db"


@pytest.fixture(name="sqlite_store")
def fixture_sqlite_store(db_path: Path) -> Iterator[SQLiteStore]:
    """An SQLiteStore on a fresh file, closed after the test."""
    with SQLiteStore(db_path) as store:
        yield store


@pytest.fixture(name="inherited")
def fixture_inherited() -> Iterator[None]:
    """Closes, after the test, the connections a store set aside as a forked parent's.

    Request it before ``sqlite_store``, so that it runs after the store is closed.
    """
    before = len(sqlite_module._inherited)
    yield
    for db in sqlite_module._inherited[before:]:
        db.close()
    del sqlite_module._inherited[before:]


# -- configuration -------------------------------------------------------------------


def test_wal_mode(sqlite_store: SQLiteStore, db_path: Path) -> None:
    """The database file is in WAL mode."""
    with sqlite3.connect(db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    other.close()


def test_synchronous_normal(sqlite_store: SQLiteStore) -> None:
    """The connection commits with synchronous=NORMAL (1)."""
    conn = sqlite_store._connection().db.conn
    assert conn.execute("PRAGMA synchronous").fetchone() == (1,)


def test_busy_timeout_follows_timeout(db_path: Path) -> None:
    """busy_timeout is the store's timeout, in milliseconds."""
    with SQLiteStore(db_path, timeout=2.5) as store:
        conn = store._connection().db.conn
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (2500,)


def test_autocommit_connection(sqlite_store: SQLiteStore) -> None:
    """The connection leaves transactions to the store (isolation_level=None)."""
    conn = sqlite_store._connection().db.conn
    assert conn.isolation_level is None
    assert not conn.in_transaction


def test_relative_path_is_resolved_when_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative path is made absolute once, so a later chdir does not move the store."""
    monkeypatch.chdir(tmp_path)
    with SQLiteStore("rel.db") as store:
        monkeypatch.chdir("/")
        assert store.path == str(tmp_path / "rel.db")
        with store.transaction() as tx:
            tx.set_meta("k", "v")
    assert (tmp_path / "rel.db").exists()


def test_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no path, the store is pqlkit.db in the current directory."""
    monkeypatch.chdir(tmp_path)
    with SQLiteStore() as store:
        assert store.path == str(tmp_path / "pqlkit.db")


def test_in_memory_database() -> None:
    """ ":memory:" keeps the database in memory, and works like a file."""
    with SQLiteStore(":memory:") as store:
        with store.transaction() as tx:
            tx.insert_event(event("m1"))
        assert store.path == ":memory:"
        assert message_ids(store) == ["m1"]


def test_repr(sqlite_store: SQLiteStore, db_path: Path) -> None:
    """The repr names the file, and says when the store is closed."""
    assert repr(sqlite_store) == f"<SQLiteStore {str(db_path)!r} timeout=30.0>"
    sqlite_store.close()
    assert repr(sqlite_store).endswith("closed>")


def test_not_a_database(db_path: Path) -> None:
    """A file that is not an SQLite database raises StoreError."""
    db_path.write_bytes(b"this is not a database, just some text" * 100)
    with pytest.raises(StoreError, match="is corrupt, or is not an SQLite database"):
        SQLiteStore(db_path)


def test_unopenable_path(tmp_path: Path) -> None:
    """A path that cannot be opened raises StoreError."""
    with pytest.raises(StoreError, match="cannot open SQLite database"):
        SQLiteStore(tmp_path / "missing-dir" / "pqlkit.db")


# -- schema ------------------------------------------------------------------------------


def test_schema_version_recorded(sqlite_store: SQLiteStore, db_path: Path) -> None:
    """A new database records the current schema version."""
    with sqlite3.connect(db_path) as other:
        assert other.execute("SELECT max(version) FROM schema_version").fetchone() == (
            sqlite_module.SCHEMA_VERSION,
        )
    other.close()


def test_schema_has_every_table(sqlite_store: SQLiteStore, db_path: Path) -> None:
    """Every table of the schema is created."""
    tables = set(sqlite_store._connection().db.table_names())
    assert {
        "events",
        "aliases",
        "traits",
        "states",
        "qualifications",
        "deliveries",
        "meta",
        "nudges",
        "ranks",
        "schema_version",
    } <= tables


def test_newer_schema_is_refused(db_path: Path) -> None:
    """Opening a database written by a newer pqlkit raises SchemaError."""
    SQLiteStore(db_path).close()
    with sqlite3.connect(db_path) as other:
        other.execute("INSERT INTO schema_version (version, applied_at) VALUES (999, 0)")
    other.close()
    with pytest.raises(SchemaError, match="999"):
        SQLiteStore(db_path)


def test_reopen_keeps_data(db_path: Path) -> None:
    """Data written before close() is there after reopening the file."""
    with SQLiteStore(db_path) as store, store.transaction() as tx:
        tx.insert_event(event("m1"))
        tx.set_meta("k", "v")
    with SQLiteStore(db_path) as store, store.transaction() as tx:
        assert [e.message_id for e in tx.events()] == ["m1"]
        assert tx.get_meta("k") == "v"


def test_reopen_does_not_migrate_again(db_path: Path) -> None:
    """Reopening an up-to-date database applies no migration."""
    SQLiteStore(db_path).close()
    SQLiteStore(db_path).close()
    with sqlite3.connect(db_path) as other:
        assert other.execute("SELECT count(*) FROM schema_version").fetchone() == (
            sqlite_module.SCHEMA_VERSION,
        )
    other.close()


def test_two_stores_on_one_file(db_path: Path) -> None:
    """Two stores on one file see each other's commits."""
    with SQLiteStore(db_path) as first, SQLiteStore(db_path) as second:
        with first.transaction() as tx:
            tx.insert_event(event("m1"))
        with second.transaction() as tx:
            assert tx.insert_event(event("m1")) is None
            tx.insert_event(event("m2"))
        assert message_ids(first) == ["m1", "m2"]


def test_user_data_is_never_sql(sqlite_store: SQLiteStore) -> None:
    """Quotes and SQL in ids, names and properties are stored as plain values."""
    nasty = "x'); DROP TABLE events; --"
    with sqlite_store.transaction() as tx:
        tx.insert_event(NewEvent(nasty, nasty, nasty, {nasty: nasty}, nasty, T0))
        tx.set_alias(nasty, "u1")
        tx.set_meta(nasty, nasty)
    with sqlite_store.transaction() as tx:
        [stored] = tx.events(user_ids=[nasty], account_id=nasty)
        assert (stored.message_id, stored.event, stored.properties) == (
            nasty,
            nasty,
            {nasty: nasty},
        )
        assert tx.resolve(nasty) == "u1"
        assert tx.get_meta(nasty) == nasty


# -- transactions and locking ------------------------------------------------------------


def test_nested_transaction_raises(sqlite_store: SQLiteStore) -> None:
    """Opening a transaction inside another one in the same thread raises StoreError."""
    with sqlite_store.transaction(), pytest.raises(StoreError, match="do not nest"):
        sqlite_store.transaction().__enter__()


def test_outer_transaction_survives_a_nesting_attempt(sqlite_store: SQLiteStore) -> None:
    """A refused nested transaction leaves the outer one usable, and it commits."""
    with sqlite_store.transaction() as tx:
        tx.insert_event(event("m1"))
        with pytest.raises(StoreError):
            sqlite_store.transaction().__enter__()
        tx.insert_event(event("m2"))
    assert message_ids(sqlite_store) == ["m1", "m2"]


def test_transaction_after_rollback(sqlite_store: SQLiteStore) -> None:
    """A rolled-back transaction leaves the connection ready for the next one."""

    def insert_then_fail(tx: Transaction) -> None:
        tx.insert_event(event("m1"))
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError), sqlite_store.transaction() as tx:
        insert_then_fail(tx)
    with sqlite_store.transaction() as tx:
        tx.insert_event(event("m2"))
    assert message_ids(sqlite_store) == ["m2"]


def test_failed_statement_rolls_back_the_transaction(sqlite_store: SQLiteStore) -> None:
    """A statement SQLite rejects rolls back the whole transaction, with a StoreError."""

    def insert_then_break_a_constraint(tx: Transaction) -> None:
        tx.insert_event(event("m1"))
        tx.set_meta("k", None)  # type: ignore[arg-type]

    with pytest.raises(StoreError, match="NOT NULL") as caught, sqlite_store.transaction() as tx:
        insert_then_break_a_constraint(tx)
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert message_ids(sqlite_store) == []


def test_close_is_idempotent(sqlite_store: SQLiteStore) -> None:
    """close() can be called again."""
    sqlite_store.close()
    sqlite_store.close()


def test_closed_store_refuses_transactions(sqlite_store: SQLiteStore) -> None:
    """A transaction on a closed store raises StoreError."""
    sqlite_store.close()
    with pytest.raises(StoreError, match="closed"), sqlite_store.transaction():
        pass


def test_close_inside_transaction_raises(sqlite_store: SQLiteStore) -> None:
    """close() inside the store's own transaction raises StoreError and closes nothing."""
    with sqlite_store.transaction() as tx:
        with pytest.raises(StoreError):
            sqlite_store.close()
        tx.insert_event(event("m1"))
    assert message_ids(sqlite_store) == ["m1"]


def test_threads_share_one_store(sqlite_store: SQLiteStore) -> None:
    """Threads using one store concurrently store every event exactly once."""
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(50):
                with sqlite_store.transaction() as tx:
                    tx.insert_event(event(f"t{worker}-{i}", f"user-{worker}"))
                    tx.set_meta("last", f"{worker}-{i}")
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(message_ids(sqlite_store)) == sorted(
        f"t{w}-{i}" for w in range(8) for i in range(50)
    )


def test_waits_for_another_writer(sqlite_store: SQLiteStore, db_path: Path) -> None:
    """A transaction waits while another connection holds the write lock."""
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, other.execute, args=("COMMIT",))
    release.start()
    try:
        started = time.monotonic()
        with sqlite_store.transaction() as tx:
            tx.insert_event(event("m1"))
        assert time.monotonic() - started >= 0.2
    finally:
        release.join()
        other.close()
    assert message_ids(sqlite_store) == ["m1"]


def test_lock_timeout_raises_store_error(db_path: Path) -> None:
    """A write lock held longer than ``timeout`` raises StoreError, not OperationalError."""
    with SQLiteStore(db_path, timeout=0.2) as store:
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked") as caught, store.transaction():
                pass
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        with store.transaction() as tx:
            tx.insert_event(event("m1"))


def test_busy_error_is_retried() -> None:
    """A "database is locked" that SQLite reports without waiting is retried."""
    failures = iter([sqlite3.OperationalError("database is locked")] * 3)

    def action() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "done"

    assert sqlite_module._retry_busy(action, timeout=5) == "done"


def test_other_operational_errors_are_not_retried() -> None:
    """An OperationalError other than "locked" is raised at once."""
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such table: nope")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        sqlite_module._retry_busy(action, timeout=5)
    assert calls == [1]


# -- fork safety -----------------------------------------------------------------------


def test_new_connection_after_pid_change(
    inherited: None, sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the pid changes (a fork), the store opens a new connection and keeps the old one."""
    before = sqlite_store._connection()
    with sqlite_store.transaction() as tx:
        tx.insert_event(event("m1"))
    monkeypatch.setattr(_process, "pid", before.pid + 1)

    after = sqlite_store._connection()
    with sqlite_store.transaction() as tx:
        tx.insert_event(event("m2"))

    assert after is not before
    assert after.db.conn is not before.db.conn
    assert after.lock is not before.lock
    assert before.db in sqlite_module._inherited
    assert before.db.conn.execute("SELECT count(*) FROM events").fetchone() == (2,)


def test_close_after_pid_change_leaves_parent_connection_open(
    inherited: None, sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() in a forked child does not close the parent's connection."""
    parent = sqlite_store._connection()
    monkeypatch.setattr(_process, "pid", parent.pid + 1)
    sqlite_store.close()
    assert parent.db.conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_writes_through_parent_store(sqlite_store: SQLiteStore) -> None:
    """A child forked with an open store writes through it; the parent's connection still works."""
    with sqlite_store.transaction() as tx:
        tx.insert_event(event("from-parent"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork() may..."
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 1
        try:
            with sqlite_store.transaction() as tx:
                tx.insert_event(event("from-child"))
            sqlite_store.close()
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with sqlite_store.transaction() as tx:
        tx.insert_event(event("parent-again"))
    assert message_ids(sqlite_store) == ["from-parent", "from-child", "parent-again"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_the_open_lock_is_held_opens_its_own_connection(
    sqlite_store: SQLiteStore,
) -> None:
    """The lock that guards opening a connection is new in a forked child: the parent's,
    copied while another thread held it, would never be released there (the child would
    hang)."""
    with sqlite_store.transaction() as tx:
        tx.insert_event(event("from-parent"))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with sqlite_module._open_lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, fork() may..."
        pid = os.fork()
    if pid != 0:
        release.set()
        holder.join()
    else:  # pragma: no cover - the child
        status = 1
        try:
            with sqlite_store.transaction() as tx:  # opens the child's own connection
                tx.insert_event(event("from-child"))
            sqlite_store.close()
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung opening its connection")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert message_ids(sqlite_store) == ["from-parent", "from-child"]


# -- several processes -------------------------------------------------------------------


def _insert_events(path: str, worker: int, count: int) -> None:
    """A child process: ``count`` transactions, each inserting one event."""
    try:
        with SQLiteStore(path) as store:
            for i in range(count):
                with store.transaction() as tx:
                    tx.insert_event(event(f"w{worker}-{i}", f"user-{worker}"))
                    tx.set_meta(f"worker-{worker}", str(i))
    except StoreError:
        traceback.print_exc()
        sys.exit(STORE_ERROR)


def test_processes_contending_for_one_file(db_path: Path) -> None:
    """4 processes x 500 transactions on one new file: every event stored once, no lock error."""
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_insert_events, args=(str(db_path), n, 500)) for n in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    with SQLiteStore(db_path) as store:
        stored = message_ids(store)
        with store.transaction() as tx:
            assert [tx.get_meta(f"worker-{n}") for n in range(4)] == ["499"] * 4
    assert len(stored) == 2000
    assert set(stored) == {f"w{n}-{i}" for n in range(4) for i in range(500)}


# -- store URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "relative_path"),
    [("sqlite:///pql.db", "pql.db"), ("sqlite:///data/pql.db", "data/pql.db")],
)
def test_open_relative_sqlite_url(
    url: str, relative_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///path opens a file relative to the current directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    store = open_store(url)
    try:
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / relative_path)
    finally:
        store.close()


def test_open_absolute_sqlite_url(tmp_path: Path) -> None:
    """sqlite:////abs/path opens a file at an absolute path."""
    store = open_store(f"sqlite:///{tmp_path}/abs.db")
    try:
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / "abs.db")
    finally:
        store.close()


@pytest.mark.parametrize("url", ["sqlite://:memory:", "sqlite:///:memory:", "sqlite://"])
def test_open_in_memory_sqlite_url(url: str) -> None:
    """The in-memory sqlite URLs open an in-memory SQLiteStore."""
    store = open_store(url)
    try:
        assert isinstance(store, SQLiteStore)
        assert store.path == ":memory:"
    finally:
        store.close()


def test_open_memory_url() -> None:
    """memory:// is a MemoryStore."""
    assert isinstance(open_store("memory://"), MemoryStore)


def test_open_none_is_the_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """None opens pqlkit.db in the current directory."""
    monkeypatch.chdir(tmp_path)
    store = open_store(None)
    try:
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / sqlite_module.DEFAULT_SQLITE_PATH)
    finally:
        store.close()


def test_open_store_instance_is_returned_as_is() -> None:
    """A Store instance is returned unchanged."""
    store = MemoryStore()
    assert open_store(store) is store


@pytest.mark.parametrize(
    "url", ["postgresql://jane:s3cret@db/pql", "postgres://jane:s3cret@db/pql"]
)
def test_open_postgres_without_postgres_store(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A postgres URL without an importable PostgresStore raises StoreError, hiding the URL."""
    monkeypatch.setitem(sys.modules, "pqlkit.stores.postgres", None)
    with pytest.raises(StoreError, match="PostgresStore") as caught:
        open_store(url)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "pql.db",
        "",
        "mysql://jane:s3cret@db/pql",
        "sqlite://host/pql.db",
        "sqlite:///",
        "sqlite:///pql.db?mode=ro",
        "memory://somewhere",
        42,
    ],
)
def test_open_bad_url(url: str) -> None:
    """Anything else is a ValidationError on the "store" field, without the URL in it."""
    with pytest.raises(ValidationError) as caught:
        open_store(url)
    assert caught.value.field == "store"
    assert "s3cret" not in str(caught.value)


# -- migrations ------------------------------------------------------------------------


def make_v1_database(
    path: Path, deliveries: list[tuple[str, str, str]], *, version: int = 1
) -> None:
    """A database as pqlkit's schema version 1 wrote it, with (id, model, status) deliveries,
    then migrated up to ``version``."""
    from sqlite_utils import Database

    db = Database(sqlite3.connect(path, isolation_level=None))
    sqlite_module._MIGRATIONS[0](db)
    db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER)")
    db.execute("INSERT INTO schema_version VALUES (1, 0)")
    for created, (delivery_id, model, status) in enumerate(deliveries, start=1):
        payload = {
            "id": delivery_id,
            "kind": "pql",
            "subject_id": "u1",
            "account_id": None,
            "model": model,
            "fingerprint": "f",
            "qualified_at": T0.isoformat(),
        }
        db.execute(
            "INSERT INTO deliveries (id, kind, subject_id, qualification, status, attempts,"
            " created) VALUES (?, 'pql', 'u1', ?, ?, 1, ?)",
            (delivery_id, dumps(payload), status, created),
        )
    for target in range(2, version + 1):
        sqlite_module._MIGRATIONS[target - 1](db)
        db.execute("INSERT INTO schema_version VALUES (?, 0)", (target,))
    db.close()


def test_a_version_1_database_is_migrated_with_its_deliveries(db_path: Path) -> None:
    """A database of schema version 1 is upgraded: its deliveries keep their model and status."""
    make_v1_database(db_path, [("d1", "a", "pending"), ("d2", "b", "pending"), ("d3", "a", "dead")])
    with SQLiteStore(db_path) as store, store.transaction() as tx:
        assert [d.id for d in tx.deliveries("pending", model="a")] == ["d1"]
        assert [d.id for d in tx.deliveries("pending", model="b")] == ["d2"]
        assert [d.id for d in tx.deliveries("dead", model="a")] == ["d3"]


def test_a_version_3_database_gets_nudges_and_ranks(db_path: Path) -> None:
    """Upgrading from version 3 adds the nudge inbox and the ranks index, keeping what was
    stored (a delivery, a state); both work at once, and the version is recorded."""
    make_v1_database(db_path, [("d1", "m", "pending")], version=3)
    with sqlite3.connect(db_path) as other:
        assert other.execute("SELECT max(version) FROM schema_version").fetchone() == (3,)
        names = {row[0] for row in other.execute("SELECT name FROM sqlite_master")}
    other.close()
    assert not {"nudges", "ranks"} & names  # a true version 3 schema
    with SQLiteStore(db_path) as store, store.transaction() as tx:
        assert [d.id for d in tx.deliveries("pending")] == ["d1"]
        tx.save_state(StateRecord("m", "user", "u1", "s"))
        tx.save_ranks("m", "user", "u1", [Rank("behavior", 5.0)])
        assert tx.top_ranks("m", "user", "behavior", 1) == [("u1", 5.0)]
        assert tx.open_nudge(NudgeRecord("u1", "k", None, T0), T0) is True
        assert tx.open_nudge(NudgeRecord("u1", "k", None, T0), T0) is False
        assert [n.key for n in tx.nudges("u1", T0)] == ["k"]
    with sqlite3.connect(db_path) as other:
        rows = other.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    other.close()
    assert [v for (v,) in rows] == list(range(1, sqlite_module.SCHEMA_VERSION + 1))


def test_a_version_4_database_gets_suppressions(db_path: Path) -> None:
    """Upgrading from version 4 adds the suppressions table, keeping what was stored (a
    delivery, a nudge); suppressions work at once, and the version is recorded."""
    make_v1_database(db_path, [("d1", "m", "pending")], version=4)
    with sqlite3.connect(db_path) as other:
        other.execute(
            "INSERT INTO nudges (user_id, key, created_at, status) VALUES ('u1', 'k', 0, 'open')"
        )
        names = {row[0] for row in other.execute("SELECT name FROM sqlite_master")}
    other.close()
    assert "suppressions" not in names  # a true version 4 schema
    with SQLiteStore(db_path) as store, store.transaction() as tx:
        assert [d.id for d in tx.deliveries("pending")] == ["d1"]
        assert [n.key for n in tx.nudges("u1", T0)] == ["k"]
        assert tx.has_suppressions() is False
        assert tx.suppress("digest", T0) is True
        assert tx.drop_suppressed(["other", "digest"]) is True
        assert tx.suppressed_calls() == 1
    with sqlite3.connect(db_path) as other:
        rows = other.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    other.close()
    assert [v for (v,) in rows] == list(range(1, sqlite_module.SCHEMA_VERSION + 1))


def test_a_version_5_database_gets_checkpoints(db_path: Path) -> None:
    """Upgrading from version 5 adds the checkpoints table (retention, version 7), keeping what was
    stored; checkpoints work at once, and the version is recorded."""
    make_v1_database(db_path, [("d1", "m", "pending")], version=5)
    with sqlite3.connect(db_path) as other:
        names = {row[0] for row in other.execute("SELECT name FROM sqlite_master")}
    other.close()
    assert "checkpoints" not in names  # a true version 5 schema
    with SQLiteStore(db_path) as store, store.transaction() as tx:
        assert [d.id for d in tx.deliveries("pending")] == ["d1"]
        tx.save_checkpoint("m", "user", "u1", "[1]", 3, ["acme"])
        assert tx.load_checkpoint("m", "user", "u1") == ("[1]", 3)
        assert tx.checkpoint_accounts(["u1"]) == {"acme"}
    with sqlite3.connect(db_path) as other:
        rows = other.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    other.close()
    assert [v for (v,) in rows] == list(range(1, sqlite_module.SCHEMA_VERSION + 1))
    assert sqlite_module.SCHEMA_VERSION == 7


def test_a_version_2_database_is_migrated_to_a_record_per_callback(db_path: Path) -> None:
    """Upgrading from version 2: a pending delivery waits for callbacks (each registered one
    gets a record), delivered and dead ones become records of callback "*" (never delivered
    again; a dead one, retried, goes to every callback)."""
    rows = [("d1", "m", "pending"), ("d2", "m", "delivered"), ("d3", "m", "dead")]
    make_v1_database(db_path, rows, version=2)
    now = datetime.now(timezone.utc)
    with SQLiteStore(db_path) as store, store.transaction() as tx:
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
    with sqlite3.connect(db_path) as other:
        rows = other.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    other.close()
    assert [v for (v,) in rows] == list(range(1, sqlite_module.SCHEMA_VERSION + 1))


# -- read-only ---------------------------------------------------------------------------


def test_read_only_reads_and_never_writes(db_path: Path) -> None:
    """``read_only=True`` reads a store; a write raises StoreError; a writer is not held up
    while a read-only transaction is open."""
    with SQLiteStore(db_path) as store, store.transaction() as tx:
        tx.insert_event(event("m1"))
    with SQLiteStore(db_path, read_only=True) as reader:
        assert "read-only" in repr(reader)
        assert message_ids(reader) == ["m1"]
        with pytest.raises(StoreError, match="read"), reader.transaction() as tx:
            tx.insert_event(event("m2"))
        with reader.transaction() as tx, SQLiteStore(db_path, timeout=1) as writer:
            assert [e.message_id for e in tx.events()] == ["m1"]
            with writer.transaction() as wtx:  # no write lock held by the reader
                wtx.insert_event(event("m3"))
    with SQLiteStore(db_path) as store:
        assert message_ids(store) == ["m1", "m3"]


def test_read_only_leaves_the_file_as_it_is(db_path: Path) -> None:
    """Opening read-only and reading changes no byte of the file."""
    with SQLiteStore(db_path) as store, store.transaction() as tx:
        tx.insert_event(event("m1"))
    before = db_path.read_bytes()
    with SQLiteStore(db_path, read_only=True) as reader:
        assert message_ids(reader) == ["m1"]
    assert db_path.read_bytes() == before


def test_read_only_refuses_what_is_no_store(db_path: Path, tmp_path: Path) -> None:
    """A missing file (never created), ``:memory:``, a file without pqlkit's tables, or one
    of an older schema version: each refused, nothing written."""
    with pytest.raises(StoreError, match="no SQLite file"):
        SQLiteStore(db_path, read_only=True)
    assert not db_path.exists()
    with pytest.raises(StoreError, match="no SQLite file"):
        SQLiteStore(":memory:", read_only=True)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(SchemaError, match="not a pqlkit store"):
        SQLiteStore(other, read_only=True)
    make_v1_database(db_path, [])
    before = db_path.read_bytes()
    with pytest.raises(SchemaError, match="open it once with a Client"):
        SQLiteStore(db_path, read_only=True)
    assert db_path.read_bytes() == before
    with pytest.raises(StoreError, match="no SQLite file"):
        open_store(f"sqlite:///{tmp_path / 'missing.db'}", read_only=True)
    with pytest.raises(StoreError, match="nothing to read"):
        open_store("memory://", read_only=True)


# -- the lean event row (schema version 6) -------------------------------------------------

DATA = Path(__file__).resolve().parent / "data"


def _release_file(db_path: Path) -> dict[str, Any]:
    """A copy of ``tests/data/v5_store.db`` (written by the release before version 6:
    ``tests/data/make_v5_store.py``) at ``db_path``, and what that release read in it."""
    import shutil

    shutil.copyfile(DATA / "v5_store.db", db_path)
    expected: dict[str, Any] = json.loads((DATA / "v5_store.json").read_text())
    return expected


def test_a_file_made_by_the_version_5_release_reads_back_the_same(db_path: Path) -> None:
    """The release's file, opened by this code, is migrated in place; every event (its
    message id exactly as given, packed or not), state, qualification and delivery
    payload reads back as that release stored it."""
    expected = _release_file(db_path)
    with sqlite3.connect(db_path) as other:
        assert other.execute("SELECT max(version) FROM schema_version").fetchone() == (5,)
    other.close()
    with SQLiteStore(db_path) as store, store.transaction() as tx:
        events = [
            [
                e.seq,
                e.message_id,
                e.user_id,
                e.event,
                dumps(e.properties),
                e.account_id,
                to_us(e.timestamp),
            ]
            for e in tx.events()
        ]
        states = [
            list(attrs.astuple(tx.load_state(m, k, s)))[:5]  # type: ignore[arg-type]
            for m, k, s, _, _ in expected["states"]
        ]
        quals = [
            [
                *(q.id, q.model, q.kind, q.subject_id, q.round, q.fingerprint),
                *(to_us(q.qualified_at), to_us(q.first_seen), q.disqualified_at),
            ]
            for q in tx.qualifications("data-tooling")
        ]
        payloads = {
            record.id: found
            for record, found in tx.recent_qualifications(
                "data-tooling", kinds=["pql", "pqa"], limit=100
            )
        }
        for mid in {e[1] for e in expected["events"]}:
            assert tx.has_message(mid)
    assert events == [[*e[:4], dumps(json.loads(e[4])), *e[5:]] for e in expected["events"]]
    assert states == [
        [m, k, s, st, None if due is None else from_us(due)]
        for m, k, s, st, due in expected["states"]
    ]
    assert quals == expected["qualifications"]
    assert {k: json.loads(dumps(json_converter.unstructure(v))) for k, v in payloads.items()} == {
        i: json.loads(text) for i, text in expected["deliveries"]
    }
    # every kind of id the generator passed is in the file
    assert set(expected["given"]) <= {e[1] for e in expected["events"]}
    with sqlite3.connect(db_path) as other:
        kinds = dict(
            other.execute("SELECT typeof(message_id), count(*) FROM events GROUP BY 1").fetchall()
        )
        assert other.execute("SELECT max(version) FROM schema_version").fetchone() == (
            sqlite_module.SCHEMA_VERSION,
        )
        assert (
            other.execute("SELECT name FROM sqlite_sequence WHERE name = 'events'").fetchall() == []
        )
    other.close()
    texts = len(expected["given"]) - 1  # all but the lowercase UUID
    assert kinds == {"blob": len(expected["events"]) - texts, "text": texts}


def test_tracking_goes_on_in_a_migrated_file_above_every_forgotten_seq(db_path: Path) -> None:
    """After the migration a Client tracks on: repeated message ids are still refused (packed
    and text ones), and a new event gets a seq above the release's forgotten newest one."""
    expected = _release_file(db_path)
    forgotten = expected["sqlite_sequence"]
    assert forgotten > expected["events"][-1][0]  # the file's newest event was forgotten
    sys.path.insert(0, str(DATA.parent.parent / "examples"))
    import data_tooling

    from pqlkit import Client
    from pqlkit.testing import FrozenClock

    clock = FrozenClock(datetime.fromisoformat(expected["clock"]) + timedelta(minutes=1))
    with Client(data_tooling.model, store=f"sqlite:///{db_path}", clock=clock) as client:
        client.on_pql(lambda q: None)
        client.on_pqa(lambda q: None)
        for mid in ("0195f3a2-7c1e-7d4a-9b2c-3d4e5f607182", "order-17", "ünïcode-id-✓"):
            assert client.track("user-1", "login", message_id=mid).duplicate
        before = client.explain("user-1")
        fresh = client.track("user-1", "dashboard_built", account_id="acct-1")
        assert not fresh.duplicate
        assert client.explain("user-1") != before
    with SQLiteStore(db_path) as store, store.transaction() as tx:
        newest = list(tx.events(after_seq=expected["events"][-1][0]))
    assert [e.event for e in newest] == ["dashboard_built"]
    assert newest[0].seq == forgotten + 1


def test_an_event_name_first_seen_in_a_rolled_back_transaction_is_named_again(
    sqlite_store: SQLiteStore,
) -> None:
    """Event names are stored once (``event_names``): a name first seen in a transaction
    that rolls back is gone with it, and the next event with that name stores it again."""

    class Boom(Exception):
        pass

    def first_then_fail() -> None:
        with sqlite_store.transaction() as tx:
            assert tx.insert_event(NewEvent("m1", "u1", "brand_new ✓", {}, None, T0)) is not None
            raise Boom

    with pytest.raises(Boom):
        first_then_fail()
    with sqlite_store.transaction() as tx:
        assert tx.insert_event(NewEvent("m2", "u1", "brand_new ✓", {}, None, T0)) is not None
        assert tx.insert_event(NewEvent("m3", "u2", "brand_new ✓", {}, None, T0)) is not None
        assert tx.insert_event(NewEvent("m2", "u1", "other", {}, None, T0)) is None  # duplicate
        assert [(e.message_id, e.event) for e in tx.events()] == [
            ("m2", "brand_new ✓"),
            ("m3", "brand_new ✓"),
        ]
    conn = sqlite3.connect(sqlite_store.path)
    try:
        names = conn.execute("SELECT name FROM event_names ORDER BY name").fetchall()
        kinds = conn.execute("SELECT DISTINCT typeof(event) FROM events").fetchall()
    finally:
        conn.close()
    assert kinds == [("integer",)]
    assert ("brand_new ✓",) in names


def test_a_migration_to_version_6_that_fails_leaves_the_file_as_it_was(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version-6 migration runs in one transaction: failing after it rewrote the events
    table, it leaves the release's file intact (its version, its rows), and the next open
    migrates it."""
    expected = _release_file(db_path)
    real = sqlite_module._MIGRATIONS[5]

    def rewrite_then_fail(db: Any) -> None:
        real(db)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(
        sqlite_module, "_MIGRATIONS", [*sqlite_module._MIGRATIONS[:5], rewrite_then_fail]
    )
    with pytest.raises(StoreError):
        SQLiteStore(db_path).close()
    with sqlite3.connect(db_path) as other:
        assert other.execute("SELECT max(version) FROM schema_version").fetchone() == (5,)
        stored = other.execute(
            "SELECT seq, message_id, user_id, event, properties, account_id, ts FROM events"
            " ORDER BY seq"
        ).fetchall()
    other.close()
    assert [list(row) for row in stored] == expected["events"]
    monkeypatch.undo()
    with SQLiteStore(db_path) as store, store.transaction() as tx:
        assert [e.message_id for e in tx.events()] == [e[1] for e in expected["events"]]


_UUID_LIKE = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(
        _UUID_LIKE
        | st.text(alphabet="0123456789abcdefABCDEF- {}xz", min_size=30, max_size=40)
        | st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s and s.strip()),
        min_size=1,
        max_size=8,
        unique=True,
    )
)
def test_every_message_id_reads_back_exactly_as_given(
    tmp_path_factory: Any, ids: list[str]
) -> None:
    """UUID-shaped ids are packed into 16 bytes, others kept as text: either way an id reads
    back exactly as given, and a repeat of it is a duplicate."""
    path = tmp_path_factory.mktemp("ids") / "ids.db"
    with SQLiteStore(path) as store:
        with store.transaction() as tx:
            for mid in ids:
                assert tx.insert_event(NewEvent(mid, "u1", "login", {}, None, T0)) is not None
        with store.transaction() as tx:
            assert [e.message_id for e in tx.events()] == ids
            assert [e.message_id for e in tx.recent_events(["u1"], 100)] == ids[::-1]
            for mid in ids:
                assert tx.has_message(mid)
                assert tx.insert_event(NewEvent(mid, "u2", "login", {}, None, T0)) is None
