"""The plan: a model compiled once for incremental evaluation.

It holds the distinct aggregates the model reads, each with an accumulator and a
slot in every subject's state, an index from event name to the slots an event
feeds, and the compiled closures. ``apply_view`` folds one event into a state;
``evaluate`` reads it at an evaluation time T.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import attrs

from .. import _dsl as d
from .._convert import micros
from .._model import Model
from .accumulators import (
    ACCS,
    Acc,
    ActiveDaysAcc,
    ActiveUsersAcc,
    CountAcc,
    DistinctAcc,
    agg_key,
    exit_within,
    matches_of,
    shared_days,
)
from .evaluate import PLAY, RULE, Context, Eval, Evaluation, Fn, compile_node, revalidate
from .state import NEVER, EventView, SubjectKind, SubjectState

__all__ = ["Plan"]


class Feed:
    """A slot an event of some name feeds, and how (one per slot, per event name and kind)."""

    __slots__ = ("acc", "apply", "check", "drop", "fold", "slot")

    def __init__(
        self,
        slot: int,
        acc: Acc,
        check: Callable[[Mapping[str, Any]], bool] | None,
        drop: frozenset[str] | None,
    ) -> None:
        self.slot = slot
        self.acc = acc
        self.apply = acc.apply
        # what the event's properties must pass to feed it (None: every such event does)
        self.check = check
        # the keys of the kept values it drops when fed (None: none)
        self.drop = drop
        # apply that also says whether the values that read the slot hold (Acc.fold)
        self.fold = acc.fold


def _where_check(matches: tuple[d.Match, ...]) -> Callable[[Mapping[str, Any]], bool]:
    """Whether an event's properties pass the ``where`` of any of ``matches`` (all of
    them with the event's name, or with none, and a ``where``): ``d.where_passes``,
    with the common ``where={"k": v}`` as a closure of its own (compiled with the plan)."""
    wheres = [m.where for m in matches]
    if len(wheres) == 1 and isinstance(wheres[0], Mapping) and len(wheres[0]) == 1:
        ((key, want),) = wheres[0].items()

        def one(props: Mapping[str, Any]) -> bool:  # the common case: where={"k": v}
            return key in props and bool(props[key] == want)

        return one
    passes = d.where_passes

    def any_of(props: Mapping[str, Any]) -> bool:
        for where in wheres:  # noqa: SIM110 (a loop beats a generator here: hot path)
            if passes(where, props):
                return True
        return False

    return any_of


class Plan:
    """A model compiled for incremental evaluation."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.accs: list[Acc] = []
        self.slot_of: dict[int, int] = {}
        by_key: dict[str, int] = {}
        roots: list[d.Expr] = [*model.signals.values(), *model.scores.values()]
        roots += [r for r in (model.pql, model.pqa) if r is not None]
        roots += [p.condition for p in model.plays.values()]
        # active_days of one match with different windows share one list of day
        # times, kept for the widest window; each reads it with its own window
        windows: dict[str, list[timedelta]] = {}
        for root in roots:
            for node in d.walk(root):
                if shared_days(node):
                    assert isinstance(node, d.ActiveDays)
                    assert node.within is not None
                    windows.setdefault(agg_key(node, window=False), []).append(node.within)
        self.own_window: dict[int, int] = {}  # id(node) -> its window (µs), where shared
        for root in roots:
            for node in d.walk(root):
                factory = ACCS.get(type(node))
                if factory is None:
                    continue
                if shared_days(node):
                    assert isinstance(node, d.ActiveDays)
                    assert node.within is not None
                    key = agg_key(node, window=False)
                    if key not in by_key:
                        widest = attrs.evolve(node, within=max(windows[key]))
                        days = ActiveDaysAcc(widest)
                        days.narrowest = micros(min(windows[key]))
                        by_key[key] = len(self.accs)
                        self.accs.append(days)
                    self.own_window[id(node)] = micros(node.within)
                else:
                    key = agg_key(node)
                    if key not in by_key:
                        by_key[key] = len(self.accs)
                        self.accs.append(factory(node))
                self.slot_of[id(node)] = by_key[key]
        self._settle(roots)
        # event name -> slots it may feed; None -> slots that see every event
        self.by_event: dict[str | None, list[tuple[int, list[d.Match]]]] = {}
        for slot, acc in enumerate(self.accs):
            matches = matches_of(acc.node)
            names = {m.event for m in matches} if matches else {None}
            for name in names:
                self.by_event.setdefault(name, []).append((slot, matches))
        self._feeds: dict[tuple[str, SubjectKind | None], list[Feed]] = {}
        self._compiled: dict[int, Fn] = {}
        self.tev_parts: dict[int, tuple[int, int, Fn, Fn]] = {}
        for root in roots:
            self.compiled(root)
        traits = [n for r in roots for n in d.walk(r) if isinstance(n, d.Trait)]
        self.reads_user_traits = any(n.of == "user" for n in traits)
        self.reads_account_traits = any(n.of == "account" for n in traits)
        self.signal_fns = {n: self.compiled(x) for n, x in model.signals.items()}
        self.rule_fns: dict[SubjectKind, Fn | None] = {
            "user": self.compiled(model.pql) if model.pql is not None else None,
            "account": self.compiled(model.pqa) if model.pqa is not None else None,
        }
        self.score_fns = {n: self.compiled(x) for n, x in model.scores.items()}
        # each kind's plays: (name, the key its value is kept under, its closure)
        self.play_fns: dict[SubjectKind, list[tuple[str, str, Fn]]] = {"user": [], "account": []}
        for name, p in model.plays.items():
            self.play_fns[p.of].append((name, PLAY + name, self.compiled(p.condition)))
        self.has_plays = bool(model.plays)
        self.latched = sorted(
            {n.activation for r in roots for n in d.walk(r) if isinstance(n, d.Tev)}
        )
        self._memoize()
        # the scores whose values the store indexes (Model.ranked): each evaluation finds them
        self.ranked_keys = {name: self.score_keys[name] for name in model.ranked}
        # what time alone may change: the kind's rule, and its plays' conditions
        timed: dict[SubjectKind, list[d.Expr | None]] = {
            "user": [model.pql],
            "account": [model.pqa],
        }
        for p in model.plays.values():
            timed[p.of].append(p.condition)
        self.time_slots = {kind: self._time_slots(*rules) for kind, rules in timed.items()}
        self.idle_breaks = {kind: self._idle_breaks(*rules) for kind, rules in timed.items()}

    def _settle(self, roots: list[d.Expr]) -> None:
        """Find the unwindowed counts and sets read only by comparisons with a constant.

        Such a count only grows, and once it passes the constant a comparison's
        truth is settled (``count >= 3`` stays true from 3 on, ``count < 3`` false):
        its accumulator is told the count from which every comparison reading it is
        settled, so a ``did()`` seen again drops no kept value, and a set
        (``distinct``, ``active_users``, ``active_days``) keeps no more keys than that.
        """
        settled: dict[int, int | None] = {}
        for root in roots:
            occurrences: list[tuple[d.Expr | None, d.Expr]] = [(None, root)]
            occurrences += [(node, child) for node in d.walk(root) for child in node.children()]
            for parent, node in occurrences:
                slot = self.slot_of.get(id(node))
                if slot is None:
                    continue
                acc = self.accs[slot]
                if not isinstance(acc, (CountAcc, DistinctAcc)):
                    continue
                if acc.within is not None or acc.sfs is not None:
                    continue
                at = _settles_at(parent, node)
                before = settled.get(slot, 0)
                settled[slot] = None if at is None or before is None else max(at, before)
        for slot, at in settled.items():
            if at is not None:
                acc = self.accs[slot]
                assert isinstance(acc, (CountAcc, DistinctAcc))
                acc.settle(at)

    def compiled(self, node: d.Expr) -> Fn:
        """The closure evaluating ``node`` (compiled once, then cached)."""
        fn = self._compiled.get(id(node))
        if fn is None:
            fn = self._compiled[id(node)] = compile_node(self, node)
        return fn

    def _deps(self, rule: d.Expr | None) -> list[d.Expr]:
        """Every node the rule reads, through signal and score references."""
        out: list[d.Expr] = []
        seen: set[tuple[str, str]] = set()
        stack = [rule] if rule is not None else []
        while stack:
            for node in d.walk(stack.pop()):
                out.append(node)
                ref: tuple[str, str] | None = None
                if isinstance(node, d.SignalRef):
                    ref = ("s", node.signal)
                elif isinstance(node, d.ScoreRef):
                    ref = ("c", node.score)
                refs = [ref] if ref else []
                if isinstance(node, d.Points):
                    refs += [("s", s) for s, _ in node.weights]
                if isinstance(node, d.Tev):
                    refs.append(("s", node.activation))
                for r in refs:
                    if r not in seen:
                        seen.add(r)
                        m = self.model
                        stack.append(m.signals[r[1]] if r[0] == "s" else m.scores[r[1]])
        return out

    def _memoize(self) -> None:
        """Key each signal, score and rule, and find the slots each one reads.

        Values are kept in the state between evaluations (see ``Eval``) under
        these keys, each dropped when an event feeds a slot it reads (through
        references too); every kept value is also dropped when the subject's
        first-seen time moves, when a TEV activation latches, and when the traits
        an evaluation sees change.
        """
        # signals by name, scores by name after a byte no name has, rules by RULE
        self.score_keys = {name: "\x01" + name for name in self.model.scores}
        keyed: list[tuple[d.Expr, str]] = [
            *((expr, name) for name, expr in self.model.signals.items()),
            *((expr, self.score_keys[name]) for name, expr in self.model.scores.items()),
            *((p.condition, PLAY + name) for name, p in self.model.plays.items()),
        ]
        shared: list[set[str]] = [set() for _ in self.accs]  # signals and scores
        for expr, key in keyed:
            for slot in self._slots_read(expr):
                shared[slot].add(key)
        # RULE is the user's PQL rule in a user's state and the account's PQA rule
        # in an account's: a slot only one of them reads drops only that one
        rule_slots = {
            "user": self._slots_read(self.model.pql),
            "account": self._slots_read(self.model.pqa),
        }

        def drops(*kinds: SubjectKind) -> list[frozenset[str] | None]:
            out: list[frozenset[str] | None] = []
            for slot, keys in enumerate(shared):
                rule = any(slot in rule_slots[k] for k in kinds)
                out.append(frozenset(keys | {RULE}) if rule else frozenset(keys) or None)
            return out

        # kind None (a state applied without saying whose): either rule
        self.memo_of_slot: dict[SubjectKind | None, list[frozenset[str] | None]] = {
            "user": drops("user"),
            "account": drops("account"),
            None: drops("user", "account"),
        }

    def _slots_read(self, expr: d.Expr | None) -> set[int]:
        """The slots ``expr`` reads, through signal and score references."""
        if expr is None:
            return set()
        return {self.slot_of[id(n)] for n in self._deps(expr) if id(n) in self.slot_of}

    def _time_slots(
        self, *rules: d.Expr | None
    ) -> list[tuple[int, Callable[[Any, int, SubjectState], int | None]]]:
        """The time-dependent slots the rules read, each with how to find its next change."""
        out: dict[tuple[int, int | None], Callable[[Any, int, SubjectState], int | None]] = {}
        for n in [n for rule in rules for n in self._deps(rule)]:
            slot = self.slot_of.get(id(n))
            if slot is None or not self.accs[slot].time_dependent:
                continue
            acc, own = self.accs[slot], self.own_window.get(id(n))
            if own is None:
                out[(slot, None)] = acc.next_change
            else:
                assert isinstance(acc, ActiveDaysAcc)
                out[(slot, own)] = functools.partial(exit_within, acc, own)
        return [(slot, fn) for (slot, _), fn in out.items()]

    def _idle_breaks(self, *rules: d.Expr | None) -> list[int]:
        """Offsets after the newest event at which an ``idle()`` comparison the rules read flips."""
        out = set()
        for node in [n for rule in rules for n in self._deps(rule)]:
            if isinstance(node, d.Compare):
                op: str
                if isinstance(node.left, d.Idle) and isinstance(node.right, d.Const):
                    const, op = node.right.value, node.op
                elif isinstance(node.right, d.Idle) and isinstance(node.left, d.Const):
                    const, op = node.left.value, _FLIP[node.op]
                else:
                    continue
                if isinstance(const, timedelta):
                    out.add(micros(const) + (1 if op in (">", "<=") else 0))
        return sorted(out)

    # -- state ---------------------------------------------------------------
    def new_state(self) -> SubjectState:
        return SubjectState(
            slots=[acc.init() for acc in self.accs], fingerprint=self.model.fingerprint
        )

    def load(self, text: str | None) -> SubjectState | None:
        """A stored state; a fresh one for None; None if another model version wrote it."""
        if text is None:
            return self.new_state()
        try:
            state = SubjectState.load(text)
        except ValueError:
            return None
        return state if state.fingerprint == self.model.fingerprint else None

    def apply_view(self, s: SubjectState, ev: EventView, kind: SubjectKind | None = None) -> None:
        """Fold one event into the subject's state (a ``kind`` skips what it never reads;
        one view serves the event's user and account)."""
        ts, props = ev.ts, ev.properties
        old_first = s.first
        moved = False
        if old_first is None:
            s.first = ts
        elif ts < old_first:
            s.first = ts
            moved = True
        if s.newest is None or ts > s.newest:
            s.newest = ts
        s.events += 1
        slots = s.slots
        memo = s.memo
        feeds = self._feeds.get((ev.name, kind))
        if feeds is None:  # (not `or`: an event that feeds nothing caches an empty list)
            feeds = self._feeds_of(ev.name, kind)
        for feed in feeds:
            slot, check, fold, drop = feed.slot, feed.check, feed.fold, feed.drop
            if check is not None and not check(props):  # this event does not feed the slot
                if moved:
                    slots[slot] = feed.acc.refirst(slots[slot], s)
                continue
            if fold is not None:
                slots[slot], kept = fold(slots[slot], ev, s, old_first)
                if kept:
                    continue  # the values that read it hold as they are
            else:
                slots[slot] = feed.apply(slots[slot], ev, s, old_first)
            if drop is not None and memo and not memo.keys().isdisjoint(drop):
                for key in memo.keys() & drop:
                    del memo[key]
        if moved:
            memo.clear()
            fed = {feed.slot for feed in feeds}
            for slot, acc in enumerate(self.accs):
                if slot not in fed:
                    slots[slot] = acc.refirst(slots[slot], s)

    def _feeds_of(self, name: str, kind: SubjectKind | None = None) -> list[Feed]:
        """The slots an event called ``name`` may feed, each with the matches left to test
        on its properties (None: every such event feeds it) and the kept values it
        invalidates (see ``_memoize``). Cached per name.

        Left out: accumulators that keep nothing (``idle``), and for users the
        ``active_users`` ones (a user's value is None whatever they hold).
        """
        feeds = self._feeds.get((name, kind))
        if feeds is None:
            feeds = []
            seen: set[int] = set()
            for key in (name, None):
                for slot, matches in self.by_event.get(key, ()):
                    if slot in seen:
                        continue
                    seen.add(slot)
                    acc = self.accs[slot]
                    if type(acc).apply is Acc.apply or (
                        kind == "user" and isinstance(acc, ActiveUsersAcc)
                    ):
                        continue
                    relevant = tuple(m for m in matches if m.event in (None, name))
                    always = not matches or any(m.where is None for m in relevant)
                    drop = self.memo_of_slot[kind][slot]
                    check = None if always else _where_check(relevant)
                    feeds.append(Feed(slot, acc, check, drop))
            if len(self._feeds) < 10_000:  # event names come from callers: bound the cache
                self._feeds[(name, kind)] = feeds
        return feeds

    def evaluate(
        self,
        s: SubjectState,
        t: int,
        kind: SubjectKind,
        ctx: Context,
        *,
        latch: bool = False,
        full: bool = True,
        scores: bool = False,
        ranked: bool = False,
    ) -> Evaluation:
        """Evaluate the subject's signals, scores and rule at time ``t``.

        With ``latch=True`` (track-time evaluations), the first time a TEV
        activation signal is seen true is recorded in the state. With
        ``full=False`` only what the rule reads is evaluated (the signals and
        scores of the result are then partial), and every score too with
        ``scores=True`` (the result's scores are then complete, its signals not),
        or the model's ranked scores with ``ranked=True``.
        """
        # Values still kept are read here directly; an Eval (whose lookups also
        # gather validity for what is being computed) is made at the first that is not.
        revalidate(s, t, ctx)
        memo, newest = s.memo, s.newest
        e: Eval | None = None
        signals: dict[str, bool] = {}
        out_scores: dict[str, float] = {}
        if latch and len(s.latches) < len(self.latched):  # (latches: some of self.latched)
            e = self._latch(s, t, kind, ctx, signals, out_scores)
        if full:
            for name in self.model.signals:
                kept = memo.get(name)
                if kept is not None and kept.holds(t, newest):
                    signals[name] = kept.value
                else:
                    e = e or Eval(self, s, t, kind, ctx, signals, out_scores)
                    e.signal(name)
        if full or scores or ranked:
            for name, key in (self.score_keys if full or scores else self.ranked_keys).items():
                kept = memo.get(key)
                if kept is not None and kept.holds(t, newest):
                    out_scores[name] = kept.value
                else:
                    e = e or Eval(self, s, t, kind, ctx, signals, out_scores)
                    e.score(name)
        rule_fn = self.rule_fns[kind]
        rule, until = False, None
        if rule_fn is not None:
            kept = memo.get(RULE)
            if kept is None or not kept.holds(t, newest):
                e = e or Eval(self, s, t, kind, ctx, signals, out_scores)
                e._keep(RULE, rule_fn)
                kept = memo[RULE]
            rule = kept.value
            end = kept.end(newest)
            until = end if end < NEVER else None
        ev = Evaluation(t, signals, out_scores, rule, until)
        if self.has_plays:
            e = self._plays(ev, e, s, t, kind, ctx)
        return ev

    def _plays(
        self,
        ev: Evaluation,
        e: Eval | None,
        s: SubjectState,
        t: int,
        kind: SubjectKind,
        ctx: Context,
    ) -> Eval | None:
        """Evaluate the kind's plays into ``ev.plays`` (kept like the rule), moving
        ``ev.until`` to the earliest time alone may change one of them."""
        memo, newest = s.memo, s.newest
        until = ev.until
        plays: dict[str, bool] = {}
        ev.plays = plays
        for name, key, fn in self.play_fns[kind]:
            kept = memo.get(key)
            if kept is None or not kept.holds(t, newest):
                e = e or Eval(self, s, t, kind, ctx, ev.signals, ev.scores)
                e._keep(key, fn)
                kept = memo[key]
            plays[name] = bool(kept.value)
            end = kept.end(newest)
            if end < NEVER and (until is None or end < until):
                until = end
        ev.until = until
        return e

    def score_changes(self, s: SubjectState, name: str, t: int) -> int | None:
        """When time alone may next change score ``name`` as ``evaluate`` last found it at
        ``t`` (a window's next exit, an ``idle()`` comparison's flip); None: never.

        Read from the value kept in the state (see ``Kept.end``); ``t`` when none is
        kept (not evaluated: it may change at any time).
        """
        kept = s.memo.get(self.score_keys[name])
        if kept is None:
            return t
        end = kept.end(s.newest)
        return None if end >= NEVER else end

    def latch(self, s: SubjectState, t: int, kind: SubjectKind, ctx: Context) -> None:
        """Only what ``evaluate(latch=True)`` records: the TEV activations true at ``t``
        (replaying the log, where nothing else of each event's evaluation is needed)."""
        if len(s.latches) < len(self.latched):
            revalidate(s, t, ctx)
            self._latch(s, t, kind, ctx, {}, {})

    def _latch(
        self,
        s: SubjectState,
        t: int,
        kind: SubjectKind,
        ctx: Context,
        signals: dict[str, bool],
        scores: dict[str, float],
    ) -> Eval | None:
        """Latch each TEV activation signal true at ``t`` not latched yet; the Eval
        made on the way, if one was (``revalidate`` is the caller's)."""
        memo, newest = s.memo, s.newest
        e: Eval | None = None
        for name in self.latched:
            if name in s.latches:
                continue
            kept = memo.get(name)
            if kept is not None and kept.holds(t, newest):
                v = signals[name] = kept.value
            else:
                e = e or Eval(self, s, t, kind, ctx, signals, scores)
                v = e.signal(name)
            if v:
                s.latches[name] = t
                # TEV scores read the latch. (What they kept is dropped anyway:
                # the activation they read turned true. Cheap insurance: rare.)
                memo.clear()
        return e

    def next_due(self, s: SubjectState, t: int, kind: SubjectKind) -> int | None:
        """The earliest time after ``t`` at which time alone may change the subject's rule."""
        candidates = []
        for slot, next_change in self.time_slots[kind]:
            nxt = next_change(s.slots[slot], t, s)
            if nxt is not None:
                candidates.append(nxt)
        if s.newest is not None:
            for off in self.idle_breaks[kind]:
                if s.newest + off > t:
                    candidates.append(s.newest + off)
        return min(candidates, default=None)


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def _settles_at(parent: d.Expr | None, node: d.Expr) -> int | None:
    """The count (>= 0) from which ``parent``, a comparison of the count ``node`` with
    a constant, has the same truth for every larger count; None if ``parent`` reads
    the count some other way."""
    if not isinstance(parent, d.Compare):
        return None
    op: str
    if parent.left is node and parent.right is not node:
        op, other = parent.op, parent.right
    elif parent.right is node and parent.left is not node:
        op, other = _FLIP[parent.op], parent.left
    else:
        return None
    c = other.value if isinstance(other, d.Const) else None
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
        return None
    # n >= ceil(c) settles >= (true) and < (false); any n > c settles every op
    at = math.ceil(c) if op in (">=", "<") else math.floor(c) + 1
    return max(at, 0)
