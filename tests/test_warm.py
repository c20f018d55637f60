"""The Client's warm cache: states kept decoded in memory, written back every few events.

The stored state may be a few events behind the log while a Client keeps its
subject warm; whoever loads it cold (another Client, another process, a restart)
folds in the newer events from the log. These tests pin down what must hold:
nothing is lost or counted twice, a sweep still finds what is due, and a failed
transaction leaves no trace in the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import T0
from pqlkit import Client, Model, SQLiteStore, active_users, count, days, did, idle, trait
from pqlkit._engine import SubjectState
from pqlkit.exceptions import StoreError
from pqlkit.stores import PostgresStore, Store, Transaction
from pqlkit.stores._base import StateRecord
from pqlkit.testing import FrozenClock

MODEL = Model(
    "warm",
    signals={
        "busy": count("x", within=days(1)) >= 3,
        "dormant": idle() >= days(14),
        "paid": did("upgrade"),
        "vip": trait("tier") == "gold",
    },
    pql=count("x", within=days(1)) >= 3,
    pqa=count("x") >= 5,
)


class SpyStore:
    """A store delegating to another; counts state writes, can fail one operation."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.saves: list[StateRecord] = []
        self.fail_on: str | None = None
        self.sweeps = 0  # due_subjects() calls
        self.stuck: list[tuple[str, str]] | None = None  # see stick_due()

    def stick_due(self) -> None:
        """From the next ``due_subjects()`` on, answer what that call found, every time
        (as if the subjects' stored due times never moved past the sweep)."""
        self.stuck = []

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.inner.transaction() as tx:
            yield _SpyTransaction(tx, self)  # type: ignore[misc]

    def close(self) -> None:
        self.inner.close()


class _SpyTransaction:
    def __init__(self, tx: Transaction, owner: SpyStore) -> None:
        self._tx = tx
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        if name == self._owner.fail_on:
            self._owner.fail_on = None
            raise StoreError(f"injected failure in {name}")
        if name == "due_subjects":
            self._owner.sweeps += 1
            if self._owner.sweeps > 100:  # fail rather than hang
                raise AssertionError("sweep() keeps finding the same subjects due")
            if self._owner.stuck is not None:
                return self._stuck_due
        return getattr(self._tx, name)

    def _stuck_due(self, model: str, now: datetime, limit: int) -> list[tuple[str, str]]:
        owner = self._owner
        if not owner.stuck:
            owner.stuck = self._tx.due_subjects(model, now, limit)  # type: ignore[assignment]
        assert owner.stuck is not None
        return owner.stuck

    def save_state(self, record: StateRecord) -> None:
        self._owner.saves.append(record)
        self._tx.save_state(record)


def stored_events(store: Store, kind: str, subject_id: str) -> int:
    """How many events the stored state of the subject has folded in."""
    with store.transaction() as tx:
        row = tx.load_state("warm", kind, subject_id)  # type: ignore[arg-type]
    assert row is not None
    return SubjectState.load(row.state).events


def test_state_is_written_back_every_few_events_and_read_cold_exactly(store: Store) -> None:
    spy = SpyStore(store)
    clock = FrozenClock(T0)
    with Client(MODEL, store=spy, clock=clock) as warm:
        for i in range(100):
            clock.advance(timedelta(minutes=1))
            warm.track("u1", "x" if i % 2 else "y", account_id="a1")
        writes = [r for r in spy.saves if r.subject_id == "u1"]
        if isinstance(store, PostgresStore):  # no cache: several processes write at once
            assert len(writes) == 100
        else:
            # the first event creates the row, the first "x" makes it due earlier (its
            # window entry expires); other than that, one write per 64 events
            assert 2 <= len(writes) <= 2 + 100 // 64
            assert stored_events(store, "user", "u1") < 100  # behind: the tail is in the log
        with Client(MODEL, store=store, clock=clock) as cold:
            assert cold.scores("u1") == warm.scores("u1")
            assert cold.signals("u1") == warm.signals("u1")
            assert cold.explain("a1", of="account") == warm.explain("a1", of="account")
    # close() writes back what a warm client holds (the reads above made it cold)
    with Client(MODEL, store=store, clock=clock) as again:
        for _ in range(20):
            again.track("u1", "y", account_id="a1")  # (reading the store here would chill it)
    assert stored_events(store, "user", "u1") == 120
    assert stored_events(store, "account", "a1") == 120


