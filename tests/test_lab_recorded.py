"""Issue 16: a store's recorded qualifications (a live model's, a shadow's) as a backtest."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import pqlkit
from pqlkit import Client, Model, ValidationError, days, did
from pqlkit._lab.source import Recorded
from pqlkit.cli import main
from pqlkit.stores._base import QualificationRecord

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
FIELDS = (
    "eligible",
    "flagged",
    "positives",
    "true_positives",
    "precision",
    "recall",
    "lift",
    "precision_ci",
    "lift_ci",
    "qualified",
    "converted",
    "lead_time_median",
    "time_to_qualify_median",
)

live = Model(
    "live",
    signals={"connected": did("warehouse_connected"), "built": did("dashboard_built")},
    pql=did("warehouse_connected") & did("dashboard_built"),
    pqa=did("project_created"),
)
candidate = Model("candidate", pql=did("teammate_invited"))


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store where ``live`` ran with ``candidate`` shadowing it."""
    sim = pqlkit.simulate(seed=5, users=500, accounts=50, days=150, late=0.0, duplicates=0.0)
    url = f"sqlite:///{tmp_path_factory.mktemp('shadow') / 'app.db'}"
    with Client(live, url, shadows=[candidate]) as client:
        sim.load(client)
    return url


def digest(url: str) -> str:
    return hashlib.sha256(Path(url.removeprefix("sqlite:///")).read_bytes()).hexdigest()


def test_recorded_flags_of_monotone_rules_equal_the_replay(shadowed: str) -> None:
    """Rules that never turn false once true: what the live client and its shadow
    recorded flags exactly whom the replay flags, at every snapshot."""
    models = {"live": live, "candidate": candidate}
    before = digest(shadowed)
    replayed = pqlkit.backtest(models, shadowed, outcome="subscription_started")
    recorded = pqlkit.backtest(models, shadowed, outcome="subscription_started", recorded=True)
    assert digest(shadowed) == before  # only read
    for name in models:
        assert recorded[name].recorded
        assert not replayed[name].recorded
        for kind in ("pql", "pqa"):
            a, b = getattr(replayed[name], kind), getattr(recorded[name], kind)
            if a is None:
                assert b is None
                continue
            assert b is not None
            assert a.flagged > 0
            for field in FIELDS:
                assert getattr(b, field) == getattr(a, field), (name, kind, field)
            assert b.signals == a.signals  # signals are replayed either way
    (cmp_replayed,) = replayed.comparisons
    (cmp_recorded,) = recorded.comparisons
    assert cmp_recorded == cmp_replayed
    assert "(as recorded)" in recorded.table()
    assert recorded.to_dict()["models"]["candidate"]["recorded"] is True


