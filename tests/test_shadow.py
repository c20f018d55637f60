"""Shadowing a candidate model live: ``Client(model, shadows=[candidate])`` (issue 16, item 4).

Each event also updates the candidates' states and records their qualifications under
their own names, in the same transaction, with no callbacks; ``stats(model=...)``
reports a shadow; promoting one is building a client with it as its model, which finds
its states current and rebuilds nothing. The worker function lives in this module so
that worker processes can import it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import pqlkit
from conftest import T0, worker_context
from pqlkit import (
    AsyncClient,
    Client,
    Model,
    Qualification,
    ValidationError,
    active_users,
    count,
    days,
    did,
    points,
    score,
    trait,
)
from pqlkit._rebuild import fingerprint_key
from pqlkit.stores import MemoryStore, SQLiteStore, Store
from pqlkit.stores._base import QualificationRecord
from pqlkit.testing import FrozenClock

LIVE = Model(
    "live",
    signals={"built": did("dashboard_built"), "invited": did("teammate_invited")},
    scores={"behavior": points(built=30, invited=30)},
    pql=score("behavior") >= 60,
)

CANDIDATE = Model(
    "candidate",
    signals={
        "built": did("dashboard_built"),
        "pricing": did("page_viewed", where={"path": "/pricing"}, within=days(7)),
        "pro": trait("plan") == "pro",
    },
    scores={"behavior": points(built=30, pricing=40, pro=50), "events": count()},
    pql=score("behavior") >= 50,
    pqa=active_users() >= 2,
)


def events() -> list[dict[str, Any]]:
    """A small history: users of two accounts building, inviting and visiting pricing."""
    out: list[dict[str, Any]] = []
    for i in range(12):
        user, account = f"u{i}", f"a{i % 2}"
        at = T0 + timedelta(minutes=i)
        out.append(
            {"user_id": user, "event": "dashboard_built", "account_id": account, "timestamp": at}
        )
        if i % 3 == 0:
            out.append({"user_id": user, "event": "teammate_invited", "timestamp": at})
        if i % 2 == 0:
            out.append(
                {
                    "user_id": user,
                    "event": "page_viewed",
                    "properties": {"path": "/pricing"},
                    "timestamp": at + timedelta(seconds=1),
                }
            )
    for n, e in enumerate(out):
        e["message_id"] = f"m{n}"
    return out


def feed(client: Client, history: list[dict[str, Any]]) -> None:
    """Half of the history through track(), the rest through track_many()."""
    half = len(history) // 2
    for e in history[:half]:
        client.track(**e)
    client.track_many(history[half:])


def recorded(store: Store, model: str) -> list[tuple[Any, ...]]:
    """The model's qualification records, as comparable tuples."""
    with store.transaction() as tx:
        records: list[QualificationRecord] = list(tx.qualifications(model))
    return sorted(
        (q.kind, q.subject_id, q.round, q.qualified_at, q.disqualified_at, q.id) for q in records
    )


def delivery_ids(store: Store, model: str) -> list[str]:
    with store.transaction() as tx:
        return [
            d.id
            for status in ("pending", "delivered", "dead", "expired")
            for d in tx.deliveries(status, model=model)  # type: ignore[arg-type]
        ]


def test_shadow_records_qualifications_and_runs_no_callback(
    store: Store, clock: FrozenClock
) -> None:
    fired: list[Qualification] = []
    with Client(LIVE, store, clock=clock, shadows=[CANDIDATE], dispatch="inline") as client:
        client.on("pql", fired.append)
        client.on("pqa", fired.append)
        client.on("disqualified", fired.append)
        feed(client, events())
        assert client.shadows == (CANDIDATE,)
        assert client.pending() == []
    # the callbacks heard of the live model only (u0, u3, u6, u9 built and invited)
    assert sorted(q.subject_id for q in fired) == ["u0", "u3", "u6", "u9"]
    assert {q.model for q in fired} == {"live"}
    # the candidate's qualifications are recorded under its name: the users with
    # built + pricing (the even ones), and both accounts (2 active users each)
    shadow = recorded(store, "candidate")
    assert [(k, s) for k, s, *_ in shadow] == [
        ("pqa", "a0"),
        ("pqa", "a1"),
        *[("pql", f"u{i}") for i in sorted((0, 2, 4, 6, 8, 10), key=str)],
    ]
    # nothing of the candidate was enqueued for delivery
    assert delivery_ids(store, "candidate") == []
    assert len(delivery_ids(store, "live")) == 4


def standalone(history: list[dict[str, Any]], clock: FrozenClock, tmp: Store) -> Client:
    """The candidate as the main model of its own store, fed the same history."""
    client = Client(CANDIDATE, tmp, clock=clock, dispatch="inline")
    feed(client, history)
    return client


