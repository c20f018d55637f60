"""The accumulators: how each aggregate of the DSL keeps its slot of a subject's state
and reads its value at an evaluation time.

What each keeps (all times are integer microseconds since the epoch):

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
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import attrs

from .. import _dsl as d
from .._convert import micros
from .state import DAY_US, EventView, SubjectKind, SubjectState, number, set_key

__all__ = [
    "ACCS",
    "AbsentAcc",
    "Acc",
    "ActiveDaysAcc",
    "ActiveUsersAcc",
    "CountAcc",
    "DistinctAcc",
    "IdleAcc",
    "LastAcc",
    "SequenceAcc",
    "TimeToAcc",
    "TotalAcc",
    "agg_key",
    "exit_within",
    "matches_of",
    "shared_days",
]


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


def exit_within(acc: ActiveDaysAcc, within: int, st: Any, t: int, s: SubjectState) -> int | None:
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
        self.within = micros(within) if within is not None else None
        self.sfs = micros(sfs) if sfs is not None else None
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
        v = number(ev.properties.get(self.prop))
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
        return None if v is None else set_key(v)

    def value(self, st: Any, t: int, s: SubjectState, kind: SubjectKind) -> Any:
        return self._size(st, t)

    settled_at: int | None = None

    def settle(self, at: int) -> None:
        """Every reader of this set (unwindowed, so it only grows) is a comparison
        whose truth no longer changes once the set holds ``at`` keys (see
        ``Plan._settle``): it keeps no more than that many keys, so its state stays
        bounded (an account's ``active_users() >= 3`` keeps 3 user ids, not every
        one), and its value reads ``at`` for any number of keys from ``at`` on."""
        assert self.within is None
        assert self.sfs is None
        self.settled_at = at
        self.fold = self._fold_settled

    def _fold_settled(
        self, st: Any, ev: EventView, s: SubjectState, old_first: int | None
    ) -> tuple[Any, bool]:
        at = self.settled_at
        assert at is not None
        x = self.contribution(ev)
        if x is None or x in st or len(st) >= at:
            return st, True  # the value stays the same
        st[x] = 1
        return st, False


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
        self.within = micros(node.within) if node.within is not None else None

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
        self.within = micros(node.within)

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


ACCS: dict[type[d.Expr], Callable[[Any], Acc]] = {
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


def matches_of(node: d.Expr) -> list[d.Match]:
    if isinstance(node, d.Sequence):
        return list(node.steps)
    if isinstance(node, d.Absent):
        return [node.match, node.after]
    match = getattr(node, "match", None)
    return [match] if match is not None else []


def agg_key(node: d.Expr, *, window: bool = True) -> str:
    ids = [id(m.where) for m in matches_of(node) if callable(m.where)]
    if not window:  # the same aggregate whatever its window (see shared_days)
        assert isinstance(node, d.ActiveDays)
        return (
            f"{type(node).__name__}:any window:{attrs.evolve(node, within=None).describe()}:{ids}"
        )
    return f"{type(node).__name__}:{node.describe()}:{ids}"


def shared_days(node: d.Expr) -> bool:
    """An ``active_days(..., within=D)``: one slot serves every window of its match."""
    return isinstance(node, d.ActiveDays) and node.within is not None
