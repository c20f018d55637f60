"""Model: every bad declaration raises a ModelError naming the offender; the fingerprint."""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import pqlkit._model
from pqlkit import (
    Model,
    ModelError,
    absent,
    active_days,
    active_users,
    all_of,
    any_of,
    at_least,
    count,
    days,
    did,
    distinct,
    fit,
    hours,
    idle,
    last,
    play,
    points,
    score,
    sequence,
    signal,
    tev,
    time_to,
    total,
    trait,
)


def with_signal(expr: Any) -> Model:
    """A model whose signal "bad" is ``expr``, next to a good signal "on" and score "s"."""
    return Model("m", signals={"on": did("on"), "bad": expr}, scores={"s": points(on=10)})


def with_score(expr: Any) -> Model:
    """A model whose score "bad" is ``expr``, next to a good signal "on"."""
    return Model("m", signals={"on": did("on")}, scores={"bad": expr})


def with_tev(**overrides: Any) -> Model:
    """A model whose score "bad" is a tev() with ``overrides`` over good arguments."""
    arguments: dict[str, Any] = {
        "activation": "on",
        "fast": days(2),
        "slow": days(14),
        "engagement": active_days(within=days(14)),
        "engagement_target": 7,
        "virality": distinct("teammate_invited", "email"),
        "virality_target": 3,
        **overrides,
    }
    return with_score(tev(**arguments))


def case(case_id: str, build: Callable[[], object], name: str | None, reason: str) -> Any:
    """One bad declaration: ``build()`` raises ModelError(name, reason) exactly."""
    return pytest.param(build, name, reason, id=case_id)


NOT_JSON = object()


# One row (or more) per `raise ModelError(...)` in src/pqlkit/_model.py, in source order;
# test_every_raise_in_the_model_has_a_case checks that none is missing.
def with_play(p: Any, name: Any = "up") -> Model:
    """A model whose only play is ``p``, under ``name``."""
    return Model("m", signals={"on": did("on")}, plays={name: p})


