"""Delivering qualifications to callbacks: inline and background, retries, dead letters."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import pqlkit
from conftest import T0
from pqlkit import Client, MemoryStore, Model, Qualification, SQLiteStore, Store, did, signal
from pqlkit import _dispatch as dispatch_module
from pqlkit.exceptions import StoreError, TransientStoreError, ValidationError
from pqlkit.testing import ClientFactory, FrozenClock, use

US = timedelta(microseconds=1)


def days_(n: float) -> timedelta:
    return timedelta(days=n)


MODEL = Model(
    "dispatch",
    signals={"built": did("dashboard_built"), "churned": did("churned")},
    pql=signal("built") & ~signal("churned"),
)


@pytest.fixture(name="client")
def fixture_client(make_client: ClientFactory) -> Client:
    """An inline Client for MODEL on the shared store and clock."""
    return make_client(MODEL)


@pytest.fixture(name="no_jitter")
def fixture_no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry delays without jitter: exactly base * 2**(attempt - 1)."""
    monkeypatch.setattr(dispatch_module.random, "random", lambda: 0.0)


class Flaky:
    """A callback failing its first ``failures`` calls; records every call."""

    def __init__(self, failures: int = 1_000_000) -> None:
        self.failures = failures
        self.calls: list[Qualification] = []

    def __call__(self, q: Qualification) -> None:
        self.calls.append(q)
        if len(self.calls) <= self.failures:
            raise RuntimeError(f"receiver down (call {len(self.calls)})")


def reopen(store: Store) -> Store:
    """Another handle on the same data: the same MemoryStore, a new SQLiteStore on the file."""
    if isinstance(store, SQLiteStore):
        return SQLiteStore(store.path)
    return store


def next_attempt(store: Store) -> datetime | None:
    with store.transaction() as tx:
        (pending,) = tx.deliveries("pending")
    return pending.next_attempt_at


def attempts(store: Store, status: str = "pending") -> int:
    with store.transaction() as tx:
        (delivery,) = tx.deliveries(status)  # type: ignore[arg-type]
    return delivery.attempts


def qualify(client: Client, user: str = "u1") -> Qualification:
    (q,) = client.track(user, "dashboard_built").qualified
    return q


# -- inline ----------------------------------------------------------------------


def committed_elsewhere(store: Store, message_id: str) -> bool:
    """Whether another thread (and for SQLite, another connection) sees the event stored.

    An open write transaction would block the reader: it then gives up after a
    timeout and this returns False.
    """
    seen: list[bool] = []

    def read() -> None:
        other = SQLiteStore(store.path, timeout=1) if isinstance(store, SQLiteStore) else store
        try:
            with other.transaction() as tx:
                seen.append(tx.has_message(message_id))
        except StoreError:  # the write lock is still held: not committed
            seen.append(False)
        finally:
            if other is not store:
                other.close()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=5)
    return seen == [True]


def test_inline_callback_runs_in_track_after_the_commit(client: Client, store: Store) -> None:
    """dispatch="inline": the callback runs before track() returns, with the event committed."""
    checks: list[tuple[bool, int]] = []

    @client.on_pql
    def check(q: Qualification) -> None:
        checks.append((committed_elsewhere(store, "m-1"), threading.get_ident()))

    client.track("u1", "dashboard_built", message_id="m-1")
    assert checks == [(True, threading.get_ident())]


