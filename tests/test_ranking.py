"""Ranked scores and ``client.top()`` (API.md section 6): the highest current values, read from
the store's index, on every store."""

from __future__ import annotations

import random
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import T0
from pqlkit import (
    Client,
    Model,
    ValidationError,
    active_users,
    count,
    days,
    did,
    fit,
    idle,
    points,
    signal,
    trait,
)
from pqlkit.stores import SQLiteStore, Store
from pqlkit.testing import ClientFactory, FrozenClock

SIGNALS = {
    "built": did("dashboard_built"),
    "recent_error": did("error_seen", within=days(1)),
    "dormant": idle() >= days(14),
}
SCORES = {
    "logins": count("login"),
    "weekly_logins": count("login", within=days(7)),
    # rises with time alone: the penalty ends a day after the error
    "health": points(built=50, recent_error=-30, dormant=-20),
    "size": fit((trait("employees", of="account") >= 200, 20)),
    "users": active_users(),
}
MODEL = Model("rank-tests", signals=SIGNALS, scores=SCORES, ranked=list(SCORES))


@pytest.fixture(name="client")
def fixture_client(make_client: ClientFactory) -> Client:
    """A client of MODEL (every score ranked) on every store, at T0."""
    return make_client(MODEL)


def expected(client: Client, score: str, subjects: list[str], of: str = "user") -> list[tuple]:
    """What top() must say: every subject's scores() now, highest first, ties by id."""
    values = [(sid, client.scores(sid, of=of)[score]) for sid in subjects]  # type: ignore[arg-type]
    return sorted(values, key=lambda pair: (-pair[1], pair[0]))


def test_top_lists_the_highest_first(client: Client) -> None:
    """Users by a ranked score, highest first, ties by id, at most n."""
    for user, logins in [("ada", 3), ("bo", 1), ("cy", 3), ("di", 5)]:
        for _ in range(logins):
            client.track(user, "login")
    assert client.top("logins", n=3) == [("di", 5.0), ("ada", 3.0), ("cy", 3.0)]
    assert client.top("logins") == [("di", 5.0), ("ada", 3.0), ("cy", 3.0), ("bo", 1.0)]


def test_top_follows_values_as_they_change(client: Client) -> None:
    """A later event that changes a value changes the ranking, up or down."""
    client.track("ada", "dashboard_built")
    client.track("bo", "login")
    assert client.top("health") == [("ada", 50.0), ("bo", 0.0)]
    client.track("ada", "error_seen")
    assert client.top("health") == [("ada", 20.0), ("bo", 0.0)]
    client.track("bo", "dashboard_built")
    assert client.top("health") == [("bo", 50.0), ("ada", 20.0)]


def test_values_that_time_alone_changes_are_current(client: Client, clock: FrozenClock) -> None:
    """A windowed count falls, and a penalty on a window ends, with time alone: top() gives
    the values as of now, in their order now, as scores() does."""
    for _ in range(5):
        client.track("ada", "login")
    client.track("ada", "dashboard_built")
    client.track("ada", "error_seen")
    clock.advance(days(3))
    for _ in range(2):
        client.track("bo", "login")
    client.track("bo", "dashboard_built")
    client.track("bo", "error_seen")
    assert client.top("weekly_logins") == [("ada", 5.0), ("bo", 2.0)]
    assert client.top("health") == [("ada", 50.0), ("bo", 20.0)]  # ada's error is 3 days old
    clock.advance(days(5))  # ada's logins leave the week; bo's error penalty ended
    assert client.top("weekly_logins") == [("bo", 2.0), ("ada", 0.0)]
    assert client.top("health") == [("ada", 50.0), ("bo", 50.0)]
    clock.advance(days(10))  # both idle for 14 days and more: dormant
    assert client.top("health") == expected(client, "health", ["ada", "bo"])
    assert client.top("health") == [("ada", 30.0), ("bo", 30.0)]


def test_more_stale_values_than_one_batch(make_client: ClientFactory, clock: FrozenClock) -> None:
    """More subjects made stale by time than one transaction re-evaluates (500): top() goes
    on until none is left, then every value it lists is current."""
    client = make_client(
        Model("many", scores={"weekly": SCORES["weekly_logins"]}, ranked=["weekly"])
    )
    client.track_many(
        {"user_id": f"u{i:04}", "event": "login", "timestamp": T0 + timedelta(seconds=i)}
        for i in range(1_100)
    )
    clock.set(T0 + days(6))
    client.track("late", "login")
    clock.set(T0 + days(8))
    assert client.top("weekly", n=3) == [("late", 1.0), ("u0000", 0.0), ("u0001", 0.0)]
    with client.store.transaction() as tx:
        assert tx.stale_ranks("many", "user", "weekly", clock.now(), 10) == []


