"""AsyncClient: the Client's methods as coroutines, store work off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import Any

import attrs
import pytest

import pqlkit
from conftest import T0
from pqlkit import (
    AsyncClient,
    Client,
    ClientClosedError,
    MemoryStore,
    Model,
    Qualification,
    Store,
    ValidationError,
    active_users,
    count,
    days,
    did,
    idle,
    points,
    score,
    signal,
)
from pqlkit.stores import Transaction
from pqlkit.testing import FrozenClock, recorder

MODEL = Model(
    "async",
    signals={
        "built": did("dashboard_built"),
        "invited": count("teammate_invited") >= 1,
        "dormant": idle() >= days(14),
    },
    scores={"behavior": points(built=30, invited=30, dormant=-40)},
    pql=(score("behavior") >= 50) & ~signal("dormant"),
    pqa=active_users(within=days(14)) >= 2,
)


class GatedStore:
    """A store whose ``insert_event`` waits until ``gate`` is set (a slow database)."""

    def __init__(self, inner: Store, *, timeout: float = 5.0) -> None:
        self.inner = inner
        self.timeout = timeout
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.timed_out = False

    def transaction(self) -> AbstractContextManager[Transaction]:
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[Transaction]:
        with self.inner.transaction() as tx:
            yield _GatedTransaction(tx, self)

    def close(self) -> None:
        self.inner.close()


class _GatedTransaction:
    def __init__(self, tx: Transaction, store: GatedStore) -> None:
        self._tx = tx
        self._store = store

    def insert_event(self, event: Any) -> Any:
        self._store.entered.set()
        if not self._store.gate.wait(timeout=self._store.timeout):
            self._store.timed_out = True
        return self._tx.insert_event(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


def test_track_does_not_block_the_event_loop() -> None:
    """A task on the loop keeps running while a track() waits on a slow store."""
    store = GatedStore(MemoryStore())
    ticks = 0

    async def main() -> pqlkit.TrackResult:
        nonlocal ticks
        async with AsyncClient(MODEL, store=store, clock=FrozenClock(T0)) as client:
            tracking = asyncio.ensure_future(client.track("u1", "dashboard_built"))
            while not store.entered.is_set():
                await asyncio.sleep(0.001)
            for _ in range(5):  # the store is stuck in insert_event: the loop still runs
                ticks += 1
                await asyncio.sleep(0.001)
            assert not tracking.done()
            store.gate.set()  # only a running loop can release the store
            return await tracking

    result = asyncio.run(main())
    store.close()
    assert not store.timed_out
    assert ticks == 5
    assert result.scores["behavior"] == 30


def test_sync_track_on_the_loop_would_block_it() -> None:
    """The control: the same slow store blocks the loop when the sync Client is called on it."""
    store = GatedStore(MemoryStore(), timeout=0.3)

    async def release() -> None:
        store.gate.set()

    async def main() -> None:
        task = asyncio.ensure_future(release())
        with Client(MODEL, store=store, clock=FrozenClock(T0)) as client:
            client.track("u1", "dashboard_built")  # the loop is stuck here: release() cannot run
        await task

    asyncio.run(main())
    store.close()
    assert store.timed_out


def _script() -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """The same calls for both clients: (method, args, kwargs); ``@t`` moves the clock."""
    return [
        ("identify", ("jane", {"email": "jane@acme.io"}), {"account_id": "acme"}),
        ("group", ("acme", {"employees": 600}), {}),
        ("track", ("jane", "dashboard_built"), {"account_id": "acme", "message_id": "m1"}),
        ("track", ("jane", "dashboard_built"), {"account_id": "acme", "message_id": "m1"}),
        ("@t", (timedelta(hours=2),), {}),
        ("track", ("anon-1", "teammate_invited", {"email": "raj@acme.io"}), {}),
        ("alias", ("anon-1", "jane"), {}),
        (
            "track_many",
            (
                [
                    {"user_id": "raj", "event": "dashboard_built", "account_id": "acme"},
                    pqlkit.Event("raj", "teammate_invited", {"email": "x"}, account_id="acme"),
                    {"user_id": "sam", "event": "login", "message_id": "m1"},
                ],
            ),
            {},
        ),
        ("scores", ("jane",), {}),
        ("signals", ("jane",), {}),
        ("explain", ("jane",), {}),
        ("scores", ("acme",), {"of": "account"}),
        ("explain", ("acme",), {"of": "account"}),
        ("qualified_at", ("jane",), {}),
        ("qualified_at", ("acme",), {"kind": "pqa"}),
        ("pending", (), {}),
        ("stats", (), {}),
        ("@t", (timedelta(days=20),), {}),
        ("sweep", (), {}),
        ("flush", (), {}),
        ("pending", (), {}),
        ("forget_preview", ("raj",), {}),
        ("forget", ("raj",), {}),
        ("forget", ("bo",), {"suppress": True}),
        ("track", ("bo", "login"), {}),
        ("unsuppress", ("bo",), {}),
        ("scores", ("acme",), {"of": "account"}),
        ("rebuild", (), {}),
        ("rebuild", (), {"on_retune": "record"}),
        ("dead_letters", (), {}),
        ("retry_dead_letters", (), {}),
        ("stats", (), {}),
    ]


def test_results_match_the_sync_client() -> None:
    """Every method returns what the sync Client returns for the same calls."""
    sync_clock, async_clock = FrozenClock(T0), FrozenClock(T0)
    sync_results: list[Any] = []
    with Client(MODEL, store=MemoryStore(), clock=sync_clock) as client:
        for method, args, kwargs in _script():
            if method == "@t":
                sync_clock.advance(*args)
                continue
            sync_results.append(getattr(client, method)(*args, **kwargs))

    async def main() -> list[Any]:
        results: list[Any] = []
        async with AsyncClient(MODEL, store=MemoryStore(), clock=async_clock) as client:
            for method, args, kwargs in _script():
                if method == "@t":
                    async_clock.advance(*args)
                    continue
                results.append(await getattr(client, method)(*args, **kwargs))
        return results

    async_results = asyncio.run(main())
    assert async_results == sync_results
    bulk = next(r for r in sync_results if isinstance(r, pqlkit.BulkResult))
    swept = next(
        r
        for r in sync_results
        if isinstance(r, list) and r and isinstance(r[0], Qualification) and r[0].disqualified_at
    )
    assert [q.subject_id for q in bulk.qualified] == ["acme", "raj"], "it covers firings"
    assert swept, "and disqualifications"


def test_async_client_on_each_store(store: Store) -> None:
    """Tracking through the AsyncClient fires once, on the memory and SQLite stores."""

    async def main() -> tuple[list[Qualification], list[pqlkit.TrackResult]]:
        async with AsyncClient(MODEL, store=store, clock=FrozenClock(T0)) as client:
            rec = recorder(client.client)
            results = await asyncio.gather(
                *(client.track("u1", "dashboard_built") for _ in range(5)),
                *(client.track("u1", "teammate_invited", {"email": f"{i}@x"}) for i in range(5)),
            )
            return list(rec.pql), list(results)

    delivered, results = asyncio.run(main())
    assert [q.subject_id for q in delivered] == ["u1"]
    assert sum(len(r.qualified) for r in results) == 1


def test_async_with_closes_the_client() -> None:
    """Leaving ``async with`` closes the wrapped Client; later calls raise ClientClosedError."""

    async def main() -> AsyncClient:
        async with AsyncClient(MODEL, store="memory://") as client:
            await client.track("u1", "login")
        with pytest.raises(ClientClosedError):
            await client.track("u1", "login")
        with pytest.raises(ClientClosedError):
            client.client.track("u1", "login")
        await client.close()  # idempotent
        return client

    client = asyncio.run(main())
    assert repr(client) == f"AsyncClient(model='async', store={client.store!r})"


def test_close_delivers_what_is_due() -> None:
    """close() attempts due deliveries, like Client.close()."""
    delivered: list[str] = []

    async def main() -> None:
        client = AsyncClient(MODEL, store="memory://", dispatch="background")
        client.on_pql(lambda q: delivered.append(q.subject_id))
        await client.track("u1", "dashboard_built")
        await client.track("u1", "teammate_invited")
        await client.close()

    asyncio.run(main())
    assert delivered == ["u1"]


def test_validation_errors_propagate() -> None:
    """Bad input raises the Client's ValidationError from the awaited call."""

    async def main() -> None:
        async with AsyncClient(MODEL, store="memory://") as client:
            with pytest.raises(ValidationError) as info:
                await client.track("", "login")
            assert info.value.field == "user_id"
            with pytest.raises(ValidationError):
                await client.scores("u1", of="team")  # type: ignore[arg-type]

    asyncio.run(main())


