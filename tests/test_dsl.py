"""The model DSL as a user writes it: describe() texts, operators, where=, windows, helpers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import pytest

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
    minutes,
    points,
    score,
    sequence,
    signal,
    tev,
    time_to,
    total,
    trait,
)
from pqlkit._dsl import All, Any_, Arith, Compare, Const, Expr, Not
from pqlkit.testing import START, ClientFactory, FrozenClock


def is_pro(properties: Mapping[str, Any]) -> bool:
    """A where= function: the event is about the pro plan."""
    return properties.get("plan") == "pro"


A, B, C = did("a"), did("b"), did("c")

DESCRIPTIONS = [
    # aggregates
    pytest.param(lambda: count(), "count()", id="count-any-event"),
    pytest.param(lambda: count("login"), "count('login')", id="count"),
    pytest.param(
        lambda: count("login", within=days(7)), "count('login', within=7d)", id="count-within"
    ),
    pytest.param(lambda: count(within=hours(36)), "count(within=36h)", id="count-any-within"),
    pytest.param(
        lambda: count("project_created", since_first_seen=days(14)),
        "count('project_created', since_first_seen=14d)",
        id="count-since-first-seen",
    ),
    pytest.param(
        lambda: count(where={"plan": "pro", "seats": 3}),
        'count(*, where={"plan":"pro","seats":3})',
        id="count-any-event-where",
    ),
    pytest.param(
        lambda: count("upgraded", where={"seats": 3, "plan": "pro"}),
        'count(\'upgraded\', where={"plan":"pro","seats":3})',
        id="where-dict-keys-sorted",
    ),
    pytest.param(
        lambda: count("upgraded", where=is_pro, within=days(30)),
        "count('upgraded', where=is_pro, within=30d)",
        id="where-function-by-name",
    ),
    pytest.param(lambda: did("api_key"), "count('api_key') >= 1", id="did"),
    pytest.param(
        lambda: total("usage", "rows", within=days(30)),
        "total('usage', 'rows', within=30d)",
        id="total",
    ),
    pytest.param(lambda: total(None, "rows"), "total(*, 'rows')", id="total-any-event"),
    pytest.param(
        lambda: distinct("invited", "email", since_first_seen=days(7)),
        "distinct('invited', 'email', since_first_seen=7d)",
        id="distinct",
    ),
    pytest.param(lambda: active_days(within=days(7)), "active_days(within=7d)", id="active-days"),
    pytest.param(
        lambda: active_users("login", within=days(14)),
        "active_users('login', within=14d)",
        id="active-users",
    ),
    pytest.param(lambda: last("usage", "rows"), "last('usage', 'rows')", id="last"),
    pytest.param(
        lambda: last("usage", "rows", where={"plan": "pro"}),
        "last('usage', where={\"plan\":\"pro\"}, 'rows')",
        id="last-where",
    ),
    pytest.param(lambda: time_to("built"), "time_to('built')", id="time-to"),
    pytest.param(lambda: idle(), "idle()", id="idle"),
    pytest.param(lambda: trait("plan"), "trait('plan')", id="trait"),
    pytest.param(
        lambda: trait("employees", of="account"),
        "trait('employees', of=\"account\")",
        id="trait-of-account",
    ),
    pytest.param(
        lambda: sequence("imported", "sent", within=hours(48)),
        "sequence('imported', 'sent', within=2d)",
        id="sequence",
    ),
    pytest.param(lambda: sequence("a", "b"), "sequence('a', 'b')", id="sequence-no-window"),
    pytest.param(
        lambda: absent("built", after="signed_up", within=days(7)),
        "absent('built', after='signed_up', within=7d)",
        id="absent",
    ),
    pytest.param(lambda: signal("activated"), "signal('activated')", id="signal"),
    pytest.param(lambda: score("behavior"), "score('behavior')", id="score"),
    # conditions
    pytest.param(lambda: A & B, "(count('a') >= 1 & count('b') >= 1)", id="and"),
    pytest.param(lambda: A | B, "(count('a') >= 1 | count('b') >= 1)", id="or"),
    pytest.param(lambda: ~A, "~count('a') >= 1", id="not"),
    pytest.param(
        lambda: A & B & C,
        "((count('a') >= 1 & count('b') >= 1) & count('c') >= 1)",
        id="and-nests-left",
    ),
    pytest.param(
        lambda: all_of(A, B, C),
        "(count('a') >= 1 & count('b') >= 1 & count('c') >= 1)",
        id="all-of-is-flat",
    ),
    pytest.param(lambda: any_of(A, ~B), "(count('a') >= 1 | ~count('b') >= 1)", id="any-of"),
    pytest.param(
        lambda: at_least(2, A, B, C),
        "at_least(2, count('a') >= 1, count('b') >= 1, count('c') >= 1)",
        id="at-least",
    ),
    pytest.param(
        lambda: trait("domain").is_in(["yahoo.com", "gmail.com", "yahoo.com"]),
        "trait('domain') in ['gmail.com', 'yahoo.com']",
        id="is-in-sorted-unique",
    ),
    pytest.param(lambda: count("x") < 3, "count('x') < 3", id="lt"),
    pytest.param(lambda: count("x") <= 3, "count('x') <= 3", id="le"),
    pytest.param(lambda: count("x") > 3, "count('x') > 3", id="gt"),
    pytest.param(lambda: count("x") >= 3.5, "count('x') >= 3.5", id="ge-float"),
    pytest.param(lambda: trait("plan") == "pro", "trait('plan') == 'pro'", id="eq-str"),
    pytest.param(lambda: trait("beta") != True, "trait('beta') != true", id="ne-bool"),  # noqa: E712
    pytest.param(lambda: trait("plan") == None, "trait('plan') == None", id="eq-none"),  # noqa: E711
    pytest.param(lambda: idle() >= days(14), "idle() >= 14d", id="idle-duration"),
    # scores
    pytest.param(
        lambda: points(activated=30, dormant=-25.5),
        "points(activated=30, dormant=-25.5)",
        id="points",
    ),
    pytest.param(
        lambda: fit((trait("employees", of="account") >= 200, 20), (did("x"), -5)),
        "fit((trait('employees', of=\"account\") >= 200, 20), (count('x') >= 1, -5))",
        id="fit",
    ),
    pytest.param(
        lambda: tev(
            activation="activated",
            fast=days(2),
            slow=days(14),
            engagement=active_days(within=days(14)),
            engagement_target=7,
            virality=distinct("invited", "email"),
            virality_target=3,
        ),
        "tev(activation='activated', fast=2d, slow=14d, engagement=active_days(within=14d),"
        " engagement_target=7, virality=distinct('invited', 'email'), virality_target=3,"
        " weights=[1.0, 1.0, 1.0])",
        id="tev",
    ),
]


@pytest.mark.parametrize(("build", "expected"), DESCRIPTIONS)
def test_describe_gives_the_canonical_text(build: Callable[[], Expr], expected: str) -> None:
    """Each DSL node's describe() (and repr) is this exact text."""
    expr = build()
    assert expr.describe() == expected
    assert repr(expr) == expected