def test_top_agrees_with_scores_on_a_random_history(client: Client, clock: FrozenClock) -> None:
    """After a random history (events, traits, time passing), top() of every ranked score,
    users and accounts, is what scores() says of every subject now."""
    rng = random.Random(17)
    users = [f"u{i}" for i in range(12)]
    accounts = ["acme", "globex", "initech"]
    for step in range(300):
        user = rng.choice(users)
        account = accounts[users.index(user) % 3]
        event = rng.choice(["login", "login", "dashboard_built", "error_seen", "page_viewed"])
        clock.advance(timedelta(hours=rng.choice([0, 1, 7, 30])))
        client.track(user, event, account_id=account)
        if step % 50 == 0:
            client.group(rng.choice(accounts), {"employees": rng.choice([10, 500])})
        if step % 100 == 99:
            for score in SCORES:
                assert client.top(score, n=100) == expected(client, score, users), score
    clock.advance(days(9))
    for score in SCORES:
        assert client.top(score, n=100) == expected(client, score, users), score
        assert client.top(score, n=100, of="account") == expected(
            client, score, accounts, "account"
        ), score


def test_traits_change_values(client: Client) -> None:
    """group() re-evaluates the account's users: a score reading its traits moves."""
    client.track("ada", "login", account_id="acme")
    client.track("bo", "login", account_id="tiny")
    assert client.top("size") == [("ada", 0.0), ("bo", 0.0)]
    client.group("acme", {"employees": 600})
    assert client.top("size") == [("ada", 20.0), ("bo", 0.0)]
    assert client.top("size", of="account") == [("acme", 20.0), ("tiny", 0.0)]


def test_accounts_are_ranked_too(client: Client) -> None:
    """of="account" ranks accounts by the same score over their users' events."""
    for user, account in [("a1", "acme"), ("a2", "acme"), ("a3", "acme"), ("g1", "globex")]:
        client.track(user, "login", account_id=account)
    assert client.top("users", of="account") == [("acme", 3.0), ("globex", 1.0)]
    assert client.top("logins", n=1, of="account") == [("acme", 3.0)]


def test_forget_and_alias_leave_no_stale_entry(client: Client) -> None:
    """A forgotten user leaves the ranking; an aliased id leaves it for its final id."""
    for user, logins in [("ada", 2), ("bo", 1), ("anon", 4)]:
        for _ in range(logins):
            client.track(user, "login")
    client.forget("bo")
    client.alias("anon", "ada")
    assert client.top("logins") == [("ada", 6.0)]


def test_sweep_updates_values(make_client: ClientFactory, clock: FrozenClock) -> None:
    """A sweep that re-evaluates a subject stores its ranked values as of the sweep."""
    rule = signal("built") & ~signal("dormant")
    client = make_client(
        Model("swept", signals=SIGNALS, scores=SCORES, pql=rule, ranked=["health"])
    )
    client.track("ada", "error_seen")
    client.track("ada", "dashboard_built")
    clock.advance(days(15))
    client.sweep()  # dormant is due: ada is re-evaluated, her values with her
    with client.store.transaction() as tx:
        assert tx.top_ranks("swept", "user", "health", 5) == [("ada", 30.0)]


def test_a_later_change_time_alone_is_not_written(client: Client, clock: FrozenClock) -> None:
    """An event that only pushes back when time may change a value (here: the idle() flip of
    ``dormant``) writes nothing; the earlier stored time makes top() re-evaluate the subject
    once, then the index holds the later one."""
    client.track("ada", "dashboard_built")
    clock.advance(days(1))
    client.track("ada", "page_viewed")  # health stays 50; dormant now flips a day later
    with client.store.transaction() as tx:
        assert tx.stale_ranks(MODEL.name, "user", "health", T0 + days(14), 5) == ["ada"]
    clock.set(T0 + days(14))
    assert client.top("health") == [("ada", 50.0)]  # not dormant yet: re-evaluated, still 50
    with client.store.transaction() as tx:
        assert tx.stale_ranks(MODEL.name, "user", "health", T0 + days(14), 5) == []
        assert tx.stale_ranks(MODEL.name, "user", "health", T0 + days(15), 5) == ["ada"]
    clock.set(T0 + days(15))
    assert client.top("health") == [("ada", 30.0)]


