"""pqlkit.simulate: a seeded product history; and the lab proven on it (issue 16, item 5).

The simulation plants its conversions in a few behaviours (``DEFAULT_DRIVERS``);
everything engaged users do correlates with converting too. A backtest must find
the planted behaviours, tell a model built on them from a decoy with an interval
that excludes zero, and give a model of pure noise a lift of about 1 and an AUC of
about 0.5.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import pqlkit
from pqlkit import Model, ValidationError, days, did, fit, points, score, signal, trait
from pqlkit._lab.simulation import BEHAVIOURS, DEFAULT_DRIVERS


@pytest.fixture(name="sim", scope="module")
def _sim() -> pqlkit.Simulation:
    return pqlkit.simulate(seed=1, users=4_000, accounts=400, days=180)


def _did(behaviour: str) -> pqlkit._dsl.Condition:  # type: ignore[name-defined]
    if behaviour == "pricing_visit":
        return did("page_viewed", where={"path": "/pricing"})
    return did(behaviour)


def test_planted_behaviours_rank_top(sim: pqlkit.Simulation) -> None:
    """In the per-signal table of a model with one signal per behaviour (and a noise
    trait), the planted drivers have the three highest lifts."""
    behaviours = [b for b in BEHAVIOURS if b not in ("login", "page_viewed")]
    signals = {b: _did(b) for b in behaviours}
    signals["ads"] = trait("signup_source") == "ads"
    model = Model("every-behaviour", signals=signals, pql=did("login"))
    rule = pqlkit.backtest(model, sim, outcome="subscription_started")["every-behaviour"].pql
    assert rule is not None
    assert rule.conversions >= 200
    ranked = sorted(rule.signals, key=lambda n: -(rule.signals[n].lift or 0.0))
    assert set(ranked[:3]) == set(DEFAULT_DRIVERS), ranked


def test_a_model_of_the_planted_signals_beats_a_decoy(sim: pqlkit.Simulation) -> None:
    """Compared on the same snapshots, a rule on the drivers has a higher precision and
    lift than one on frequent non-drivers, with intervals that exclude zero."""
    planted = Model(
        "planted",
        signals={b: _did(b) for b in DEFAULT_DRIVERS},
        scores={"points": points(**dict.fromkeys(DEFAULT_DRIVERS, 10))},
        pql=score("points") >= 20,
    )
    decoy = Model(
        "decoy",
        signals={"projects": did("project_created"), "contacts": did("contacts_imported")},
        scores={"points": points(projects=10, contacts=10)},
        pql=score("points") >= 20,
    )
    report = pqlkit.backtest(
        {"decoy": decoy, "planted": planted}, sim, outcome="subscription_started"
    )
    c = report.comparison("decoy", "planted")
    assert c.precision_diff_ci is not None
    assert c.precision_diff_ci[0] > 0
    assert c.lift_diff_ci is not None
    assert c.lift_diff_ci[0] > 0
    auc = {name: report[name].pql.scores["points"].auc for name in report}  # type: ignore[union-attr]
    assert auc["planted"] > auc["decoy"]  # type: ignore[operator]


def test_pure_noise_gets_lift_about_one_and_auc_about_half(sim: pqlkit.Simulation) -> None:
    """A rule and a score on a trait drawn at random: lift near 1 (its interval holds 1),
    AUC near 0.5."""
    noise = Model(
        "noise",
        signals={"ads": trait("signup_source") == "ads"},
        scores={
            "noise": fit(
                (trait("signup_source") == "ads", 10), (trait("signup_source") == "partner", 5)
            )
        },
        pql=signal("ads"),
    )
    rule = pqlkit.backtest(noise, sim, outcome="subscription_started")["noise"].pql
    assert rule is not None
    assert rule.lift == pytest.approx(1.0, abs=0.25)
    assert rule.lift_ci is not None
    assert rule.lift_ci[0] < 1.0 < rule.lift_ci[1]
    assert rule.scores["noise"].auc == pytest.approx(0.5, abs=0.05)
    assert rule.signals["ads"].lift == rule.lift


def test_the_same_seed_gives_the_same_history() -> None:
    """Seeded: equal arguments, equal events and conversions; another seed differs."""
    one = pqlkit.simulate(seed=7, users=100, accounts=10, days=30)
    two = pqlkit.simulate(seed=7, users=100, accounts=10, days=30)
    other = pqlkit.simulate(seed=8, users=100, accounts=10, days=30)
    assert list(one.events) == list(two.events)
    assert one.conversions == two.conversions
    assert list(one.events) != list(other.events)


def test_the_history_looks_like_a_product() -> None:
    """Accounts of varied sizes, the funnel's events, late and repeated events, and
    conversions that are each converting subject's first subscription_started."""
    sim = pqlkit.simulate(seed=3, users=2_000, accounts=200, days=120, late=0.05, duplicates=0.02)
    events = list(sim.events)
    assert 8 <= len(events) / 2_000 <= 14  # about ten events a user
    names = Counter(e["event"] for e in events)
    for name in ("login", "warehouse_connected", "dashboard_built", "teammate_invited"):
        assert names[name] > 100, name
    assert sum(1 for e in events if e["properties"].get("path") == "/pricing") > 50
    sizes = Counter(e["account_id"] for e in events if e["account_id"] is not None)
    users_per_account = Counter(
        acc for acc in {(e["user_id"], e["account_id"]) for e in events} if acc[1] is not None
    )
    assert len(sizes) > 150
    members = Counter(acc for _, acc in users_per_account)
    assert max(members.values()) >= 5 * (sum(members.values()) / len(members))  # heavy tail
    ids = Counter(e["message_id"] for e in events)
    assert 0.01 < sum(n - 1 for n in ids.values()) / len(events) < 0.03  # repeated ids
    arrivals = [e["timestamp"] for e in events]
    late = sum(1 for a, b in itertools.pairwise(arrivals) if b < a)
    assert late > 0.02 * len(events)  # out of timestamp order
    firsts: dict[str, Any] = {}
    for e in events:
        if e["event"] == "subscription_started":
            for subject in (e["user_id"], e["account_id"]):
                if subject is not None and (
                    subject not in firsts or e["timestamp"] < firsts[subject]
                ):
                    firsts[subject] = e["timestamp"]
    assert firsts == dict(sim.conversions)
    converted = sum(1 for k in sim.conversions if k.startswith("user-"))
    assert 0.03 < converted / 2_000 < 0.25
    assert sim.user_traits["user-000000"]["signup_source"] in (
        "ads",
        "organic",
        "referral",
        "partner",
    )
    assert set(sim.account_traits) == {f"acct-{i:05d}" for i in range(200)}


