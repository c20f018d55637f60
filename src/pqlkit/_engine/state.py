"""The derived state of one subject: its stored format and what an accumulator sees of an event.

A state is a plain JSON-compatible list (``SubjectState.dump``): the first and newest
event times, the event count, one slot per accumulator (see ``accumulators``), the
TEV activation latches, and what the client caches with it (its latest qualification,
and, in an eleventh item present only when it has any, each play's). All times are integer
microseconds since the Unix epoch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .._events import SubjectKind

__all__ = [
    "ANY",
    "DAY_US",
    "NEVER",
    "STATE_LAYOUT",
    "NO_QUALIFICATION",
    "EventView",
    "Kept",
    "LatestQualification",
    "SubjectKind",
    "SubjectState",
    "number",
    "set_key",
]

DAY_US = 86_400_000_000


def number(v: Any) -> float | None:
    """``v`` if it is a finite int or float (not a bool), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v if math.isfinite(v) else None


def set_key(v: Any) -> str:
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

ANY = object()
"""In a kept value: it holds whatever the subject's newest event time becomes."""


class Kept:
    """A signal, score or rule value kept between evaluations, and how long it holds.

    It holds for evaluations at times before ``until`` and before the subject's
    newest event time plus ``idle`` (the first flip of an ``idle()`` comparison it
    reads: it moves with newer events), while the newest event time is ``newest``
    (or any, if ``newest`` is ``ANY``), until an event feeds a slot it reads (which
    drops it from the state's memo).
    """

    __slots__ = ("idle", "newest", "until", "value")

    def __init__(self, value: Any, until: int, newest: Any, idle: int) -> None:
        self.value = value
        self.until = until
        self.newest = newest
        self.idle = idle

    def holds(self, t: int, newest: int | None) -> bool:
        """Whether it serves an evaluation at ``t`` of a subject whose newest event
        time is ``newest``."""
        return (
            self.until > t
            and (self.newest is ANY or self.newest == newest)
            and (self.idle == NEVER or (newest is not None and newest + self.idle > t))
        )

    def end(self, newest: int | None) -> int:
        """When time alone ends it (``NEVER``: it does not), the newest event staying ``newest``."""
        if self.idle == NEVER or newest is None:
            return self.until
        return min(self.until, newest + self.idle)


class LatestQualification:
    """A subject's latest qualification record, as its state caches it (times in µs).

    The Client keeps it in the same transaction as the record; ``NO_QUALIFICATION``
    stands for "it has none" (a state that knows neither: ``None``). Stored as the list
    of its fields in this order (``NO_QUALIFICATION`` as ``0``).
    """

    __slots__ = ("disqualified_at", "fingerprint", "first_seen", "id", "qualified_at", "round")

    def __init__(
        self,
        id: str,
        round: int,
        fingerprint: str,
        qualified_at: int,
        first_seen: int,
        disqualified_at: int | None,
    ) -> None:
        self.id = id
        self.round = round
        self.fingerprint = fingerprint
        self.qualified_at = qualified_at
        self.first_seen = first_seen
        self.disqualified_at = disqualified_at

    @property
    def qualified(self) -> bool:
        """Whether the subject stands qualified (a qualification not disqualified since)."""
        return self is not NO_QUALIFICATION and self.disqualified_at is None

    def dump(self) -> Any:
        """Its stored form."""
        if self is NO_QUALIFICATION:
            return 0
        return [
            self.id,
            self.round,
            self.fingerprint,
            self.qualified_at,
            self.first_seen,
            self.disqualified_at,
        ]

    @staticmethod
    def load(data: Any) -> LatestQualification | None:
        """What ``dump`` stored (None, unknown, for anything else)."""
        if data == 0 and type(data) is int:
            return NO_QUALIFICATION
        if isinstance(data, list) and len(data) == 6:
            qid, round_, fingerprint, qualified_at, first_seen, disqualified_at = data
            return LatestQualification(
                qid, round_, fingerprint, qualified_at, first_seen, disqualified_at
            )
        return None


NO_QUALIFICATION = LatestQualification("", -1, "", 0, 0, None)
"""The cached qualification of a subject that has none."""


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
        qualification: LatestQualification | None = None,
        seq: int = 0,
        plays: dict[str, LatestQualification] | None = None,
    ) -> None:
        self.first = first
        self.newest = newest
        self.events = events
        self.slots: list[Any] = [] if slots is None else slots
        self.latches: dict[str, int] = {} if latches is None else latches
        # users: [ts, account_id] of the latest event with one
        self.account = account
        self.fingerprint = fingerprint  # the model version whose plan wrote it
        # A cache of the subject's latest qualification record (None: unknown)
        self.qualification = qualification
        # the arrival seq of the newest event folded in (events after it: a tail)
        self.seq = seq
        # A cache of the latest qualification record of each play, by name (absent: unknown);
        # stored only when there is one, so a state of a model without plays is as it was
        self.plays: dict[str, LatestQualification] = {} if plays is None else plays
        # Not stored: signal, score and rule values from earlier evaluations (see
        # Eval and Plan._memoize) by key (Plan.score_keys), each a Kept;
        # valid for the traits in `memo_ctx`, and for evaluations from `memo_t` on.
        self.memo: dict[str, Kept] = {}
        self.memo_ctx: tuple[Any, Any] | None = None
        self.memo_t: int = -NEVER

    def _stored(self) -> list[Any]:
        """What is stored of it, in its stored layout (see ``dump``)."""
        cached = self.qualification
        stored = [
            STATE_LAYOUT,
            self.fingerprint,
            self.seq,
            self.first,
            self.newest,
            self.events,
            self.slots,
            self.latches,
            self.account,
            None if cached is None else cached.dump(),
        ]
        if self.plays:
            stored.append({name: q.dump() for name, q in self.plays.items()})
        return stored

    def __eq__(self, other: object) -> bool:
        """Equal when what is stored is (the kept values are a cache: not compared)."""
        if not isinstance(other, SubjectState):
            return NotImplemented
        return self._stored() == other._stored()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"SubjectState{self._stored()!r}"

    def dump(self) -> str:
        return _ENCODER.encode(self._stored())

    @classmethod
    def load(cls, text: str) -> SubjectState:
        """Parse a dump; ValueError if it is not one of this layout."""
        data = json.loads(text)
        if not isinstance(data, list) or len(data) not in (10, 11) or data[0] != STATE_LAYOUT:
            raise ValueError("not a state of this layout")
        _, fingerprint, seq, first, newest, events, slots, latches, account, qual = data[:10]
        cached = LatestQualification.load(qual)
        plays: dict[str, LatestQualification] = {}
        if len(data) == 11 and isinstance(data[10], dict):  # the plays' cache, when any
            for name, dumped in data[10].items():
                q = LatestQualification.load(dumped)
                if q is not None:
                    plays[name] = q
        return cls(first, newest, events, slots, latches, account, fingerprint, cached, seq, plays)


_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


class EventView:
    """What an accumulator sees of one event (a plain class: one is made per event)."""

    __slots__ = ("name", "properties", "ts", "user_id")

    def __init__(self, ts: int, name: str, properties: Mapping[str, Any], user_id: str) -> None:
        self.ts = ts
        self.name = name
        self.properties = properties
        self.user_id = user_id