@pytest.mark.parametrize("workers", [0, -1, True, 1.5])
def test_max_workers_is_checked(workers: Any) -> None:
    """max_workers must be a positive int; nothing is opened when it is not."""
    with pytest.raises(ValidationError, match="max_workers"):
        AsyncClient(MODEL, store="memory://", max_workers=workers)


def test_settings_reach_the_client() -> None:
    """Client keywords (clock, dispatch, limits) are passed to the wrapped Client."""
    clock = FrozenClock(T0)

    async def main() -> None:
        async with AsyncClient(MODEL, store="memory://", clock=clock, max_id_length=3) as client:
            assert client.model is MODEL
            with pytest.raises(ValidationError, match="user_id"):
                await client.track("toolong", "login")
            await client.track("u1", "login")
            assert await client.explain("u1")
            assert client.client.clock is clock

    asyncio.run(main())


def test_plain_callbacks_run_off_the_loop() -> None:
    """A plain callback runs on a pool thread (inline dispatch), never on the loop's thread."""
    threads: list[int] = []

    async def main() -> int:
        async with AsyncClient(MODEL, store="memory://") as client:

            @client.on_pql
            def alert(q: Qualification) -> None:
                threads.append(threading.get_ident())

            await client.track("u1", "dashboard_built")
            await client.track("u1", "teammate_invited")
            return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert len(threads) == 1
    assert threads[0] != loop_thread


