"""pqlkit.backtest: the figures' definitions on a history small enough to count by hand,
every kind of source and outcome, comparisons, warnings, bad input, and the report's forms.

The history (days from Monday 2025-01-06, UTC): five users sign up on day 0; u1
generates a key on day 1 and pays on day 10, u2 pays on day 12 without a key, u3
generates a key on day 2 and never pays, u4 and u6 do nothing more; u5 shows up on
day 60, which ends the history. The rule is ``did("key")``. With step 7 days and
horizon 14, the snapshots are days 7, 14, ..., 42 (t + 14 <= 60):

- day 7: u1, u2, u3, u4, u6 eligible; u1, u3 flagged; u1 (day 10) and u2 (day 12)
  convert within 14 days: positives 2, true positives 1.
- days 14 to 42 (5 snapshots): u1 and u2 converted already; u3, u4, u6 eligible, u3
  flagged, nobody converts.

So eligible 20, flagged 7, positives 2, true positives 1: precision 1/7, recall 1/2,
flag rate 7/20, unflagged conversion 1/13, lift 13/7.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import pqlkit
from pqlkit import (
    Event,
    Model,
    ValidationError,
    count,
    days,
    did,
    points,
    score,
    signal,
    trait,
)

D0 = datetime(2025, 1, 6, tzinfo=timezone.utc)  # a Monday: the snapshots fall on Mondays
STEP = days(7)
HORIZON = days(14)

RULE = Model("keys", signals={"key": did("key")}, scores={"s": points(key=10)}, pql=did("key"))


def _history() -> list[dict[str, Any]]:
    def ev(user: str, name: str, day: float) -> dict[str, Any]:
        return {"user_id": user, "event": name, "timestamp": D0 + timedelta(days=day)}

    return [
        *(ev(u, "signup", 0) for u in ("u1", "u2", "u3", "u4", "u6")),
        ev("u1", "key", 1),
        ev("u3", "key", 2),
        ev("u1", "paid", 10),
        ev("u2", "paid", 12),
        ev("u5", "signup", 60),
    ]


def _run(events: object = None, model: Model | dict[str, Model] = RULE, **kw: Any) -> pqlkit.Report:
    kw.setdefault("outcome", "paid")
    kw.setdefault("horizon", HORIZON)
    kw.setdefault("step", STEP)
    return pqlkit.backtest(model, _history() if events is None else events, **kw)


def _counts(report: pqlkit.Report, name: str = "keys") -> tuple[int, int, int, int]:
    rule = report[name].pql
    assert rule is not None
    return rule.eligible, rule.flagged, rule.positives, rule.true_positives


def test_figures_follow_their_definitions() -> None:
    """Counts of (subject, snapshot) pairs and the ratios made of them, as counted by hand."""
    report = _run()
    rule = report["keys"].pql
    assert rule is not None
    assert report["keys"].pqa is None  # the model has no pqa rule
    assert [s - D0 for s in report.snapshots] == [days(d) for d in (7, 14, 21, 28, 35, 42)]
    assert _counts(report) == (20, 7, 2, 1)
    assert (rule.subjects, rule.conversions) == (5, 2)
    assert rule.precision == pytest.approx(1 / 7)
    assert rule.recall == pytest.approx(1 / 2)
    assert rule.flag_rate == pytest.approx(7 / 20)
    assert rule.unflagged_rate == pytest.approx(1 / 13)
    assert rule.lift == pytest.approx(13 / 7)
    assert rule.healthy is False  # 35% is outside 5-15%
    first = rule.weeks[0]
    assert (first.at, first.eligible, first.flagged, first.positives, first.true_positives) == (
        D0 + days(7),
        5,
        2,
        2,
        1,
    )
    assert [w.eligible for w in rule.weeks[1:]] == [3] * 5
    assert rule.flagged_per_week == 1.0  # median of 2, 1, 1, 1, 1, 1


def test_signal_and_score_figures() -> None:
    """A signal's lift compares conversion when it holds and when not; a score's AUC is
    the chance a converting observation outranks another (ties half)."""
    rule = _run()["keys"].pql
    assert rule is not None
    key = rule.signals["key"]
    assert key.holds == 7
    assert key.holds_rate == pytest.approx(7 / 20)
    assert key.rate_when_true == pytest.approx(1 / 7)
    assert key.rate_when_false == pytest.approx(1 / 13)
    assert key.lift == pytest.approx(13 / 7)
    s = rule.scores["s"]
    # positives score 10 (u1) and 0 (u2); negatives: six at 10, twelve at 0
    assert s.auc == pytest.approx((12 + 0.5 * 6 + 0.5 * 12) / (2 * 18))
    assert s.top10 == pytest.approx(0.5 * 2 / 7)  # 2 of 20 taken from the seven tied at 10
    assert s.probability is False
    assert s.brier is None
    assert s.reliability is None
    assert sum(d.count for d in s.deciles) == pytest.approx(20)


def test_event_level_figures() -> None:
    """Qualification (the first time the rule held) against conversion, per subject."""
    rule = _run()["keys"].pql
    assert rule is not None
    assert rule.qualified == 2  # u1 (day 1), u3 (day 2)
    assert rule.converted == 2  # u1, u2
    assert rule.converted_after_qualifying == 1  # u1: 9 days before paying
    assert rule.converted_after_qualifying_share == 0.5
    assert rule.lead_time_median == days(9)
    assert rule.lead_time_p90 == days(9)
    assert rule.time_to_qualify_median == days(1.5)


def test_intervals_are_reproducible_and_contain_the_estimate() -> None:
    """Bootstrap intervals come from a fixed seed: the same history, the same intervals."""
    sim = pqlkit.simulate(seed=2, users=600, accounts=60, days=120)
    model = Model("invites", pql=did("teammate_invited"))
    one = pqlkit.backtest(model, sim, outcome="subscription_started")["invites"].pql
    two = pqlkit.backtest(model, sim, outcome="subscription_started")["invites"].pql
    assert one is not None
    assert two is not None
    assert one.lift_ci == two.lift_ci
    for value, ci in (
        (one.precision, one.precision_ci),
        (one.recall, one.recall_ci),
        (one.lift, one.lift_ci),
    ):
        assert value is not None
        assert ci is not None
        assert ci[0] < value < ci[1]


# -- sources ---------------------------------------------------------------------------


def _events_objects() -> list[Event]:
    return [Event(e["user_id"], e["event"], timestamp=e["timestamp"]) for e in _history()]


def _jsonl(path: Path) -> Path:
    file = path / "events.jsonl"
    with open(file, "w") as out:
        for e in _history():
            out.write(json.dumps({**e, "timestamp": e["timestamp"].isoformat()}) + "\n\n")
    return file


def _sqlite(path: Path) -> Path:
    file = path / "app.db"
    with pqlkit.Client(RULE, store=f"sqlite:///{file}") as client:
        client.track_many(_history())
    return file


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda tmp: _history(), id="dicts"),
        pytest.param(lambda tmp: iter(_history()), id="iterator"),
        pytest.param(lambda tmp: _events_objects(), id="Events"),
        pytest.param(_jsonl, id="jsonl-path"),
        pytest.param(lambda tmp: str(_jsonl(tmp)), id="jsonl-str"),
        pytest.param(lambda tmp: f"sqlite:///{_sqlite(tmp)}", id="sqlite-url"),
    ],
)
def test_every_source_gives_the_same_figures(
    make: Callable[[Path], object], tmp_path: Path
) -> None:
    """A list, an iterator, Events, a JSON Lines file and a store URL are the same history."""
    assert _counts(_run(make(tmp_path))) == (20, 7, 2, 1)


def test_a_store_is_read_not_changed(tmp_path: Path) -> None:
    """A store URL is opened read-only: the file is byte for byte the same afterwards,
    and a Store instance is read as it is (and left open)."""
    file = _sqlite(tmp_path)
    before = hashlib.sha256(file.read_bytes()).hexdigest()
    assert _counts(_run(f"sqlite:///{file}")) == (20, 7, 2, 1)
    assert hashlib.sha256(file.read_bytes()).hexdigest() == before
    wal = file.with_name(file.name + "-wal")  # a reader of a WAL file may leave it, empty
    assert not wal.exists() or wal.stat().st_size == 0
    store = pqlkit.MemoryStore()
    with pqlkit.Client(RULE, store=store) as client:
        client.track_many(_history())
    assert _counts(_run(store)) == (20, 7, 2, 1)
    with store.transaction() as tx:  # still open, still holding every event
        assert len(list(tx.events())) == len(_history())


def test_a_missing_store_is_never_created(tmp_path: Path) -> None:
    """A URL naming no store is an error naming ``events``; nothing is created."""
    missing = tmp_path / "nope.db"
    with pytest.raises(ValidationError) as info:
        _run(f"sqlite:///{missing}")
    assert info.value.field == "events"
    assert not missing.exists()
    with pytest.raises(ValidationError, match="events"):
        _run("memory://")


def test_a_file_that_is_no_pqlkit_store_is_refused(tmp_path: Path) -> None:
    """An SQLite file without pqlkit's tables is refused, unchanged."""
    import sqlite3

    file = tmp_path / "other.db"
    with sqlite3.connect(file) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    before = file.read_bytes()
    with pytest.raises(ValidationError, match="not a pqlkit store"):
        _run(f"sqlite:///{file}")
    assert file.read_bytes() == before


