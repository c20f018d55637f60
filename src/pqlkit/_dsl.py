"""The model DSL: aggregates, conditions and scores users write in a :class:`Model`.

Every expression is a frozen tree of plain values. Nothing here evaluates
anything: :mod:`pqlkit._engine` compiles the trees into a plan. ``describe()``
gives each node a canonical, deterministic form used for the fingerprint, for
sharing state between equal aggregates, and in explanations.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any, ClassVar, Literal, Union

import attrs

from ._convert import dumps
from ._events import SubjectKind

__all__ = [
    "Absent",
    "ActiveDays",
    "ActiveUsers",
    "All",
    "Any_",
    "Arith",
    "AtLeast",
    "Compare",
    "Condition",
    "Const",
    "Count",
    "Distinct",
    "Expr",
    "Fit",
    "Idle",
    "IsIn",
    "Last",
    "Match",
    "Not",
    "Points",
    "ScoreRef",
    "Sequence",
    "SignalRef",
    "Tev",
    "TimeTo",
    "Total",
    "Trait",
    "Value",
    "absent",
    "active_days",
    "active_users",
    "all_of",
    "any_of",
    "at_least",
    "count",
    "days",
    "did",
    "distinct",
    "fit",
    "fmt_value",
    "hours",
    "idle",
    "is_number",
    "last",
    "minutes",
    "points",
    "score",
    "sequence",
    "signal",
    "tev",
    "time_to",
    "total",
    "trait",
    "walk",
    "where_passes",
]

# The type of a value an expression produces, checked when a Model is built.
#   number: int/float; duration: timedelta; any: whatever a property or trait
#   holds; bool: a condition; invalid: a node that can never work (reported).
ValueType = Literal["number", "duration", "any", "bool"]

Where = Union[Mapping[str, Any], Callable[[Mapping[str, Any]], bool], None]  # noqa: UP007


def days(n: float) -> timedelta:
    """A duration of ``n`` days (``days(7)``), for ``within=`` and comparisons."""
    return timedelta(days=n)


def hours(n: float) -> timedelta:
    """A duration of ``n`` hours."""
    return timedelta(hours=n)


def minutes(n: float) -> timedelta:
    """A duration of ``n`` minutes."""
    return timedelta(minutes=n)


def _fmt_duration(d: timedelta) -> str:
    """Exact and short: ``7d``, ``36h``, ``90m``, ``45s``, ``1500000us``."""
    micros = d // timedelta(microseconds=1)
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000)):
        if micros % size == 0 and micros >= size:
            return f"{micros // size}{unit}"
    if micros % 1_000_000 == 0:
        return f"{micros // 1_000_000}s"
    return f"{micros}us"


def fmt_value(v: Any) -> str:
    if isinstance(v, timedelta):
        return _fmt_duration(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # the shortest text that reads back exactly (the fingerprint needs it)
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (list, tuple, frozenset, set)):
        return "[" + ", ".join(fmt_value(x) for x in v) + "]"
    return str(v)


def _callable_name(fn: Callable[..., Any]) -> str:
    """A ``where=`` callable's name for the fingerprint: its qualified name only.

    Not its module (a model run as a script lives in ``__main__``, imported it does
    not) and not its code (bump ``Model(version=...)`` when the code changes).
    """
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else type(fn).__name__


class Expr:
    """Base of every DSL node. Operators build new nodes; nothing is evaluated here."""

    __slots__ = ()
    __hash__ = object.__hash__

    vtype: ClassVar[ValueType] = "any"

    def describe(self) -> str:
        """The node's canonical text (deterministic; used for the fingerprint)."""
        raise NotImplementedError

    def children(self) -> tuple[Expr, ...]:
        """Direct sub-expressions."""
        return ()

    def value_type(self) -> ValueType:
        return self.vtype

    def __repr__(self) -> str:
        return self.describe()

    def __bool__(self) -> bool:
        raise TypeError(
            "a pqlkit expression has no truth value: combine conditions with & | ~ "
            "(not `and`/`or`/`not`), and do not chain comparisons"
        )

    # comparisons -> Compare
    def __lt__(self, other: object) -> Compare:
        return Compare("<", self, _lift(other))

    def __le__(self, other: object) -> Compare:
        return Compare("<=", self, _lift(other))

    def __gt__(self, other: object) -> Compare:
        return Compare(">", self, _lift(other))

    def __ge__(self, other: object) -> Compare:
        return Compare(">=", self, _lift(other))

    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        return Compare("==", self, _lift(other))

    def __ne__(self, other: object) -> Compare:  # type: ignore[override]
        return Compare("!=", self, _lift(other))

    # arithmetic -> Arith
    def __add__(self, other: object) -> Arith:
        return Arith("+", self, _lift(other))

    def __radd__(self, other: object) -> Arith:
        return Arith("+", _lift(other), self)

    def __sub__(self, other: object) -> Arith:
        return Arith("-", self, _lift(other))

    def __rsub__(self, other: object) -> Arith:
        return Arith("-", _lift(other), self)

    def __mul__(self, other: object) -> Arith:
        return Arith("*", self, _lift(other))

    def __rmul__(self, other: object) -> Arith:
        return Arith("*", _lift(other), self)

    def __truediv__(self, other: object) -> Arith:
        return Arith("/", self, _lift(other))

    def __rtruediv__(self, other: object) -> Arith:
        return Arith("/", _lift(other), self)

    # boolean combinators -> All / Any_ / Not
    def __and__(self, other: object) -> All:
        return All((self, _lift(other)))

    def __rand__(self, other: object) -> All:
        return All((_lift(other), self))

    def __or__(self, other: object) -> Any_:
        return Any_((self, _lift(other)))

    def __ror__(self, other: object) -> Any_:
        return Any_((_lift(other), self))

    def __invert__(self) -> Not:
        return Not(self)

    def is_in(self, options: Iterable[Any]) -> IsIn:
        """Condition: the value is one of ``options`` (e.g. a set of free-mail domains)."""
        if isinstance(options, (str, bytes)):
            raise TypeError(f"is_in() takes a collection of options: is_in([{options!r}])")
        return IsIn(self, tuple(sorted(set(options), key=lambda o: dumps(o))))


