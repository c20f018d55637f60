"""pqlkit.testing: recorder, journeys, assertions, use(), and the pytest plugin's fixtures."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

import pqlkit
import pqlkit.testing
from pqlkit import (
    Client,
    Model,
    Qualification,
    _default,
    active_users,
    count,
    days,
    did,
    idle,
    points,
    score,
    signal,
    trait,
)
from pqlkit.testing import (
    START,
    ClientFactory,
    FakeStore,
    FrozenClock,
    Recorder,
    assert_not_qualified,
    assert_qualified,
    assert_score,
    journey,
    recorder,
    use,
)

pytest_plugins = ["pytester"]

MODEL = Model(
    "kit",
    signals={
        "activated": did("dashboard_built"),
        "invited": count("teammate_invited") >= 1,
        "dormant": idle() >= days(14),
        "big": trait("employees", of="account") >= 200,
    },
    scores={
        "behavior": points(activated=30, invited=20, dormant=-25),
        "fit": points(big=20),
        "logins": count("login"),
    },
    pql=(score("behavior") >= 50) & ~signal("dormant"),
    pqa=active_users(within=days(14)) >= 2,
)
"""Activation (30) + an invite (20) makes a PQL; two active users make a PQA."""


@pytest.fixture(name="client")
def fixture_client(pql_client: ClientFactory) -> Client:
    """A Client for MODEL on the plugin's FakeStore and FrozenClock (inline dispatch)."""
    return pql_client(MODEL)


@pytest.fixture(name="rec")
def fixture_rec(client: Client) -> Recorder:
    """A recorder on ``client``."""
    return recorder(client)


@pytest.fixture(name="no_default")
def fixture_no_default() -> Iterator[None]:
    """No module-level default client during the test; the one before is restored after."""
    before = _default.swap(None)
    yield
    _default.swap(before)


def qualify(client: Client, user_id: str, account_id: str | None = None) -> None:
    """Make ``user_id`` a PQL of MODEL: 30 (activated) + 20 (invited)."""
    client.track(user_id, "dashboard_built", account_id=account_id)
    client.track(user_id, "teammate_invited", account_id=account_id)


def test_testing_all_is_sorted_and_complete() -> None:
    """``pqlkit.testing.__all__`` is sorted and names every public helper."""
    names = pqlkit.testing.__all__
    assert names == sorted(names)
    for name in ("recorder", "journey", "use", "assert_qualified", "assert_score", "Journey"):
        assert name in names
    assert all(hasattr(pqlkit.testing, name) for name in names)


# -- recorder ---------------------------------------------------------------------------------


def test_recorder_captures_pqls_in_delivery_order(client: Client, rec: Recorder) -> None:
    """``list(rec)`` holds each delivered qualification in the order it was delivered."""
    qualify(client, "u2")
    qualify(client, "u1")
    qualify(client, "u3")
    assert [q.subject_id for q in rec] == ["u2", "u1", "u3"]
    assert [q.subject_id for q in rec.pql] == ["u2", "u1", "u3"]


def test_recorder_sorts_deliveries_by_callback_kind(
    client: Client, rec: Recorder, pql_clock: FrozenClock
) -> None:
    """``pql``, ``pqa`` and ``disqualified`` each hold the deliveries of their callback."""
    qualify(client, "u1", "acme")  # u1 is a PQL
    pql_clock.advance(days(10))
    client.track("u2", "login", account_id="acme")  # 2 users active in 14 days: acme is a PQA
    client.track("u3", "login", account_id="acme")
    pql_clock.advance(days(4))
    client.sweep()  # u1 idle for 14 days: dormant, disqualified; acme keeps u2 and u3
    assert [(q.kind, q.subject_id) for q in rec.pql] == [("pql", "u1")]
    assert [(q.kind, q.subject_id) for q in rec.pqa] == [("pqa", "acme")]
    assert [(q.subject_id, q.disqualified_at) for q in rec.disqualified] == [
        ("u1", pql_clock.now())
    ]
    assert [q.id for q in rec] == [rec.pql[0].id, rec.pqa[0].id, rec.disqualified[0].id]