def test_a_store_is_read_a_page_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events come from a store in pages (here of 3 events), all of them, in order."""
    import pqlkit._lab.source as source

    monkeypatch.setattr(source, "_PAGE", 3)
    store = pqlkit.MemoryStore()
    with pqlkit.Client(RULE, store=store) as client:
        client.track_many(_history())
    assert _counts(_run(store)) == (20, 7, 2, 1)


def test_traits_and_aliases_come_with_the_source(tmp_path: Path) -> None:
    """Traits and aliases of a store (or of ``traits``/``alias`` lines) are applied: a
    rule on a trait sees them, and an aliased id's events count for its user."""
    model = Model("big", pql=(trait("employees", of="account") >= 100) & (trait("role") == "admin"))
    events = [
        {"user_id": "anon", "event": "signup", "account_id": "acme", "timestamp": D0},
        {"user_id": "u1", "event": "paid", "timestamp": D0 + days(10)},
        {"user_id": "u9", "event": "signup", "timestamp": D0 + days(40)},
    ]
    lines: list[dict[str, Any]] = [
        *events,
        {"type": "traits", "kind": "account", "subject_id": "acme", "traits": {"employees": 500}},
        {"type": "traits", "kind": "user", "subject_id": "u1", "traits": {"role": "admin"}},
        {"type": "alias", "previous_id": "anon", "user_id": "u1"},
        {"type": "qualification"},  # a store's own records are passed over
    ]
    from_lines = pqlkit.backtest(model, lines, outcome="paid", horizon=HORIZON, step=STEP)
    file = tmp_path / "app.db"
    with pqlkit.Client(model, store=f"sqlite:///{file}") as client:
        client.track_many(events)
        client.group("acme", {"employees": 500})
        client.identify("u1", {"role": "admin"})
        client.alias("anon", "u1")
    from_store = pqlkit.backtest(
        model, f"sqlite:///{file}", outcome="paid", horizon=HORIZON, step=STEP
    )
    for report in (from_lines, from_store):
        rule = report["big"].pql
        assert rule is not None
        # u1 (as anon) is in acme, flagged at day 7 and converts at day 10
        assert (rule.flagged, rule.true_positives) == (1, 1)
        assert report.users == 2  # u1 (with anon) and u9


