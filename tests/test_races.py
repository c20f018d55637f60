"""Writes that rewrite several subjects' states, racing ``track()``: no event lost, no ghost state.

``group()`` re-evaluates the account's users, ``alias()`` rebuilds the surviving
user and its accounts, ``forget()`` rebuilds the forgotten user's accounts. Each
scenario runs one worker making such calls while others ``track()`` events for
the same users and accounts, in threads (one Client each, one store) and in
processes (a store and a Client each). Afterwards every subject's stored state
must count exactly the events the log holds for it, equal what ``rebuild()``
computes from the log, and no state may be left for an id that was aliased away
or forgotten (a "ghost"). In threads, every lock a transaction takes must
also sort after every lock it holds (one global order: no two writes can wait
for each other), unless it was only tried (``try_lock``).
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import pytest

from conftest import drop_postgres_schemas, new_postgres_schema, require_postgres, worker_context
from pqlkit import Client, Model, active_users, count, days, fit, trait
from pqlkit.stores import SQLiteStore, Store
from pqlkit.stores._base import Transaction
from pqlkit.stores.postgres import PostgresStore

MODEL = Model(
    "races",
    scores={
        "events": count(),
        "logins": count("login"),
        "recent": count("login", within=days(7)),
        "users": active_users(),
        "fit": fit((trait("employees", of="account") >= 100, 10)),
    },
    pql=count("login") >= 40,
    pqa=count("login") >= 400,
)

TRACKERS = 3
MAX_TRACKS = 5_000  # per tracker: a bound, should the disruptor never finish
USERS = 8  # group: the account's users
PAIRS = 24  # alias: anon-k becomes user-k (visitor-k for odd k: its final id sorts first)
STAYING = 6  # forget: users who stay in the account...
LEAVING = 12  # ...and users forgotten one by one
PAUSE = 0.004  # between two calls of the disruptor, so trackers run in between


class Flag(Protocol):
    def is_set(self) -> bool: ...
    def set(self) -> None: ...


def anon(k: int) -> str:
    return f"anon-{k}" if k % 2 == 0 else f"visitor-{k}"


class LockOrderStore:
    """A store delegating to another; records every lock a transaction waited for while
    holding a key that sorts after it (an inversion: two such writes may deadlock), and
    every ``try_lock`` (offered even where the store has none: then it always succeeds).

    On a PostgresStore (whose writers run concurrently) it also records every state or
    traits write of a subject the transaction has not locked.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.inversions: list[tuple[list[str], list[str]]] = []
        self.tries: list[tuple[list[str], bool]] = []
        self.unlocked: list[str] = []
        self.check_writes = isinstance(inner, PostgresStore)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.inner.transaction() as tx:
            yield _LockOrderTransaction(tx, self)  # type: ignore[misc]

    def close(self) -> None:
        self.inner.close()


class _LockOrderTransaction:
    def __init__(self, tx: Transaction, owner: LockOrderStore) -> None:
        self._tx = tx
        self._owner = owner
        self._held: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def lock(self, keys: Sequence[str]) -> None:
        new = sorted(set(keys) - self._held)
        if new and self._held and new[0] < max(self._held):
            self._owner.inversions.append((sorted(self._held), new))
        self._tx.lock(keys)
        self._held.update(new)

    def try_lock(self, keys: Sequence[str]) -> bool:
        inner = getattr(self._tx, "try_lock", None)
        ok = True if inner is None else bool(inner(keys))
        self._owner.tries.append((list(keys), ok))
        if ok:
            self._held.update(keys)
        return ok

    def _written(self, kind: str, subject_id: str) -> None:
        if self._owner.check_writes and f"{kind}:{subject_id}" not in self._held:
            self._owner.unlocked.append(f"{kind}:{subject_id}")

    def save_state(self, record: Any) -> None:
        self._written(record.kind, record.subject_id)
        self._tx.save_state(record)

    def delete_state(self, model: str, kind: str, subject_id: str) -> None:
        self._written(kind, subject_id)
        self._tx.delete_state(model, kind, subject_id)  # type: ignore[arg-type]

    def set_traits(self, kind: str, subject_id: str, traits: dict[str, Any]) -> None:
        self._written(kind, subject_id)
        self._tx.set_traits(kind, subject_id, traits)  # type: ignore[arg-type]


