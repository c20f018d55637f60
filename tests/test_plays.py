"""Plays (API.md section 6): named rules beyond pql/pqa, each firing once per subject to its
own callbacks, with holdouts and nudges; on every store, and across processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import pqlkit
from conftest import T0
from pqlkit import (
    Client,
    Model,
    ModelError,
    Qualification,
    ValidationError,
    active_users,
    count,
    days,
    did,
    play,
    signal,
    trait,
)
from pqlkit.sinks import headline
from pqlkit.stores import Store
from pqlkit.testing import (
    ClientFactory,
    FrozenClock,
    assert_not_qualified,
    assert_qualified,
    recorder,
)

NUDGE = {"title": "You're close to your row limit", "cta": "/billing"}

MODEL = Model(
    "plays-tests",
    signals={
        "near_row_limit": did("row_limit_warning"),
        "big_company": trait("employees", of="account") >= 200,
    },
    pql=did("dashboard_built"),
    plays={
        "upgrade_nudge": play(
            signal("near_row_limit") & ~did("upgraded"), nudge=NUDGE, until=days(7)
        ),
        "ae_handoff": play(active_users(within=days(14)) >= 3, of="account"),
        "power_user": play(count("query_run") >= 3, requalify_after=days(1)),
    },
)


@pytest.fixture(name="client")
def fixture_client(make_client: ClientFactory) -> Client:
    """A client of MODEL on every store, at T0."""
    return make_client(MODEL)


# -- firing ----------------------------------------------------------------------------------


def test_a_play_fires_once_per_subject(client: Client) -> None:
    """A user's play fires at the first event where it holds, and not on later ones."""
    rec = recorder(client)
    first = client.track("u1", "row_limit_warning")
    again = client.track("u1", "row_limit_warning")
    [q] = first.qualified
    assert (q.kind, q.play, q.subject_id, q.holdout) == ("play", "upgrade_nudge", "u1", False)
    assert again.qualified == []
    assert rec.plays["upgrade_nudge"] == [q]
    assert rec.pql == []
    assert rec.plays["ae_handoff"] == []
    assert q.explanation[-2:] == (
        "play upgrade_nudge: (signal('near_row_limit') = true & not (count('upgraded') = 0 >= 1))"
        " -> true",
        "play power_user: count('query_run') = 0 >= 3 -> false",
    )


def test_each_play_reaches_only_its_own_callbacks(client: Client) -> None:
    """on_play("x") gets x's qualifications only; pql callbacks get none of them."""
    got: dict[str, list[Qualification]] = {"nudge": [], "ae": [], "pql": []}
    client.on_play("upgrade_nudge", got["nudge"].append)

    @client.on_play("ae_handoff", name="crm")
    def hand_off(q: Qualification) -> None:
        got["ae"].append(q)

    client.on_pql(got["pql"].append)
    for user in ("u1", "u2", "u3"):
        client.track(user, "login", account_id="acme")
    client.track("u1", "row_limit_warning", account_id="acme")
    client.track("u2", "dashboard_built", account_id="acme")
    assert [(q.play, q.subject_id, q.account_id) for q in got["ae"]] == [
        ("ae_handoff", "acme", "acme")
    ]
    assert [(q.play, q.subject_id) for q in got["nudge"]] == [("upgrade_nudge", "u1")]
    assert [(q.kind, q.play, q.subject_id) for q in got["pql"]] == [("pql", None, "u2")]


def test_a_play_and_the_pql_fire_independently(client: Client) -> None:
    """A subject may fire the pql and several plays; each once, each its own id."""
    fired = []
    fired += client.track("u1", "dashboard_built").qualified
    fired += client.track("u1", "row_limit_warning").qualified
    for _ in range(3):
        fired += client.track("u1", "query_run").qualified
    assert [(q.kind, q.play) for q in fired] == [
        ("pql", None),
        ("play", "upgrade_nudge"),
        ("play", "power_user"),
    ]
    assert len({q.id for q in fired}) == 3
    stats = client.stats()
    assert (stats.pqls, stats.plays) == (1, {"upgrade_nudge": 1, "ae_handoff": 0, "power_user": 1})