def test_duplicates_are_counted_once() -> None:
    """Events repeating a message_id are skipped, as a Client skips them."""
    events = _history()
    for e in events:
        e["message_id"] = f"{e['user_id']}-{e['event']}"
    report = _run([*events, *events[:3]])
    assert report.duplicates == 3
    assert _counts(report) == (20, 7, 2, 1)


# -- outcomes ----------------------------------------------------------------------------


def _csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str]) -> Path:
    file = path / "crm.csv"
    with open(file, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return file


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param(lambda tmp: "paid", id="event"),
        pytest.param(lambda tmp: did("paid"), id="condition"),
        pytest.param(lambda tmp: count("paid") >= 1, id="condition-count"),
        pytest.param(
            lambda tmp: {"u1": D0 + days(10), "u2": D0 + days(12)},
            id="mapping",
        ),
        pytest.param(
            lambda tmp: _csv(
                tmp,
                [("u1", "2025-01-16T00:00:00Z"), ("u2", "2025-01-18"), ("u2", "2025-02-01")],
                ("subject_id", "converted_at"),
            ),
            id="csv-path",
        ),
        pytest.param(
            lambda tmp: str(
                _csv(
                    tmp,
                    [("u1", "2025-01-16 00:00"), ("u2", "2025-01-18T01:00:00+01:00")],
                    ("Subject_ID", "converted_at"),
                )
            ),
            id="csv-str",
        ),
    ],
)
def test_every_outcome_gives_the_same_figures(
    outcome: Callable[[Path], object], tmp_path: Path
) -> None:
    """An event, a condition, a mapping and a CSV of the same conversions agree."""
    assert _counts(_run(outcome=outcome(tmp_path))) == (20, 7, 2, 1)


