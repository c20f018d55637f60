"""How a pqlkit user tests their own PQL model: the data-tooling model (examples/data_tooling.py).

No conftest.py is needed: installing pqlkit gives pytest the fixtures ``pql_client``
(a Client factory on an in-memory store, callbacks run inline), ``pql_clock`` (a
FrozenClock at 2026-01-05 09:00 UTC) and ``pql_store``. Each story below is a
*journey*: ``day(n)`` moves the clock to n days after the journey began, ``track()``
records an event then.

The model, in short: behavior = activated 30 + invited 20 + api_key 15 +
pricing_visit 10 + near_row_limit 10 + dormant -25; fit = +20 at 200+ employees,
-30 on a free-mail domain; a user is a PQL when behavior + fit >= 50 and not
dormant (idle 14 days); an account is a PQA with 3+ users active within 14 days.

Run it: ``pytest examples/test_data_tooling.py``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from data_tooling import model  # pytest puts examples/ on sys.path (import mode "prepend")

import pqlkit
from pqlkit.testing import (
    START,
    ClientFactory,
    FrozenClock,
    Recorder,
    assert_not_qualified,
    assert_qualified,
    assert_score,
    journey,
    recorder,
    use,
)


@pytest.fixture(name="client")
def fixture_client(pql_client: ClientFactory) -> pqlkit.Client:
    """The data-tooling model on a fresh in-memory store and frozen clock."""
    return pql_client(model)


@pytest.fixture(name="rec")
def fixture_rec(client: pqlkit.Client) -> Recorder:
    """Records every qualification the client delivers to callbacks."""
    return recorder(client)


def test_big_company_analyst_is_a_pql_the_day_she_activates(client: pqlkit.Client) -> None:
    """Activation (30) plus company fit (20) reaches 50 on day 1."""
    dana = journey(client, "dana", "acme")
    dana.identify({"email_domain": "acme.io", "row_limit": 1_000_000})
    dana.group({"employees": 600})

    dana.day(0).track("warehouse_connected", {"warehouse": "snowflake"})
    # behavior 0 (activation needs a dashboard too) + fit 20 (600 >= 200) = 20 < 50
    assert_score(client, "dana", "behavior", 0)
    assert_score(client, "dana", "fit", 20)
    assert_not_qualified(client, "dana")

    dana.day(1).track("dashboard_built")
    # behavior 30 (activated) + fit 20 = 50 >= 50, not dormant: a PQL
    assert_score(client, "dana", "behavior", 30)
    assert_qualified(client, "dana")
    assert client.qualified_at("dana") == START + timedelta(days=1)


def test_the_pql_callback_gets_the_whole_story(client: pqlkit.Client, rec: Recorder) -> None:
    """The on_pql payload carries the scores, true signals, explanation and context."""
    (
        journey(client, "dana", "acme")
        .identify({"email_domain": "acme.io", "row_limit": 1_000_000})
        .group({"employees": 600})
        .day(0)
        .track("warehouse_connected")
        .day(1)
        .track("dashboard_built")
    )

    [q] = rec.pql
    assert (q.kind, q.subject_id, q.account_id, q.model) == ("pql", "dana", "acme", "data-tooling")
    assert q.qualified_at == START + timedelta(days=1)
    assert (q.scores["behavior"], q.scores["fit"]) == (30, 20)
    # tev = 100 * mean(time, engagement, virality)
    #     = 100 * (1 [activated after 1 day <= fast 2 days] + 2/7 [2 active days] + 0/3) / 3
    assert q.scores["tev"] == pytest.approx(100 * (1 + 2 / 7 + 0) / 3)
    assert q.signals == ("activated", "big_company", "fast_value")
    assert "pql: ((score('behavior') + score('fit')) = 50 >= 50" in q.explanation[-1]
    assert q.context["account_traits"] == {"employees": 600}
    assert [e["event"] for e in q.context["events"]] == ["dashboard_built", "warehouse_connected"]
    assert rec.pqa == []
    assert rec.disqualified == []


def test_free_mail_hobbyist_needs_more_behavior(client: pqlkit.Client, rec: Recorder) -> None:
    """A gmail user at a 12-person company pays -30 fit and qualifies only at 55."""
    sam = journey(client, "sam", "tinyco")
    sam.identify({"email_domain": "gmail.com", "row_limit": 1_000_000})
    sam.group({"employees": 12})

    sam.day(0).track("warehouse_connected")
    sam.day(1).track("dashboard_built")
    sam.day(2).track("teammate_invited", {"email": "kim@gmail.com"})
    sam.day(3).track("api_key_generated")
    # behavior 30 (activated) + 20 (invited) + 15 (api key) = 65
    # fit -30 (gmail.com is free mail; 12 < 200 employees adds nothing) -> 65 - 30 = 35 < 50
    assert_score(client, "sam", "behavior", 65)
    assert_score(client, "sam", "fit", -30)
    assert_not_qualified(client, "sam")

    sam.day(4).track("page_viewed", {"path": "/pricing"})
    # + 10 (pricing visit) = 75; 75 - 30 = 45 < 50
    assert_score(client, "sam", "behavior", 75)
    assert_not_qualified(client, "sam")

    sam.day(5).track("usage_reported", {"rows": 850_000})
    # 850,000 rows >= 80% of the 1,000,000 row limit: + 10 = 85; 85 - 30 = 55 >= 50
    assert_score(client, "sam", "behavior", 85)
    assert_qualified(client, "sam")
    assert [q.qualified_at for q in rec.pql] == [START + timedelta(days=5)]


def test_tev_score_arithmetic(client: pqlkit.Client) -> None:
    """TEV averages time-to-value, engagement and virality, each 0..1, times 100."""
    lee = journey(client, "lee")
    lee.day(0).track("warehouse_connected")
    lee.day(8).track("dashboard_built")  # activated 8 days after first seen
    lee.track("teammate_invited", {"email": "a@lee.dev"})
    lee.track("teammate_invited", {"email": "b@lee.dev"})
    lee.track("teammate_invited", {"email": "a@lee.dev"})  # same person again: not distinct

    # time:       1 at <= 2 days (fast), 0 at >= 14 days (slow), linear between:
    #             1 - (8 - 2) / (14 - 2) = 0.5
    # engagement: active days within 14 days (day 0 and day 8) / target 7 = 2/7
    # virality:   distinct invited emails / target 3 = 2/3
    # tev = 100 * (0.5 + 2/7 + 2/3) / 3 = 48.41...
    assert_score(client, "lee", "tev", 100 * (0.5 + 2 / 7 + 2 / 3) / 3)


def test_pricing_visit_counts_for_30_days(client: pqlkit.Client) -> None:
    """within=days(30) holds events in (T - 30 days, T]: on day 30 the day-0 visit is out."""
    pat = journey(client, "pat")
    pat.day(0).track("page_viewed", {"path": "/pricing"}).track("page_viewed", {"path": "/docs"})
    pat.day(20).track("login").day(29).track("login")  # stays active: never dormant
    # day 29: pricing_visit +10 (only the /pricing view matches where=)
    assert_score(client, "pat", "behavior", 10)
    pat.day(30)
    # day 30: the visit is exactly 30 days old, outside the window: 0
    assert_score(client, "pat", "behavior", 0)


def test_fast_start_needs_email_within_48_hours(client: pqlkit.Client) -> None:
    """sequence(..., within=hours(48)): contacts then an email, the chain inside 48 hours."""
    journey(client, "quick").day(0).track("contacts_imported").day(1.5).track("email_sent")
    journey(client, "slow").day(0).track("contacts_imported").day(2.5).track("email_sent")
    assert client.signals("quick")["fast_start"] is True  # 36 hours
    assert client.signals("slow")["fast_start"] is False  # 60 hours


def test_dormant_pql_is_disqualified_after_14_idle_days(
    client: pqlkit.Client, rec: Recorder, pql_clock: FrozenClock
) -> None:
    """Fourteen days without an event make a PQL dormant; a sweep delivers on_disqualified."""
    dana = (
        journey(client, "dana", "acme")
        .group({"employees": 600})
        .day(0)
        .track("warehouse_connected")
        .day(1)
        .track("dashboard_built")
    )
    assert [q.subject_id for q in rec.pql] == ["dana"]

    dana.day(14).sweep()  # idle 13 days: not dormant yet
    assert rec.disqualified == []

    dana.day(15).sweep()  # idle 14 days: dormant
    # behavior 30 (activated) - 25 (dormant) = 5; 5 + 20 (fit) = 25 < 50
    assert_score(client, "dana", "behavior", 5)
    [q] = rec.disqualified
    assert (q.subject_id, q.qualified_at, q.disqualified_at) == (
        "dana",
        START + timedelta(days=1),
        pql_clock.now(),
    )
    assert "dormant" in q.signals
    assert_qualified(client, "dana")  # she did qualify once; that stays true
    assert [x.kind for x in rec] == ["pql", "pql"]  # the pql, then its disqualification


def test_account_is_a_pqa_with_three_users_active_in_14_days(
    client: pqlkit.Client, rec: Recorder
) -> None:
    """Three users of one account active within 14 days make the account a PQA."""
    # Make the journeys before moving the clock, so that they share day 0.
    ann, bob, cat = (journey(client, user, "globex") for user in ("ann", "bob", "cat"))
    ann.day(0).track("login")
    bob.day(5).track("login")
    assert_not_qualified(client, "globex", kind="pqa")
    cat.day(13).track("login")
    # active_users(within=14 days) on day 13: (day -1, day 13] holds ann, bob, cat = 3 >= 3
    assert_qualified(client, "globex", kind="pqa")
    assert [(q.kind, q.subject_id, q.account_id) for q in rec.pqa] == [("pqa", "globex", "globex")]


def test_account_misses_the_pqa_when_the_third_user_is_a_day_late(client: pqlkit.Client) -> None:
    """On day 14, ann's day-0 login has left the 14-day window: only two users count."""
    ann, bob, cat = (journey(client, user, "initech") for user in ("ann", "bob", "cat"))
    ann.day(0).track("login")
    bob.day(5).track("login")
    cat.day(14).track("login")
    # (day 0, day 14] holds bob and cat: 2 < 3
    assert_not_qualified(client, "initech", kind="pqa")
    # the account's tev: time 0 (never activated), engagement 2/7 (days 5 and 14), virality 0
    assert_score(client, "initech", "tev", 100 * (0 + 2 / 7 + 0) / 3, of="account")