def test_stats_by_model(store: Store, clock: FrozenClock) -> None:
    history = events()
    with Client(LIVE, store, clock=clock, shadows=[CANDIDATE], dispatch="inline") as client:
        feed(client, history)
        shadow_stats = client.stats(model="candidate")
        assert client.stats(model="live") == client.stats()
        assert client.stats().pqls == 4
        with pytest.raises(ValidationError) as error:
            client.stats(model="other")
        assert error.value.field == "model"
    with standalone(history, clock, MemoryStore()) as alone:
        expected = alone.stats()
    assert shadow_stats == expected
    assert shadow_stats.pqls == 6
    assert shadow_stats.pqas == 2


def test_qualifications_by_model(store: Store, clock: FrozenClock) -> None:
    with Client(LIVE, store, clock=clock, shadows=[CANDIDATE], dispatch="inline") as client:
        feed(client, events())
        shadow = client.qualifications(model="candidate", kind="pql")
        assert sorted(q.subject_id for q in shadow) == sorted(f"u{i}" for i in range(0, 12, 2))
        assert {q.model for q in shadow} == {"candidate"}
        assert all(q.fingerprint == CANDIDATE.fingerprint for q in shadow)
        assert all(q.scores == {} for q in shadow)  # never delivered: the record alone
        assert len(client.qualifications(model="candidate")) == 8  # and the two accounts
        first = client.qualifications(model="candidate", limit=3)
        rest = client.qualifications(model="candidate", before=first[-1].id, limit=10)
        assert [q.id for q in first + rest] == [
            q.id for q in client.qualifications(model="candidate")
        ]
        live = client.qualifications()
        assert client.qualifications(model="live") == live
        assert sorted(q.subject_id for q in live) == ["u0", "u3", "u6", "u9"]
        with pytest.raises(ValidationError) as error:
            client.qualifications(model="nope")
        assert error.value.field == "model"
        with pytest.raises(ValidationError) as error:  # a cursor of the other model
            client.qualifications(model="candidate", before=live[0].id)
        assert error.value.field == "before"


def test_promoting_a_shadow_rebuilds_nothing(store: Store, clock: FrozenClock) -> None:
    history = events()
    with Client(LIVE, store, clock=clock, shadows=[CANDIDATE], dispatch="inline") as client:
        feed(client, history)
        client.identify("u1", {"plan": "pro"})  # qualifies u1 for the candidate only
    shadowed = recorded(store, "candidate")
    with store.transaction() as tx:
        assert tx.get_meta(fingerprint_key("candidate")) == CANDIDATE.fingerprint
        assert tx.count_subjects("candidate", "user") == 12
    # promote: the candidate becomes the main model (on_retune="fire": a rebuild
    # would enqueue a delivery for each of its qualified subjects)
    with Client(CANDIDATE, store, clock=clock, dispatch="inline") as promoted:
        assert promoted.pending() == []
        assert recorded(store, "candidate") == shadowed  # the very same records, same ids
        assert delivery_ids(store, "candidate") == []
        with standalone(history, clock, MemoryStore()) as alone:
            alone.identify("u1", {"plan": "pro"})
            for i in range(12):
                assert promoted.scores(f"u{i}") == alone.scores(f"u{i}")
            for a in ("a0", "a1"):
                assert promoted.scores(a, of="account") == alone.scores(a, of="account")
            assert promoted.stats() == alone.stats()
        assert promoted.qualified_at("u1") is not None
        # and it goes on firing as a main model does
        fired: list[Qualification] = []
        promoted.on("pql", fired.append)
        promoted.track("u1", "page_viewed", {"path": "/pricing"}, timestamp=T0 + days(1))
        promoted.track("u99", "page_viewed", {"path": "/pricing"}, timestamp=T0 + days(1))
        promoted.track("u99", "dashboard_built", timestamp=T0 + days(1))
        assert [q.subject_id for q in fired] == ["u99"]


