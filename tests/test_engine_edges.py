"""Every aggregate at the edges of its window, on the engine and on the oracle alike.

Each test states the value the contract (API.md §2) gives; ``value_of`` checks
that the incremental engine and the naive oracle both give it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import oracle
from oracle import DAY, HOUR, Kind, Track
from pqlkit import (
    Client,
    Model,
    absent,
    active_days,
    active_users,
    count,
    days,
    did,
    distinct,
    hours,
    idle,
    last,
    sequence,
    tev,
    time_to,
    total,
    trait,
)
from pqlkit import _dsl as d
from pqlkit._engine import NO_QUALIFICATION, Context, Plan, SubjectState, explain
from pqlkit._engine.state import set_key
from pqlkit.exceptions import ModelError
from strategies import DAY0, apply

US = 1
MIDNIGHT = DAY0 + DAY  # a UTC midnight with a day of history before it


def ev(ts: int, name: str = "login", props: dict[str, Any] | None = None, **kw: Any) -> Track:
    """One event of u1 (of the given user / account with keywords)."""
    return Track(kw.pop("user_id", "u1"), name, ts, props or {}, **kw)


def value_of(
    expr: d.Expr,
    events: Sequence[Track],
    *,
    later: int = 0,
    kind: Kind = "user",
    traits: dict[str, Any] | None = None,
) -> Any:
    """``expr`` as a score (number) or signal (condition) of the subject, ``later`` µs after
    its newest event; the engine and the oracle must agree on it."""
    subject = "u1" if kind == "user" else "acme"
    is_signal = expr.value_type() == "bool"
    declared = {"x": expr}
    model = Model("edges", signals=declared) if is_signal else Model("edges", scores=declared)
    plan = Plan(model)
    state = plan.new_state()
    ctx = Context(traits or {}, {})
    newest = None
    for e in events:
        if (e.user_id if kind == "user" else e.account_id) != subject:
            continue
        apply(plan, state, e.ts, e.name, e.props, e.user_id)
        newest = e.ts if newest is None else max(newest, e.ts)
        plan.evaluate(state, newest, kind, ctx, latch=True)
    assert newest is not None
    t = newest + later
    got = plan.evaluate(state, t, kind, ctx)
    want = oracle.expected(model, list(events), subject, kind, t, traits or {}, {})
    if is_signal:
        assert got.signals["x"] == want["signals"]["x"], (got, want)
        return got.signals["x"]
    assert math.isclose(got.scores["x"], want["scores"]["x"]), (got, want)
    return got.scores["x"]


# -- count / within -------------------------------------------------------------------


def test_within_excludes_an_event_exactly_d_before_t() -> None:
    """within=D: an event at exactly T - D is outside the window."""
    assert value_of(count(within=days(1)), [ev(DAY0), ev(DAY0 + DAY)]) == 1


def test_within_includes_an_event_just_after_t_minus_d() -> None:
    """within=D: an event at T - D + 1 µs is inside the window."""
    assert value_of(count(within=days(1)), [ev(DAY0 + US), ev(DAY0 + DAY)]) == 2


def test_within_window_slides_with_evaluation_time() -> None:
    """within=D read later: the window is (T - D, T] for the later T."""
    events = [ev(DAY0), ev(DAY0 + HOUR)]
    assert value_of(count(within=days(1)), events, later=DAY - HOUR) == 1


def test_within_window_empties_after_d() -> None:
    """within=D read exactly D after the newest event: nothing is left."""
    assert value_of(count(within=hours(1)), [ev(DAY0)], later=HOUR) == 0


def test_did_within_holds_until_exactly_d_after_the_event() -> None:
    """did(within=D) (read from the newest entry alone): true at D - 1 µs, false at D."""
    events = [ev(DAY0), ev(DAY0 + HOUR, "other")]
    assert value_of(did("login", within=hours(2)), events, later=HOUR - US) is True
    assert value_of(did("login", within=hours(2)), events, later=HOUR) is False
    assert value_of(count("login", within=hours(2)) > 0, events, later=HOUR) is False


def test_total_within_excludes_the_edge() -> None:
    """total(within=D) leaves out the amount at exactly T - D."""
    events = [
        ev(DAY0, "pay", {"n": 5}),
        ev(DAY0 + 1, "pay", {"n": 3}),
        ev(DAY0 + DAY, "pay", {"n": 1}),
    ]
    assert value_of(total("pay", "n", within=days(1)), events) == 4


def test_total_counts_non_numbers_as_zero() -> None:
    """total() adds numbers only: bool, str, None and missing count as 0."""
    props = [{"n": 2}, {"n": True}, {"n": "3"}, {"n": None}, {}, {"n": 1.5}]
    events = [ev(DAY0 + i, "pay", p) for i, p in enumerate(props)]
    assert value_of(total("pay", "n"), events) == 3.5


def test_distinct_within_drops_a_value_seen_only_at_the_edge() -> None:
    """distinct(within=D) does not count a value whose only event is at T - D."""
    events = [ev(DAY0, "invite", {"email": "a"}), ev(DAY0 + DAY, "invite", {"email": "b"})]
    assert value_of(distinct("invite", "email", within=days(1)), events) == 1


def test_distinct_within_keeps_a_value_also_seen_inside() -> None:
    """distinct(within=D) counts a value seen at the edge and again inside the window once."""
    events = [
        ev(DAY0, "invite", {"email": "a"}),
        ev(DAY0 + HOUR, "invite", {"email": "a"}),
        ev(DAY0 + DAY, "invite", {"email": "b"}),
    ]
    assert value_of(distinct("invite", "email", within=days(1)), events) == 2


def test_distinct_compares_canonical_json() -> None:
    """distinct() tells 1, 1.0 and true apart, ignores key order and None."""
    values = [1, 1.0, True, {"a": 1, "b": 2}, {"b": 2, "a": 1}, None, 1]
    events = [ev(DAY0 + i, "pay", {"n": v}) for i, v in enumerate(values)]
    assert value_of(distinct("pay", "n"), events) == 4


# -- since_first_seen ---------------------------------------------------------------------


def test_since_first_seen_excludes_an_event_at_f_plus_d() -> None:
    """since_first_seen=D: an event at exactly F + D is outside [F, F + D)."""
    events = [ev(DAY0, "signup"), ev(DAY0 + DAY, "build")]
    assert value_of(count("build", since_first_seen=days(1)), events) == 0


def test_since_first_seen_includes_an_event_just_before_f_plus_d() -> None:
    """since_first_seen=D: an event at F + D - 1 µs is inside."""
    events = [ev(DAY0, "signup"), ev(DAY0 + DAY - US, "build")]
    assert value_of(count("build", since_first_seen=days(1)), events) == 1


def test_late_event_moving_f_earlier_pushes_events_out() -> None:
    """A late event older than F moves F earlier, and events past the new F + D drop out."""
    events = [ev(DAY0, "build"), ev(DAY0 + 2 * HOUR, "build"), ev(DAY0 - DAY + HOUR, "signup")]
    assert value_of(count("build", since_first_seen=days(1)), events) == 1


def test_late_event_moving_f_earlier_is_counted_itself() -> None:
    """A late event that becomes the first one counts in its own since_first_seen window."""
    events = [ev(DAY0 + DAY, "build"), ev(DAY0, "build")]
    assert value_of(count("build", since_first_seen=days(1)), events) == 1


def test_since_first_seen_uses_the_first_event_of_any_name() -> None:
    """F is the subject's first event of any name, not the first matching one."""
    events = [ev(DAY0, "signup"), ev(DAY0 + 2 * DAY, "build"), ev(DAY0 + 2 * DAY + HOUR, "build")]
    assert value_of(count("build", since_first_seen=days(1)), events) == 0


