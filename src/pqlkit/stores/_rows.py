"""The row mapping SQL stores share: records <-> rows.

The shared row converter (datetimes as integer microseconds since the epoch),
taught the few places where a column differs from its attribute: JSON text
columns (properties, a delivery's qualification) and ``ts`` for timestamps.
"""

from __future__ import annotations

from typing import Any

from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .._convert import dumps, json_converter, loads, row_converter
from .._events import EventRecord, Qualification
from ._base import DeliveryRecord, NewEvent

__all__ = ["payload", "rows"]

rows = row_converter.copy()


def _qualification_to_json(value: Qualification) -> str:
    return dumps(json_converter.unstructure(value))


def _qualification_from_json(value: str, _: Any) -> Qualification:
    return payload(value)


def payload(value: str) -> Qualification:
    """A delivery's ``qualification`` column (JSON text) as the Qualification it holds."""
    return json_converter.structure(loads(value), Qualification)


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