def test_flags_are_the_stores_not_the_given_definitions(tmp_path: Path) -> None:
    """Read as recorded, a model is judged on what the store recorded under its name,
    whatever the definition given; the report says the definitions differ."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    ran = Model("m", pql=did("a"))
    with Client(ran, url) as client:
        for i in range(40):
            at = T0 + timedelta(hours=7 * i)
            client.track(f"u{i}", "seen", timestamp=at)
            if i % 2:
                client.track(f"u{i}", "a", timestamp=at + timedelta(hours=1))
            if i % 4 == 1:
                client.track(f"u{i}", "buy", timestamp=at + timedelta(days=3))
    options: dict[str, Any] = {
        "outcome": "buy",
        "step": days(1),
        "horizon": days(5),
        "lookback": days(30),
    }
    given = Model("m", pql=did("b"))  # nobody did "b"
    assert pqlkit.backtest(given, url, **options)["m"].pql.flagged == 0  # type: ignore[union-attr]
    as_ran = pqlkit.backtest(ran, url, **options)
    as_recorded = pqlkit.backtest(given, url, recorded=True, **options)
    ran_pql, rec_pql = as_ran["m"].pql, as_recorded["m"].pql
    assert ran_pql is not None
    assert rec_pql is not None
    assert rec_pql.flagged == ran_pql.flagged > 0
    assert rec_pql.true_positives == ran_pql.true_positives > 0
    assert any("another definition" in w for w in as_recorded.warnings)
    assert not any("another definition" in w for w in as_ran.warnings)


def test_recorded_for_some_models_only(shadowed: str) -> None:
    """``recorded=[names]`` reads those from the store and replays the rest."""
    models = {"live": live, "candidate": candidate}
    report = pqlkit.backtest(
        models, shadowed, outcome="subscription_started", recorded=["candidate"]
    )
    assert report["candidate"].recorded
    assert not report["live"].recorded


def test_a_model_never_run_on_the_store_is_warned_about(shadowed: str) -> None:
    other = Model("never-ran", pql=did("teammate_invited"))
    report = pqlkit.backtest(other, shadowed, outcome="subscription_started", recorded=True)
    assert report["never-ran"].pql.flagged == 0  # type: ignore[union-attr]
    expected = "records no pql or pqa qualification of model 'never-ran'"
    assert any(expected in w for w in report.warnings)


def record(kind: str, sid: str, rnd: int, at: int, until: int | None) -> QualificationRecord:
    def when(day: int) -> datetime:
        return T0 + timedelta(days=day)

    return QualificationRecord(
        id=f"{sid}-{rnd}",
        model="m",
        kind=kind,
        subject_id=sid,
        round=rnd,
        fingerprint="f",
        qualified_at=when(at),
        first_seen=when(0),
        disqualified_at=None if until is None else when(until),
    )


def test_a_subject_is_flagged_between_qualifying_and_being_disqualified() -> None:
    found = Recorded(
        "m",
        [
            record("pql", "u1", 1, 10, None),  # out of order: sorted by time
            record("pql", "u1", 0, 2, 5),
            record("pqa", "a1", 0, 3, None),
            record("play:nudge", "u2", 0, 1, None),  # plays are not read
        ],
    )

    def us(day: float) -> int:
        return int((T0 + timedelta(days=day)).timestamp() * 1_000_000)

    assert [found.holds("user", "u1", us(d)) for d in (1, 2, 4.9, 5, 9, 10, 30)] == [
        False,
        True,
        True,
        False,
        False,
        True,
        True,
    ]
    assert found.first("user", "u1") == us(2)
    assert found.holds("account", "a1", us(3))
    assert not found.holds("account", "a1", us(2))
    assert not found.holds("user", "u2", us(5))
    assert found.first("user", "u2") is None
    assert found.count == 3
    assert found.fingerprints == {"f": 3}


@pytest.mark.parametrize(
    ("recorded", "reason"),
    [
        ("live", "collection of model names"),
        (5, "collection of model names"),
        (["nope"], "'nope' is none of the models given"),
    ],
)
def test_bad_recorded(shadowed: str, recorded: Any, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        pqlkit.backtest(live, shadowed, outcome="subscription_started", recorded=recorded)
    assert caught.value.field == "recorded"
    assert reason in caught.value.reason


def test_recorded_needs_a_store() -> None:
    sim = pqlkit.simulate(seed=1, users=50, accounts=5, days=60)
    with pytest.raises(ValidationError) as caught:
        pqlkit.backtest(live, sim.events, outcome="subscription_started", recorded=True)
    assert caught.value.field == "recorded"
    assert "give the store" in caught.value.reason


def test_the_cli_reads_recorded_qualifications(shadowed: str, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "compare",
            "tests.test_lab_recorded:live",
            "tests.test_lab_recorded:candidate",
            "--events",
            shadowed,
            "--outcome",
            "subscription_started",
            "--recorded",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["models"]["live"]["recorded"] is True
    assert data["models"]["candidate"]["recorded"] is True
    expected = pqlkit.backtest(
        {"live": live, "candidate": candidate},
        shadowed,
        outcome="subscription_started",
        recorded=True,
    )
    assert data["models"]["candidate"]["pql"]["flagged"] == expected["candidate"].pql.flagged  # type: ignore[union-attr]
    table = runner.invoke(
        main,
        [
            "backtest",
            "tests.test_lab_recorded:candidate",
            "--events",
            shadowed,
            "--outcome",
            "subscription_started",
            "--recorded",
        ],
    )
    assert table.exit_code == 0, table.output
    assert "candidate (as recorded) -- pql" in table.stdout
