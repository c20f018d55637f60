"""The replay: a history's events folded into models' states in time order, measured at snapshots.

It runs the engine a Client runs (each model's :class:`~pqlkit._engine.Plan`: the
same accumulators, the same evaluation, the same kept values) without the store
and the outbox around it: a Client would keep every event in its store and a
delivery per qualification, which at a million events costs about three times
the time and more memory than the lab's 600 MB budget (docs/performance.md).
``tests/test_lab_replay.py`` checks the replay against a real Client.

What the Client does and the replay repeats, each event: resolve the user's
aliases; fold the event into the user's state and, with an ``account_id``, the
account's; evaluate each at its newest event time T (latching TEV activations),
recording the first T at which the rule holds: the subject's *qualification*
(the first time a Client would fire it). A user's account is the ``account_id`` of
its latest event that has one, else the one ``identify()`` gave; the traits an
evaluation sees are the ones the source holds now.

Events reach the replay in time order, even where they arrived out of order
(:func:`in_time_order`), so a snapshot at t has folded exactly the events with a
timestamp <= t, as ``API.md`` defines it. At each snapshot t every eligible
subject (an event in (t - lookback, t], no conversion at or before t) is
evaluated at T = t: flagged when its rule holds, its scores and signals tallied
against whether it converts in (t, t + horizon]. A rule that turns true at a
snapshot (time alone changed it) qualifies the subject then, as a sweep would.

Subjects with no event within ``lookback`` are kept as their stored text (a few
hundred bytes) until their next event: most of a year's users are dormant at any
time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from .. import _dsl as d
from .._engine import Context, Evaluation, EventView, Plan, SubjectState
from .._events import SubjectKind
from .._model import Model
from .._traits import ACCOUNT_TRAIT
from .outcome import Outcome
from .source import History, RawEvent, Recorded
from .stats import Histogram

__all__ = [
    "Observer",
    "Replay",
    "Scan",
    "Tally",
    "Track",
    "Week",
    "condition_conversions",
    "in_time_order",
]

NO_TRAITS: Mapping[str, Any] = MappingProxyType({})


class Scan:
    """The first pass: the time range, the subjects, duplicates, and the outcome's events."""

    def __init__(self, history: History, outcome: Outcome) -> None:
        self.events = 0  # distinct events
        self.duplicates = 0
        self.skip: set[int] = set()  # arrival positions of repeated message ids
        self.first: int | None = None
        self.last: int | None = None
        self.users: set[str] = set()
        self.accounts: set[str] = set()
        # raw user id -> (timestamp, account id) of its latest event with an account
        self.latest_account: dict[str, tuple[int, str]] = {}
        # the outcome's events: (timestamp, raw user id, account id or None)
        self.outcome_events: list[tuple[int, str, str | None]] = []
        seen: set[str] = set()
        target = outcome.event
        for position, (ts, user, name, _, account, mid) in enumerate(history.events()):
            if mid is not None and not history.unique:
                if mid in seen:
                    self.skip.add(position)
                    self.duplicates += 1
                    continue
                seen.add(mid)
            self.events += 1
            if self.first is None or ts < self.first:
                self.first = ts
            if self.last is None or ts > self.last:
                self.last = ts
            self.users.add(user)
            if account is not None:
                self.accounts.add(account)
                latest = self.latest_account.get(user)
                if latest is None or ts >= latest[0]:
                    self.latest_account[user] = (ts, account)
            if name == target:
                self.outcome_events.append((ts, user, account))
        del seen
        history.scanned(self.users, self.accounts)
        self.history = history
        self._raw: dict[str, list[str]] = {}  # a final user id -> its ids, where aliased
        for raw in history.aliases:
            if raw in self.users:
                final = history.resolve(raw)
                self._raw.setdefault(final, [final]).append(raw)

    def account_of(self, user: str) -> str | None:
        """A final user id's account at the end of the history: that of its latest
        event with one (over its aliases too), else the one ``identify()`` gave."""
        best: tuple[int, str] | None = None
        for raw in self._raw_ids(user):
            latest = self.latest_account.get(raw)
            if latest is not None and (best is None or latest[0] >= best[0]):
                best = latest
        return best[1] if best is not None else given_account(self.history, user)

    def _raw_ids(self, user: str) -> list[str]:
        return self._raw.get(user) or [user]

    def final_users(self) -> set[str]:
        resolve = self.history.resolve
        return {resolve(u) for u in self.users}

    def event_conversions(self) -> dict[SubjectKind, dict[str, int]]:
        """For an event outcome: each user's first such event, and each account's (the
        event's account, or its user's)."""
        users: dict[str, int] = {}
        accounts: dict[str, int] = {}
        resolve = self.history.resolve
        for ts, raw, account in self.outcome_events:
            user = resolve(raw)
            if ts < users.get(user, ts + 1):
                users[user] = ts
            acc = account if account is not None else self.account_of(user)
            if acc is not None and ts < accounts.get(acc, ts + 1):
                accounts[acc] = ts
        return {"user": users, "account": accounts}

    def given_conversions(self, times: Mapping[str, int]) -> dict[SubjectKind, dict[str, int]]:
        """For given times: a key naming an account is its conversion; one naming a user
        is the user's, and its account's when the account has none of its own."""
        users: dict[str, int] = {}
        accounts: dict[str, int] = {}
        resolve = self.history.resolve
        for key, ts in times.items():
            if key in self.accounts:
                accounts[key] = min(ts, accounts.get(key, ts))
        for key, ts in times.items():
            if key in self.accounts:
                continue
            user = resolve(key)
            users[user] = min(ts, users.get(user, ts))
            acc = self.account_of(user)
            if acc is not None and acc not in times:
                accounts[acc] = min(ts, accounts.get(acc, ts))
        return {"user": users, "account": accounts}