def test_recorder_is_a_sequence(client: Client, rec: Recorder) -> None:
    """A recorder supports len, indexing, negative indexing, slices and ``in``."""
    qualify(client, "u1")
    qualify(client, "u2")
    assert len(rec) == 2
    assert rec[0].subject_id == "u1"
    assert rec[-1].subject_id == "u2"
    assert [q.subject_id for q in rec[0:1]] == ["u1"]
    assert rec[1] in rec
    assert isinstance(rec[0], Qualification)


def test_recorder_kind_lists_are_copies(client: Client, rec: Recorder) -> None:
    """Changing a list returned by ``rec.pql`` does not change the recorder."""
    qualify(client, "u1")
    rec.pql.clear()
    assert len(rec.pql) == 1


def test_recorder_is_not_repeated_when_another_callback_is_retried(
    client: Client, rec: Recorder, pql_clock: FrozenClock
) -> None:
    """Each callback has its own delivery: another callback's retry is not recorded again."""
    calls: list[str] = []

    @client.on_pql
    def flaky(q: Qualification) -> None:
        calls.append(q.id)
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")

    qualify(client, "u1")
    pql_clock.advance(timedelta(seconds=2))  # past the first retry delay (1 s, minus jitter)
    client.flush()
    assert len(calls) == 2
    assert len(rec.pql) == 1


def test_recorder_sees_what_fired_before_it_on_the_next_delivery(client: Client) -> None:
    """A qualification that fired with no callback registered is recorded on the next flush."""
    qualify(client, "u1")
    rec = recorder(client)
    assert list(rec) == []
    client.flush()
    assert [q.subject_id for q in rec] == ["u1"]


def test_recorder_clear_forgets_but_keeps_recording(client: Client, rec: Recorder) -> None:
    """``clear()`` empties every list; later deliveries are still recorded."""
    qualify(client, "u1")
    rec.clear()
    assert (len(rec), rec.pql) == (0, [])
    qualify(client, "u2")
    assert [q.subject_id for q in rec] == ["u2"]


def test_recorder_rejects_a_non_client() -> None:
    """``recorder()`` of something that is not a Client raises ValidationError."""
    with pytest.raises(pqlkit.ValidationError, match="client"):
        recorder("not a client")  # type: ignore[arg-type]


# -- journey ------------------------------------------------------------------------------------


def test_journey_day_sets_the_clock_to_start_plus_n_days(
    client: Client, pql_clock: FrozenClock
) -> None:
    """``day(n)`` sets the clock to the journey's start + n days, not n days further."""
    j = journey(client, "u1")
    j.day(5)
    assert pql_clock.now() == START + timedelta(days=5)
    j.day(2)
    assert pql_clock.now() == START + timedelta(days=2)


def test_journey_starts_at_the_clock_time_when_it_was_made(
    client: Client, pql_clock: FrozenClock
) -> None:
    """Day 0 is the clock's time when journey() was called, not the clock's first time."""
    pql_clock.advance(timedelta(hours=3))
    j = journey(client, "u1")
    j.day(1)
    assert j.start == START + timedelta(hours=3)
    assert pql_clock.now() == START + timedelta(days=1, hours=3)


def test_journey_day_accepts_fractions(client: Client, pql_clock: FrozenClock) -> None:
    """``day(1.5)`` is a day and a half after the start."""
    journey(client, "u1").day(1.5)
    assert pql_clock.now() == START + timedelta(hours=36)


@pytest.mark.parametrize("bad", [True, math.nan, math.inf, "2", None])
def test_journey_day_rejects_a_non_number(client: Client, bad: object) -> None:
    """``day()`` of a bool, NaN, infinity or a non-number raises ValidationError."""
    with pytest.raises(pqlkit.ValidationError, match="days"):
        journey(client, "u1").day(bad)  # type: ignore[arg-type]