def test_a_play_fires_again_after_its_own_cool_down(client: Client, clock: FrozenClock) -> None:
    """requalify_after of a play: it may fire again once false and a day has passed."""
    model = Model(
        "plays-cool",
        plays={"active": play(count("x", within=days(1)) >= 1, requalify_after=days(2))},
    )
    other = Client(model, store=client.store, clock=clock, dispatch="inline")
    try:
        assert [q.play for q in other.track("u1", "x", timestamp=T0).qualified] == ["active"]
        clock.set(T0 + timedelta(days=1, hours=1))
        other.sweep()  # the window passed: disqualified (recorded, not delivered)
        assert other.track("u1", "x", timestamp=T0 + timedelta(days=2)).qualified == []
        clock.set(T0 + timedelta(days=4))
        assert [q.play for q in other.track("u1", "x").qualified] == ["active"]
        assert len(other.qualifications(play="active")) == 2
    finally:
        other.close()


def test_plays_are_listed_by_name(client: Client) -> None:
    """qualifications(play=...) lists that play's, kind="play" every play's, newest first."""
    client.track("u1", "row_limit_warning")
    for _ in range(3):
        client.track("u2", "query_run")
    client.track("u3", "dashboard_built")
    assert [q.subject_id for q in client.qualifications(play="upgrade_nudge")] == ["u1"]
    assert [(q.play, q.subject_id) for q in client.qualifications(kind="play")] == [
        ("power_user", "u2"),
        ("upgrade_nudge", "u1"),
    ]
    assert {q.kind for q in client.qualifications()} == {"pql", "play"}


def test_assertions_of_the_testing_kit_know_plays(client: Client) -> None:
    """assert_qualified(play=) passes for a subject that fired it; its failure explains."""
    client.track("u1", "row_limit_warning")
    assert_qualified(client, "u1", play="upgrade_nudge")
    assert_not_qualified(client, "u2", play="upgrade_nudge")
    with pytest.raises(AssertionError, match=r"play upgrade_nudge: .* -> false"):
        assert_qualified(client, "u2", play="upgrade_nudge")
    with pytest.raises(AssertionError, match="'upgrade_nudge' play subject"):
        assert_not_qualified(client, "u1", play="upgrade_nudge")
    with pytest.raises(ValidationError) as info:
        assert_qualified(client, "u1", play="nope")
    assert info.value.field == "play"


def test_forget_removes_a_users_plays(client: Client) -> None:
    """forget() removes the user's play records and deliveries: seen again, it fires anew."""
    client.track("u1", "row_limit_warning")
    client.forget("u1")
    assert client.qualifications(play="upgrade_nudge") == []
    assert client.pending() == []
    assert len(client.track("u1", "row_limit_warning").qualified) == 1


def test_forget_removes_a_users_events_from_an_account_plays_payload(client: Client) -> None:
    """forget(user) redacts the user's events from the context of an account play's pending
    delivery, as it does for a PQA's."""
    for user in ("u1", "u2", "u3"):
        client.track(user, "login", account_id="acme")
    [q] = client.pending()
    assert q.play == "ae_handoff"
    assert "u2" in {e["user_id"] for e in q.context["events"]}
    assert client.forget_preview("u2")["account payloads to redact"] == 1  # the play's
    client.forget("u2")
    [q] = client.pending()
    assert "u2" not in {e["user_id"] for e in q.context["events"]}
    assert {e["user_id"] for e in q.context["events"]} == {"u1", "u3"}


def test_the_sink_headline_names_the_play(client: Client) -> None:
    """sinks.headline() of a play's qualification names the play and its subject."""
    [q] = client.track("u1", "row_limit_warning").qualified
    text = headline(q)
    assert text == "u1 fired the play 'upgrade_nudge' (plays-tests)"


