"""Hypothesis strategies: random models from the DSL and random histories to feed them.

Everything is drawn from a deliberately small alphabet (four event names, three
properties, a few users and two accounts, timestamps on a coarse grid) so that
interesting coincidences are common: events exactly a window apart, several
events on one timestamp, the same property value twice, an alias merging two
histories.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
from hypothesis import strategies as st

from conftest import T0
from oracle import DAY, HOUR, Alias, Group, Identify, Op, Track, us
from pqlkit import _dsl as d
from pqlkit._engine import EventView, Plan, SubjectState
from pqlkit._events import SubjectKind
from pqlkit._model import Model

EVENTS = ("login", "invite", "build", "pay")
PROPS = ("n", "plan", "email")
USERS = ("u1", "u2", "u3", "u4")
ANONS = ("a1", "a2")
ACCOUNTS = ("acme", "beta")

HOME: dict[str, str | None] = {
    "u1": "acme",
    "u2": "acme",
    "u3": "beta",
    "u4": None,
    "a1": "acme",
    "a2": None,
}
"""Each id's only account: a user's account is then the same whichever event is its latest."""

ALIASES = (("a2", "a1"), ("a1", "u1"), ("a1", "u2"), ("a2", "u1"), ("a2", "u3"), ("a2", "u4"))
"""The aliases drawn: anonymous ids onto users (or another anonymous id) of the same account."""

DAY0 = us(
    T0.replace(hour=0, minute=0, second=0, microsecond=0)
    - datetime(1970, 1, 1, tzinfo=timezone.utc)
)
"""The UTC midnight that starts the suite's start day (T0's), in µs since the epoch:
every drawn history starts on it, so the grid's days are UTC days (``active_days``)."""

WINDOWS = (timedelta(hours=1), timedelta(hours=12), timedelta(days=1), timedelta(days=2))
LONG_WINDOWS = (*WINDOWS, timedelta(days=7))


def big_n(props: Mapping[str, Any]) -> bool:
    """A ``where=`` callable: ``n`` is an int of at least 2."""
    n = props.get("n")
    return isinstance(n, int) and not isinstance(n, bool) and n >= 2


def has_email(props: Mapping[str, Any]) -> bool:
    """A ``where=`` callable: the event carries an email."""
    return props.get("email") is not None


WHERES: tuple[Any, ...] = (
    {"plan": "pro"},
    {"n": 1},
    {"plan": "free", "n": 2},
    {"n": None},
    {"n": [1]},
    {},
    big_n,
    has_email,
)

# -- models ---------------------------------------------------------------------

event_names = st.sampled_from(EVENTS)
maybe_event = st.one_of(st.none(), event_names, event_names)
wheres = st.one_of(st.none(), st.none(), st.sampled_from(WHERES))
ops = st.sampled_from(("<", "<=", ">", ">=", "==", "!="))
small_ints = st.integers(min_value=-1, max_value=4)
model_windows = st.shared(
    st.lists(st.sampled_from(LONG_WINDOWS), min_size=1, max_size=3, unique=True), key="windows"
)
"""The few window lengths one model uses (shared by all its nodes), so that a
history's events, drawn to sit exactly a model duration apart, hit its edges often."""
windows_of_model = model_windows.flatmap(st.sampled_from)
durations = st.one_of(st.just(timedelta(0)), windows_of_model)


@st.composite
def windows(draw: st.DrawFn, *, first_seen: bool = True) -> dict[str, timedelta]:
    """``within=``, ``since_first_seen=`` (never both) or no window."""
    choices = ["none", "within"] + (["since_first_seen"] if first_seen else [])
    which = draw(st.sampled_from(choices))
    if which == "none":
        return {}
    return {which: draw(windows_of_model)}


@st.composite
def number_aggregates(draw: st.DrawFn) -> d.Expr:
    """count / total / distinct / active_days / active_users with random filters and windows."""
    kind = draw(st.sampled_from(("count", "total", "distinct", "active_days", "active_users")))
    event, where = draw(maybe_event), draw(wheres)
    if kind == "count":
        return d.count(event, where=where, **draw(windows()))
    if kind == "total":
        return d.total(event, "n", where=where, **draw(windows()))
    if kind == "distinct":
        return d.distinct(event, draw(st.sampled_from(PROPS)), where=where, **draw(windows()))
    if kind == "active_days":
        return d.active_days(event, where=where, **draw(windows()))
    return d.active_users(event, where=where, **draw(windows(first_seen=False)))