class Value(Expr):
    """An expression that produces a value (number, duration, or anything for traits)."""

    __slots__ = ()


class Condition(Expr):
    """An expression that is true or false."""

    __slots__ = ()
    vtype: ClassVar[ValueType] = "bool"


def _lift(value: object) -> Expr:
    if isinstance(value, Expr):
        return value
    return Const(value)


@attrs.frozen(eq=False, repr=False)
class Const(Value):
    """A constant: a number, a duration, a string, True/False or None."""

    value: Any

    def value_type(self) -> ValueType:
        v = self.value
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, numbers.Real):
            return "number"
        if isinstance(v, timedelta):
            return "duration"
        return "any"

    def describe(self) -> str:
        return fmt_value(self.value)


@attrs.frozen(eq=False, repr=False)
class Match:
    """Which events an aggregate looks at: a name (None: any) and a ``where`` filter."""

    event: str | None = None
    where: Where = None

    def matches(self, name: str, properties: Mapping[str, Any]) -> bool:
        """Whether an event of this name with these properties is one it looks at."""
        if self.event is not None and name != self.event:
            return False
        return where_passes(self.where, properties)

    def describe(self) -> str:
        parts = [repr(self.event) if self.event is not None else "*"]
        if self.where is not None:
            if callable(self.where):
                parts.append(f"where={_callable_name(self.where)}")
            else:
                parts.append(f"where={dumps(dict(self.where))}")
        return ", ".join(parts)


def where_passes(where: Where, properties: Mapping[str, Any]) -> bool:
    """What ``where=`` means (the one definition): every key present and equal, or the
    function true of the properties; no ``where`` passes everything."""
    if where is None:
        return True
    if callable(where):
        return bool(where(properties))
    return all(k in properties and properties[k] == v for k, v in where.items())


def _window_text(within: timedelta | None, since_first_seen: timedelta | None) -> str:
    out = ""
    if within is not None:
        out += f", within={_fmt_duration(within)}"
    if since_first_seen is not None:
        out += f", since_first_seen={_fmt_duration(since_first_seen)}"
    return out


class Aggregate(Value):
    """A value the engine maintains incrementally from events."""

    __slots__ = ()
    name: ClassVar[str] = "?"
    time_dependent: ClassVar[bool] = False


def _describe_events(
    name: str, match: Match, within: timedelta | None, since_first_seen: timedelta | None
) -> str:
    """``name(match, windows)``, the match left out when it is "any event"."""
    parts = [match.describe()] if match.event or match.where else []
    if within is not None:
        parts.append(f"within={_fmt_duration(within)}")
    if since_first_seen is not None:
        parts.append(f"since_first_seen={_fmt_duration(since_first_seen)}")
    return f"{name}({', '.join(parts)})"