def test_async_callbacks_run_on_the_loop() -> None:
    """An ``async def`` callback is awaited on the client's event loop."""
    seen: list[tuple[str, int]] = []

    async def main() -> int:
        async with AsyncClient(MODEL, store="memory://") as client:

            @client.on_pql
            async def alert(q: Qualification) -> None:
                await asyncio.sleep(0)
                seen.append((q.subject_id, threading.get_ident()))

            await client.track("u1", "dashboard_built")
            await client.track("u1", "teammate_invited")
            assert await client.pending() == []
            return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert seen == [("u1", loop_thread)]


def test_a_failing_async_callback_is_retried() -> None:
    """An async callback that raises is retried with backoff, like a plain one."""
    clock = FrozenClock(T0)
    calls: list[str] = []

    async def main() -> tuple[int, int]:
        async with AsyncClient(MODEL, store="memory://", clock=clock) as client:

            @client.on_pql
            async def flaky(q: Qualification) -> None:
                calls.append(q.id)
                if len(calls) == 1:
                    raise ConnectionError("CRM is down")

            await client.track("u1", "dashboard_built")
            await client.track("u1", "teammate_invited")
            pending_after_failure = len(await client.pending())
            clock.advance(timedelta(seconds=2))
            await client.flush()
            return pending_after_failure, len(await client.pending())

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pqlkit._dispatch.logger.disabled", True)
        assert asyncio.run(main()) == (1, 0)
    assert len(calls) == 2
    assert calls[0] == calls[1]


def test_async_callback_with_background_dispatch() -> None:
    """With dispatch="background" an async callback still runs on the loop; flush waits for it."""
    seen: list[int] = []

    async def main() -> int:
        async with AsyncClient(MODEL, store="memory://", dispatch="background") as client:

            @client.on_pql
            async def alert(q: Qualification) -> None:
                seen.append(threading.get_ident())

            await client.track("u1", "dashboard_built")
            await client.track("u1", "teammate_invited")
            await client.flush()
            assert len(seen) == 1
            return threading.get_ident()

    assert asyncio.run(main()) == seen[0]