@pytest.mark.parametrize(
    ("window", "shown"),
    [
        (days(1), "1d"),
        (hours(24), "1d"),
        (hours(48), "2d"),
        (hours(36), "36h"),
        (minutes(90), "90m"),
        (minutes(120), "2h"),
        (timedelta(seconds=45), "45s"),
        (timedelta(milliseconds=1500), "1500000us"),
    ],
    ids=lambda v: str(v),
)
def test_a_window_is_described_in_its_largest_exact_unit(window: timedelta, shown: str) -> None:
    """A duration reads in the largest unit that divides it exactly."""
    assert count("x", within=window).describe() == f"count('x', within={shown})"


def test_days_hours_minutes_are_plain_timedeltas() -> None:
    """days(), hours() and minutes() return timedeltas, fractions included."""
    assert days(7) == timedelta(days=7)
    assert hours(1.5) == minutes(90) == timedelta(seconds=5400)
    assert days(0.5) == hours(12)
    assert isinstance(minutes(1), timedelta)


def test_an_explanation_reads_in_describe_texts(pql_client: ClientFactory) -> None:
    """Client.explain() shows each node's describe() with its value."""
    model = Model(
        "explained",
        signals={
            "habit": active_days(within=days(7)) >= 5,
            "active": did("login") & ~did("churned"),
            "two": at_least(2, did("login"), did("invite"), did("export")),
        },
        scores={"fit": fit((trait("employees", of="account") >= 200, 20))},
    )
    client = pql_client(model)
    client.track("u1", "login")
    client.track("u1", "export")
    assert client.explain("u1") == [
        "habit: active_days(within=7d) = 1 >= 5 -> false",
        "active: (count('login') = 1 >= 1 & not (count('churned') = 0 >= 1)) -> true",
        "two: at_least(2 of: count('login') = 1 >= 1, count('invite') = 0 >= 1,"
        " count('export') = 1 >= 1) -> true",
        "fit = 0: trait('employees', of=\"account\") >= 200 0 (false, would be +20)",
        "pql: never (no rule declared)",
    ]