def test_distinct_since_first_seen_after_f_moves() -> None:
    """distinct(since_first_seen=D) forgets a value whose events all fall past the new F + D."""
    events = [
        ev(DAY0, "invite", {"email": "a"}),
        ev(DAY0 + HOUR, "invite", {"email": "b"}),
        ev(DAY0 - DAY + HOUR, "invite", {"email": "c"}),
    ]
    assert value_of(distinct("invite", "email", since_first_seen=days(1)), events) == 2


# -- active_days --------------------------------------------------------------------------


def test_active_days_splits_at_utc_midnight() -> None:
    """Events 1 µs apart on either side of a UTC midnight are two active days."""
    events = [ev(MIDNIGHT - US), ev(MIDNIGHT)]
    assert value_of(active_days(), events) == 2


def test_active_days_counts_a_day_once() -> None:
    """Events at 00:00 and 23:59:59.999999 of one UTC day are one active day."""
    events = [ev(MIDNIGHT), ev(MIDNIGHT + DAY - US)]
    assert value_of(active_days(), events) == 1


def test_active_days_within_applies_the_window_to_events() -> None:
    """active_days(within=D) counts the days of events inside (T - D, T], not calendar days."""
    events = [ev(MIDNIGHT - HOUR), ev(MIDNIGHT)]  # the first is exactly T - 1h: out
    assert value_of(active_days(within=hours(1)), events) == 1


def test_active_days_within_keeps_yesterday_inside_the_window() -> None:
    """active_days(within=D) counts yesterday when an event of yesterday is inside the window."""
    events = [ev(MIDNIGHT - HOUR + US), ev(MIDNIGHT)]
    assert value_of(active_days(within=hours(1)), events) == 2


# -- active_users -------------------------------------------------------------------------


def test_active_users_counts_distinct_users_of_an_account() -> None:
    """active_users() on an account: distinct users among its events."""
    events = [
        ev(DAY0, user_id="u1", account_id="acme"),
        ev(DAY0 + 1, user_id="u2", account_id="acme"),
        ev(DAY0 + 2, user_id="u1", account_id="acme"),
    ]
    assert value_of(active_users(), events, kind="account") == 2


def test_active_users_within_excludes_the_edge() -> None:
    """active_users(within=D) leaves out a user whose only event is at T - D."""
    events = [
        ev(DAY0, user_id="u2", account_id="acme"),
        ev(DAY0 + DAY, user_id="u1", account_id="acme"),
    ]
    assert value_of(active_users(within=days(1)), events, kind="account") == 1


