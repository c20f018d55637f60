"""``pqlkit.calibrate``: weights fitted on the earlier history, checked on the later."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

import pqlkit
from pqlkit import Model, ValidationError, days, did, points, score
from pqlkit._lab.calibration import fit_logistic

PLANTED = {"teammate_invited": 8.0, "pricing_visit": 4.0, "dashboard_built": 2.0}
SIGNALS = {
    "dashboard": did("dashboard_built"),
    "invited": did("teammate_invited"),
    "pricing": did("page_viewed", where={"path": "/pricing"}),
    # decoys: behaviours that planted nothing
    "api_key": did("api_key_generated"),
    "projects": did("project_created"),
    "warehouse": did("warehouse_connected"),
}
MODEL = Model(
    "teams",
    signals=SIGNALS,
    scores={"behavior": points(**dict.fromkeys(SIGNALS, 10))},
    pql=score("behavior") >= 30,
)


@pytest.fixture(name="sim", scope="module")
def fixture_sim() -> pqlkit.Simulation:
    return pqlkit.simulate(seed=3, users=4_000, accounts=400, days=240, drivers=PLANTED)


@pytest.fixture(name="calibration", scope="module")
def fixture_calibration(sim: pqlkit.Simulation) -> pqlkit.Calibration:
    return pqlkit.calibrate(MODEL, sim, outcome="subscription_started")


def test_calibration_recovers_the_planted_behaviours_order(
    calibration: pqlkit.Calibration,
) -> None:
    p = calibration.points
    assert p["invited"] == 50  # the strongest driver gets the most points
    assert p["invited"] > p["pricing"] > p["dashboard"]
    decoys = max(p.get(name, 0) for name in ("api_key", "projects", "warehouse"))
    assert p["dashboard"] > decoys
    w = calibration.weights
    assert (
        w["invited"]
        > w["pricing"]
        > w["dashboard"]
        > max(w["api_key"], w["projects"], w["warehouse"])
    )


def test_the_suggested_model_beats_the_original_on_held_out_snapshots(
    calibration: pqlkit.Calibration,
) -> None:
    report = calibration.report
    assert list(report.models) == ["original", "suggested"]
    assert report.start == calibration.cutoff
    assert min(report.snapshots) > calibration.cutoff  # judged only after the cutoff
    comparison = report.comparison("original", "suggested")
    assert comparison.lift_diff_ci is not None
    assert comparison.lift_diff_ci[0] > 0  # better lift, and not by chance
    assert report["suggested"].model == "teams-calibrated"
    assert repr(calibration.model.pql) == repr(score("calibrated") >= calibration.threshold)


def test_the_fit_never_sees_the_held_out_conversions(sim: pqlkit.Simulation) -> None:
    """Conversions after the cutoff (the held-out period) change nothing in the fit."""
    one = pqlkit.calibrate(MODEL, sim, outcome=dict(sim.conversions))
    before = {k: v for k, v in sim.conversions.items() if v <= one.cutoff}
    two = pqlkit.calibrate(MODEL, sim, outcome=before)
    assert two.cutoff == one.cutoff
    assert two.weights == one.weights
    assert two.points == one.points
    assert two.threshold == one.threshold
    assert two.sweep == one.sweep
    # ... but conversions before the cutoff do: the fit learns from them
    earlier = {k: v for k, v in sim.conversions.items() if v <= one.cutoff - days(40)}
    assert pqlkit.calibrate(MODEL, sim, outcome=earlier).weights != one.weights


def test_the_threshold_meets_the_target_rate(calibration: pqlkit.Calibration) -> None:
    sweep = calibration.sweep
    thresholds = [row.threshold for row in sweep]
    assert thresholds == sorted(thresholds, reverse=True)
    chosen = thresholds.index(calibration.threshold)
    assert sweep[chosen].flag_rate <= 0.10 < sweep[chosen + 1].flag_rate
    assert calibration.target_rate == 0.10


def test_a_capacity_picks_the_threshold_by_weekly_volume(sim: pqlkit.Simulation) -> None:
    c = pqlkit.calibrate(MODEL, sim, outcome="subscription_started", capacity_per_week=20)
    chosen = [row.threshold for row in c.sweep].index(c.threshold)
    assert c.sweep[chosen].flagged_per_week <= 20 < c.sweep[chosen + 1].flagged_per_week
    assert (c.capacity_per_week, c.target_rate) == (20, None)


def test_the_sweep_figures_follow_from_their_counts(calibration: pqlkit.Calibration) -> None:
    for row in calibration.sweep:
        if row.precision is not None and row.lift is not None:
            rest_rate = row.precision / row.lift
            assert rest_rate < row.precision or row.lift <= 1
        assert 0 < row.flag_rate <= 1
    last = calibration.sweep[-1]
    assert (last.flag_rate, last.recall) == (1.0, 1.0)  # the lowest threshold flags everyone


def test_as_code_is_the_suggested_score_and_rule(calibration: pqlkit.Calibration) -> None:
    code = calibration.as_code()
    namespace: dict[str, Any] = {"points": points, "score": score}
    kwargs = eval(f"dict({code})", namespace)  # what a user pastes into Model(...)
    assert repr(kwargs["scores"]["calibrated"]) == repr(calibration.model.scores["calibrated"])
    assert repr(kwargs["pql"]) == repr(calibration.model.pql)
    assert "invited=50" in code
    pasted = Model("teams", signals=SIGNALS, **kwargs)
    assert repr(pasted.scores["calibrated"]) == repr(points(**calibration.points))


def test_the_table_and_the_json(calibration: pqlkit.Calibration) -> None:
    text = calibration.table()
    assert "Paste into the model:" in text
    assert f'pql=score("calibrated") >= {calibration.threshold},' in text
    assert "<- suggested" in text
    assert calibration.report.table() in text
    data = calibration.to_dict()
    assert data["points"] == dict(calibration.points)
    assert data["code"] == calibration.as_code()
    assert data["report"] == calibration.report.to_dict()
    assert len(data["sweep"]) == len(calibration.sweep)


def test_fit_logistic_recovers_known_weights() -> None:
    """Counts made exactly from known log-odds give those log-odds back (no penalty)."""
    truth = (-3.0, [1.5, 0.7, -0.4])
    rows = []
    for bits in range(8):
        x = [float(bits >> i & 1) for i in range(3)]
        z = truth[0] + sum(w * v for w, v in zip(truth[1], x, strict=True))
        n = 100_000
        rows.append((x, n, round(n / (1 + math.exp(-z)))))
    intercept, weights = fit_logistic(rows, 0.0)
    assert intercept == pytest.approx(truth[0], abs=0.01)
    assert weights == pytest.approx(truth[1], abs=0.01)
    # the penalty shrinks the weights toward 0
    _, shrunk = fit_logistic(rows, 100_000.0)
    assert all(abs(s) < abs(w) for s, w in zip(shrunk, weights, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target_rate": 0.1, "capacity_per_week": 5}, "target_rate"),
        ({"target_rate": 1.5}, "target_rate"),
        ({"target_rate": True}, "target_rate"),
        ({"capacity_per_week": 0}, "capacity_per_week"),
        ({"split": 1.0}, "split"),
        ({"l2": -1}, "l2"),
        ({"horizon": timedelta(0)}, "horizon"),
        ({"outcome": 42}, "outcome"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], field: str) -> None:
    sim = pqlkit.simulate(seed=1, users=50, accounts=5, days=60)
    args: dict[str, Any] = {"outcome": "subscription_started", **kwargs}
    with pytest.raises(ValidationError) as caught:
        pqlkit.calibrate(MODEL, sim, **args)
    assert caught.value.field == field


def test_a_model_without_signals_or_a_short_history_is_refused() -> None:
    sim = pqlkit.simulate(seed=1, users=50, accounts=5, days=60)
    with pytest.raises(ValidationError, match="no signals") as caught:
        pqlkit.calibrate(Model("bare", pql=did("login")), sim, outcome="subscription_started")
    assert caught.value.field == "model"
    with pytest.raises(ValidationError, match="too short") as caught:
        pqlkit.calibrate(MODEL, sim, outcome="subscription_started", horizon=days(25))
    assert caught.value.field == "events"


def test_the_crm_example_calibrates_a_better_model(capsys: pytest.CaptureFixture[str]) -> None:
    """``examples/calibrate.py``: export, CRM CSV, calibrate for a capacity; held-out better."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "calibrate.py"
    spec = importlib.util.spec_from_file_location("calibrate_example", path)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main()
    out = capsys.readouterr().out
    assert 'scores={"calibrated": points(invited=50, ' in out
    assert 'pql=score("calibrated") >= ' in out
    assert "On the held-out months: precision 4.1% -> 21.0% (+16.9%, 95% interval +12.6%" in out


