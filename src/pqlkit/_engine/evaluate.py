"""Compilation of a model's expressions into closures, and the values they keep.

``compile_node`` turns each DSL node into a closure over its compiled children; an
``Eval`` runs them for one subject at one evaluation time, keeping each signal,
score and rule value in the state (``SubjectState.memo``) with how long it holds,
so the next event recomputes only what it fed.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .. import _dsl as d
from .._convert import micros
from .accumulators import ActiveDaysAcc, CountAcc, IdleAcc, TotalAcc
from .state import ANY, NEVER, Kept, SubjectKind, SubjectState, number

if TYPE_CHECKING:
    from .plan import Plan

__all__ = [
    "NO_PLAYS",
    "PLAY",
    "RULE",
    "Context",
    "Eval",
    "Evaluation",
    "Fn",
    "compare",
    "compile_node",
    "revalidate",
]

_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
"""Each comparison operator's function, chosen once when a comparison is compiled."""


def compare(op: Callable[[Any, Any], Any], a: Any, b: Any) -> bool:
    """``a op b`` as a model means it (``op`` from ``_CMP``): false when either side is
    None, or when the two do not compare (a number and a string, say)."""
    if a is None or b is None:
        return False
    try:
        return bool(op(a, b))
    except TypeError:
        return False


def _arith(op: str, a: Any, b: Any) -> Any:
    a, b = number(a), number(b)
    if a is None or b is None:
        return None
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return None
    return a / b


class Context:
    """Traits visible to an evaluation (two are made per event)."""

    def __init__(
        self,
        user_traits: Mapping[str, Any] | None = None,
        account_traits: Mapping[str, Any] | None = None,
    ) -> None:
        self.user_traits: Mapping[str, Any] = {} if user_traits is None else user_traits
        self.account_traits: Mapping[str, Any] = {} if account_traits is None else account_traits


class Evaluation:
    """The result of evaluating a subject at time ``t`` (read-only by convention)."""

    def __init__(
        self,
        t: int,
        signals: dict[str, bool],
        scores: dict[str, float],
        rule: bool,
        until: int | None = None,
    ) -> None:
        self.t = t
        self.signals = signals
        self.scores = scores
        self.rule = rule
        # when time alone may next change the rule or a play (None: never); may be early
        self.until = until
        # the subject's plays (of its kind), by name: whether each holds (Plan.evaluate)
        self.plays: dict[str, bool] = NO_PLAYS  # (shared, never written: replaced when set)

    @property
    def true_signals(self) -> tuple[str, ...]:
        return tuple(sorted(n for n, v in self.signals.items() if v))