def test_active_users_is_none_on_users() -> None:
    """active_users() on a user subject is None: no comparison with it holds."""
    assert value_of(active_users() >= 0, [ev(DAY0)]) is False


def test_active_users_score_is_zero_on_users() -> None:
    """active_users() as a score of a user subject is 0."""
    assert value_of(active_users(), [ev(DAY0)]) == 0.0


# -- last ---------------------------------------------------------------------------------


def test_last_is_latest_by_timestamp_not_arrival() -> None:
    """last(): a late-arriving older event does not replace the latest one."""
    events = [ev(DAY0 + HOUR, "usage", {"n": 2}), ev(DAY0, "usage", {"n": 1})]
    assert value_of(last("usage", "n"), events) == 2


def test_last_tie_goes_to_the_later_arrival() -> None:
    """last(): on equal timestamps, the later arrival wins."""
    events = [ev(DAY0, "usage", {"n": 1}), ev(DAY0, "usage", {"n": 2})]
    assert value_of(last("usage", "n"), events) == 2


def test_last_of_missing_property_is_none() -> None:
    """last(): the latest matching event without the property gives None (not an older value)."""
    events = [ev(DAY0, "usage", {"n": 1}), ev(DAY0 + 1, "usage", {})]
    assert value_of(last("usage", "n") == 1, events) is False


# -- time_to / idle -----------------------------------------------------------------------


def test_time_to_is_measured_from_the_first_event() -> None:
    """time_to(e) is the first e's time minus the first event's time."""
    events = [ev(DAY0, "signup"), ev(DAY0 + 2 * DAY, "build")]
    assert value_of(time_to("build") == days(2), events) is True


def test_time_to_grows_when_a_late_event_moves_f_earlier() -> None:
    """A late event older than F lengthens time_to."""
    events = [ev(DAY0, "signup"), ev(DAY0 + DAY, "build"), ev(DAY0 - DAY, "login")]
    assert value_of(time_to("build") == days(2), events) is True


def test_time_to_uses_the_earliest_match_even_if_it_arrives_late() -> None:
    """time_to(e) uses the earliest e by timestamp, whatever the arrival order."""
    events = [ev(DAY0, "signup"), ev(DAY0 + DAY, "build"), ev(DAY0 + HOUR, "build")]
    assert value_of(time_to("build") == hours(1), events) is True


def test_idle_is_zero_at_track_time() -> None:
    """idle() at the newest event is 0."""
    assert value_of(idle() <= timedelta(0), [ev(DAY0), ev(DAY0 + DAY)]) is True


def test_idle_reaches_d_exactly_d_after_the_newest_event() -> None:
    """idle() >= D holds exactly D after the newest event."""
    assert value_of(idle() >= days(1), [ev(DAY0)], later=DAY) is True


def test_idle_is_below_d_just_before() -> None:
    """idle() >= D does not hold 1 µs before D has passed."""
    assert value_of(idle() >= days(1), [ev(DAY0)], later=DAY - US) is False


# -- sequence -----------------------------------------------------------------------------


def test_sequence_spanning_exactly_d_holds() -> None:
    """sequence(within=D): a chain spanning exactly D counts."""
    events = [ev(DAY0, "import"), ev(DAY0 + DAY, "send")]
    assert value_of(sequence("import", "send", within=days(1)), events) is True


def test_sequence_spanning_d_plus_one_fails() -> None:
    """sequence(within=D): a chain spanning D + 1 µs does not count."""
    events = [ev(DAY0, "import"), ev(DAY0 + DAY + US, "send")]
    assert value_of(sequence("import", "send", within=days(1)), events) is False


def test_sequence_needs_strictly_increasing_times() -> None:
    """sequence(): steps at the same timestamp do not chain."""
    events = [ev(DAY0, "import"), ev(DAY0, "send")]
    assert value_of(sequence("import", "send"), events) is False


def test_sequence_follows_timestamps_not_arrival() -> None:
    """sequence(): a late-arriving earlier step still completes the chain."""
    events = [ev(DAY0 + HOUR, "send"), ev(DAY0, "import")]
    assert value_of(sequence("import", "send", within=hours(1)), events) is True


def test_sequence_picks_a_later_start_that_fits() -> None:
    """sequence(within=D): an early start too far away does not hide a later one that fits."""
    events = [ev(DAY0, "import"), ev(DAY0 + 2 * DAY, "import"), ev(DAY0 + 2 * DAY + HOUR, "send")]
    assert value_of(sequence("import", "send", within=hours(1)), events) is True


def test_sequence_repeated_step_needs_two_events() -> None:
    """sequence(a, a): one event cannot be both steps."""
    assert value_of(sequence("login", "login"), [ev(DAY0, "login")]) is False


# -- absent -------------------------------------------------------------------------------


def test_absent_holds_exactly_d_after() -> None:
    """absent(within=D) turns true at exactly t + D when no event came."""
    events = [ev(DAY0, "signup")]
    assert value_of(absent("build", after="signup", within=days(1)), events, later=DAY) is True


