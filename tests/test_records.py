"""``to_dict()`` / ``from_dict()`` of the public records: JSON-compatible, round trips,
bad input refused naming the field."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pqlkit import (
    BulkResult,
    Delivery,
    Event,
    Model,
    Nudge,
    Qualification,
    Stats,
    TrackResult,
    ValidationError,
    did,
    points,
    score,
)
from pqlkit._convert import json_converter
from pqlkit.testing import ClientFactory, recorder

RECORDS = (Qualification, TrackResult, BulkResult, Stats, Event, Delivery, Nudge)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m))
)
times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=offsets
)
ids = st.text(min_size=1, max_size=12)
floats = st.floats(allow_nan=False, allow_infinity=False)
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=36_500))

qualifications = st.builds(
    Qualification,
    id=ids,
    kind=st.sampled_from(["pql", "pqa"]),
    subject_id=ids,
    account_id=st.none() | ids,
    model=ids,
    fingerprint=ids,
    qualified_at=times,
    scores=st.dictionaries(ids, floats, max_size=3),
    signals=st.lists(ids, max_size=3).map(tuple),
    explanation=st.lists(st.text(max_size=30), max_size=3).map(tuple),
    context=json_objects,
    disqualified_at=st.none() | times,
)
records = st.one_of(
    qualifications,
    st.builds(
        TrackResult,
        qualified=st.lists(qualifications, max_size=2),
        scores=st.dictionaries(ids, floats, max_size=3),
        duplicate=st.booleans(),
        disqualified=st.lists(qualifications, max_size=2),
    ),
    st.builds(
        BulkResult,
        stored=st.integers(min_value=0),
        duplicates=st.integers(min_value=0),
        qualified=st.lists(qualifications, max_size=2),
    ),
    st.builds(
        Stats,
        users=st.integers(min_value=0),
        accounts=st.integers(min_value=0),
        pqls=st.integers(min_value=0),
        pqas=st.integers(min_value=0),
        pql_rate=st.floats(min_value=0, max_value=1),
        time_to_pql_median=st.none() | durations,
        time_to_pql_p90=st.none() | durations,
        pql_rate_healthy=st.none() | st.booleans(),
    ),
    st.builds(
        Event,
        user_id=ids,
        event=ids,
        properties=st.none() | json_objects,
        account_id=st.none() | ids,
        timestamp=st.none() | times,
        message_id=st.none() | ids,
    ),
    st.builds(
        Nudge,
        user_id=ids,
        key=ids,
        payload=st.none() | json_objects,
        created_at=times,
        until=st.none() | times,
        seen_at=st.none() | times,
        play=st.none() | ids,
    ),
    st.builds(
        Delivery,
        qualification=qualifications,
        callback=st.none() | ids,
        status=st.sampled_from(["pending", "delivered", "dead", "expired"]),
        attempts=st.integers(min_value=0, max_value=100),
        next_attempt_at=st.none() | times,
        last_error=st.none() | st.text(max_size=20),
        finished_at=st.none() | times,
    ),
)


def plain_json(value: Any) -> bool:
    """Only what JSON has: dict with str keys, list, str, int, float, bool, None."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_json(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


@given(records)
def test_a_record_survives_a_json_round_trip(record: Any) -> None:
    """``from_dict(json.loads(json.dumps(to_dict())))`` is the record again, and
    ``to_dict()`` holds only JSON's own types (no datetime, tuple or timedelta)."""
    data = record.to_dict()
    assert plain_json(data)
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    back = type(record).from_dict(json.loads(text))
    assert back == record
    assert type(back) is type(record)


@given(qualifications)
def test_a_qualification_dict_is_what_pqlkit_stores_for_it(q: Qualification) -> None:
    """``to_dict()`` is the format of the package's converter (the outbox keeps a delivery's
    qualification in it): a receiver reads the same JSON either way."""
    assert q.to_dict() == json.loads(json.dumps(json_converter.unstructure(q)))


def test_a_qualification_reads_as_expected(pql_client: ClientFactory) -> None:
    """A delivered qualification's dict: its fields by name, the time as ISO 8601 text with
    its offset, lists for tuples; the context as the payload has it."""
    model = Model(
        "records",
        signals={"built": did("dashboard_built")},
        scores={"behavior": points(built=60)},
        pql=score("behavior") >= 50,
    )
    client = pql_client(model)
    rec = recorder(client)
    result = client.track("u1", "dashboard_built", {"n": 1}, account_id="acme")
    (q,) = rec.pql
    data = q.to_dict()
    assert data["id"] == q.id
    assert (data["kind"], data["subject_id"], data["account_id"]) == ("pql", "u1", "acme")
    assert data["qualified_at"] == q.qualified_at.isoformat()
    assert data["qualified_at"].endswith("+00:00")
    assert data["scores"] == {"behavior": 60.0}
    assert data["signals"] == ["built"]
    assert data["explanation"] == list(q.explanation)
    assert data["context"]["events"][0]["properties"] == {"n": 1}
    assert data["disqualified_at"] is None
    assert Qualification.from_dict(json.loads(json.dumps(data))) == q
    assert TrackResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    (delivery,) = client.deliveries()
    assert Delivery.from_dict(json.loads(json.dumps(delivery.to_dict()))) == delivery
    stats = client.stats()
    assert Stats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats


