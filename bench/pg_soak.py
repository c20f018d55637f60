"""PostgresStore ``track()`` throughput over a long run, with autovacuum off.

What it shows: whether throughput holds as the outbox churns (issue 20: delivered
outbox rows were never removed and the claim query read every dead index entry, so
throughput fell from 1,131 to 530-640 ``track()``/s within a minute).

One Client on a schema of its own (``pqlkit_soak_<pid>``, dropped at the end), inline
dispatch, a no-op ``on_pql`` callback, a model under which every new user qualifies
on its second event, so each user adds a qualification and a delivery. Autovacuum is
off for every table of the schema, as on a server whose autovacuum lags. Prints
``track()``/s for each minute and the last minute's rate as a share of the first's.

    .venv/bin/python bench/pg_soak.py                 # 10 minutes
    .venv/bin/python bench/pg_soak.py --minutes 2 --window 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg import sql

from pqlkit import Client, Model, count, did
from pqlkit.stores import PostgresStore
from pqlkit.testing import FrozenClock

DSN = os.environ.get("PQLKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
MODEL = Model(
    "soak",
    signals={"active": did("login")},
    scores={"events": count()},
    pql=count() >= 2,
)


def disable_autovacuum(schema: str) -> None:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=60.0, help="seconds per reported window")
    args = parser.parse_args()
    schema = f"pqlkit_soak_{os.getpid()}"
    store = PostgresStore(DSN, schema=schema)
    clock = FrozenClock(T0)
    client = Client(MODEL, store=store, clock=clock, dispatch="inline")
    client.on_pql(lambda q: None)
    disable_autovacuum(schema)
    rates: list[float] = []
    user = calls = 0
    try:
        end = time.perf_counter() + args.minutes * 60
        while time.perf_counter() < end:
            start = time.perf_counter()
            done = 0
            while time.perf_counter() - start < args.window:
                for _ in range(2):  # the second event qualifies the user
                    clock.advance(timedelta(seconds=1))
                    client.track(f"u{user}", "login")
                    done += 1
                user += 1
            rate = done / (time.perf_counter() - start)
            rates.append(rate)
            calls += done
            print(f"window {len(rates):3d}: {rate:8.1f} track()/s", flush=True)
        with psycopg.connect(DSN) as conn:
            rows = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "deliveries"))
            ).fetchone()
        kept = rows[0] if rows else 0
        print(f"{calls} track() calls, {user} users qualified; outbox rows kept: {kept}")
        if len(rates) >= 2:
            print(
                f"last window / first: {rates[-1] / rates[0]:.2f}"
                f" (median of the rest: {statistics.median(rates[1:]) / rates[0]:.2f})"
            )
    finally:
        client.close()
        store.close()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