def test_journey_track_records_at_the_clock_time(client: Client, pql_store: FakeStore) -> None:
    """``track()`` records the event for the user and account at the clock's now."""
    journey(client, "u1", "acme").day(3).track("login", {"via": "sso"})
    with pql_store.transaction() as tx:
        [event] = list(tx.events())
    assert (event.user_id, event.account_id, event.event) == ("u1", "acme", "login")
    assert event.properties == {"via": "sso"}
    assert event.timestamp == START + timedelta(days=3)


def test_journey_track_counts_for_the_account(client: Client) -> None:
    """Events of a journey with an account count for the account subject too."""
    journey(client, "u1", "acme").track("login").day(1).track("login")
    assert client.scores("acme", of="account")["logins"] == 2


def test_journey_keeps_every_track_result(client: Client) -> None:
    """``results`` holds each TrackResult in order; ``last`` is the latest."""
    j = journey(client, "u1").track("dashboard_built").day(1).track("teammate_invited")
    assert [r.scores["behavior"] for r in j.results] == [30, 50]
    assert [q.subject_id for q in j.last.qualified] == ["u1"]
    assert j.last is j.results[-1]


def test_journey_last_before_any_track_raises(client: Client) -> None:
    """``last`` of a journey that tracked nothing raises IndexError."""
    with pytest.raises(IndexError):
        _ = journey(client, "u1").last


def test_journey_methods_chain(client: Client) -> None:
    """day, track, identify, group and sweep all return the journey itself."""
    j = journey(client, "u1", "acme")
    assert j.day(1) is j
    assert j.track("login") is j
    assert j.identify({"role": "admin"}) is j
    assert j.group({"employees": 10}) is j
    assert j.sweep() is j


def test_journey_track_passes_the_message_id(client: Client) -> None:
    """A repeated ``message_id`` in a journey is a duplicate, not counted twice."""
    j = journey(client, "u1").track("login", message_id="m1").track("login", message_id="m1")
    assert [r.duplicate for r in j.results] == [False, True]
    assert client.scores("u1")["logins"] == 1


def test_journey_group_sets_the_account_traits(client: Client) -> None:
    """``group()`` merges traits into the journey's account (fit sees them)."""
    j = journey(client, "u1", "acme").track("login").group({"employees": 600})
    assert client.scores("u1")["fit"] == 20
    assert j.account_id == "acme"


def test_journey_identify_sets_the_user_traits(client: Client) -> None:
    """``identify()`` merges traits into the journey's user."""
    model = Model("traits", scores={"seats": trait("seats")})
    with Client(model, store=FakeStore(), clock=FrozenClock(START)) as other:
        journey(other, "u1").track("login").identify({"seats": 7})
        assert other.scores("u1")["seats"] == 7


def test_journey_group_without_account_raises(client: Client) -> None:
    """``group()`` on a journey with no account raises ValidationError."""
    with pytest.raises(pqlkit.ValidationError, match="account_id"):
        journey(client, "u1").group({"employees": 10})


def test_journey_sweep_fires_what_time_alone_changes(client: Client, rec: Recorder) -> None:
    """``sweep()`` at a later day delivers a disqualification caused by idleness."""
    j = journey(client, "u1").track("dashboard_built").track("teammate_invited")
    j.day(13).sweep()
    assert rec.disqualified == []
    j.day(14).sweep()
    assert [q.disqualified_at for q in rec.disqualified] == [START + timedelta(days=14)]


def test_journey_needs_a_frozen_clock() -> None:
    """journey() on a Client with the system clock raises a ValidationError saying why."""
    with (
        Client(MODEL, store=FakeStore()) as client,
        pytest.raises(pqlkit.ValidationError, match=r"FrozenClock"),
    ):
        journey(client, "u1")


@pytest.mark.parametrize(("user_id", "account_id"), [("", None), (" ", None), ("u1", "")])
def test_journey_rejects_bad_ids(client: Client, user_id: str, account_id: str | None) -> None:
    """Empty or blank ids are rejected when the journey is made, not at its first track."""
    with pytest.raises(pqlkit.ValidationError):
        journey(client, user_id, account_id)


# -- assertions -------------------------------------------------------------------------------


def test_assert_qualified_passes_for_a_pql(client: Client) -> None:
    """assert_qualified returns quietly for a user that qualified."""
    qualify(client, "u1")
    assert_qualified(client, "u1")