# -- scenarios: what each worker does --------------------------------------------------------


def setup(scenario: str, client: Client) -> None:
    """The history the race starts from."""
    if scenario == "group":
        for u in range(USERS):
            client.track(f"u{u}", "signup", account_id="acme", message_id=f"setup-u{u}")
    elif scenario == "alias":
        for k in range(PAIRS):
            client.track(anon(k), "page_viewed", account_id="acme", message_id=f"setup-a{k}")
            client.track(f"user-{k}", "signup", account_id="acme", message_id=f"setup-u{k}")
    else:
        for u in range(STAYING):
            client.track(f"stay-{u}", "signup", account_id="acme", message_id=f"setup-s{u}")
        for k in range(LEAVING):
            for n in range(3):
                client.track(f"gone-{k}", "login", account_id="acme", message_id=f"setup-g{k}-{n}")


def track(scenario: str, client: Client, worker: int, stop: Flag) -> None:
    """Track events until the disruptor is done."""
    rng = random.Random(f"{scenario}-{worker}")
    for n in range(MAX_TRACKS):
        if stop.is_set():
            return
        mid = f"t{worker}-{n}"
        if scenario == "group":  # without account_id: the user's account is acme all the same
            client.track(f"u{rng.randrange(USERS)}", "login", message_id=mid)
        elif scenario == "alias":
            k = rng.randrange(PAIRS)
            user = anon(k) if rng.random() < 0.5 else f"user-{k}"
            account = "acme" if rng.random() < 0.5 else None
            client.track(user, "login", account_id=account, message_id=mid)
        else:
            client.track(
                f"stay-{rng.randrange(STAYING)}", "login", account_id="acme", message_id=mid
            )


def disrupt(scenario: str, client: Client, stop: Flag) -> None:
    """The write that rewrites other subjects' states, again and again."""
    try:
        if scenario == "group":
            for n in range(60):
                client.group("acme", {"employees": 50 + 10 * n})
                time.sleep(PAUSE)
        elif scenario == "alias":
            for k in range(PAIRS):
                time.sleep(PAUSE * 4)
                client.alias(anon(k), f"user-{k}")
        else:
            for k in range(LEAVING):
                time.sleep(PAUSE * 4)
                client.forget(f"gone-{k}")
    finally:
        stop.set()


