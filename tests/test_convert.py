"""The JSON text pqlkit stores (event properties, traits, states, payloads)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pqlkit._convert import dumps

_REFERENCE = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False).encode

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_dumps_gives_the_text_of_a_sorted_compact_json_encoder(value: Any) -> None:
    """dumps() builds its C encoder once; its text must be the standard encoder's."""
    assert dumps(value) == _REFERENCE(value)


@pytest.mark.parametrize("value", [float("nan"), {"a": [float("inf")]}, -float("inf")])
def test_dumps_refuses_what_json_cannot_hold(value: Any) -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps(value)


def test_dumps_refuses_objects_json_does_not_know() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"when": object()})