BAD_DECLARATIONS = [
    # -- plays (declared above the Model in _model.py)
    case(
        "play-name-with-colon",
        lambda: with_play(play(did("x")), "a:b"),
        "plays",
        "names must be non-empty printable str without ':', got 'a:b'",
    ),
    case(
        "play-name-empty",
        lambda: with_play(play(did("x")), ""),
        "plays",
        "names must be non-empty printable str without ':', got ''",
    ),
    case(
        "play-not-a-play",
        lambda: with_play(did("x")),
        "plays.up",
        "must be a play(...), got Compare",
    ),
    case(
        "play-of-a-team",
        lambda: with_play(play(did("x"), of="team")),  # type: ignore[arg-type]
        "plays.up.of",
        'must be "user" or "account", got \'team\'',
    ),
    case(
        "play-holdout-one",
        lambda: with_play(play(did("x"), holdout=1.0)),
        "plays.up.holdout",
        "must be a number with 0 <= holdout < 1, got 1.0",
    ),
    case(
        "play-holdout-negative",
        lambda: with_play(play(did("x"), holdout=-0.1)),
        "plays.up.holdout",
        "must be a number with 0 <= holdout < 1, got -0.1",
    ),
    case(
        "play-holdout-a-str",
        lambda: with_play(play(did("x"), holdout="0.1")),  # type: ignore[arg-type]
        "plays.up.holdout",
        "must be a number with 0 <= holdout < 1, got '0.1'",
    ),
    case(
        "play-requalify-after-zero",
        lambda: with_play(play(did("x"), requalify_after=timedelta(0))),
        "plays.up.requalify_after",
        "must be a positive timedelta or None, got datetime.timedelta(0)",
    ),
    case(
        "play-nudge-on-accounts",
        lambda: with_play(play(did("x"), of="account", nudge={"title": "t"})),
        "plays.up.nudge",
        'a nudge goes to a user: only a play of="user" may declare one',
    ),
    case(
        "play-nudge-not-json",
        lambda: with_play(play(did("x"), nudge={"title": NOT_JSON})),
        "plays.up.nudge",
        "must be a JSON object: Object of type object is not JSON serializable",
    ),
    case(
        "play-nudge-too-big",
        lambda: with_play(play(did("x"), nudge={"body": "x" * 5000})),
        "plays.up.nudge",
        "must be at most 4096 bytes of JSON, got 5011",
    ),
    case(
        "play-until-zero",
        lambda: with_play(play(did("x"), nudge={"t": 1}, until=timedelta(0))),
        "plays.up.until",
        "must be a positive timedelta, got datetime.timedelta(0)",
    ),
    case(
        "play-until-without-nudge",
        lambda: with_play(play(did("x"), until=days(7))),
        "plays.up.until",
        "is how long the play's nudge stays open: no nudge=",
    ),
    case(
        "play-condition-a-str",
        lambda: with_play(play("on")),  # type: ignore[arg-type]
        "plays.up",
        "must be a pqlkit condition, got str",
    ),
    case(
        "play-condition-a-number",
        lambda: with_play(play(count("x"))),
        "plays.up",
        "must be a condition, got a number",
    ),
    # -- the Model's own arguments
    case("name-empty", lambda: Model(""), "name", "must be a non-empty str"),
    case("name-blank", lambda: Model("  "), "name", "must be a non-empty str"),
    case("name-not-str", lambda: Model(None), "name", "must be a non-empty str"),  # type: ignore[arg-type]
    case(
        "signals-a-list",
        lambda: Model("m", signals=[did("x")]),  # type: ignore[arg-type]
        "signals",
        "must be a dict of names to expressions, got list",
    ),
    case(
        "scores-a-set",
        lambda: Model("m", scores={count("x")}),  # type: ignore[arg-type]
        "scores",
        "must be a dict of names to expressions, got set",
    ),
    case(
        "signal-name-empty",
        lambda: Model("m", signals={"": did("x")}),
        "signals",
        "names must be non-empty printable str, got ''",
    ),
    case(
        "signal-name-unprintable",
        lambda: Model("m", signals={"\x00rule": did("x")}),
        "signals",
        "names must be non-empty printable str, got '\\x00rule'",
    ),
    case(
        "score-name-not-str",
        lambda: Model("m", scores={3: count("x")}),  # type: ignore[dict-item]
        "scores",
        "names must be non-empty printable str, got 3",
    ),
    case(
        "signal-not-an-expression",
        lambda: Model("m", signals={"on": True}),  # type: ignore[dict-item]
        "signals.on",
        "must be a pqlkit expression, got bool",
    ),
    case(
        "score-not-an-expression",
        lambda: Model("m", scores={"s": 50}),  # type: ignore[dict-item]
        "scores.s",
        "must be a pqlkit expression, got int",
    ),
    case(
        "signal-a-number",
        lambda: with_signal(count("x")),
        "signals.bad",
        "a signal must be a condition, got a number",
    ),
    case(
        "signal-a-trait",
        lambda: with_signal(trait("plan")),
        "signals.bad",
        "a signal must be a condition, got a value",
    ),
    case(
        "score-a-condition",
        lambda: with_score(did("x")),
        "scores.bad",
        "a score must be numeric, got a condition",
    ),
    case(
        "score-a-duration",
        lambda: with_score(time_to("x")),
        "scores.bad",
        "a score must be numeric, got a duration",
    ),
    case(
        "pql-not-an-expression",
        lambda: Model("m", pql=True),  # type: ignore[arg-type]
        "pql",
        "must be a pqlkit condition, got bool",
    ),
    case(
        "pqa-a-string",
        lambda: Model("m", pqa="active"),  # type: ignore[arg-type]
        "pqa",
        "must be a pqlkit condition, got str",
    ),
    case(
        "pql-a-number",
        lambda: Model("m", scores={"s": count("x")}, pql=score("s")),
        "pql",
        "must be a condition, got a number",
    ),
    case(
        "pqa-a-number",
        lambda: Model("m", pqa=active_users(within=days(14))),
        "pqa",
        "must be a condition, got a number",
    ),
    case(
        "requalify-after-zero",
        lambda: Model("m", requalify_after=timedelta(0)),
        "requalify_after",
        "must be a positive timedelta or None, got datetime.timedelta(0)",
    ),
    case(
        "requalify-after-negative",
        lambda: Model("m", requalify_after=-days(1)),
        "requalify_after",
        "must be a positive timedelta or None, got datetime.timedelta(days=-1)",
    ),
    case(
        "requalify-after-seconds-as-int",
        lambda: Model("m", requalify_after=3600),  # type: ignore[arg-type]
        "requalify_after",
        "must be a positive timedelta or None, got 3600",
    ),
    case(
        "version-an-int",
        lambda: Model("m", version=2),  # type: ignore[arg-type]
        "version",
        "must be a str or None, got 2",
    ),
    case(
        "on-retune-unknown",
        lambda: Model("m", on_retune="deliver"),  # type: ignore[arg-type]
        "on_retune",
        'must be "fire" or "record", got \'deliver\'',
    ),
    case(
        "ranked-unknown-score",
        lambda: Model("m", scores={"logins": count("login")}, ranked=["logins", "nope"]),
        "ranked",
        "unknown score 'nope' (the scores: 'logins')",
    ),
    case(
        "ranked-a-str",
        lambda: Model("m", scores={"logins": count("login")}, ranked="logins"),
        "ranked",
        "must be a list of score names, got str",
    ),
    case(
        "ranked-not-names",
        lambda: Model("m", scores={"logins": count("login")}, ranked=[1]),  # type: ignore[list-item]
        "ranked",
        "score names are str, got 1",
    ),
    case(
        "cycle-of-one-signal",
        lambda: Model("m", signals={"a": signal("a")}),
        "signals.a",
        "reference cycle: signals.a -> signals.a",
    ),
    case(
        "cycle-of-two-signals",
        lambda: Model("m", signals={"a": ~signal("b"), "b": signal("a") | did("x")}),
        "signals.a",
        "reference cycle: signals.a -> signals.b -> signals.a",
    ),
    case(
        "cycle-through-points",
        lambda: Model("m", signals={"a": score("s") >= 10}, scores={"s": points(a=10)}),
        "signals.a",
        "reference cycle: signals.a -> scores.s -> signals.a",
    ),
    case(
        "cycle-through-tev",
        lambda: Model(
            "m",
            signals={"on": score("t") >= 50},
            scores={
                "t": tev(
                    activation="on",
                    fast=days(1),
                    slow=days(2),
                    engagement=count("x"),
                    engagement_target=1,
                    virality=count("y"),
                    virality_target=1,
                )
            },
        ),
        "signals.on",
        "reference cycle: signals.on -> scores.t -> signals.on",
    ),
    # -- windows (_positive)
    case(
        "within-an-int",
        lambda: with_signal(did("x", within=7)),  # type: ignore[arg-type]
        "signals.bad",
        "within must be a positive timedelta, got 7",
    ),
    case(
        "within-negative",
        lambda: with_signal(count("x", within=-days(7)) >= 2),
        "signals.bad",
        "within must be a positive timedelta, got datetime.timedelta(days=-7)",
    ),
    case(
        "since-first-seen-zero",
        lambda: with_signal(active_days(since_first_seen=timedelta(0)) >= 2),
        "signals.bad",
        "since_first_seen must be a positive timedelta, got datetime.timedelta(0)",
    ),
    case(
        "active-users-within-zero",
        lambda: with_signal(active_users(within=days(0)) >= 2),
        "signals.bad",
        "within must be a positive timedelta, got datetime.timedelta(0)",
    ),
    case(
        "sequence-within-negative",
        lambda: with_signal(sequence("a", "b", within=-hours(1))),
        "signals.bad",
        "within must be a positive timedelta, got datetime.timedelta(days=-1, seconds=82800)",
    ),
    case(
        "absent-within-an-int",
        lambda: with_signal(absent("x", after="y", within=7)),  # type: ignore[arg-type]
        "signals.bad",
        "within must be a positive timedelta, got 7",
    ),
    # -- which events (_check_match)
    case(
        "event-name-empty",
        lambda: with_signal(did("")),
        "signals.bad",
        "an event name must be a non-empty str, got ''",
    ),
    case(
        "event-name-not-str",
        lambda: with_signal(count(5) >= 1),  # type: ignore[arg-type]
        "signals.bad",
        "an event name must be a non-empty str, got 5",
    ),
    case(
        "sequence-step-empty",
        lambda: with_signal(sequence("a", "")),
        "signals.bad",
        "an event name must be a non-empty str, got ''",
    ),
    case(
        "absent-after-empty",
        lambda: with_signal(absent("x", after="", within=days(7))),
        "signals.bad",
        "an event name must be a non-empty str, got ''",
    ),
    case(
        "where-a-list",
        lambda: with_signal(did("x", where=[("plan", "pro")])),  # type: ignore[arg-type]
        "signals.bad",
        "where= must be a dict of property values or a callable, got list",
    ),
    case(
        "where-key-not-str",
        lambda: with_score(total("x", "rows", where={1: "pro"})),
        "scores.bad",
        "where= keys must be str, got 1",
    ),
    case(
        "where-value-not-json",
        lambda: with_signal(did("x", where={"plan": NOT_JSON})),
        "signals.bad",
        "where='plan' must be a JSON value: Object of type object is not JSON serializable",
    ),
    case(
        "last-where-a-str",
        lambda: with_signal(last("x", "plan", where="pro") == "pro"),  # type: ignore[arg-type]
        "signals.bad",
        "where= must be a dict of property values or a callable, got str",
    ),
    # -- aggregates
    case(
        "within-and-since-first-seen",
        lambda: with_signal(did("x", within=days(7), since_first_seen=days(7))),
        "signals.bad",
        "use within= or since_first_seen=, not both",
    ),
    case(
        "total-property-not-str",
        lambda: with_score(total("usage", 3)),  # type: ignore[arg-type]
        "scores.bad",
        "total(): the property name must be a str, got 3",
    ),
    case(
        "distinct-property-none",
        lambda: with_score(distinct("invited", None)),  # type: ignore[arg-type]
        "scores.bad",
        "distinct(): the property name must be a str, got None",
    ),
    case(
        "sequence-of-nothing",
        lambda: with_signal(sequence()),
        "signals.bad",
        "sequence() needs at least one event",
    ),
    case(
        "absent-without-within",
        lambda: with_signal(absent("x", after="y", within=None)),  # type: ignore[arg-type]
        "signals.bad",
        "absent() needs within=",
    ),
    case(
        "trait-name-empty",
        lambda: with_signal(trait("") == "pro"),
        "signals.bad",
        "trait() needs a non-empty str name, got ''",
    ),
    case(
        "trait-of-a-team",
        lambda: with_signal(trait("plan", of="team") == "pro"),  # type: ignore[arg-type]
        "signals.bad",
        'trait(of=...) must be "user" or "account", got \'team\'',
    ),
    # -- references
    case(
        "unknown-signal",
        lambda: with_signal(signal("nope")),
        "signals.bad",
        "unknown signal 'nope'",
    ),
    case(
        "unknown-signal-in-pql",
        lambda: Model("m", pql=signal("activated")),
        "pql",
        "unknown signal 'activated'",
    ),
    case(
        "unknown-score-in-pqa",
        lambda: Model("m", pqa=score("fit") >= 20),
        "pqa",
        "unknown score 'fit'",
    ),
    case(
        "constant-nan",
        lambda: with_signal(count("x") >= math.nan),
        "signals.bad",
        "constant nan is not finite",
    ),
    case(
        "constant-infinite",
        lambda: with_score(count("x") * math.inf),
        "scores.bad",
        "constant inf is not finite",
    ),
    # -- comparisons and arithmetic
    case(
        "and-binds-tighter-than-a-comparison",
        lambda: with_signal(signal("on") & score("s") >= 5),
        "signals.bad",
        "cannot compare a condition (& and | bind tighter than comparisons: parenthesize"
        " them): (signal('on') & score('s')) >= 5",
    ),
    case(
        "condition-equals-true",
        lambda: with_signal(did("x") == True),  # noqa: E712 - the mistake under test
        "signals.bad",
        "cannot compare a condition (& and | bind tighter than comparisons: parenthesize"
        " them): count('x') >= 1 == true",
    ),
    case(
        "duration-against-a-number",
        lambda: with_signal(time_to("built") <= 2),
        "signals.bad",
        "cannot compare a duration with a number: time_to('built') <= 2",
    ),
    case(
        "number-against-a-duration",
        lambda: with_signal(count("x") > days(2)),
        "signals.bad",
        "cannot compare a duration with a number: count('x') > 2d",
    ),
    case(
        "number-against-a-str",
        lambda: with_signal(count("login") >= "3"),
        "signals.bad",
        "cannot compare a number with a str: count('login') >= '3'",
    ),
    case(
        "str-against-a-duration",
        lambda: with_signal(time_to("built") < "2d"),
        "signals.bad",
        "cannot compare a duration with a str: time_to('built') < '2d'",
    ),
    case(
        "idle-against-an-aggregate",
        lambda: with_signal(idle() >= time_to("built")),
        "signals.bad",
        "idle() can only be compared with a constant duration: idle() >= time_to('built')",
    ),
    case(
        "idle-in-arithmetic",
        lambda: with_signal(idle() * 2 >= days(14)),
        "signals.bad",
        "idle() can only be compared with a constant duration: (idle() * 2) >= 14d",
    ),
    case(
        "arithmetic-on-a-condition",
        lambda: with_score(did("x") * 10),
        "scores.bad",
        "arithmetic on a condition: (count('x') >= 1 * 10)",
    ),
    case(
        "arithmetic-on-a-duration",
        lambda: with_signal(time_to("built") + days(1) <= days(3)),
        "signals.bad",
        "arithmetic on durations is not supported: (time_to('built') + 1d)",
    ),
    # -- combinators
    case(
        "all-of-nothing",
        lambda: with_signal(all_of()),
        "signals.bad",
        "all_of() needs at least one condition",
    ),
    case(
        "any-of-nothing",
        lambda: Model("m", pql=any_of()),
        "pql",
        "any_of() needs at least one condition",
    ),
    case(
        "at-least-of-nothing",
        lambda: with_signal(at_least(1)),
        "signals.bad",
        "at_least() needs at least one condition",
    ),
    case(
        "not-a-number",
        lambda: with_signal(~count("x")),
        "signals.bad",
        "expected a condition, got a number: count('x')",
    ),
    case(
        "and-a-signal-name",
        lambda: with_signal(did("x") & "on"),
        "signals.bad",
        "expected a condition, got the str 'on' (a signal by name is signal('on'))",
    ),
    case(
        "all-of-a-signal-name",
        lambda: with_signal(all_of(did("x"), "on")),  # type: ignore[arg-type]
        "signals.bad",
        "expected a condition, got str 'on' (a signal by name is signal('on'))",
    ),
    case(
        "any-of-a-number",
        lambda: with_signal(any_of(did("x"), 3)),  # type: ignore[arg-type]
        "signals.bad",
        "expected a condition, got int 3",
    ),
    case(
        "at-least-a-score",
        lambda: with_signal(at_least(1, did("x"), score("s"))),
        "signals.bad",
        "expected a condition, got a number: score('s')",
    ),
    case(
        "at-least-k-too-big",
        lambda: with_signal(at_least(3, did("a"), did("b"))),
        "signals.bad",
        "at_least(k, ...) needs 1 <= k <= 2, got k=3",
    ),
    case(
        "at-least-k-zero",
        lambda: with_signal(at_least(0, did("a"), did("b"))),
        "signals.bad",
        "at_least(k, ...) needs 1 <= k <= 2, got k=0",
    ),
    case(
        "at-least-k-a-float",
        lambda: with_signal(at_least(1.5, did("a"), did("b"))),  # type: ignore[arg-type]
        "signals.bad",
        "at_least(k, ...) needs 1 <= k <= 2, got k=1.5",
    ),
    case(
        "at-least-k-a-bool",
        lambda: with_signal(at_least(True, did("a"))),
        "signals.bad",
        "at_least(k, ...) needs 1 <= k <= 1, got k=True",
    ),
    case(
        "is-in-on-a-condition",
        lambda: with_signal(did("x").is_in([True])),
        "signals.bad",
        "is_in() needs a value, not a condition: count('x') >= 1 in [true]",
    ),
    # -- scores
    case(
        "points-of-nothing",
        lambda: with_score(points()),
        "scores.bad",
        "points() needs at least one signal",
    ),
    case(
        "points-unknown-signal",
        lambda: with_score(points(on=10, activated=30)),
        "scores.bad",
        "points(): unknown signal 'activated'",
    ),
    case(
        "points-weight-a-str",
        lambda: with_score(points(on="30")),  # type: ignore[arg-type]
        "scores.bad",
        "points(): weight of 'on' must be a number, got '30'",
    ),
    case(
        "points-weight-a-bool",
        lambda: with_score(points(on=True)),
        "scores.bad",
        "points(): weight of 'on' must be a number, got True",
    ),
    case(
        "points-weight-nan",
        lambda: with_score(points(on=math.nan)),
        "scores.bad",
        "points(): weight of 'on' must be a number, got nan",
    ),
    case(
        "tev-unknown-activation",
        lambda: with_tev(activation="activated"),
        "scores.bad",
        "tev(): unknown activation signal 'activated'",
    ),
    case(
        "tev-fast-none",
        lambda: with_tev(fast=None),
        "scores.bad",
        "tev(): fast must be a positive timedelta, got None",
    ),
    case(
        "tev-slow-in-days-as-int",
        lambda: with_tev(slow=14),
        "scores.bad",
        "tev(): slow must be a positive timedelta, got 14",
    ),
    case(
        "tev-slow-not-after-fast",
        lambda: with_tev(fast=days(14), slow=days(2)),
        "scores.bad",
        "tev(): slow must be longer than fast",
    ),
    case(
        "tev-engagement-a-condition",
        lambda: with_tev(engagement=did("login")),
        "scores.bad",
        "tev(): engagement must be numeric, got a condition: count('login') >= 1",
    ),
    case(
        "tev-virality-a-number",
        lambda: with_tev(virality=3),
        "scores.bad",
        "tev(): virality must be numeric, got int 3",
    ),
    case(
        "tev-engagement-target-zero",
        lambda: with_tev(engagement_target=0),
        "scores.bad",
        "tev(): engagement_target must be a positive number, got 0",
    ),
    case(
        "tev-virality-target-a-str",
        lambda: with_tev(virality_target="3"),
        "scores.bad",
        "tev(): virality_target must be a positive number, got '3'",
    ),
    case(
        "tev-two-weights",
        lambda: with_tev(weights=(1, 1)),
        "scores.bad",
        "tev(): weights must be three non-negative numbers, got (1, 1)",
    ),
    case(
        "tev-negative-weight",
        lambda: with_tev(weights=(1, -1, 1)),
        "scores.bad",
        "tev(): weights must be three non-negative numbers, got (1, -1, 1)",
    ),
    case(
        "tev-weights-all-zero",
        lambda: with_tev(weights=(0, 0, 0)),
        "scores.bad",
        "tev(): weights must not all be 0",
    ),
    case(
        "fit-of-nothing",
        lambda: with_score(fit()),
        "scores.bad",
        "fit() needs at least one (condition, points) pair",
    ),
    case(
        "fit-a-number-as-condition",
        lambda: with_score(fit((trait("employees", of="account"), 20))),
        "scores.bad",
        "fit(): trait('employees', of=\"account\") is not a condition",
    ),
    case(
        "fit-a-signal-name-as-condition",
        lambda: with_score(fit(("on", 20))),  # type: ignore[arg-type]
        "scores.bad",
        "fit(): 'on' is not a condition",
    ),
    case(
        "fit-points-a-str",
        lambda: with_score(fit((signal("on"), "20"))),  # type: ignore[arg-type]
        "scores.bad",
        "fit(): the points of signal('on') must be a number, got '20'",
    ),
]