@st.composite
def any_values(draw: st.DrawFn, *, traits: bool) -> d.Expr:
    """last(...) or trait(...): values of any type."""
    if traits and draw(st.booleans()):
        name = draw(st.sampled_from(("plan", "seats", "employees")))
        return d.trait(name, of=draw(st.sampled_from(("user", "account"))))
    return d.last(draw(maybe_event), draw(st.sampled_from(PROPS)), where=draw(wheres))


@st.composite
def numbers(
    draw: st.DrawFn, *, traits: bool, scores: tuple[str, ...] = (), depth: int = 1
) -> d.Expr:
    """A numeric expression: an aggregate, a value, a score reference, or arithmetic of them."""
    choice = draw(st.integers(min_value=0, max_value=6 if depth > 0 else 3))
    if choice <= 1:
        return draw(number_aggregates())
    if choice == 2:
        return draw(any_values(traits=traits))
    if choice == 3:
        if scores:
            return d.score(draw(st.sampled_from(scores)))
        return draw(number_aggregates())
    op = draw(st.sampled_from(("+", "-", "*", "/")))
    left = draw(numbers(traits=traits, scores=scores, depth=depth - 1))
    if draw(st.booleans()):
        right: d.Expr = d.Const(draw(st.sampled_from((0, 1, 2, 0.5))))
    else:
        right = draw(numbers(traits=traits, scores=scores, depth=depth - 1))
    return d.Arith(op, left, right)


def _compare(op: str, left: d.Expr, right: d.Expr, flip: bool) -> d.Compare:
    return d.Compare(op, right, left) if flip else d.Compare(op, left, right)


@st.composite
def leaf_conditions(
    draw: st.DrawFn, *, traits: bool, signals: tuple[str, ...], scores: tuple[str, ...]
) -> d.Expr:
    """One condition that is not a combination."""
    kind = draw(
        st.sampled_from(
            (
                "number",
                "number",
                "numbers",
                "value",
                "is_in",
                "did",
                "time_to",
                "idle",
                "sequence",
                "absent",
                "signal",
            )
        )
    )
    op, flip = draw(ops), draw(st.booleans())
    if kind == "number":
        left = draw(numbers(traits=traits, scores=scores))
        return _compare(op, left, d.Const(draw(small_ints)), flip)
    if kind == "numbers":
        left = draw(numbers(traits=traits, scores=scores, depth=0))
        return d.Compare(op, left, draw(numbers(traits=traits, scores=scores, depth=0)))
    if kind == "value":
        value = draw(any_values(traits=traits))
        const = draw(st.sampled_from((1, 2, "pro", "free", "b@x.io", None, timedelta(hours=1))))
        return _compare(op, value, d.Const(const), flip)
    if kind == "is_in":
        value = draw(st.one_of(any_values(traits=traits), number_aggregates()))
        options = draw(st.lists(st.sampled_from((0, 1, 2, "pro", "a@x.io", None)), max_size=3))
        return value.is_in(options)
    if kind == "did":
        return d.did(draw(event_names), where=draw(wheres), **draw(windows()))
    if kind == "time_to":
        value = d.time_to(draw(event_names), where=draw(wheres))
        return _compare(op, value, d.Const(draw(durations)), flip)
    if kind == "idle":
        return _compare(op, d.idle(), d.Const(draw(durations)), flip)
    if kind == "sequence":
        length = draw(st.sampled_from((2, 2, 1, 3)))
        steps = draw(st.lists(event_names, min_size=length, max_size=length))
        within = draw(st.one_of(st.none(), windows_of_model))
        return d.sequence(*steps, within=within)
    if kind == "absent":
        event, after = draw(event_names), draw(event_names)
        return d.absent(event, after=after, within=draw(windows_of_model))
    if signals:
        return d.signal(draw(st.sampled_from(signals)))
    return d.did(draw(event_names))


@st.composite
def conditions(
    draw: st.DrawFn,
    *,
    traits: bool,
    signals: tuple[str, ...] = (),
    scores: tuple[str, ...] = (),
    depth: int = 2,
) -> d.Expr:
    """A condition: a leaf, or leaves combined with & | ~ and at_least."""
    leaf = leaf_conditions(traits=traits, signals=signals, scores=scores)
    if depth <= 0 or draw(st.integers(min_value=0, max_value=2)) == 0:
        return draw(leaf)
    sub = conditions(traits=traits, signals=signals, scores=scores, depth=depth - 1)
    kind = draw(st.sampled_from(("&", "|", "~", "at_least")))
    if kind == "~":
        return ~draw(sub)
    items = draw(st.lists(sub, min_size=2, max_size=3))
    if kind == "&":
        return d.all_of(*items)
    if kind == "|":
        return d.any_of(*items)
    return d.at_least(draw(st.integers(min_value=1, max_value=len(items))), *items)