def test_async_on_play(store: Store, clock: FrozenClock) -> None:
    """AsyncClient.on_play takes an async callback, delivered that play's qualifications."""
    got: list[str | None] = []

    async def main() -> None:
        async with pqlkit.AsyncClient(MODEL, store=store, clock=clock) as client:

            @client.on_play("upgrade_nudge")
            async def on_nudge(q: Qualification) -> None:
                got.append(q.play)

            await client.track("u1", "row_limit_warning")
            await client.flush()

    asyncio.run(main())
    assert got == ["upgrade_nudge"]


def test_module_level_on_play(client: Client) -> None:
    """pqlkit.on_play registers on the default client (testing.use swaps it in)."""
    from pqlkit.testing import use

    got: list[str] = []
    with use(client):

        @pqlkit.on_play("upgrade_nudge", name="module-level")
        def on_nudge(q: Qualification) -> None:
            got.append(q.subject_id)

        pqlkit.track("u1", "row_limit_warning")
    assert got == ["u1"]


def test_a_states_plays_cache_is_stored_only_with_plays(store: Store, clock: FrozenClock) -> None:
    """A model without plays stores the state as before (ten items); a play's latest
    record is cached in an eleventh, read back by a new client (no store lookup needed)."""
    import json

    from pqlkit._engine import SubjectState

    without = Model("plays-state-a", pql=did("x"))
    with_plays = Model("plays-state-b", pql=did("x"), plays={"p": play(did("x"))})
    for model, items in ((without, 10), (with_plays, 11)):
        with Client(model, store=store, clock=clock) as client:
            client.track("u1", "x")
        with store.transaction() as tx:
            record = tx.load_state(model.name, "user", "u1")
        assert record is not None
        assert len(json.loads(record.state)) == items
        state = SubjectState.load(record.state)
        assert state == SubjectState.load(state.dump())
        if model is with_plays:
            assert state.plays["p"].qualified
            with Client(model, store=store, clock=clock) as client:  # cold: read from the store
                assert client.track("u1", "x").qualified == []


def test_an_old_qualification_payload_loads() -> None:
    """A payload stored before plays (no ``play``, no ``holdout``) loads as a pql's."""
    q = Qualification("q1", "pql", "u1", None, "m", "f", T0)
    data = q.to_dict()
    del data["play"], data["holdout"]
    assert Qualification.from_dict(data) == q
    assert (q.play, q.holdout) == (None, False)


# -- holdouts --------------------------------------------------------------------------------


def test_a_holdout_share_is_recorded_never_delivered(make_client: ClientFactory) -> None:
    """holdout=0.2: about a fifth of 1,000 qualifying users are held out (recorded with
    holdout=True, listed, counted), none delivered nor nudged; the rest are."""
    model = Model(
        "plays-holdout",
        plays={"nudge": play(did("x"), holdout=0.2, nudge={"title": "t"})},
    )
    client = make_client(model)
    rec = recorder(client)
    users = [f"user-{i}" for i in range(1000)]
    fired = [q for u in users for q in client.track(u, "x").qualified]
    held = {q.subject_id for q in fired if q.holdout}
    assert len(fired) == 1000
    assert 160 <= len(held) <= 240  # 200 expected; a binomial sd is 12.6
    assert {q.subject_id for q in rec.plays["nudge"]} == set(users) - held
    assert not any(q.holdout for q in rec.plays["nudge"])
    assert all(client.nudges(u) == [] for u in held)
    assert all(len(client.nudges(u)) == 1 for u in list(set(users) - held)[:50])
    listed = client.qualifications(play="nudge", limit=1000)
    assert {q.subject_id for q in listed if q.holdout} == held
    stats = client.stats()
    assert (stats.plays, stats.plays_held_out) == ({"nudge": 1000}, {"nudge": len(held)})