def test_an_account_model_is_calibrated_on_accounts(sim: pqlkit.Simulation) -> None:
    accounts = Model("accounts", signals=SIGNALS, pqa=did("teammate_invited"))
    c = pqlkit.calibrate(accounts, sim, outcome="subscription_started", target_rate=0.15)
    assert c.kind == "pqa"
    assert c.model.pql is None
    assert repr(c.model.pqa) == repr(score("calibrated") >= c.threshold)
    assert c.report["suggested"].pqa is not None
    assert c.as_code().splitlines()[-1] == f'pqa=score("calibrated") >= {c.threshold},'
    assert "snapshots of accounts" in c.as_code()
    assert str(c) == c.table()


def test_signal_names_that_are_not_identifiers_are_pasted_as_a_dict() -> None:
    sim = pqlkit.simulate(seed=3, users=1_500, accounts=150, days=200, drivers=PLANTED)
    model = Model(
        "odd",
        signals={"invited-a-teammate": did("teammate_invited"), "pricing": SIGNALS["pricing"]},
        pql=did("teammate_invited"),
    )
    c = pqlkit.calibrate(model, sim, outcome="subscription_started")
    code = c.as_code()
    assert 'points(**{"invited-a-teammate": 50' in code.replace("'", '"')
    kwargs = eval(f"dict({code})", {"points": points, "score": score})
    assert repr(kwargs["scores"]["calibrated"]) == repr(c.model.scores["calibrated"])


def test_no_conversion_to_learn_from_is_refused() -> None:
    sim = pqlkit.simulate(seed=1, users=200, accounts=20, days=150)
    with pytest.raises(ValidationError, match="nothing to fit") as caught:
        pqlkit.calibrate(MODEL, sim, outcome="no_such_event")
    assert caught.value.field == "outcome"
    with pytest.raises(ValidationError) as caught:
        pqlkit.calibrate("teams", sim, outcome="subscription_started")  # type: ignore[arg-type]
    assert caught.value.field == "model"


def test_a_capacity_below_the_smallest_volume_takes_the_highest_threshold(
    calibration: pqlkit.Calibration, sim: pqlkit.Simulation
) -> None:
    c = pqlkit.calibrate(MODEL, sim, outcome="subscription_started", capacity_per_week=0.01)
    assert c.threshold == c.sweep[0].threshold == max(row.threshold for row in c.sweep)
    assert c.sweep[0].flagged_per_week > 0.01