@attrs.frozen(eq=False, repr=False)
class Count(Aggregate):
    """Number of matching events."""

    match: Match
    within: timedelta | None = None
    since_first_seen: timedelta | None = None
    name: ClassVar[str] = "count"
    vtype: ClassVar[ValueType] = "number"

    def describe(self) -> str:
        return _describe_events(self.name, self.match, self.within, self.since_first_seen)


@attrs.frozen(eq=False, repr=False)
class Total(Aggregate):
    """Sum of a numeric property over matching events (non-numbers count as 0)."""

    match: Match
    prop: str
    within: timedelta | None = None
    since_first_seen: timedelta | None = None
    name: ClassVar[str] = "total"
    vtype: ClassVar[ValueType] = "number"

    def describe(self) -> str:
        w = _window_text(self.within, self.since_first_seen)
        return f"{self.name}({self.match.describe()}, {self.prop!r}{w})"


@attrs.frozen(eq=False, repr=False)
class Distinct(Aggregate):
    """Number of distinct values of a property over matching events (missing/None ignored)."""

    match: Match
    prop: str
    within: timedelta | None = None
    since_first_seen: timedelta | None = None
    name: ClassVar[str] = "distinct"
    vtype: ClassVar[ValueType] = "number"

    def describe(self) -> str:
        w = _window_text(self.within, self.since_first_seen)
        return f"{self.name}({self.match.describe()}, {self.prop!r}{w})"


@attrs.frozen(eq=False, repr=False)
class ActiveDays(Aggregate):
    """Number of distinct UTC calendar days with a matching event."""

    match: Match
    within: timedelta | None = None
    since_first_seen: timedelta | None = None
    name: ClassVar[str] = "active_days"
    vtype: ClassVar[ValueType] = "number"

    def describe(self) -> str:
        return _describe_events(self.name, self.match, self.within, self.since_first_seen)


@attrs.frozen(eq=False, repr=False)
class ActiveUsers(Aggregate):
    """Account subjects: distinct users with a matching event (None on user subjects)."""

    match: Match
    within: timedelta | None = None
    name: ClassVar[str] = "active_users"
    vtype: ClassVar[ValueType] = "number"

    def describe(self) -> str:
        return _describe_events(self.name, self.match, self.within, None)


@attrs.frozen(eq=False, repr=False)
class Last(Aggregate):
    """The property's value on the latest matching event (by timestamp; None if none)."""

    match: Match
    prop: str
    name: ClassVar[str] = "last"
    vtype: ClassVar[ValueType] = "any"

    def describe(self) -> str:
        return f"{self.name}({self.match.describe()}, {self.prop!r})"


@attrs.frozen(eq=False, repr=False)
class TimeTo(Aggregate):
    """Time from the subject's first event to its first matching event (None if not yet)."""

    match: Match
    name: ClassVar[str] = "time_to"
    vtype: ClassVar[ValueType] = "duration"

    def describe(self) -> str:
        return f"{self.name}({self.match.describe()})"


@attrs.frozen(eq=False, repr=False)
class Idle(Aggregate):
    """Time since the subject's latest event; grows with the clock."""

    name: ClassVar[str] = "idle"
    vtype: ClassVar[ValueType] = "duration"
    time_dependent: ClassVar[bool] = True

    def describe(self) -> str:
        return "idle()"


@attrs.frozen(eq=False, repr=False)
class Trait(Value):
    """The latest trait from ``identify`` (``of="user"``) or ``group`` (``of="account"``)."""

    trait: str
    of: SubjectKind = "user"

    def describe(self) -> str:
        suffix = ', of="account"' if self.of == "account" else ""
        return f"trait({self.trait!r}{suffix})"


@attrs.frozen(eq=False, repr=False)
class ScoreRef(Value):
    """A declared score, by name."""

    score: str
    vtype: ClassVar[ValueType] = "number"

    def describe(self) -> str:
        return f"score({self.score!r})"


@attrs.frozen(eq=False, repr=False)
class Arith(Value):
    """``left op right`` on numbers (or durations); None if either side is None."""

    op: Literal["+", "-", "*", "/"]
    left: Expr
    right: Expr

    def children(self) -> tuple[Expr, ...]:
        return (self.left, self.right)

    def value_type(self) -> ValueType:
        lt, rt = self.left.value_type(), self.right.value_type()
        if "duration" in (lt, rt):
            return "duration"
        return "number"

    def describe(self) -> str:
        return f"({self.left.describe()} {self.op} {self.right.describe()})"