def expected_subjects(scenario: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The subjects whose state must match the log, and the user ids that must have none."""
    if scenario == "group":
        return [("user", f"u{u}") for u in range(USERS)] + [("account", "acme")], []
    if scenario == "alias":
        users = [("user", f"user-{k}") for k in range(PAIRS)]
        return [*users, ("account", "acme")], [anon(k) for k in range(PAIRS)]
    users = [("user", f"stay-{u}") for u in range(STAYING)]
    return [*users, ("account", "acme")], [f"gone-{k}" for k in range(LEAVING)]


# -- running them ------------------------------------------------------------------------------


def open_store(kind: str, location: str, workers: int = 1) -> Store:
    if kind == "postgres":
        dsn, schema = location.split("#")
        return PostgresStore(dsn, schema=schema, max_size=workers + 1)
    return SQLiteStore(location, timeout=60)


def run_threads(scenario: str, inner: Store) -> None:
    store = LockOrderStore(inner)
    stop = threading.Event()
    barrier = threading.Barrier(TRACKERS + 1)
    errors: list[BaseException] = []

    def body(role: Callable[[Client], None]) -> None:
        try:
            with Client(MODEL, store=store, dispatch="inline") as client:
                barrier.wait(timeout=60)
                role(client)
        except BaseException as error:
            errors.append(error)
            stop.set()

    roles: list[Callable[[Client], None]] = [
        lambda client, w=w: track(scenario, client, w, stop)  # type: ignore[misc]
        for w in range(TRACKERS)
    ]
    roles.append(lambda client: disrupt(scenario, client, stop))
    threads = [threading.Thread(target=body, args=(role,)) for role in roles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    if errors:
        raise errors[0]
    assert (store.inversions, store.unlocked) == ([], [])


def worker_main(
    kind: str, location: str, scenario: str, worker: int, barrier: Any, stop: Any
) -> None:
    """A worker process: worker TRACKERS disrupts, the others track."""
    try:
        with open_store(kind, location) as store, Client(MODEL, store=store) as client:
            barrier.wait(timeout=120)
            if worker == TRACKERS:
                disrupt(scenario, client, stop)
            else:
                track(scenario, client, worker, stop)
    except BaseException:
        stop.set()
        traceback.print_exc()
        raise


def run_processes(kind: str, location: str, scenario: str) -> None:
    context = worker_context()
    barrier = context.Barrier(TRACKERS + 1)
    stop = context.Event()
    processes = [
        context.Process(target=worker_main, args=(kind, location, scenario, w, barrier, stop))
        for w in range(TRACKERS + 1)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * len(processes)


def check(scenario: str, store: Store) -> None:
    """Each subject's state counts the log's events and equals a rebuild; no ghost states."""
    subjects, gone = expected_subjects(scenario)
    with Client(MODEL, store=store, dispatch="inline") as client:  # nothing warm in it
        with store.transaction() as tx:
            ghosts = [uid for uid in gone if tx.load_state(MODEL.name, "user", uid) is not None]
            in_log = {}
            for kind, sid in subjects:
                if kind == "user":
                    events = tx.events(user_ids=[sid, *tx.aliases_of(sid)])
                else:
                    events = tx.events(account_id=sid)
                in_log[(kind, sid)] = sum(1 for _ in events)
            users = {tx.resolve(e.user_id) for e in tx.events(account_id="acme")}
            stored = (
                tx.count_subjects(MODEL.name, "user"),
                tx.count_subjects(MODEL.name, "account"),
            )
        before = {(kind, sid): client.scores(sid, of=kind) for kind, sid in subjects}  # type: ignore[arg-type]
        counted = {key: scores["events"] for key, scores in before.items()}
        short = {key: (counted[key], n) for key, n in in_log.items() if counted[key] != n}
        assert (ghosts, short) == ([], {}), "(ghost states, {subject: (state's count, log's)})"
        assert before[("account", "acme")]["users"] == len(users)
        client.rebuild()
        after = {(kind, sid): client.scores(sid, of=kind) for kind, sid in subjects}  # type: ignore[arg-type]
        assert after == before
        with store.transaction() as tx:
            rebuilt = (
                tx.count_subjects(MODEL.name, "user"),
                tx.count_subjects(MODEL.name, "account"),
            )
        assert rebuilt == stored


@pytest.fixture(
    name="location", params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"]
)
def fixture_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(store kind, where): a schema of the test's own, or an SQLite file."""
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "races.db")
        return
    dsn = require_postgres()
    schema = new_postgres_schema()
    try:
        yield "postgres", f"{dsn}#{schema}"
    finally:
        drop_postgres_schemas(schema)


SCENARIOS = ["group", "alias", "forget"]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_a_write_that_rewrites_other_subjects_races_track(
    scenario: str, mode: str, location: tuple[str, str]
) -> None:
    """group() / alias() / forget() racing track(): states match the log and a rebuild."""
    kind, where = location
    with open_store(kind, where, TRACKERS + 1) as store:
        with Client(MODEL, store=store, dispatch="inline") as client:
            setup(scenario, client)
        if mode == "threads":
            run_threads(scenario, store)
        else:
            run_processes(kind, where, scenario)
        check(scenario, store)


# -- the locking rules, one call at a time ---------------------------------------------------------


