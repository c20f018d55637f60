"""What the benchmark measures: the floors, the peers, and pqlkit itself.

Floors (raw ``sqlite3``, WAL, ``synchronous=NORMAL``, the ``events`` table and
indexes SQLiteStore had up to schema version 5: a unique text message id, indexes on
user and account; kept as they were, the "indexed floor" of issue 18, so that ratios
compare across runs):

* :class:`SqliteEventFloor`: per event, ``BEGIN IMMEDIATE``; INSERT the event
  row; UPSERT one counter row; ``COMMIT``. Bind values (message id, JSON text)
  are prepared outside the timed call, so it is the database's cost alone.
* :class:`ExecutemanyFloor`: ``executemany`` of 10,000 prepared event rows in one
  transaction.

Peers, enqueue-only, network off, caller-thread cost only:

* :class:`SegmentTrack`: ``segment.analytics.Client(...).track()``. Built with
  ``send=False`` so its consumer thread never starts, then switched to
  ``send=True``: ``track()`` then does all its work up to ``queue.put``, and
  nothing ever drains the queue but the harness, between batches, untimed.
* :class:`PosthogCapture`: ``posthog.Posthog(...).capture()``, the same trick:
  ``send=False`` at construction (its lane's consumers are created but never
  started), then ``send=True`` so ``capture()`` reaches ``queue.put``. ``host`` is
  ``http://127.0.0.1:9`` (discard port) should anything try to connect.

pqlkit: :class:`Track` and :class:`TrackMany` on any store, the data-tooling
model, a FrozenClock moved by the workload's gaps (untimed), no-op ``on_pql``
and ``on_pqa`` callbacks with ``dispatch="inline"`` (the default).
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import sqlite3
from collections.abc import Callable
from types import ModuleType
from typing import Any

import builds
import workload
from harness import Contender, Sample, cpu_ns, now_ns

import pqlkit
from pqlkit._process import new_message_id
from pqlkit.testing import FrozenClock

_EVENTS_DDL = [
    "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL,"
    " user_id TEXT NOT NULL, event TEXT NOT NULL, properties TEXT NOT NULL, account_id TEXT,"
    " ts INTEGER NOT NULL)",
    "CREATE UNIQUE INDEX idx_events_message_id ON events (message_id)",
    "CREATE INDEX idx_events_user_id ON events (user_id)",
    "CREATE INDEX idx_events_account_id ON events (account_id)",
    "CREATE TABLE counters (subject TEXT PRIMARY KEY, n INTEGER NOT NULL)",
]
_INSERT = (
    "INSERT INTO events (message_id, user_id, event, properties, account_id, ts)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (message_id) DO NOTHING"
)
_UPSERT = (
    "INSERT INTO counters (subject, n) VALUES (?, 1) ON CONFLICT (subject) DO UPDATE SET n = n + 1"
)


def _floor_db(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for ddl in _EVENTS_DDL:
        conn.execute(ddl)
    return conn


def _rows(calls: list[workload.Call]) -> list[tuple[Any, ...]]:
    ts = int(workload.T0.timestamp() * 1e6)
    out = []
    for call in calls:
        ts += int(call.gap.total_seconds() * 1e6)
        props = json.dumps(call.properties, separators=(",", ":"))
        # the kind of id track() makes by default (time-ordered, version 7): the same
        # index inserts as pqlkit's rows, so the floor is the cost of the same write
        out.append((new_message_id(), call.user_id, call.event, props, call.account_id, ts))
    return out


class SqliteEventFloor(Contender):
    name = "floor: sqlite3 INSERT + UPSERT + COMMIT"

    def __init__(self, ops: int, tmp: str, pop: workload.Population) -> None:
        super().__init__(ops)
        self._path = os.path.join(tmp, "floor-event.db")
        self._pop = pop

    def setup(self, batches: int) -> None:
        self._conn = _floor_db(self._path)
        self._rows = iter(_rows(workload.calls(self._pop, self.ops * (batches + 1), seed=21)))

    def batch(self, n: int) -> list[Sample]:
        conn = self._conn
        out = []
        for _ in range(n):
            row = next(self._rows)
            c0 = cpu_ns()
            w0 = now_ns()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_INSERT, row)
            conn.execute(_UPSERT, (row[1],))
            conn.execute("COMMIT")
            w1 = now_ns()
            out.append((w1 - w0, cpu_ns() - c0))
        return out

    def teardown(self) -> None:
        self._conn.close()


class ExecutemanyFloor(Contender):
    name = "floor: sqlite3 executemany (10,000 rows/tx)"
    bulk = True

    def __init__(self, tmp: str, pop: workload.Population, rows: int = 10_000) -> None:
        super().__init__(rows)
        self._path = os.path.join(tmp, "floor-bulk.db")
        self._pop = pop

    def setup(self, batches: int) -> None:
        self._conn = _floor_db(self._path)
        rows = _rows(workload.calls(self._pop, self.ops * (batches + 1), seed=22))
        self._batches = iter([rows[i : i + self.ops] for i in range(0, len(rows), self.ops)])

    def batch(self, n: int) -> list[Sample]:
        rows = next(self._batches)
        conn = self._conn
        c0 = cpu_ns()
        w0 = now_ns()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT, rows)
        conn.execute("COMMIT")
        w1 = now_ns()
        return [(w1 - w0, cpu_ns() - c0)]

    def teardown(self) -> None:
        self._conn.close()


class SegmentTrack(Contender):
    name = "Segment analytics.Client.track() (enqueue only)"

    def __init__(self, ops: int, pop: workload.Population) -> None:
        super().__init__(ops)
        self._pop = pop

    def setup(self, batches: int) -> None:
        from segment.analytics import Client

        self._client = Client(
            "bench-write-key",
            host="http://127.0.0.1:9",
            send=False,  # no consumer thread is started...
            max_queue_size=self.ops + 1,
        )
        self._client.send = True  # ...and track() goes all the way to queue.put
        self._calls = iter(workload.calls(self._pop, self.ops * (batches + 1), seed=23))

    def batch(self, n: int) -> list[Sample]:
        track = self._client.track
        out = []
        for _ in range(n):
            call = next(self._calls)
            c0 = cpu_ns()
            w0 = now_ns()
            ok, _ = track(call.user_id, call.event, call.properties)
            w1 = now_ns()
            out.append((w1 - w0, cpu_ns() - c0))
            assert ok, "Segment's queue refused a message"
        _drain(self._client.queue)
        return out

    def teardown(self) -> None:
        self._client.send = False
        _drain(self._client.queue)


class PosthogCapture(Contender):
    name = "PostHog Posthog.capture() (enqueue only)"

    def __init__(self, ops: int, pop: workload.Population) -> None:
        super().__init__(ops)
        self._pop = pop

    def setup(self, batches: int) -> None:
        from posthog import Posthog

        self._client = Posthog(
            "phc_bench",
            host="http://127.0.0.1:9",
            send=False,  # the lane's consumers are never started...
            max_queue_size=self.ops + 1,
        )
        self._client.send = True  # ...and capture() goes all the way to queue.put
        self._calls = iter(workload.calls(self._pop, self.ops * (batches + 1), seed=24))

    def batch(self, n: int) -> list[Sample]:
        capture = self._client.capture
        out = []
        for _ in range(n):
            call = next(self._calls)
            groups = {"company": call.account_id} if call.account_id else None
            c0 = cpu_ns()
            w0 = now_ns()
            sent = capture(
                call.event, distinct_id=call.user_id, properties=call.properties, groups=groups
            )
            w1 = now_ns()
            out.append((w1 - w0, cpu_ns() - c0))
            assert sent is not None, "PostHog dropped an event"
        _drain(self._client._analytics_lane.queue)
        return out

    def teardown(self) -> None:
        self._client.send = False
        _drain(self._client._analytics_lane.queue)
        self._client.disabled = True


def _drain(q: queue.Queue[Any]) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def new_client(
    store: pqlkit.Store, clock: FrozenClock, package: ModuleType = pqlkit, model: Any = None
) -> pqlkit.Client:
    """A client as an application would run it: inline dispatch, a no-op callback per kind
    (of ``package``'s ``Client``, with ``model``: default pqlkit and the workload's model)."""
    client: pqlkit.Client = package.Client(
        workload.MODEL if model is None else model, store=store, clock=clock
    )
    client.on_pql(lambda q: None)
    client.on_pqa(lambda q: None)
    return client


class Track(Contender):
    """pqlkit ``Client.track()`` on one store."""

    def __init__(
        self,
        name: str,
        ops: int,
        open_store: Callable[[], pqlkit.Store],
        pop: workload.Population,
    ) -> None:
        super().__init__(ops)
        self.name = name
        self._open_store = open_store
        self._pop = pop

    def setup(self, batches: int) -> None:
        self._store = self._open_store()
        self._clock, self._client = self._new_client(self._store)
        self._pop.set_traits(self._client)
        self._calls = iter(workload.calls(self._pop, self.ops * (batches + 1), seed=25))

    def _new_client(self, store: pqlkit.Store) -> tuple[FrozenClock, pqlkit.Client]:
        """A clock at the workload's start, and a client on ``store`` moved by it."""
        clock = FrozenClock(workload.T0)
        return clock, new_client(store, clock)

    def _track(self) -> Callable[..., Any]:
        """The ``track`` to time next (called outside the timed region)."""
        return self._client.track

    def batch(self, n: int) -> list[Sample]:
        advance = self._clock.advance
        out = []
        for _ in range(n):
            call = next(self._calls)
            advance(call.gap)
            track = self._track()
            c0 = cpu_ns()
            w0 = now_ns()
            track(call.user_id, call.event, call.properties, account_id=call.account_id)
            w1 = now_ns()
            out.append((w1 - w0, cpu_ns() - c0))
        return out

    def teardown(self) -> None:
        self._client.close()
        self._store.close()