def test_absent_not_yet_just_before_d() -> None:
    """absent(within=D) is false 1 µs before t + D."""
    events = [ev(DAY0, "signup")]
    cond = absent("build", after="signup", within=days(1))
    assert value_of(cond, events, later=DAY - US) is False


def test_absent_broken_by_an_event_at_exactly_t_plus_d() -> None:
    """absent(): an event at exactly t + D is inside [t, t + D]."""
    events = [ev(DAY0, "signup"), ev(DAY0 + DAY, "build")]
    assert value_of(absent("build", after="signup", within=days(1)), events) is False


def test_absent_broken_by_an_event_at_t() -> None:
    """absent(): an event at the same timestamp as the first ``after`` is inside [t, t + D]."""
    events = [ev(DAY0, "signup"), ev(DAY0, "build")]
    cond = absent("build", after="signup", within=days(1))
    assert value_of(cond, events, later=DAY) is False


def test_absent_holds_despite_an_event_after_t_plus_d() -> None:
    """absent(): an event 1 µs after t + D does not break it."""
    events = [ev(DAY0, "signup"), ev(DAY0 + DAY + US, "build")]
    assert value_of(absent("build", after="signup", within=days(1)), events) is True


def test_absent_ignores_events_before_t() -> None:
    """absent(): an event before the first ``after`` does not break it."""
    events = [ev(DAY0 - US, "build"), ev(DAY0, "signup")]
    cond = absent("build", after="signup", within=days(1))
    assert value_of(cond, events, later=DAY) is True


def test_absent_uses_the_first_after_even_if_it_arrives_late() -> None:
    """absent(): a late-arriving earlier ``after`` moves t, and the window with it."""
    events = [ev(DAY0 + DAY, "signup"), ev(DAY0 + DAY + HOUR, "build"), ev(DAY0, "signup")]
    cond = absent("build", after="signup", within=hours(1))
    assert value_of(cond, events) is True


# -- comparisons and arithmetic -----------------------------------------------------------


def test_not_equal_to_none_is_false() -> None:
    """A comparison with None is false, ``!=`` too."""
    assert value_of(last("usage", "n") != 1, [ev(DAY0)]) is False


def test_comparison_of_unlike_types_is_false() -> None:
    """A comparison that raises TypeError (str >= int) is false."""
    assert value_of(last("usage", "n") >= 1, [ev(DAY0, "usage", {"n": "2"})]) is False


def test_division_by_zero_is_none() -> None:
    """x / 0 is None: as a score it is 0."""
    assert value_of(count() / count("never"), [ev(DAY0)]) == 0.0


def test_arithmetic_on_a_bool_is_none() -> None:
    """A bool property is not a number: arithmetic with it is None."""
    assert value_of(last("usage", "n") + 1 >= 0, [ev(DAY0, "usage", {"n": True})]) is False


def test_user_trait_is_none_on_accounts() -> None:
    """trait(of="user") on an account subject is None."""
    events = [ev(DAY0, account_id="acme")]
    cond = trait("plan") == "pro"
    assert value_of(cond, events, kind="account", traits={"plan": "pro"}) is False


# -- tev time part ------------------------------------------------------------------------


def _tev_time(activated_after: int, *, late_first: int | None = None) -> float:
    """The Time part (in %) when ``build`` comes ``activated_after`` µs after ``signup``."""
    model_expr = tev(
        activation="built",
        fast=days(1),
        slow=days(3),
        engagement=count("never"),
        engagement_target=1,
        virality=count("never"),
        virality_target=1,
        weights=(1, 0, 0),
    )
    model = Model("tev", signals={"built": did("build")}, scores={"tev": model_expr})
    events = [ev(DAY0, "signup"), ev(DAY0 + activated_after, "build")]
    if late_first is not None:
        events.append(ev(DAY0 - late_first, "login"))
    plan = Plan(model)
    state = plan.new_state()
    newest = None
    for e in events:
        apply(plan, state, e.ts, e.name, e.props, e.user_id)
        newest = e.ts if newest is None else max(newest, e.ts)
        plan.evaluate(state, newest, "user", Context(), latch=True)
    assert newest is not None
    got = plan.evaluate(state, newest, "user", Context()).scores["tev"]
    want = oracle.expected(model, events, "u1", "user", newest, {}, {})["scores"]["tev"]
    assert math.isclose(got, want), (got, want)
    return got


def test_tev_time_is_full_at_exactly_fast() -> None:
    """tev: activation exactly ``fast`` after first seen gives a full Time part."""
    assert _tev_time(DAY) == 100


def test_tev_time_is_zero_at_exactly_slow() -> None:
    """tev: activation exactly ``slow`` after first seen gives no Time part."""
    assert _tev_time(3 * DAY) == 0


def test_tev_time_is_linear_between() -> None:
    """tev: activation halfway between fast and slow gives half the Time part."""
    assert _tev_time(2 * DAY) == pytest.approx(50)


def test_tev_time_shrinks_when_a_late_event_moves_f_earlier() -> None:
    """tev: a late event older than first seen lengthens the time to activation."""
    assert _tev_time(DAY, late_first=DAY) == pytest.approx(50)


