"""Incremental per-subject state and evaluation.

A :class:`Plan` is a model compiled once: the distinct aggregates it reads, each
with an accumulator that keeps a small JSON-compatible state, and an index from
event name to the accumulators that event feeds. ``apply`` folds one event into
a subject's state; ``evaluate`` reads the state at an evaluation time T.

What each accumulator keeps (all times are integer microseconds since the epoch):

* no window: a running value (a count, a sum, a set of distinct keys);
* ``within=D``: entries ``[ts, x, cum]`` (``cum`` an exact running sum, so a window
  sum is one bisection and one subtraction) for matching events newer than
  ``newest - D``, or for sets each key's latest time and those times sorted; older
  entries can never re-enter the window, since T never goes back, and are dropped
  lazily (in batches: readers bisect on their own cut);
* ``since_first_seen=D``: entries inside ``[F, F + D)``, dropped when a late
  event moves F earlier;
* ``sequence``: the timestamps of its steps' events until the chain completes;
* ``absent``: the first ``after`` time and the watched events' times up to its end.

So the cost of an event depends on the model and on the matching events inside
the windows, never on the length of the subject's history.
"""

from __future__ import annotations

import bisect
import functools
import json
import math
import operator
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import attrs

from . import _dsl as d
from ._convert import from_us, to_us
from ._model import Model

__all__ = ["STATE_LAYOUT", "Context", "Evaluation", "Plan", "SubjectState"]

DAY_US = 86_400_000_000
SubjectKind = Literal["user", "account"]