def test_a_condition_outcome_with_properties() -> None:
    """``did(event, where=...)`` converts at the first matching event only."""
    events = [
        *_history(),
        {"user_id": "u4", "event": "plan", "properties": {"to": "pro"}, "timestamp": D0 + days(11)},
        {"user_id": "u3", "event": "plan", "properties": {"to": "free"}, "timestamp": D0 + days(8)},
        {"user_id": "u4", "event": "plan", "properties": {"to": "pro"}, "timestamp": D0 + days(9)},
    ]
    report = _run(events, outcome=did("plan", where={"to": "pro"}))
    rule = report["keys"].pql
    assert rule is not None
    assert (rule.positives, rule.true_positives) == (1, 0)  # u4, not flagged


def test_given_times_name_users_or_accounts() -> None:
    """In a mapping, a key naming an account is the account's conversion, and a user's
    conversion is its account's too unless the account has its own."""
    model = Model("teams", pqa=did("key"))
    events = [
        {"user_id": "a1", "event": "key", "account_id": "acme", "timestamp": D0},
        {"user_id": "b1", "event": "signup", "account_id": "beta", "timestamp": D0},
        {"user_id": "b2", "event": "key", "account_id": "beta", "timestamp": D0},
        {"user_id": "z", "event": "signup", "timestamp": D0 + days(60)},
    ]
    given = {"acme": D0 + days(9), "a1": D0 + days(30), "b1": D0 + days(10)}
    report = pqlkit.backtest(model, events, outcome=given, horizon=HORIZON, step=STEP)
    rule = report["teams"].pqa
    assert rule is not None
    # day 7: acme converts on day 9 (its own key, not a1's day 30), beta on day 10 (b1's)
    assert (rule.eligible, rule.positives, rule.true_positives) == (2, 2, 2)


def test_account_conversion_is_its_first_users() -> None:
    """An account converts when the first of its users does (pqa is measured on accounts)."""
    model = Model("teams", pqa=did("key"))
    events = [
        {"user_id": "a1", "event": "signup", "account_id": "acme", "timestamp": D0},
        {"user_id": "a2", "event": "key", "account_id": "acme", "timestamp": D0 + days(1)},
        {"user_id": "b1", "event": "signup", "account_id": "beta", "timestamp": D0},
        {"user_id": "a1", "event": "paid", "timestamp": D0 + days(10)},  # no account_id
        {"user_id": "z", "event": "signup", "timestamp": D0 + days(60)},
    ]
    report = pqlkit.backtest(model, events, outcome="paid", horizon=HORIZON, step=STEP)
    rule = report["teams"].pqa
    assert rule is not None
    assert report["teams"].pql is None
    # day 7: acme (flagged, converts day 10) and beta; then beta alone, 5 times
    assert (rule.eligible, rule.flagged, rule.positives, rule.true_positives) == (7, 1, 1, 1)


