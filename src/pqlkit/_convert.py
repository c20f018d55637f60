"""cattrs converters: records to and from JSON-compatible data and store rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import cattrs

__all__ = [
    "EPOCH",
    "dumps",
    "from_us",
    "json_converter",
    "loads",
    "micros",
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