def test_a_holdout_is_stable(tmp_path: Path) -> None:
    """The same subjects are held out in another store and another run (a stable hash of
    model, play and subject), and a different play holds out different ones."""

    def held(play_name: str, path: Path) -> set[str]:
        model = Model("plays-holdout", plays={play_name: play(did("x"), holdout=0.3)})
        with Client(model, store=f"sqlite:///{path}", clock=FrozenClock(T0)) as client:
            return {
                q.subject_id
                for u in range(300)
                for q in client.track(f"u{u}", "x").qualified
                if q.holdout
            }

    first = held("a", tmp_path / "1.db")
    assert first == held("a", tmp_path / "2.db")
    assert first != held("b", tmp_path / "3.db")
    assert 50 <= len(first) <= 130


# -- nudges from plays -----------------------------------------------------------------------


def test_a_play_opens_its_nudge(client: Client, clock: FrozenClock) -> None:
    """A play with nudge= opens it for the user when it fires (key and play: its name)."""
    client.track("u1", "row_limit_warning")
    [n] = client.nudges("u1")
    assert (n.key, n.play, n.payload, n.until) == (
        "upgrade_nudge",
        "upgrade_nudge",
        NUDGE,
        T0 + timedelta(days=7),
    )
    assert client.nudges("u2") == []


def test_a_play_nudge_is_hidden_once_the_play_no_longer_holds(client: Client) -> None:
    """nudges() re-checks the play at read time: a user who upgraded sees it no more."""
    client.track("u1", "row_limit_warning")
    assert len(client.nudges("u1")) == 1
    client.track("u1", "upgraded")
    assert client.nudges("u1") == []


def test_a_play_nudge_ends_at_until(client: Client, clock: FrozenClock) -> None:
    """until=days(7) on the play: the nudge is not shown after a week."""
    client.track("u1", "row_limit_warning")
    clock.advance(timedelta(days=7, seconds=1))
    assert client.nudges("u1") == []


# -- bad input -------------------------------------------------------------------------------


def test_on_play_of_an_unknown_play_names_the_field(client: Client) -> None:
    """on_play("nope") is a ValidationError naming ``play``; nothing is registered."""
    for register in (
        lambda: client.on_play("nope", lambda q: None),
        lambda: client.on_play("nope")(lambda q: None),
        lambda: client.qualifications(play="nope"),
        lambda: client.qualified_at("u1", play="nope"),
    ):
        with pytest.raises(ValidationError) as info:
            register()
        assert info.value.field == "play"


def test_on_play_needs_a_callable(client: Client) -> None:
    """on_play(name, 3) is a ValidationError naming ``fn``."""
    with pytest.raises(ValidationError) as info:
        client.on_play("upgrade_nudge", 3)  # type: ignore[call-overload]
    assert info.value.field == "fn"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: play(did("x"), holdout=1), "plays.p.holdout"),
        (lambda: play(did("x"), holdout=float("nan")), "plays.p.holdout"),
        (lambda: play(did("x"), of="account", nudge={"t": 1}), "plays.p.nudge"),
        (lambda: play(did("x"), until=days(1)), "plays.p.until"),
    ],
)
def test_a_bad_play_is_a_model_error(build: Any, field: str) -> None:
    """A bad play is refused when the Model is built, naming the field."""
    with pytest.raises(ModelError) as info:
        Model("m", plays={"p": build()})
    assert info.value.name == field


def test_plays_are_part_of_the_fingerprint() -> None:
    """Adding or changing a play changes the fingerprint; no plays: as before."""
    base = Model("m", pql=did("x"))
    assert Model("m", pql=did("x"), plays={}).fingerprint == base.fingerprint
    one = Model("m", pql=did("x"), plays={"p": play(did("y"))})
    held = Model("m", pql=did("x"), plays={"p": play(did("y"), holdout=0.1)})
    assert len({base.fingerprint, one.fingerprint, held.fingerprint}) == 3