def test_callback_error_never_reaches_track(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A raising callback: track() returns normally, the error is logged on `pqlkit`."""
    client.on("pql", Flaky())
    with caplog.at_level(logging.ERROR, logger="pqlkit"):
        result = client.track("u1", "dashboard_built")
    assert [q.subject_id for q in result.qualified] == ["u1"]
    records = [r for r in caplog.records if r.name == "pqlkit"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert "u1" in records[0].getMessage()
    assert "attempt 1 of 10" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert "receiver down" in str(records[0].exc_info[1])
    assert [q.subject_id for q in client.pending()] == ["u1"]


def test_callback_error_never_reaches_flush_or_sweep(client: Client, clock: FrozenClock) -> None:
    """flush() and sweep() also swallow callback errors."""
    flaky = Flaky()
    client.on("pql", flaky)
    qualify(client)
    clock.advance(timedelta(hours=1))
    client.flush()
    clock.advance(timedelta(hours=1))
    client.sweep()
    assert len(flaky.calls) == 3


def test_retries_back_off_exponentially_on_the_clients_clock(
    client: Client, clock: FrozenClock, no_jitter: None
) -> None:
    """Retries come 1 s, 2 s, 4 s after each failure, on the client's clock, not before."""
    flaky = Flaky()
    client.on("pql", flaky)
    qualify(client)
    assert len(flaky.calls) == 1
    for n, delay in enumerate((1, 2, 4, 8), start=2):
        clock.advance(timedelta(seconds=delay) - US)
        client.flush()
        assert len(flaky.calls) == n - 1, f"retried before {delay} s"
        clock.advance(US)
        client.flush()
        assert len(flaky.calls) == n, f"not retried after {delay} s"


def test_retry_succeeds_and_stops(client: Client, clock: FrozenClock, store: Store) -> None:
    """A retry that succeeds marks the delivery delivered: no more calls."""
    flaky = Flaky(failures=2)
    client.on("pql", flaky)
    qualify(client)
    for _ in range(5):
        clock.advance(timedelta(minutes=1))
        client.flush()
    assert len(flaky.calls) == 3
    assert client.pending() == []
    assert attempts(store, "delivered") == 3


def test_due_retries_run_on_sweep_and_flush_never_on_anothers_track(
    client: Client, clock: FrozenClock
) -> None:
    """A due retry is attempted by sweep() and flush(); a track() that fired nothing skips it."""
    flaky = Flaky()
    client.on("pql", flaky)
    qualify(client)
    clock.advance(timedelta(seconds=1))
    client.track("someone-else", "login")
    assert len(flaky.calls) == 1
    client.sweep()
    assert len(flaky.calls) == 2
    clock.advance(timedelta(seconds=2))
    client.flush()
    assert len(flaky.calls) == 3


def test_jitter_only_shortens_delays_by_up_to_ten_percent(
    client: Client, clock: FrozenClock, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each delay lies in [0.9, 1] x nominal: with the largest jitter, 0.9 x."""
    client.on("pql", Flaky())
    qualify(client)
    for nominal in (1, 2, 4, 8, 16):
        due = next_attempt(store)
        assert due is not None
        delay = due - clock.now()
        assert timedelta(seconds=0.9 * nominal) <= delay <= timedelta(seconds=nominal)
        clock.set(due)
        if nominal == 8:
            monkeypatch.setattr(dispatch_module.random, "random", lambda: 1.0)
        client.flush()
    assert next_attempt(store) == clock.now() + timedelta(seconds=0.9 * 32)


def test_delays_are_capped(
    make_client: ClientFactory, clock: FrozenClock, store: Store, no_jitter: None
) -> None:
    """retry_cap bounds the delay; retry_base sets the first one."""
    client = make_client(MODEL, retry_base=timedelta(seconds=10), retry_cap=timedelta(seconds=30))
    client.on("pql", Flaky())
    qualify(client)
    delays = []
    for _ in range(4):
        due = next_attempt(store)
        assert due is not None
        delays.append((due - clock.now()).total_seconds())
        clock.set(due)
        client.flush()
    assert delays == [10, 20, 30, 30]


def test_default_delays_double_up_to_one_hour(
    make_client: ClientFactory, clock: FrozenClock, store: Store, no_jitter: None
) -> None:
    """By default the delay starts at 1 s, doubles, and stops growing at one hour."""
    client = make_client(MODEL, max_attempts=20)
    client.on("pql", Flaky())
    qualify(client)
    delays = []
    for _ in range(14):
        due = next_attempt(store)
        assert due is not None
        delays.append(int((due - clock.now()).total_seconds()))
        clock.set(due)
        client.flush()
    assert delays == [2**n for n in range(12)] + [3600, 3600]


def test_dead_lettered_after_max_attempts(
    make_client: ClientFactory, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    """After max_attempts failures a delivery is dead: listed, logged, never retried."""
    client = make_client(MODEL, max_attempts=3)
    flaky = Flaky()
    client.on("pql", flaky)
    q = qualify(client)
    with caplog.at_level(logging.ERROR, logger="pqlkit"):
        for _ in range(2):
            clock.advance(timedelta(minutes=5))
            client.flush()
    assert len(flaky.calls) == 3
    assert client.dead_letters() == [q]
    assert client.pending() == []
    assert "dead-lettered" in caplog.records[-1].getMessage()
    clock.advance(timedelta(days=30))
    client.flush()
    client.track("u2", "login")
    assert len(flaky.calls) == 3


def test_ten_attempts_by_default(client: Client, clock: FrozenClock) -> None:
    """max_attempts defaults to 10."""
    flaky = Flaky()
    client.on("pql", flaky)
    qualify(client)
    for _ in range(20):
        clock.advance(timedelta(hours=2))
        client.flush()
    assert len(flaky.calls) == 10
    assert len(client.dead_letters()) == 1


def test_retry_dead_letters_makes_them_pending(
    make_client: ClientFactory, clock: FrozenClock, store: Store
) -> None:
    """retry_dead_letters(): returns the count, they are pending again and then delivered."""
    client = make_client(MODEL, max_attempts=1)
    flaky = Flaky(failures=2)
    client.on("pql", flaky)
    q1 = qualify(client, "u1")
    q2 = qualify(client, "u2")
    assert client.dead_letters() == [q1, q2]
    assert client.retry_dead_letters() == 2  # pending again, and due at once
    assert client.dead_letters() == []
    assert [c.id for c in flaky.calls] == [q1.id, q2.id, q1.id, q2.id]
    assert client.pending() == []
    assert client.retry_dead_letters() == 0


def test_revived_dead_letter_is_pending_until_flushed(
    make_client: ClientFactory, store: Store
) -> None:
    """A revived dead letter is pending again (attempts reset) until a delivery pass runs."""
    client = make_client(MODEL, max_attempts=1)
    client.on("pql", Flaky())
    q = qualify(client)
    other = make_client(MODEL, max_attempts=1)  # no callback: revives without delivering
    assert other.retry_dead_letters() == 1
    assert other.pending() == [q]
    assert attempts(store) == 0


def test_future_timestamps_and_sweeps_deliver_at_once(client: Client, clock: FrozenClock) -> None:
    """The first attempt is due at the clock's now, even when T lies in the clock's future."""
    got: list[Qualification] = []
    client.on("pql", got.append)
    client.on("disqualified", got.append)
    (q,) = client.track("u1", "dashboard_built", timestamp=T0 + days_(3)).qualified
    assert got == [q]
    (dq,) = client.track("u1", "churned", timestamp=T0 + days_(4)).disqualified
    assert got == [q, dq]
    assert client.pending() == []
    assert clock.now() == T0


def test_pending_lists_undelivered_oldest_first(client: Client) -> None:
    """pending(): qualifications and disqualifications not delivered yet, oldest first."""
    q1 = qualify(client, "u1")
    q2 = qualify(client, "u2")
    (dq,) = client.track("u1", "churned").disqualified
    assert client.pending() == [q1, q2, dq]
    assert dq.id != q1.id
    assert dq.disqualified_at == T0


def test_without_a_callback_of_its_kind_a_delivery_stays_pending(
    client: Client, store: Store
) -> None:
    """No callback for its kind: not attempted; delivered once one is registered and flushed."""
    q = qualify(client)
    client.on("disqualified", Flaky())  # another kind: does not take it
    client.flush()
    assert client.pending() == [q]
    assert attempts(store) == 0
    got: list[Qualification] = []
    client.on("pql", got.append)
    assert got == []  # registering does not dispatch
    client.flush()
    assert got == [q]
    assert client.pending() == []


def test_constructing_a_client_never_dispatches(make_client: ClientFactory, store: Store) -> None:
    """Pending work is delivered by flush() of a new Client, not by constructing it (nor by a
    track() that fired nothing)."""
    first = make_client(MODEL)
    q = qualify(first)
    first.close()
    second = make_client(MODEL)
    got: list[Qualification] = []
    second.on("pql", got.append)
    assert got == []
    second.track("u9", "login")
    assert got == []
    second.flush()
    assert got == [q]


def test_a_new_client_delivers_what_an_earlier_one_left_pending(
    store: Store, clock: FrozenClock
) -> None:
    """A Client on the same store (a restart) delivers an earlier Client's pending work."""
    first_handle = reopen(store)
    with Client(MODEL, store=first_handle, clock=clock, dispatch="inline") as first:
        flaky = Flaky()
        first.on("pql", flaky, name="sink")
        q = qualify(first)
        assert len(flaky.calls) == 1
    if first_handle is not store:
        first_handle.close()
    clock.advance(timedelta(seconds=1))
    second_handle = reopen(store)
    with Client(MODEL, store=second_handle, clock=clock, dispatch="inline") as second:
        got: list[Qualification] = []
        second.on("pql", got.append, name="sink")  # the same callback, after a restart
        second.flush()
        assert got == [q]
        assert second.pending() == []
    if second_handle is not store:
        second_handle.close()
    assert flaky.calls == [q]


def test_a_leased_delivery_waits_for_its_lease(client: Client, store: Store) -> None:
    """A delivery leased by another (live) process is not run until the lease expires."""
    q = qualify(client)  # no callback yet: pending
    wall = datetime.now(timezone.utc)
    with store.transaction() as tx:  # another process with callback "sink" claims it for 0.3 s
        tx.register_callback(MODEL.name, "pql", "sink", T0, since=T0)
        (claimed,) = tx.claim_due(T0, wall, wall + timedelta(seconds=0.3), ["pql:sink"], 10)
    assert claimed.id == q.id
    got: list[Qualification] = []
    client.on("pql", got.append, name="sink")
    client.flush()
    assert got == []
    time.sleep(0.4)
    client.flush()
    assert got == [q]


def test_attempts_cut_short_by_dying_processes_count(
    make_client: ClientFactory, store: Store
) -> None:
    """A callback that kills its process every time is dead-lettered, not retried forever."""
    client = make_client(MODEL, max_attempts=3)
    q = qualify(client)  # no callback yet: pending
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    with store.transaction() as tx:
        tx.register_callback(MODEL.name, "pql", "sink", T0, since=T0)
    for _ in range(3):  # three processes claim it and die before finishing
        with store.transaction() as tx:
            assert [d.id for d in tx.claim_due(T0, past, past, ["pql:sink"], 10)] == [q.id]
    got: list[Qualification] = []
    client.on("pql", got.append, name="sink")
    client.flush()
    assert got == []
    assert client.dead_letters() == [q]


def test_a_failing_callback_never_stops_repeats_or_dead_letters_another(
    make_client: ClientFactory, clock: FrozenClock
) -> None:
    """Each callback has its own delivery: one that keeps failing (registered first) does
    not keep the next from running, does not make it run twice, and is dead-lettered alone."""
    client = make_client(MODEL, max_attempts=2)
    slack = Flaky()  # down for good
    in_app: list[Qualification] = []
    client.on("pql", slack)
    client.on("pql", in_app.append)
    q = qualify(client)
    assert in_app == [q]
    for _ in range(3):
        clock.advance(timedelta(hours=1))
        client.flush()
    assert slack.calls == [q, q]
    assert in_app == [q]  # not repeated by slack's retries
    assert client.dead_letters() == [q]
    assert client.pending() == []


def test_each_callback_has_its_own_delivery_record(
    make_client: ClientFactory, clock: FrozenClock
) -> None:
    """deliveries() lists a record per callback; retry_dead_letters(callback=) revives one."""
    client = make_client(MODEL, max_attempts=1)
    slack = Flaky(failures=1)
    in_app: list[Qualification] = []
    client.on_pql(slack, name="slack")
    client.on_pql(in_app.append, name="in_app")
    q = qualify(client)
    records = {d.callback: d for d in client.deliveries()}
    assert records["in_app"].status == "delivered"
    assert records["in_app"].finished_at == T0
    assert records["slack"].status == "dead"
    assert records["slack"].last_error == "RuntimeError: receiver down (call 1)"
    assert all(d.qualification == q for d in records.values())
    assert client.deliveries(status="dead", callback="in_app") == []
    assert client.retry_dead_letters(callback="in_app") == 0
    assert client.retry_dead_letters(callback="slack") == 1
    assert slack.calls == [q, q]
    assert in_app == [q]
    assert [d.status for d in client.deliveries(callback="slack")] == ["delivered"]


def test_a_callback_registered_after_the_qualification_gets_it_once(
    make_client: ClientFactory,
) -> None:
    """A qualification recorded where no callback is registered (a web worker) reaches a
    callback registered later in another client on the store (the worker process), once."""
    web = make_client(MODEL)
    q = qualify(web)
    assert web.pending() == [q]
    worker = make_client(MODEL)
    got: list[Qualification] = []
    worker.on_pql(got.append, name="slack")
    worker.flush()
    assert got == [q]
    worker.flush()
    web.flush()
    assert got == [q]
    assert web.pending() == worker.pending() == []


def test_a_qualification_reaches_callbacks_registered_only_elsewhere(
    make_client: ClientFactory,
) -> None:
    """A callback registered (and seen by the store) in a worker gets what a web client with
    no callbacks records afterwards, on the worker's next pass; the web client never runs it."""
    worker = make_client(MODEL)
    got: list[Qualification] = []
    worker.on_pql(got.append, name="slack")
    worker.flush()  # the worker's first pass records "slack" in the store
    web = make_client(MODEL)
    q = qualify(web)
    assert [(d.callback, d.status) for d in web.deliveries()] == [("slack", "pending")]
    web.flush()
    assert got == []
    worker.flush()
    assert got == [q]


def test_a_restart_maps_callbacks_back_by_name(
    make_client: ClientFactory, clock: FrozenClock
) -> None:
    """After a restart, callbacks registered under the same names resume their own records:
    the one that had succeeded is not called again."""
    first = make_client(MODEL)
    first.on_pql(Flaky(), name="slack")
    first.on_pql(lambda q: None, name="in_app")
    q = qualify(first)
    first.close()
    clock.advance(timedelta(minutes=5))
    second = make_client(MODEL)
    slack: list[Qualification] = []
    in_app: list[Qualification] = []
    second.on_pql(slack.append, name="slack")
    second.on_pql(in_app.append, name="in_app")
    second.flush()
    assert slack == [q]
    assert in_app == []


def test_a_qualification_no_callback_took_expires_after_the_window(
    make_client: ClientFactory, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Taken by no callback within delivery_window: it expires (listed, logged, no longer
    pending), and a callback registered afterwards does not get it."""
    client = make_client(MODEL, delivery_window=days_(1))
    q = qualify(client)
    clock.advance(days_(1) + timedelta(seconds=1))
    client.flush()
    assert client.pending() == []
    (expired,) = client.deliveries(status="expired")
    assert (expired.qualification, expired.callback, expired.finished_at) == (q, None, clock.now())
    assert "1 deliveries expired" in caplog.text
    got: list[Qualification] = []
    client.on_pql(got.append)
    client.flush()
    assert got == []


def test_a_record_never_attempted_within_the_window_expires(
    make_client: ClientFactory, clock: FrozenClock
) -> None:
    """A record for a callback whose process never ran in the window expires; another
    callback's delivered record does not."""
    elsewhere = make_client(MODEL)
    elsewhere.on_pql(lambda q: None, name="slack")
    elsewhere.flush()
    elsewhere.close()
    client = make_client(MODEL, delivery_window=days_(1))
    client.on_pql(lambda q: None, name="in_app")
    q = qualify(client)
    clock.advance(days_(2))
    client.flush()
    assert [(d.callback, d.status) for d in client.deliveries()] == [
        ("in_app", "delivered"),
        ("slack", "expired"),
    ]
    assert client.pending() == []
    assert [d.qualification for d in client.deliveries()] == [q, q]


def test_delivered_records_are_deleted_after_the_retention(
    make_client: ClientFactory, clock: FrozenClock
) -> None:
    """A delivered qualification is deleted delivery_retention after its window closed; a
    dead letter is kept."""
    client = make_client(
        MODEL, delivery_window=days_(1), delivery_retention=days_(2), max_attempts=1
    )
    client.on_pql(lambda q: None, name="ok")
    client.on_pql(Flaky(), name="down")
    qualify(client, "u1")  # delivered to ok, dead for down
    clock.advance(days_(1) + timedelta(seconds=1))
    client.flush()  # the window closes
    assert len(client.deliveries(status="delivered")) == 1
    clock.advance(days_(2))
    client.flush()
    assert len(client.deliveries(status="delivered")) == 1  # kept: u1 has a dead letter
    client.retry_dead_letters()  # fails again, still dead
    assert [d.callback for d in client.deliveries(status="dead")] == ["down"]
    other = make_client(MODEL, delivery_window=days_(1), delivery_retention=days_(2))
    other.on_pql(lambda q: None, name="ok")
    qualify(other, "u2")
    clock.advance(days_(1) + timedelta(seconds=1))
    other.flush()
    clock.advance(days_(2) + timedelta(seconds=1))
    other.flush()
    assert {d.qualification.subject_id for d in other.deliveries()} == {"u1"}


def test_a_callback_may_call_track(client: Client) -> None:
    """A callback that records an event (qualifying someone else) does not deadlock."""
    got: list[str] = []

    @client.on_pql
    def chain(q: Qualification) -> None:
        got.append(q.subject_id)
        if q.subject_id == "u1":
            client.track("u2", "dashboard_built")

    qualify(client)
    client.flush()
    assert got == ["u1", "u2"]
    assert client.pending() == []


def test_disqualifications_are_retried_too(
    client: Client, clock: FrozenClock, no_jitter: None
) -> None:
    """on_disqualified deliveries get the same retry schedule."""
    flaky = Flaky(failures=1)
    client.on("disqualified", flaky)
    qualify(client)
    client.track("u1", "churned")
    clock.advance(timedelta(seconds=1) - US)
    client.flush()
    assert len(flaky.calls) == 1
    clock.advance(US)
    client.flush()
    assert len(flaky.calls) == 2
    assert flaky.calls[0] == flaky.calls[1]
    assert client.pending()[0].kind == "pql"  # no pql callback: still pending


# -- background ------------------------------------------------------------------


def test_background_callbacks_run_on_a_worker_thread(make_client: ClientFactory) -> None:
    """dispatch="background": callbacks run on another thread; flush() waits for them."""
    client = make_client(MODEL, dispatch="background")
    threads: list[threading.Thread] = []

    @client.on_pql
    def slow(q: Qualification) -> None:
        time.sleep(0.2)
        threads.append(threading.current_thread())

    result = client.track("u1", "dashboard_built")
    assert len(result.qualified) == 1
    client.flush()
    assert len(threads) == 1
    assert threads[0] is not threading.current_thread()
    assert client.pending() == []
    client.close()
    assert not threads[0].is_alive()


def test_background_flush_waits_for_every_due_delivery(make_client: ClientFactory) -> None:
    """flush() returns only after every due delivery was attempted (failures included)."""
    client = make_client(MODEL, dispatch="background")
    got: list[str] = []

    @client.on_pql
    def slow(q: Qualification) -> None:
        time.sleep(0.05)
        got.append(q.subject_id)
        if q.subject_id == "u3":
            raise RuntimeError("boom")

    users = [f"u{n}" for n in range(6)]
    for user in users:
        client.track(user, "dashboard_built")
    client.flush()
    assert sorted(got) == users
    assert [q.subject_id for q in client.pending()] == ["u3"]


def test_background_track_does_not_wait_for_callbacks(make_client: ClientFactory) -> None:
    """In background mode track() returns while a callback is still blocked."""
    client = make_client(MODEL, dispatch="background")
    release = threading.Event()
    started = threading.Event()

    @client.on_pql
    def blocked(q: Qualification) -> None:
        started.set()
        release.wait(timeout=10)

    client.track("u1", "dashboard_built")
    assert started.wait(timeout=10)
    assert not release.is_set()
    release.set()
    client.flush()
    assert client.pending() == []


def test_background_close_stops_the_worker(make_client: ClientFactory) -> None:
    """close() delivers what is due, then stops the worker thread."""
    client = make_client(MODEL, dispatch="background")
    threads: list[threading.Thread] = []
    client.on("pql", lambda q: threads.append(threading.current_thread()))
    client.track("u1", "dashboard_built")
    client.close()
    assert len(threads) == 1
    assert threads[0] is not threading.current_thread()
    assert not threads[0].is_alive()


def test_background_errors_are_logged_not_raised(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing callback on the worker is logged on `pqlkit` and stays pending."""
    client = make_client(MODEL, dispatch="background")
    client.on("pql", Flaky())
    with caplog.at_level(logging.ERROR, logger="pqlkit"):
        client.track("u1", "dashboard_built")
        client.flush()
    assert any("u1" in r.getMessage() for r in caplog.records if r.name == "pqlkit")
    assert len(client.pending()) == 1


def test_background_callback_may_track_and_flush(make_client: ClientFactory) -> None:
    """A callback on the worker calling track() and flush() neither deadlocks nor loses work."""
    client = make_client(MODEL, dispatch="background")
    got: list[str] = []

    @client.on_pql
    def chain(q: Qualification) -> None:
        got.append(q.subject_id)
        if q.subject_id == "u1":
            client.track("u2", "dashboard_built")
            client.flush()  # on the worker itself: must not wait for itself

    client.track("u1", "dashboard_built")
    flusher = threading.Thread(target=client.flush, daemon=True)
    flusher.start()
    flusher.join(timeout=10)
    assert not flusher.is_alive(), "flush() deadlocked"
    client.flush()
    assert got == ["u1", "u2"]
    assert client.pending() == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_background_worker_after_fork(tmp_path: Path) -> None:
    """A child forked after the Client exists gets its own worker; its callback runs there."""
    log = tmp_path / "calls.txt"

    def record(q: Qualification) -> None:
        with open(log, "a") as f:
            f.write(f"{q.subject_id} {os.getpid()} {threading.current_thread().name}\n")

    store = SQLiteStore(tmp_path / "pql.db")
    client = Client(MODEL, store=store, dispatch="background")
    try:
        client.on("pql", record)
        client.track("parent-1", "dashboard_built")
        client.flush()  # the parent's worker thread now runs
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                client.track("child", "dashboard_built")
                client.flush()
                client.close()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        client.track("parent-2", "dashboard_built")
        client.flush()
    finally:
        client.close()
        store.close()
    parent = os.getpid()
    lines = [line.split() for line in log.read_text().splitlines()]
    assert sorted((user, int(p)) for user, p, _ in lines) == [
        ("child", pid),
        ("parent-1", parent),
        ("parent-2", parent),
    ]
    assert all(name != "MainThread" for *_, name in lines)


def test_unknown_dispatch_mode_is_rejected() -> None:
    """dispatch is "inline" or "background"; anything else raises ValidationError."""
    from pqlkit import ValidationError

    with pytest.raises(ValidationError, match="dispatch"):
        Client(MODEL, store=MemoryStore(), dispatch="threads")  # type: ignore[arg-type]


# -- models sharing a store --------------------------------------------------------


def test_two_models_on_one_store_never_see_each_others_qualifications(
    store: Store, clock: FrozenClock
) -> None:
    """A v2 client's callbacks never receive a v1 qualification, nor list it as its own."""
    v2_model = Model("dispatch-v2", signals={"built": did("dashboard_built")}, pql=signal("built"))
    with (
        Client(MODEL, store=store, clock=clock, dispatch="inline") as v1,
        Client(v2_model, store=store, clock=clock, dispatch="inline") as v2,
    ):
        got_v2: list[Qualification] = []
        v2.on("pql", got_v2.append)
        q1 = qualify(v1, "u1")  # v1 has no callback: stays pending in v1's outbox
        v2.flush()
        v2.track("u9", "login")
        assert got_v2 == []
        assert v2.pending() == []
        assert v1.pending() == [q1]
        (q2,) = v2.track("u2", "dashboard_built").qualified
        assert got_v2 == [q2]
        assert q2.model == "dispatch-v2"
        got_v1: list[Qualification] = []
        v1.on("pql", got_v1.append)
        v1.flush()
        assert got_v1 == [q1]
        assert v1.pending() == v2.pending() == []


# -- after the commit, track() does not raise ---------------------------------------


def test_close_inside_a_callback_does_not_make_track_raise(
    tmp_path: Path, clock: FrozenClock
) -> None:
    """A callback that closes the client: the track() that ran it returns its result."""
    client = Client(MODEL, store=f"sqlite:///{tmp_path / 'own.db'}", clock=clock)
    client.on("pql", lambda q: client.close())
    result = client.track("u1", "dashboard_built", message_id="m-1")
    assert [q.subject_id for q in result.qualified] == ["u1"]
    assert client._core.closed
    with SQLiteStore(tmp_path / "own.db") as store, store.transaction() as tx:
        assert tx.has_message("m-1")


def test_a_store_failure_after_the_commit_does_not_make_track_raise(
    clock: FrozenClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The delivery step fails after the event committed: track() returns, logs, stays pending."""
    from pqlkit.stores import memory

    store = MemoryStore()
    with Client(MODEL, store=store, clock=clock) as client:
        got: list[Qualification] = []
        client.on("pql", got.append)

        def broken(*args: object, **kwargs: object) -> None:
            raise StoreError("disk I/O error")

        monkeypatch.setattr(memory._MemoryTransaction, "claim_due", broken)
        with caplog.at_level(logging.ERROR, logger="pqlkit"):
            result = client.track("u1", "dashboard_built", message_id="m-1")
        assert [q.subject_id for q in result.qualified] == ["u1"]
        assert got == []
        assert "disk I/O error" in caplog.text
        assert [q.subject_id for q in client.pending()] == ["u1"]
        monkeypatch.undo()
        client.flush()
        assert got == result.qualified


# -- leases ----------------------------------------------------------------------------


class Overlaps:
    """A slow callback that records each call and any call overlapping another of the same id."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.calls: list[str] = []
        self.overlaps: list[str] = []

    def __call__(self, q: Qualification) -> None:
        with self.lock:
            if q.id in self.running:
                self.overlaps.append(q.id)
            self.running.add(q.id)
            self.calls.append(q.id)
        time.sleep(self.seconds)
        with self.lock:
            self.running.discard(q.id)


def test_a_callback_longer_than_the_lease_never_runs_twice_at_once(
    make_client: ClientFactory,
) -> None:
    """Two threads flushing, callbacks 3x longer than the lease: each runs once, never at once."""
    client = make_client(MODEL, delivery_lease=timedelta(seconds=0.1))
    ids = [qualify(client, f"u{n}").id for n in range(6)]  # no callback yet: all pending
    slow = Overlaps(0.3)
    client.on("pql", slow)
    deadline = time.monotonic() + 2.5

    def keep_flushing() -> None:
        while time.monotonic() < deadline:
            client.flush()
            time.sleep(0.01)

    flushers = [threading.Thread(target=keep_flushing) for _ in range(2)]
    for thread in flushers:
        thread.start()
    for thread in flushers:
        thread.join(timeout=30)
    assert slow.overlaps == []
    assert sorted(slow.calls) == sorted(ids)
    assert client.pending() == []


# -- inline budget, bounded flush and close ---------------------------------------------

BOTH = Model(
    "dispatch-both",
    signals={"built": did("dashboard_built")},
    pql=signal("built"),
    pqa=signal("built"),
)


def test_a_track_that_fired_nothing_never_runs_anothers_delivery(
    client: Client, clock: FrozenClock
) -> None:
    """Inline: a due retry of a slow, failing callback is not run by someone else's track()."""
    calls: list[str] = []

    def slow_and_down(q: Qualification) -> None:
        calls.append(q.subject_id)
        time.sleep(0.3)
        raise RuntimeError("Slack timed out")

    client.on("pql", slow_and_down)
    qualify(client, "u1")
    assert calls == ["u1"]
    clock.advance(timedelta(minutes=5))  # the retry is due
    for n in range(3):
        client.track(f"visitor-{n}", "login")
    assert calls == ["u1"]
    client.flush()
    assert calls == ["u1", "u1"]


def test_inline_delivery_stops_at_the_budget_and_leaves_the_rest_pending(
    store: Store, clock: FrozenClock
) -> None:
    """A write delivers what it fired until inline_budget is spent; the rest waits for flush()."""
    with Client(BOTH, store=store, clock=clock, inline_budget=timedelta(seconds=0.1)) as client:
        got: list[str] = []

        def slow(q: Qualification) -> None:
            time.sleep(0.2)
            got.append(q.kind)

        client.on("pql", slow)
        client.on("pqa", slow)
        result = client.track("u1", "dashboard_built", account_id="acme")
        assert sorted(q.kind for q in result.qualified) == ["pqa", "pql"]
        assert len(got) == 1  # the second callback would have started past the budget
        assert len(client.pending()) == 1
        client.flush()
        assert sorted(got) == ["pqa", "pql"]
        assert client.pending() == []


def test_an_inline_budget_of_zero_delivers_only_on_flush(
    make_client: ClientFactory,
) -> None:
    """inline_budget=0: track() delivers nothing; flush() does."""
    client = make_client(MODEL, inline_budget=timedelta(0))
    got: list[Qualification] = []
    client.on("pql", got.append)
    q = qualify(client)
    assert got == []
    assert client.pending() == [q]
    assert client.flush() == 0
    assert got == [q]


@pytest.mark.parametrize("mode", ["inline", "background"])
def test_close_with_a_hung_callback_returns_after_its_timeout(
    make_client: ClientFactory, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """close(timeout=1) returns within about a second while a callback hangs; it is logged."""
    client = make_client(MODEL, dispatch=mode, inline_budget=timedelta(0))
    release = threading.Event()
    started = threading.Event()

    def hung(q: Qualification) -> None:
        started.set()
        release.wait(timeout=30)

    client.on("pql", hung)
    qualify(client, "u1")
    qualify(client, "u2")
    try:
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="pqlkit"):
            client.close(timeout=1)
        took = time.monotonic() - began
        assert started.is_set()
        assert took < 5, f"close(timeout=1) took {took:.1f} s"
        assert "left pending" in caplog.text
    finally:
        release.set()


@pytest.mark.parametrize("mode", ["inline", "background"])
def test_a_closed_client_stops_renewing_the_lease_of_an_abandoned_callback(
    tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After close(timeout=...) leaves a hung callback running, nothing tries the closed
    store again: its lease is left to expire (the heartbeat logged a failure every beat)."""
    client = Client(
        MODEL,
        store=f"sqlite:///{tmp_path / 'own.db'}",  # owned: close() closes it
        dispatch=mode,
        inline_budget=timedelta(0),
        delivery_lease=timedelta(seconds=0.3),
    )
    release = threading.Event()
    started = threading.Event()

    def hung(q: Qualification) -> None:
        started.set()
        release.wait(timeout=30)

    client.on_pql(hung)
    qualify(client, "u1")
    try:
        with caplog.at_level(logging.WARNING, logger="pqlkit"):
            client.close(timeout=0.5)
            assert started.is_set()
            time.sleep(1.0)  # ten beats of a 0.3 s lease
        assert "could not renew" not in caplog.text
    finally:
        release.set()


def test_flush_with_a_timeout_returns_how_many_it_left(make_client: ClientFactory) -> None:
    """flush(timeout=0.5) with a hung callback: returns within bounds, counting what is left."""
    client = make_client(MODEL, inline_budget=timedelta(0))
    release = threading.Event()

    def hung(q: Qualification) -> None:
        release.wait(timeout=30)

    for n in range(3):
        qualify(client, f"u{n}")
    client.on("pql", hung)
    try:
        began = time.monotonic()
        left = client.flush(timeout=0.5)
        assert time.monotonic() - began < 5
        assert left == 2  # one is running (not interrupted), two were not started
    finally:
        release.set()
    assert client.flush(timeout=10) == 0
    assert client.pending() == []


def test_callbacks_are_registered_under_a_name(client: Client) -> None:
    """Bare decorator, decorator with name=, or a call: each returns the function; a name
    taken by a callback of the same kind is refused, naming the field."""

    def alert(q: Qualification) -> None:
        pass

    assert client.on_pql(alert) is alert
    assert client.on_pql(name="slack")(alert) is alert
    assert client.on_pql(alert, name="crm") is alert
    assert client.on_disqualified(alert) is alert  # another kind: its own names
    assert client.on_pqa(name="slack")(alert) is alert
    for name in (f"{__name__}.test_callbacks_are_registered_under_a_name.<locals>.alert", "crm"):
        with pytest.raises(ValidationError) as caught:
            client.on_pql(alert, name=name)
        assert caught.value.field == "name"
    for bad in ("", "  ", "*", 5):
        with pytest.raises(ValidationError) as caught:
            client.on("pql", alert, name=bad)  # type: ignore[arg-type]
        assert caught.value.field == "name"


def test_the_module_level_api_registers_named_callbacks(client: Client) -> None:
    """pqlkit.on_pql/on_pqa/on_disqualified register on the default client, with name=."""
    got: list[str] = []
    with use(client):
        pqlkit.on_pql(name="feed")(lambda q: got.append(q.subject_id))
        pqlkit.on_disqualified(lambda q: None, name="feed")
        pqlkit.on_pqa(lambda q: None)
        with pytest.raises(ValidationError):
            pqlkit.on_pql(lambda q: None, name="feed")
    qualify(client)
    assert got == ["u1"]


class ClaimConflicts:
    """A store whose first ``conflicts`` claims are aborted by the database (a deadlock)."""

    def __init__(self, inner: Store, conflicts: int) -> None:
        self.inner = inner
        self.conflicts = conflicts

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.inner.transaction() as tx:
            yield _ClaimConflictsTransaction(tx, self)

    def joined(self, connection: Any) -> Any:
        return self.inner.joined(connection)

    def close(self) -> None:
        self.inner.close()


class _ClaimConflictsTransaction:
    def __init__(self, tx: Any, owner: ClaimConflicts) -> None:
        self._tx = tx
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        if name == "claim_due" and self._owner.conflicts > 0:
            self._owner.conflicts -= 1
            raise TransientStoreError("deadlock detected (injected)")
        return getattr(self._tx, name)


def test_flush_claims_again_after_the_database_aborted_a_claim(clock: FrozenClock) -> None:
    """A claim the database aborted (a deadlock between two flushing processes) is tried
    again after a pause: flush() still delivers everything due (it used to return early)."""
    store = ClaimConflicts(MemoryStore(), conflicts=0)
    with Client(MODEL, store=store, clock=clock, inline_budget=timedelta(0)) as client:  # type: ignore[arg-type]
        got: list[str] = []
        client.on_pql(lambda q: got.append(q.subject_id), name="sink")
        for n in range(3):
            qualify(client, f"u{n}")
        store.conflicts = 2
        assert client.flush() == 0
        assert sorted(got) == ["u0", "u1", "u2"]
        assert client.pending() == []


def test_an_inline_delivery_claims_once(
    make_client: ClientFactory, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A qualifying track() with one callback claims its record once, not again to find none.

    Each claim is a statement (a round trip on PostgreSQL) and a rewritten row.
    """
    claims: list[int] = []
    with store.transaction() as tx:
        transaction_type = type(tx)
    original = transaction_type.claim_due

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        batch = original(self, *args, **kwargs)
        claims.append(len(batch))
        return batch

    monkeypatch.setattr(transaction_type, "claim_due", counting)
    client = make_client(MODEL)
    calls: list[str] = []
    client.on_pql(lambda q: calls.append(q.subject_id), name="sink")
    client.flush()
    claims.clear()
    client.track("u1", "dashboard_built")
    assert calls == ["u1"]
    assert claims == [1]


def test_flush_delivers_on_its_own_thread_when_no_thread_can_start(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the interpreter exits (CPython 3.12 refuses new threads in atexit hooks), flush()
    delivers on the caller's thread instead of raising and leaving everything pending."""
    client = make_client(MODEL, inline_budget=timedelta(0))  # track() delivers nothing
    calls: list[str] = []
    client.on_pql(lambda q: calls.append(threading.current_thread().name), name="sink")
    client.track("u1", "dashboard_built")
    assert calls == []

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    assert client.flush(timeout=5) == 0
    assert calls == [threading.current_thread().name]
    assert client.pending() == []