class Eval:
    """One evaluation: signals and scores, kept in the state between evaluations.

    Each value is kept with how long it holds (see ``Kept``): while one is
    computed, ``until`` gathers the earliest time at which time alone may change
    what it reads (a window's next exit), ``idle`` the same after the newest event
    (an ``idle()`` comparison's flip) and ``sensitive`` whether a newer event could
    change it without feeding a slot (what it reads of ``idle()``).
    """

    __slots__ = (
        "aggs",
        "ctx",
        "idle",
        "kind",
        "newest",
        "plan",
        "s",
        "scores",
        "sensitive",
        "signals",
        "t",
        "until",
    )

    def __init__(
        self,
        plan: Plan,
        s: SubjectState,
        t: int,
        kind: SubjectKind,
        ctx: Context,
        signals: dict[str, bool] | None = None,
        scores: dict[str, float] | None = None,
    ) -> None:
        self.plan = plan
        self.s = s
        self.t = t
        self.kind = kind
        self.ctx = ctx
        revalidate(s, t, ctx)
        self.newest = s.newest
        self.signals: dict[str, bool] = {} if signals is None else signals
        self.scores: dict[str, float] = {} if scores is None else scores
        self.aggs: dict[Any, Any] = {}
        self.until = NEVER
        self.idle = NEVER
        self.sensitive = False

    def _kept(self, key: str) -> Kept | None:
        """The value kept under ``key`` if it holds now (counted in what is being computed)."""
        kept = self.s.memo.get(key)
        if kept is None:
            return None
        if not kept.holds(self.t, self.newest):
            del self.s.memo[key]
            return None
        if kept.until < self.until:
            self.until = kept.until
        if kept.idle < self.idle:
            self.idle = kept.idle
        if kept.newest is not ANY:
            self.sensitive = True
        return kept

    def _keep(self, key: str, fn: Fn, *, score: bool = False) -> Any:
        """Compute ``fn`` and keep it under ``key`` with its own validity."""
        outer = self.until, self.idle, self.sensitive
        self.until, self.idle, self.sensitive = NEVER, NEVER, False
        try:
            v = _score_value(fn(self)) if score else bool(fn(self))
            guard = self.newest if self.sensitive else ANY
            self.s.memo[key] = Kept(v, self.until, guard, self.idle)
        finally:
            if outer[0] < self.until:
                self.until = outer[0]
            if outer[1] < self.idle:
                self.idle = outer[1]
            self.sensitive = self.sensitive or outer[2]
        return v

    def signal(self, name: str) -> bool:
        kept = self._kept(name)
        v: bool = kept.value if kept is not None else self._keep(name, self.plan.signal_fns[name])
        self.signals[name] = v
        return v

    def score(self, name: str) -> float:
        key = self.plan.score_keys[name]
        kept = self._kept(key)
        if kept is not None:
            v: float = kept.value
        else:
            v = self._keep(key, self.plan.score_fns[name], score=True)
        self.scores[name] = v
        return v

    def horizon(self, until: int | None) -> None:
        """What is being computed may change by time alone at ``until``."""
        if until is not None and until < self.until:
            self.until = until

    def tev_parts(self, node: d.Tev) -> tuple[float, float, float, Any, Any, Any]:
        fast, slow, engagement, virality = self.plan.tev_parts[id(node)]
        at = self.s.latches.get(node.activation)
        if at is None and self.signal(node.activation):
            at = self.t  # true now, not latched yet (first evaluation that sees it)
            self.horizon(self.t + 1)  # ...so the time part depends on T
        elapsed = None if at is None or self.s.first is None else at - self.s.first
        if elapsed is None or elapsed >= slow:
            time_part = 0.0
        elif elapsed <= fast:
            time_part = 1.0
        else:
            time_part = (slow - elapsed) / (slow - fast)
        eng = number(engagement(self))
        vir = number(virality(self))
        return (
            time_part,
            _part(eng, node.engagement_target),
            _part(vir, node.virality_target),
            elapsed,
            eng,
            vir,
        )

    def ev(self, node: d.Expr) -> Any:
        return self.plan.compiled(node)(self)


Fn = Callable[[Eval], Any]


def revalidate(s: SubjectState, t: int, ctx: Context) -> None:
    """Drop the state's kept values unless they may serve an evaluation at ``t`` with ``ctx``."""
    memo = s.memo_ctx
    if (
        memo is None
        or memo[0] is not ctx.user_traits
        or memo[1] is not ctx.account_traits
        or t < s.memo_t  # kept values hold from when they were computed on
    ):
        s.memo.clear()
        s.memo_ctx = (ctx.user_traits, ctx.account_traits)
    s.memo_t = t


def _score_value(n: Any) -> float:
    """A score's value as a finite float (None, NaN and infinities count as 0)."""
    t = type(n)
    if t is int:  # the common cases, checked fast
        return float(n)
    if t is not float:
        n = number(n)
        return 0.0 if n is None else float(n)
    return n if math.isfinite(n) else 0.0


RULE = "\x00rule"
"""The key the subject's rule is kept under (no signal's name starts with a control byte)."""

PLAY = "\x02"
"""The prefix of the key a play's condition is kept under (followed by its name)."""

NO_PLAYS: dict[str, bool] = {}
"""``Evaluation.plays`` of a model without plays (shared, never written)."""


