"""Median ``track()`` on PostgresStore vs SQLiteStore, with the same model and events.

Standalone (it does not use the bench harness): the data-tooling model of
``examples/data_tooling.py``, one Client per store, inline dispatch with no-op
callbacks, a FrozenClock moved forward between calls. Timed in interleaved
batches (a batch on SQLite, then one on Postgres, ...) so a noisy neighbour
slows both alike. Reports wall-time p50/p90/p99 and the calling thread's CPU
time p50 per call, and ``track_many()`` per event.

    .venv/bin/python bench/bench_postgres.py            # 10 batches of 300 calls per store
    .venv/bin/python bench/bench_postgres.py --batches 4 --calls 100
    PQLKIT_TEST_POSTGRES_DSN=postgresql://... .venv/bin/python bench/bench_postgres.py

Postgres runs in a schema of its own (``pqlkit_bench_<pid>``), dropped at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pqlkit import Client, Model
from pqlkit.stores import PostgresStore, SQLiteStore, Store
from pqlkit.testing import FrozenClock

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
EVENTS = [
    ("page_viewed", 30, lambda r: {"path": r.choice(["/", "/docs", "/pricing", "/blog"])}),
    ("query_run", 20, lambda r: {"ms": r.randrange(5, 900)}),
    ("login", 8, lambda r: {}),
    ("usage_reported", 8, lambda r: {"rows": r.randrange(1_000, 900_000)}),
    ("dashboard_built", 6, lambda r: {}),
    ("project_created", 5, lambda r: {}),
    ("email_sent", 5, lambda r: {}),
    ("warehouse_connected", 5, lambda r: {"kind": r.choice(["snowflake", "bigquery"])}),
    ("api_key_generated", 5, lambda r: {}),
    ("contacts_imported", 4, lambda r: {"count": r.randrange(10, 5_000)}),
    ("teammate_invited", 4, lambda r: {"email": f"t{r.randrange(50)}@acme.io"}),
]


def load_model() -> Model:
    spec = importlib.util.spec_from_file_location("data_tooling", ROOT / "examples/data_tooling.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model: Model = module.model
    return model


def calls(seed: str, n: int) -> list[dict[str, Any]]:
    """``n`` track() keyword sets over 300 users in 30 accounts."""
    rng = random.Random(seed)
    names = [e[0] for e in EVENTS]
    weights = [e[1] for e in EVENTS]
    props = {e[0]: e[2] for e in EVENTS}
    out = []
    for _ in range(n):
        user = rng.randrange(300)
        event = rng.choices(names, weights)[0]
        out.append(
            {
                "user_id": f"u{user}",
                "event": event,
                "properties": props[event](rng),
                "account_id": f"acct{user % 30}" if user % 7 else None,
            }
        )
    return out


class Contender:
    """One Client on one store, timing each track() call."""

    def __init__(self, name: str, store: Store, model: Model) -> None:
        self.name = name
        self.store = store
        self.clock = FrozenClock(T0)
        self.client = Client(model, store=store, clock=self.clock)
        self.client.on_pql(lambda q: None)
        self.client.on_pqa(lambda q: None)
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.rng = random.Random(name)

    def identify_everyone(self) -> None:
        rng = random.Random("traits")
        for user in range(300):
            domain = "gmail.com" if rng.random() < 0.2 else f"c{user % 30}.io"
            self.client.identify(f"u{user}", {"email_domain": domain, "row_limit": 1_000_000})
        for account in range(30):
            self.client.group(f"acct{account}", {"employees": rng.choice([12, 80, 250, 3_000])})

    def run(self, batch: list[dict[str, Any]], *, timed: bool) -> None:
        track = self.client.track
        for kwargs in batch:
            self.clock.advance(timedelta(seconds=self.rng.expovariate(1 / 30)))
            c0 = time.thread_time_ns()
            t0 = time.perf_counter_ns()
            track(**kwargs)
            t1 = time.perf_counter_ns()
            c1 = time.thread_time_ns()
            if timed:
                self.wall.append((t1 - t0) / 1e6)
                self.cpu.append((c1 - c0) / 1e6)

    def bulk(self, rows: list[dict[str, Any]]) -> float:
        """Milliseconds per event of one track_many() over ``rows``."""
        start = time.perf_counter()
        self.client.track_many({**row, "timestamp": T0 + timedelta(days=400)} for row in rows)
        return (time.perf_counter() - start) / len(rows) * 1000

    def close(self) -> None:
        self.client.close()
        self.store.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--calls", type=int, default=300, help="track() calls per batch")
    parser.add_argument("--bulk", type=int, default=2_000, help="events for track_many()")
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "PQLKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()

    import psycopg
    from psycopg import sql

    model = load_model()
    schema = f"pqlkit_bench_{os.getpid()}"
    tmp = tempfile.TemporaryDirectory()
    contenders = [
        Contender("SQLiteStore", SQLiteStore(Path(tmp.name) / "bench.db"), model),
        Contender("PostgresStore", PostgresStore(args.dsn, schema=schema), model),
    ]
    load = os.getloadavg()
    try:
        for contender in contenders:
            contender.identify_everyone()
            contender.run(calls("warm-up", 200), timed=False)
        for b in range(args.batches):
            batch = calls(f"batch-{b}", args.calls)
            order = contenders if b % 2 == 0 else contenders[::-1]
            for contender in order:
                contender.run(batch, timed=True)
        bulk = {c.name: c.bulk(calls("bulk", args.bulk)) for c in contenders}
    finally:
        for contender in contenders:
            contender.close()
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        tmp.cleanup()

    print(f"pqlkit {version('pqlkit')} on Python {sys.version.split()[0]}, {os.cpu_count()} CPUs,")
    print(f"load average {load[0]:.2f} -> {os.getloadavg()[0]:.2f};")
    print(f"model {model.name!r}, {args.batches} x {args.calls} track() calls per store\n")
    header = (
        f"{'store':<14} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'cpu p50':>8} {'bulk/ev':>8}"
    )
    print(header)
    print("-" * len(header))
    p50: dict[str, float] = {}
    for c in contenders:
        p50[c.name] = statistics.median(c.wall)
        print(
            f"{c.name:<14} {p50[c.name]:8.3f} {percentile(c.wall, 0.9):8.3f}"
            f" {percentile(c.wall, 0.99):8.3f} {statistics.median(c.cpu):8.3f}"
            f" {bulk[c.name]:8.3f}"
        )
    ratio = p50["PostgresStore"] / p50["SQLiteStore"]
    print(f"\nPostgresStore / SQLiteStore median track(): {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
