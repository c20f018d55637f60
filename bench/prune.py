"""Pruning old events on SQLite: ``client.prune()`` against a plain ``DELETE``.

A store holds ``--events`` events of the data-tooling workload (``workload.py``), all
500 days old, by ``--users`` users in accounts, and a few recent ones. Each run copies
that file and prunes everything older than 400 days while a writer thread keeps
tracking from another process, timing each of its calls:

* ``prune``: ``client.prune(older_than=400d)``: each subject's state is checkpointed,
  then the events are deleted, in short transactions (no score changes);
* ``delete``: the baseline, ``DELETE FROM events WHERE ts < horizon`` in one
  transaction: what pruning by hand does (fast, but it holds the write lock for the
  whole delete, and the next rebuild silently changes every all-time score).

Runs alternate (delete, prune, delete, prune, ...); medians are reported, with the
longest wait of the writer's calls during each run, the file sizes, and a check
that no score changed (a sample of users and accounts, before and after a rebuild).

    python bench/prune.py --events 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from workload import MODEL, T0, Population, bulk

import pqlkit
from pqlkit.testing import FrozenClock

OLD = T0 - timedelta(days=500)
RETENTION = timedelta(days=400)


def build(path: Path, events: int, users: int, accounts: int) -> Population:
    """The template store: ``events`` old events, then one recent event per 100 users."""
    pop = Population.make(users, accounts)
    clock = FrozenClock(T0)
    with pqlkit.Client(MODEL, store=pqlkit.SQLiteStore(path), clock=clock) as client:
        pop.set_traits(client)
        batch: list[dict[str, object]] = []
        for event in bulk(pop, events, start=OLD):
            event["timestamp"] = OLD  # every one older than the horizon (bulk spreads them)
            batch.append(event)
            if len(batch) == 10_000:
                client.track_many(batch)
                batch = []
        if batch:
            client.track_many(batch)
        for uid in pop.users[::100]:
            client.track(uid, "page_viewed", {"path": "/home"}, account_id=pop.account_of[uid])
    return pop


def sample(client: pqlkit.Client, pop: Population) -> dict[tuple[str, str], object]:
    """Scores and signals of every 50th user and every 10th account."""
    out: dict[tuple[str, str], object] = {}
    for uid in pop.users[::50]:
        out[("user", uid)] = (client.scores(uid), client.signals(uid))
    for acc in pop.accounts[::10]:
        out[("account", acc)] = (
            client.scores(acc, of="account"),
            client.signals(acc, of="account"),
        )
    return out


def _write(path: str, stop: Any, worst: Any, calls: Any) -> None:
    clock = FrozenClock(T0)
    with pqlkit.Client(MODEL, store=pqlkit.SQLiteStore(path), clock=clock) as client:
        while not stop.is_set():
            began = time.perf_counter()
            client.track(f"writer-{calls.value % 50}", "page_viewed", {"path": "/home"})
            worst.value = max(worst.value, time.perf_counter() - began)
            calls.value += 1


class Writer:
    """Another process tracking on the same file until stopped; its longest call."""

    def __init__(self, path: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self._worst = ctx.Value("d", 0.0)
        self._calls = ctx.Value("i", 0)
        self.process = ctx.Process(
            target=_write, args=(str(path), self.stop, self._worst, self._calls)
        )

    @property
    def worst(self) -> float:
        return float(self._worst.value)

    @property
    def calls(self) -> int:
        return int(self._calls.value)

    def __enter__(self) -> Writer:
        self.process.start()
        while self.calls < 20:  # running before the prune starts
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.process.join()


def run_prune(path: Path) -> dict[str, float]:
    clock = FrozenClock(T0)
    store = pqlkit.SQLiteStore(path)
    # the longest of its transactions: how long it held the write lock at a time (the
    # store's transactions are timed, not the Client's: the compiled build's are fixed)
    transaction = store.transaction
    longest = [0.0]

    @contextlib.contextmanager
    def timed() -> Iterator[Any]:
        began = time.perf_counter()
        try:
            with transaction() as tx:
                yield tx
        finally:
            longest[0] = max(longest[0], time.perf_counter() - began)

    store.transaction = timed  # type: ignore[method-assign]
    with pqlkit.Client(MODEL, store=store, clock=clock) as client:
        began, cpu = time.perf_counter(), time.process_time()
        result = client.prune(older_than=RETENTION)
        took, cpu = time.perf_counter() - began, time.process_time() - cpu
    store.close()
    return {
        "seconds": took,
        "cpu": cpu,
        "events": result.events,
        "checkpoints": result.subjects,
        "longest_tx": longest[0],
    }


def run_delete(path: Path) -> dict[str, float]:
    horizon_us = int((T0 - RETENTION).timestamp() * 1_000_000)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        began, cpu = time.perf_counter(), time.process_time()
        conn.execute("BEGIN IMMEDIATE")
        deleted = conn.execute("DELETE FROM events WHERE ts < ?", (horizon_us,)).rowcount
        conn.execute("COMMIT")
        took, cpu = time.perf_counter() - began, time.process_time() - cpu
    finally:
        conn.close()
    return {"seconds": took, "cpu": cpu, "events": deleted, "checkpoints": 0, "longest_tx": took}


def size(path: Path) -> int:
    return sum(os.path.getsize(f) for f in (path, Path(f"{path}-wal")) if f.exists())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template.db"
        began = time.perf_counter()
        pop = build(template, args.events, args.users, args.accounts)
        print(
            f"built {args.events:,} old events, {args.users:,} users, {args.accounts:,} accounts"
            f" in {time.perf_counter() - began:.0f} s; {size(template) / 2**20:.1f} MB"
        )
        clock = FrozenClock(T0)
        with pqlkit.Client(MODEL, store=pqlkit.SQLiteStore(template), clock=clock) as client:
            before = sample(client, pop)
        with pqlkit.SQLiteStore(template) as store:
            store.scrub()  # everything in the file itself (the copies take the file only)
        runs: dict[str, list[dict[str, float]]] = {"delete": [], "prune": []}
        kinds: dict[str, Callable[[Path], dict[str, float]]] = {
            "delete": run_delete,
            "prune": run_prune,
        }
        for i in range(args.rounds):
            for name, fn in kinds.items():
                path = Path(tmp) / f"{name}-{i}.db"
                shutil.copyfile(template, path)
                with Writer(path) as writer:
                    got = fn(path)
                got["worst_write"] = writer.worst
                got["writes"] = writer.calls
                got["mb"] = size(path) / 2**20
                runs[name].append(got)
                print(
                    f"  {name:6} round {i}: {got['seconds']:7.2f} s ({got['cpu']:.2f} s CPU),"
                    f" {int(got['events']):,}"
                    f" events, longest transaction {got['longest_tx'] * 1000:6.0f} ms,"
                    f" writer's longest call {got['worst_write'] * 1000:6.0f} ms"
                    f" ({int(got['writes']):,} calls)"
                )
                if name == "prune" and i == 0:
                    with pqlkit.Client(
                        MODEL, store=pqlkit.SQLiteStore(path), clock=FrozenClock(T0)
                    ) as client:
                        same = sample(client, pop) == before
                        client.rebuild()
                        rebuilt = sample(client, pop) == before
                        store = client.store
                        assert isinstance(store, pqlkit.SQLiteStore)
                        store.scrub(vacuum=True)
                    print(
                        f"    scores unchanged: {same}; after a rebuild: {rebuilt};"
                        f" {size(template) / 2**20:.1f} MB -> {got['mb']:.1f} MB"
                        f" -> {size(path) / 2**20:.1f} MB after VACUUM"
                    )
                os.remove(path)
        load = os.getloadavg()[0]
        print(
            f"\nmedians of {args.rounds} rounds ({platform.python_version()}, 2 shared cores,"
            f" load average {load:.1f}):"
        )
        for name, results in runs.items():
            secs = statistics.median(r["seconds"] for r in results)
            worst = statistics.median(r["worst_write"] for r in results)
            held = statistics.median(r["longest_tx"] for r in results)
            cpu = statistics.median(r["cpu"] for r in results)
            rate = args.events / secs
            print(
                f"  {name:6}: {secs:7.2f} s, {cpu:.2f} s CPU ({rate:,.0f} events/s),"
                " longest transaction"
                f" {held * 1000:,.0f} ms, writer's longest call {worst * 1000:,.0f} ms"
            )
        ratio = statistics.median(r["seconds"] for r in runs["prune"]) / statistics.median(
            r["seconds"] for r in runs["delete"]
        )
        print(f"  prune / delete: {ratio:.1f}x the time")


if __name__ == "__main__":
    main()