@pytest.mark.parametrize(("build", "name", "reason"), BAD_DECLARATIONS)
def test_a_bad_declaration_names_its_offender(
    build: Callable[[], object], name: str | None, reason: str
) -> None:
    """Building the model raises ModelError with this exact offender and reason."""
    with pytest.raises(ModelError) as info:
        build()
    assert (info.value.name, info.value.reason) == (name, reason)
    assert str(info.value) == f"{name}: {reason}"


def _reason_patterns() -> list[tuple[int, re.Pattern[str]]]:
    """Each ``raise ModelError(name, reason)`` in _model.py: its line and its reason as a regex."""
    source = Path(pqlkit._model.__file__).read_text()
    patterns = []
    for node in ast.walk(ast.parse(source)):
        if not (
            isinstance(node, ast.Raise)
            and isinstance(node.exc, ast.Call)
            and isinstance(node.exc.func, ast.Name)
            and node.exc.func.id == "ModelError"
        ):
            continue
        reason = node.exc.args[1]
        parts = reason.values if isinstance(reason, ast.JoinedStr) else [reason]
        regex = "".join(re.escape(p.value) if isinstance(p, ast.Constant) else ".+" for p in parts)
        patterns.append((node.lineno, re.compile(regex)))
    return sorted(patterns, key=lambda p: p[0])