def test_a_negation_says_what_is_true(pql_client: ClientFactory) -> None:
    """A negated signal reads as the negation and its value (``not signal('dormant') = true``:
    not dormant), like every other part of a line, not as a negated statement that is itself
    false while the part holds (``not (signal('dormant') = false)``)."""
    model = Model(
        "negated",
        signals={"dormant": did("went_dormant"), "built": did("dashboard_built")},
        pql=signal("built") & ~signal("dormant"),
    )
    client = pql_client(model)
    client.track("u1", "dashboard_built")
    assert client.explain("u1")[-1] == (
        "pql: (signal('built') = true & not signal('dormant') = true) -> true"
    )
    client.track("u1", "went_dormant")
    assert client.explain("u1")[-1] == (
        "pql: (signal('built') = true & not signal('dormant') = false) -> false"
    )


def test_a_negated_condition_aggregate_says_what_is_true(pql_client: ClientFactory) -> None:
    """``~sequence(...)`` (an aggregate that is true or false) reads as the negation and its
    value too; a negated comparison keeps its threshold inside ``not (...)``."""
    model = Model(
        "negated",
        signals={
            "no_tour": ~sequence("signed_up", "tour_done"),
            "few": ~(count("login") >= 2),
        },
    )
    client = pql_client(model)
    client.track("u1", "signed_up")
    client.track("u1", "login")
    assert client.explain("u1")[:2] == [
        "no_tour: not sequence('signed_up', 'tour_done') = true -> true",
        "few: not (count('login') = 1 >= 2) -> true",
    ]


# -- operators -------------------------------------------------------------------


def test_and_or_not_build_all_any_not() -> None:
    """& | ~ build All, Any_ and Not over the operands, in order."""
    both, either, neither = A & B, A | B, ~A
    assert isinstance(both, All)
    assert both.items == (A, B)
    assert isinstance(either, Any_)
    assert either.items == (A, B)
    assert isinstance(neither, Not)
    assert neither.item is A


def test_a_plain_value_on_either_side_of_and_becomes_a_constant() -> None:
    """True & did() and did() | False lift the bool into a Const, on its own side."""
    left, right = True & A, A | False
    assert isinstance(left, All)
    assert isinstance(right, Any_)
    assert [type(i) for i in left.items] == [Const, Compare]
    assert [type(i) for i in right.items] == [Compare, Const]
    assert left.items[1] is A
    assert right.items[0] is A
    assert (left.items[0].value, right.items[1].value) == (True, False)


@pytest.mark.parametrize(
    ("build", "op", "expected"),
    [
        (lambda: 3 < count("x"), ">", "count('x') > 3"),  # noqa: SIM300
        (lambda: 3 <= count("x"), ">=", "count('x') >= 3"),  # noqa: SIM300
        (lambda: 3 > count("x"), "<", "count('x') < 3"),  # noqa: SIM300
        (lambda: 3 >= count("x"), "<=", "count('x') <= 3"),  # noqa: SIM300
        (lambda: 3 == count("x"), "==", "count('x') == 3"),  # noqa: SIM300
        (lambda: 3 != count("x"), "!=", "count('x') != 3"),  # noqa: SIM300
        (lambda: days(2) >= time_to("built"), "<=", "time_to('built') <= 2d"),
    ],
    ids=["lt", "le", "gt", "ge", "eq", "ne", "duration"],
)
def test_a_number_on_the_left_of_a_comparison_is_mirrored(
    build: Callable[[], Compare], op: str, expected: str
) -> None:
    """`3 < count(x)` is Python's reflected `count(x) > 3`: the aggregate stays on the left."""
    compare = build()
    assert isinstance(compare, Compare)
    assert compare.op == op
    assert isinstance(compare.right, Const)
    assert compare.describe() == expected


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: count("x") + 1, "(count('x') + 1)"),
        (lambda: 1 + count("x"), "(1 + count('x'))"),
        (lambda: count("x") - 1, "(count('x') - 1)"),
        (lambda: 100 - count("x"), "(100 - count('x'))"),
        (lambda: count("x") * 0.5, "(count('x') * 0.5)"),
        (lambda: 2 * count("x"), "(2 * count('x'))"),
        (lambda: count("x") / 4, "(count('x') / 4)"),
        (lambda: 1 / count("x"), "(1 / count('x'))"),
        (lambda: score("a") + score("b") * 2, "(score('a') + (score('b') * 2))"),
    ],
    ids=["add", "radd", "sub", "rsub", "mul", "rmul", "div", "rdiv", "precedence"],
)
def test_arithmetic_keeps_each_operand_on_its_side(
    build: Callable[[], Arith], expected: str
) -> None:
    """+ - * / with a number on either side build Arith with the number where it was written."""
    arith = build()
    assert isinstance(arith, Arith)
    assert arith.describe() == expected


