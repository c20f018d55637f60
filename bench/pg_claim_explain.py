"""EXPLAIN ANALYZE of the PostgresStore outbox claim with nothing pending, after N deliveries.

What it shows: whether the claim reads what earlier deliveries left behind (issue 20: the
claim read every dead index entry of delivered rows once autovacuum lagged). One Client on
a schema of its own (dropped at the end), autovacuum off for its tables, inline dispatch,
a no-op ``on_pql`` callback; N users qualify and are delivered; then the claim statement
runs three times under EXPLAIN (ANALYZE, BUFFERS) and the last plan is printed. It runs
on schema versions 2 (the claim by kind) and 3 (by callback), so a checkout of either
can be measured with the same script.

    PYTHONPATH=src .venv/bin/python bench/pg_claim_explain.py 20000
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg import sql

from pqlkit import Client, Model, count, did
from pqlkit.stores import PostgresStore
from pqlkit.stores import postgres as pg
from pqlkit.testing import FrozenClock

DSN = os.environ.get("PQLKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
MODEL = Model(
    "soak", signals={"active": did("login")}, scores={"events": count()}, pql=count() >= 2
)


def us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def main() -> int:
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    schema = f"pqlkit_explain_{os.getpid()}"
    store = PostgresStore(DSN, schema=schema)
    with psycopg.connect(DSN, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchall()
        for (table,) in tables:
            conn.execute(
                sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(
                    sql.Identifier(schema, table)
                )
            )
    clock = FrozenClock(T0)
    client = Client(MODEL, store=store, clock=clock)
    try:
        client.on_pql(lambda q: None)
        for user in range(users):
            for _ in range(2):  # the second event qualifies the user
                clock.advance(timedelta(seconds=1))
                client.track(f"u{user}", "login")
        wall = datetime.now(timezone.utc)
        params: dict[str, object] = {
            "lease_until": us(wall),
            "model": MODEL.name,
            "now": us(clock.now()),
            "wall_now": us(wall),
            "limit": 1,
            "ids": None,
        }
        if pg.SCHEMA_VERSION >= 3:
            params["callbacks"] = ["pql:nobody"]
        else:
            params["kinds"] = ["pql"]
        with psycopg.connect(DSN, autocommit=True) as conn:
            claim = sql.SQL(pg._STATEMENTS["claim_due"]).format(s=sql.Identifier(schema))
            statement = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) ") + claim
            for _ in range(3):
                conn.execute("BEGIN")
                rows = conn.execute(statement, params).fetchall()
                conn.execute("ROLLBACK")
            print(f"schema version {pg.SCHEMA_VERSION}, {users} users delivered")
            print("\n".join(row[0] for row in rows))
    finally:
        client.close()
        store.close()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