@st.composite
def score_exprs(
    draw: st.DrawFn,
    *,
    signals: tuple[str, ...],
    activations: tuple[str, ...],
    scores: tuple[str, ...],
) -> d.Expr:
    """A score: a raw aggregate, arithmetic, points, fit or tev."""
    kind = draw(st.sampled_from(("raw", "raw", "raw", "arith", "points", "fit", "tev")))
    if kind == "raw":
        return draw(st.one_of(number_aggregates(), any_values(traits=True)))
    if kind == "arith":
        return draw(numbers(traits=True, scores=scores, depth=2))
    if kind == "points":
        names = draw(st.lists(st.sampled_from(signals), min_size=1, unique=True))
        weights = {n: draw(st.integers(min_value=-30, max_value=30)) for n in names}
        return d.points(**weights)
    if kind == "fit":
        cond = conditions(traits=True, signals=signals, scores=scores, depth=1)
        pts = st.integers(min_value=-20, max_value=20)
        rules = draw(st.lists(st.tuples(cond, pts), min_size=1, max_size=3))
        return d.fit(*rules)
    fast = draw(windows_of_model)
    slow = fast + draw(windows_of_model)
    weight = st.sampled_from((0, 1, 2, 0.5))
    parts = draw(st.tuples(weight, weight, weight).filter(lambda w: sum(w) > 0))
    return d.tev(
        activation=draw(st.sampled_from(activations)),
        fast=fast,
        slow=slow,
        engagement=draw(numbers(traits=True, depth=1)),
        engagement_target=draw(st.sampled_from((1, 3, 2.5))),
        virality=draw(numbers(traits=True, depth=0)),
        virality_target=draw(st.sampled_from((1, 2))),
        weights=parts,
    )


@st.composite
def models(draw: st.DrawFn) -> Model:
    """A random valid Model: 1-4 signals, 1-5 scores, optional pql and pqa.

    Signal ``s0`` never reads traits (nor do the signals that are TEV activations),
    so a TEV's activation time depends on events alone.
    """
    signals: dict[str, d.Expr] = {}
    trait_free: list[str] = []
    for i in range(draw(st.integers(min_value=1, max_value=4))):
        traits = i > 0 and draw(st.booleans())
        refs = tuple(signals) if traits else tuple(trait_free)
        signals[f"s{i}"] = draw(conditions(traits=traits, signals=refs))
        if not traits:
            trait_free.append(f"s{i}")
    scores: dict[str, d.Expr] = {}
    for i in range(draw(st.integers(min_value=1, max_value=5))):
        scores[f"c{i}"] = draw(
            score_exprs(signals=tuple(signals), activations=tuple(trait_free), scores=tuple(scores))
        )
    rule = st.one_of(
        st.none(), conditions(traits=True, signals=tuple(signals), scores=tuple(scores), depth=1)
    )
    return Model("oracle", signals=signals, scores=scores, pql=draw(rule), pqa=draw(rule))


# -- histories ------------------------------------------------------------------

PROP_VALUES = {
    "n": st.sampled_from((0, 1, 1, 2, 3, -1, 1.0, "2", True, None, [1], {"k": 1})),
    "plan": st.sampled_from(("free", "pro", None)),
    "email": st.sampled_from(("a@x.io", "b@x.io", "c@x.io")),
}

properties = st.fixed_dictionaries({}, optional=PROP_VALUES)

grid_times = st.builds(
    lambda day, hour, jitter: DAY0 + day * DAY + hour * HOUR + jitter,
    st.integers(min_value=0, max_value=13),
    st.sampled_from((0, 0, 1, 11, 12, 13, 23)),
    st.sampled_from((0, 0, 0, 1, -1)),
)
"""Times on a coarse grid over two weeks from a UTC midnight, some off by ±1 µs."""


