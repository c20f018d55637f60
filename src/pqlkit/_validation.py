"""Input checks for the recording API. Everything is checked before anything is stored."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from .exceptions import ValidationError

_INT_BOUND = 2**63
"""Property values must be 64-bit ints (what SQLite, PostgreSQL and JSON readers hold);
such an int prints in at most 20 characters."""

__all__ = [
    "NUDGE_PAYLOAD_BYTES",
    "Limits",
    "check_event",
    "check_id",
    "check_not_future",
    "check_payload",
    "check_properties",
    "check_timestamp",
    "check_until",
]

NUDGE_PAYLOAD_BYTES = 16_384
"""The largest nudge payload, as compact UTF-8 JSON (16 KiB): a title, a body and a link
fit many times over, and a page render reads every open nudge's payload."""


@attrs.frozen
class Limits:
    """The input limits of a Client (its ``max_*`` keyword settings)."""

    max_id_length: int = 256
    max_properties_bytes: int = 32_768
    max_depth: int = 16
    max_future: timedelta | None = timedelta(days=1)

    def __attrs_post_init__(self) -> None:
        for name in ("max_id_length", "max_properties_bytes", "max_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(name, f"must be a positive int, got {value!r}")
        future = self.max_future
        if future is not None and (not isinstance(future, timedelta) or future < timedelta(0)):
            raise ValidationError("max_future", f"must be a timedelta >= 0 or None, got {future!r}")


def check_id(value: object, field: str, limits: Limits) -> str:
    """A user, account or previous id: a non-blank str within the length limit."""
    if (
        type(value) is str
        and 0 < len(value) <= limits.max_id_length
        and value.isascii()
        and not value.isspace()
        and "\x00" not in value
    ):
        return value  # the common case, checked fast
    value = _check_label(value, field)
    if len(value) > limits.max_id_length:
        raise ValidationError(
            field, f"is {len(value)} characters long; the limit is {limits.max_id_length}"
        )
    return value


def check_event(value: object) -> str:
    """An event name: a non-blank str."""
    if (
        type(value) is str
        and 0 < len(value) <= 1024
        and value.isascii()
        and not value.isspace()
        and "\x00" not in value
    ):
        return value  # the common case, checked fast
    value = _check_label(value, "event")
    if len(value) > 1024:
        raise ValidationError("event", "is longer than 1024 characters")
    return value


def check_message_id(value: object, limits: Limits) -> str:
    """An idempotency key: a non-blank str within the id length limit."""
    return check_id(value, "message_id", limits)


def _check_label(value: object, field: str) -> str:
    """An id or an event name that the fast path did not take: a str, not blank, with
    no NUL character, storable as UTF-8 (its length is the caller's to check)."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError(field, "must not be empty or whitespace")
    _check_name(value, field)
    _check_text(value, field)
    return value


def _check_name(value: str, field: str) -> None:
    """Reject a NUL character in an id or event name: SQLite's JSON functions, which
    the store uses to match lists of ids, cut text there (``"a\x00b"`` would match
    ``"a"``), and PostgreSQL's text columns refuse it."""
    if "\x00" in value:
        raise ValidationError(field, f"contains a NUL character at position {value.index(chr(0))}")


def _check_text(value: str, field: str) -> None:
    """Reject text that cannot be stored as UTF-8 (it holds a lone surrogate)."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValidationError(
            field, f"is not valid Unicode text (lone surrogate at position {error.start})"
        ) from None


def check_timestamp(value: object, field: str = "timestamp") -> datetime:
    """An aware datetime, returned in UTC."""
    if not isinstance(value, datetime):
        raise ValidationError(field, f"must be a datetime, got {type(value).__name__}")
    if value.tzinfo is timezone.utc and type(value) is datetime:
        return value  # already what astimezone() would return
    try:
        offset = value.utcoffset()
    except Exception as error:  # a tzinfo is user code: any error is a bad value
        raise ValidationError(
            field, f"its tzinfo failed: {type(error).__name__}: {error}"
        ) from error
    if offset is None:
        raise ValidationError(field, "must be timezone-aware (naive datetimes are ambiguous)")
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValidationError(
            field, f"{value.isoformat()} is outside the range of UTC datetimes"
        ) from None
    except Exception as error:
        raise ValidationError(
            field, f"its tzinfo failed: {type(error).__name__}: {error}"
        ) from error


def check_not_future(value: datetime, clock_now: datetime, limits: Limits) -> None:
    """Reject a timestamp further than ``limits.max_future`` ahead of now: the later of
    the client's clock and the system's (so a test's frozen clock set in the past does
    not turn the events a test dates after it into errors).

    One event dated years ahead would become its subjects' newest event, and so
    the time every later event of theirs is evaluated at (docs/concepts.md, "Events and
    evaluation time").
    """
    bound = limits.max_future
    if bound is None or value - clock_now <= bound:
        return
    now = max(clock_now, datetime.now(timezone.utc))
    if value - now > bound:
        raise ValidationError(
            "timestamp",
            f"{value.isoformat()} is more than {bound} ahead of now ({now.isoformat()});"
            " the Client's max_future setting allows no more",
        )


def _check_json(value: Any, path: str, depth: int, limits: Limits) -> Any:
    """Deep-copy ``value`` as plain JSON data, rejecting anything JSON cannot hold faithfully.

    ``depth`` counts the containers (dicts and lists) around ``value``: a flat
    ``{"plan": "pro"}`` has depth 1.
    """
    if isinstance(value, (Mapping, list, tuple)) and depth > limits.max_depth:
        raise ValidationError(path, f"nests deeper than the limit of {limits.max_depth}")
    if isinstance(value, str):
        _check_text(value, path)
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -_INT_BOUND <= value < _INT_BOUND:
            raise ValidationError(
                path, "is outside the 64-bit integer range (send a larger number as a str)"
            )
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(path, f"{value!r} is not a finite number")
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValidationError(path, f"keys must be str, got {type(k).__name__} {k!r}")
            _check_text(k, path)
            out[k] = _check_json(v, f"{path}.{k}", depth + 1, limits)
        return out
    if isinstance(value, (list, tuple)):
        return [_check_json(v, f"{path}[{i}]", depth + 1, limits) for i, v in enumerate(value)]
    raise ValidationError(
        path, f"{type(value).__name__} is not JSON-serialisable (use str, number, bool, list, dict)"
    )


_FLAT_TYPES = frozenset({str, int, float, bool, type(None)})


def _flat_copy(value: dict[Any, Any], limits: Limits) -> dict[str, Any] | None:
    """The common case, checked quickly: a flat dict of ASCII str keys and scalar values,
    surely within the size limit. None: take the general path (which explains errors)."""
    bound = 2
    for k, v in value.items():
        t = type(v)
        if type(k) is not str or not k.isascii() or t not in _FLAT_TYPES:
            return None
        if t is str:
            if not v.isascii():
                return None
            bound += 6 * len(v)  # "\u001f" is the longest escape of an ASCII character
        elif t is float:
            if not math.isfinite(v):
                return None
            bound += 24
        elif t is int and not -_INT_BOUND < v < _INT_BOUND:
            return None
        else:
            bound += 20
        bound += 6 * len(k) + 4
    return dict(value) if bound <= limits.max_properties_bytes else None


def check_properties(value: object, field: str, limits: Limits) -> dict[str, Any]:
    """A JSON object of JSON values within the depth and size limits (None means ``{}``)."""
    if value is None:
        return {}
    if type(value) is dict:
        flat = _flat_copy(value, limits)
        if flat is not None:
            return flat
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"must be a dict, got {type(value).__name__}")
    data: dict[str, Any] = _check_json(value, field, 1, limits)
    size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limits.max_properties_bytes:
        raise ValidationError(
            field, f"serialises to {size} bytes; the limit is {limits.max_properties_bytes}"
        )
    return data


def check_payload(value: object, limits: Limits) -> dict[str, Any] | None:
    """A nudge's payload: None, or a JSON object of at most :data:`NUDGE_PAYLOAD_BYTES`."""
    if value is None:
        return None
    return check_properties(
        value, "payload", attrs.evolve(limits, max_properties_bytes=NUDGE_PAYLOAD_BYTES)
    )


def check_until(value: object, now: datetime) -> datetime | None:
    """When a nudge stops being shown: None, an aware datetime after ``now``, or a positive
    timedelta from ``now``; returned in UTC."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        if value <= timedelta(0):
            raise ValidationError("until", f"must be a positive duration, got {value!r}")
        try:
            return now + value
        except OverflowError:
            raise ValidationError("until", f"now + {value!r} is past the last datetime") from None
    if not isinstance(value, datetime):
        raise ValidationError(
            "until", f"must be an aware datetime or a timedelta, got {type(value).__name__}"
        )
    end = check_timestamp(value, "until")
    if end <= now:
        raise ValidationError(
            "until", f"{end.isoformat()} is not after now ({now.isoformat()}): nothing to show"
        )
    return end