# -- conditions ---------------------------------------------------------------


@attrs.frozen(eq=False, repr=False)
class Compare(Condition):
    """``left op right``; false whenever either side is None."""

    op: Literal["<", "<=", ">", ">=", "==", "!="]
    left: Expr
    right: Expr

    def children(self) -> tuple[Expr, ...]:
        return (self.left, self.right)

    def describe(self) -> str:
        return f"{self.left.describe()} {self.op} {self.right.describe()}"


@attrs.frozen(eq=False, repr=False)
class IsIn(Condition):
    """The value is one of the options."""

    value: Expr
    options: tuple[Any, ...]

    def children(self) -> tuple[Expr, ...]:
        return (self.value,)

    def describe(self) -> str:
        return f"{self.value.describe()} in {fmt_value(self.options)}"


@attrs.frozen(eq=False, repr=False)
class All(Condition):
    """Every item holds (``a & b``, ``all_of``)."""

    items: tuple[Expr, ...]

    def children(self) -> tuple[Expr, ...]:
        return self.items

    def describe(self) -> str:
        return "(" + " & ".join(i.describe() for i in self.items) + ")"


@attrs.frozen(eq=False, repr=False)
class Any_(Condition):
    """At least one item holds (``a | b``, ``any_of``)."""

    items: tuple[Expr, ...]

    def children(self) -> tuple[Expr, ...]:
        return self.items

    def describe(self) -> str:
        return "(" + " | ".join(i.describe() for i in self.items) + ")"


@attrs.frozen(eq=False, repr=False)
class AtLeast(Condition):
    """At least ``k`` of the items hold."""

    k: int
    items: tuple[Expr, ...]

    def children(self) -> tuple[Expr, ...]:
        return self.items

    def describe(self) -> str:
        return f"at_least({self.k}, " + ", ".join(i.describe() for i in self.items) + ")"


@attrs.frozen(eq=False, repr=False)
class Not(Condition):
    """The item does not hold."""

    item: Expr

    def children(self) -> tuple[Expr, ...]:
        return (self.item,)

    def describe(self) -> str:
        return f"~{self.item.describe()}"


@attrs.frozen(eq=False, repr=False)
class SignalRef(Condition):
    """A declared signal, by name."""

    signal: str

    def describe(self) -> str:
        return f"signal({self.signal!r})"


@attrs.frozen(eq=False, repr=False)
class Sequence(Condition, Aggregate):
    """Events matching each step happened at strictly increasing times, all within ``within``."""

    steps: tuple[Match, ...]
    within: timedelta | None = None
    name: ClassVar[str] = "sequence"
    vtype: ClassVar[ValueType] = "bool"

    def describe(self) -> str:
        steps = ", ".join(s.describe() for s in self.steps)
        return f"sequence({steps}{_window_text(self.within, None)})"


@attrs.frozen(eq=False, repr=False)
class Absent(Condition, Aggregate):
    """The first ``after`` event was at t, T >= t + within, and no ``event`` in [t, t + within]."""

    match: Match
    after: Match
    within: timedelta
    name: ClassVar[str] = "absent"
    vtype: ClassVar[ValueType] = "bool"
    time_dependent: ClassVar[bool] = True

    def describe(self) -> str:
        return (
            f"absent({self.match.describe()}, after={self.after.describe()}, "
            f"within={_fmt_duration(self.within)})"
        )


# -- scores -------------------------------------------------------------------


class ScoreExpr(Value):
    """A score built from signals: points, tev or fit."""

    __slots__ = ()
    vtype: ClassVar[ValueType] = "number"


@attrs.frozen(eq=False, repr=False)
class Points(ScoreExpr):
    """Sum of the weights of the true signals."""

    weights: tuple[tuple[str, float], ...]

    def describe(self) -> str:
        return "points(" + ", ".join(f"{k}={fmt_value(w)}" for k, w in self.weights) + ")"