def scores_of(client: Client, subjects: list[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    return {(kind, sid): client.scores(sid, of=kind) for kind, sid in subjects}  # type: ignore[arg-type]


def test_every_write_locks_what_it_rewrites_in_one_order(store: Store) -> None:
    """Each write locks every subject whose state or traits it writes, and takes its locks in
    sorted order (a key found out of order, an alias's final id, is only tried)."""
    checked = LockOrderStore(store)
    with Client(MODEL, store=checked, dispatch="inline") as client:
        client.track("u1", "login", account_id="acme")
        client.track("u2", "login", account_id="acme")
        client.track("b-anon", "page_viewed")
        client.track("z-anon", "page_viewed", account_id="beta")
        client.alias("z-anon", "u1")  # its final id sorts first
        client.alias("b-anon", "u2")
        client.track("z-anon", "login")
        client.track("b-anon", "login", account_id="acme")
        client.identify("z-anon", {"role": "admin"})
        client.group("acme", {"employees": 500})
        client.track_many(
            [
                {"user_id": "u3", "event": "login", "account_id": "beta"},
                {"user_id": "z-anon", "event": "login", "account_id": "acme"},
                {"user_id": "b-anon", "event": "login"},
                {"user_id": "a0", "event": "login", "account_id": "acme"},
            ]
        )
        client.sweep(datetime.now(timezone.utc) + timedelta(days=30))
        client.alias("z-anon", "u2")  # re-pointed: its events leave u1 for u2
        client.forget("u3")
        subjects = [("user", u) for u in ("u1", "u2", "a0")] + [
            ("account", a) for a in ("acme", "beta")
        ]
        before = scores_of(client, subjects)
    assert (checked.inversions, checked.unlocked) == ([], [])
    assert [ok for _, ok in checked.tries] == [True] * len(checked.tries)
    with Client(MODEL, store=store, dispatch="inline") as client:
        client.rebuild()
        assert scores_of(client, subjects) == before
        with store.transaction() as tx:
            ghosts = [u for u in ("z-anon", "b-anon", "u3") if tx.load_state(MODEL.name, "user", u)]
        assert ghosts == []


def test_re_pointing_an_alias_takes_its_events_from_the_old_final_id(store: Store) -> None:
    """alias(a, u2) after alias(a, u1): a's events count for u2, and no longer for u1."""
    with Client(MODEL, store=store, dispatch="inline") as client:
        client.track("a", "login", account_id="acme")
        client.track("u1", "login")
        client.alias("a", "u1")
        client.track("u2", "login")
        client.alias("a", "u2")
        assert client.scores("u1")["events"] == 1
        assert client.scores("u2")["events"] == 2
        assert client.scores("a")["events"] == 2  # a resolves to u2


@pytest.mark.postgres
def test_try_lock_takes_free_keys_and_never_waits(postgres_dsn: str, pg_schema: str) -> None:
    store = PostgresStore(postgres_dsn, schema=pg_schema, max_size=3)
    with store, store.transaction() as holder, ThreadPoolExecutor(1) as pool:
        holder.lock(["user:b"])

        def attempt() -> tuple[bool, bool, bool]:  # in a thread: transactions do not nest
            with store.transaction() as tx:
                try_lock = tx.try_lock  # type: ignore[attr-defined]
                return try_lock(["user:a"]), try_lock(["user:a", "user:b"]), try_lock([])

        assert pool.submit(attempt).result(timeout=10) == (True, False, True)


@pytest.mark.postgres
def test_an_alias_whose_final_id_sorts_first_is_locked_in_order(
    postgres_dsn: str, pg_schema: str
) -> None:
    """track("z-anon") of an alias of "a-final" finds it needs user:a-final only after taking
    user:z-anon. While another write holds user:a-final and then wants user:z-anon, the
    track must not wait for it holding user:z-anon (a deadlock): it tries, and runs again
    taking both in order."""
    with PostgresStore(postgres_dsn, schema=pg_schema, max_size=4) as store:
        with Client(MODEL, store=store, dispatch="inline") as setup_client:
            setup_client.track("a-final", "login")
            setup_client.track("z-anon", "login")
            setup_client.alias("z-anon", "a-final")
        checked = LockOrderStore(store)
        with Client(MODEL, store=checked, dispatch="inline") as client:  # no hints yet
            with ThreadPoolExecutor(1) as pool, store.transaction() as holder:
                holder.lock(["user:a-final"])
                tracked = pool.submit(client.track, "z-anon", "login", message_id="late")
                deadline = time.monotonic() + 10
                while not checked.tries and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert checked.tries == [(["user:a-final"], False)]
                holder.lock(["user:z-anon"])  # its first attempt was rolled back: free
            assert not tracked.result(timeout=10).duplicate
            assert client.scores("a-final")["events"] == 3
        assert checked.inversions == []
        with store.transaction() as tx:
            assert tx.load_state(MODEL.name, "user", "z-anon") is None