def test_every_raise_in_the_model_has_a_case() -> None:
    """Each of _model.py's raise ModelError sites produces the reason of some case above."""
    reasons = [p.values[2] for p in BAD_DECLARATIONS]
    patterns = _reason_patterns()
    missing = [
        line
        for line, pattern in patterns
        if not any(pattern.fullmatch(reason) for reason in reasons)  # type: ignore[arg-type]
    ]
    assert len(patterns) == 63
    assert missing == []


# -- good declarations -----------------------------------------------------------

FREE_MAIL = ("gmail.com", "yahoo.com")


def is_pro(properties: Mapping[str, Any]) -> bool:
    """A where= function: the event is about the pro plan."""
    return properties.get("plan") == "pro"


def data_tooling(**changes: Any) -> Model:
    """The model of API.md section 2 (``changes`` override the Model's arguments)."""
    arguments: dict[str, Any] = {
        "signals": {
            "activated": did("warehouse_connected") & did("dashboard_built"),
            "invited": count("teammate_invited") >= 1,
            "api_key": did("api_key_generated"),
            "pricing_visit": did("page_viewed", where={"path": "/pricing"}, within=days(30)),
            "pro_upgrade": did("upgraded", where=is_pro),
            "near_row_limit": last("usage_reported", "rows") >= trait("row_limit") * 0.8,
            "habit": active_days(within=days(7)) >= 5,
            "trial_projects": count("project_created", since_first_seen=days(14)) >= 3,
            "fast_start": sequence("contacts_imported", "email_sent", within=hours(48)),
            "fast_value": time_to("dashboard_built") <= days(2),
            "dormant": idle() >= days(14),
            "churning": absent("login", after="trial_started", within=days(7)),
            "big_company": trait("employees", of="account") >= 200,
        },
        "scores": {
            "behavior": points(
                activated=30,
                invited=20,
                api_key=15,
                pricing_visit=10,
                near_row_limit=10,
                dormant=-25,
            ),
            "tev": tev(
                activation="activated",
                fast=days(2),
                slow=days(14),
                engagement=active_days(within=days(14)),
                engagement_target=7,
                virality=distinct("teammate_invited", "email"),
                virality_target=3,
            ),
            "fit": fit(
                (trait("employees", of="account") >= 200, 20),
                (trait("email_domain").is_in(FREE_MAIL), -30),
            ),
            "rows": total("usage_reported", "rows", within=days(30)),
        },
        "pql": (score("behavior") + score("fit") >= 50) & ~signal("dormant"),
        "pqa": active_users(within=days(14)) >= 3,
        **changes,
    }
    return Model("data-tooling", **arguments)