class TrackPure(Track):
    """``track()`` of the pure-Python build (``builds.pure()``) beside the one measured
    as ``pqlkit``: the same workload, on its own MemoryStore or SQLite file."""

    def __init__(self, name: str, ops: int, store: str, tmp: str, pop: workload.Population) -> None:
        path = os.path.join(tmp, "pure.db")

        def open_store() -> Any:
            package, _ = builds.pure()
            return package.MemoryStore() if store == "memory" else package.SQLiteStore(path)

        super().__init__(name, ops, open_store, pop)

    def _new_client(self, store: pqlkit.Store) -> tuple[FrozenClock, pqlkit.Client]:
        package, model = builds.pure()
        clock = importlib.import_module(f"{package.__name__}.testing").FrozenClock(workload.T0)
        return clock, new_client(store, clock, package, model)


class TrackTwoWriters(Track):
    """``track()`` by two Clients on one SQLite file taking turns, call by call.

    What several worker processes writing to one file see at worst: each call
    follows the other writer's, so the client's warm cache is never valid and
    every call reads the user's and account's states from the store.
    """

    def __init__(self, ops: int, tmp: str, pop: workload.Population) -> None:
        path = os.path.join(tmp, "two-writers.db")
        name = "pqlkit track() on SQLiteStore, two writers taking turns"
        super().__init__(name, ops, lambda: pqlkit.SQLiteStore(path), pop)

    def setup(self, batches: int) -> None:
        super().setup(batches)
        self._other_store = self._open_store()
        self._other = new_client(self._other_store, self._clock)
        self._turn = 0

    def _track(self) -> Callable[..., Any]:
        self._turn ^= 1
        return (self._client, self._other)[self._turn].track

    def teardown(self) -> None:
        self._other.close()
        self._other_store.close()
        super().teardown()


class TrackMany(Contender):
    """pqlkit ``Client.track_many()`` of ``ops`` events per batch (timestamps given)."""

    bulk = True

    def __init__(
        self,
        name: str,
        ops: int,
        open_store: Callable[[], pqlkit.Store],
        pop: workload.Population,
    ) -> None:
        super().__init__(ops)
        self.name = name
        self._open_store = open_store
        self._pop = pop

    def setup(self, batches: int) -> None:
        self._store = self._open_store()
        self._clock = FrozenClock(workload.T0)
        self._client = new_client(self._store, self._clock)
        self._pop.set_traits(self._client)
        events = list(workload.bulk(self._pop, self.ops * (batches + 1), start=workload.T0))
        self._batches = iter([events[i : i + self.ops] for i in range(0, len(events), self.ops)])

    def batch(self, n: int) -> list[Sample]:
        events = next(self._batches)
        c0 = cpu_ns()
        w0 = now_ns()
        result = self._client.track_many(events)
        w1 = now_ns()
        sample = (w1 - w0, cpu_ns() - c0)
        assert result.stored == len(events)
        self._clock.set(events[-1]["timestamp"])
        return [sample]

    def teardown(self) -> None:
        self._client.close()
        self._store.close()