def test_assert_qualified_failure_holds_the_explain_lines(client: Client) -> None:
    """The failure names the subject and model and holds every ``explain()`` line."""
    client.track("u1", "dashboard_built")
    with pytest.raises(AssertionError) as info:
        assert_qualified(client, "u1")
    message = str(info.value)
    assert "expected 'u1' to be a PQL under model 'kit', but it never qualified" in message
    lines = client.explain("u1")
    assert any(line.startswith("behavior = 30") for line in lines)
    for line in lines:
        assert line in message


def test_assert_qualified_for_an_account(client: Client) -> None:
    """kind="pqa" checks the account, and its failure holds the account's explain lines."""
    client.track("u1", "login", account_id="acme")
    with pytest.raises(AssertionError) as info:
        assert_qualified(client, "acme", kind="pqa")
    assert "PQA" in str(info.value)
    for line in client.explain("acme", of="account"):
        assert line in str(info.value)
    client.track("u2", "login", account_id="acme")
    assert_qualified(client, "acme", kind="pqa")


def test_assert_qualified_still_passes_after_disqualification(
    client: Client, pql_clock: FrozenClock
) -> None:
    """A subject that fired and later turned dormant has still qualified."""
    qualify(client, "u1")
    pql_clock.advance(days(20))
    assert client.sweep()[0].disqualified_at is not None
    assert_qualified(client, "u1")


def test_assert_not_qualified_passes_for_a_non_pql(client: Client) -> None:
    """assert_not_qualified returns quietly for a user that never qualified."""
    client.track("u1", "dashboard_built")
    assert_not_qualified(client, "u1")
    assert_not_qualified(client, "nobody")


def test_assert_not_qualified_failure_says_when_and_explains(
    client: Client, pql_clock: FrozenClock
) -> None:
    """The failure says when the subject qualified and holds its ``explain()`` lines."""
    client.track("u1", "dashboard_built")
    pql_clock.advance(days(2))
    client.track("u1", "teammate_invited")
    with pytest.raises(AssertionError) as info:
        assert_not_qualified(client, "u1")
    message = str(info.value)
    when = (START + timedelta(days=2)).isoformat()
    assert f"expected 'u1' not to be a PQL under model 'kit', but it qualified at {when}" in message
    for line in client.explain("u1"):
        assert line in message


def test_assert_not_qualified_for_an_account(client: Client) -> None:
    """kind="pqa" checks the account, not a user of the same id."""
    client.track("u1", "login", account_id="acme")
    assert_not_qualified(client, "acme", kind="pqa")
    client.track("u2", "login", account_id="acme")
    with pytest.raises(AssertionError, match="not to be a PQA"):
        assert_not_qualified(client, "acme", kind="pqa")


def test_assertions_reject_an_unknown_kind(client: Client) -> None:
    """A kind other than "pql" or "pqa" is a ValidationError, not a silent pass."""
    with pytest.raises(pqlkit.ValidationError, match="kind"):
        assert_qualified(client, "u1", kind="pqls")  # type: ignore[arg-type]
    with pytest.raises(pqlkit.ValidationError, match="kind"):
        assert_not_qualified(client, "u1", kind="user")  # type: ignore[arg-type]


def test_assert_score_passes_on_the_expected_value(client: Client) -> None:
    """assert_score returns quietly when the score is the expected value."""
    qualify(client, "u1")
    assert_score(client, "u1", "behavior", 50)  # activated 30 + invited 20


def test_assert_score_failure_holds_values_and_explain_lines(client: Client) -> None:
    """The failure gives the actual and expected values and every ``explain()`` line."""
    client.track("u1", "dashboard_built")
    with pytest.raises(AssertionError) as info:
        assert_score(client, "u1", "behavior", 50)
    message = str(info.value)
    assert "score 'behavior' of 'u1' is 30.0, expected 50" in message
    for line in client.explain("u1"):
        assert line in message


