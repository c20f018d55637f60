"""What the SQL stores share of rows: the mapping records <-> rows, and reading the
event log in pages.

The shared row converter (datetimes as integer microseconds since the epoch),
taught the few places where a column differs from its attribute: JSON text
columns (properties, a delivery's qualification) and ``ts`` for timestamps.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .._convert import dumps, from_us, json_converter, loads, row_converter
from .._events import EventRecord, Qualification
from ._base import DeliveryRecord, NewEvent, NudgeRecord

__all__ = ["PAGE_SIZE", "event_pages", "nudge_records", "pack", "payload", "rows"]

rows = row_converter.copy()


def _qualification_to_json(value: Qualification) -> str:
    return dumps(json_converter.unstructure(value))


def _qualification_from_json(value: str | bytes, _: Any) -> Qualification:
    return payload(value)


def payload(value: str | bytes) -> Qualification:
    """A delivery's ``qualification`` column as the Qualification it holds: JSON text,
    or (SQLite, schema version 6 on) that text zlib-compressed (:func:`pack`)."""
    if isinstance(value, bytes):
        value = zlib.decompress(value).decode()
    return json_converter.structure(loads(value), Qualification)


def pack(text: str) -> bytes:
    """JSON text as SQLiteStore stores a delivery's payload: zlib-compressed (an
    explanation repeats the model's signal names, so 3 KB shrink to about 1.2 KB)."""
    return zlib.compress(text.encode())


def _from_json(value: str, _: Any) -> Any:
    return loads(value)


rows.register_unstructure_hook(
    NewEvent,
    make_dict_unstructure_fn(
        NewEvent,
        rows,
        timestamp=override(rename="ts"),
        properties=override(unstruct_hook=dumps),
    ),
)
rows.register_structure_hook(
    EventRecord,
    make_dict_structure_fn(
        EventRecord,
        rows,
        timestamp=override(rename="ts"),
        properties=override(struct_hook=_from_json),
    ),
)
rows.register_unstructure_hook(
    DeliveryRecord,
    make_dict_unstructure_fn(
        DeliveryRecord, rows, qualification=override(unstruct_hook=_qualification_to_json)
    ),
)
rows.register_structure_hook(
    DeliveryRecord,
    make_dict_structure_fn(
        DeliveryRecord, rows, qualification=override(struct_hook=_qualification_from_json)
    ),
)


PAGE_SIZE = 1000
"""Events read in one statement of a paged read of the log."""


def event_pages(
    page: Callable[[int, int], list[dict[str, Any]]], after_seq: int, limit: int | None
) -> Iterator[EventRecord]:
    """Up to ``limit`` events after ``after_seq``, in arrival order, read in pages:
    ``page(after_seq, size)`` returns the rows of up to ``size`` events after ``after_seq``
    (in ``seq`` order)."""
    remaining = limit
    while remaining is None or remaining > 0:
        size = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
        got = page(after_seq, size)
        for row in got:
            yield rows.structure(row, EventRecord)
        if len(got) < size:
            return
        after_seq = got[-1]["seq"]
        if remaining is not None:
            remaining -= len(got)


def nudge_records(user_id: str, rows: Iterable[Any]) -> list[NudgeRecord]:
    """A user's nudges from the SQL stores' rows (key, payload, created, until, seen,
    model, play): the hot path of a page render, so the records are built by hand."""
    return [
        NudgeRecord(
            user_id,
            key,
            None if payload is None else loads(payload),
            from_us(created),
            None if until is None else from_us(until),
            None if seen is None else from_us(seen),
            model,
            play,
        )
        for key, payload, created, until, seen, model, play in rows
    ]