def _part(value: float | None, target: float) -> float:
    """``value / target`` clamped to [0, 1] (None counts as 0)."""
    if not value:
        return 0.0
    x = value / target
    return 1.0 if x >= 1.0 else (x if x > 0.0 else 0.0)


def compile_node(plan: Plan, node: d.Expr) -> Fn:
    """Turn a node into a closure over its compiled children (no per-call dispatch)."""
    c = plan.compiled
    if isinstance(node, d.Const):
        value = node.value
        return lambda e: value
    if isinstance(node, d.Compare) and isinstance(node.right, d.Const):
        left, op, b = c(node.left), _CMP[node.op], node.right.value
        if b is None:
            return lambda e: False
        did_within = _did_within(plan, node)
        if did_within is not None:
            return did_within
        if isinstance(node.left, d.Idle) and isinstance(b, timedelta):
            b_us = micros(b)

            # after the newest event, when the comparison changes as idle() grows
            flips = {">=": (b_us,), "<": (b_us,), ">": (b_us + 1,), "<=": (b_us + 1,)}.get(
                node.op, (b_us, b_us + 1)
            )
            # a newer event makes idle smaller: this value may then flip
            fragile = {">=": True, ">": True, "<=": False, "<": False}.get(node.op)

            def compare_idle(e: Eval) -> bool:  # in microseconds: no timedelta per call
                newest = e.newest
                if newest is None:
                    e.sensitive = True  # until the first event
                    return False
                t = e.t
                v = bool(op(max(0, t - newest), b_us))
                for off in flips:
                    if newest + off > t:
                        if off < e.idle:
                            e.idle = off  # after the newest event, whichever it becomes
                        break
                if fragile is None or fragile == v:
                    e.sensitive = True
                return v

            return compare_idle

        return lambda e: compare(op, left(e), b)
    if isinstance(node, d.Compare):
        left, right, op = c(node.left), c(node.right), _CMP[node.op]

        def compare_values(e: Eval) -> bool:
            a = left(e)
            # the right side is not evaluated (nor its validity gathered) after a None
            return a is not None and compare(op, a, right(e))

        return compare_values
    if isinstance(node, d.All):
        items = [c(i) for i in node.items]

        def all_(e: Eval) -> bool:
            for f in items:  # noqa: SIM110 (a loop beats a generator here: hot path)
                if not f(e):
                    return False
            return True

        return all_
    if isinstance(node, d.Any_):
        items = [c(i) for i in node.items]

        def any_(e: Eval) -> bool:
            for f in items:  # noqa: SIM110 (a loop beats a generator here: hot path)
                if f(e):
                    return True
            return False

        return any_
    if isinstance(node, d.Not):
        item = c(node.item)
        return lambda e: not item(e)
    if isinstance(node, d.AtLeast):
        items, k = [c(i) for i in node.items], node.k
        return lambda e: sum(1 for f in items if f(e)) >= k
    if isinstance(node, d.SignalRef):
        name = node.signal
        return lambda e: e.signal(name)
    if isinstance(node, d.ScoreRef):
        name = node.score
        return lambda e: e.score(name)
    if isinstance(node, d.Arith):
        left, right, aop = c(node.left), c(node.right), node.op
        return lambda e: _arith(aop, left(e), right(e))
    if isinstance(node, d.Trait):
        key = node.trait
        if node.of == "account":
            return lambda e: e.ctx.account_traits.get(key)
        return lambda e: e.ctx.user_traits.get(key) if e.kind == "user" else None
    if isinstance(node, d.IsIn):
        value, options, eq = c(node.value), node.options, _CMP["=="]

        try:
            hashed: frozenset[Any] | None = frozenset(options)
        except TypeError:
            hashed = None

        def is_in(e: Eval) -> bool:
            v = value(e)
            if v is None:
                return False
            if hashed is not None:
                try:
                    return v in hashed  # == by hash: the same answer as the loop below
                except TypeError:
                    pass  # v is unhashable (a list, a dict)
            return any(compare(eq, v, o) for o in options)

        return is_in
    if isinstance(node, d.Points):
        weights = node.weights

        def points(e: Eval) -> Any:
            total: Any = 0
            signal = e.signal
            for sig, w in weights:
                if signal(sig):
                    total += w
            return total

        return points
    if isinstance(node, d.Fit):
        rules = [(c(cond), pts) for cond, pts in node.rules]

        def fit(e: Eval) -> Any:
            total: Any = 0
            for f, pts in rules:
                if f(e):
                    total += pts
            return total

        return fit
    if isinstance(node, d.Tev):
        tev = node
        w = node.weights
        plan.tev_parts[id(node)] = (
            micros(node.fast),
            micros(node.slow),
            c(node.engagement),
            c(node.virality),
        )
        total_w = sum(w)

        def tev_score(e: Eval) -> float:
            tp, ep, vp, _, _, _ = e.tev_parts(tev)
            return 100.0 * (w[0] * tp + w[1] * ep + w[2] * vp) / total_w

        return tev_score
    slot = plan.slot_of[id(node)]
    acc = plan.accs[slot]
    if type(acc) in (CountAcc, TotalAcc) and acc.within is None and acc.sfs is None:  # type: ignore[attr-defined]
        return lambda e: e.s.slots[slot]  # a running value: nothing to compute
    value = acc.value
    next_change = acc.next_change
    own = plan.own_window.get(id(node))
    cache_key: Any = slot if own is None else (slot, own)  # per-evaluation cache key
    if own is not None:  # a shared active_days list, read with this node's window
        assert isinstance(acc, ActiveDaysAcc)
        count, leave = acc.count_within, acc.exit_within

        def value(st: Any, t: int, s: SubjectState, kind: SubjectKind) -> Any:
            return count(st, t, own)

        def next_change(st: Any, t: int, s: SubjectState) -> int | None:
            return leave(st, t, own)

    if isinstance(acc, IdleAcc):

        def idle(e: Eval) -> Any:  # changes with T and with every newer event
            e.horizon(e.t + 1)
            e.sensitive = True
            return value(None, e.t, e.s, e.kind)

        return idle
    if acc.time_dependent:

        def timed_aggregate(e: Eval) -> Any:
            cache = e.aggs
            hit = cache.get(cache_key)
            if hit is None:
                s, st, t = e.s, e.s.slots[slot], e.t
                hit = cache[cache_key] = (value(st, t, s, e.kind), next_change(st, t, s))
            if hit[1] is not None and hit[1] < e.until:
                e.until = hit[1]
            return hit[0]

        return timed_aggregate

    def aggregate(e: Eval) -> Any:
        cache = e.aggs
        if cache_key in cache:
            return cache[cache_key]
        s = e.s
        v = cache[cache_key] = value(s.slots[slot], e.t, s, e.kind)
        return v

    return aggregate


def _did_within(plan: Plan, node: d.Compare) -> Fn | None:
    """``count(..., within=D) >= 1`` (``did(..., within=D)``) as a look at the newest entry."""
    assert isinstance(node.right, d.Const)
    b = node.right.value
    if not (
        isinstance(node.left, d.Count)
        and type(b) is int
        and ((node.op == ">=" and b == 1) or (node.op == ">" and b == 0))
    ):
        return None
    slot = plan.slot_of[id(node.left)]
    acc = plan.accs[slot]
    within = getattr(acc, "within", None)
    if within is None or getattr(acc, "sfs", None) is not None:
        return None

    def did_within(e: Eval) -> bool:
        # entries are sorted by time and none is newer than T: the newest decides
        entries = e.s.slots[slot][1]
        if not entries:
            return False
        leaves = entries[-1][0] + within
        if leaves <= e.t:
            return False
        if leaves < e.until:
            e.until = leaves  # ...and it leaves the window then
        return True

    return did_within
