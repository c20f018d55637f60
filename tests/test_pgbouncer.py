"""PostgresStore behind PgBouncer in transaction pooling mode.

docs/deployment.md, "Behind PgBouncer", says what to set.

The suite starts its own PgBouncer (tests/pgbouncer.py; ``make pgbouncer`` installs it).
The shared store suite also runs through it (the ``postgres-pgbouncer`` store), and
tests/test_concurrency.py runs processes through it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from conftest import T0, drop_postgres_schemas, new_postgres_schema, with_query
from pgbouncer import pgbouncer, pgbouncer_dsn
from pqlkit import Client, Model, count
from pqlkit.exceptions import TransientStoreError, ValidationError
from pqlkit.stores.postgres import PostgresStore
from pqlkit.testing import FrozenClock

pytestmark = pytest.mark.postgres

MODEL = Model("bouncer", scores={"events": count(), "logins": count("login")}, pql=count() >= 25)


@pytest.fixture(name="schema")
def fixture_schema() -> Any:
    name = new_postgres_schema()
    yield name
    drop_postgres_schemas(name)


def _threshold(store: PostgresStore) -> int | None:
    conn = store._getconn()
    try:
        return conn.prepare_threshold
    finally:
        store._pool().putconn(conn)


def test_the_url_says_pgbouncer_and_nothing_is_prepared(postgres_dsn: str, schema: str) -> None:
    """``?pgbouncer=true`` turns preparing off (and is not passed on to libpq)."""
    with PostgresStore(with_query(postgres_dsn, "pgbouncer=true"), schema=schema) as store:
        assert _threshold(store) is None
    with PostgresStore(with_query(postgres_dsn, "pgbouncer=false"), schema=schema) as store:
        assert _threshold(store) == 5
    with pytest.raises(ValidationError, match=r"dsn.*pgbouncer='yes please' must be true"):
        PostgresStore(with_query(postgres_dsn, "pgbouncer=yes%20please"), schema=schema)


def test_a_connection_lost_mid_transaction_is_a_transient_error(
    postgres_dsn: str, schema: str
) -> None:
    """What a restart of PgBouncer (or of the server) does to a transaction in flight: its
    connection breaks. That is TransientStoreError, which the Client retries (it was a
    plain StoreError before), and the store goes on with a new connection."""

    def lose_the_connection(store: PostgresStore) -> None:
        with store.transaction() as tx:
            tx.set_meta("k", "lost")
            backend = tx._cur.connection.info.backend_pid
            with psycopg.connect(postgres_dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s, 5000)", (backend,))
            tx.set_meta("k", "lost too")

    with PostgresStore(postgres_dsn, schema=schema, min_size=1, max_size=1) as store:
        with pytest.raises(TransientStoreError, match=r"connection to PostgreSQL .* was lost"):
            lose_the_connection(store)
        with store.transaction() as tx:
            assert tx.get_meta("k") is None  # rolled back with the connection
            tx.set_meta("k", "kept")
        with store.transaction() as tx:
            assert tx.get_meta("k") == "kept"


@pytest.mark.pgbouncer
def test_a_store_not_told_about_pgbouncer_finds_out_and_stops_preparing(schema: str) -> None:
    """Without ``?pgbouncer=true``, psycopg prepares a statement after 5 runs; two pooled
    connections then meet each other's statements on PgBouncer's one server connection
    ("prepared statement "_pg3_0" already exists", or "does not exist"). Before the fix
    track() raised StoreError at once; now the store stops preparing and the Client's
    retry succeeds: every event is counted once."""
    dsn = with_query(pgbouncer_dsn(), f"schema={schema}")
    store = PostgresStore(dsn, min_size=2, max_size=2)
    with Client(MODEL, store=store, clock=FrozenClock(T0)) as client:
        for i in range(60):
            client.track(f"u{i % 3}", "login", message_id=f"m{i}", timestamp=T0)
        assert [client.scores(f"u{u}")["logins"] for u in range(3)] == [20, 20, 20]
    assert store._prepare_threshold is None  # it found out
    store.close()


@pytest.mark.pgbouncer
def test_a_schema_is_created_through_pgbouncer_after_others_prepared_statements() -> None:
    """A client that prepared statements through PgBouncer (one not told, before it finds
    out) leaves them on the server connection. A schema's migration runs one statement
    per version, and psycopg prepared it from its sixth run (schema 7 has seven): it met
    ``_pg3_0 already exists`` and the store could not be created (found by the whole
    suite, where four processes not told had tracked through PgBouncer before). The
    migration prepares nothing now."""
    with psycopg.connect(pgbouncer_dsn()) as polluter:  # prepares "_pg3_0", left behind
        for i in range(8):
            polluter.execute("SELECT %s::int + 1", (i,))
    schemas = [new_postgres_schema() for _ in range(3)]
    try:
        for name in schemas:
            url = with_query(with_query(pgbouncer_dsn(), "pgbouncer=true"), f"schema={name}")
            PostgresStore(url).close()
    finally:
        drop_postgres_schemas(*schemas)


@pytest.mark.slow
@pytest.mark.pgbouncer
def test_pgbouncer_restarting_mid_run_loses_and_doubles_nothing(schema: str) -> None:
    """Two threads track through PgBouncer while it is stopped (dropping every connection,
    some mid-transaction or mid-COMMIT) and started again, three times: every call returns
    (the lost connections are retried as transient errors), every event is stored once."""
    bouncer = pgbouncer()
    if bouncer is None:
        pytest.skip("PQLKIT_TEST_PGBOUNCER_DSN names a PgBouncer this suite cannot restart")
    url = with_query(with_query(bouncer.dsn, "pgbouncer=true"), f"schema={schema}")
    errors: list[str] = []
    acknowledged: list[str] = []
    stop = threading.Event()
    with Client(MODEL, store=url, clock=FrozenClock(T0)) as client:

        def track(worker: int) -> None:
            i = 0
            while not stop.is_set():
                message_id = f"w{worker}-{i}"
                try:
                    client.track(f"u{i % 5}", "login", message_id=message_id, timestamp=T0)
                except Exception as error:  # reported below
                    errors.append(f"{type(error).__name__}: {error}")
                else:
                    acknowledged.append(message_id)
                i += 1

        threads = [threading.Thread(target=track, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(3):
                time.sleep(0.5)
                before = len(acknowledged)
                bouncer.restart(down=0.3)
                # tracking goes on once the pool has reconnected (its backoff starts at 1 s)
                deadline = time.monotonic() + 30
                while len(acknowledged) < before + 20 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert len(acknowledged) >= before + 20
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        assert errors == []
        with psycopg.connect(pgbouncer_dsn()) as conn:
            stored = Counter(
                row[0] for row in conn.execute(f'SELECT message_id FROM "{schema}".events')
            )
        assert set(stored.values()) == {1}  # nothing doubled
        assert set(stored) == set(acknowledged)  # nothing acknowledged lost, nothing extra
        by_user = Counter(f"u{int(m.split('-')[1]) % 5}" for m in acknowledged)
        for user, n in by_user.items():
            assert client.scores(user)["logins"] == n
