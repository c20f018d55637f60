"""Model: the declared signals, scores and rules, checked when built, with a fingerprint."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Literal

from . import _dsl as d
from ._convert import dumps
from .exceptions import ModelError

__all__ = ["Model", "Play", "held_out", "play", "play_kind"]

_MAX_NUDGE_BYTES = 4096


class Play:
    """A named rule beyond ``pql``/``pqa``, with the action it takes: made by :func:`play`.

    Frozen; read its fields (``condition``, ``of``, ``requalify_after``, ``holdout``,
    ``nudge``, ``until``). A :class:`Model` checks it (``ModelError`` naming the
    field, ``plays.<name>.holdout``) and fingerprints it.
    """

    __slots__ = ("condition", "holdout", "nudge", "of", "requalify_after", "until")

    condition: d.Expr
    of: Literal["user", "account"]
    requalify_after: timedelta | None
    holdout: float
    nudge: Mapping[str, Any] | None
    until: timedelta | None

    def __init__(
        self,
        condition: d.Expr,
        of: Literal["user", "account"],
        requalify_after: timedelta | None,
        holdout: float,
        nudge: Mapping[str, Any] | None,
        until: timedelta | None,
    ) -> None:
        for field, value in (
            ("condition", condition),
            ("of", of),
            ("requalify_after", requalify_after),
            ("holdout", holdout),
            ("nudge", None if nudge is None else MappingProxyType(dict(nudge))),
            ("until", until),
        ):
            object.__setattr__(self, field, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Play is frozen: build a new play() to change {name!r}")

    def __repr__(self) -> str:
        return f"play({self.condition!r}, of={self.of!r}, holdout={self.holdout!r})"

    def describe(self) -> str:
        """The canonical text of the play (part of its model's fingerprint)."""
        ra, until = self.requalify_after, self.until
        nudge = dumps(dict(self.nudge)) if self.nudge is not None else "none"
        return (
            f"{self.condition.describe()} of={self.of} holdout={self.holdout!r}"
            f" requalify_after={ra.total_seconds() if ra is not None else 'never'}"
            f" nudge={nudge} until={until.total_seconds() if until is not None else 'never'}"
        )


def play(
    condition: d.Expr,
    *,
    of: Literal["user", "account"] = "user",
    requalify_after: timedelta | None = None,
    holdout: float = 0.0,
    nudge: Mapping[str, Any] | None = None,
    until: timedelta | None = None,
) -> Play:
    """A play: a named rule of a model, on users or accounts, with its own callbacks.

    Declared in ``Model(..., plays={"name": play(...)})``. A play fires once per
    subject and model name, like ``pql``/``pqa``, with the same outbox guarantees;
    its qualifications (``kind == "play"``, ``play == "name"``) reach only the
    callbacks of ``client.on_play("name")``.

    Args:
        condition: When the play fires (a condition of the model's aggregates,
            signals and scores).
        of: ``"user"`` (the default) or ``"account"``: the subjects it is evaluated on.
        requalify_after: Let a subject whose condition turned false fire again once
            it holds and this long has passed (default: never).
        holdout: A share h (0 <= h < 1) of qualifying subjects, chosen by a stable
            hash of the model's name, the play's name and the subject id, recorded
            as qualified with ``holdout=True`` and never delivered nor nudged: the
            comparison group for measuring the play.
        nudge: A JSON object: when the play fires for a user, a nudge keyed by the
            play's name with this payload is opened in the user's inbox (in the same
            transaction), no callback needed. ``client.nudges()`` re-checks the
            play at read time. Users only (``of="user"``).
        until: How long such a nudge stays open (default: until closed).

    Example:
        >>> from pqlkit import Model, did, play, days
        >>> model = Model("doc-plays", plays={
        ...     "upgrade_nudge": play(did("limit_hit"), nudge={"title": "Upgrade?"}, until=days(7)),
        ... })
        >>> sorted(model.plays)
        ['upgrade_nudge']
    """
    return Play(condition, of, requalify_after, holdout, nudge, until)


def play_kind(name: str) -> str:
    """The kind a play's qualifications and deliveries are stored under: ``"play:<name>"``."""
    return "play:" + name


def held_out(model: str, play: str, subject_id: str, share: float) -> bool:
    """Whether a play holds this subject out: a stable hash of the model's name, the
    play's name and the subject id, read as a number in [0, 1), is below ``share``."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"{model}\x00{play}\x00{subject_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _check_play(name: object, p: object) -> None:
    """Check one entry of ``Model(plays=...)`` (ModelError naming ``plays.<name>.<field>``)."""
    if not isinstance(name, str) or not name.strip() or not name.isprintable() or ":" in name:
        raise ModelError(
            "plays", f"names must be non-empty printable str without ':', got {name!r}"
        )
    where = f"plays.{name}"
    if not isinstance(p, Play):
        raise ModelError(where, f"must be a play(...), got {type(p).__name__}")
    if p.of not in ("user", "account"):
        raise ModelError(f"{where}.of", f'must be "user" or "account", got {p.of!r}')
    h = p.holdout
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not 0 <= h < 1:
        raise ModelError(f"{where}.holdout", f"must be a number with 0 <= holdout < 1, got {h!r}")
    ra = p.requalify_after
    if ra is not None and (not isinstance(ra, timedelta) or ra <= timedelta(0)):
        raise ModelError(
            f"{where}.requalify_after", f"must be a positive timedelta or None, got {ra!r}"
        )
    if p.nudge is not None:
        if p.of != "user":
            raise ModelError(
                f"{where}.nudge", 'a nudge goes to a user: only a play of="user" may declare one'
            )
        try:
            size = len(dumps(dict(p.nudge)).encode())
        except (TypeError, ValueError) as error:
            raise ModelError(f"{where}.nudge", f"must be a JSON object: {error}") from None
        if size > _MAX_NUDGE_BYTES:
            raise ModelError(
                f"{where}.nudge", f"must be at most {_MAX_NUDGE_BYTES} bytes of JSON, got {size}"
            )
    if p.until is not None:
        if not isinstance(p.until, timedelta) or p.until <= timedelta(0):
            raise ModelError(f"{where}.until", f"must be a positive timedelta, got {p.until!r}")
        if p.nudge is None:
            raise ModelError(f"{where}.until", "is how long the play's nudge stays open: no nudge=")


class Model:
    """A PQL model: named signals (conditions), named scores (numbers) and the rules.

    The whole declaration is checked here: unknown names, reference cycles, type
    errors and bad windows raise :class:`~pqlkit.ModelError` naming the offender,
    so nothing is discovered at ``track()`` time.

    Args:
        name: The model's name. A subject fires once per model name, so keep it
            when you re-tune a model; change it to start over.
        signals: Signal name to condition.
        scores: Score name to numeric expression (``points``, ``tev``, ``fit``,
            or any arithmetic of aggregates).
        pql: The rule that makes a user a PQL (default: never).
        pqa: The rule that makes an account a PQA (default: never).
        plays: Play name to :func:`play`: more named rules, on users or accounts,
            each firing once per subject to its own ``on_play`` callbacks.
        version: Bump it for changes the fingerprint cannot see (the code inside a
            ``where=`` callable).
        requalify_after: Let a disqualified subject fire again once its rule holds
            and this long has passed since its disqualification (default: never).
        on_retune: What a rebuild (after a model change, or ``client.rebuild()``)
            does with the subjects it finds newly qualified or disqualified:
            ``"fire"`` (the default) delivers them, a newly qualified one with the
            time of its newest event as ``qualified_at``; ``"record"`` records
            them, with the same ``qualified_at`` (``qualified_at()`` and
            ``stats()`` count them, and they never fire later), and delivers
            nothing. Not part of the fingerprint.
        ranked: Names of scores to keep in an index as their values change, so that
            :meth:`Client.top <pqlkit.Client.top>` lists the highest ones without
            reading every subject. Each ``track()`` that changes a ranked value writes
            it (one small row), and ranked scores are evaluated for accounts on every
            event too: declare only the ones you list. Part of the fingerprint when
            given: declaring one rebuilds the derived state from the log, which fills
            the index for every subject.

    Example:
        >>> from pqlkit import Model, did, points, score
        >>> model = Model(
        ...     "quickstart",
        ...     signals={"activated": did("dashboard_built")},
        ...     scores={"behavior": points(activated=60)},
        ...     pql=score("behavior") >= 50,
        ... )
        >>> len(model.fingerprint)
        16
    """

    def __init__(
        self,
        name: str,
        *,
        signals: Mapping[str, d.Expr] | None = None,
        scores: Mapping[str, d.Expr] | None = None,
        pql: d.Expr | None = None,
        pqa: d.Expr | None = None,
        version: str | None = None,
        requalify_after: timedelta | None = None,
        on_retune: Literal["fire", "record"] = "fire",
        ranked: Iterable[str] = (),
        plays: Mapping[str, Play] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ModelError("name", "must be a non-empty str")
        for label, mapping in (("signals", signals), ("scores", scores), ("plays", plays)):
            if mapping is not None and not isinstance(mapping, Mapping):
                raise ModelError(
                    label, f"must be a dict of names to expressions, got {type(mapping).__name__}"
                )
        self.name = name
        self.signals: Mapping[str, d.Expr] = MappingProxyType(dict(signals or {}))
        self.scores: Mapping[str, d.Expr] = MappingProxyType(dict(scores or {}))
        self.pql = pql
        self.pqa = pqa
        self.version = version
        self.requalify_after = requalify_after
        self.on_retune = on_retune
        self.ranked: tuple[str, ...] = _names(ranked, "ranked")
        self.plays: Mapping[str, Play] = MappingProxyType(dict(plays or {}))
        self._check()
        self.fingerprint = self._fingerprint()
        self._frozen = True

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(
                f"a Model is frozen (its fingerprint says what it is): build a new Model"
                f" to change {name!r}"
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Model is frozen: cannot delete {name!r}")

    def __repr__(self) -> str:
        return (
            f"Model({self.name!r}, signals={len(self.signals)}, scores={len(self.scores)}, "
            f"fingerprint={self.fingerprint!r})"
        )

    def describe(self) -> str:
        """The canonical text of the declaration (what the fingerprint hashes)."""
        lines = [f"model {self.name!r}", f"version {self.version!r}"]
        for n in sorted(self.signals):
            lines.append(f"signal {n!r}: {self.signals[n].describe()}")
        for n in sorted(self.scores):
            lines.append(f"score {n!r}: {self.scores[n].describe()}")
        lines.append(f"pql: {self.pql.describe() if self.pql is not None else 'never'}")
        lines.append(f"pqa: {self.pqa.describe() if self.pqa is not None else 'never'}")
        ra = self.requalify_after
        lines.append(f"requalify_after: {ra.total_seconds() if ra is not None else 'never'}")
        if self.ranked:  # only then: the fingerprints of models without it stay as they were
            lines.append(f"ranked: {sorted(self.ranked)!r}")
        for n in sorted(self.plays):  # none: the fingerprints of models without plays stay
            lines.append(f"play {n!r}: {self.plays[n].describe()}")
        return "\n".join(lines)

    def _fingerprint(self) -> str:
        return hashlib.sha256(self.describe().encode()).hexdigest()[:16]

    # -- validation ----------------------------------------------------------
    def _check(self) -> None:
        for label, mapping in (("signals", self.signals), ("scores", self.scores)):
            for key, expr in mapping.items():
                if not isinstance(key, str) or not key or not key.isprintable():
                    raise ModelError(label, f"names must be non-empty printable str, got {key!r}")
                if not isinstance(expr, d.Expr):
                    raise ModelError(
                        f"{label}.{key}", f"must be a pqlkit expression, got {type(expr).__name__}"
                    )
        for key, expr in self.signals.items():
            where = f"signals.{key}"
            self._check_expr(expr, where)
            if expr.value_type() != "bool":
                raise ModelError(where, f"a signal must be a condition, got a {_kind(expr)}")
        for key, expr in self.scores.items():
            where = f"scores.{key}"
            self._check_expr(expr, where)
            if expr.value_type() not in ("number", "any"):
                raise ModelError(where, f"a score must be numeric, got a {_kind(expr)}")
        for rule in ("pql", "pqa"):
            expr = getattr(self, rule)
            if expr is None:
                continue
            if not isinstance(expr, d.Expr):
                raise ModelError(rule, f"must be a pqlkit condition, got {type(expr).__name__}")
            self._check_expr(expr, rule)
            if expr.value_type() != "bool":
                raise ModelError(rule, f"must be a condition, got a {_kind(expr)}")
        for key, p in self.plays.items():
            _check_play(key, p)
            assert isinstance(p, Play)
            where = f"plays.{key}"
            if not isinstance(p.condition, d.Expr):
                raise ModelError(
                    where, f"must be a pqlkit condition, got {type(p.condition).__name__}"
                )
            self._check_expr(p.condition, where)
            if p.condition.value_type() != "bool":
                raise ModelError(where, f"must be a condition, got a {_kind(p.condition)}")
        ra = self.requalify_after
        if ra is not None and (not isinstance(ra, timedelta) or ra <= timedelta(0)):
            raise ModelError("requalify_after", f"must be a positive timedelta or None, got {ra!r}")
        if self.version is not None and not isinstance(self.version, str):
            raise ModelError("version", f"must be a str or None, got {self.version!r}")
        if self.on_retune not in ("fire", "record"):
            raise ModelError("on_retune", f'must be "fire" or "record", got {self.on_retune!r}')
        for name in self.ranked:
            if name not in self.scores:
                known = ", ".join(repr(n) for n in self.scores) or "none"
                raise ModelError("ranked", f"unknown score {name!r} (the scores: {known})")
        self._check_cycles()

    def _check_expr(self, expr: d.Expr, where: str) -> None:
        for node in d.walk(expr):
            _check_node(node, where, self)

    def _check_cycles(self) -> None:
        def refs(expr: d.Expr) -> Iterator[tuple[str, str]]:
            for node in d.walk(expr):
                if isinstance(node, d.SignalRef):
                    yield ("signals", node.signal)
                elif isinstance(node, d.ScoreRef):
                    yield ("scores", node.score)
                elif isinstance(node, d.Points):
                    for s, _ in node.weights:
                        yield ("signals", s)
                elif isinstance(node, d.Tev):
                    yield ("signals", node.activation)

        graph: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for key, expr in self.signals.items():
            graph[("signals", key)] = list(refs(expr))
        for key, expr in self.scores.items():
            graph[("scores", key)] = list(refs(expr))
        state: dict[tuple[str, str], int] = {}

        def visit(node: tuple[str, str], path: list[tuple[str, str]]) -> None:
            mark = state.get(node, 0)
            if mark == 2:
                return
            if mark == 1:
                loop = [*path[path.index(node) :], node]
                text = " -> ".join(f"{k}.{n}" for k, n in loop)
                raise ModelError(f"{node[0]}.{node[1]}", f"reference cycle: {text}")
            state[node] = 1
            for nxt in graph.get(node, []):
                visit(nxt, [*path, node])
            state[node] = 2

        for node in graph:
            visit(node, [])


def _names(value: object, field: str) -> tuple[str, ...]:
    """A list of names (a str alone is refused: it is not a list of its letters), once each."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ModelError(field, f"must be a list of score names, got {type(value).__name__}")
    names = list(value)
    for name in names:
        if not isinstance(name, str):
            raise ModelError(field, f"score names are str, got {name!r}")
    return tuple(dict.fromkeys(names))


def _kind(expr: d.Expr) -> str:
    return {"bool": "condition", "number": "number", "duration": "duration", "any": "value"}[
        expr.value_type()
    ]


_COMBINATORS: dict[type[d.Expr], str] = {d.All: "all_of", d.Any_: "any_of", d.AtLeast: "at_least"}


def _got(value: Any) -> str:
    """What a user wrote where a typed expression belongs, for an error message."""
    if not isinstance(value, d.Expr):
        hint = f" (a signal by name is signal({value!r}))" if isinstance(value, str) else ""
        return f"{type(value).__name__} {value!r}{hint}"
    if isinstance(value, d.Const) and isinstance(value.value, str):
        return f"the str {value.value!r} (a signal by name is signal({value.value!r}))"
    return f"a {_kind(value)}: {value!r}"


def _positive(value: Any, what: str, where: str, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ModelError(where, f"{what} must be a positive timedelta, got {value!r}")


def _check_match(match: d.Match, where: str) -> None:
    if match.event is not None and (not isinstance(match.event, str) or not match.event):
        raise ModelError(where, f"an event name must be a non-empty str, got {match.event!r}")
    w = match.where
    if w is None or callable(w):
        return
    if not isinstance(w, Mapping):
        raise ModelError(
            where,
            f"where= must be a dict of property values or a callable, got {type(w).__name__}",
        )
    for k, v in w.items():
        if not isinstance(k, str):
            raise ModelError(where, f"where= keys must be str, got {k!r}")
        try:
            dumps(v)
        except (TypeError, ValueError) as e:
            raise ModelError(where, f"where={k!r} must be a JSON value: {e}") from None


def _check_node(node: d.Expr, where: str, model: Model) -> None:
    if isinstance(node, (d.Count, d.Total, d.Distinct, d.ActiveDays)):
        _check_match(node.match, where)
        _positive(node.within, "within", where)
        _positive(node.since_first_seen, "since_first_seen", where)
        if node.within is not None and node.since_first_seen is not None:
            raise ModelError(where, "use within= or since_first_seen=, not both")
        if isinstance(node, (d.Total, d.Distinct)) and not isinstance(node.prop, str):
            raise ModelError(
                where, f"{node.name}(): the property name must be a str, got {node.prop!r}"
            )
    elif isinstance(node, d.ActiveUsers):
        _check_match(node.match, where)
        _positive(node.within, "within", where)
    elif isinstance(node, (d.Last, d.TimeTo)):
        _check_match(node.match, where)
    elif isinstance(node, d.Sequence):
        if not node.steps:
            raise ModelError(where, "sequence() needs at least one event")
        for step in node.steps:
            _check_match(step, where)
        _positive(node.within, "within", where)
    elif isinstance(node, d.Absent):
        _check_match(node.match, where)
        _check_match(node.after, where)
        if node.within is None:
            raise ModelError(where, "absent() needs within=")
        _positive(node.within, "within", where)
    elif isinstance(node, d.Trait):
        if not isinstance(node.trait, str) or not node.trait:
            raise ModelError(where, f"trait() needs a non-empty str name, got {node.trait!r}")
        if node.of not in ("user", "account"):
            raise ModelError(where, f'trait(of=...) must be "user" or "account", got {node.of!r}')
    elif isinstance(node, d.SignalRef):
        if node.signal not in model.signals:
            raise ModelError(where, f"unknown signal {node.signal!r}")
    elif isinstance(node, d.ScoreRef):
        if node.score not in model.scores:
            raise ModelError(where, f"unknown score {node.score!r}")
    elif isinstance(node, d.Const):
        v = node.value
        if isinstance(v, float) and not math.isfinite(v):
            raise ModelError(where, f"constant {v!r} is not finite")
    elif isinstance(node, d.Compare):
        lt, rt = node.left.value_type(), node.right.value_type()
        if "bool" in (lt, rt):
            raise ModelError(
                where,
                f"cannot compare a condition (& and | bind tighter than comparisons: "
                f"parenthesize them): {node.describe()}",
            )
        if {lt, rt} == {"number", "duration"}:
            raise ModelError(where, f"cannot compare a duration with a number: {node.describe()}")
        for side, other in ((node.left, node.right), (node.right, node.left)):
            if (
                side.value_type() in ("number", "duration")
                and isinstance(other, d.Const)
                and isinstance(other.value, str)
            ):
                raise ModelError(
                    where, f"cannot compare a {_kind(side)} with a str: {node.describe()}"
                )
        if _has_idle(node.left) or _has_idle(node.right):
            ok = isinstance(node.left, d.Idle) and isinstance(node.right, d.Const)
            ok = ok or (isinstance(node.right, d.Idle) and isinstance(node.left, d.Const))
            if not ok:
                raise ModelError(
                    where,
                    f"idle() can only be compared with a constant duration: {node.describe()}",
                )
    elif isinstance(node, d.Arith):
        lt, rt = node.left.value_type(), node.right.value_type()
        if "bool" in (lt, rt):
            raise ModelError(where, f"arithmetic on a condition: {node.describe()}")
        if "duration" in (lt, rt):
            raise ModelError(where, f"arithmetic on durations is not supported: {node.describe()}")
    elif isinstance(node, (d.All, d.Any_, d.AtLeast, d.Not)):
        if isinstance(node, (d.All, d.Any_, d.AtLeast)) and not node.items:
            raise ModelError(where, f"{_COMBINATORS[type(node)]}() needs at least one condition")
        for item in node.children():
            if not isinstance(item, d.Expr) or item.value_type() != "bool":
                raise ModelError(where, f"expected a condition, got {_got(item)}")
        if isinstance(node, d.AtLeast) and (
            not isinstance(node.k, int)
            or isinstance(node.k, bool)
            or not 0 < node.k <= len(node.items)
        ):
            raise ModelError(
                where, f"at_least(k, ...) needs 1 <= k <= {len(node.items)}, got k={node.k!r}"
            )
    elif isinstance(node, d.IsIn):
        if node.value.value_type() == "bool":
            raise ModelError(where, f"is_in() needs a value, not a condition: {node.describe()}")
    elif isinstance(node, d.Points):
        if not node.weights:
            raise ModelError(where, "points() needs at least one signal")
        for s, w in node.weights:
            if s not in model.signals:
                raise ModelError(where, f"points(): unknown signal {s!r}")
            if not d.is_number(w):
                raise ModelError(where, f"points(): weight of {s!r} must be a number, got {w!r}")
    elif isinstance(node, d.Tev):
        if node.activation not in model.signals:
            raise ModelError(where, f"tev(): unknown activation signal {node.activation!r}")
        _positive(node.fast, "tev(): fast", where, required=True)
        _positive(node.slow, "tev(): slow", where, required=True)
        if node.slow <= node.fast:
            raise ModelError(where, "tev(): slow must be longer than fast")
        for part_name, part, target in (
            ("engagement", node.engagement, node.engagement_target),
            ("virality", node.virality, node.virality_target),
        ):
            if not isinstance(part, d.Expr) or part.value_type() not in ("number", "any"):
                raise ModelError(where, f"tev(): {part_name} must be numeric, got {_got(part)}")
            if not d.is_number(target) or target <= 0:
                raise ModelError(
                    where, f"tev(): {part_name}_target must be a positive number, got {target!r}"
                )
        if len(node.weights) != 3 or not all(d.is_number(w) and w >= 0 for w in node.weights):
            raise ModelError(
                where, f"tev(): weights must be three non-negative numbers, got {node.weights!r}"
            )
        if sum(node.weights) <= 0:
            raise ModelError(where, "tev(): weights must not all be 0")
    elif isinstance(node, d.Fit):
        if not node.rules:
            raise ModelError(where, "fit() needs at least one (condition, points) pair")
        for cond, pts in node.rules:
            if not isinstance(cond, d.Expr) or cond.value_type() != "bool":
                raise ModelError(where, f"fit(): {cond!r} is not a condition")
            if not d.is_number(pts):
                raise ModelError(
                    where, f"fit(): the points of {cond!r} must be a number, got {pts!r}"
                )


def _has_idle(expr: d.Expr) -> bool:
    return any(isinstance(n, d.Idle) for n in d.walk(expr))
