"""cattrs converters: records to and from JSON-compatible data and store rows."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn

__all__ = [
    "EPOCH",
    "BadValue",
    "dumps",
    "first_error",
    "from_us",
    "json_converter",
    "loads",
    "micros",
    "public_converter",
    "row_converter",
    "to_us",
]

T = TypeVar("T")

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def micros(value: timedelta) -> int:
    """A duration in whole microseconds (exact, no float)."""
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


def to_us(value: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float)."""
    return micros(value - EPOCH)


def from_us(value: int) -> datetime:
    """The aware UTC datetime ``value`` microseconds after the Unix epoch."""
    return EPOCH + timedelta(microseconds=value)


def _make_encode() -> Callable[[Any], str]:
    """``JSONEncoder(...).encode`` with the C encoder made once, not on every call.

    ``encode()`` builds a new C encoder per call (about half of its cost for a
    small dict). Ours is built here with the same settings, without the check for
    circular references (what pqlkit encodes was copied from JSON-like input or
    built by it: it has none). Without the C accelerator, the plain ``encode``.
    """
    encoder = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return encoder.encode
    iterencode = make(
        None,  # markers: no check for circular references
        encoder.default,
        json.encoder.encode_basestring_ascii,  # ensure_ascii=True
        None,  # indent
        ":",
        ",",
        True,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )
    join = "".join

    def encode(value: Any) -> str:
        return join(iterencode(value, 0))

    return encode


_ENCODE = _make_encode()


def dumps(value: Any) -> str:
    """Compact, deterministic JSON (sorted keys; NaN refused)."""
    return _ENCODE(value)


def loads(text: str) -> Any:
    return json.loads(text)


def _make_json_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_unstructure_hook(datetime, lambda d: d.isoformat())
    conv.register_structure_hook(datetime, lambda v, _: datetime.fromisoformat(v))
    conv.register_unstructure_hook(timedelta, lambda d: d.total_seconds())
    conv.register_structure_hook(timedelta, lambda v, _: timedelta(seconds=v))
    return conv


def _make_row_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_unstructure_hook(datetime, to_us)
    conv.register_structure_hook(datetime, lambda v, _: from_us(int(v)))
    return conv


json_converter = _make_json_converter()
"""Records <-> JSON-compatible values (datetimes as ISO 8601 text)."""

row_converter = _make_row_converter()
"""Records <-> store rows (datetimes as integer microseconds since the epoch)."""


# -- the public records' to_dict() / from_dict() ------------------------------------------
# json_converter with checks: it structures what a user hands to from_dict(), where the
# lenient defaults would turn 5 into "5", "false" into True and "abc" into ("a", "b", "c").


class BadValue(ValueError):
    """A value of the wrong type or form; its message is the reason, in plain words."""


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _strict_str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise BadValue(f"must be a string, got {_kind(value)}")
    return value


def _strict_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(f"must be an integer, got {_kind(value)}")
    return value


def _strict_float(value: Any, _: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadValue(f"must be a number, got {_kind(value)}")
    return float(value)


def _strict_bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise BadValue(f"must be true or false, got {_kind(value)}")
    return value


def _strict_datetime(value: Any, _: Any) -> datetime:
    """ISO 8601 text with a UTC offset (``Z`` too: Python 3.10's fromisoformat lacks it)."""
    if not isinstance(value, str):
        raise BadValue(f"must be an ISO 8601 time as a string, got {_kind(value)}")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadValue("is not an ISO 8601 time (e.g. 2024-05-01T12:00:00+00:00)") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise BadValue("needs a UTC offset (e.g. 2024-05-01T12:00:00+00:00)")
    return parsed


def _strict_timedelta(value: Any, _: Any) -> timedelta:
    seconds = _strict_float(value, None)
    try:
        return timedelta(seconds=seconds)
    except (OverflowError, ValueError):  # too large, or NaN
        raise BadValue(f"is not a duration in seconds: {value!r}") from None


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
                raise BadValue(f"must be a list, got {_kind(value)}")
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
                raise BadValue(f"must be an object (a dict), got {_kind(value)}")
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


public_converter = _make_public_converter()
"""The public records' ``to_dict()`` and ``from_dict()``: json_converter's format, with
every value's type checked when structured (see ``_events.record_from_dict``)."""


_KEY = re.compile(r"\[(['\"])(.*?)\1\]")


def _reason(error: BaseException, type_: Any) -> str:
    if isinstance(error, BadValue):
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


def first_error(error: BaseException) -> tuple[str, str]:
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