def test_a_valid_model_builds() -> None:
    """The API.md model builds and keeps its parts; repr shows sizes and fingerprint."""
    model = data_tooling()
    assert model.name == "data-tooling"
    assert len(model.signals) == 13
    assert sorted(model.scores) == ["behavior", "fit", "rows", "tev"]
    assert re.fullmatch("[0-9a-f]{16}", model.fingerprint)
    assert repr(model) == (
        f"Model('data-tooling', signals=13, scores=4, fingerprint={model.fingerprint!r})"
    )


def test_an_empty_model_builds_and_never_fires() -> None:
    """A model with nothing but a name is valid; its rules read "never"."""
    assert Model("empty").describe() == "\n".join(
        [
            "model 'empty'",
            "version None",
            "pql: never",
            "pqa: never",
            "requalify_after: never",
        ]
    )


def test_describe_is_the_canonical_declaration() -> None:
    """describe() lists signals and scores sorted by name, then the rules and options."""
    model = Model(
        "m",
        signals={"b": did("b"), "a": did("a", within=days(7))},
        scores={"s": points(a=10, b=5)},
        pql=score("s") >= 10,
        version="3",
        requalify_after=days(30),
    )
    assert model.describe().splitlines() == [
        "model 'm'",
        "version '3'",
        "signal 'a': count('a', within=7d) >= 1",
        "signal 'b': count('b') >= 1",
        "score 's': points(a=10, b=5)",
        "pql: score('s') >= 10",
        "pqa: never",
        "requalify_after: 2592000.0",
    ]