# -- shared state ---------------------------------------------------------------------


def test_windows_that_print_alike_are_still_different_windows() -> None:
    """Two windows 1 s apart give two different counts at the edge of the longer one."""
    second = 1_000_000
    short = count(within=timedelta(seconds=1_000_001))
    long = count(within=timedelta(seconds=1_000_002))
    events = [ev(DAY0), ev(DAY0 + 1_000_001 * second)]
    assert value_of(short, events) == 1
    assert value_of(long - short, events) == 1


def test_retuned_float_constants_change_the_fingerprint() -> None:
    """A threshold or weight changed in its seventh digit is a different model."""
    from pqlkit import Model, points, total

    def fingerprint(threshold: float, weight: float) -> str:
        return Model(
            "m",
            signals={"s": total("usage", "rows") >= threshold},
            scores={"p": points(s=weight)},
        ).fingerprint

    base = fingerprint(1_000_000.0, 0.1234567)
    assert fingerprint(1_000_004.0, 0.1234567) != base
    assert fingerprint(1_000_000.0, 0.1234568) != base


# -- values kept between evaluations (SubjectState.memo) ---------------------------


def test_a_windowed_value_is_kept_until_its_window_lets_go() -> None:
    plan = Plan(Model("memo", signals={"recent": count("a", within=days(1)) >= 2}))
    state, ctx = plan.new_state(), Context({}, {})
    apply(plan, state, 0, "a", {}, "u1")
    apply(plan, state, HOUR, "a", {}, "u1")
    assert plan.evaluate(state, HOUR, "user", ctx).signals["recent"]
    # kept, with the time the first "a" leaves the window: the count drops then
    assert (state.memo["recent"].value, state.memo["recent"].until) == (True, DAY)
    assert plan.evaluate(state, DAY - 1, "user", ctx).signals["recent"]
    assert not plan.evaluate(state, DAY, "user", ctx).signals["recent"]
    assert (state.memo["recent"].value, state.memo["recent"].until) == (
        False,
        DAY + HOUR,
    )  # the last "a" leaves then


def test_an_idle_comparison_outlives_newer_events_while_they_cannot_flip_it() -> None:
    plan = Plan(
        Model(
            "memo",
            signals={"dormant": idle() >= days(3), "quiet": idle() < days(3)},
            pql=d.signal("dormant"),
        )
    )
    state, ctx = plan.new_state(), Context({}, {})
    apply(plan, state, 0, "a", {}, "u1")
    ev = plan.evaluate(state, HOUR, "user", ctx)
    assert ev.signals == {"dormant": False, "quiet": True}
    assert ev.until == 3 * DAY  # when the rule (dormant) turns true with time alone
    kept = dict(state.memo)
    # a newer event makes idle smaller: neither can flip sooner, both are kept,
    # and the time they hold until moves with the newest event
    apply(plan, state, 2 * HOUR, "a", {}, "u1")
    ev = plan.evaluate(state, 3 * DAY, "user", ctx)  # 3 days after the first "a" only
    assert ev.signals == {"dormant": False, "quiet": True}
    assert ev.until == 3 * DAY + 2 * HOUR
    assert all(state.memo[key] is kept[key] for key in ("dormant", "quiet"))
    ev = plan.evaluate(state, 3 * DAY + 2 * HOUR, "user", ctx)
    assert ev.signals == {"dormant": True, "quiet": False}
    assert ev.until is None  # true until an event comes
    # a newer event would flip these: kept only while the newest event stays the same
    apply(plan, state, 4 * DAY, "a", {}, "u1")
    ev = plan.evaluate(state, 4 * DAY, "user", ctx)
    assert ev.signals == {"dormant": False, "quiet": True}
    assert ev.until == 7 * DAY


def test_an_event_on_a_day_already_counted_keeps_what_reads_active_days() -> None:
    plan = Plan(Model("memo", signals={"habit": active_days(within=days(7)) >= 2}))
    state, ctx = plan.new_state(), Context({}, {})
    apply(plan, state, 0, "a", {}, "u1")
    apply(plan, state, DAY, "a", {}, "u1")
    assert plan.evaluate(state, DAY, "user", ctx).signals["habit"]
    kept = state.memo["habit"]
    assert (kept.value, kept.until) == (True, 7 * DAY)
    apply(plan, state, DAY + HOUR, "b", {}, "u1")  # the same day: still two days
    assert state.memo["habit"] is kept
    apply(plan, state, 2 * DAY, "b", {}, "u1")  # a new day: recomputed when read
    assert "habit" not in state.memo
    assert plan.evaluate(state, 7 * DAY, "user", ctx).signals["habit"]  # days 1 and 2


def test_a_late_event_on_a_day_that_left_the_window_counts_again() -> None:
    """The kept count is dropped when the event revives a day it no longer counted."""
    plan = Plan(Model("memo", signals={"habit": active_days(within=days(2)) >= 2}))
    state, ctx = plan.new_state(), Context({}, {})
    apply(plan, state, 0, "a", {}, "u1")  # day 0, 00:00
    apply(plan, state, DAY + 20 * HOUR, "a", {}, "u1")  # day 1, 20:00
    # at day 2, 01:00 day 0 (its latest event at 00:00) has left the window
    assert not plan.evaluate(state, 2 * DAY + HOUR, "user", ctx).signals["habit"]
    apply(plan, state, 23 * HOUR, "a", {}, "u1")  # late, day 0 at 23:00: inside again
    assert plan.evaluate(state, 2 * DAY + HOUR, "user", ctx).signals["habit"]