def durations_in(model: Model) -> tuple[int, ...]:
    """Every duration the model mentions (windows, TEV bounds, constants), in µs."""
    found: set[timedelta] = set()
    stack: list[Any] = [*model.signals.values(), *model.scores.values(), model.pql, model.pqa]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        for name in ("within", "since_first_seen", "fast", "slow", "value"):
            value = getattr(node, name, None)
            if isinstance(value, timedelta):
                found.add(value)
        if isinstance(node, d.Tev):
            found.add(node.slow - node.fast)
        stack.extend(node.children())
    return tuple(sorted(us(t) for t in found if t))


@attrs.frozen
class Edge:
    """Where a model is sensitive: a ``then`` event exactly ``gap`` µs after a ``first`` one."""

    first: str | None
    then: str | None
    gap: int


def edges_in(model: Model) -> tuple[Edge, ...]:
    """The pairs of events, and their distances, at which the model's values flip.

    A window's edge is one matching event a window length after another; a
    sequence's is one step a window length after the first; ``absent``'s is the
    watched event ``within`` after the ``after`` one; ``time_to``'s is a match a
    constant after the first event.
    """
    found: set[Edge] = set()
    stack: list[Any] = [*model.signals.values(), *model.scores.values(), model.pql, model.pqa]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        stack.extend(node.children())
        window = getattr(node, "within", None) or getattr(node, "since_first_seen", None)
        if isinstance(node, d.Sequence) and window is not None:
            for first, then in itertools.pairwise(node.steps):
                found.add(Edge(first.event, then.event, us(window)))
            found.add(Edge(node.steps[0].event, node.steps[-1].event, us(window)))
        elif isinstance(node, d.Absent):
            found.add(Edge(node.after.event, node.match.event, us(node.within)))
        elif window is not None and hasattr(node, "match"):
            found.add(Edge(node.match.event, node.match.event, us(window)))
        elif isinstance(node, d.Compare):
            sides = (node.left, node.right)
            const = next((s.value for s in sides if isinstance(s, d.Const)), None)
            time_to = next((s for s in sides if isinstance(s, d.TimeTo)), None)
            if isinstance(const, timedelta) and time_to is not None:
                found.add(Edge(None, time_to.match.event, us(const)))
    return tuple(sorted(found, key=repr))


@st.composite
def timestamps(draw: st.DrawFn, palette: list[int], offsets: tuple[int, ...]) -> int:
    """A grid time, or a palette time plus or minus exactly one of the offsets (±1 µs).

    The palette holds a grid time or two and every timestamp drawn so far, and the
    offsets are the model's durations, so events exactly a window apart (every
    window's edges) are common.
    """
    if not palette or draw(st.integers(min_value=0, max_value=3)) == 0:
        return draw(grid_times)
    base = draw(st.sampled_from(palette))
    offset = draw(st.sampled_from((0, *offsets))) * draw(st.sampled_from((1, 1, -1)))
    return base + offset + draw(st.sampled_from((0, 0, 0, 1, -1)))


user_trait_values = st.fixed_dictionaries(
    {},
    optional={
        "plan": st.sampled_from(("free", "pro", None)),
        "seats": st.sampled_from((1, 3, 10, "many")),
    },
)
account_trait_values = st.fixed_dictionaries(
    {}, optional={"employees": st.sampled_from((10, 200, 600, "big"))}
)


