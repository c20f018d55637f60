"""forget() leaves nothing: no byte of a forgotten user in the store's files or rows."""

from __future__ import annotations

import os
import sqlite3
import stat
import zlib
from pathlib import Path

import pytest

import pqlkit
from conftest import new_postgres_schema, require_postgres
from pqlkit.stores import SQLiteStore, Store

USER = "jane-7f3a91"
VALUES = ("jane.doe@example.org", "Jane Quixote", "+44-7700-900123", "Quixote Lane 12")
OTHER = ("bob.smith@example.org", "Bob Smith")


def _models() -> tuple[pqlkit.Model, pqlkit.Model]:
    """Two model names (a current one and an old version) reading the users' values."""
    old = pqlkit.Model(
        "pql-v1",
        signals={"mail": pqlkit.did("signup"), "who": pqlkit.last("signup", "name") == "x"},
        scores={"users": pqlkit.active_users()},
        pql=pqlkit.did("signup"),
        pqa=pqlkit.active_users() >= 1,
    )
    new = pqlkit.Model(
        "pql-v2",
        signals={"mail": pqlkit.last("signup", "email") == "x", "x": pqlkit.did("signup")},
        pql=pqlkit.did("signup"),
        pqa=pqlkit.active_users() >= 1,
    )
    return old, new


def _fill(store_a: Store, store_b: Store) -> pqlkit.Client:
    """Track the user (and another one) under two model names; an account payload mentions
    the user. Returns the current model's client (still open)."""
    old, new = _models()
    with pqlkit.Client(old, store=store_a) as client:
        client.on_pqa(lambda q: None)
        client.identify(USER, {"phone": VALUES[2], "street": VALUES[3]}, account_id="acme")
        client.track(USER, "signup", {"email": VALUES[0], "name": VALUES[1]}, account_id="acme")
        client.track("bob", "signup", {"email": OTHER[0], "name": OTHER[1]}, account_id="acme")
    current = pqlkit.Client(new, store=store_b)
    got: list[pqlkit.Qualification] = []
    current.on_pqa(got.append)
    current.on_pql(lambda q: None)
    current.track(USER, "login", {"email": VALUES[0]}, account_id="acme")
    current.track("bob", "login", account_id="acme")
    current.flush()
    # the account's payload quotes the user (the precondition of the test)
    assert any(VALUES[0] in str(q.explanation) + str(q.context) for q in got)
    return current


def _hits(data: bytes) -> list[str]:
    return [v for v in (USER, *VALUES) if v.encode() in data]


def _file_hits(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for suffix in ("", "-wal", "-shm", "-journal"):
        f = Path(f"{path}{suffix}")
        if f.exists() and (hits := _hits(f.read_bytes())):
            found[f.name] = hits
    return found


def _payload_hits(path: Path) -> list[str]:
    """The user's id and values found in the outbox payloads, read uncompressed (SQLite
    stores them zlib-compressed: the raw bytes of the file would not show them)."""
    conn = sqlite3.connect(path)
    try:
        stored = [row[0] for row in conn.execute("SELECT qualification FROM deliveries")]
    finally:
        conn.close()
    assert stored
    assert all(isinstance(value, bytes) for value in stored)
    return _hits(b"".join(zlib.decompress(value) for value in stored))


def test_forget_leaves_no_byte_of_the_user_in_the_sqlite_files(tmp_path: Path) -> None:
    """After forget(), the database file, its -wal and -shm hold neither the user's id nor
    any of its values: not in another model's states, payloads, freed pages or the WAL."""
    path = tmp_path / "pqlkit.db"
    store_a, store_b = SQLiteStore(path), SQLiteStore(path)
    client = _fill(store_a, store_b)
    assert _file_hits(path)  # it is there before
    assert _payload_hits(path)
    client.forget(USER, suppress=True)  # (the suppression keeps only a digest of the id)
    assert _file_hits(path) == {}
    assert _payload_hits(path) == []
    # the other user is untouched, and the old model's account is rebuilt without the user
    assert OTHER[0].encode() in path.read_bytes() + Path(f"{path}-wal").read_bytes()
    client.close()
    old, _ = _models()
    with pqlkit.Client(old, store=store_a) as again:
        assert again.scores("acme", of="account")["users"] == 1
    assert _file_hits(path) == {}
    store_a.close()
    store_b.close()


def test_forget_leaves_nothing_in_any_postgres_row() -> None:
    """After forget(vacuum=True), no row of any table of the schema (as text) holds the
    user's id or any of its values."""
    import psycopg
    from psycopg import sql

    from pqlkit.stores.postgres import PostgresStore

    dsn = require_postgres()
    schema = new_postgres_schema()
    store_a, store_b = PostgresStore(dsn, schema=schema), PostgresStore(dsn, schema=schema)
    client = _fill(store_a, store_b)

    def hits() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        with psycopg.connect(dsn, autocommit=True) as conn:
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            ).fetchall()
            for (table,) in tables:
                query = sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(schema, table))
                text = "\n".join(row[0] for row in conn.execute(query))
                if found_here := _hits(text.encode()):
                    found[table] = found_here
        return found

    assert hits()
    client.forget(USER, vacuum=True)
    assert hits() == {}
    client.close()
    store_a.close()
    store_b.close()