def test_a_tev_score_whose_activation_is_not_latched_yet_follows_t() -> None:
    """Read without latching (explain, scores()), the time part counts up to T: not kept."""
    score = tev(
        activation="idle_a_day",
        fast=days(1),
        slow=days(11),
        engagement=count("a"),
        engagement_target=1,
        virality=count("b"),
        virality_target=1,
    )
    plan = Plan(Model("memo", signals={"idle_a_day": idle() >= days(1)}, scores={"tev": score}))
    state, ctx = plan.new_state(), Context({}, {})
    apply(plan, state, 0, "a", {}, "u1")
    # weights 1/1/1: time part 1 - (elapsed - 1d) / 10d, engagement 1, virality 0
    assert plan.evaluate(state, 2 * DAY, "user", ctx).scores["tev"] == pytest.approx(100 * 1.9 / 3)
    assert plan.evaluate(state, 6 * DAY, "user", ctx).scores["tev"] == pytest.approx(100 * 1.5 / 3)


def test_a_late_event_reviving_a_key_that_left_the_window_counts_again() -> None:
    """As for days: a distinct key back inside the window drops what was kept."""
    plan = Plan(Model("memo", signals={"two": distinct("a", "k", within=days(2)) >= 2}))
    state, ctx = plan.new_state(), Context({}, {})
    apply(plan, state, 0, "a", {"k": "x"}, "u1")
    apply(plan, state, DAY + 20 * HOUR, "a", {"k": "y"}, "u1")
    assert not plan.evaluate(state, 2 * DAY + HOUR, "user", ctx).signals["two"]  # x left
    apply(plan, state, 23 * HOUR, "a", {"k": "x"}, "u1")  # late: x inside again
    assert plan.evaluate(state, 2 * DAY + HOUR, "user", ctx).signals["two"]
    apply(plan, state, 2 * DAY, "a", {"k": "y"}, "u1")  # y was inside all along: kept
    assert state.memo["two"].value is True


def test_the_due_time_follows_the_first_key_to_leave_the_window() -> None:
    """An event by the user whose exit the kept rule held until moves that end later
    (the account is due when its last user leaves, not when that user first would have)."""
    plan = Plan(Model("due", signals={"x": did("x")}, pqa=active_users(within=days(2)) >= 1))
    state, ctx = plan.new_state(), Context({}, {})
    apply(plan, state, 0, "a", {}, "u1", "account")
    assert plan.evaluate(state, 0, "account", ctx).until == 2 * DAY
    apply(plan, state, HOUR, "a", {}, "u2", "account")  # another user: u1 still leaves first
    assert plan.evaluate(state, HOUR, "account", ctx).until == 2 * DAY
    apply(plan, state, 3 * HOUR, "a", {}, "u1", "account")  # u1 again: u2 now leaves first
    assert plan.evaluate(state, 3 * HOUR, "account", ctx).until == 2 * DAY + HOUR


def test_an_event_only_the_users_rule_reads_keeps_the_accounts_rule() -> None:
    """An account's kept value of its rule (PQA) is dropped only by what PQA reads."""
    model = Model(
        "kinds",
        signals={"x": did("x")},
        pql=d.signal("x"),
        pqa=active_users(within=days(2)) >= 1,
    )
    plan = Plan(model)
    ctx = Context({}, {})
    account, user = plan.new_state(), plan.new_state()
    for state, kind in ((account, "account"), (user, "user")):
        apply(plan, state, 0, "a", {}, "u1", kind)
        apply(plan, state, 1, "a", {}, "u2", kind)
        plan.evaluate(state, 1, kind, ctx)
        # u2 again (u1 still leaves the window first: kept), with an "x"
        apply(plan, state, HOUR, "x", {}, "u2", kind)
    assert "\x00rule" in account.memo  # PQA does not read "x"
    assert "\x00rule" not in user.memo  # PQL does
    assert plan.evaluate(account, HOUR, "account", ctx).rule
    assert plan.evaluate(user, HOUR, "user", ctx).rule


@pytest.mark.parametrize(
    ("signal", "settled_from"),
    [
        (did("x"), 1),
        (count("x") >= 3, 3),
        (count("x") > 2.5, 3),
        (count("x") < 2, 2),
        (d.Compare("<", d.Const(1), count("x")), 2),
        (count("x") == 2, 3),
    ],
    ids=["did", ">=3", ">2.5", "<2", "1<", "==2"],
)
def test_a_count_past_every_threshold_reading_it_keeps_what_reads_it(
    signal: d.Expr, settled_from: int
) -> None:
    """An unwindowed count only grows: once a comparison's truth cannot change, a
    further event keeps the values that read it (and the count itself goes on)."""
    plan = Plan(Model("settled", signals={"s": signal}, pql=d.signal("s")))
    state, ctx = plan.new_state(), Context({}, {})
    for n in range(1, settled_from + 3):
        apply(plan, state, n * HOUR, "x", {}, "u1")
        # kept only when the count before this event had settled the comparison
        assert ("s" in state.memo) is (n - 1 >= settled_from)
        result = plan.evaluate(state, n * HOUR, "user", ctx)
        assert result.rule == value_of(signal, [ev(k * HOUR, "x") for k in range(1, n + 1)])
    assert f"count('x') = {settled_from + 2}" in explain(plan, state, 0, "user", ctx)[0]