def test_async_callback_on_the_loop_thread_is_refused() -> None:
    """Driving the wrapped sync Client from the loop with an async callback fails the delivery.

    The delivery stays pending (it would deadlock otherwise) and is made later.
    """

    clock = FrozenClock(T0)

    async def main() -> tuple[int, list[str]]:
        got: list[str] = []
        async with AsyncClient(MODEL, store="memory://", clock=clock) as client:

            @client.on_pql
            async def alert(q: Qualification) -> None:
                got.append(q.subject_id)

            await client.track("u1", "dashboard_built")
            client.client.track("u1", "teammate_invited")  # sync, on the loop's thread
            stuck = len(await client.pending())
            clock.advance(timedelta(seconds=2))  # past the first retry's delay
            await client.flush()
            return stuck, got

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pqlkit._dispatch.logger.disabled", True)
        stuck, got = asyncio.run(main())
    assert stuck == 1
    assert got == ["u1"]


def test_decorators_return_the_function() -> None:
    """on_pql/on_pqa/on_disqualified return the function, and on() checks its arguments."""

    def fn(q: Qualification) -> None:
        pass

    async def main() -> None:
        async with AsyncClient(MODEL, store="memory://") as client:
            assert client.on_pql(fn) is fn
            assert client.on_pqa(fn) is fn
            assert client.on_disqualified(fn) is fn
            assert client.on("pql", fn, name="again") is fn
            with pytest.raises(ValidationError, match="registered already"):
                client.on("pql", fn)  # the same name twice for one kind
            with pytest.raises(ValidationError):
                client.on("pql", "not callable")  # type: ignore[arg-type]
            with pytest.raises(ValidationError):
                client.on("sale", fn)  # type: ignore[arg-type]

    asyncio.run(main())


def test_pqa_and_disqualified_through_the_async_client() -> None:
    """Accounts fire PQAs and sweeps disqualify dormant users, as with the sync Client."""
    clock = FrozenClock(T0)

    async def main() -> tuple[list[str], list[str], list[Qualification]]:
        pqas: list[str] = []
        gone: list[str] = []
        async with AsyncClient(MODEL, store="memory://", clock=clock) as client:
            client.on_pqa(lambda q: pqas.append(q.subject_id))
            client.on_disqualified(lambda q: gone.append(q.subject_id))
            client.on_pql(lambda q: None)
            await client.track("u1", "dashboard_built", account_id="acme")
            await client.track("u1", "teammate_invited", account_id="acme")
            await client.track("u2", "login", account_id="acme")
            clock.advance(days(15))
            fired = await client.sweep()
        return pqas, gone, fired

    pqas, gone, fired = asyncio.run(main())
    assert pqas == ["acme"]
    assert "u1" in gone
    assert {q.subject_id for q in fired} >= {"u1"}


def test_store_work_sees_context_variables() -> None:
    """Store work sees the caller's context variables (copied into the pool thread)."""
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
    seen: list[str] = []

    async def main() -> None:
        async with AsyncClient(MODEL, store="memory://") as client:
            client.on_pql(lambda q: seen.append(var.get()))
            var.set("req-42")
            await client.track("u1", "dashboard_built")
            await client.track("u1", "teammate_invited")
            assert isinstance(client.store, MemoryStore)

    asyncio.run(main())
    assert seen == ["req-42"]


def test_track_many_matches_the_sync_client() -> None:
    """BulkResult from track_many equals the sync one (attrs value equality)."""
    events = [{"user_id": f"u{i}", "event": "dashboard_built"} for i in range(3)]

    async def main() -> pqlkit.BulkResult:
        async with AsyncClient(MODEL, store="memory://", clock=FrozenClock(T0)) as client:
            return await client.track_many(events)

    with Client(MODEL, store="memory://", clock=FrozenClock(T0)) as sync:
        expected = sync.track_many(events)
    got = asyncio.run(main())
    assert attrs.asdict(got) == attrs.asdict(expected)
    assert got.stored == 3


def test_connection_is_passed_to_the_client() -> None:
    """``connection=`` reaches Client.track/track_many (refused on a store that cannot join)."""

    async def main() -> None:
        async with AsyncClient(MODEL, store="memory://") as client:
            with pytest.raises(ValidationError, match="connection"):
                await client.track("u1", "login", connection=object())  # type: ignore[arg-type]
            with pytest.raises(ValidationError, match="connection"):
                await client.track_many([], connection=object())  # type: ignore[arg-type]
            assert await client.stats() == client.client.stats()

    asyncio.run(main())