def _us(td: timedelta) -> int:
    return (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v if math.isfinite(v) else None


def _key(v: Any) -> str:
    """A value as a set key: its canonical JSON (what is stored in a state)."""
    t = type(v)
    if t is str:
        if v.isascii() and v.isprintable() and '"' not in v and "\\" not in v:
            return f'"{v}"'  # what json.dumps gives: nothing to escape
    elif t is int:
        return str(v)
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


NEVER = 1 << 62
"""A time (µs) after every real one: "no time-driven change ahead"."""

_ANY = object()
"""In a kept value: it holds whatever the subject's newest event time becomes."""

_Kept = tuple[Any, int, Any, int]
"""A kept value: ``(value, until, newest, idle)``. It holds for evaluations at times
before ``until`` and before the subject's newest event time plus ``idle`` (the
first flip of an ``idle()`` comparison it reads: it moves with newer events), while
the newest event time is ``newest`` (or any, if ``newest`` is ``_ANY``), until an
event feeds a slot it reads (see ``_holds``)."""

STATE_LAYOUT = 5
"""The layout of a stored state: bump when the meaning of the stored state changes.

A state stored with another layout is not read: the subject is rebuilt from the log.
3: windowed count/total keep ``[k, [[ts, x, cum], ...]]`` (exact prefix sums) and
windowed distinct/active_days/active_users ``[latest, times]``; both trimmed lazily.
4: windowed active_days keep a sorted list of each day's latest time.
5: active_days of one match with different windows share one such list (one slot).
"""


class SubjectState:
    """The derived state of one subject: first/newest event time, count, accumulators.

    A plain class (as are ``Context`` and ``Evaluation``): mypyc compiles it to a
    native class in the compiled build (see docs/performance.md).
    """

    def __init__(
        self,
        first: int | None = None,
        newest: int | None = None,
        events: int = 0,
        slots: list[Any] | None = None,
        latches: dict[str, int] | None = None,
        account: list[Any] | None = None,
        fingerprint: str = "",
        qualification: Any = None,
        seq: int = 0,
    ) -> None:
        self.first = first
        self.newest = newest
        self.events = events
        self.slots: list[Any] = [] if slots is None else slots
        self.latches: dict[str, int] = {} if latches is None else latches
        # users: [ts, account_id] of the latest event with one
        self.account = account
        self.fingerprint = fingerprint  # the model version whose plan wrote it
        # A cache of the subject's latest qualification record (kept by the Client in
        # the same transaction as the record): None unknown, 0 none, else its fields.
        self.qualification: Any = qualification
        # the arrival seq of the newest event folded in (events after it: a tail)
        self.seq = seq
        # Not stored: signal, score and rule values from earlier evaluations (see
        # _Eval and Plan._memoize) by key (Plan.score_keys), each a _Kept;
        # valid for the traits in `memo_ctx`, and for evaluations from `memo_t` on.
        self.memo: dict[str, _Kept] = {}
        self.memo_ctx: tuple[Any, Any] | None = None
        self.memo_t: int = -NEVER

    def _stored(self) -> tuple[Any, ...]:
        return (
            self.first,
            self.newest,
            self.events,
            self.slots,
            self.latches,
            self.account,
            self.fingerprint,
            self.qualification,
            self.seq,
        )

    def __eq__(self, other: object) -> bool:
        """Equal when what is stored is (the kept values are a cache: not compared)."""
        if not isinstance(other, SubjectState):
            return NotImplemented
        return self._stored() == other._stored()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"SubjectState{self._stored()!r}"

    def dump(self) -> str:
        return _ENCODER.encode(
            [
                STATE_LAYOUT,
                self.fingerprint,
                self.seq,
                self.first,
                self.newest,
                self.events,
                self.slots,
                self.latches,
                self.account,
                self.qualification,
            ]
        )

    @classmethod
    def load(cls, text: str) -> SubjectState:
        """Parse a dump; ValueError if it is not one of this layout."""
        data = json.loads(text)
        if not isinstance(data, list) or len(data) != 10 or data[0] != STATE_LAYOUT:
            raise ValueError("not a state of this layout")
        _, fingerprint, seq, first, newest, events, slots, latches, account, qual = data
        return cls(first, newest, events, slots, latches, account, fingerprint, qual, seq)


_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


class EventView:
    """What an accumulator sees of one event (a plain class: one is made per event)."""

    __slots__ = ("name", "properties", "ts", "user_id")

    def __init__(self, ts: int, name: str, properties: Mapping[str, Any], user_id: str) -> None:
        self.ts = ts
        self.name = name
        self.properties = properties
        self.user_id = user_id


# -- accumulators ---------------------------------------------------------------


class Acc:
    """How one aggregate keeps and reads its state."""

    time_dependent = False

    def __init__(self, node: d.Expr) -> None:
        self.node = node

    def init(self) -> Any:
        return None

    def apply(self, st: Any, ev: EventView, s: SubjectState, old_first: int | None) -> Any:
        return st

    def refirst(self, st: Any, s: SubjectState) -> Any:
        """The subject's first-seen time moved earlier (a late event): adjust."""
        return st

    def value(self, st: Any, t: int, s: SubjectState, kind: SubjectKind) -> Any:
        raise NotImplementedError

    def next_change(self, st: Any, t: int, s: SubjectState) -> int | None:
        return None

    fold: Callable[[Any, EventView, SubjectState, int | None], tuple[Any, bool]] | None = None
    """If set: ``apply`` that also says whether the value stayed the same for every
    evaluation a kept value could serve (so the values that read it stay kept)."""


# Lazy trimming: entries with ts <= newest - D can never count again (T never goes
# back below the newest event) and every reader bisects on its own cut, so the
# expired prefix is only dropped once it holds more than _TRIM_MIN entries and more
# than a quarter of the list (amortized O(1) per event; the list stays under
# max(live + _TRIM_MIN, 4/3 live) entries after each apply).
_TRIM_MIN = 32


def _exit_within(acc: ActiveDaysAcc, within: int, st: Any, t: int, s: SubjectState) -> int | None:
    """``ActiveDaysAcc.exit_within`` as a ``next_change`` for one window."""
    return acc.exit_within(st, t, within)


def _stays_inside(times: list[int], j: int, cut: int) -> bool:
    """Whether moving ``times[j]`` (of the sorted ``times``) later changes no kept
    value: it was inside the window (after ``cut``, the window's start at the latest
    evaluation) and was not the first to leave it (whose exit kept values hold until,
    and which now comes later: they would be kept with too early an end)."""
    return times[j] > cut and j > 0 and times[j - 1] > cut


def _trim_due(lo: int, n: int) -> bool:
    """Whether an expired prefix of ``lo`` of ``n`` entries is long enough to drop."""
    return lo > _TRIM_MIN and 4 * lo > n


_TS = operator.itemgetter(0)


class _Windowed(Acc):
    """Shared window logic for count/total/distinct/active_days/active_users.

    Subclasses say how an event contributes (``contribution``) and how entries
    combine; the state layout depends on the window kind:

    * none: ``total`` (running value), or a dict key -> 1 for sets;
    * within, count/total: ``[k, entries]``, entries sorted ``[ts, x, cum]`` with
      ``cum`` the exact prefix sum of the entries up to and including this one,
      in units of ``2**-k`` (see ``_units``), so a window sum is one subtraction;
      entries at or before ``newest - D`` are dropped lazily (readers bisect);
    * within, sets: ``[latest, times]``, a dict key -> latest ts and the sorted
      list of its values (the same multiset), trimmed lazily with the same rule;
    * since_first_seen: ``[k, entries]`` as above (or a dict key -> earliest ts
      for sets), only entries inside ``[F, F + D)``.

    Readers are exact for evaluation times at or after the subject's newest event
    (every caller's case: the client never evaluates before it).
    """

    is_set = False

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.match: d.Match = node.match
        within = getattr(node, "within", None)
        sfs = getattr(node, "since_first_seen", None)
        self.within = _us(within) if within is not None else None
        self.sfs = _us(sfs) if sfs is not None else None
        self.time_dependent = self.within is not None
        if self.within is not None and self.is_set:
            self.fold = self._fold_set

    def contribution(self, ev: EventView) -> Any:
        raise NotImplementedError

    def _fold_set(
        self, st: Any, ev: EventView, s: SubjectState, old_first: int | None
    ) -> tuple[Any, bool]:
        """``apply`` for a set with a window. Its size stays the same for the kept
        values when the event has no key, when its key is outside the window (it
        never counts again), or when its key was inside the window at every time a
        kept value holds for (from ``s.memo_t`` on) and now stays inside longer: a
        key inside the window at a kept value's own time bounds that value's
        ``until`` by its exit, and until then it counts, before and after the event.
        """
        x = self.contribution(ev)
        if x is None:
            return st, True
        within = self.within
        assert within is not None
        assert s.newest is not None
        cut = s.newest - within
        ts = ev.ts
        latest, times = st
        kept = True
        if ts > cut:
            old = latest.get(x)
            if old is None or old < ts:
                kept = False
                if old is not None:
                    j = bisect.bisect_left(times, old)
                    kept = _stays_inside(times, j, s.memo_t - within)
                    del times[j]
                bisect.insort(times, ts)
                latest[x] = ts
        if len(times) > _TRIM_MIN and times[0] <= cut:  # else nothing to drop yet
            lo = bisect.bisect_right(times, cut)
            if _trim_due(lo, len(times)):
                st[0] = {k: v for k, v in latest.items() if v > cut}
                st[1] = times[lo:]
        return st, kept

    def _units(self, x: Any) -> tuple[int, int]:
        """An entry's value as ``(n, p)``, exactly ``n * 2**-p`` (what a sum adds)."""
        return x, 0

    def init(self) -> Any:
        if self.within is None and self.sfs is None:
            return {} if self.is_set else 0
        if self.is_set:
            return [{}, []] if self.within is not None else {}
        return [0, []]

    def apply(self, st: Any, ev: EventView, s: SubjectState, old_first: int | None) -> Any:
        if old_first is not None and s.first is not None and s.first < old_first:
            st = self.refirst(st, s)
        x = self.contribution(ev)
        if x is None:
            return st
        ts = ev.ts
        assert s.newest is not None
        assert s.first is not None
        if self.within is not None:
            if self.is_set:
                return self._fold_set(st, ev, s, old_first)[0]
            cut = s.newest - self.within
            if ts > cut:
                self._add_entry(st, ts, x)
            entries = st[1]
            if len(entries) <= _TRIM_MIN or entries[0][0] > cut:
                return st  # nothing to drop yet
            lo = bisect.bisect_right(entries, cut, key=_TS)
            if _trim_due(lo, len(entries)):
                base = entries[lo - 1][2]
                kept = entries[lo:]
                for e in kept:
                    e[2] -= base
                st[1] = kept
            return st
        if self.sfs is not None:
            if ts >= s.first + self.sfs:
                return st
            if self.is_set:
                if x not in st or ts < st[x]:
                    st[x] = ts
                return st
            self._add_entry(st, ts, x)
            return st
        if self.is_set:
            st[x] = 1
            return st
        return st + x

    def _add_entry(self, st: list[Any], ts: int, x: Any) -> None:
        """Add ``x`` at ``ts`` to a ``[k, entries]`` state, keeping every ``cum`` exact."""
        entries: list[list[Any]] = st[1]
        i = bisect.bisect_left(entries, ts, key=_TS)
        if i < len(entries) and entries[i][0] == ts:
            e = entries[i]
            v = e[1] + x  # the same merge (and float rounding) as a plain list of [ts, x]
            n, p = self._units(v)
            self._rescale(st, p)
            old = e[2] - (entries[i - 1][2] if i else 0)
            e[1] = v
            delta = (n << (st[0] - p)) - old
        else:
            n, p = self._units(x)
            self._rescale(st, p)
            entries.insert(i, [ts, x, entries[i - 1][2] if i else 0])
            delta = n << (st[0] - p)
        if delta:
            for j in range(i, len(entries)):  # later entries: only after a late event
                entries[j][2] += delta

    @staticmethod
    def _rescale(st: list[Any], p: int) -> None:
        """Make the unit of a ``[k, entries]`` state at least as fine as ``2**-p``."""
        k = st[0]
        if p > k:
            shift = p - k
            for e in st[1]:
                e[2] <<= shift
            st[0] = p

    def refirst(self, st: Any, s: SubjectState) -> Any:
        if self.sfs is None:
            return st
        assert s.first is not None
        end = s.first + self.sfs
        if self.is_set:
            return {k: v for k, v in st.items() if v < end}
        entries = st[1]
        st[1] = entries[: bisect.bisect_left(entries, end, key=_TS)]  # a prefix: cums stay
        return st

    def _sum(self, st: Any, t: int) -> int:
        """The exact sum (in units of ``2**-k``) of a ``[k, entries]`` state at time t."""
        entries = st[1]
        if not entries:
            return 0
        if self.within is None:
            return int(entries[-1][2])
        i = bisect.bisect_right(entries, t - self.within, key=_TS)
        if i == len(entries):
            return 0
        return int(entries[-1][2] - (entries[i - 1][2] if i else 0))

    def _size(self, st: Any, t: int) -> int:
        """How many keys of a set state count at time t."""
        if self.within is None:
            return len(st)
        return self._live(st[1], t)

    def _live(self, times: list[int], t: int) -> int:
        """How many of the sorted ``times`` are inside the window at time t."""
        assert self.within is not None
        return len(times) - bisect.bisect_right(times, t - self.within)

    def _first_exit(self, times: list[int], t: int) -> int | None:
        """When the first of the sorted ``times`` still inside the window at t leaves it."""
        assert self.within is not None
        i = bisect.bisect_right(times, t - self.within)
        return times[i] + self.within if i < len(times) else None

    def next_change(self, st: Any, t: int, s: SubjectState) -> int | None:
        if self.within is None:
            return None
        # sorted by time: the first entry (or key time) still inside leaves first
        if self.is_set:
            return self._first_exit(st[1], t)
        entries = st[1]
        i = bisect.bisect_right(entries, t - self.within, key=_TS)
        return entries[i][0] + self.within if i < len(entries) else None


class CountAcc(_Windowed):
    def contribution(self, ev: EventView) -> Any:
        return 1

    def settle(self, at: int) -> None:
        """Every reader of this count (unwindowed, so it only grows) is a comparison
        whose truth no longer changes once the count reaches ``at`` (see
        ``Plan._settle``): from there an event changes nothing a kept value read."""
        assert self.within is None
        assert self.sfs is None
        self.settled_at = at
        self.fold = self._fold_settled

    def _fold_settled(
        self, st: Any, ev: EventView, s: SubjectState, old_first: int | None
    ) -> tuple[Any, bool]:
        return st + 1, st >= self.settled_at

    def value(self, st: Any, t: int, s: SubjectState, kind: SubjectKind) -> Any:
        return st if isinstance(st, int) else self._sum(st, t)


class TotalAcc(_Windowed):
    def __init__(self, node: d.Total) -> None:
        super().__init__(node)
        self.prop = node.prop

    def contribution(self, ev: EventView) -> Any:
        v = _num(ev.properties.get(self.prop))
        return 0 if v is None else v

    def _units(self, x: Any) -> tuple[int, int]:
        # float(x): a sum of the entries' floats, as math.fsum computes it
        n, den = float(x).as_integer_ratio()
        return n, den.bit_length() - 1

    def value(self, st: Any, t: int, s: SubjectState, kind: SubjectKind) -> Any:
        if isinstance(st, (int, float)):
            return st
        units = self._sum(st, t)
        # int / int is correctly rounded: the same float as math.fsum of the entries
        return units / (1 << st[0]) if units else 0.0


class DistinctAcc(_Windowed):
    is_set = True

    def __init__(self, node: d.Distinct) -> None:
        super().__init__(node)
        self.prop = node.prop

    def contribution(self, ev: EventView) -> Any:
        v = ev.properties.get(self.prop)
        return None if v is None else _key(v)

    def value(self, st: Any, t: int, s: SubjectState, kind: SubjectKind) -> Any:
        return self._size(st, t)


class ActiveDaysAcc(DistinctAcc):
    """Distinct UTC days. With ``within=D`` the state is a plain sorted list: the
    latest event time of each day (days do not overlap, so sorting by day sorts
    the times too), a day counting while its latest time is inside the window."""

    def __init__(self, node: d.ActiveDays) -> None:
        _Windowed.__init__(self, node)
        if self.within is not None:
            self.fold = self._fold_days
        # The narrowest window reading this list (Plan shares one list between
        # active_days of one match with different windows; self.within is the widest).
        self.narrowest = self.within

    def count_within(self, st: list[int], t: int, within: int) -> int:
        """The days inside a window of ``within`` (at most the list's) at time t."""
        return len(st) - bisect.bisect_right(st, t - within)

    def exit_within(self, st: list[int], t: int, within: int) -> int | None:
        """When the first day inside a window of ``within`` at time t leaves it."""
        i = bisect.bisect_right(st, t - within)
        return st[i] + within if i < len(st) else None

    def contribution(self, ev: EventView) -> Any:
        return str(ev.ts // DAY_US)

    def init(self) -> Any:
        return [] if self.within is not None else super().init()

    def apply(self, st: Any, ev: EventView, s: SubjectState, old_first: int | None) -> Any:
        if self.within is None:
            return super().apply(st, ev, s, old_first)
        return self._fold_days(st, ev, s, old_first)[0]

    def _fold_days(
        self, st: Any, ev: EventView, s: SubjectState, old_first: int | None
    ) -> tuple[Any, bool]:
        """``apply`` with a window, and whether the number of days stays the same for
        the kept values (as ``_Windowed._fold_set``, with days for keys)."""
        within, narrowest = self.within, self.narrowest
        assert within is not None
        assert narrowest is not None
        assert s.newest is not None
        cut = s.newest - within
        ts = ev.ts
        times: list[int] = st
        kept = True
        if ts > cut:
            day = ts // DAY_US
            last = times[-1] // DAY_US if times else None
            if last is None or day > last:
                times.append(ts)  # the common case: a new latest day
                kept = False
            elif day == last:
                old = times[-1]
                if ts > old:
                    kept = _stays_inside(times, len(times) - 1, s.memo_t - narrowest)
                    times[-1] = ts
            else:  # a late event: find its day
                i = bisect.bisect_left(times, day * DAY_US)
                if i < len(times) and times[i] // DAY_US == day:
                    old = times[i]
                    if ts > old:
                        kept = _stays_inside(times, i, s.memo_t - narrowest)
                        times[i] = ts
                else:
                    times.insert(i, ts)
                    kept = False
        if len(st) > _TRIM_MIN and st[0] <= cut:  # else nothing to drop yet
            lo = bisect.bisect_right(st, cut)
            if _trim_due(lo, len(st)):
                del st[:lo]
        return st, kept

    def value(self, st: Any, t: int, s: SubjectState, kind: SubjectKind) -> Any:
        if self.within is None:
            return super().value(st, t, s, kind)
        return self._live(st, t)

    def next_change(self, st: Any, t: int, s: SubjectState) -> int | None:
        return None if self.within is None else self._first_exit(st, t)


class ActiveUsersAcc(DistinctAcc):
    def __init__(self, node: d.ActiveUsers) -> None:
        _Windowed.__init__(self, node)

    def contribution(self, ev: EventView) -> Any:
        return ev.user_id

    def value(self, st: Any, t: int, s: SubjectState, kind: SubjectKind) -> Any:
        if kind != "account":
            return None
        return self._size(st, t)


class LastAcc(Acc):
    def __init__(self, node: d.Last) -> None:
        super().__init__(node)
        self.prop = node.prop

    def apply(self, st: Any, ev: EventView, s: SubjectState, old_first: int | None) -> Any:
        if st is None or ev.ts >= st[0]:
            return [ev.ts, ev.properties.get(self.prop)]
        return st

    def value(self, st: Any, t: int, s: SubjectState, kind: SubjectKind) -> Any:
        return None if st is None else st[1]


class TimeToAcc(Acc):
    def apply(self, st: Any, ev: EventView, s: SubjectState, old_first: int | None) -> Any:
        return ev.ts if st is None or ev.ts < st else st

    def value(self, st: Any, t: int, s: SubjectState, kind: SubjectKind) -> Any:
        if st is None or s.first is None:
            return None
        return timedelta(microseconds=st - s.first)


class IdleAcc(Acc):
    time_dependent = True

    def value(self, st: Any, t: int, s: SubjectState, kind: SubjectKind) -> Any:
        if s.newest is None:
            return None
        return timedelta(microseconds=max(0, t - s.newest))


class SequenceAcc(Acc):
    """State: ``True`` once complete, else a list of sorted timestamp lists, one per step."""

    def __init__(self, node: d.Sequence) -> None:
        super().__init__(node)
        self.steps = node.steps
        self.within = _us(node.within) if node.within is not None else None

    def init(self) -> Any:
        return [[] for _ in self.steps]

    def apply(self, st: Any, ev: EventView, s: SubjectState, old_first: int | None) -> Any:
        if st is True:
            return st
        touched = False
        for i, step in enumerate(self.steps):
            if step.matches(ev.name, ev.properties):
                times = st[i]
                j = bisect.bisect_left(times, ev.ts)
                if j == len(times) or times[j] != ev.ts:
                    times.insert(j, ev.ts)
                touched = True
        if touched and self._complete(st):
            return True
        return st

    def _complete(self, lists: list[list[int]]) -> bool:
        for t1 in lists[0]:
            prev = t1
            for times in lists[1:]:
                j = bisect.bisect_right(times, prev)
                if j == len(times):
                    return False  # no later start can do better for this step
                prev = times[j]
            if self.within is None or prev - t1 <= self.within:
                return True
        return False

    def value(self, st: Any, t: int, s: SubjectState, kind: SubjectKind) -> Any:
        return st is True


class AbsentAcc(Acc):
    """State: ``[first_after_ts | None, sorted watched-event timestamps]``."""

    time_dependent = True

    def __init__(self, node: d.Absent) -> None:
        super().__init__(node)
        self.match = node.match
        self.after = node.after
        self.within = _us(node.within)

    def init(self) -> Any:
        return [None, []]

    def apply(self, st: Any, ev: EventView, s: SubjectState, old_first: int | None) -> Any:
        first, times = st
        if self.after.matches(ev.name, ev.properties) and (first is None or ev.ts < first):
            first = ev.ts
        if self.match.matches(ev.name, ev.properties):
            bisect.insort(times, ev.ts)
        if first is not None:
            end = first + self.within
            times = [x for x in times if x <= end] if times and times[-1] > end else times
        return [first, times]

    def value(self, st: Any, t: int, s: SubjectState, kind: SubjectKind) -> Any:
        first, times = st
        if first is None or t < first + self.within:
            return False
        j = bisect.bisect_left(times, first)
        return not (j < len(times) and times[j] <= first + self.within)

    def next_change(self, st: Any, t: int, s: SubjectState) -> int | None:
        first, _ = st
        if first is None:
            return None
        end = first + self.within
        return end if end > t else None


_ACCS: dict[type[d.Expr], Callable[[Any], Acc]] = {
    d.Count: CountAcc,
    d.Total: TotalAcc,
    d.Distinct: DistinctAcc,
    d.ActiveDays: ActiveDaysAcc,
    d.ActiveUsers: ActiveUsersAcc,
    d.Last: LastAcc,
    d.TimeTo: TimeToAcc,
    d.Idle: IdleAcc,
    d.Sequence: SequenceAcc,
    d.Absent: AbsentAcc,
}


def _matches_of(node: d.Expr) -> list[d.Match]:
    if isinstance(node, d.Sequence):
        return list(node.steps)
    if isinstance(node, d.Absent):
        return [node.match, node.after]
    match = getattr(node, "match", None)
    return [match] if match is not None else []


def _agg_key(node: d.Expr, *, window: bool = True) -> str:
    ids = [id(m.where) for m in _matches_of(node) if callable(m.where)]
    if not window:  # the same aggregate whatever its window (see _shared_days)
        assert isinstance(node, d.ActiveDays)
        return (
            f"{type(node).__name__}:any window:{attrs.evolve(node, within=None).describe()}:{ids}"
        )
    return f"{type(node).__name__}:{node.describe()}:{ids}"


def _shared_days(node: d.Expr) -> bool:
    """An ``active_days(..., within=D)``: one slot serves every window of its match."""
    return isinstance(node, d.ActiveDays) and node.within is not None


# -- evaluation -----------------------------------------------------------------

_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def _compare(op: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    try:
        return bool(_CMP[op](a, b))
    except TypeError:
        return False


def _arith(op: str, a: Any, b: Any) -> Any:
    a, b = _num(a), _num(b)
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
        # when time alone may next change the rule (None: never, or no rule); may be early
        self.until = until

    @property
    def true_signals(self) -> tuple[str, ...]:
        return tuple(sorted(n for n, v in self.signals.items() if v))


class _Eval:
    """One evaluation: signals and scores, kept in the state between evaluations.

    Each value is kept with how long it holds (see ``_Kept``): while one is
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
        _revalidate(s, t, ctx)
        self.newest = s.newest
        self.signals: dict[str, bool] = {} if signals is None else signals
        self.scores: dict[str, float] = {} if scores is None else scores
        self.aggs: dict[Any, Any] = {}
        self.until = NEVER
        self.idle = NEVER
        self.sensitive = False

    def _kept(self, key: str) -> _Kept | None:
        """The value kept under ``key`` if it holds now (counted in what is being computed)."""
        kept = self.s.memo.get(key)
        if kept is None:
            return None
        if not _holds(kept, self.t, self.newest):
            del self.s.memo[key]
            return None
        if kept[1] < self.until:
            self.until = kept[1]
        if kept[3] < self.idle:
            self.idle = kept[3]
        if kept[2] is not _ANY:
            self.sensitive = True
        return kept

    def _keep(self, key: str, fn: Fn, *, score: bool = False) -> Any:
        """Compute ``fn`` and keep it under ``key`` with its own validity."""
        outer = self.until, self.idle, self.sensitive
        self.until, self.idle, self.sensitive = NEVER, NEVER, False
        try:
            v = _score_value(fn(self)) if score else bool(fn(self))
            guard = self.newest if self.sensitive else _ANY
            self.s.memo[key] = (v, self.until, guard, self.idle)
        finally:
            if outer[0] < self.until:
                self.until = outer[0]
            if outer[1] < self.idle:
                self.idle = outer[1]
            self.sensitive = self.sensitive or outer[2]
        return v

    def signal(self, name: str) -> bool:
        kept = self._kept(name)
        v: bool = kept[0] if kept is not None else self._keep(name, self.plan.signal_fns[name])
        self.signals[name] = v
        return v

    def score(self, name: str) -> float:
        key = self.plan.score_keys[name]
        kept = self._kept(key)
        if kept is not None:
            v: float = kept[0]
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
        eng = _num(engagement(self))
        vir = _num(virality(self))
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


Fn = Callable[[_Eval], Any]


def _holds(kept: _Kept, t: int, newest: int | None) -> bool:
    """Whether a kept value serves an evaluation at ``t`` of a subject whose newest
    event time is ``newest`` (nothing fed what it reads since it was kept)."""
    return (
        kept[1] > t
        and (kept[2] is _ANY or kept[2] == newest)
        and (kept[3] == NEVER or (newest is not None and newest + kept[3] > t))
    )


def _revalidate(s: SubjectState, t: int, ctx: Context) -> None:
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
        n = _num(n)
        return 0.0 if n is None else float(n)
    return n if math.isfinite(n) else 0.0


_RULE = "\x00rule"
"""The key the subject's rule is kept under (no signal's name starts with a control byte)."""


def _part(value: float | None, target: float) -> float:
    """``value / target`` clamped to [0, 1] (None counts as 0)."""
    if not value:
        return 0.0
    x = value / target
    return 1.0 if x >= 1.0 else (x if x > 0.0 else 0.0)


def _compile(plan: Plan, node: d.Expr) -> Fn:
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
            b_us = _us(b)

            # after the newest event, when the comparison changes as idle() grows
            flips = {">=": (b_us,), "<": (b_us,), ">": (b_us + 1,), "<=": (b_us + 1,)}.get(
                node.op, (b_us, b_us + 1)
            )
            # a newer event makes idle smaller: this value may then flip
            fragile = {">=": True, ">": True, "<=": False, "<": False}.get(node.op)

            def compare_idle(e: _Eval) -> bool:  # in microseconds: no timedelta per call
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

        def compare_const(e: _Eval) -> bool:
            a = left(e)
            if a is None:
                return False
            try:
                return bool(op(a, b))
            except TypeError:
                return False

        return compare_const
    if isinstance(node, d.Compare):
        left, right, op = c(node.left), c(node.right), _CMP[node.op]

        def compare(e: _Eval) -> bool:
            a = left(e)
            if a is None:
                return False
            b = right(e)
            if b is None:
                return False
            try:
                return bool(op(a, b))
            except TypeError:
                return False

        return compare
    if isinstance(node, d.All):
        items = [c(i) for i in node.items]

        def all_(e: _Eval) -> bool:
            for f in items:  # noqa: SIM110 (a loop beats a generator here: hot path)
                if not f(e):
                    return False
            return True

        return all_
    if isinstance(node, d.Any_):
        items = [c(i) for i in node.items]

        def any_(e: _Eval) -> bool:
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
        value, options = c(node.value), node.options

        try:
            hashed: frozenset[Any] | None = frozenset(options)
        except TypeError:
            hashed = None

        def is_in(e: _Eval) -> bool:
            v = value(e)
            if v is None:
                return False
            if hashed is not None:
                try:
                    return v in hashed  # == by hash: the same answer as the loop below
                except TypeError:
                    pass  # v is unhashable (a list, a dict)
            return any(_compare("==", v, o) for o in options)

        return is_in
    if isinstance(node, d.Points):
        weights = node.weights

        def points(e: _Eval) -> Any:
            total: Any = 0
            signal = e.signal
            for sig, w in weights:
                if signal(sig):
                    total += w
            return total

        return points
    if isinstance(node, d.Fit):
        rules = [(c(cond), pts) for cond, pts in node.rules]

        def fit(e: _Eval) -> Any:
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
            _us(node.fast),
            _us(node.slow),
            c(node.engagement),
            c(node.virality),
        )
        total_w = sum(w)

        def tev_score(e: _Eval) -> float:
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

        def idle(e: _Eval) -> Any:  # changes with T and with every newer event
            e.horizon(e.t + 1)
            e.sensitive = True
            return value(None, e.t, e.s, e.kind)

        return idle
    if acc.time_dependent:

        def timed_aggregate(e: _Eval) -> Any:
            cache = e.aggs
            hit = cache.get(cache_key)
            if hit is None:
                s, st, t = e.s, e.s.slots[slot], e.t
                hit = cache[cache_key] = (value(st, t, s, e.kind), next_change(st, t, s))
            if hit[1] is not None and hit[1] < e.until:
                e.until = hit[1]
            return hit[0]

        return timed_aggregate

    def aggregate(e: _Eval) -> Any:
        cache = e.aggs
        if cache_key in cache:
            return cache[cache_key]
        s = e.s
        v = cache[cache_key] = value(s.slots[slot], e.t, s, e.kind)
        return v

    return aggregate


# (slot, its accumulator's apply, the accumulator, the test left on an event's
# properties or None, the keys of the kept values it invalidates or None, its fold
# or None)
_Feed = tuple[
    int,
    Callable[[Any, "EventView", SubjectState, "int | None"], Any],
    Acc,
    "Callable[[Mapping[str, Any]], bool] | None",
    "frozenset[str] | None",
    "Callable[[Any, EventView, SubjectState, int | None], tuple[Any, bool]] | None",
]


def _where_check(matches: tuple[d.Match, ...]) -> Callable[[Mapping[str, Any]], bool]:
    """Whether an event's properties pass the ``where`` of any of ``matches`` (all of
    them with the event's name, or with none, and a ``where``): ``Match.matches``
    without the name test, and with a dict ``where`` as a plain loop."""
    tests = [
        (None, m.where) if callable(m.where) else (tuple(dict(m.where or {}).items()), None)
        for m in matches
    ]
    if len(tests) == 1 and tests[0][0] is not None and len(tests[0][0]) == 1:
        ((key, want),) = tests[0][0]

        def one(props: Mapping[str, Any]) -> bool:  # the common case: where={"k": v}
            return key in props and bool(props[key] == want)

        return one

    def any_of(props: Mapping[str, Any]) -> bool:
        for items, fn in tests:
            if fn is not None:
                if fn(props):
                    return True
                continue
            assert items is not None
            for key, want in items:
                if key not in props or props[key] != want:
                    break
            else:
                return True
        return False

    return any_of


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

    def did_within(e: _Eval) -> bool:
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


class Plan:
    """A model compiled for incremental evaluation."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.accs: list[Acc] = []
        self.slot_of: dict[int, int] = {}
        by_key: dict[str, int] = {}
        roots: list[d.Expr] = [*model.signals.values(), *model.scores.values()]
        roots += [r for r in (model.pql, model.pqa) if r is not None]
        # active_days of one match with different windows share one list of day
        # times, kept for the widest window; each reads it with its own window
        windows: dict[str, list[timedelta]] = {}
        for root in roots:
            for node in _walk(root):
                if _shared_days(node):
                    assert isinstance(node, d.ActiveDays)
                    assert node.within is not None
                    windows.setdefault(_agg_key(node, window=False), []).append(node.within)
        self.own_window: dict[int, int] = {}  # id(node) -> its window (µs), where shared
        for root in roots:
            for node in _walk(root):
                factory = _ACCS.get(type(node))
                if factory is None:
                    continue
                if _shared_days(node):
                    assert isinstance(node, d.ActiveDays)
                    assert node.within is not None
                    key = _agg_key(node, window=False)
                    if key not in by_key:
                        widest = attrs.evolve(node, within=max(windows[key]))
                        days = ActiveDaysAcc(widest)
                        days.narrowest = _us(min(windows[key]))
                        by_key[key] = len(self.accs)
                        self.accs.append(days)
                    self.own_window[id(node)] = _us(node.within)
                else:
                    key = _agg_key(node)
                    if key not in by_key:
                        by_key[key] = len(self.accs)
                        self.accs.append(factory(node))
                self.slot_of[id(node)] = by_key[key]
        self._settle(roots)
        # event name -> slots it may feed; None -> slots that see every event
        self.by_event: dict[str | None, list[tuple[int, list[d.Match]]]] = {}
        for slot, acc in enumerate(self.accs):
            matches = _matches_of(acc.node)
            names = {m.event for m in matches} if matches else {None}
            for name in names:
                self.by_event.setdefault(name, []).append((slot, matches))
        self._feeds: dict[tuple[str, SubjectKind | None], list[_Feed]] = {}
        self._compiled: dict[int, Fn] = {}
        self.tev_parts: dict[int, tuple[int, int, Fn, Fn]] = {}
        for root in roots:
            self.compiled(root)
        traits = [n for r in roots for n in _walk(r) if isinstance(n, d.Trait)]
        self.reads_user_traits = any(n.of == "user" for n in traits)
        self.reads_account_traits = any(n.of == "account" for n in traits)
        self.signal_fns = {n: self.compiled(x) for n, x in model.signals.items()}
        self.rule_fns: dict[SubjectKind, Fn | None] = {
            "user": self.compiled(model.pql) if model.pql is not None else None,
            "account": self.compiled(model.pqa) if model.pqa is not None else None,
        }
        self.score_fns = {n: self.compiled(x) for n, x in model.scores.items()}
        self.latched = sorted(
            {n.activation for r in roots for n in _walk(r) if isinstance(n, d.Tev)}
        )
        self._memoize()
        self.time_slots = {
            "user": self._time_slots(model.pql),
            "account": self._time_slots(model.pqa),
        }
        self.idle_breaks = {
            "user": self._idle_breaks(model.pql),
            "account": self._idle_breaks(model.pqa),
        }

    def _settle(self, roots: list[d.Expr]) -> None:
        """Find the unwindowed counts read only by comparisons with a constant.

        Such a count only grows, and once it passes the constant a comparison's
        truth is settled (``count >= 3`` stays true from 3 on, ``count < 3`` false):
        its accumulator is told the count from which every comparison reading it is
        settled, so a ``did()`` seen again drops no kept value.
        """
        settled: dict[int, int | None] = {}
        for root in roots:
            occurrences: list[tuple[d.Expr | None, d.Expr]] = [(None, root)]
            occurrences += [(node, child) for node in _walk(root) for child in node.children()]
            for parent, node in occurrences:
                slot = self.slot_of.get(id(node))
                if slot is None:
                    continue
                acc = self.accs[slot]
                if not isinstance(acc, CountAcc) or acc.within is not None or acc.sfs is not None:
                    continue
                at = _settles_at(parent, node)
                before = settled.get(slot, 0)
                settled[slot] = None if at is None or before is None else max(at, before)
        for slot, at in settled.items():
            if at is not None:
                acc = self.accs[slot]
                assert isinstance(acc, CountAcc)
                acc.settle(at)

    def compiled(self, node: d.Expr) -> Fn:
        """The closure evaluating ``node`` (compiled once, then cached)."""
        fn = self._compiled.get(id(node))
        if fn is None:
            fn = self._compiled[id(node)] = _compile(self, node)
        return fn

    def _deps(self, rule: d.Expr | None) -> list[d.Expr]:
        """Every node the rule reads, through signal and score references."""
        out: list[d.Expr] = []
        seen: set[tuple[str, str]] = set()
        stack = [rule] if rule is not None else []
        while stack:
            for node in _walk(stack.pop()):
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

        Values are kept in the state between evaluations (see ``_Eval``) under
        these keys, each dropped when an event feeds a slot it reads (through
        references too); every kept value is also dropped when the subject's
        first-seen time moves, when a TEV activation latches, and when the traits
        an evaluation sees change.
        """
        # signals by name, scores by name after a byte no name has, rules by _RULE
        self.score_keys = {name: "\x01" + name for name in self.model.scores}
        keyed: list[tuple[d.Expr, str]] = [
            *((expr, name) for name, expr in self.model.signals.items()),
            *((expr, self.score_keys[name]) for name, expr in self.model.scores.items()),
        ]
        shared: list[set[str]] = [set() for _ in self.accs]  # signals and scores
        for expr, key in keyed:
            for slot in self._slots_read(expr):
                shared[slot].add(key)
        # _RULE is the user's PQL rule in a user's state and the account's PQA rule
        # in an account's: a slot only one of them reads drops only that one
        rule_slots = {
            "user": self._slots_read(self.model.pql),
            "account": self._slots_read(self.model.pqa),
        }

        def drops(*kinds: SubjectKind) -> list[frozenset[str] | None]:
            out: list[frozenset[str] | None] = []
            for slot, keys in enumerate(shared):
                rule = any(slot in rule_slots[k] for k in kinds)
                out.append(frozenset(keys | {_RULE}) if rule else frozenset(keys) or None)
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
        self, rule: d.Expr | None
    ) -> list[tuple[int, Callable[[Any, int, SubjectState], int | None]]]:
        """The time-dependent slots the rule reads, each with how to find its next change."""
        out: dict[tuple[int, int | None], Callable[[Any, int, SubjectState], int | None]] = {}
        for n in self._deps(rule):
            slot = self.slot_of.get(id(n))
            if slot is None or not self.accs[slot].time_dependent:
                continue
            acc, own = self.accs[slot], self.own_window.get(id(n))
            if own is None:
                out[(slot, None)] = acc.next_change
            else:
                assert isinstance(acc, ActiveDaysAcc)
                out[(slot, own)] = functools.partial(_exit_within, acc, own)
        return [(slot, fn) for (slot, _), fn in out.items()]

    def _idle_breaks(self, rule: d.Expr | None) -> list[int]:
        """Offsets after the newest event at which an ``idle()`` comparison flips."""
        out = set()
        for node in self._deps(rule):
            if isinstance(node, d.Compare):
                op: str
                if isinstance(node.left, d.Idle) and isinstance(node.right, d.Const):
                    const, op = node.right.value, node.op
                elif isinstance(node.right, d.Idle) and isinstance(node.left, d.Const):
                    const, op = node.left.value, _FLIP[node.op]
                else:
                    continue
                if isinstance(const, timedelta):
                    out.add(_us(const) + (1 if op in (">", "<=") else 0))
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

    def apply(
        self,
        s: SubjectState,
        ts: int,
        name: str,
        props: Mapping[str, Any],
        user: str,
        kind: SubjectKind | None = None,
    ) -> None:
        """Fold one event into the subject's state (a ``kind`` skips what it never reads)."""
        self.apply_view(s, EventView(ts, name, props, user), kind)

    def apply_view(self, s: SubjectState, ev: EventView, kind: SubjectKind | None = None) -> None:
        """``apply`` of an event already wrapped (one view serves its user and account)."""
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
        for slot, apply, acc, check, drop, fold in feeds:
            if check is not None and not check(props):  # this event does not feed the slot
                if moved:
                    slots[slot] = acc.refirst(slots[slot], s)
                continue
            if fold is not None:
                slots[slot], kept = fold(slots[slot], ev, s, old_first)
                if kept:
                    continue  # the values that read it hold as they are
            else:
                slots[slot] = apply(slots[slot], ev, s, old_first)
            if drop is not None and memo and not memo.keys().isdisjoint(drop):
                for key in memo.keys() & drop:
                    del memo[key]
        if moved:
            memo.clear()
            fed = {feed[0] for feed in feeds}
            for slot, acc in enumerate(self.accs):
                if slot not in fed:
                    slots[slot] = acc.refirst(slots[slot], s)

    def _feeds_of(self, name: str, kind: SubjectKind | None = None) -> list[_Feed]:
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
                    feeds.append((slot, acc.apply, acc, check, drop, acc.fold))
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
    ) -> Evaluation:
        """Evaluate the subject's signals, scores and rule at time ``t``.

        With ``latch=True`` (track-time evaluations), the first time a TEV
        activation signal is seen true is recorded in the state. With
        ``full=False`` only what the rule reads is evaluated (the signals and
        scores of the result are then partial), and every score too with
        ``scores=True`` (the result's scores are then complete, its signals not).
        """
        # Values still kept are read here directly; an _Eval (whose lookups also
        # gather validity for what is being computed) is made at the first that is not.
        _revalidate(s, t, ctx)
        memo, newest = s.memo, s.newest
        e: _Eval | None = None
        signals: dict[str, bool] = {}
        out_scores: dict[str, float] = {}
        if latch and len(s.latches) < len(self.latched):  # (latches: some of self.latched)
            e = self._latch(s, t, kind, ctx, signals, out_scores)
        if full:
            for name in self.model.signals:
                kept = memo.get(name)
                if kept is not None and _holds(kept, t, newest):
                    signals[name] = kept[0]
                else:
                    e = e or _Eval(self, s, t, kind, ctx, signals, out_scores)
                    e.signal(name)
        if full or scores:
            for name, key in self.score_keys.items():
                kept = memo.get(key)
                if kept is not None and _holds(kept, t, newest):
                    out_scores[name] = kept[0]
                else:
                    e = e or _Eval(self, s, t, kind, ctx, signals, out_scores)
                    e.score(name)
        rule_fn = self.rule_fns[kind]
        rule, until = False, None
        if rule_fn is not None:
            kept = memo.get(_RULE)
            if kept is None or not _holds(kept, t, newest):
                e = e or _Eval(self, s, t, kind, ctx, signals, out_scores)
                e._keep(_RULE, rule_fn)
                kept = memo[_RULE]
            rule = kept[0]
            end = kept[1] if kept[3] == NEVER or newest is None else min(kept[1], newest + kept[3])
            until = end if end < NEVER else None
        return Evaluation(t, signals, out_scores, rule, until)

    def latch(self, s: SubjectState, t: int, kind: SubjectKind, ctx: Context) -> None:
        """Only what ``evaluate(latch=True)`` records: the TEV activations true at ``t``
        (replaying the log, where nothing else of each event's evaluation is needed)."""
        if len(s.latches) < len(self.latched):
            _revalidate(s, t, ctx)
            self._latch(s, t, kind, ctx, {}, {})

    def _latch(
        self,
        s: SubjectState,
        t: int,
        kind: SubjectKind,
        ctx: Context,
        signals: dict[str, bool],
        scores: dict[str, float],
    ) -> _Eval | None:
        """Latch each TEV activation signal true at ``t`` not latched yet; the _Eval
        made on the way, if one was (``_revalidate`` is the caller's)."""
        memo, newest = s.memo, s.newest
        e: _Eval | None = None
        for name in self.latched:
            if name in s.latches:
                continue
            kept = memo.get(name)
            if kept is not None and _holds(kept, t, newest):
                v = signals[name] = kept[0]
            else:
                e = e or _Eval(self, s, t, kind, ctx, signals, scores)
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

    # -- explanation ---------------------------------------------------------
    def explain(self, s: SubjectState, t: int, kind: SubjectKind, ctx: Context) -> list[str]:
        """One line per signal (value, threshold, truth), per score (its parts), and the rule."""
        e = _Eval(self, s, t, kind, ctx)
        lines = []
        for name, expr in self.model.signals.items():
            truth = e.signal(name)
            lines.append(f"{name}: {self._explain(e, expr)} -> {_tf(truth)}")
        for name, expr in self.model.scores.items():
            lines.append(f"{name} = {_fmt(e.score(name))}{self._explain_score(e, expr)}")
        rule_expr = self.model.pql if kind == "user" else self.model.pqa
        label = "pql" if kind == "user" else "pqa"
        if rule_expr is None:
            lines.append(f"{label}: never (no rule declared)")
        else:
            lines.append(f"{label}: {self._explain(e, rule_expr)} -> {_tf(bool(e.ev(rule_expr)))}")
        return lines

    def _explain(self, e: _Eval, node: d.Expr) -> str:
        if isinstance(node, d.Compare):
            return f"{self._operand(e, node.left)} {node.op} {self._operand(e, node.right)}"
        if isinstance(node, (d.All, d.Any_)):
            sep = " & " if isinstance(node, d.All) else " | "
            return "(" + sep.join(self._explain(e, i) for i in node.items) + ")"
        if isinstance(node, d.AtLeast):
            inner = ", ".join(self._explain(e, i) for i in node.items)
            return f"at_least({node.k} of: {inner})"
        if isinstance(node, d.Not):
            return f"not ({self._explain(e, node.item)})"
        if isinstance(node, d.IsIn):
            return f"{self._operand(e, node.value)} in {d._fmt_value(node.options)}"
        if isinstance(node, d.SignalRef):
            return f"{node.describe()} = {_tf(e.signal(node.signal))}"
        return f"{node.describe()} = {_fmt(e.ev(node))}"

    def _operand(self, e: _Eval, node: d.Expr) -> str:
        if isinstance(node, d.Const):
            return node.describe()
        return f"{node.describe()} = {_fmt(e.ev(node))}"

    def _explain_score(self, e: _Eval, node: d.Expr) -> str:
        if isinstance(node, d.Points):
            parts = [
                f"{s} {w:+g}" if e.signal(s) else f"{s} 0 (false, would be {w:+g})"
                for s, w in node.weights
            ]
            return ": " + ", ".join(parts)
        if isinstance(node, d.Fit):
            parts = [
                f"{c.describe()} {p:+g}"
                if e.ev(c)
                else f"{c.describe()} 0 (false, would be {p:+g})"
                for c, p in node.rules
            ]
            return ": " + ", ".join(parts)
        if isinstance(node, d.Tev):
            tp, ep, vp, elapsed, eng, vir = e.tev_parts(node)
            when = "never" if elapsed is None else _fmt(timedelta(microseconds=elapsed))
            return (
                f": time {tp:.2f} ({node.activation} after {when}; fast "
                f"{_fmt(node.fast)}, slow {_fmt(node.slow)}), engagement {ep:.2f} "
                f"({_fmt(eng)}/{_fmt(node.engagement_target)}), virality {vp:.2f} "
                f"({_fmt(vir)}/{_fmt(node.virality_target)})"
            )
        return f": {self._explain(e, node)}"


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


def _tf(v: bool) -> str:
    return "true" if v else "false"


def _fmt(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, timedelta):
        secs = v.total_seconds()
        if secs >= 86400:
            return f"{secs / 86400:.3g}d"
        if secs >= 3600:
            return f"{secs / 3600:.3g}h"
        return f"{secs:.3g}s"
    if isinstance(v, float):
        return f"{v:.4g}" if not v.is_integer() else str(int(v))
    if isinstance(v, bool):
        return _tf(v)
    return repr(v) if isinstance(v, str) else str(v)


def _walk(expr: d.Expr) -> list[d.Expr]:
    out = [expr]
    i = 0
    while i < len(out):
        out.extend(out[i].children())
        i += 1
    return out


def dt_to_us(value: datetime) -> int:
    return to_us(value)


def us_to_dt(value: int) -> datetime:
    return from_us(value)
