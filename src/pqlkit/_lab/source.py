"""Where a backtest's events come from: a store, a store URL, a JSON Lines file, an iterable.

Every source is a :class:`History`: its events can be read more than once, in
arrival order (a backtest scans them once for the time range, the conversions and
the duplicates, then replays them), and it knows the subjects' traits and the
aliases. Nothing is ever written to the source: a store URL is opened read-only
and never created.

An event is handed on as a :data:`RawEvent` tuple (the replay reads millions).
Events from files and iterables are checked as ``track_many()`` would check them
(once, on the first pass), with a timestamp required; events from a store are
already.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from .._convert import to_us
from .._events import Event
from .._validation import (
    Limits,
    check_event,
    check_id,
    check_message_id,
    check_properties,
    check_timestamp,
)
from ..exceptions import StoreError, ValidationError
from ..stores import Store, open_store
from .simulation import Simulation

__all__ = ["RawEvent", "History", "Recorded", "open_history", "parse_time"]

RawEvent = tuple[int, str, str, Mapping[str, Any], "str | None", "str | None"]
"""(timestamp in µs, user id, event name, properties, account id, message id)."""

_LIMITS = Limits()
_PAGE = 5_000
_EVENT_FIELDS = frozenset(f.name for f in attrs.fields(Event))


def parse_time(text: str, field: str, *, naive_utc: bool = False) -> datetime:
    """An ISO 8601 time (``Z`` allowed) as an aware UTC datetime.

    A time without an offset is refused, unless ``naive_utc`` (CSV exports): then UTC.
    """
    raw = text.strip()
    try:
        value = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        raise ValidationError(field, f"{text!r} is not an ISO 8601 date or time") from None
    if value.tzinfo is None:
        if not naive_utc:
            raise ValidationError(field, f"{text!r} has no UTC offset (naive times are ambiguous)")
        value = value.replace(tzinfo=timezone.utc)
    return check_timestamp(value, field)


class Recorded:
    """A model's qualifications as a store recorded them (live or shadowing), by subject.

    ``spans[kind][subject id]`` lists each round as ``(qualified at, disqualified at or
    None)`` in µs, oldest first; ``kind`` is ``"user"`` (the model's ``pql`` rule) or
    ``"account"`` (``pqa``). Plays' records are not read.
    """

    def __init__(self, name: str, records: Iterable[Any]) -> None:
        self.name = name
        self.spans: dict[str, dict[str, list[tuple[int, int | None]]]] = {
            "user": {},
            "account": {},
        }
        self.fingerprints: dict[str, int] = {}  # fingerprint -> records made under it
        self.count = 0
        kinds = {"pql": "user", "pqa": "account"}
        for record in records:
            kind = kinds.get(record.kind)
            if kind is None:
                continue
            self.count += 1
            self.fingerprints[record.fingerprint] = self.fingerprints.get(record.fingerprint, 0) + 1
            end = record.disqualified_at
            span = (to_us(record.qualified_at), None if end is None else to_us(end))
            self.spans[kind].setdefault(record.subject_id, []).append(span)
        for by_subject in self.spans.values():
            for spans in by_subject.values():
                spans.sort()

    def first(self, kind: str, subject_id: str) -> int | None:
        """When the subject first qualified, as recorded (µs), or None."""
        spans = self.spans[kind].get(subject_id)
        return spans[0][0] if spans else None

    def holds(self, kind: str, subject_id: str, t: int) -> bool:
        """Whether the subject stood qualified at ``t``: a round qualified at or before
        it and not disqualified by then."""
        for start, end in self.spans[kind].get(subject_id, ()):
            if start > t:
                return False
            if end is None or end > t:
                return True
        return False


class History(abc.ABC):
    """A source of events read in passes (see the module docstring)."""

    label: str = "events"
    unique = False  # True: no two events share a message_id (a store), so none is skipped

    def __init__(self) -> None:
        self.user_traits: dict[str, dict[str, Any]] = {}
        self.account_traits: dict[str, dict[str, Any]] = {}
        self.aliases: dict[str, str] = {}  # an id -> the id its events count for

    @abc.abstractmethod
    def events(self) -> Iterator[RawEvent]:
        """Every event, in arrival order (a new pass each call)."""

    def scanned(self, users: set[str], accounts: set[str]) -> None:  # noqa: B027
        """Told the ids the first pass saw (a store reads their traits and aliases then)."""

    def close(self) -> None:  # noqa: B027
        """Release what the source holds open (nothing, but for a store it opened)."""

    def recorded(self, model: str) -> Recorded | None:
        """What the source recorded of ``model``'s qualifications; None for a source
        that records none (only a store does)."""
        return None

    def resolve(self, user_id: str) -> str:
        """The id a user's events count for (aliases resolved)."""
        return self.aliases.get(user_id, user_id)

    def _record(self, line: Mapping[str, Any], where: str) -> None:
        """Take a ``traits`` or ``alias`` line of the export format (records of other
        types a store exports are not needed here)."""
        kind = line.get("type")
        if kind == "traits":
            of = line.get("kind")
            if of not in ("user", "account"):
                raise ValidationError(f"{where}.kind", 'must be "user" or "account"')
            subject = check_id(line.get("subject_id"), f"{where}.subject_id", _LIMITS)
            traits = check_properties(line.get("traits"), f"{where}.traits", _LIMITS)
            store = self.user_traits if of == "user" else self.account_traits
            store.setdefault(subject, {}).update(traits)
        elif kind == "alias":
            previous = check_id(line.get("previous_id"), f"{where}.previous_id", _LIMITS)
            user = check_id(line.get("user_id"), f"{where}.user_id", _LIMITS)
            self.aliases[previous] = user
        elif kind not in ("qualification", "delivery"):  # a store's records: not needed here
            raise ValidationError(f"{where}.type", f"unknown record type {kind!r}")


def _checked(item: object, where: str) -> RawEvent:
    """An event given as a dict (``track()``'s parameter names) or an Event, checked."""
    if isinstance(item, Event):
        fields: dict[str, Any] = attrs.asdict(item, recurse=False)
    elif isinstance(item, Mapping):
        fields = {k: v for k, v in item.items() if k not in ("type", "seq")}
        unknown = set(fields) - _EVENT_FIELDS
        if unknown:
            raise ValidationError(f"{where}.{sorted(unknown)[0]}", "is not a parameter of track()")
    else:
        raise ValidationError(where, f"must be a dict or a pqlkit.Event, got {type(item).__name__}")
    for required in ("user_id", "event", "timestamp"):
        if fields.get(required) is None:
            reason = "is required" if required != "timestamp" else "is required in a backtest"
            raise ValidationError(f"{where}.{required}", reason)
    user = check_id(fields["user_id"], f"{where}.user_id", _LIMITS)
    try:
        name = check_event(fields["event"])
    except ValidationError as error:
        raise ValidationError(f"{where}.event", error.reason) from None
    props = check_properties(fields.get("properties"), f"{where}.properties", _LIMITS)
    account = fields.get("account_id")
    if account is not None:
        account = check_id(account, f"{where}.account_id", _LIMITS)
    ts = fields["timestamp"]
    when = (
        parse_time(ts, f"{where}.timestamp")
        if isinstance(ts, str)
        else check_timestamp(ts, f"{where}.timestamp")
    )
    mid = fields.get("message_id")
    if mid is not None:
        try:
            mid = check_message_id(mid, _LIMITS)
        except ValidationError as error:
            raise ValidationError(f"{where}.message_id", error.reason) from None
    return (to_us(when), user, name, props, account, mid)


def _fast(line: Mapping[str, Any] | Event) -> RawEvent:
    """An event already checked on an earlier pass."""
    if isinstance(line, Event):
        assert line.timestamp is not None
        return (
            to_us(line.timestamp),
            line.user_id,
            line.event,
            line.properties or {},
            line.account_id,
            line.message_id,
        )
    ts = line["timestamp"]
    when = parse_time(ts, "timestamp") if isinstance(ts, str) else ts
    return (
        to_us(when),
        line["user_id"],
        line["event"],
        line.get("properties") or {},
        line.get("account_id"),
        line.get("message_id"),
    )


class _StoreHistory(History):
    """A store's event log, read a page per transaction."""

    unique = True

    def __init__(self, store: Store, owned: bool, label: str) -> None:
        super().__init__()
        self._store = store
        self._owned = owned
        self.label = label

    def events(self) -> Iterator[RawEvent]:
        after = 0
        while True:
            with self._store.transaction() as tx:
                page = list(tx.events(after_seq=after, limit=_PAGE))
            for r in page:
                yield (to_us(r.timestamp), r.user_id, r.event, r.properties, r.account_id, None)
            if len(page) < _PAGE:
                return
            after = page[-1].seq

    def scanned(self, users: set[str], accounts: set[str]) -> None:
        with self._store.transaction() as tx:
            finals: set[str] = set()
            for user in sorted(users):
                final = tx.resolve(user)
                finals.add(final)
                if final != user:
                    self.aliases[user] = final
            for user in sorted(finals):
                traits = tx.traits("user", user)
                if traits:
                    self.user_traits[user] = traits
            for account in sorted(accounts):
                traits = tx.traits("account", account)
                if traits:
                    self.account_traits[account] = traits

    def recorded(self, model: str) -> Recorded:
        with self._store.transaction() as tx:
            return Recorded(model, tx.qualifications(model))

    def close(self) -> None:
        if self._owned:
            self._store.close()


class _FileHistory(History):
    """A JSON Lines file in the ``pqlkit export`` format (or of events alone)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path
        self.label = str(path)
        self._passes = 0

    def events(self) -> Iterator[RawEvent]:
        first = self._passes == 0
        self._passes += 1
        with open(self._path, encoding="utf-8") as lines:
            for number, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                where = f"events[line {number}]"
                try:
                    line = json.loads(raw)
                except ValueError as error:
                    raise ValidationError(where, f"is not JSON ({error})") from None
                if not isinstance(line, dict):
                    raise ValidationError(where, "is not a JSON object")
                if line.get("type", "event") != "event":
                    if first:
                        self._record(line, where)
                    continue
                yield _checked(line, where) if first else _fast(line)


class _ItemsHistory(History):
    """An iterable of event dicts or Events (``traits``/``alias`` lines of the export
    format may come along). A one-shot iterator is read into a list first."""

    def __init__(self, items: Iterable[Any]) -> None:
        super().__init__()
        self._items = list(items) if iter(items) is items else items
        self._passes = 0

    def events(self) -> Iterator[RawEvent]:
        first = self._passes == 0
        self._passes += 1
        for index, item in enumerate(self._items):
            where = f"events[{index}]"
            if isinstance(item, Mapping) and item.get("type", "event") != "event":
                if first:
                    self._record(item, where)
                continue
            yield _checked(item, where) if first else _fast(item)


class _SimulationHistory(History):
    """A :class:`Simulation`: its events (made valid) and its traits."""

    def __init__(self, sim: Simulation) -> None:
        super().__init__()
        self._sim = sim
        self.label = "a simulated history"
        self.user_traits = {k: dict(v) for k, v in sim.user_traits.items()}
        self.account_traits = {k: dict(v) for k, v in sim.account_traits.items()}

    def events(self) -> Iterator[RawEvent]:
        return self._sim.events.tuples()


def open_history(events: object) -> History:
    """The :class:`History` that ``events`` names (see :func:`pqlkit.backtest`).

    Raises:
        ValidationError: ``events`` is none of the accepted kinds, names a file or
            store that does not exist (a store is never created), or holds a bad event.
    """
    if isinstance(events, Simulation):
        return _SimulationHistory(events)
    if isinstance(events, str) and "://" in events:
        try:
            store = open_store(events, read_only=True)
        except (StoreError, ValidationError) as error:
            reason = error.reason if isinstance(error, ValidationError) else str(error)
            raise ValidationError("events", f"cannot read the store: {reason}") from None
        return _StoreHistory(store, True, _redact(events))
    if isinstance(events, (str, os.PathLike)):
        path = Path(os.fspath(events))
        if not path.is_file():
            raise ValidationError(
                "events", f"no such file: {str(path)!r} (a store needs a URL, e.g. sqlite:///x.db)"
            )
        return _FileHistory(path)
    if callable(getattr(events, "transaction", None)) and callable(getattr(events, "close", None)):
        return _StoreHistory(events, False, type(events).__name__)  # type: ignore[arg-type]
    if isinstance(events, Iterable) and not isinstance(events, (bytes, Mapping)):
        return _ItemsHistory(events)
    raise ValidationError(
        "events",
        f"got a {type(events).__name__}: expected a Store, a store URL, a JSON Lines file,"
        " an iterable of events or a pqlkit.simulate() history",
    )


def _redact(url: str) -> str:
    """A URL without its password, for the report."""
    scheme, _, rest = url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        credentials, _, host = rest.partition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url