def test_shadow_follows_alias_identify_group_forget_and_sweep(
    store: Store, clock: FrozenClock
) -> None:
    """Whatever the client does, the shadow's states and records are the candidate's own."""

    def script(client: Client) -> None:
        feed(client, events())
        client.identify("u1", {"plan": "pro"})
        client.group("a1", {"tier": "gold"})
        client.track("anon", "page_viewed", {"path": "/pricing"}, timestamp=T0 + days(1))
        client.alias("anon", "u3")  # u3: built; its alias's pricing visit makes 70 points
        client.forget("u4")
        clock.set(T0 + days(20))
        client.sweep()  # the pricing visits fall out of their 7 days: disqualified

    with Client(LIVE, store, clock=clock, shadows=[CANDIDATE], dispatch="inline") as client:
        script(client)
        shadow_stats = client.stats(model="candidate")
        assert client.pending() == []
    assert delivery_ids(store, "candidate") == []
    shadowed = recorded(store, "candidate")
    disqualified = {r[1] for r in shadowed if r[4] is not None}
    assert {"u0", "u3"} <= disqualified
    assert "u4" not in {r[1] for r in shadowed}
    assert "u1" in {r[1] for r in shadowed if r[4] is None}  # the pro plan keeps u1

    promoted = Client(CANDIDATE, store, clock=clock, dispatch="inline")
    clock.set(T0)
    other = MemoryStore()
    with promoted, Client(CANDIDATE, other, clock=clock, dispatch="inline") as alone:
        script(alone)
        assert shadow_stats == alone.stats()
        assert shadowed == recorded(other, "candidate")  # the same records, ids and times
        assert promoted.pending() == []
        for user in ("u0", "u1", "u3", "u5"):
            assert promoted.scores(user) == alone.scores(user)
        assert promoted.scores("a1", of="account") == alone.scores("a1", of="account")


def test_a_new_shadow_is_built_from_the_log_delivering_nothing(
    store: Store, clock: FrozenClock
) -> None:
    history = events()
    seen: list[Qualification] = []
    with Client(LIVE, store, clock=clock, dispatch="inline") as plain:
        plain.on("pql", seen.append, name="hear")
        feed(plain, history)
    assert len(seen) == 4  # the live model's, delivered
    fired: list[Qualification] = []
    with Client(LIVE, store, clock=clock, shadows=[CANDIDATE], dispatch="inline") as client:
        client.on("pql", fired.append, name="hear")
        client.on("pqa", fired.append, name="hear")
        client.flush()
        assert fired == []
        assert client.pending() == []
        shadow_stats = client.stats(model="candidate")
    assert delivery_ids(store, "candidate") == []
    with standalone(history, clock, MemoryStore()) as alone:
        assert shadow_stats == alone.stats()
    assert shadow_stats.pqls == 6


def test_a_new_version_of_a_shadow_is_rebuilt_after_a_gap(store: Store, clock: FrozenClock) -> None:
    """Events recorded without the shadow: a new ``version=`` rebuilds it from the log."""
    history = events()
    with Client(LIVE, store, clock=clock, shadows=[CANDIDATE], dispatch="inline") as client:
        feed(client, history[:10])
    with Client(LIVE, store, clock=clock, dispatch="inline") as plain:  # not shadowing
        feed(plain, history[10:])
    again = Model(
        "candidate",
        signals=dict(CANDIDATE.signals),
        scores=dict(CANDIDATE.scores),
        pql=CANDIDATE.pql,
        pqa=CANDIDATE.pqa,
        version="2",
    )
    with Client(LIVE, store, clock=clock, shadows=[again], dispatch="inline") as client:
        shadow_stats = client.stats(model="candidate")
    assert delivery_ids(store, "candidate") == []
    with standalone(history, clock, MemoryStore()) as alone:
        assert shadow_stats == alone.stats()


@pytest.mark.parametrize(
    ("shadows", "reason"),
    [
        ([LIVE], "the model's own name"),
        ([CANDIDATE, CANDIDATE], "a name given twice"),
        ([Model("live", pql=did("x"))], "the model's own name"),
        ([CANDIDATE, "candidate"], "must be a pqlkit.Model"),
        ("candidate", "must be a list"),
        (CANDIDATE, "must be a list"),
    ],
)
def test_bad_shadows(shadows: Any, reason: str, clock: FrozenClock) -> None:
    with pytest.raises(ValidationError) as error:
        Client(LIVE, "memory://", clock=clock, shadows=shadows)
    assert error.value.field == "shadows"
    assert reason in str(error.value)


def test_async_client_and_configure_take_shadows(clock: FrozenClock) -> None:
    async def run() -> tuple[int, int]:
        async with AsyncClient(LIVE, "memory://", clock=clock, shadows=[CANDIDATE]) as client:
            for e in events():
                await client.track(**e)
            return (await client.stats()).pqls, (await client.stats(model="candidate")).pqls

    assert asyncio.run(run()) == (4, 6)
    client = pqlkit.configure(LIVE, "memory://", clock=clock, shadows=[CANDIDATE])
    try:
        for e in events():
            pqlkit.track(**e)
        assert client.stats(model="candidate").pqls == 6
    finally:
        client.close()


def test_threads_share_a_shadowing_client(tmp_path: Path) -> None:
    """Threads tracking through one client: the shadow counts every event exactly once."""
    import threading

    model = Model("counted", scores={"events": count()}, pql=count() >= 50)
    clock = FrozenClock(T0 + days(1))
    store = SQLiteStore(tmp_path / "t.db")
    with Client(LIVE, store, clock=clock, shadows=[model], dispatch="inline") as client:

        def work(n: int) -> None:
            for i in range(200):
                client.track(f"u{i % 5}", "login", timestamp=T0, message_id=f"t{n}-{i}")

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    with Client(model, store, clock=clock, dispatch="inline") as promoted:
        assert [promoted.scores(f"u{i}")["events"] for i in range(5)] == [160] * 5
        assert promoted.pending() == []
    assert len(recorded(store, "counted")) == 5
    store.close()


