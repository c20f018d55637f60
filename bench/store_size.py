"""Store size per 100k events, and SQLite ``track()`` against the indexed floor: an
earlier commit's pqlkit (default ``main``) beside the working tree's, in one process.

Both builds track the same calls (``bench/workload.py``: the data-tooling model, mixed
events, traits set, no-op callbacks) through a Client on a FrozenClock:

* SQLite: the file's size after a ``wal_checkpoint(TRUNCATE)``, and where the bytes go
  (the ``dbstat`` virtual table: pages per table and index);
* Postgres (when a server answers at ``PQLKIT_TEST_POSTGRES_DSN``): the sum of
  ``pg_total_relation_size`` (heap, indexes, TOAST) of the schema's tables, after
  ``VACUUM FULL``, in a schema of its own;
* the same events as compact JSON Lines with their message ids (``message_id``,
  ``user_id``, ``event``, ``properties``, ``account_id``, ISO ``timestamp``), read back
  from the store: what an export of the log takes;
* ``track()`` on SQLiteStore of both builds and the raw-sqlite3 floor
  (``contenders.SqliteEventFloor``: INSERT with a unique text message id and indexes on
  user and account + UPSERT + COMMIT), batches interleaved (``harness.run_group``).

Usage::

    python bench/store_size.py                     # 100k events, 300 users, vs main
    python bench/store_size.py --users 3000 --rev v0.9.0 --no-postgres
    python bench/store_size.py --events 20000 --batches 5 --no-postgres   # quick
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import builds
import contenders as cs
import harness as h
import stores
import workload

import pqlkit

BASE = "pqlkit_base"

# dbstat names -> the groups reported
_GROUPS = {
    "events": "events (table)",
    "deliveries": "outbox payloads (deliveries)",
    "states": "states",
}


def _group(name: str) -> str:
    if name in _GROUPS:
        return _GROUPS[name]
    if "events" in name:
        return "events (indexes)"
    return "everything else"


def _fill(package: str, store: Any, tmp: Path, pop: workload.Population, n: int) -> float:
    """Track ``n`` calls into ``store`` with ``package``'s Client; the seconds it took."""
    pkg = importlib.import_module(package)
    testing = importlib.import_module(f"{package}.testing")
    clock = testing.FrozenClock(workload.T0)
    model = workload.MODEL if package == "pqlkit" else builds.model_for(package, tmp)
    client = pkg.Client(model, store=store, clock=clock)
    client.on_pql(lambda q: None)
    client.on_pqa(lambda q: None)
    pop.set_traits(client)
    started = time.perf_counter()
    for call in workload.calls(pop, n, seed=3):
        clock.advance(call.gap)
        client.track(call.user_id, call.event, call.properties, account_id=call.account_id)
    took = time.perf_counter() - started
    client.close()
    return took


def _jsonl_bytes(store: Any) -> int:
    """The store's events as compact JSON Lines with their message ids, in bytes."""
    total = 0
    with store.transaction() as tx:
        for e in tx.events():
            line = {
                "message_id": e.message_id,
                "user_id": e.user_id,
                "event": e.event,
                "properties": e.properties,
                "account_id": e.account_id,
                "timestamp": e.timestamp.isoformat(),
            }
            total += len(json.dumps(line, separators=(",", ":")).encode()) + 1
    return total


def sqlite_size(package: str, tmp: Path, pop: workload.Population, n: int) -> dict[str, Any]:
    pkg = importlib.import_module(package)
    path = tmp / f"size-{package}.db"
    store = pkg.SQLiteStore(str(path))
    took = _fill(package, store, tmp, pop, n)
    jsonl = _jsonl_bytes(store)
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    groups: dict[str, int] = {}
    for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
        groups[_group(name)] = groups.get(_group(name), 0) + int(size)
    events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    return {
        "file": os.path.getsize(path),
        "groups": groups,
        "events": events,
        "jsonl": jsonl,
        "track_s": took,
    }