def record_signup(user_id: str, email: str, account_id: str) -> None:
    """Application code: it uses pqlkit's module-level client, as configured at startup."""
    domain = email.rsplit("@", 1)[1]
    pqlkit.identify(user_id, {"email": email, "email_domain": domain}, account_id=account_id)
    pqlkit.track(user_id, "signed_up", account_id=account_id)


def test_app_code_on_the_default_client(client: pqlkit.Client) -> None:
    """use(client) points pqlkit.track() and friends at the test's client."""
    with use(client):
        record_signup("eve", "eve@yahoo.com", "evilcorp")
    # yahoo.com is free mail: fit -30
    assert_score(client, "eve", "fit", -30)


def test_a_sales_alert_callback(client: pqlkit.Client) -> None:
    """Your own on_pql callback runs inside track() with the qualification."""
    alerts: list[str] = []

    @client.on_pql
    def alert_sales(q: pqlkit.Qualification) -> None:
        alerts.append(f"{q.subject_id} @ {q.account_id}: {q.scores['behavior']:g} + fit")

    (
        journey(client, "dana", "acme")
        .group({"employees": 600})
        .track("warehouse_connected")
        .track("dashboard_built")  # fires: the callback runs before track() returns
        .track("api_key_generated")  # already a PQL: no second alert
    )
    assert alerts == ["dana @ acme: 30 + fit"]