# -- two processes tracking with shadows on one SQLite file -------------------------------

COUNTED = Model(
    "counted",
    scores={"events": count(), "users": active_users()},
    pql=count() >= 100,
    pqa=active_users() >= 3,
)
PER_PROCESS = 1_200
USERS = 6


def track_in_process(path: str, worker: int, start_at: float) -> str:
    try:
        clock = FrozenClock(T0 + days(1))
        with Client(LIVE, path, clock=clock, shadows=[COUNTED], dispatch="inline") as client:
            time.sleep(max(0.0, start_at - time.time()))  # both at once: interleaved writes
            for i in range(PER_PROCESS):
                user = f"u{i % USERS}"
                at: datetime = T0 + timedelta(seconds=i)
                client.track(
                    user, "login", account_id=f"a{i % 2}", timestamp=at, message_id=f"w{worker}-{i}"
                )
                if i % 50 == 0:  # and some again: duplicates count once
                    client.track(
                        user,
                        "login",
                        account_id=f"a{i % 2}",
                        timestamp=at,
                        message_id=f"w{worker}-{i}",
                    )
        return ""
    except Exception:  # pragma: no cover - the report of a failure
        import traceback

        return traceback.format_exc()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_processes_tracking_with_shadows(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        path = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        path = f"{dsn}?schema={request.getfixturevalue('pg_schema')}"
    Client(LIVE, path, shadows=[COUNTED]).close()  # the schema, once
    context = worker_context()
    with context.Pool(2) as pool:  # type: ignore[attr-defined]
        start_at = time.time() + 2.0
        errors = pool.starmap(track_in_process, [(path, 0, start_at), (path, 1, start_at)])
    assert errors == ["", ""]
    clock = FrozenClock(T0 + days(1))
    with Client(COUNTED, path, clock=clock, dispatch="inline") as promoted:
        per_user = 2 * PER_PROCESS // USERS
        assert [promoted.scores(f"u{i}")["events"] for i in range(USERS)] == [per_user] * USERS
        assert promoted.scores("a0", of="account")["events"] == PER_PROCESS
        assert promoted.scores("a0", of="account")["users"] == USERS // 2
        assert promoted.pending() == []
        stats = promoted.stats()
        kinds = Counter(k for k, *_ in recorded(promoted.store, "counted"))
        assert delivery_ids(promoted.store, "counted") == []
    assert (stats.users, stats.accounts, stats.pqls, stats.pqas) == (USERS, 2, USERS, 2)
    assert kinds == {"pql": USERS, "pqa": 2}  # each fired once, by one of the processes


def test_the_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """examples/shadow.py: the candidate's figures beside the live model's, then promoted."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "examples" / "shadow.py"
    spec = importlib.util.spec_from_file_location("shadow_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("     live:  182 PQLs of 872 users")
    assert lines[1].startswith("candidate:   99 PQLs of 872 users")
    assert lines[2:] == [
        "callbacks ran 182 times, all for ['live']",
        "     live: precision 10.8%, lift 1.56 (as recorded)",
        "candidate: precision 25.4%, lift 4.14 (as recorded)",
        "promoted: 0 deliveries pending (nothing was rebuilt)",
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("commit", [True, False])
def test_a_joined_track_records_the_shadow_in_the_apps_transaction(
    postgres_dsn: str, pg_schema: str, commit: bool
) -> None:
    """track(connection=...): the shadow's state and qualification commit or roll back with
    the application's transaction."""
    import psycopg

    from pqlkit.stores.postgres import PostgresStore

    clock = FrozenClock(T0)
    with (
        PostgresStore(postgres_dsn, schema=pg_schema, max_size=2) as store,
        Client(LIVE, store, clock=clock, shadows=[CANDIDATE], dispatch="inline") as client,
        psycopg.connect(postgres_dsn) as app,
    ):
        client.track("u1", "dashboard_built", timestamp=T0, connection=app)
        client.track("u1", "page_viewed", {"path": "/pricing"}, timestamp=T0, connection=app)
        assert recorded(store, "candidate") == []  # not committed: invisible
        if commit:
            app.commit()
        else:
            app.rollback()
        assert [r[:2] for r in recorded(store, "candidate")] == ([("pql", "u1")] if commit else [])
        assert client.stats(model="candidate").users == (1 if commit else 0)
        assert delivery_ids(store, "candidate") == []