def test_a_cold_writer_continues_from_the_log_tail(store: Store) -> None:
    """Events tracked by a warm client, then by another: each counted once."""
    clock = FrozenClock(T0)
    a = Client(MODEL, store=store, clock=clock)
    b = Client(MODEL, store=store, clock=clock)
    try:
        for i in range(40):
            clock.advance(timedelta(seconds=10))
            (a if (i // 7) % 2 else b).track("u1", "x", account_id="a1")
        want = {"busy": True, "dormant": False, "paid": False, "vip": False}
        assert a.signals("u1") == b.signals("u1") == want
        assert a.explain("a1", of="account")[-1] == "pqa: count('x') = 40 >= 5 -> true"
        assert b.explain("a1", of="account")[-1] == "pqa: count('x') = 40 >= 5 -> true"
        # one PQL and one PQA in all, although both clients saw the rules hold
        with store.transaction() as tx:
            fired = [(q.kind, q.subject_id, q.round) for q in tx.qualifications("warm")]
        assert sorted(fired) == [("pqa", "a1", 0), ("pql", "u1", 0)]
    finally:
        a.close()
        b.close()


def test_a_sweep_finds_a_subject_whose_due_time_moved_earlier(store: Store) -> None:
    """A write-back is never deferred when the subject became due earlier than stored."""
    clock = FrozenClock(T0)
    with Client(MODEL, store=store, clock=clock) as client:
        for _ in range(20):  # no window entry yet: nothing due but dormancy
            clock.advance(timedelta(minutes=1))
            client.track("u1", "y")
        for _ in range(3):
            clock.advance(timedelta(minutes=1))
            fired = client.track("u1", "x").qualified
        assert [q.subject_id for q in fired] == ["u1"]
        # a sweep by a cold client (another process) after the window passed
        with Client(MODEL, store=store, clock=clock) as other:
            dropped = other.sweep(clock.now() + timedelta(days=2))
        assert [(q.subject_id, q.disqualified_at is not None) for q in dropped] == [("u1", True)]


def test_a_full_cache_writes_back_what_it_evicts(store: Store) -> None:
    clock = FrozenClock(T0)
    with Client(MODEL, store=store, clock=clock, warm_subjects=3) as client:
        for i in range(200):
            clock.advance(timedelta(seconds=5))
            client.track(f"u{i % 10}", "x", account_id=f"a{i % 4}")
        assert len(client._core._warm.subjects) <= 3
        with Client(MODEL, store=store, clock=clock) as cold:
            for n in range(10):
                busy = cold.explain(f"u{n}")[0]
                assert busy == "busy: count('x', within=1d) = 20 >= 3 -> true"
            for n in range(4):
                assert cold.explain(f"a{n}", of="account")[-1] == (
                    "pqa: count('x') = 50 >= 5 -> true"
                )


def test_a_sweep_through_a_small_cache_ends_and_leaves_nothing_due(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A swept subject evicted from the cache keeps the due time the sweep stored."""
    clock = FrozenClock(T0)
    with Client(MODEL, store=store, clock=clock) as client:
        for i in range(60):
            clock.advance(timedelta(seconds=5))
            client.track(f"u{i % 20}", "x")
    monkeypatch.setattr("pqlkit._core._BATCH", 4)  # several batches of due subjects
    spy = SpyStore(store)
    later = clock.now() + timedelta(days=2)  # every user's window has emptied
    with Client(MODEL, store=spy, clock=clock, warm_subjects=3) as sweeper:
        dropped = sweeper.sweep(later)
        assert sorted(q.subject_id for q in dropped) == sorted(f"u{n}" for n in range(20))
        assert all(q.disqualified_at is not None for q in dropped)
        assert sweeper.sweep(later) == []
    assert spy.sweeps <= 20 // 4 + 3


def test_a_sweep_that_keeps_finding_the_same_subjects_stops(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A safety net: were a due time ever stored at or before the sweep, it ends anyway."""
    clock = FrozenClock(T0)
    spy = SpyStore(store)
    with Client(MODEL, store=spy, clock=clock) as client:
        for i in range(12):
            clock.advance(timedelta(seconds=5))
            client.track(f"u{i}", "x")
        monkeypatch.setattr("pqlkit._core._BATCH", 4)
        spy.stick_due()  # a broken due time: "due again right now", whatever the state
        client.sweep(clock.now() + timedelta(days=2))
    assert "sweep() found 4 swept subjects due again" in caplog.text
    assert spy.sweeps == 2  # the batch it found again ended it
    assert "sweep() found 4 swept subjects due again" in caplog.text


@pytest.mark.parametrize("operation", ["insert_qualification", "enqueue"])
def test_a_failed_transaction_leaves_nothing_in_the_cache(store: Store, operation: str) -> None:
    spy = SpyStore(store)
    clock = FrozenClock(T0)
    with Client(MODEL, store=spy, clock=clock) as client:
        for _ in range(2):
            clock.advance(timedelta(minutes=1))
            client.track("u1", "x", account_id="a1")
        spy.fail_on = operation  # the third "x" qualifies: its transaction fails
        clock.advance(timedelta(minutes=1))
        with pytest.raises(StoreError, match="injected"):
            client.track("u1", "x", account_id="a1", message_id="m3")
        assert client.explain("u1")[0] == "busy: count('x', within=1d) = 2 >= 3 -> false"
        assert client.pending() == []
        result = client.track("u1", "x", account_id="a1", message_id="m3")  # the retry
        assert not result.duplicate
        assert [q.subject_id for q in result.qualified] == ["u1"]
        assert client.explain("u1")[0] == "busy: count('x', within=1d) = 3 >= 3 -> true"


def test_sqlite_writers_on_two_connections_see_each_other(tmp_path: Path) -> None:
    """Two SQLiteStores on one file (as two processes): PRAGMA data_version tells."""
    clock = FrozenClock(T0)
    path = tmp_path / "shared.db"
    with (
        Client(MODEL, store=SQLiteStore(path), clock=clock) as a,
        Client(MODEL, store=SQLiteStore(path), clock=clock) as b,
    ):
        for i in range(30):
            clock.advance(timedelta(seconds=30))
            (a, b)[i % 2].track("u1", "x")
        assert (
            a.explain("u1")[0]
            == b.explain("u1")[0]
            == ("busy: count('x', within=1d) = 30 >= 3 -> true")
        )
        assert a.signals("u1")["vip"] is False  # a has u1's traits cached now
        b.identify("u1", {"tier": "gold"})
        assert a.signals("u1")["vip"] is True
        a.identify("u1", {"tier": "silver"})
        assert b.signals("u1")["vip"] is False
    a.store.close()
    b.store.close()


def test_where_other_writers_keep_chilling_the_cache_states_are_written_every_event(
    tmp_path: Path,
) -> None:
    """Two processes taking turns: neither leaves a tail the other must replay."""
    clock = FrozenClock(T0)
    path = tmp_path / "shared.db"
    with (
        Client(MODEL, store=SQLiteStore(path), clock=clock) as a,
        Client(MODEL, store=SQLiteStore(path), clock=clock) as b,
    ):
        for i in range(1, 41):
            clock.advance(timedelta(seconds=30))
            (a, b)[i % 2].track("u1", "x", account_id="a1")
            assert stored_events(a.store, "user", "u1") == i
            assert stored_events(a.store, "account", "a1") == i
        # alone again, a client defers its writes once its cache keeps surviving
        # (read through b's connection: a transaction on a's own would chill a)
        for _ in range(41, 101):
            clock.advance(timedelta(seconds=30))
            a.track("u1", "x", account_id="a1")
        assert stored_events(b.store, "user", "u1") < 100
        a.close()  # writes back what it deferred
        assert stored_events(b.store, "user", "u1") == 100
    a.store.close()
    b.store.close()


def test_track_many_through_a_small_cache_loses_nothing(store: Store) -> None:
    """Batches that evict subjects mid-batch, then fold more events into them."""
    clock = FrozenClock(T0)
    events = [
        {
            "user_id": f"u{i % 10}",
            "event": "x",
            "account_id": f"a{i % 4}",
            "timestamp": T0 + timedelta(seconds=i),
        }
        for i in range(1_200)
    ]
    with Client(MODEL, store=store, clock=clock, warm_subjects=3) as client:
        for start in range(0, len(events), 40):  # 4 events per user and batch
            client.track_many(events[start : start + 40])
            for n in range(10):  # reads through the same small cache
                want = (start + 40) // 10
                assert client.explain(f"u{n}")[0].startswith(
                    f"busy: count('x', within=1d) = {want}"
                )
    with Client(MODEL, store=store, clock=clock) as cold:
        for n in range(10):
            assert cold.explain(f"u{n}")[0] == "busy: count('x', within=1d) = 120 >= 3 -> true"
        for n in range(4):
            assert cold.explain(f"a{n}", of="account")[-1] == "pqa: count('x') = 300 >= 5 -> true"


def test_closing_the_store_first_loses_nothing(tmp_path: Path) -> None:
    """close() writes warm states back if it can; if the store is gone, the log has it all."""
    clock = FrozenClock(T0)
    path = tmp_path / "gone.db"
    store = SQLiteStore(path)
    client = Client(MODEL, store=store, clock=clock)
    for _ in range(10):
        client.track("u1", "x", account_id="a1")
    store.close()
    client.close()  # no error: the write-back is best effort
    with Client(MODEL, store=f"sqlite:///{path}", clock=clock) as again:
        assert again.explain("u1")[0] == "busy: count('x', within=1d) = 10 >= 3 -> true"


def test_the_cache_is_bounded_by_the_size_of_its_states(store: Store) -> None:
    """Accounts with many users have large states: the cache keeps fewer of them, evicting
    the least recently used while their stored sizes add up to more than max_bytes, and
    nothing is lost by it."""
    model = Model("warm", pqa=active_users() >= 500)
    clock = FrozenClock(T0)
    with Client(model, store=store, clock=clock, warm_bytes=6_000) as client:
        warm = client._core._warm
        for round_ in range(3):
            for a in range(6):
                for u in range(70):  # one account's state: about 1.3 kB
                    clock.advance(timedelta(seconds=1))
                    client.track(f"u{a}-{u}-{round_}", "x", account_id=f"a{a}")
                subjects = warm.subjects.values()
                assert warm.size == sum(s.stored_size for s in subjects)
                # checked as each subject comes in (here every event: each user is new);
                # the save after it may grow the account by up to 64 events' worth
                assert warm.size <= warm.max_bytes + 64 * 20
        # the many users are small: it is the accounts that were evicted
        assert sum(1 for kind, _ in warm.subjects if kind == "account") < 6
        with Client(model, store=store, clock=clock) as cold:
            for a in range(6):
                assert cold.explain(f"a{a}", of="account")[-1] == (
                    "pqa: active_users() = 210 >= 500 -> false"
                )