def test_sweep_brings_the_index_up_to_date(client: Client, clock: FrozenClock) -> None:
    """sweep() re-evaluates the ranked values time alone changed, users' and accounts', even
    those no rule reads: the index then holds what scores() says, with nothing stale."""
    for _ in range(3):
        client.track("ada", "login", account_id="acme")
    client.track("bo", "login", account_id="globex")
    clock.advance(days(8))  # the week's logins are over
    client.sweep()
    with client.store.transaction() as tx:
        for kind in ("user", "account"):
            assert tx.stale_ranks(MODEL.name, kind, "weekly_logins", clock.now(), 10) == []
        assert tx.top_ranks(MODEL.name, "user", "weekly_logins", 5) == [("ada", 0.0), ("bo", 0.0)]
        assert tx.top_ranks(MODEL.name, "account", "weekly_logins", 5) == [
            ("acme", 0.0),
            ("globex", 0.0),
        ]


def test_top_reads_the_index_not_the_states(tmp_path: Path, clock: FrozenClock) -> None:
    """With every state and event deleted behind the client's back, top() still answers
    from the index (it decodes no state for a value time alone cannot change)."""
    path = tmp_path / "db"
    with Client(MODEL, store=SQLiteStore(path), clock=clock) as client:
        for user, logins in [("ada", 3), ("bo", 1)]:
            for _ in range(logins):
                client.track(user, "login")
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM states")
            conn.execute("DELETE FROM events")
        conn.close()
        assert client.top("logins") == [("ada", 3.0), ("bo", 1.0)]
        client.store.close()


def test_an_unranked_model_writes_no_ranks(make_client: ClientFactory, store: Store) -> None:
    """A model without ranked scores writes nothing to the index (track() costs no more)."""
    client = make_client(Model("plain", signals=SIGNALS, scores=SCORES))
    client.track("ada", "login", account_id="acme")
    with store.transaction() as tx:
        for score in SCORES:
            for kind in ("user", "account"):
                assert tx.top_ranks("plain", kind, score, 10) == []  # type: ignore[arg-type]


def test_declaring_a_ranked_score_fills_the_index(store: Store, clock: FrozenClock) -> None:
    """Subjects tracked before a score was ranked are in top() once it is: the changed
    fingerprint rebuilds the derived state, index included."""
    plain = Model(MODEL.name, signals=SIGNALS, scores=SCORES)
    with Client(plain, store=store, clock=clock) as client:
        for user, logins in [("ada", 2), ("bo", 1)]:
            for _ in range(logins):
                client.track(user, "login")
    assert plain.fingerprint != MODEL.fingerprint
    with Client(MODEL, store=store, clock=clock) as client:
        assert client.top("logins") == [("ada", 2.0), ("bo", 1.0)]


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "kwargs", "field", "reason"),
    [
        ("nope", {}, "score", "unknown score 'nope'"),
        (None, {}, "score", "unknown score"),
        ("logins", {"n": 0}, "n", "from 1 to 10000"),
        ("logins", {"n": 10_001}, "n", "from 1 to 10000"),
        ("logins", {"n": True}, "n", "from 1 to 10000"),
        ("logins", {"n": 2.0}, "n", "from 1 to 10000"),
        ("logins", {"of": "team"}, "of", "must be"),
    ],
)
def test_bad_arguments_are_refused(
    client: Client, score: object, kwargs: dict[str, object], field: str, reason: str
) -> None:
    """A bad score, n or of raises ValidationError naming it."""
    with pytest.raises(ValidationError) as info:
        client.top(score, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert reason in info.value.reason


def test_an_unranked_score_is_refused_with_a_hint(make_client: ClientFactory) -> None:
    """top() of a score the model does not rank says how to rank it."""
    client = make_client(Model("m", signals=SIGNALS, scores=SCORES, ranked=["logins"]))
    with pytest.raises(ValidationError) as info:
        client.top("users")
    assert info.value.field == "score"
    assert "ranked=['users']" in info.value.reason


def test_ranking_leaves_other_fingerprints_alone() -> None:
    """A model without ranked= keeps the fingerprint it had (no rebuild on upgrade); ranking
    a score changes it, in any order of names."""
    plain = Model("m", signals=SIGNALS, scores=SCORES)
    assert "ranked" not in plain.describe()
    assert Model("m", signals=SIGNALS, scores=SCORES, ranked=[]).fingerprint == plain.fingerprint
    one = Model("m", signals=SIGNALS, scores=SCORES, ranked=["logins", "health"])
    other = Model("m", signals=SIGNALS, scores=SCORES, ranked=["health", "logins", "logins"])
    assert one.fingerprint != plain.fingerprint
    assert one.fingerprint == other.fingerprint
    assert other.ranked == ("health", "logins")


def test_the_async_client_has_top(store: Store, clock: FrozenClock) -> None:
    """AsyncClient.top, awaited, is the Client's."""
    import asyncio

    import pqlkit

    async def main() -> list[tuple[str, float]]:
        async with pqlkit.AsyncClient(MODEL, store=store, clock=clock) as client:
            await client.track("ada", "login")
            return await client.top("logins", n=1)

    assert asyncio.run(main()) == [("ada", 1.0)]