def test_a_count_read_by_anything_but_a_comparison_with_a_constant_never_settles() -> None:
    model = Model(
        "unsettled",
        signals={"s": did("x"), "t": count("x") * 2 >= 2, "u": count("x") >= count("y")},
    )
    plan = Plan(model)
    state, ctx = plan.new_state(), Context({}, {})
    for n in range(1, 5):
        apply(plan, state, n * HOUR, "x", {}, "u1")
        assert not state.memo.keys() & {"s", "t", "u"}  # dropped by each "x"
        plan.evaluate(state, n * HOUR, "user", ctx)


def test_active_days_windows_of_one_match_share_one_list() -> None:
    """habit (7d) and engagement (14d) read one list of day times, each with its window."""
    model = Model(
        "days",
        signals={
            "week": active_days(within=days(7)) >= 2,
            "fortnight": active_days(within=days(14)) >= 2,
        },
        pql=d.signal("week"),
    )
    plan = Plan(model)
    assert len(plan.accs) == 1
    state, ctx = plan.new_state(), Context({}, {})
    apply(plan, state, 0, "a", {}, "u1")
    apply(plan, state, 10 * DAY, "a", {}, "u1")
    ev = plan.evaluate(state, 10 * DAY, "user", ctx)
    assert ev.signals == {"week": False, "fortnight": True}  # day 0 is out of the week only
    apply(plan, state, 12 * DAY, "a", {}, "u1")
    assert plan.evaluate(state, 12 * DAY, "user", ctx).signals == {"week": True, "fortnight": True}
    # the rule (week) turns false when day 10 leaves the 7-day window, not the 14-day one
    assert plan.next_due(state, 12 * DAY, "user") == 17 * DAY
    assert plan.evaluate(state, 12 * DAY, "user", ctx).until == 17 * DAY
    assert plan.evaluate(state, 17 * DAY, "user", ctx).signals == {"week": False, "fortnight": True}


def test_a_late_event_reviving_a_day_for_the_narrow_window_only_drops_what_was_kept() -> None:
    model = Model(
        "days",
        signals={"day": active_days(within=days(1)) >= 1, "week": active_days(within=days(7)) >= 1},
    )
    plan = Plan(model)
    state, ctx = plan.new_state(), Context({}, {})
    apply(plan, state, -DAY, "a", {}, "u1")
    apply(plan, state, 10 * HOUR, "a", {}, "u1")
    # a day later at 11:00, day 0's latest time (10:00) has left the 1-day window
    ev = plan.evaluate(state, DAY + 11 * HOUR, "user", ctx)
    assert ev.signals == {"day": False, "week": True}
    apply(plan, state, 12 * HOUR, "a", {}, "u1")  # late, day 0 at 12:00: inside it again
    ev = plan.evaluate(state, DAY + 11 * HOUR, "user", ctx)
    assert ev.signals == {"day": True, "week": True}


def test_names_must_be_printable() -> None:
    with pytest.raises(ModelError) as info:
        Model("m", signals={"\x00rule": did("x")})
    assert info.value.name == "signals"


def test_a_kept_value_is_dropped_when_an_event_feeds_what_it_reads() -> None:
    plan = Plan(Model("memo", signals={"twice": count("a") >= 2, "b": did("b")}))
    state, ctx = plan.new_state(), Context({}, {})
    for i, name in enumerate(["a", "b", "a"]):
        apply(plan, state, i * HOUR, name, {}, "u1")
        got = plan.evaluate(state, i * HOUR, "user", ctx)
        assert got.signals == {"twice": i == 2, "b": i >= 1}


def test_a_kept_value_is_dropped_when_the_traits_change() -> None:
    plan = Plan(Model("memo", signals={"pro": trait("plan") == "pro"}))
    state = plan.new_state()
    apply(plan, state, 0, "login", {}, "u1")
    assert not plan.evaluate(state, 0, "user", Context({"plan": "free"}, {})).signals["pro"]
    assert plan.evaluate(state, 0, "user", Context({"plan": "pro"}, {})).signals["pro"]


def test_a_kept_value_is_dropped_when_a_late_event_moves_first_seen() -> None:
    plan = Plan(Model("memo", signals={"early": count("a", since_first_seen=days(1)) >= 2}))
    state, ctx = plan.new_state(), Context({}, {})
    apply(plan, state, 0, "a", {}, "u1")
    apply(plan, state, HOUR, "a", {}, "u1")
    assert plan.evaluate(state, HOUR, "user", ctx).signals["early"]
    # a late login (an event the count does not read) moves first seen a day
    # earlier: both a's now fall outside [F, F + 1d)
    apply(plan, state, -DAY, "login", {}, "u1")
    assert not plan.evaluate(state, HOUR, "user", ctx).signals["early"]