def postgres_size(package: str, tmp: Path, pop: workload.Population, n: int) -> dict[str, Any]:
    import psycopg

    pkg = importlib.import_module(package)
    schema = f"size_{package}_{os.getpid()}"
    dsn = stores.dsn()
    store = pkg.PostgresStore(dsn, schema=schema)
    try:
        took = _fill(package, store, tmp, pop, n)
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
                )
            ]
            for table in tables:  # FULL: the live rows' size, without dead tuples (what
                # bloat autovacuum left depends on its timing, not on the row layout)
                conn.execute(f'VACUUM FULL "{schema}"."{table}"')
            sizes = {
                table: int(
                    conn.execute(
                        "SELECT pg_total_relation_size(%s::regclass)", (f'"{schema}"."{table}"',)
                    ).fetchone()[0]  # type: ignore[index]
                )
                for table in tables
            }
            events = conn.execute(f'SELECT count(*) FROM "{schema}".events').fetchone()[0]  # type: ignore[index]
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    groups = {
        "events": sizes.get("events", 0),
        "deliveries": sizes.get("deliveries", 0),
        "states": sizes.get("states", 0),
    }
    groups["everything else"] = sum(sizes.values()) - sum(groups.values())
    return {"total": sum(sizes.values()), "groups": groups, "events": events, "track_s": took}


class TrackOther(cs.Track):
    """``track()`` on SQLiteStore of another build (``package``), on its own file."""

    def __init__(
        self, name: str, ops: int, package: str, tmp: Path, pop: workload.Population
    ) -> None:
        path = tmp / f"track-{package}.db"
        self._package = package
        self._tmp = tmp

        def open_store() -> Any:
            return importlib.import_module(package).SQLiteStore(str(path))

        super().__init__(name, ops, open_store, pop)

    def _new_client(self, store: Any) -> tuple[Any, Any]:
        testing = importlib.import_module(f"{self._package}.testing")
        clock = testing.FrozenClock(workload.T0)
        package = importlib.import_module(self._package)
        model = builds.model_for(self._package, self._tmp)
        return clock, cs.new_client(store, clock, package, model)


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def render(
    rev: str, n: int, pop: tuple[int, int], sizes: dict[str, Any], timing: dict[str, h.Result]
) -> str:
    per = 100_000 / n
    lines = [
        f"Per 100k events ({n:,} tracked; {pop[0]:,} users in {pop[1]:,} accounts), "
        f"`{rev}` against this tree:",
        "",
    ]
    rows = []
    base, new = sizes["sqlite"][BASE], sizes["sqlite"]["pqlkit"]
    for group in [*_GROUPS.values(), "events (indexes)", "everything else"]:
        a, b = base["groups"].get(group, 0) * per, new["groups"].get(group, 0) * per
        rows.append([f"SQLite: {group}", mb(a), mb(b), f"{b / a:.2f}x" if a else "-"])
    a, b = base["file"] * per, new["file"] * per
    rows.append(["**SQLite: the file**", f"**{mb(a)}**", f"**{mb(b)}**", f"**{b / a:.2f}x**"])
    rows.append(["compact JSON Lines export", mb(base["jsonl"] * per), mb(new["jsonl"] * per), ""])
    if "postgres" in sizes:
        pa, pb = sizes["postgres"][BASE], sizes["postgres"]["pqlkit"]
        for group in ("events", "deliveries", "states", "everything else"):
            a, b = pa["groups"][group] * per, pb["groups"][group] * per
            rows.append([f"Postgres: {group}", mb(a), mb(b), f"{b / a:.2f}x" if a else "-"])
        a, b = pa["total"] * per, pb["total"] * per
        rows.append(
            ["**Postgres: all tables**", f"**{mb(a)}**", f"**{mb(b)}**", f"**{b / a:.2f}x**"]
        )
    else:
        rows.append(["Postgres", "skipped", sizes.get("postgres_skipped", ""), ""])
    lines.append(h.table(["", f"`{rev}`", "this tree", "ratio"], rows))
    floor = timing[cs.SqliteEventFloor.name]
    lines += [
        "",
        "`track()` on SQLiteStore and the floor, batches interleaved in one run (µs; the ratio",
        "of p50s, and the median over batches of the ratio of batch medians):",
        "",
    ]
    trows = []
    for name, r in timing.items():
        trows.append(
            [name, h.us(r.p50), f"{r.p50 / floor.p50:.2f}x", f"{batch_ratio(r, floor):.2f}x"]
        )
    lines.append(h.table(["", "p50", "vs the floor", "per batch"], trows))
    return "\n".join(lines)