def test_assert_score_uses_the_tolerance(client: Client) -> None:
    """A difference within ``tolerance`` passes; a larger one fails."""
    client.track("u1", "dashboard_built")
    assert_score(client, "u1", "behavior", 30.4, tolerance=0.5)
    with pytest.raises(AssertionError, match=r"tolerance 0\.1"):
        assert_score(client, "u1", "behavior", 30.4, tolerance=0.1)


def test_assert_score_default_tolerance_is_tight(client: Client) -> None:
    """Without a tolerance, a score off by 1e-6 fails."""
    client.track("u1", "dashboard_built")
    with pytest.raises(AssertionError):
        assert_score(client, "u1", "behavior", 30 + 1e-6)


def test_assert_score_of_an_account(client: Client) -> None:
    """``of="account"`` reads the account's score."""
    client.track("u1", "login", account_id="acme")
    client.track("u2", "login", account_id="acme")
    assert_score(client, "acme", "logins", 2, of="account")
    with pytest.raises(AssertionError, match="explain\\('acme', of='account'\\)"):
        assert_score(client, "acme", "logins", 3, of="account")


def test_assert_score_unknown_name_lists_the_scores(client: Client) -> None:
    """Asking for a score the model lacks fails and lists the model's scores."""
    client.track("u1", "login")
    with pytest.raises(AssertionError, match=r"no score 'behaviour' \(its scores: behavior, fit"):
        assert_score(client, "u1", "behaviour", 0)


def test_assert_score_rejects_a_negative_tolerance(client: Client) -> None:
    """A negative tolerance is a ValidationError."""
    with pytest.raises(pqlkit.ValidationError, match="tolerance"):
        assert_score(client, "u1", "behavior", 0, tolerance=-1)


def test_qualified_at_is_the_firing_time(client: Client, pql_clock: FrozenClock) -> None:
    """``Client.qualified_at`` is None before, then the evaluation time that fired."""
    assert client.qualified_at("u1") is None
    client.track("u1", "dashboard_built")
    pql_clock.advance(timedelta(hours=5))
    client.track("u1", "teammate_invited")
    assert client.qualified_at("u1") == START + timedelta(hours=5)
    assert client.qualified_at("u1", kind="pqa") is None


def test_qualified_at_follows_aliases(client: Client) -> None:
    """``qualified_at`` of an anonymous id aliased to a PQL is the PQL's time."""
    client.alias("anon-1", "u1")
    qualify(client, "u1")
    assert client.qualified_at("anon-1") == client.qualified_at("u1") == START


# -- use() ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_default")
def test_use_installs_the_default_client(client: Client) -> None:
    """Inside ``use(client)``, pqlkit.track and get_client go to that client."""
    with use(client) as used:
        assert used is client
        assert pqlkit.get_client() is client
        pqlkit.track("u1", "login")
    assert client.scores("u1")["logins"] == 1


@pytest.mark.usefixtures("no_default")
def test_use_restores_no_default(client: Client) -> None:
    """After ``use()`` with no default before, there is again no default client."""
    with use(client):
        pass
    with pytest.raises(pqlkit.PqlkitError, match="configure"):
        pqlkit.get_client()


@pytest.mark.usefixtures("no_default")
def test_use_restores_the_previous_default(pql_client: ClientFactory) -> None:
    """Nested ``use()`` blocks restore the outer client on exit."""
    outer, inner = pql_client(MODEL), pql_client(MODEL)
    with use(outer):
        with use(inner):
            assert pqlkit.get_client() is inner
        assert pqlkit.get_client() is outer


@pytest.mark.usefixtures("no_default")
def test_use_restores_the_previous_default_when_the_block_raises(
    pql_client: ClientFactory,
) -> None:
    """An exception in the block propagates and the previous default is back."""
    outer, inner = pql_client(MODEL), pql_client(MODEL)
    with use(outer):
        with pytest.raises(KeyError), use(inner):
            raise KeyError("boom")
        assert pqlkit.get_client() is outer


@pytest.mark.usefixtures("no_default")
def test_use_leaves_the_clients_open(client: Client) -> None:
    """``use()`` does not close the client it installed."""
    with use(client):
        pass
    assert not client.track("u1", "login").duplicate


