"""measure_play(): a play's treated subjects against its held-out ones (issue 17, holdouts)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

import pqlkit
from conftest import T0
from pqlkit import Client, Model, ValidationError, did, play
from pqlkit.stores import SQLiteStore, Store
from pqlkit.testing import FrozenClock

MODEL = Model(
    "holdout-lab",
    signals={"built": did("dashboard_built")},
    plays={
        "nudge": play(did("dashboard_built"), holdout=0.3),
        "plain": play(did("dashboard_built")),
    },
)
USERS = 1_200


def history(store: Store, treated_rate: float, held_rate: float) -> dict[str, str]:
    """USERS users fire the play on day 0; a share of each group converts on day 5 (as the
    recorded holdout flag says: the test does not re-derive the hash). Returns each user's
    group."""
    clock = FrozenClock(T0)
    groups: dict[str, str] = {}
    with Client(MODEL, store=store, clock=clock) as client:
        for n in range(USERS):
            result = client.track(f"u{n}", "dashboard_built", timestamp=T0)
            (q,) = [q for q in result.qualified if q.play == "nudge"]
            groups[q.subject_id] = "held" if q.holdout else "treated"
        counters = {"treated": 0, "held": 0}
        for user, group in groups.items():
            counters[group] += 1
            share = treated_rate if group == "treated" else held_rate
            # every k-th member of the group converts: the rate exactly, no randomness
            if counters[group] % round(1 / share) == 0:
                client.track(user, "subscribed", timestamp=T0 + timedelta(days=5))
    return groups


def test_a_play_that_works_shows_a_difference_with_an_interval_above_zero(
    tmp_path: Path,
) -> None:
    """Treated convert at 1 in 4, held-out at 1 in 10: the figures, and an interval above 0."""
    store = SQLiteStore(tmp_path / "pql.db")
    groups = history(store, 1 / 4, 1 / 10)
    store.close()
    url = f"sqlite:///{tmp_path / 'pql.db'}"
    report = pqlkit.measure_play(
        MODEL, "nudge", url, outcome="subscribed", end=T0 + timedelta(days=60)
    )
    treated = sum(g == "treated" for g in groups.values())
    held = USERS - treated
    assert (report.treated, report.held_out) == (treated, held)
    assert 0.25 < held / USERS < 0.35  # the 30% holdout
    assert report.treated_converted == treated // 4
    assert report.held_out_converted == held // 10
    assert report.difference == pytest.approx(treated // 4 / treated - held // 10 / held)
    assert report.difference_ci is not None
    low, high = report.difference_ci
    assert 0 < low < report.difference < high
    assert report.lift == pytest.approx((treated // 4 / treated) / (held // 10 / held))
    assert report.to_dict()["treated"] == treated
    assert "difference +" in str(report)


def test_a_play_without_effect_has_an_interval_around_zero() -> None:
    """The same rate in both groups: the interval includes 0."""
    store = pqlkit.MemoryStore()
    history(store, 1 / 5, 1 / 5)
    report = pqlkit.measure_play(
        MODEL, "nudge", store, outcome="subscribed", end=T0 + timedelta(days=60)
    )
    assert report.difference_ci is not None
    low, high = report.difference_ci
    assert low < 0 < high


def test_given_conversions_and_the_horizon() -> None:
    """Conversions from a mapping; one after the horizon does not count; subjects whose
    horizon runs past the data's end are left out."""
    store = pqlkit.MemoryStore()
    groups = history(store, 1 / 4, 1 / 10)
    treated = sorted(u for u, g in groups.items() if g == "treated")
    conversions = {treated[0]: T0 + timedelta(days=3), treated[1]: T0 + timedelta(days=40)}
    report = pqlkit.measure_play(
        MODEL,
        "nudge",
        store,
        outcome=conversions,
        horizon=timedelta(days=30),
        end=T0 + timedelta(days=60),
    )
    assert (report.treated_converted, report.held_out_converted) == (1, 0)
    early = pqlkit.measure_play(
        MODEL, "nudge", store, outcome=conversions, end=T0 + timedelta(days=10)
    )
    assert (early.treated, early.held_out) == (0, 0)  # nobody's 30 days are over yet
    assert early.difference is None
    assert early.warnings


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"play": "nope"}, "play"),
        ({"play": "plain"}, "play"),  # holds nobody out
        ({"horizon": timedelta(0)}, "horizon"),
        ({"outcome": did("subscribed")}, "outcome"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {
        "play": "nudge",
        "store": pqlkit.MemoryStore(),
        "outcome": "subscribed",
        **kwargs,
    }
    model_play = arguments.pop("play")
    store = arguments.pop("store")
    with pytest.raises(ValidationError) as caught:
        pqlkit.measure_play(MODEL, model_play, store, **arguments)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_a_missing_store_is_not_created(tmp_path: Path) -> None:
    """A store URL that names nothing is an error, and nothing is created (read-only)."""
    path = tmp_path / "missing.db"
    with pytest.raises(pqlkit.StoreError, match="read-only"):
        pqlkit.measure_play(MODEL, "nudge", f"sqlite:///{path}", outcome="subscribed")
    assert not path.exists()