@attrs.frozen(eq=False, repr=False)
class Tev(ScoreExpr):
    """0..100: the weighted mean of Time, Engagement and Virality parts, times 100."""

    activation: str
    fast: timedelta
    slow: timedelta
    engagement: Expr
    engagement_target: float
    virality: Expr
    virality_target: float
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def children(self) -> tuple[Expr, ...]:
        return (self.engagement, self.virality)

    def describe(self) -> str:
        return (
            f"tev(activation={self.activation!r}, fast={_fmt_duration(self.fast)}, "
            f"slow={_fmt_duration(self.slow)}, engagement={self.engagement.describe()}, "
            f"engagement_target={fmt_value(self.engagement_target)}, "
            f"virality={self.virality.describe()}, "
            f"virality_target={fmt_value(self.virality_target)}, "
            f"weights={fmt_value(self.weights)})"
        )


@attrs.frozen(eq=False, repr=False)
class Fit(ScoreExpr):
    """Sum of the points of the true conditions."""

    rules: tuple[tuple[Expr, float], ...]

    def children(self) -> tuple[Expr, ...]:
        return tuple(c for c, _ in self.rules)

    def describe(self) -> str:
        return "fit(" + ", ".join(f"({c.describe()}, {fmt_value(p)})" for c, p in self.rules) + ")"


# -- constructors (the public DSL) ---------------------------------------------


def _match(event: str | None, where: Where) -> Match:
    return Match(event, where)


def count(
    event: str | None = None,
    *,
    where: Where = None,
    within: timedelta | None = None,
    since_first_seen: timedelta | None = None,
) -> Count:
    """Number of matching events; ``event=None`` counts every event.

    Example:
        >>> from pqlkit import count, days
        >>> count("login", within=days(7)) >= 3
        count('login', within=7d) >= 3
    """
    return Count(_match(event, where), within, since_first_seen)


def did(
    event: str,
    *,
    where: Where = None,
    within: timedelta | None = None,
    since_first_seen: timedelta | None = None,
) -> Compare:
    """Condition: at least one matching event (``count(...) >= 1``).

    Example:
        >>> from pqlkit import did
        >>> did("api_key_generated")
        count('api_key_generated') >= 1
    """
    return count(event, where=where, within=within, since_first_seen=since_first_seen) >= 1


def total(
    event: str | None,
    prop: str,
    *,
    where: Where = None,
    within: timedelta | None = None,
    since_first_seen: timedelta | None = None,
) -> Total:
    """Sum of the numeric property ``prop`` over matching events.

    Example:
        >>> from pqlkit import total
        >>> total("usage_reported", "rows") > 1000
        total('usage_reported', 'rows') > 1000
    """
    return Total(_match(event, where), prop, within, since_first_seen)


def distinct(
    event: str | None,
    prop: str,
    *,
    where: Where = None,
    within: timedelta | None = None,
    since_first_seen: timedelta | None = None,
) -> Distinct:
    """Number of distinct values of ``prop`` over matching events.

    Example:
        >>> from pqlkit import distinct
        >>> distinct("teammate_invited", "email") >= 3
        distinct('teammate_invited', 'email') >= 3
    """
    return Distinct(_match(event, where), prop, within, since_first_seen)


def active_days(
    event: str | None = None,
    *,
    where: Where = None,
    within: timedelta | None = None,
    since_first_seen: timedelta | None = None,
) -> ActiveDays:
    """Number of distinct UTC calendar days with a matching event.

    Example:
        >>> from pqlkit import active_days, days
        >>> active_days(within=days(7)) >= 5
        active_days(within=7d) >= 5
    """
    return ActiveDays(_match(event, where), within, since_first_seen)


def active_users(
    event: str | None = None, *, where: Where = None, within: timedelta | None = None
) -> ActiveUsers:
    """Account subjects: number of distinct users with a matching event.

    Example:
        >>> from pqlkit import active_users, days
        >>> active_users(within=days(14)) >= 3
        active_users(within=14d) >= 3
    """
    return ActiveUsers(_match(event, where), within)


def last(event: str | None, prop: str, *, where: Where = None) -> Last:
    """The value of ``prop`` on the latest matching event (None if there is none).

    Example:
        >>> from pqlkit import last, trait
        >>> last("usage_reported", "rows") >= trait("row_limit") * 0.8
        last('usage_reported', 'rows') >= (trait('row_limit') * 0.8)
    """
    return Last(_match(event, where), prop)


def trait(name: str, *, of: SubjectKind = "user") -> Trait:
    """The latest value of a trait set by ``identify`` (user) or ``group`` (account).

    Example:
        >>> from pqlkit import trait
        >>> trait("employees", of="account") >= 200
        trait('employees', of="account") >= 200
    """
    return Trait(name, of)