def test_use_rejects_a_non_client() -> None:
    """``use()`` of something that is not a Client raises ValidationError."""
    with pytest.raises(pqlkit.ValidationError, match="client"), use(None):  # type: ignore[arg-type]
        pass


# -- the pytest plugin ------------------------------------------------------------------------


def test_pql_clock_is_frozen_at_start(pql_clock: FrozenClock) -> None:
    """``pql_clock`` is a FrozenClock at 2026-01-05 09:00 UTC."""
    assert isinstance(pql_clock, FrozenClock)
    assert pql_clock.now() == START == datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def test_pql_store_is_an_empty_fake_store(pql_store: FakeStore) -> None:
    """``pql_store`` is a fresh FakeStore with no events."""
    assert isinstance(pql_store, FakeStore)
    with pql_store.transaction() as tx:
        assert list(tx.events()) == []


def test_pql_client_uses_the_fixture_store_and_clock(
    pql_client: ClientFactory, pql_store: FakeStore, pql_clock: FrozenClock
) -> None:
    """Clients from ``pql_client`` write to ``pql_store`` at ``pql_clock``'s time."""
    client = pql_client(MODEL)
    pql_clock.advance(days(1))
    client.track("u1", "login")
    assert client.store is pql_store
    with pql_store.transaction() as tx:
        assert [e.timestamp for e in tx.events()] == [START + days(1)]


def test_pql_client_dispatches_inline(pql_client: ClientFactory) -> None:
    """A callback runs inside the ``track()`` that fired it (no flush, no thread)."""
    client = pql_client(MODEL)
    seen: list[str] = []
    client.on_pql(lambda q: seen.append(q.subject_id))
    qualify(client, "u1")
    assert seen == ["u1"]


def test_pql_client_passes_settings(pql_client: ClientFactory, pql_clock: FrozenClock) -> None:
    """Keyword settings reach the Client: max_attempts=1 dead-letters on the first failure."""
    client = pql_client(MODEL, max_attempts=1)

    @client.on_pql
    def broken(q: Qualification) -> None:
        raise RuntimeError("down")

    qualify(client, "u1")
    assert [q.subject_id for q in client.dead_letters()] == ["u1"]


def test_fixtures_work_in_a_fresh_project_without_conftest(pytester: pytest.Pytester) -> None:
    """A test file using only pql_client and pql_clock runs green with no conftest."""
    pytester.makepyfile(
        test_user_model="""
        from datetime import timedelta

        import pqlkit
        from pqlkit import Model, did, points, score
        from pqlkit.testing import assert_qualified, journey

        MODEL = Model(
            "user-model",
            signals={"built": did("dashboard_built")},
            scores={"behavior": points(built=60)},
            pql=score("behavior") >= 50,
        )

        def test_qualifies_on_day_two(pql_client, pql_clock):
            client = pql_client(MODEL)
            start = pql_clock.now()
            journey(client, "u1").day(2).track("dashboard_built")
            assert_qualified(client, "u1")
            assert client.qualified_at("u1") == start + timedelta(days=2)

        def test_clock_and_client_are_fresh(pql_client, pql_clock):
            client = pql_client(MODEL)
            assert pql_clock.now().isoformat() == "2026-01-05T09:00:00+00:00"
            assert client.qualified_at("u1") is None
        """
    )
    assert not list(pytester.path.glob("conftest.py"))
    result = pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_pql_client_closes_its_clients_after_the_test(pytester: pytest.Pytester) -> None:
    """Every client ``pql_client`` built is closed when its test ends."""
    pytester.makepyfile(
        test_close="""
        import pytest
        import pqlkit
        from pqlkit import Model, count

        MODEL = Model("m", scores={"n": count()})
        BUILT = []

        def test_build(pql_client):
            BUILT.extend([pql_client(MODEL), pql_client(MODEL)])
            BUILT[0].track("u1", "login")

        def test_closed_afterwards():
            for client in BUILT:
                with pytest.raises(pqlkit.ClientClosedError):
                    client.track("u1", "login")
        """
    )
    result = pytester.runpytest("-W", "error", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