def test_no_drivers_plants_nothing() -> None:
    """``drivers={}``: every behaviour's lift is near what engagement alone gives it."""
    sim = pqlkit.simulate(seed=1, users=3_000, accounts=300, days=150, drivers={})
    strong = pqlkit.simulate(seed=1, users=3_000, accounts=300, days=150)
    model = Model("invites", pql=did("teammate_invited"))
    flat = pqlkit.backtest(model, sim, outcome="subscription_started")["invites"].pql
    planted = pqlkit.backtest(model, strong, outcome="subscription_started")["invites"].pql
    assert flat is not None
    assert planted is not None
    assert flat.lift is not None
    assert planted.lift is not None
    assert planted.lift > flat.lift + 1


def test_events_are_a_sequence_of_track_dicts(tmp_path: Path) -> None:
    """``events`` indexes, slices and iterates like a list of ``track()`` dicts; a
    Client records them; ``write()`` makes a file the backtest reads."""
    sim = pqlkit.simulate(seed=2, users=60, accounts=6, days=20)
    n = len(sim.events)
    assert sim.events[-1] == sim.events[n - 1]
    assert sim.events[:2] == [sim.events[0], sim.events[1]]
    with pytest.raises(IndexError):
        sim.events[n]
    assert "simulated events" in repr(sim.events)
    with pqlkit.Client(Model("m", pql=did("login")), store="memory://") as client:
        result = sim.load(client)
        assert result.stored + result.duplicates == n
        assert client.stats().users == len({e["user_id"] for e in sim.events})
    file = tmp_path / "sim.jsonl"
    sim.write(file)
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    assert sum(1 for line in lines if line["type"] == "event") == n
    assert sum(1 for line in lines if line["type"] == "traits") == 66
    model = Model("big", pql=trait("employees", of="account") >= 200)
    from_file = pqlkit.backtest(model, file, outcome="subscription_started", horizon=days(7))
    from_sim = pqlkit.backtest(model, sim, outcome="subscription_started", horizon=days(7))
    assert from_file["big"].pql == from_sim["big"].pql


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"users": 0}, "users"),
        ({"accounts": -1}, "accounts"),
        ({"days": 1.5}, "days"),
        (
            {
                "start": pqlkit.simulate(seed=0, users=1, accounts=0, days=1).start.replace(
                    tzinfo=None
                )
            },
            "start",
        ),
        ({"late": 1.0}, "late"),
        ({"duplicates": -0.1}, "duplicates"),
        ({"base_rate": "high"}, "base_rate"),
        ({"drivers": {"flying": 2.0}}, "drivers.flying"),
        ({"drivers": {"login": 0}}, "drivers.login"),
    ],
)
def test_bad_arguments_name_themselves(kwargs: dict[str, Any], field: str) -> None:
    """Each bad argument raises ValidationError naming it."""
    with pytest.raises(ValidationError) as info:
        pqlkit.simulate(**kwargs)
    assert info.value.field == field