def test_the_fingerprint_is_stable_across_identical_declarations() -> None:
    """Two separately built identical models have the same fingerprint."""
    assert data_tooling().fingerprint == data_tooling().fingerprint


def _retuned_behavior(**weights: float) -> dict[str, Any]:
    """data_tooling() changes: the behavior score with these weights."""
    scores = dict(data_tooling().scores)
    scores["behavior"] = points(**weights)
    return {"scores": scores}


def _retuned_signal(name: str, expr: Any) -> dict[str, Any]:
    """data_tooling() changes: signal ``name`` is ``expr``."""
    return {"signals": {**data_tooling().signals, name: expr}}


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param(
            _retuned_behavior(
                activated=35,
                invited=20,
                api_key=15,
                pricing_visit=10,
                near_row_limit=10,
                dormant=-25,
            ),
            id="a-weight",
        ),
        pytest.param(_retuned_signal("habit", active_days(within=days(7)) >= 4), id="a-threshold"),
        pytest.param(_retuned_signal("habit", active_days(within=days(6)) >= 5), id="a-window"),
        pytest.param(
            _retuned_signal("pricing_visit", did("page_viewed", where={"path": "/plans"})),
            id="a-where-value",
        ),
        pytest.param(_retuned_signal("new", did("exported")), id="a-new-signal"),
        pytest.param({"pql": score("behavior") >= 50}, id="the-pql-rule"),
        pytest.param({"pqa": None}, id="the-pqa-rule-removed"),
        pytest.param({"requalify_after": days(30)}, id="requalify-after"),
        pytest.param({"version": "2"}, id="version-bumped"),
    ],
)
def test_the_fingerprint_changes_with_what_scores(changes: dict[str, Any]) -> None:
    """A tuned weight, threshold, window, filter, rule, option or version: a new fingerprint."""
    assert data_tooling(**changes).fingerprint != data_tooling().fingerprint