def test_plays_fire_once_across_threads_and_clients(store: Store, clock: FrozenClock) -> None:
    """Four clients on one store (as four app servers would be), a thread each, tracking the
    same users at once: each play fires once per subject, on every store."""
    import threading

    clients = [Client(PROCESS_MODEL, store=store, clock=clock, dispatch="inline") for _ in range(4)]
    fired: list[tuple[str | None, str]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def work(client: Client) -> None:
        try:
            for _ in range(6):
                for u in range(6):
                    result = client.track(f"u{u}", "e", account_id=f"a{u % 2}")
                    with lock:
                        fired.extend((q.play, q.subject_id) for q in result.qualified)
        except Exception:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        for c in clients:
            c.close()
    assert errors == []
    expected = {("p_user", f"u{u}"): 1 for u in range(6)}
    expected |= {("p_account", f"a{a}"): 1 for a in range(2)}
    assert Counter(fired) == expected


# -- several processes -----------------------------------------------------------------------

PROCESS_MODEL = Model(
    "plays-processes",
    plays={
        "p_user": play(count("e") >= 5, nudge={"title": "t"}),
        "p_account": play(active_users() >= 3, of="account"),
    },
)
PROCESSES = 3
USERS = 12


def track_in_child(path: str, worker: int) -> dict[str, Any]:
    """A child process: its own Client on the shared file, the same users as the others."""
    fired: list[tuple[str | None, str]] = []
    delivered: list[str] = []
    try:
        with Client(
            PROCESS_MODEL,
            store=f"sqlite:///{path}",
            clock=FrozenClock(T0 + timedelta(days=1)),
            dispatch="inline",
        ) as client:
            client.on_play("p_user", lambda q: delivered.append(q.id))
            client.on_play("p_account", lambda q: delivered.append(q.id))
            for i in range(10):
                for u in range(USERS):
                    result = client.track(
                        f"u{u}",
                        "e",
                        account_id=f"a{u % 3}",
                        timestamp=T0 + timedelta(seconds=i * 100 + worker),
                    )
                    fired += [(q.play, q.subject_id) for q in result.qualified]
            client.flush()
    except Exception:
        return {"error": traceback.format_exc()}
    return {"error": None, "fired": fired, "delivered": delivered}


def test_plays_fire_once_across_processes(tmp_path: Path) -> None:
    """3 spawned processes track the same users at once: each play fires once per subject,
    each qualification is delivered once, each user has one nudge."""
    path = tmp_path / "shared.db"
    with Client(PROCESS_MODEL, store=f"sqlite:///{path}"):
        pass
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=PROCESSES, mp_context=context) as pool:
        futures = [pool.submit(track_in_child, str(path), w) for w in range(PROCESSES)]
        reports = [f.result(timeout=300) for f in futures]
    assert [r["error"] for r in reports] == [None] * PROCESSES
    fired = Counter(item for r in reports for item in r["fired"])
    expected = {("p_user", f"u{u}"): 1 for u in range(USERS)}
    expected |= {("p_account", f"a{a}"): 1 for a in range(3)}
    assert fired == expected
    delivered = Counter(qid for r in reports for qid in r["delivered"])
    assert len(delivered) == len(expected)
    assert set(delivered.values()) == {1}
    with Client(PROCESS_MODEL, store=f"sqlite:///{path}") as client:
        assert len(client.qualifications(kind="play", limit=100)) == len(expected)
        assert all(len(client.nudges(f"u{u}")) == 1 for u in range(USERS))


# -- the example -----------------------------------------------------------------------------


def test_the_example_runs(tmp_path: Path) -> None:
    """``python examples/plays.py``: the play's nudge opens and goes once the user upgraded,
    the AE hand-off is delivered once, about a tenth of the nudge's subjects are held out."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-W", "error", "examples/plays.py", str(tmp_path / "plays.db")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == [
        "fired: [('upgrade_nudge', 'ada', False)]",
        "ada's inbox: [\"You're close to your row limit\"]",
        "after upgrading: []",
    ]
    assert lines[3].startswith("AE task for bigco: big_company (id ")
    assert lines[4:6] == ["upgrade_nudge fired: 201", "held out: 16"]  # stable: a hash
    assert len(lines) == 6