# -- comparisons -----------------------------------------------------------------------


def test_models_are_compared_on_the_same_snapshots() -> None:
    """Two models: each measured as alone, their differences, and who each flags alone."""
    signup = Model("signup", pql=did("signup"))
    report = _run(model={"keys": RULE, "signup": signup})
    assert list(report) == ["keys", "signup"]
    keys, every = report["keys"].pql, report["signup"].pql
    assert keys is not None
    assert every is not None
    assert _counts(report, "keys") == (20, 7, 2, 1)
    assert (every.eligible, every.flagged, every.true_positives) == (20, 20, 2)
    c = report.comparison("keys", "signup")
    assert c.precision_diff == pytest.approx(2 / 20 - 1 / 7)
    assert c.recall_diff == pytest.approx(1.0 - 0.5)
    assert c.lift_diff is None  # signup flags everyone: no unflagged rate, no lift
    assert (c.only_a, c.only_b) == (0, 3)  # u2, u4, u6 are flagged by signup alone
    assert c.only_b_sample == ("u2", "u4", "u6")
    assert c.only_b_pairs == 13
    with pytest.raises(KeyError):
        report.comparison("signup", "keys", "pqa")


# -- warnings ------------------------------------------------------------------------------


def _warned(report: pqlkit.Report, *words: str) -> bool:
    return any(all(w in warning for w in words) for warning in report.warnings)


def test_warnings_are_never_silent() -> None:
    """Few conversions, an outcome never seen, a window longer than the history, a
    horizon past the data's end, a flag rate outside 5-15%: each is a warning."""
    report = _run()
    assert _warned(report, "only 2 users converted")
    assert _warned(report, "35.0%", "outside")
    assert not _warned(report, "never occurs")
    assert _warned(_run(outcome="purchase"), "'purchase' never occurs")
    long = Model("long", pql=did("key", within=days(120)))
    assert _warned(_run(model=long), "within=120 days", "longer than the replayed history")
    idle = Model("idle", pql=pqlkit.idle() >= days(100))
    assert _warned(_run(model=idle), "100 days in pql", "longer than the replayed history")
    assert _warned(_run(end=D0 + days(90)), "after the last event")
    assert _warned(_run(horizon=days(80)), "no snapshot fits")
    assert _warned(_run(outcome={"nobody": D0}), "none of the outcome's subjects")
    assert _warned(_run(outcome={"u1": D0 + days(10), "x": D0}), "1 of the outcome's 2")


def test_trait_models_warn_of_leakage() -> None:
    """A model reading traits is told the traits are today's, not the snapshot's."""
    model = Model("fit", pql=trait("plan") == "pro")
    lines: list[dict[str, Any]] = [
        *_history(),
        {"type": "traits", "kind": "user", "subject_id": "u1", "traits": {"plan": "pro"}},
    ]
    report = _run(lines, model=model)
    assert _warned(report, "'fit' read traits", "leaks the outcome")
    assert not _warned(_run(), "read traits")


def test_events_after_end_are_not_replayed() -> None:
    """``end`` cuts the history: later events are not replayed (nor counted as users seen
    in the figures), and the snapshots stop a horizon before it."""
    report = _run(end=D0 + days(40))
    assert [s - D0 for s in report.snapshots] == [days(d) for d in (7, 14, 21)]
    rule = report["keys"].pql
    assert rule is not None
    assert (rule.eligible, rule.flagged) == (5 + 3 + 3, 2 + 1 + 1)
    assert rule.qualified == 2


