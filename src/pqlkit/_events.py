"""Frozen records that cross the public API: events in, results and qualifications out.

Each public record has ``to_dict()`` (JSON-compatible values: datetimes as ISO 8601
text, durations as seconds, tuples as lists) and ``from_dict()`` (the reverse, every
value checked), through ``_convert.public_converter``: the format pqlkit itself
stores a delivery's qualification in.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

import attrs
from typing_extensions import Self

from ._convert import first_error, public_converter
from .exceptions import ValidationError

__all__ = [
    "BulkResult",
    "Event",
    "EventRecord",
    "Qualification",
    "Stats",
    "TrackResult",
    "record_from_dict",
    "record_to_dict",
]

R = TypeVar("R")

Kind = Literal["pql", "pqa"]
SubjectKind = Literal["user", "account"]


def record_to_dict(record: object) -> dict[str, Any]:
    """A public record as JSON-compatible values (what its ``to_dict()`` returns)."""
    data: dict[str, Any] = public_converter.unstructure(record)
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
        return public_converter.structure(data, cls)
    except Exception as error:  # cattrs gathers every refused value; we name the first
        field, reason = first_error(error)
        raise ValidationError(field or "data", reason) from error


@attrs.frozen
class Event:
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

    def to_dict(self) -> dict[str, Any]:
        """This Event as JSON-compatible values (``json.dumps`` takes them as they are).

        Datetimes are ISO 8601 text with their UTC offset, durations are seconds,
        tuples are lists. :meth:`from_dict` reads it back.
        """
        return record_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The Event that ``data`` (as :meth:`to_dict` gives it) describes.

        Unknown keys are ignored; a value of the wrong type is refused.

        Raises:
            ValidationError: A value is missing or of the wrong type, naming the field.
        """
        return record_from_dict(cls, data)


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
class Qualification:
    """A subject qualified (or, for ``on_disqualified``, stopped qualifying).

    Delivered to callbacks at least once; ``id`` is the same in every delivery of
    the same qualification, so a receiver can de-duplicate on it.

    Attributes:
        id: Stable idempotency key.
        kind: ``"pql"`` (a user) or ``"pqa"`` (an account).
        subject_id: The user id (pql) or account id (pqa).
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
class TrackResult:
    """What one :meth:`Client.track` call changed.

    Attributes:
        qualified: Qualifications fired by this call.
        scores: The user's scores after the event.
        duplicate: True when the ``message_id`` had been seen: nothing was stored.
        disqualified: Disqualifications caused by this call.
    """

    qualified: list[Qualification] = attrs.field(factory=list)
    scores: dict[str, float] = attrs.field(factory=dict)
    duplicate: bool = False
    disqualified: list[Qualification] = attrs.field(factory=list)

    def to_dict(self) -> dict[str, Any]:
        """This TrackResult as JSON-compatible values (``json.dumps`` takes them as they are).

        Datetimes are ISO 8601 text with their UTC offset, durations are seconds,
        tuples are lists. :meth:`from_dict` reads it back.
        """
        return record_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The TrackResult that ``data`` (as :meth:`to_dict` gives it) describes.

        Unknown keys are ignored; a value of the wrong type is refused.

        Raises:
            ValidationError: A value is missing or of the wrong type, naming the field.
        """
        return record_from_dict(cls, data)


@attrs.frozen
class BulkResult:
    """What :meth:`Client.track_many` did.

    Attributes:
        stored: Events stored.
        duplicates: Events ignored because their ``message_id`` was already stored.
        qualified: Qualifications fired by the batch, in order.
    """

    stored: int
    duplicates: int
    qualified: list[Qualification] = attrs.field(factory=list)

    def to_dict(self) -> dict[str, Any]:
        """This BulkResult as JSON-compatible values (``json.dumps`` takes them as they are).

        Datetimes are ISO 8601 text with their UTC offset, durations are seconds,
        tuples are lists. :meth:`from_dict` reads it back.
        """
        return record_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The BulkResult that ``data`` (as :meth:`to_dict` gives it) describes.

        Unknown keys are ignored; a value of the wrong type is refused.

        Raises:
            ValidationError: A value is missing or of the wrong type, naming the field.
        """
        return record_from_dict(cls, data)


@attrs.frozen
class Stats:
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
    """

    users: int
    accounts: int
    pqls: int
    pqas: int
    pql_rate: float
    time_to_pql_median: timedelta | None
    time_to_pql_p90: timedelta | None
    pql_rate_healthy: bool | None

    def to_dict(self) -> dict[str, Any]:
        """This Stats as JSON-compatible values (``json.dumps`` takes them as they are).

        Datetimes are ISO 8601 text with their UTC offset, durations are seconds,
        tuples are lists. :meth:`from_dict` reads it back.
        """
        return record_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The Stats that ``data`` (as :meth:`to_dict` gives it) describes.

        Unknown keys are ignored; a value of the wrong type is refused.

        Raises:
            ValidationError: A value is missing or of the wrong type, naming the field.
        """
        return record_from_dict(cls, data)