def batch_ratio(r: h.Result, base: h.Result) -> float:
    """The median over batches of ``r``'s batch median / ``base``'s (batches interleaved)."""
    return statistics.median(a / b for a, b in zip(r.batch_p50s, base.batch_p50s, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="main", help="the commit to compare with (main)")
    parser.add_argument("--events", type=int, default=100_000, help="events tracked (100,000)")
    parser.add_argument("--users", type=int, default=300, help="users (300; a tenth as accounts)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--batches", type=int, default=15, help="timed batches of track()")
    parser.add_argument("--ops", type=int, default=1_000, help="calls per batch")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    pop_size = (args.users, max(1, args.users // 10))
    pop = workload.Population.make(*pop_size)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        builds.export(args.rev, BASE, tmp)
        sys.path.insert(0, name)
        sizes: dict[str, Any] = {"sqlite": {}}
        for package in (BASE, "pqlkit"):
            print(f"[size] SQLite, {package}: {args.events:,} events", flush=True)
            sizes["sqlite"][package] = sqlite_size(package, tmp, pop, args.events)
        if not args.no_postgres:
            available = stores.available(name)
            if "postgres" in available:
                sizes["postgres"] = {}
                for package in (BASE, "pqlkit"):
                    print(f"[size] Postgres, {package}: {args.events:,} events", flush=True)
                    sizes["postgres"][package] = postgres_size(package, tmp, pop, args.events)
            else:
                sizes["postgres_skipped"] = stores.skipped(available).get("postgres", "")
        timing_pop = workload.Population.make(300, 30)
        group: list[h.Contender] = [
            cs.SqliteEventFloor(args.ops, name, timing_pop),
            TrackOther(f"`{args.rev}`: track() on SQLiteStore", args.ops, BASE, tmp, timing_pop),
            cs.Track(
                "this tree: track() on SQLiteStore",
                args.ops,
                lambda: pqlkit.SQLiteStore(str(tmp / "track-tree.db")),
                timing_pop,
            ),
        ]
        timing = h.run_group("track() vs floor", group, batches=args.batches)
    text = render(args.rev, args.events, pop_size, sizes, timing)
    print()
    for key, value in h.machine().items():
        print(f"- {key}: {value}")
    print()
    print(text)
    if args.json:
        out = {
            "sizes": sizes,
            "timing": {k: v.to_json() for k, v in timing.items()},
            "machine": h.machine(),
        }
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()


def current(tmp: Path, events: int, *, postgres: bool) -> tuple[str, dict[str, Any]]:
    """``bench/run.py``'s ``size`` group: this tree's bytes per 100k events (300 users in
    30 accounts), on SQLite and (``postgres``) Postgres, against the issue-21 target."""
    pop = workload.Population.make(300, 30)
    per = 100_000 / events
    lite = sqlite_size("pqlkit", tmp, pop, events)
    data: dict[str, Any] = {"events": events, "sqlite": lite}
    file = lite["file"] * per
    rows = [[f"SQLite: {group}", mb(size * per)] for group, size in sorted(lite["groups"].items())]
    rows.append(["**SQLite: the file**", f"**{mb(file)}**"])
    rows.append(["the same events as compact JSON Lines", mb(lite["jsonl"] * per)])
    if postgres:
        pg = postgres_size("pqlkit", tmp, pop, events)
        data["postgres"] = pg
        rows.append(["Postgres: all tables (after VACUUM FULL)", mb(pg["total"] * per)])
    if events < 100_000:  # the pages every file has, and every subject's state, weigh more
        verdict = f"no verdict (scaled from {events:,} events: run 100,000)"
    else:
        verdict = "met" if file <= 16e6 else "**not met**"
    text = "\n".join(
        [
            f"Store size per 100k events ({events:,} tracked by `bench/store_size.py`'s",
            "workload: the data-tooling model, 300 users in 30 accounts). Target (issue 21):",
            f"SQLite at most 16 MB per 100k events: {mb(file)}, {verdict}.",
            "",
            h.table(["", "per 100k events"], rows),
        ]
    )
    return text, data