def test_a_rule_true_by_time_alone_qualifies_at_a_snapshot() -> None:
    """A rule that time alone turns true (here ``idle() >= 10 days``) qualifies a subject
    at the first snapshot where it holds, as a weekly sweep would fire it."""
    idle = Model("idle", pql=pqlkit.idle() >= days(10))
    rule = _run(model=idle)["idle"].pql
    assert rule is not None
    # u3, u4, u6 (last events on days 2, 0, 0) are idle 10 days at the day-14 snapshot
    assert rule.qualified == 3
    assert rule.time_to_qualify_median == days(14)


def test_models_without_the_same_rules() -> None:
    """A model without a pql is not measured on users (and not compared on them)."""
    teams = Model("teams", pqa=did("key"))
    report = _run(model={"keys": RULE, "teams": teams})
    assert report["teams"].pql is None
    assert _counts(report) == (20, 7, 2, 1)
    assert report.comparisons == ()


def test_late_events_are_counted_and_warned() -> None:
    """An event more than a step late counts from its arrival, and says so."""
    events = [*_history(), {"user_id": "u4", "event": "key", "timestamp": D0 + days(3)}]
    report = _run(events)
    assert report.late == 1
    assert _warned(report, "1 events arrived")


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model": "keys"}, "models"),
        ({"model": {}}, "models"),
        ({"model": {"a": "not a model"}}, "models['a']"),
        ({"model": Model("empty", signals={"k": did("key")})}, "models"),
        ({"outcome": 42}, "outcome"),
        ({"outcome": ""}, "outcome"),
        ({"outcome": count("paid")}, "outcome"),
        ({"outcome": signal("nope")}, "outcome"),
        ({"outcome": {"u1": datetime(2025, 1, 16)}}, "outcome['u1']"),
        ({"outcome": "missing.csv"}, "outcome"),
        ({"horizon": timedelta(0)}, "horizon"),
        ({"horizon": 30}, "horizon"),
        ({"step": -days(1)}, "step"),
        ({"lookback": timedelta(0)}, "lookback"),
        ({"start": D0 + days(10), "end": D0 + days(5)}, "start"),
        ({"start": datetime(2025, 1, 1)}, "start"),
        ({"events": 42}, "events"),
        ({"events": "no-such-file.jsonl"}, "events"),
        ({"events": []}, "events"),
        ({"events": [{"user_id": "u", "event": "x"}]}, "events[0].timestamp"),
        ({"events": [{"user_id": "", "event": "x", "timestamp": D0}]}, "events[0].user_id"),
        (
            {"events": [{"user_id": "u", "event": "x", "timestamp": D0, "oops": 1}]},
            "events[0].oops",
        ),
        ({"events": [{"type": "nonsense"}]}, "events[0].type"),
        ({"events": [42]}, "events[0]"),
        ({"events": [{"user_id": "u", "event": "", "timestamp": D0}]}, "events[0].event"),
        (
            {"events": [{"user_id": "u", "event": "x", "timestamp": D0, "message_id": " "}]},
            "events[0].message_id",
        ),
        (
            {"events": [{"user_id": "u", "event": "x", "timestamp": "2025-01-06T00:00:00"}]},
            "events[0].timestamp",
        ),
        ({"events": [{"type": "traits", "kind": "team", "subject_id": "a"}]}, "events[0].kind"),
        ({"events": [{"type": "alias", "previous_id": "a"}]}, "events[0].user_id"),
        ({"model": {"": RULE}}, "models"),
        ({"outcome": {1: D0}}, "outcome"),
        (
            {"events": [{"user_id": "u", "event": "x", "timestamp": "yesterday"}]},
            "events[0].timestamp",
        ),
    ],
)
def test_bad_input_names_the_argument(kwargs: dict[str, Any], field: str) -> None:
    """Each bad argument raises ValidationError naming it."""
    model = kwargs.pop("model", RULE)
    events = kwargs.pop("events", None)
    with pytest.raises(ValidationError) as info:
        _run(events, model=model, **kwargs)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("rows", "header", "words"),
    [
        ([("u1", "2025-01-16")], ("user", "converted_at"), "no column 'subject_id'"),
        ([("u1", "2025-01-16")], ("subject_id", "when"), "no column 'converted_at'"),
        ([("u1", "soon")], ("subject_id", "converted_at"), "line 2: 'soon' is not"),
        ([("", "2025-01-16")], ("subject_id", "converted_at"), "line 2: subject_id is empty"),
    ],
)
def test_bad_csv_names_the_outcome(
    rows: list[tuple[str, str]], header: tuple[str, str], words: str, tmp_path: Path
) -> None:
    """A CSV with a missing column or a bad date: the error says where."""
    with pytest.raises(ValidationError, match=words) as info:
        _run(outcome=_csv(tmp_path, rows, header))
    assert info.value.field == "outcome"


