"""forget() leaves nothing: no byte of a forgotten user in the store's files or rows."""

from __future__ import annotations

import os
import stat
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


def test_forget_leaves_no_byte_of_the_user_in_the_sqlite_files(tmp_path: Path) -> None:
    """After forget(), the database file, its -wal and -shm hold neither the user's id nor
    any of its values: not in another model's states, payloads, freed pages or the WAL."""
    path = tmp_path / "pqlkit.db"
    store_a, store_b = SQLiteStore(path), SQLiteStore(path)
    client = _fill(store_a, store_b)
    assert _file_hits(path)  # it is there before
    client.forget(USER)
    assert _file_hits(path) == {}
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