def given_account(history: History, user: str) -> str | None:
    """The account ``identify()`` gave a user, if any."""
    given = history.user_traits.get(user, NO_TRAITS).get(ACCOUNT_TRAIT)
    return given if isinstance(given, str) else None


def in_time_order(history: History, skip: set[int], step: int) -> Iterator[tuple[int, RawEvent]]:
    """The history's events as ``(when, event)`` with ``when`` never decreasing.

    ``when`` is the event's timestamp, except for an event that arrived after events
    more than ``step`` later than it: holding every event back until such a late one
    came would hold the whole history in memory, so it is placed at the newest
    timestamp seen then minus ``step`` (where the live client would have met it,
    at most a snapshot late). Memory: about ``step`` worth of events.
    """
    heap: list[tuple[int, int, RawEvent]] = []
    newest = None
    for position, event in enumerate(history.events()):
        if position in skip:
            continue
        ts = event[0]
        if newest is None or ts > newest:
            newest = ts
        floor = newest - step
        heapq.heappush(heap, (ts if ts >= floor else floor, position, event))
        while heap[0][0] <= floor:
            when, _, ready = heapq.heappop(heap)
            yield when, ready
    while heap:
        when, _, ready = heapq.heappop(heap)
        yield when, ready


def condition_conversions(
    history: History, scan: Scan, model: Model, step: int
) -> dict[SubjectKind, dict[str, int]]:
    """For a condition outcome: when it first holds for each user and account, replaying
    the condition alone in time order (evaluated at each event, as a rule is)."""
    plan = Plan(model)
    states: dict[tuple[SubjectKind, str], SubjectState] = {}
    found: dict[SubjectKind, dict[str, int]] = {"user": {}, "account": {}}
    traits = _Traits(history, scan, plan)
    resolve = history.resolve
    latest: dict[str, tuple[int, str]] = {}  # a user's latest event with an account
    for _, (ts, raw, name, props, account, _) in in_time_order(history, scan.skip, step):
        user = resolve(raw)
        if account is not None and ts >= latest.get(user, (ts, account))[0]:
            latest[user] = (ts, account)
        view = EventView(ts, name, props, user)
        targets: list[tuple[SubjectKind, str]] = [("user", user)]
        if account is not None:
            targets.append(("account", account))
        for kind, sid in targets:
            if sid in found[kind]:
                continue
            key = (kind, sid)
            s = states.get(key)
            if s is None:
                s = states[key] = plan.new_state()
            plan.apply_view(s, view, kind)
            t = s.newest
            assert t is not None
            acc = sid if kind == "account" else latest[user][1] if user in latest else None
            ctx = traits.context(kind, sid, acc if acc is not None else given_account(history, sid))
            if plan.evaluate(s, t, kind, ctx, latch=True, full=False).rule:
                found[kind][sid] = t
                del states[key]
    return found


