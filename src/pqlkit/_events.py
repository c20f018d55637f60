"""Frozen records that cross the public API: events in, results and qualifications out.

Each public record has ``to_dict()`` (JSON-compatible values: datetimes as ISO 8601
text, durations as seconds, tuples as lists) and ``from_dict()`` (the reverse, every
value checked), through the package's cattrs converter (``_convert.json_converter``,
with checks): the format pqlkit itself stores a delivery's qualification in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn
from typing_extensions import Self

from ._convert import json_converter
from .exceptions import ValidationError

__all__ = [
    "BulkResult",
    "Event",
    "EventRecord",
    "JsonRecord",
    "Nudge",
    "PruneResult",
    "Qualification",
    "Stats",
    "TrackResult",
    "record_from_dict",
    "record_to_dict",
]

R = TypeVar("R")

Kind = Literal["pql", "pqa", "play"]
SubjectKind = Literal["user", "account"]


# -- to_dict() / from_dict() ------------------------------------------------------------
# The package's json_converter with checks: it structures what a user hands to from_dict(),
# where the lenient defaults would turn 5 into "5", "false" into True and "abc" into
# ("a", "b", "c"). It lives here, not in _convert, which mypyc compiles: cattrs reads the
# signature of a hook factory (inspect.signature), which compiled functions may not have.


class _BadValue(ValueError):
    """A value of the wrong type or form; its message is the reason, in plain words."""


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _strict_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise _BadValue(f"must be a string, got {_kind(value)}")
    return value


def _strict_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadValue(f"must be an integer, got {_kind(value)}")
    return value


def _strict_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadValue(f"must be a number, got {_kind(value)}")
    return float(value)


def _strict_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise _BadValue(f"must be true or false, got {_kind(value)}")
    return value


def _strict_datetime(value: Any, _: Any) -> datetime:
    """ISO 8601 text with a UTC offset (``Z`` too: Python 3.10's fromisoformat lacks it)."""
    if not isinstance(value, str):
        raise _BadValue(f"must be an ISO 8601 time as a string, got {_kind(value)}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _BadValue("is not an ISO 8601 time (e.g. 2024-05-01T12:00:00+00:00)") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise _BadValue("needs a UTC offset (e.g. 2024-05-01T12:00:00+00:00)")
    return parsed


def _strict_timedelta(value: Any, _: Any) -> timedelta:
    seconds = _strict_float(value, None)
    try:
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError):  # too large, or NaN
        raise _BadValue(f"is not a duration in seconds: {value!r}") from None


def _is_sequence(type_: Any) -> bool:
    """``list[X]`` or ``tuple[X, ...]``."""
    origin, args = get_origin(type_), get_args(type_)
    return origin is list or (origin is tuple and len(args) == 2 and args[1] is Ellipsis)


def _sequence_hook(conv: cattrs.Converter) -> Callable[[Any], Callable[[Any, Any], Any]]:
    def factory(type_: Any) -> Callable[[Any, Any], Any]:
        item_type = get_args(type_)[0]
        make = get_origin(type_)

        def structure(value: Any, _: Any) -> Any:
            # a string or a mapping is iterable, but not a list of items
            if not isinstance(value, (list, tuple)):
                raise _BadValue(f"must be a list, got {_kind(value)}")
            items = []
            errors = []
            for i, item in enumerate(value):
                try:
                    items.append(conv.structure(item, item_type))
                except Exception as error:  # gathered, raised together below
                    note = IterableValidationNote(f"Structuring {type_} @ index {i}", i, item_type)
                    notes = [*getattr(error, "__notes__", []), note]
                    error.__notes__ = notes  # type: ignore[attr-defined]  # 3.11+ only
                    errors.append(error)
            if errors:
                raise IterableValidationError(f"While structuring {type_!r}", errors, type_)
            return make(items)

        return structure

    return factory


def _is_tuple(type_: Any) -> bool:
    origin: object = get_origin(type_)
    return origin is tuple


def _record_hook(conv: cattrs.Converter) -> Callable[[Any], Callable[[Any, Any], Any]]:
    def factory(type_: Any) -> Callable[[Any, Any], Any]:
        fields = make_dict_structure_fn(type_, conv)

        def structure(value: Any, _: Any) -> Any:
            # not a mapping: one error for the record, not one per field
            if not isinstance(value, Mapping):
                raise _BadValue(f"must be an object (a dict), got {_kind(value)}")
            return fields(value, type_)

        return structure

    return factory


def _make_public_converter() -> cattrs.Converter:
    conv = json_converter.copy()
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(datetime, _strict_datetime)
    conv.register_structure_hook(timedelta, _strict_timedelta)
    conv.register_structure_hook_factory(_is_sequence, _sequence_hook(conv))
    conv.register_structure_hook_factory(attrs.has, _record_hook(conv))
    # to_dict() gives plain JSON types: lists, not tuples
    conv.register_unstructure_hook_func(_is_tuple, lambda v: [conv.unstructure(i) for i in v])
    return conv


_public = _make_public_converter()
"""The public records' ``to_dict()`` and ``from_dict()``: json_converter's format, with
every value's type checked when structured."""


_KEY = re.compile(r"\[(['\"])(.*?)\1\]")


def _reason(error: BaseException, type_: Any) -> str:
    if isinstance(error, _BadValue):
        return str(error)
    if isinstance(error, KeyError):
        return "is required"
    args = get_args(type_)
    if len(args) == 2 and type(None) in args:  # X | None: X's reason, or null
        inner = args[0] if args[1] is type(None) else args[1]
        return _reason(error, inner) + " or null"
    if get_origin(type_) is Literal:
        return "must be one of " + ", ".join(repr(a) for a in get_args(type_))
    if attrs.has(type_) or get_origin(type_) is dict or type_ is dict:
        return "must be an object (a dict)"
    name = getattr(type_, "__name__", None) or str(type_)
    return f"is not a valid {name}"


def _first_error(error: BaseException) -> tuple[str, str]:
    """The path (``"qualified[0].id"``, ``"scores.behavior"``) of the first value a
    failed ``public_converter.structure`` refused, and why; ``""`` for the whole value."""
    messages = cattrs.transform_error(error, path="", format_exception=_reason)
    if not messages:  # pragma: no cover - transform_error always says something
        return "", str(error)
    reason, _, path = messages[0].rpartition(" @ ")
    field = _KEY.sub(lambda m: "." + m.group(2), path).lstrip(".")
    if len(messages) > 1:
        reason += f" (and {len(messages) - 1} more)"
    return field, reason


def record_to_dict(record: object) -> dict[str, Any]:
    """A public record as JSON-compatible values (what its ``to_dict()`` returns)."""
    data: dict[str, Any] = _public.unstructure(record)
    return data


def record_from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
    """The record of type ``cls`` that ``data`` (from ``to_dict()``) describes.

    Keys ``cls`` does not have are ignored (a newer pqlkit's records read in an older
    one); a missing key with a default takes the default.

    Raises:
        ValidationError: ``data`` is not a mapping (field ``"data"``), or a value is
            missing or not of its field's type, naming the field (``"qualified_at"``,
            ``"qualified[0].scores.behavior"``).
    """
    if not isinstance(data, Mapping):
        raise ValidationError("data", f"must be a mapping (a dict), got {type(data).__name__}")
    try:
        return _public.structure(data, cls)
    except Exception as error:  # cattrs gathers every refused value; we name the first
        field, reason = _first_error(error)
        raise ValidationError(field or "data", reason) from error


class JsonRecord:
    """What every public record has: ``to_dict()`` and ``from_dict()``, through the
    package's JSON converter (with its type checks)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """This record as JSON-compatible values (``json.dumps`` takes them as they are).

        Datetimes are ISO 8601 text with their UTC offset, durations are seconds,
        tuples are lists. :meth:`from_dict` reads it back.
        """
        return record_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The record that ``data`` (as :meth:`to_dict` gives it) describes.

        Unknown keys are ignored; a value of the wrong type is refused.

        Raises:
            ValidationError: A value is missing or of the wrong type, naming the field.
        """
        return record_from_dict(cls, data)


@attrs.frozen
class Event(JsonRecord):
    """One event to record, as accepted by :meth:`Client.track_many`.

    It has exactly the parameters of :meth:`Client.track`.

    Example:
        >>> from pqlkit import Event
        >>> Event("u1", "login", account_id="acme").event
        'login'
    """

    user_id: str
    event: str
    properties: dict[str, Any] | None = None
    account_id: str | None = None
    timestamp: datetime | None = None
    message_id: str | None = None


@attrs.frozen
class EventRecord:
    """An event as the store keeps it: validated, timestamped, with its arrival order.

    Attributes:
        seq: Arrival order assigned by the store (increasing; gaps allowed).
        message_id: The idempotency key (unique per store).
        user_id: The user id the event was recorded under (before alias resolution).
        event: The event name.
        properties: The event's properties (a JSON object).
        account_id: The account the event counts for, if any.
        timestamp: When it happened (aware, UTC).
    """

    seq: int
    message_id: str
    user_id: str
    event: str
    properties: dict[str, Any]
    account_id: str | None
    timestamp: datetime


@attrs.frozen
class Qualification(JsonRecord):
    """A subject qualified (or, for ``on_disqualified``, stopped qualifying).

    Delivered to callbacks at least once; ``id`` is the same in every delivery of
    the same qualification, so a receiver can de-duplicate on it.

    Attributes:
        id: Stable idempotency key.
        kind: ``"pql"`` (a user), ``"pqa"`` (an account) or ``"play"`` (a play of
            the model, on a user or an account: ``play`` names it).
        subject_id: The user id (pql, a user's play) or account id (pqa, an account's play).
        account_id: The user's account (None for a user with no account); for a
            pqa, the account id itself.
        model: The model's name.
        fingerprint: The fingerprint of the model version that fired it.
        qualified_at: The evaluation time that fired it.
        scores: Score name to value, at that time.
        signals: Names of the signals that were true, sorted.
        explanation: Human-readable lines: every signal and score part.
        context: Traits (``user_traits``, ``account_traits``), ``first_seen`` and
            ``events`` (the last few events), JSON-compatible.
        disqualified_at: For a disqualification delivered to ``on_disqualified``,
            the evaluation time at which the rule turned false; otherwise None.
        play: The play's name for ``kind == "play"``; None for pql and pqa.
        holdout: True for a play's qualification withheld from its action (the
            play's ``holdout`` share): recorded, never delivered nor nudged.
    """

    id: str
    kind: Kind
    subject_id: str
    account_id: str | None
    model: str
    fingerprint: str
    qualified_at: datetime
    scores: dict[str, float] = attrs.field(factory=dict)
    signals: tuple[str, ...] = ()
    explanation: tuple[str, ...] = ()
    context: dict[str, Any] = attrs.field(factory=dict)
    disqualified_at: datetime | None = None
    play: str | None = None
    holdout: bool = False

    def to_dict(self) -> dict[str, Any]:
        """This Qualification as JSON-compatible values (``json.dumps`` takes them as they are).

        Datetimes are ISO 8601 text with their UTC offset, tuples are lists: the
        format pqlkit stores a qualification in. :meth:`from_dict` reads it back.

        Example:
            >>> from datetime import datetime, timezone
            >>> from pqlkit import Qualification
            >>> at = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
            >>> q = Qualification("q1", "pql", "u1", "acme", "doc", "f1", at, signals=("built",))
            >>> data = q.to_dict()
            >>> data["qualified_at"], data["signals"]
            ('2026-01-05T09:00:00+00:00', ['built'])
            >>> Qualification.from_dict(data) == q
            True
        """
        return record_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The Qualification that ``data`` (as :meth:`to_dict` gives it) describes.

        Unknown keys are ignored; a value of the wrong type is refused.

        Raises:
            ValidationError: A value is missing or of the wrong type, naming the field.
        """
        return record_from_dict(cls, data)


@attrs.frozen
class Nudge(JsonRecord):
    """A message waiting in a user's in-app inbox, from :meth:`Client.nudge` (or a play).

    Open until the user clicks or dismisses it (:meth:`Client.mark`), or until
    ``until`` passes; :meth:`Client.nudges` lists a user's open ones, oldest first.

    Attributes:
        user_id: The user it is for (the final id, aliases resolved).
        key: Its idempotency key: a user has at most one open nudge per key.
        payload: What the app shows (a JSON object: title, body, a link...), or None.
        created_at: When it was opened (the client's clock).
        until: When it stops being shown, if it was opened with one.
        seen_at: When it was first marked ``"seen"`` (None: not yet).
        play: The play that opened it (None: opened by :meth:`Client.nudge`).

    Example:
        >>> from datetime import datetime, timezone
        >>> from pqlkit import Nudge
        >>> at = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
        >>> n = Nudge("u1", "upgrade", {"title": "You're close to your row limit"}, at)
        >>> n.to_dict()["created_at"]
        '2026-01-05T09:00:00+00:00'
        >>> Nudge.from_dict(n.to_dict()) == n
        True
    """

    user_id: str
    key: str
    payload: dict[str, Any] | None
    created_at: datetime
    until: datetime | None = None
    seen_at: datetime | None = None
    play: str | None = None


@attrs.frozen
class TrackResult(JsonRecord):
    """What one :meth:`Client.track` call changed.

    Attributes:
        qualified: Qualifications fired by this call.
        scores: The user's scores after the event.
        duplicate: True when the ``message_id`` had been seen: nothing was stored.
        disqualified: Disqualifications caused by this call.
        suppressed: True when the user id is suppressed (``forget(...,
            suppress=True)``): the event was dropped, nothing was stored.
    """

    qualified: list[Qualification] = attrs.field(factory=list)
    scores: dict[str, float] = attrs.field(factory=dict)
    duplicate: bool = False
    disqualified: list[Qualification] = attrs.field(factory=list)
    suppressed: bool = False


@attrs.frozen
class BulkResult(JsonRecord):
    """What :meth:`Client.track_many` did.

    Attributes:
        stored: Events stored.
        duplicates: Events ignored because their ``message_id`` was already stored.
        qualified: Qualifications fired by the batch, in order.
    """

    stored: int
    duplicates: int
    qualified: list[Qualification] = attrs.field(factory=list)


@attrs.frozen
class PruneResult(JsonRecord):
    """What :meth:`Client.prune` did (with ``dry_run``: what it would do).

    Attributes:
        horizon: Events older than this were pruned: the longest run of the log, in
            arrival order, whose events are all older (an event that arrived late
            with an old timestamp goes with the run it arrived in).
        through_seq: The arrival seq of the newest event pruned (0: none).
        events: Events deleted.
        subjects: Checkpoints written (one per model, kind and subject whose
            pruned events they fold in).
        checkpoint_bytes: The size of those checkpoints' states.
        deliveries: Finished qualifications deleted from the outbox (with
            ``deliveries_older_than``).
        dry_run: True if nothing was changed.
        seconds: How long it took.
    """

    horizon: datetime
    through_seq: int
    events: int
    subjects: int
    checkpoint_bytes: int = 0
    deliveries: int = 0
    dry_run: bool = False
    seconds: float = 0.0


@attrs.frozen
class Stats(JsonRecord):
    """The health of the PQL funnel, from :meth:`Client.stats`.

    Attributes:
        users: User subjects seen.
        accounts: Account subjects seen.
        pqls: Users that qualified (at least once).
        pqas: Accounts that qualified (at least once).
        pql_rate: ``pqls / users`` (0.0 with no users).
        time_to_pql_median: Median of ``qualified_at - first seen`` over PQLs.
        time_to_pql_p90: 90th percentile of the same.
        pql_rate_healthy: True when ``pql_rate`` is within 5-15%, the band the
            PQL literature calls healthy; None with no users.
        suppressed: Calls (``track()``, ``identify()``, ``alias()``) dropped for
            suppressed ids, by every client of the store (the ids suppressed now).
        plays: Play name to the subjects that fired it (at least once), held-out
            ones included; every play of the model is listed.
        plays_held_out: Play name to those of them held out (the play's ``holdout``).
    """

    users: int
    accounts: int
    pqls: int
    pqas: int
    pql_rate: float
    time_to_pql_median: timedelta | None
    time_to_pql_p90: timedelta | None
    pql_rate_healthy: bool | None
    suppressed: int = 0
    plays: dict[str, int] = attrs.field(factory=dict)
    plays_held_out: dict[str, int] = attrs.field(factory=dict)