def test_arithmetic_scores_evaluate_with_numbers_on_either_side(
    pql_client: ClientFactory,
) -> None:
    """Scores written as arithmetic evaluate as written, whichever side the number is on."""
    model = Model(
        "arith",
        scores={
            "left": 100 - count("a") * 10,
            "right": count("a") / 4 + 1,
            "inverse": 2 / count("a"),
        },
    )
    client = pql_client(model)
    client.track("u1", "a")
    client.track("u1", "a")
    assert client.scores("u1") == {"left": 80, "right": 1.5, "inverse": 1.0}


def test_equality_builds_a_condition_and_hashing_is_by_identity() -> None:
    """`==` on an expression builds a Compare, never a bool; expressions hash by identity."""
    first, second = did("x"), did("x")
    assert isinstance(first == second, Compare)
    assert isinstance(count("x") != 3, Compare)
    assert {first: "kept"}[first] == "kept"
    assert first in {first}
    assert second not in {first}  # the same text, another object


@pytest.mark.parametrize(
    "misuse",
    [
        pytest.param(lambda: bool(did("x")), id="bool"),
        pytest.param(lambda: "yes" if did("x") else "no", id="if"),
        pytest.param(lambda: did("a") and did("b"), id="and-keyword"),
        pytest.param(lambda: did("a") or did("b"), id="or-keyword"),
        pytest.param(lambda: not did("a"), id="not-keyword"),
        pytest.param(lambda: 1 <= count("x") <= 3, id="chained-comparison"),
        pytest.param(lambda: did("b") in [did("a")], id="in-a-list"),
    ],
)
def test_an_expression_has_no_truth_value(misuse: Callable[[], object]) -> None:
    """`if did("x"):`, and/or/not and chained comparisons raise TypeError saying what to write."""
    with pytest.raises(TypeError) as info:
        misuse()
    assert str(info.value) == (
        "a pqlkit expression has no truth value: combine conditions with & | ~ "
        "(not `and`/`or`/`not`), and do not chain comparisons"
    )


# -- where= ----------------------------------------------------------------------


def test_where_dict_matches_when_every_key_is_equal(pql_client: ClientFactory) -> None:
    """where={...} needs every key present and equal; other properties do not matter."""
    model = Model("where", signals={"pro": did("upgraded", where={"plan": "pro", "seats": 3})})
    client = pql_client(model)
    client.track("missing", "upgraded", {"plan": "pro"})
    client.track("different", "upgraded", {"plan": "pro", "seats": 4})
    client.track("other-event", "downgraded", {"plan": "pro", "seats": 3})
    client.track("equal", "upgraded", {"plan": "pro", "seats": 3, "coupon": "x"})
    truth = {u: client.signals(u)["pro"] for u in ("missing", "different", "other-event", "equal")}
    assert truth == {"missing": False, "different": False, "other-event": False, "equal": True}


def test_where_function_gets_the_properties(pql_client: ClientFactory) -> None:
    """where=function decides from the event's properties (a threshold a dict cannot say)."""
    seen: list[dict[str, Any]] = []

    def big(properties: Mapping[str, Any]) -> bool:
        seen.append(dict(properties))
        return int(properties.get("seats", 0)) >= 10

    client = pql_client(Model("where", signals={"big": did("upgraded", where=big)}))
    client.track("small", "upgraded", {"seats": 9})
    client.track("large", "upgraded", {"seats": 12})
    assert {u: client.signals(u)["big"] for u in ("small", "large")} == {
        "small": False,
        "large": True,
    }
    assert {"seats": 12} in seen


def test_two_where_functions_of_one_name_stay_apart(pql_client: ClientFactory) -> None:
    """Two lambdas describe alike (their name) but each counts only its own events."""
    one = did("e", where=lambda p: p.get("k") == 1)
    two = did("e", where=lambda p: p.get("k") == 2)
    assert one.describe() == two.describe()
    client = pql_client(Model("lambdas", signals={"one": one, "two": two}))
    client.track("u1", "e", {"k": 1})
    assert client.signals("u1") == {"one": True, "two": False}