def test_an_event_that_feeds_nothing_has_its_empty_feed_list_cached() -> None:
    plan = Plan(Model("feeds", signals={"x": did("x")}))
    state = plan.new_state()
    apply(plan, state, 0, "page_viewed", {}, "u1", "user")
    cached = plan._feeds[("page_viewed", "user")]
    assert cached == []
    apply(plan, state, HOUR, "page_viewed", {}, "u1", "user")
    assert plan._feeds[("page_viewed", "user")] is cached  # not looked up again
    assert state.events == 2


@given(
    value=st.one_of(
        st.text(),
        st.text(alphabet=st.characters(max_codepoint=127)),
        st.integers(),
        st.floats(allow_nan=False),
        st.booleans(),
        st.none(),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    )
)
def test_a_set_key_is_the_canonical_json_of_the_value(value: Any) -> None:
    """distinct() keys are stored in states: the fast paths must give json.dumps's text."""
    assert set_key(value) == json.dumps(value, sort_keys=True, separators=(",", ":"))


def test_a_state_survives_dump_and_load_and_compares_by_what_is_stored() -> None:
    plan = Plan(Model("dump", signals={"x": did("x"), "week": count("x", within=days(7)) >= 2}))
    state = plan.new_state()
    for i, name in enumerate(["x", "y", "x"]):
        apply(plan, state, i * HOUR, name, {}, "u1", "user")
    plan.evaluate(state, 2 * HOUR, "user", Context())  # fills the kept values
    loaded = SubjectState.load(state.dump())
    assert state.memo  # kept values are a cache: not stored...
    assert not loaded.memo
    assert loaded == state  # ...nor compared
    assert repr(loaded) == repr(state)
    apply(plan, loaded, 3 * HOUR, "x", {}, "u1", "user")
    assert loaded != state


@pytest.mark.parametrize(
    "text",
    [
        '[5,"f1",7,10,30,3,[3],{"active":20},[30,"a1"],["q1",2,"f0",20,10,25]]',
        '[5,"f1",7,10,30,3,[3],{},null,["q1",0,"f1",20,10,null]]',
        '[5,"f1",7,10,30,3,[3],{},null,0]',
        '[5,"f1",7,10,30,3,[3],{},null,null]',
    ],
)
def test_a_stored_state_of_layout_5_loads_and_is_stored_again_unchanged(text: str) -> None:
    """States stored before the qualification cache had named fields still load (its
    stored form, a list of six fields, 0 or null, did not change)."""
    state = SubjectState.load(text)
    assert state.dump() == text
    cached = state.qualification
    stored = json.loads(text)[9]
    if stored is None:
        assert cached is None
    elif stored == 0:
        assert cached is NO_QUALIFICATION
        assert not cached.qualified
    else:
        assert cached is not None
        fields = [
            cached.id,
            cached.round,
            cached.fingerprint,
            cached.qualified_at,
            cached.first_seen,
            cached.disqualified_at,
        ]
        assert fields == stored
        assert cached.qualified == (stored[5] is None)


def test_an_unwindowed_set_read_only_by_comparisons_stays_bounded() -> None:
    """active_users() >= 3 on an account keeps 3 user ids, not one per user, and its
    explanation says "3 or more"; read by a score, a set stays exact."""
    plan = Plan(
        Model(
            "bounded",
            signals={"inviters": distinct("invite", "email") >= 2},
            scores={"invites": distinct("invite", "email")},
            pqa=active_users() >= 3,
        )
    )
    state, ctx = plan.new_state(), Context({}, {})
    for n in range(1_000):
        apply(plan, state, n * HOUR, "invite", {"email": f"e{n}"}, f"u{n}", "account")
    users = next(s for s in state.slots if isinstance(s, dict) and "u0" in s)
    assert len(users) == 3
    evaluation = plan.evaluate(state, 1_000 * HOUR, "account", ctx)
    assert evaluation.rule
    assert evaluation.scores["invites"] == 1_000
    lines = explain(plan, state, 1_000 * HOUR, "account", ctx)
    assert lines[-1] == "pqa: active_users() = 3 or more >= 3 -> true"
    assert "distinct('invite', 'email') = 1000 >= 2" in lines[0]


def test_a_bounded_set_is_rebuilt_exactly_after_forget() -> None:
    """Forgetting one of the users a bounded active_users() kept: the account is rebuilt
    from the log, and still counts 3 or more while 3 others remain."""
    model = Model("bounded-forget", pqa=active_users() >= 3)
    with Client(model, store="memory://") as client:
        for user in ("a", "b", "c", "d"):
            client.track(user, "login", account_id="acme")
        client.forget("a")
        assert client.explain("acme", of="account")[-1] == (
            "pqa: active_users() = 3 or more >= 3 -> true"
        )
        client.forget("b")
        assert client.explain("acme", of="account")[-1] == ("pqa: active_users() = 2 >= 3 -> false")