class _Traits:
    """The traits an evaluation sees, the same dict objects every time (kept values
    stay valid while an evaluation sees the very same traits)."""

    def __init__(self, history: History, scan: Scan, plan: Plan) -> None:
        self.users = history.user_traits if plan.reads_user_traits else {}
        self.accounts = history.account_traits if plan.reads_account_traits else {}

    def context(self, kind: SubjectKind, sid: str, account: str | None) -> Context:
        if kind == "account":
            return Context(NO_TRAITS, self.accounts.get(sid, NO_TRAITS))
        return Context(
            self.users.get(sid, NO_TRAITS),
            self.accounts.get(account, NO_TRAITS) if account is not None else NO_TRAITS,
        )


class Track:
    """One model in the replay: its plan, and which rules it has.

    With ``recorded`` (a store's records of the model's qualifications), the rule's
    flags and qualification times are what was recorded live, not the replay's;
    its scores and signals are still the replay's.
    """

    def __init__(
        self,
        name: str,
        model: Model,
        history: History,
        scan: Scan,
        recorded: Recorded | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.recorded = recorded
        self.plan = Plan(model)
        self.rule: dict[SubjectKind, bool] = {
            "user": model.pql is not None,
            "account": model.pqa is not None,
        }
        self.latched = bool(self.plan.latched)
        self.traits = _Traits(history, scan, self.plan)
        self.probability = {name for name, expr in model.scores.items() if isinstance(expr, d.Tev)}


class Week:
    """One snapshot's counts for a rule."""

    __slots__ = ("at", "eligible", "flagged", "positives", "true_positives")

    def __init__(self, at: int) -> None:
        self.at = at
        self.eligible = 0
        self.flagged = 0
        self.positives = 0
        self.true_positives = 0


class Tally:
    """What one model's rule of one kind gathered over the snapshots."""

    def __init__(self, track: Track, kind: SubjectKind) -> None:
        self.track = track
        self.kind = kind
        self.weeks: list[Week] = []
        self.signals: dict[str, list[int]] = {n: [0, 0] for n in track.model.signals}
        self.scores: dict[str, Histogram] = {n: Histogram() for n in track.model.scores}


class _Subject:
    """A user or account in the replay."""

    __slots__ = (
        "account",
        "account_ts",
        "converted",
        "counts",
        "ctx",
        "first",
        "frozen",
        "id",
        "newest",
        "qualified",
        "states",
    )

    def __init__(self, sid: str, states: list[SubjectState], converted: int | None) -> None:
        self.id = sid
        self.states = states  # per track (empty while frozen)
        self.frozen: list[str] | None = None  # per track, the stored text while dormant
        self.qualified: list[int | None] = [None] * len(states)
        self.first: int | None = None
        self.newest: int | None = None
        self.account: str | None = None  # users: the current account
        self.account_ts: int | None = None
        self.converted = converted
        # at snapshots: [eligible, positive, then flagged and true positive per track]
        self.counts: list[int] | None = None
        # per track, the traits its evaluations see (made again when the account changes)
        self.ctx: list[Context | None] = [None] * len(states)


Observer = Callable[[int, SubjectKind, str, str, Evaluation, bool], None]
"""``(t, kind, subject id, track name, evaluation, positive)``: called with each snapshot
evaluation (what a fit of weights learns from, and what the tests compare with a Client)."""

Progress = Callable[[int, int], None]
"""``(events replayed, events in all)``: called every few thousand events."""

PROGRESS_EVERY = 10_000


class Replay:
    """The replay of a history for one or more models (see the module docstring)."""

    def __init__(
        self,
        tracks: Sequence[Track],
        history: History,
        scan: Scan,
        conversions: Mapping[SubjectKind, Mapping[str, int]],
        *,
        snapshots: Sequence[int],
        end: int,
        horizon: int,
        lookback: int,
        step: int,
        observe: Observer | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.tracks = list(tracks)
        self.history = history
        self.scan = scan
        self.conversions = conversions
        self.snapshots = list(snapshots)
        self.end = end
        self.horizon = horizon
        self.lookback = lookback
        self.step = step
        self.observe = observe
        self.progress = progress
        self.subjects: dict[SubjectKind, dict[str, _Subject]] = {"user": {}, "account": {}}
        self.active: dict[SubjectKind, dict[str, _Subject]] = {"user": {}, "account": {}}
        self.measured: dict[SubjectKind, bool] = {
            kind: any(t.rule[kind] for t in self.tracks) for kind in ("user", "account")
        }
        self.tallies: dict[SubjectKind, list[Tally | None]] = {
            kind: [Tally(t, kind) if t.rule[kind] else None for t in self.tracks]
            for kind in ("user", "account")
        }
        pairs = [(i, j) for i in range(len(tracks)) for j in range(i + 1, len(tracks))]
        self.pairs = pairs
        # (kind, i, j) -> subjects flagged by i and not j at some snapshot, and pairs
        self.only: dict[tuple[SubjectKind, int, int], set[str]] = {}
        self.only_pairs: dict[tuple[SubjectKind, int, int], int] = {}
        self.late = 0  # events placed later than their timestamp (see in_time_order)

    # -- the pass ------------------------------------------------------------------------
    def run(self) -> None:
        snapshots = self.snapshots
        k = 0
        end = self.end
        late = 0
        users, accounts = self.subjects["user"], self.subjects["account"]
        active_users, active_accounts = self.active["user"], self.active["account"]
        aliases = self.history.aliases
        given = self.history.user_traits
        fresh = [None] * len(self.tracks)
        apply = self._apply
        progress, total, done = self.progress, self.scan.events, 0
        for when, event in in_time_order(self.history, self.scan.skip, self.step):
            while k < len(snapshots) and when > snapshots[k]:
                self._snapshot(snapshots[k])
                k += 1
            done += 1
            if progress is not None and not done % PROGRESS_EVERY:
                progress(done, total)
            ts, raw, name, props, account, _ = event
            if ts > end:
                continue
            if when != ts:
                late += 1
            user = aliases.get(raw, raw) if aliases else raw
            view = EventView(ts, name, props, user)
            u = users.get(user)
            if u is None:
                u = users[user] = self._new("user", user)
            elif u.frozen is not None:
                self._thaw(u)
            before = u.account
            if account is not None and (u.account_ts is None or ts >= u.account_ts):
                u.account, u.account_ts = account, ts  # its latest event with an account
            elif u.account_ts is None and user in given:
                u.account = given_account(self.history, user)
            if u.account != before:
                u.ctx = list(fresh)
            apply(u, "user", view, active_users)
            if account is not None:
                a = accounts.get(account)
                if a is None:
                    a = accounts[account] = self._new("account", account)
                elif a.frozen is not None:
                    self._thaw(a)
                apply(a, "account", view, active_accounts)
        while k < len(snapshots):
            self._snapshot(snapshots[k])
            k += 1
        self.late = late
        if progress is not None:
            progress(total, total)

    def _new(self, kind: SubjectKind, sid: str) -> _Subject:
        tracks = self.tracks
        states = [t.plan.new_state() for t in tracks]
        subject = _Subject(sid, states, self.conversions[kind].get(sid))
        for i, track in enumerate(tracks):
            if track.recorded is not None:
                subject.qualified[i] = track.recorded.first(kind, sid)
        return subject

    def _thaw(self, subject: _Subject) -> None:
        """A dormant subject's states, decoded again for its new event."""
        texts = subject.frozen
        assert texts is not None
        states: list[SubjectState] = []
        for track, text in zip(self.tracks, texts, strict=True):
            state = track.plan.load(text)
            assert state is not None  # written by this plan
            states.append(state)
        subject.states = states
        subject.frozen = None

    def _freeze(self, subject: _Subject) -> None:
        """Keep a dormant subject's states as their stored text (a few hundred bytes)."""
        if subject.frozen is None:
            subject.frozen = [s.dump() for s in subject.states]
            subject.states = []
            subject.ctx = [None] * len(self.tracks)

    def _context(self, subject: _Subject, i: int, kind: SubjectKind) -> Context:
        ctx = subject.ctx[i]
        if ctx is None:
            acc = subject.account if kind == "user" else subject.id
            ctx = subject.ctx[i] = self.tracks[i].traits.context(kind, subject.id, acc)
        return ctx

    def _apply(
        self,
        subject: _Subject,
        kind: SubjectKind,
        view: EventView,
        active: dict[str, _Subject],
    ) -> None:
        """Fold the event into the subject's states and evaluate each at its newest
        event time, noting the first time each rule holds (and latching TEV activations)."""
        ts = view.ts
        first = subject.first
        if first is None or ts < first:
            subject.first = ts
        newest = subject.newest
        if newest is None or ts > newest:
            subject.newest = ts
        active[subject.id] = subject
        qualified = subject.qualified
        for i, s in enumerate(subject.states):
            track = self.tracks[i]
            plan = track.plan
            plan.apply_view(s, view, kind)
            t = s.newest
            assert t is not None
            if qualified[i] is None and track.rule[kind] and track.recorded is None:
                ctx = subject.ctx[i] or self._context(subject, i, kind)
                if plan.evaluate(s, t, kind, ctx, latch=True, full=False).rule:
                    qualified[i] = t
            elif track.latched:
                plan.latch(s, t, kind, subject.ctx[i] or self._context(subject, i, kind))

    # -- snapshots ---------------------------------------------------------------------------
    def _snapshot(self, t: int) -> None:
        kinds: tuple[SubjectKind, ...] = ("user", "account")
        for kind in kinds:
            active = self.active[kind]
            stale = t - self.lookback
            tallies = self.tallies[kind]
            weeks = [Week(t) if tally is not None else None for tally in tallies]
            for tally, week in zip(tallies, weeks, strict=True):
                if tally is not None and week is not None:
                    tally.weeks.append(week)
            measured = self.measured[kind]
            for sid, subject in list(active.items()):
                newest = subject.newest
                assert newest is not None
                if newest <= stale:
                    del active[sid]  # back with its next event, if any
                    self._freeze(subject)
                    continue
                conv = subject.converted
                if measured and (conv is None or conv > t):
                    positive = conv is not None and conv <= t + self.horizon
                    self._measure(t, kind, subject, positive, tallies, weeks)

    def _measure(
        self,
        t: int,
        kind: SubjectKind,
        subject: _Subject,
        positive: bool,
        tallies: list[Tally | None],
        weeks: list[Week | None],
    ) -> None:
        counts = subject.counts
        if counts is None:
            counts = subject.counts = [0] * (2 + 2 * len(self.tracks))
        counts[0] += 1
        if positive:
            counts[1] += 1
        flags: list[bool] = []
        observe = self.observe
        for i, track in enumerate(self.tracks):
            tally = tallies[i]
            week = weeks[i]
            if tally is None or week is None:
                flags.append(False)
                continue
            ctx = subject.ctx[i] or self._context(subject, i, kind)
            ev = track.plan.evaluate(subject.states[i], t, kind, ctx, full=True)
            if observe is not None:
                observe(t, kind, subject.id, track.name, ev, positive)
            recorded = track.recorded
            flagged = ev.rule if recorded is None else recorded.holds(kind, subject.id, t)
            flags.append(flagged)
            week.eligible += 1
            if positive:
                week.positives += 1
            if flagged:
                week.flagged += 1
                counts[2 + 2 * i] += 1
                if subject.qualified[i] is None:
                    subject.qualified[i] = t  # time alone made it true: a sweep fires it
                if positive:
                    week.true_positives += 1
                    counts[3 + 2 * i] += 1
            signals = tally.signals
            for name, holds in ev.signals.items():
                if holds:
                    cell = signals[name]
                    cell[0] += 1
                    if positive:
                        cell[1] += 1
            scores = tally.scores
            for name, value in ev.scores.items():
                scores[name].add(_bin(value), positive)
        for i, j in self.pairs:
            if flags[i] != flags[j]:
                key = (kind, i, j) if flags[i] else (kind, j, i)
                self.only.setdefault(key, set()).add(subject.id)
                self.only_pairs[key] = self.only_pairs.get(key, 0) + 1

    # -- after the pass --------------------------------------------------------------------
    def all_subjects(self, kind: SubjectKind) -> Iterator[_Subject]:
        return iter(self.subjects[kind].values())


def _bin(value: float) -> float:
    """A score value as a histogram key: exact for small whole numbers, else to 4
    significant digits (so a continuous score keeps a bounded number of keys)."""
    if value.is_integer() and -10_000 < value < 10_000:
        return value
    return float(f"{value:.4g}")