def test_from_dict_ignores_unknown_keys_and_takes_defaults() -> None:
    """A key the record lacks (written by a newer pqlkit) is ignored; a missing key with a
    default takes it."""
    q = Qualification.from_dict(
        {
            "id": "q1",
            "kind": "pql",
            "subject_id": "u1",
            "account_id": None,
            "model": "m",
            "fingerprint": "f",
            "qualified_at": "2026-01-05T09:00:00Z",
            "added_in_a_later_version": [1, 2],
        }
    )
    assert q.qualified_at == datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
    assert (q.scores, q.signals, q.explanation, q.context) == ({}, (), (), {})
    assert Event.from_dict({"user_id": "u1", "event": "login"}) == Event("u1", "login")


Q = Qualification(
    id="q1",
    kind="pql",
    subject_id="u1",
    account_id="acme",
    model="m",
    fingerprint="f",
    qualified_at=datetime(2026, 1, 5, 9, tzinfo=timezone.utc),
    scores={"behavior": 60.0},
    signals=("built",),
    explanation=("built: count('x') = 1 >= 1 -> true",),
    context={"events": []},
)
GOOD = Q.to_dict()


@pytest.mark.parametrize(
    ("cls", "data", "field", "reason"),
    [
        (Qualification, {**GOOD, "id": 5}, "id", "must be a string, got int"),
        (Qualification, {**GOOD, "id": None}, "id", "must be a string, got null"),
        (Qualification, {k: v for k, v in GOOD.items() if k != "model"}, "model", "is required"),
        (Qualification, {**GOOD, "kind": "mql"}, "kind", "must be one of 'pql', 'pqa'"),
        (Qualification, {**GOOD, "account_id": 7}, "account_id", "must be a string"),
        (Qualification, {**GOOD, "qualified_at": "yesterday"}, "qualified_at", "ISO 8601"),
        (Qualification, {**GOOD, "qualified_at": "2026-01-05T09:00:00"}, "qualified_at", "UTC"),
        (Qualification, {**GOOD, "qualified_at": 1767603600}, "qualified_at", "string"),
        (Qualification, {**GOOD, "scores": {"behavior": "60"}}, "scores.behavior", "number"),
        (Qualification, {**GOOD, "scores": {"behavior": True}}, "scores.behavior", "number"),
        (Qualification, {**GOOD, "scores": [60]}, "scores", "must be an object"),
        (Qualification, {**GOOD, "signals": "built"}, "signals", "must be a list, got str"),
        (Qualification, {**GOOD, "signals": ["a", 2]}, "signals[1]", "must be a string"),
        (Qualification, {**GOOD, "context": "x"}, "context", "must be an object"),
        (Qualification, [GOOD], "data", "must be a mapping"),
        (TrackResult, {"duplicate": "false"}, "duplicate", "must be true or false"),
        (TrackResult, {"qualified": [GOOD, {**GOOD, "model": 1}]}, "qualified[1].model", "str"),
        (TrackResult, {"qualified": ["q1"]}, "qualified[0]", "must be an object"),
        (TrackResult, {"qualified": GOOD}, "qualified", "must be a list, got dict"),
        (BulkResult, {"stored": 1.5, "duplicates": 0}, "stored", "must be an integer"),
        (BulkResult, {"stored": True, "duplicates": 0}, "stored", "must be an integer"),
        (
            Stats,
            {**Stats(1, 0, 0, 0, 0.0, None, None, None).to_dict(), "time_to_pql_p90": "1h"},
            "time_to_pql_p90",
            "number",
        ),
        (Event, {"user_id": "u1"}, "event", "is required"),
        (
            Event,
            {"user_id": "u1", "event": "x", "properties": [1]},
            "properties",
            "an object (a dict) or null",
        ),
        (
            Delivery,
            {
                "qualification": {**GOOD, "fingerprint": None},
                "callback": None,
                "status": "done",
                "attempts": 0,
                "next_attempt_at": None,
                "last_error": None,
                "finished_at": None,
            },
            "qualification.fingerprint",
            "must be a string",
        ),
    ],
)
def test_from_dict_refuses_bad_input_naming_the_field(
    cls: type[Any], data: Any, field: str, reason: str
) -> None:
    """A missing value, a value of the wrong type or form: ValidationError naming the field
    (a dotted path into nested records, keys and list indexes)."""
    with pytest.raises(ValidationError) as caught:
        cls.from_dict(data)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_every_refused_value_is_counted() -> None:
    """The first refused value is named; how many others there were is said."""
    with pytest.raises(ValidationError) as caught:
        Qualification.from_dict({**GOOD, "id": 1, "model": 2, "fingerprint": 3})
    assert caught.value.field == "id"
    assert caught.value.reason.endswith("(and 2 more)")


@pytest.mark.parametrize("cls", RECORDS)
def test_every_public_record_has_both(cls: type[Any]) -> None:
    """Each public record a user would send elsewhere has ``to_dict`` and ``from_dict``."""
    assert callable(cls.to_dict)
    assert callable(cls.from_dict)