def test_where_values_that_look_like_describe_syntax_stay_apart(
    pql_client: ClientFactory,
) -> None:
    """A where= value holding "(, " no longer describes (and shares state) like another one."""
    odd = did("e", where={"k": "a(, b"})
    plain = did("e", where={"k": "a(b"})
    assert odd.describe() == 'count(\'e\', where={"k":"a(, b"}) >= 1'
    client = pql_client(Model("syntax", signals={"odd": odd, "plain": plain}))
    client.track("u1", "e", {"k": "a(b"})
    assert client.signals("u1") == {"odd": False, "plain": True}


# -- windows and arguments ---------------------------------------------------------


def test_windows_are_keyword_only() -> None:
    """within= and since_first_seen= cannot be passed by position (a days(7) is not a filter)."""
    with pytest.raises(TypeError):
        count("login", None, days(7))  # type: ignore[misc]
    with pytest.raises(TypeError):
        total("usage", "rows", None, days(7))  # type: ignore[misc]


def test_windows_count_only_their_own_span(
    pql_client: ClientFactory, pql_clock: FrozenClock
) -> None:
    """within=D counts the last D; since_first_seen=D the first D of the subject's life."""
    model = Model(
        "windows",
        scores={
            "all": count("login"),
            "recent": count("login", within=days(7)),
            "trial": count("login", since_first_seen=days(7)),
        },
    )
    client = pql_client(model)
    pql_clock.set(START + days(20))
    for day in (0, 1, 10, 20):
        client.track("u1", "login", timestamp=START + days(day))
    assert client.scores("u1") == {"all": 4, "recent": 1, "trial": 2}


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        pytest.param(
            lambda: did("x", within=7),
            "within must be a positive timedelta, got 7",
            id="within-an-int",
        ),
        pytest.param(
            lambda: did("x", within=days(7), since_first_seen=days(7)),
            "use within= or since_first_seen=, not both",
            id="both-windows",
        ),
        pytest.param(
            lambda: all_of(), "all_of() needs at least one condition", id="all-of-nothing"
        ),
        pytest.param(
            lambda: any_of(did("x"), "dormant"),
            "expected a condition, got str 'dormant' (a signal by name is signal('dormant'))",
            id="any-of-a-name",
        ),
        pytest.param(
            lambda: at_least(3, did("x"), did("y")),
            "at_least(k, ...) needs 1 <= k <= 2, got k=3",
            id="at-least-too-many",
        ),
    ],
)
def test_arguments_are_checked_when_the_model_is_built(
    expr: Callable[[], Expr], reason: str
) -> None:
    """A DSL call takes what it is given; the Model refuses it, naming the signal."""
    built = expr()  # no error yet: expressions are plain values
    with pytest.raises(ModelError) as info:
        Model("m", signals={"bad": built})
    assert (info.value.name, info.value.reason) == ("signals.bad", reason)


def test_combinators_hold_as_documented(pql_client: ClientFactory) -> None:
    """all_of: every one; any_of: one or more; at_least(k): k or more of them."""
    model = Model(
        "combinators",
        signals={
            "all": all_of(A, B, C),
            "any": any_of(A, B, C),
            "two": at_least(2, A, B, C),
            "three": at_least(3, A, B, C),
        },
    )
    client = pql_client(model)
    client.track("u1", "a")
    assert client.signals("u1") == {"all": False, "any": True, "two": False, "three": False}
    client.track("u1", "c")
    assert client.signals("u1") == {"all": False, "any": True, "two": True, "three": False}
    client.track("u1", "b")
    assert client.signals("u1") == {"all": True, "any": True, "two": True, "three": True}


def test_is_in_refuses_a_single_str() -> None:
    """is_in("gmail.com") would test single characters: a TypeError shows the list to write."""
    with pytest.raises(TypeError) as info:
        trait("domain").is_in("gmail.com")
    assert str(info.value) == "is_in() takes a collection of options: is_in(['gmail.com'])"


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param(did("x"), id="a-bare-condition"),
        pytest.param((did("x"), 10, 5), id="a-triple"),
        pytest.param([did("x"), 10], id="a-list"),
    ],
)
def test_fit_takes_condition_points_pairs(rule: Any) -> None:
    """fit() without (condition, points) pairs is a TypeError quoting the bad rule."""
    with pytest.raises(TypeError) as info:
        fit(rule)
    assert str(info.value) == f"fit() takes (condition, points) pairs, got {rule!r}"
