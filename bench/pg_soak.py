"""PostgresStore ``track()`` throughput over a long run, with autovacuum off.

What it shows: whether throughput holds as the outbox churns (issue 20: delivered
outbox rows were never removed and the claim query read every dead index entry, so
throughput fell from 1,131 to 530-640 ``track()``/s within a minute).

One Client on a schema of its own (``pqlkit_soak_<pid>``, dropped at the end), inline
dispatch, a no-op ``on_pql`` callback, a model under which every new user qualifies
on its second event, so each user adds a qualification and a delivery. Autovacuum is
off for every table of the schema, as on a server whose autovacuum lags.

The machine is shared and its speed drifts by more than the effect measured, so each
window interleaves a control: the same workload on a fresh schema (made for that
window, dropped after it), run in slices taking turns with the soak's (``--control``
seconds of it per second of soak). A window's figure is its rate over
the control's; what the run reports is the last window's figure over the first's
(1.00: nothing accumulated in the store slowed ``track()``), beside the raw rates.

    .venv/bin/python bench/pg_soak.py                 # 10 minutes of soak (15 in all)
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


def run(client: Client, clock: FrozenClock, first_user: int, seconds: float) -> tuple[int, float]:
    """Track two events per new user for ``seconds``: (users done, track() calls per second)."""
    user, done = first_user, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(2):  # the second event qualifies the user
            clock.advance(timedelta(seconds=1))
            client.track(f"u{user}", "login")
            done += 1
        user += 1
    return user, done / (time.perf_counter() - start)


class Control:
    """The same workload on a fresh schema of its own (made for one window, then dropped)."""

    def __init__(self, window: int) -> None:
        self.schema = f"pqlkit_soak_{os.getpid()}_c{window}"
        self.store = PostgresStore(DSN, schema=self.schema)
        self.clock = FrozenClock(T0)
        self.client = Client(MODEL, store=self.store, clock=self.clock, dispatch="inline")
        self.client.on_pql(lambda q: None)
        disable_autovacuum(self.schema)
        self.user, _ = run(self.client, self.clock, 0, 0.5)  # connections, prepared statements

    def close(self) -> None:
        self.client.close()
        self.store.close()
        drop_schema(self.schema)


def drop_schema(schema: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=60.0, help="seconds per reported window")
    parser.add_argument(
        "--control", type=float, default=0.5, help="control time per second of soak"
    )
    parser.add_argument("--slice", type=float, default=1.0, help="seconds of soak per turn")
    args = parser.parse_args()
    schema = f"pqlkit_soak_{os.getpid()}"
    store = PostgresStore(DSN, schema=schema)
    clock = FrozenClock(T0)
    client = Client(MODEL, store=store, clock=clock, dispatch="inline")
    client.on_pql(lambda q: None)
    disable_autovacuum(schema)
    rates: list[float] = []
    relative: list[float] = []
    user = calls = 0
    try:
        soaked = 0.0  # seconds of the soak's own track() calls (controls not counted)
        while soaked < args.minutes * 60:
            # slices of the soak and of the control taking turns, so that both see
            # the same machine: --slice s of soak, then control for the --control share
            fresh_schema = Control(len(rates))
            soak_time = soak_calls = fresh_time = fresh_calls = 0.0
            try:
                while soak_time < args.window:
                    first = user
                    user, rate = run(client, clock, user, args.slice)
                    soak_calls += 2 * (user - first)
                    soak_time += 2 * (user - first) / rate
                    first = fresh_schema.user
                    fresh_schema.user, rate = run(
                        fresh_schema.client, fresh_schema.clock, first, args.slice * args.control
                    )
                    fresh_calls += 2 * (fresh_schema.user - first)
                    fresh_time += 2 * (fresh_schema.user - first) / rate
            finally:
                fresh_schema.close()
            calls += int(soak_calls)
            soaked += soak_time
            rate, fresh = soak_calls / soak_time, fresh_calls / fresh_time
            rates.append(rate)
            relative.append(rate / fresh)
            print(
                f"window {len(rates):3d}: {rate:8.1f} track()/s; fresh schema {fresh:8.1f};"
                f" ratio {rate / fresh:.2f}",
                flush=True,
            )
        with psycopg.connect(DSN) as conn:
            rows = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "deliveries"))
            ).fetchone()
        kept = rows[0] if rows else 0
        print(f"{calls} track() calls, {user} users qualified; outbox rows kept: {kept}")
        if len(rates) >= 2:
            print(
                f"against a fresh schema, last window / first: {relative[-1] / relative[0]:.2f}"
                f" (median of the rest: {statistics.median(relative[1:]) / relative[0]:.2f});"
                f" raw rates: {rates[-1] / rates[0]:.2f}"
            )
    finally:
        client.close()
        store.close()
        drop_schema(schema)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