def test_a_bad_line_of_a_file_is_named(tmp_path: Path) -> None:
    """A line that is not JSON, or not an event, names its line number."""
    file = tmp_path / "events.jsonl"
    file.write_text('{"user_id": "u", "event": "x", "timestamp": "2025-01-06T00:00:00Z"}\n[1]\n')
    with pytest.raises(ValidationError) as info:
        _run(file)
    assert info.value.field == "events[line 2]"
    file.write_text("{nope\n")
    with pytest.raises(ValidationError, match="not JSON"):
        _run(file)


# -- the report's forms -------------------------------------------------------------------------


def test_to_dict_is_json_with_the_records_field_names() -> None:
    """Every figure, JSON-ready, keyed by the records' attribute names."""
    report = _run(model={"keys": RULE, "signup": Model("signup", pql=did("signup"))})
    data = json.loads(report.to_json())
    assert data == report.to_dict()
    rule = report["keys"].pql
    assert rule is not None
    entry = data["models"]["keys"]["pql"]
    assert set(entry) == {f.name for f in rule.__attrs_attrs__}  # type: ignore[attr-defined]
    assert entry["eligible"] == 20
    assert entry["precision"] == rule.precision
    assert entry["lead_time_median"] == days(9).total_seconds()
    assert entry["weeks"][0]["at"] == (D0 + days(7)).isoformat()
    assert entry["signals"]["key"]["lift"] == pytest.approx(13 / 7)
    assert entry["scores"]["s"]["deciles"][0]["decile"] == 1
    assert data["models"]["keys"]["pqa"] is None
    assert data["comparisons"][0]["only_b_sample"] == ["u2", "u4", "u6"]
    assert data["warnings"] == report.warnings
    assert data["horizon"] == HORIZON.total_seconds()


def test_the_table_shows_the_headline_figures() -> None:
    """``str(report)`` is the table: rule figures with intervals, scores, signals,
    comparisons and warnings."""
    report = _run(model={"keys": RULE, "signup": Model("signup", pql=did("signup"))})
    text = str(report)
    assert text == report.table()
    for pattern in (
        r"keys -- pql \(users\)",
        r"precision +14\.3% +\[",
        r"recall +50\.0% +\[",
        r"lift +1\.86 +\[",
        r"key +35\.0% +14\.3% +7\.7% +1\.86",
        r"signup vs keys -- pql",
        r"Warnings:",
        r"only 2 users converted",
    ):
        assert re.search(pattern, text), pattern


def test_scores_meant_as_probabilities_get_a_brier_score() -> None:
    """A ``tev`` score (0-100) is read as a probability: Brier and reliability."""
    sim = pqlkit.simulate(seed=4, users=300, accounts=30, days=90)
    model = Model(
        "tev",
        signals={"dash": did("dashboard_built")},
        scores={
            "tev": pqlkit.tev(
                activation="dash",
                fast=days(2),
                slow=days(14),
                engagement=pqlkit.active_days(within=days(14)),
                engagement_target=5,
                virality=pqlkit.distinct("teammate_invited", "email"),
                virality_target=2,
            )
        },
        pql=score("tev") >= 40,
    )
    rule = pqlkit.backtest(model, sim, outcome="subscription_started")["tev"].pql
    assert rule is not None
    tev = rule.scores["tev"]
    assert tev.probability
    assert tev.brier is not None
    assert 0 <= tev.brier <= 1
    assert tev.reliability is not None
    assert sum(r.count for r in tev.reliability) == rule.eligible


