"""PostgresStore ``track()`` on warm subjects against the naive floor, on the loopback.

The floor is what any event store pays per event: ``BEGIN``, ``INSERT`` of the event
(a unique message id, an index on the user), ``INSERT ... ON CONFLICT DO UPDATE`` of
a per-user counter, ``COMMIT``, each a statement of its own (four round trips), on
one autocommit psycopg connection with prepared statements.

``track()`` runs the data-tooling model (``examples/data_tooling.py``) with inline
dispatch and no callbacks, on 20 users in 5 accounts identified and tracked once
before timing (warm subjects), a FrozenClock moved forward between calls. Timed in
interleaved batches (a batch of floor, a batch of track(), ...) so a noisy neighbour
slows both alike; prints the medians of the per-batch medians and their ratio. The same
calls on a MemoryStore run interleaved too: the Python side of ``track()`` (validation,
evaluation, the Client's bookkeeping) with no database, which the build decides (pure
Python or compiled) and no round trip changes. Both
run with ``synchronous_commit=off`` unless ``--fsync``: a commit's flush to disk is
the same for both and, on a busy disk, hides the round trips being measured.

Run it with the pqlkit to measure first on ``PYTHONPATH`` (``src`` of a checkout):

    PYTHONPATH=src .venv/bin/python bench/pg_roundtrip.py --batches 10 --calls 300

Each run uses a schema of its own (``pqlkit_rt_<pid>``), dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_postgres import EVENTS, T0, load_model

import pqlkit
from pqlkit import Client
from pqlkit.stores import MemoryStore, PostgresStore
from pqlkit.testing import FrozenClock

USERS = [f"user{n}" for n in range(20)]
ACCOUNT = {user: f"acct{n % 5}" for n, user in enumerate(USERS)}


def floor_setup(conn: psycopg.Connection, schema: str) -> None:
    s = sql.Identifier(schema)
    conn.execute(
        sql.SQL(
            "CREATE TABLE {}.floor_events (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " message_id text NOT NULL UNIQUE, user_id text NOT NULL, event text NOT NULL,"
            " properties json NOT NULL, ts bigint NOT NULL)"
        ).format(s)
    )
    conn.execute(sql.SQL("CREATE INDEX ON {}.floor_events (user_id, seq)").format(s))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {}.floor_counts (user_id text PRIMARY KEY, n bigint NOT NULL)"
        ).format(s)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "PQLKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="keep synchronous_commit on (default off for both: round trips, not the disk)",
    )
    args = parser.parse_args()
    if not args.fsync:
        args.dsn = psycopg.conninfo.make_conninfo(args.dsn, options="-c synchronous_commit=off")
    schema = f"pqlkit_rt_{os.getpid()}"
    rng = random.Random(7)
    names = [name for name, weight, _ in EVENTS for _ in range(weight)]
    props = {name: make for name, _, make in EVENTS}
    model = load_model()
    clock = FrozenClock(T0)
    store = PostgresStore(args.dsn, schema=schema, min_size=1, max_size=1)
    client = Client(model, store=store, clock=clock, dispatch="inline")
    # the same calls on MemoryStore: the Python side of track() with no database at all
    memory = Client(model, store=MemoryStore(), clock=clock, dispatch="inline")
    conn = psycopg.connect(args.dsn, autocommit=True, prepare_threshold=0)
    try:
        floor_setup(conn, schema)
        s = sql.Identifier(schema)
        insert = sql.SQL(
            "INSERT INTO {}.floor_events (message_id, user_id, event, properties, ts)"
            " VALUES (%s, %s, %s, %s::json, %s)"
        ).format(s)
        upsert = sql.SQL(
            "INSERT INTO {}.floor_counts (user_id, n) VALUES (%s, 1)"
            " ON CONFLICT (user_id) DO UPDATE SET n = floor_counts.n + 1"
        ).format(s)
        for user in USERS:
            for each in (client, memory):
                each.identify(user, {"email": f"{user}@example.com"}, account_id=ACCOUNT[user])
                for _ in range(3):  # warm: loaded, cached, stored with a version
                    each.track(user, "login", account_id=ACCOUNT[user])

        def one_track() -> None:
            user = rng.choice(USERS)
            name = rng.choice(names)
            clock.advance(timedelta(seconds=1))
            client.track(user, name, props[name](rng), account_id=ACCOUNT[user])

        def one_memory() -> None:
            user = rng.choice(USERS)
            name = rng.choice(names)
            clock.advance(timedelta(seconds=1))
            memory.track(user, name, props[name](rng), account_id=ACCOUNT[user])

        def one_floor() -> None:
            user = rng.choice(USERS)
            name = rng.choice(names)
            properties = pqlkit._convert.dumps(props[name](rng))
            conn.execute(b"BEGIN")
            conn.execute(insert, (str(uuid.uuid4()), user, name, properties, 0))
            conn.execute(upsert, (user,))
            conn.execute(b"COMMIT")

        contenders = (("floor", one_floor), ("track", one_track), ("memory", one_memory))
        for _, fn in contenders:  # warm every path up
            for _ in range(50):
                fn()
        medians: dict[str, list[float]] = {label: [] for label, _ in contenders}
        for _ in range(args.batches):
            for label, fn in contenders:
                times = []
                for _ in range(args.calls):
                    start = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - start)
                medians[label].append(statistics.median(times))
        floor = statistics.median(medians["floor"]) * 1e3
        track = statistics.median(medians["track"]) * 1e3
        python = statistics.median(medians["memory"]) * 1e3
        where = pqlkit.__file__
        print(f"pqlkit from {where}")
        commit = "on" if args.fsync else "off"
        print(
            f"{args.batches} interleaved batches of {args.calls} calls, loopback,"
            f" synchronous_commit={commit}"
        )
        print(f"naive floor (BEGIN, INSERT, UPSERT, COMMIT): median {floor:.3f} ms")
        print(f"PostgresStore track(), warm subjects:        median {track:.3f} ms")
        print(f"same track() on MemoryStore (no database):   median {python:.3f} ms")
        print(f"ratio track / floor: {track / floor:.2f}x")
        print(f"ratio (track - MemoryStore track) / floor: {(track - python) / floor:.2f}x")
    finally:
        client.close()
        memory.close()
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