def test_a_new_sqlite_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """SQLiteStore creates its file (and SQLite its -wal and -shm) with mode 0600."""
    path = tmp_path / "pqlkit.db"
    with SQLiteStore(path) as store, store.transaction() as tx:
        tx.set_meta("k", "v")
        modes = {
            name: stat.S_IMODE(os.stat(tmp_path / name).st_mode)
            for name in ("pqlkit.db", "pqlkit.db-wal", "pqlkit.db-shm")
        }
    assert modes == {"pqlkit.db": 0o600, "pqlkit.db-wal": 0o600, "pqlkit.db-shm": 0o600}


def test_the_file_mode_is_settable_and_an_existing_file_keeps_its_own(tmp_path: Path) -> None:
    """SQLiteStore(path, mode=0o640) creates the file 0640; an existing file is not chmod-ed."""
    path = tmp_path / "shared.db"
    SQLiteStore(path, mode=0o640).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    os.chmod(path, 0o644)
    SQLiteStore(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_a_bad_mode_is_refused(tmp_path: Path) -> None:
    """A mode that is not permission bits is a ValidationError naming mode."""
    with pytest.raises(pqlkit.ValidationError) as info:
        SQLiteStore(tmp_path / "x.db", mode=0o1777)
    assert info.value.field == "mode"


def test_secure_delete_is_on(tmp_path: Path) -> None:
    """Every connection the store opens zeroes deleted content (PRAGMA secure_delete)."""
    with SQLiteStore(tmp_path / "x.db") as store, store.transaction() as tx:
        assert tx._conn.execute("PRAGMA secure_delete").fetchone()[0] == 1


# -- suppression -----------------------------------------------------------------------


def test_a_suppressed_user_is_dropped_until_unsuppressed(store: Store) -> None:
    """After forget(user, suppress=True), track(), identify() and alias() for it store
    nothing (TrackResult.suppressed, counted in stats()); unsuppress() lifts it."""
    model = pqlkit.Model("m", signals={"in": pqlkit.did("login")}, pql=pqlkit.did("login"))
    with pqlkit.Client(model, store=store) as client:
        client.track(USER, "login", {"email": VALUES[0]})
        client.forget(USER, suppress=True)
        result = client.track(USER, "login", {"email": VALUES[0]})
        assert result.suppressed is True
        assert result == pqlkit.TrackResult.from_dict(result.to_dict())
        client.identify(USER, {"email": VALUES[0]})
        client.alias(USER, "someone-else")
        client.alias("anon-1", USER)
        assert client.track("bob", "login").suppressed is False
        with store.transaction() as tx:
            assert list(tx.events(user_ids=[USER])) == []
            assert tx.traits("user", USER) == {}
            assert tx.resolve(USER) == USER
            assert tx.resolve("anon-1") == "anon-1"
            assert USER not in str(tx.get_meta("suppression:key"))
        assert client.stats().suppressed == 4
        assert client.unsuppress(USER) is True
        assert client.unsuppress(USER) is False
        assert client.track(USER, "login").suppressed is False
        with store.transaction() as tx:
            assert len(list(tx.events(user_ids=[USER]))) == 1


def test_a_stale_client_in_another_process_drops_a_suppressed_user(tmp_path: Path) -> None:
    """A client that started before the suppression (and whose cache saw none) drops the
    user's events once another process's client suppressed it."""
    import multiprocessing

    path = tmp_path / "pqlkit.db"
    model = pqlkit.Model("m", signals={"in": pqlkit.did("login")}, pql=pqlkit.did("login"))
    store = SQLiteStore(path)
    with pqlkit.Client(model, store=store) as stale:
        assert stale.track(USER, "login").suppressed is False  # warm: it saw no suppression
        assert stale.track("bob", "login").suppressed is False
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(target=_forget_in_child, args=(str(path),))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        assert stale.track(USER, "login").suppressed is True
        assert stale.track("bob", "login").suppressed is False
        assert stale.stats().suppressed == 1
    store.close()


def _forget_in_child(path: str) -> None:
    model = pqlkit.Model("m", signals={"in": pqlkit.did("login")}, pql=pqlkit.did("login"))
    with pqlkit.Client(model, store=SQLiteStore(path)) as client:
        client.forget(USER, suppress=True)


def test_forget_preview_counts_what_forget_deletes(store: Store) -> None:
    """forget_preview() counts the user's rows per table (every model's states) and
    changes nothing; after forget() it counts none."""
    old, new = _models()
    with pqlkit.Client(old, store=store) as first:
        first.identify(USER, {"phone": VALUES[2]})
        first.track(USER, "signup", {"email": VALUES[0]}, account_id="acme")
    with pqlkit.Client(new, store=store) as client:
        client.track("anon-1", "login", account_id="acme")
        client.alias("anon-1", USER)
        client.track(USER, "login", account_id="acme")
        client.nudge(USER, "tour", {"step": 1})
        before = client.forget_preview(USER)
        assert client.forget_preview("anon-1") == before
        assert before == {
            "events": 3,
            "traits": 1,
            "aliases": 1,
            "nudges": 1,
            "states": 2,  # one per model
            "ranks": 0,
            "qualifications": 2,  # a PQL per model
            "deliveries": 2,
            "account payloads to redact": 2,
            "accounts to rebuild": 1,
        }
        client.forget(USER)
        after = client.forget_preview(USER)
        assert sum(n for name, n in after.items() if "account" not in name) == 0