@pytest.mark.postgres
def test_postgres_source_is_read_only(postgres_dsn: str, pg_schema: str) -> None:
    """A postgresql:// URL is read without creating or changing anything; a schema
    holding no store is an error naming ``events``, and is not created."""
    import psycopg

    from pqlkit.stores.postgres import PostgresStore

    with pqlkit.Client(RULE, store=PostgresStore(postgres_dsn, schema=pg_schema)) as client:
        client.track_many(_history())
        client.store.close()
    url = f"{postgres_dsn}?schema={pg_schema}"
    assert _counts(_run(url)) == (20, 7, 2, 1)
    with PostgresStore(postgres_dsn, schema=pg_schema, read_only=True) as reader:
        with reader.transaction() as tx:
            assert len(list(tx.events())) == len(_history())
        with pytest.raises(pqlkit.StoreError), reader.transaction() as tx:
            tx.set_meta("x", "y")
    other = f"{pg_schema}_x"
    with pytest.raises(ValidationError) as info:
        _run(f"{postgres_dsn}?schema={other}")
    assert info.value.field == "events"
    with psycopg.connect(postgres_dsn) as conn:
        found = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (other,)
        ).fetchone()
    assert found == (0,)


def test_the_garbage_collector_is_left_as_it_was() -> None:
    """The backtest pauses Python's cyclic collector while it replays, and leaves it on
    (or off) as it found it, also when it raises."""
    import gc

    assert gc.isenabled()
    _run()
    assert gc.isenabled()
    with pytest.raises(ValidationError):
        _run([{"user_id": "u", "event": "x"}])
    assert gc.isenabled()
    gc.disable()
    try:
        _run()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_example_finds_the_better_candidate(capsys: pytest.CaptureFixture[str]) -> None:
    """``examples/backtest.py`` prints the report and tells the candidate is better."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "examples" / "backtest.py"
    spec = importlib.util.spec_from_file_location("lab_example", path)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main()
    out = capsys.readouterr().out
    assert "candidate vs live -- pql" in out
    assert "The candidate's precision is better" in out


def test_progress_is_reported_as_the_replay_goes() -> None:
    """``progress(done, total)`` is called every 10,000 events and once at the end."""
    sim = pqlkit.simulate(seed=1, users=2_500, accounts=250, days=60)
    calls: list[tuple[int, int]] = []
    pqlkit.backtest(
        RULE, sim, outcome="paid", progress=lambda done, total: calls.append((done, total))
    )
    total = calls[-1][1]
    assert total > 10_000
    assert calls[-1] == (total, total)
    assert [done for done, _ in calls[:-1]] == list(range(10_000, total, 10_000))
    with pytest.raises(ValidationError) as info:
        _run(progress="yes")
    assert info.value.field == "progress"


def test_a_condition_outcome_sees_the_users_account() -> None:
    """A condition outcome reading account traits sees the user's account (that of its
    latest event with one), also on an event without an ``account_id``."""
    model = Model("any", pql=did("signup"))
    events = [
        {"user_id": "u1", "event": "signup", "account_id": "big", "timestamp": D0},
        {"user_id": "u2", "event": "signup", "account_id": "small", "timestamp": D0},
        {"user_id": "u1", "event": "paid", "timestamp": D0 + days(10)},
        {"user_id": "u2", "event": "paid", "timestamp": D0 + days(10)},
        {"user_id": "z", "event": "signup", "timestamp": D0 + days(60)},
        {"type": "traits", "kind": "account", "subject_id": "big", "traits": {"employees": 900}},
        {"type": "traits", "kind": "account", "subject_id": "small", "traits": {"employees": 9}},
    ]
    outcome = did("paid") & (trait("employees", of="account") >= 100)
    report = pqlkit.backtest(model, events, outcome=outcome, horizon=HORIZON, step=STEP)
    rule = report["any"].pql
    assert rule is not None
    assert (rule.positives, rule.converted) == (1, 1)  # u1 only