@st.composite
def histories(
    draw: st.DrawFn,
    *,
    offsets: tuple[int, ...] = tuple(us(w) for w in LONG_WINDOWS),
    edges: tuple[Edge, ...] = (),
    min_ops: int = 4,
    max_ops: int = 30,
    aliases: bool = True,
    duplicates: bool = True,
) -> list[Op]:
    """What a client is told, in arrival order: tracks (out of order in time, some
    re-sent with a used message_id, some echoing an earlier event exactly an
    offset earlier or later), and a few aliases, identify and group calls."""
    history: list[Op] = []
    palette = draw(st.lists(grid_times, max_size=2))
    sent: list[Track] = []
    aliased: dict[str, str] = {}

    def resolve(user_id: str) -> str:
        while user_id in aliased:
            user_id = aliased[user_id]
        return user_id

    kinds: list[str] = ["track"] * 6 + ["echo"] * 3 + ["identify", "group"]
    if aliases:
        kinds.append("alias")
    if duplicates:
        kinds.append("duplicate")
    for _ in range(draw(st.sampled_from(range(min_ops, max_ops + 1)))):
        kind = draw(st.sampled_from(kinds))
        if kind == "duplicate" and sent:
            earlier = draw(st.sampled_from(sent))
            if draw(st.booleans()):
                history.append(earlier)  # the very same call again
            else:
                other = draw(tracks(palette, offsets, message_id=earlier.message_id))
                history.append(other)  # another call reusing the id: ignored too
        elif kind == "alias":
            free = [(p, u) for p, u in ALIASES if p not in aliased and resolve(u) != p]
            if free:
                prev, user = draw(st.sampled_from(free))
                aliased[prev] = user
                history.append(Alias(prev, user))
        elif kind == "identify":
            user_id = draw(st.sampled_from(USERS))
            account_id = draw(st.one_of(st.none(), st.sampled_from(ACCOUNTS)))
            history.append(Identify(user_id, draw(user_trait_values), account_id))
        elif kind == "group":
            account_id = draw(st.sampled_from(ACCOUNTS))
            history.append(Group(account_id, draw(account_trait_values)))
        else:
            track = draw(tracks(palette, offsets, message_id=f"m{len(sent)}"))
            if kind == "echo" and sent:
                track = draw(echoes(sent, track.message_id, offsets, edges))
            palette.append(track.ts)
            sent.append(track)
            history.append(track)
    return history


@st.composite
def echoes(
    draw: st.DrawFn,
    sent: list[Track],
    message_id: str | None,
    offsets: tuple[int, ...],
    edges: tuple[Edge, ...],
) -> Track:
    """An earlier event again (same id, often the same properties) exactly one offset or
    edge away, or at the very same time."""
    jitter = draw(st.sampled_from((0, 0, 0, 1, -1)))
    if edges and draw(st.booleans()):
        edge = draw(st.sampled_from(edges))
        firsts = [t for t in sent if edge.first in (None, t.name)] or sent
        earlier = draw(st.sampled_from(firsts))
        name = edge.then if edge.then is not None else draw(event_names)
        ts = earlier.ts + edge.gap + jitter
    else:
        earlier = draw(st.sampled_from(sent))
        name = draw(st.sampled_from((earlier.name, earlier.name, *EVENTS)))
        offset = draw(st.sampled_from((0, *offsets))) * draw(st.sampled_from((1, -1)))
        ts = earlier.ts + offset + jitter
    props = draw(st.one_of(st.just(earlier.props), properties))
    return attrs.evolve(earlier, name=name, ts=ts, props=props, message_id=message_id)


@st.composite
def tracks(
    draw: st.DrawFn, palette: list[int], offsets: tuple[int, ...], *, message_id: str | None
) -> Track:
    """One track call from one of the ids, with its account or none."""
    user_id = draw(st.sampled_from(("u1", "u1", "u3", *USERS, *ANONS)))
    home = HOME[user_id]
    account_id = home if home is not None and draw(st.integers(0, 3)) > 0 else None
    return Track(
        user_id,
        draw(event_names),
        draw(timestamps(palette, offsets)),
        draw(properties),
        account_id=account_id,
        message_id=message_id,
    )


@attrs.frozen
class Case:
    """A model, a history to feed it, and how long after each subject's newest event
    to read it again once the history is done (time alone moves windows, ``idle``
    and ``absent``)."""

    model: Model
    history: list[Op]
    later: list[int]


@st.composite
def cases(draw: st.DrawFn, **kwargs: Any) -> Case:
    """A model and a history whose events often sit exactly on the model's edges."""
    model = draw(models())
    offsets, edges = durations_in(model), edges_in(model)
    history = draw(histories(offsets=offsets, edges=edges, **kwargs))
    near = st.sampled_from((0, *offsets)).flatmap(lambda o: st.sampled_from((o, o, o - 1, o + 1)))
    later = draw(st.lists(st.one_of(near, near, st.sampled_from((1, 3 * DAY))), max_size=3))
    return Case(model, history, sorted({max(x, 0) for x in later}))


def describe_history(history: list[Op]) -> str:
    """One line per call, to print with a failing example."""
    return "\n".join(f"  {i}: {op!r}" for i, op in enumerate(history))


def apply(
    plan: Plan,
    state: SubjectState,
    ts: int,
    name: str,
    props: Mapping[str, Any],
    user: str,
    kind: SubjectKind | None = None,
) -> None:
    """Fold one event into ``state`` as the Client does (``Plan.apply_view`` of its view)."""
    plan.apply_view(state, EventView(ts, name, props, user), kind)