def time_to(event: str, *, where: Where = None) -> TimeTo:
    """Time from the subject's first event to its first matching event.

    Example:
        >>> from pqlkit import time_to, days
        >>> time_to("dashboard_built") <= days(2)
        time_to('dashboard_built') <= 2d
    """
    return TimeTo(_match(event, where))


def idle() -> Idle:
    """Time since the subject's latest event. Compare it with a duration.

    Example:
        >>> from pqlkit import idle, days
        >>> idle() >= days(14)
        idle() >= 14d
    """
    return Idle()


def sequence(*events: str, within: timedelta | None = None) -> Sequence:
    """Condition: the events happened in this order (strictly increasing times), within ``within``.

    Example:
        >>> from pqlkit import sequence, hours
        >>> sequence("contacts_imported", "email_sent", within=hours(48))
        sequence('contacts_imported', 'email_sent', within=2d)
    """
    return Sequence(tuple(Match(e) for e in events), within)


def absent(event: str, *, after: str, within: timedelta) -> Absent:
    """Condition: ``after`` happened, then no ``event`` for ``within`` (true once that passed).

    Example:
        >>> from pqlkit import absent, days
        >>> absent("dashboard_built", after="signed_up", within=days(7))
        absent('dashboard_built', after='signed_up', within=7d)
    """
    return Absent(Match(event), Match(after), within)


def signal(name: str) -> SignalRef:
    """A reference to a declared signal (a condition).

    Example:
        >>> from pqlkit import signal
        >>> ~signal("dormant")
        ~signal('dormant')
    """
    return SignalRef(name)


def score(name: str) -> ScoreRef:
    """A reference to a declared score (a number).

    Example:
        >>> from pqlkit import score
        >>> score("behavior") + score("fit") >= 50
        (score('behavior') + score('fit')) >= 50
    """
    return ScoreRef(name)


def all_of(*conditions: Expr) -> All:
    """Condition: every one holds."""
    return All(tuple(conditions))


def any_of(*conditions: Expr) -> Any_:
    """Condition: at least one holds."""
    return Any_(tuple(conditions))


def at_least(k: int, *conditions: Expr) -> AtLeast:
    """Condition: at least ``k`` of the conditions hold.

    Example:
        >>> from pqlkit import at_least, did
        >>> at_least(2, did("a"), did("b"), did("c"))
        at_least(2, count('a') >= 1, count('b') >= 1, count('c') >= 1)
    """
    return AtLeast(k, tuple(conditions))


def points(**weights: float) -> Points:
    """Score: the sum of the weights of the signals that are true.

    Example:
        >>> from pqlkit import points
        >>> points(activated=30, invited=20)
        points(activated=30, invited=20)
    """
    return Points(tuple(weights.items()))


def tev(
    *,
    activation: str,
    fast: timedelta,
    slow: timedelta,
    engagement: Expr,
    engagement_target: float,
    virality: Expr,
    virality_target: float,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Tev:
    """Score 0..100 from Time-to-value, Engagement and Virality.

    Time is 1 when the ``activation`` signal became true within ``fast`` of the
    subject's first event, 0 at ``slow`` or never, linear in between. Engagement is
    ``engagement / engagement_target`` and Virality ``virality / virality_target``,
    each capped at 1. The score is 100 x their (weighted) mean.
    """
    return Tev(
        activation,
        fast,
        slow,
        engagement,
        engagement_target,
        virality,
        virality_target,
        tuple(weights),  # type: ignore[arg-type]
    )


def fit(*rules: tuple[Expr, float]) -> Fit:
    """Score: the sum of the points of the conditions that hold (firmographic fit).

    Example:
        >>> from pqlkit import fit, trait
        >>> fit((trait("employees", of="account") >= 200, 20))
        fit((trait('employees', of="account") >= 200, 20))
    """
    for rule in rules:
        if not isinstance(rule, tuple) or len(rule) != 2:
            raise TypeError(f"fit() takes (condition, points) pairs, got {rule!r}")
    return Fit(tuple((c, p) for c, p in rules))


def walk(expr: Expr) -> Iterator[Expr]:
    """``expr`` and every node below it, breadth first (the order a plan numbers the
    slots of a subject's state in: it must not change). Lazily: a node's children are
    asked for only once the caller is done with the node (the model checks it first)."""
    queue = [expr]
    i = 0
    while i < len(queue):
        node = queue[i]
        yield node
        queue.extend(node.children())
        i += 1


def is_number(v: Any) -> bool:
    """True for int/float (not bool), finite."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))