def test_the_model_name_is_part_of_the_fingerprint() -> None:
    """Renaming the model changes the fingerprint (a new name also starts firing over)."""
    assert Model("a", signals={"x": did("x")}).fingerprint != (
        Model("b", signals={"x": did("x")}).fingerprint
    )


def _seats_at_least(threshold: int) -> Callable[[Mapping[str, Any]], bool]:
    """Functions with one qualified name and different code (a closure over ``threshold``)."""

    def big_account(properties: Mapping[str, Any]) -> bool:
        return int(properties.get("seats", 0)) >= threshold

    return big_account


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            {"a": did("a"), "b": did("b")}, {"b": did("b"), "a": did("a")}, id="signal-order"
        ),
        pytest.param(
            {"a": did("a", where={"plan": "pro", "seats": 3})},
            {"a": did("a", where={"seats": 3, "plan": "pro"})},
            id="where-key-order",
        ),
        pytest.param(
            {"a": trait("domain").is_in(["yahoo.com", "gmail.com"])},
            {"a": trait("domain").is_in(["gmail.com", "yahoo.com", "gmail.com"])},
            id="is-in-option-order",
        ),
        pytest.param(
            {"a": did("a", within=days(2))}, {"a": did("a", within=hours(48))}, id="duration-unit"
        ),
        pytest.param({"a": count("a") >= 1}, {"a": did("a")}, id="did-is-count-at-least-one"),
        pytest.param(
            {"a": did("a", where=_seats_at_least(5))},
            {"a": did("a", where=_seats_at_least(10))},
            id="where-function-code",
        ),
    ],
)
def test_the_fingerprint_ignores_what_does_not_score(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    """Order, spelling of one duration or filter, a where= function's code: no change."""
    assert Model("m", signals=first).fingerprint == Model("m", signals=second).fingerprint


@pytest.mark.parametrize(
    "cool_down", [None, timedelta(microseconds=1), days(30)], ids=["never", "1us", "30d"]
)
def test_requalify_after_accepts_none_or_a_positive_timedelta(
    cool_down: timedelta | None,
) -> None:
    """requalify_after is kept as given, and shows in describe() in seconds."""
    model = Model("m", signals={"x": did("x")}, pql=signal("x"), requalify_after=cool_down)
    assert model.requalify_after == cool_down
    shown = "never" if cool_down is None else str(cool_down.total_seconds())
    assert model.describe().splitlines()[-1] == f"requalify_after: {shown}"


def test_a_model_error_is_a_value_error_that_pickles() -> None:
    """ModelError carries name and reason, is a ValueError, and survives pickling."""
    import pickle

    with pytest.raises(ValueError, match="unknown signal") as info:
        Model("m", pql=signal("nope"))
    error = info.value
    assert isinstance(error, ModelError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.name, copy.reason, str(copy)) == ("pql", "unknown signal 'nope'", str(error))


def test_a_model_is_frozen() -> None:
    """A built Model cannot be changed in place (its fingerprint would go stale)."""
    model = Model("m", signals={"a": did("x")}, pql=signal("a"))
    with pytest.raises(AttributeError, match="frozen"):
        model.pql = signal("a") | did("y")  # type: ignore[misc]
    with pytest.raises(AttributeError, match="frozen"):
        model.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError, match="frozen"):
        del model.version
    with pytest.raises(TypeError):
        model.signals["b"] = did("y")  # type: ignore[index]
    assert list(model.signals) == ["a"]
