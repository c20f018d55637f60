"""Bad input is rejected with ValidationError, naming the field, before anything is stored."""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pqlkit
from conftest import T0
from pqlkit import Client, Event, Model, ValidationError, active_users, count, points, trait
from pqlkit.stores import Store
from pqlkit.testing import ClientFactory, FrozenClock

MODEL = Model(
    "validation",
    signals={
        "seats": trait("seats") >= 5,
        "big": trait("employees", of="account") >= 200,
    },
    scores={
        "events": count(),
        "logins": count("login"),
        "users": active_users(),
        "fit": points(seats=10, big=20),
    },
    pql=count("login") >= 2,
    pqa=active_users() >= 2,
)

SUBJECTS = [("user", "u1"), ("user", "u2"), ("user", "anon-1"), ("account", "acme")]

hypothesis_settings = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_fresh = itertools.count()


def fresh_id(prefix: str) -> str:
    """An id no other call of this test session used."""
    return f"{prefix}-{next(_fresh)}"


@pytest.fixture(name="client")
def fixture_client(make_client: ClientFactory) -> Client:
    """A client on each store, holding a small history: events, traits, an alias, a PQL."""
    client = make_client(MODEL)
    client.identify("u1", {"seats": 7, "email": "jane@acme.io"}, account_id="acme")
    client.group("acme", {"employees": 600})
    client.track("u1", "login", {"plan": "pro"}, account_id="acme", message_id="m-1")
    client.track("u1", "login", account_id="acme", message_id="m-2")
    client.track("anon-1", "page_viewed", {"path": "/pricing"}, account_id="acme")
    client.alias("anon-1", "u2")
    return client


def snapshot(client: Client) -> dict[str, Any]:
    """Everything the store holds about the fixture's subjects, and their scores."""
    with client.store.transaction() as tx:
        state = {
            "events": list(tx.events()),
            "traits": {s: tx.traits(*s) for s in SUBJECTS},
            "states": {s: tx.load_state(MODEL.name, *s) for s in SUBJECTS},
            "aliases": {u: tx.resolve(u) for u in ("anon-1", "u1", "u2")},
            "qualifications": sorted(tx.qualifications(MODEL.name), key=lambda q: q.id),
            "deliveries": {s: tx.deliveries(s) for s in ("pending", "delivered", "dead")},
        }
    state["scores"] = {sid: client.scores(sid, of=kind) for kind, sid in SUBJECTS}
    return state


def assert_rejected(
    client: Client, call: Callable[[], object], field: str, reason: str
) -> ValidationError:
    """``call`` raises ValidationError(field, ...reason...) and leaves the store as it was."""
    before = snapshot(client)
    with pytest.raises(ValidationError) as info:
        call()
    error = info.value
    assert isinstance(error, ValueError)
    assert isinstance(error, pqlkit.PqlkitError)
    assert error.field == field
    assert reason in error.reason
    assert str(error) == f"{field}: {error.reason}"
    assert snapshot(client) == before
    return error


def stored_event(client: Client, message_id: str) -> Any:
    with client.store.transaction() as tx:
        found = [e for e in tx.events() if e.message_id == message_id]
    assert len(found) == 1
    return found[0]


def nested(levels: int, leaf: object = 1) -> dict[str, Any]:
    """A dict with ``levels`` dicts in all (counting itself): {"k": {"k": ... leaf}}."""
    value: Any = leaf
    for _ in range(levels):
        value = {"k": value}
    result: dict[str, Any] = value
    return result


class Unserialisable:
    """An arbitrary object: not JSON."""


# -- track(): ids and event names --------------------------------------------------

BAD_IDS = [
    (None, "must be a str"),
    ("", "must not be empty"),
    (" ", "must not be empty"),
    ("\t\n ", "must not be empty"),
    (42, "must be a str"),
    (b"u1", "must be a str"),
    (["u1"], "must be a str"),
    (uuid.UUID(int=7), "must be a str"),
    ("x" * 257, "the limit is 256"),
    ("u\ud800", "not valid Unicode"),
    ("u1\x00b", "contains a NUL character at position 2"),
]
BAD_ID_IDS = [
    "None",
    "empty",
    "space",
    "whitespace",
    "int",
    "bytes",
    "list",
    "uuid",
    "too-long",
    "lone-surrogate",
    "nul",
]


def track_with(client: Client, message_id: str, **overrides: Any) -> pqlkit.TrackResult:
    """A valid track() call with some arguments replaced."""
    args: dict[str, Any] = {
        "user_id": "u9",
        "event": "login",
        "properties": {"plan": "pro"},
        "account_id": "acme",
        "timestamp": T0 + timedelta(hours=1),
        "message_id": message_id,
    }
    args.update(overrides)
    return client.track(
        args["user_id"],
        args["event"],
        args["properties"],
        account_id=args["account_id"],
        timestamp=args["timestamp"],
        message_id=args["message_id"],
    )


def assert_track_rejected(client: Client, field: str, reason: str, **overrides: Any) -> None:
    """track() rejects the call, and its message_id stays free for a later valid call."""
    message_id = overrides.pop("message_id") if "message_id" in overrides else fresh_id("unused")
    assert_rejected(client, lambda: track_with(client, message_id, **overrides), field, reason)
    if field != "message_id":
        result = track_with(client, message_id)
        assert result.duplicate is False
        assert stored_event(client, message_id).user_id == "u9"


@pytest.mark.parametrize(("value", "reason"), BAD_IDS, ids=BAD_ID_IDS)
def test_track_rejects_bad_user_id(client: Client, value: object, reason: str) -> None:
    """user_id must be a non-blank str within max_id_length."""
    assert_track_rejected(client, "user_id", reason, user_id=value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "must be a str"),
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        (7, "must be a str"),
        (b"login", "must be a str"),
        ("login\udc80", "not valid Unicode"),
        ("login\x00x", "contains a NUL character"),
    ],
    ids=["None", "empty", "whitespace", "int", "bytes", "lone-surrogate", "nul"],
)
def test_track_rejects_bad_event_name(client: Client, value: object, reason: str) -> None:
    """The event name must be a non-blank str (None too is rejected)."""
    assert_track_rejected(client, "event", reason, event=value)


@pytest.mark.parametrize(
    ("value", "reason"), [b for b in BAD_IDS if b[0] is not None], ids=BAD_ID_IDS[1:]
)
def test_track_rejects_bad_account_id(client: Client, value: object, reason: str) -> None:
    """account_id, when given, must be a non-blank str within max_id_length."""
    assert_track_rejected(client, "account_id", reason, account_id=value)


@pytest.mark.parametrize(
    ("value", "reason"), [b for b in BAD_IDS if b[0] is not None], ids=BAD_ID_IDS[1:]
)
def test_track_rejects_bad_message_id(client: Client, value: object, reason: str) -> None:
    """message_id, when given, must be a non-blank str within max_id_length."""
    assert_track_rejected(client, "message_id", reason, message_id=value)


def test_ids_at_the_default_length_limit_are_accepted(client: Client) -> None:
    """256 characters is within the default limit, for every kind of id."""
    longest = "x" * 256
    result = client.track(longest, "login", account_id=longest, message_id=longest)
    assert result.duplicate is False
    event = stored_event(client, longest)
    assert (event.user_id, event.account_id) == (longest, longest)


def test_custom_max_id_length(store: Store) -> None:
    """max_id_length=8 accepts 8 characters and rejects 9, for user, account and message ids."""
    with Client(MODEL, store=store, clock=FrozenClock(T0), max_id_length=8) as client:
        result = client.track("u" * 8, "login", account_id="a" * 8, message_id="m" * 8)
        assert result.duplicate is False
        for field in ("user_id", "account_id", "message_id"):
            args: dict[str, Any] = {
                "user_id": "u2",
                "event": "login",
                "account_id": "acme",
                "message_id": "m2",
            }
            args[field] = "z" * 9
            assert_rejected(
                client,
                lambda args=args: client.track(
                    args["user_id"],
                    args["event"],
                    account_id=args["account_id"],
                    message_id=args["message_id"],
                ),
                field,
                "is 9 characters long; the limit is 8",
            )
        assert_rejected(client, lambda: client.identify("u" * 9), "user_id", "the limit is 8")
        assert_rejected(client, lambda: client.group("a" * 9), "account_id", "the limit is 8")
        assert_rejected(
            client, lambda: client.alias("p" * 9, "u2"), "previous_id", "the limit is 8"
        )


# -- track(): properties -----------------------------------------------------------


@pytest.mark.parametrize(
    ("properties", "field", "reason"),
    [
        ([("plan", "pro")], "properties", "must be a dict, got list"),
        ("plan=pro", "properties", "must be a dict, got str"),
        (5, "properties", "must be a dict, got int"),
        ({1: "a"}, "properties", "keys must be str, got int"),
        ({("a", "b"): 1}, "properties", "keys must be str, got tuple"),
        ({"a": {None: 1}}, "properties.a", "keys must be str, got NoneType"),
        ({"tags": {"a", "b"}}, "properties.tags", "set is not JSON-serialisable"),
        ({"tags": frozenset()}, "properties.tags", "frozenset is not JSON-serialisable"),
        ({"blob": b"\x00"}, "properties.blob", "bytes is not JSON-serialisable"),
        ({"price": Decimal("9.99")}, "properties.price", "Decimal is not JSON-serialisable"),
        ({"z": 1 + 2j}, "properties.z", "complex is not JSON-serialisable"),
        ({"at": T0}, "properties.at", "datetime is not JSON-serialisable"),
        ({"o": Unserialisable()}, "properties.o", "Unserialisable is not JSON-serialisable"),
        ({"n": math.nan}, "properties.n", "nan is not a finite number"),
        ({"n": math.inf}, "properties.n", "inf is not a finite number"),
        ({"n": -math.inf}, "properties.n", "-inf is not a finite number"),
        ({"a": {"b": [1, 2, math.nan]}}, "properties.a.b[2]", "not a finite number"),
        ({"a": [{"b": -math.inf}]}, "properties.a[0].b", "not a finite number"),
        ({"a": [[{"b": {1, 2}}]]}, "properties.a[0][0].b", "set is not JSON-serialisable"),
        ({"s": "ok\ud800"}, "properties.s", "not valid Unicode"),
        ({"n": 2**63}, "properties.n", "outside the 64-bit integer range"),
        ({"n": -(2**63) - 1}, "properties.n", "outside the 64-bit integer range"),
        ({"a": [10**5000]}, "properties.a[0]", "outside the 64-bit integer range"),
    ],
    ids=[
        "list",
        "str",
        "int",
        "int-key",
        "tuple-key",
        "nested-None-key",
        "set",
        "frozenset",
        "bytes",
        "Decimal",
        "complex",
        "datetime",
        "object",
        "nan",
        "inf",
        "-inf",
        "nested-nan",
        "nested-inf",
        "nested-set",
        "lone-surrogate",
        "int-2**63",
        "int-below-int64",
        "int-5000-digits",
    ],
)
def test_track_rejects_bad_properties(
    client: Client, properties: object, field: str, reason: str
) -> None:
    """Properties must be a JSON object of finite JSON values; the field names the path."""
    assert_track_rejected(client, field, reason, properties=properties)


def test_64_bit_ints_are_accepted(client: Client) -> None:
    """The largest and smallest 64-bit ints are stored as they are."""
    mid = fresh_id("ints")
    client.track("u9", "sized", {"max": 2**63 - 1, "min": -(2**63)}, message_id=mid)
    assert stored_event(client, mid).properties == {"max": 2**63 - 1, "min": -(2**63)}


def test_properties_at_the_default_depth_limit_are_accepted(client: Client) -> None:
    """16 nested dicts (max_depth=16) are accepted, a 17th is rejected at its path."""
    deepest = nested(16)
    mid = fresh_id("unused")
    client.track("u9", "deep", deepest, message_id=mid)
    assert stored_event(client, mid).properties == deepest
    path = "properties" + ".k" * 16
    assert_track_rejected(client, path, "nests deeper than the limit of 16", properties=nested(17))


def test_lists_count_towards_depth(store: Store) -> None:
    """Lists nest like dicts: max_depth=2 accepts {"a": [1]} and rejects {"a": [[1]]}."""
    with Client(MODEL, store=store, clock=FrozenClock(T0), max_depth=2) as client:
        client.track("u1", "e", {"a": [1], "b": {"c": 1}}, message_id="ok")
        assert stored_event(client, "ok").properties == {"a": [1], "b": {"c": 1}}
        assert_rejected(
            client,
            lambda: client.track("u1", "e", {"a": [[1]]}),
            "properties.a[0]",
            "nests deeper than the limit of 2",
        )
        assert_rejected(
            client,
            lambda: client.track("u1", "e", {"b": {"c": {"d": 1}}}),
            "properties.b.c",
            "nests deeper than the limit of 2",
        )


def test_max_depth_one_allows_flat_properties_only(store: Store) -> None:
    """max_depth=1 means flat: {"plan": "pro"} is accepted, {"plan": {}} is not."""
    with Client(MODEL, store=store, clock=FrozenClock(T0), max_depth=1) as client:
        client.track("u1", "e", {"plan": "pro", "seats": 3}, message_id="flat")
        assert stored_event(client, "flat").properties == {"plan": "pro", "seats": 3}
        assert_rejected(
            client,
            lambda: client.track("u1", "e", {"plan": {}}),
            "properties.plan",
            "nests deeper than the limit of 1",
        )


def test_properties_at_the_default_size_limit_are_accepted(client: Client) -> None:
    """32 KiB of compact JSON is accepted; one byte more is rejected."""
    overhead = len('{"k":""}')
    mid = fresh_id("unused")
    client.track("u9", "big", {"k": "x" * (32_768 - overhead)}, message_id=mid)
    assert len(stored_event(client, mid).properties["k"]) == 32_768 - overhead
    assert_track_rejected(
        client,
        "properties",
        "serialises to 32769 bytes; the limit is 32768",
        properties={"k": "x" * (32_768 - overhead + 1)},
    )


def test_custom_max_properties_bytes_counts_utf8_bytes(store: Store) -> None:
    """The size limit is in UTF-8 bytes: 'é' counts twice."""
    with Client(MODEL, store=store, clock=FrozenClock(T0), max_properties_bytes=20) as client:
        client.track("u1", "e", {"k": "é" * 6}, message_id="ok")  # 8 + 12 = 20 bytes
        assert stored_event(client, "ok").properties == {"k": "é" * 6}
        assert_rejected(
            client,
            lambda: client.track("u1", "e", {"k": "é" * 7}),
            "properties",
            "serialises to 22 bytes; the limit is 20",
        )
        assert_rejected(
            client,
            lambda: client.identify("u1", {"k": "x" * 13}),
            "traits",
            "serialises to 21 bytes; the limit is 20",
        )


# -- track(): timestamps ----------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        (T0.replace(tzinfo=None), "must be timezone-aware"),
        (T0.isoformat(), "must be a datetime, got str"),
        (int(T0.timestamp()), "must be a datetime, got int"),
        (T0.timestamp() + 0.5, "must be a datetime, got float"),
        (T0.date(), "must be a datetime, got date"),
    ],
    ids=["naive", "iso-string", "epoch-int", "epoch-float", "date"],
)
def test_track_rejects_bad_timestamp(client: Client, timestamp: object, reason: str) -> None:
    """timestamp must be an aware datetime."""
    assert_track_rejected(client, "timestamp", reason, timestamp=timestamp)


class _FailingZone(tzinfo):
    """A tzinfo whose offset lookup raises (a bug in someone else's time zone code)."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("zone database unavailable")

    def dst(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("zone database unavailable")

    def tzname(self, dt: datetime | None) -> str:
        return "FAIL"


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), "outside the range"),
        (datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))), "outside the range"),
        (T0.replace(tzinfo=_FailingZone()), "tzinfo failed: RuntimeError: zone"),
    ],
    ids=["before-year-1-in-utc", "after-year-9999-in-utc", "failing-tzinfo"],
)
def test_track_rejects_unconvertible_timestamp(
    client: Client, timestamp: datetime, reason: str
) -> None:
    """An aware datetime with no UTC equivalent, or whose tzinfo raises, is a ValidationError."""
    assert_track_rejected(client, "timestamp", reason, timestamp=timestamp)


FAR_FUTURE = datetime(2100, 1, 1, tzinfo=timezone.utc)


def test_track_rejects_a_timestamp_far_in_the_future(client: Client) -> None:
    """An event dated further than max_future (one day) ahead of now is rejected."""
    assert_track_rejected(client, "timestamp", "ahead of now", timestamp=FAR_FUTURE)


def test_max_future_is_measured_from_the_clock(store: Store) -> None:
    """With a clock ahead of the system's, the bound is the clock's now + max_future."""
    start = datetime(2200, 1, 1, tzinfo=timezone.utc)  # not T0: ahead of the wall clock
    with Client(MODEL, store=store, clock=FrozenClock(start)) as client:
        assert not client.track("u1", "login", timestamp=start + timedelta(hours=23)).duplicate
        assert_rejected(
            client,
            lambda: client.track("u1", "login", timestamp=start + timedelta(days=1, seconds=1)),
            "timestamp",
            "is more than 1 day, 0:00:00 ahead of now (2200-01-01T00:00:00+00:00)",
        )


def test_max_future_is_a_setting(store: Store) -> None:
    """max_future=None accepts any future timestamp; a smaller bound rejects sooner."""
    start = datetime(2200, 1, 1, tzinfo=timezone.utc)  # not T0: ahead of the wall clock
    later = datetime(2300, 1, 1, tzinfo=timezone.utc)
    with Client(MODEL, store=store, clock=FrozenClock(start), max_future=None) as client:
        assert not client.track("u1", "login", timestamp=later).duplicate
    with Client(
        MODEL, store=store, clock=FrozenClock(start), max_future=timedelta(minutes=5)
    ) as client:
        assert_rejected(
            client,
            lambda: client.track("u2", "login", timestamp=start + timedelta(minutes=6)),
            "timestamp",
            "max_future",
        )


@pytest.mark.parametrize("bad", [timedelta(seconds=-1), 5, "1d"], ids=["negative", "int", "str"])
def test_max_future_must_be_a_timedelta(bad: object) -> None:
    """max_future is a timedelta >= 0 or None."""
    with pytest.raises(ValidationError) as info:
        Client(MODEL, store="memory://", max_future=bad)  # type: ignore[arg-type]
    assert info.value.field == "max_future"


def test_a_future_event_cannot_freeze_an_account(store: Store) -> None:
    """One event dated 2100 is refused, so it cannot become the account's newest event and
    hold its evaluation time there: active_users(within=14d) >= 3 still fires."""
    model = Model("frozen", pqa=active_users(within=timedelta(days=14)) >= 3)
    with Client(model, store=store, clock=FrozenClock(T0)) as client:
        with pytest.raises(ValidationError):
            client.track("u0", "login", account_id="acme", timestamp=FAR_FUTURE)
        fired = [client.track(f"u{i}", "login", account_id="acme").qualified for i in (1, 2, 3)]
    assert [len(q) for q in fired] == [0, 0, 1]


# -- identify() and group(): traits ---------------------------------------------------

BAD_TRAITS = [
    (["seats", 5], "traits", "must be a dict, got list"),
    ({5: "seats"}, "traits", "keys must be str, got int"),
    ({"seats": {5}}, "traits.seats", "set is not JSON-serialisable"),
    ({"logo": b"png"}, "traits.logo", "bytes is not JSON-serialisable"),
    ({"arr": Decimal("1")}, "traits.arr", "Decimal is not JSON-serialisable"),
    ({"o": Unserialisable()}, "traits.o", "is not JSON-serialisable"),
    ({"signed_up": T0}, "traits.signed_up", "datetime is not JSON-serialisable"),
    ({"score": math.nan}, "traits.score", "not a finite number"),
    ({"a": {"b": [math.inf]}}, "traits.a.b[0]", "not a finite number"),
    (nested(17), "traits" + ".k" * 16, "nests deeper than the limit of 16"),
    ({"k": "x" * 40_000}, "traits", "the limit is 32768"),
]
BAD_TRAIT_IDS = [
    "list",
    "int-key",
    "set",
    "bytes",
    "Decimal",
    "object",
    "datetime",
    "nan",
    "nested-inf",
    "too-deep",
    "too-big",
]


@pytest.mark.parametrize(("traits", "field", "reason"), BAD_TRAITS, ids=BAD_TRAIT_IDS)
def test_identify_rejects_bad_traits(
    client: Client, traits: object, field: str, reason: str
) -> None:
    """identify() checks traits like properties, and merges nothing when they are bad."""
    assert_rejected(client, lambda: client.identify("u1", traits, account_id="beta"), field, reason)


@pytest.mark.parametrize(("traits", "field", "reason"), BAD_TRAITS, ids=BAD_TRAIT_IDS)
def test_group_rejects_bad_traits(client: Client, traits: object, field: str, reason: str) -> None:
    """group() checks traits like properties, and merges nothing when they are bad."""
    assert_rejected(client, lambda: client.group("acme", traits), field, reason)


@pytest.mark.parametrize(("value", "reason"), BAD_IDS, ids=BAD_ID_IDS)
def test_identify_and_group_reject_bad_ids(client: Client, value: object, reason: str) -> None:
    """identify()'s user_id and account_id, and group()'s account_id, are checked like track()'s."""
    assert_rejected(client, lambda: client.identify(value, {"seats": 1}), "user_id", reason)
    assert_rejected(client, lambda: client.group(value, {"employees": 1}), "account_id", reason)
    if value is not None:  # identify(account_id=None) means "no account"
        assert_rejected(
            client,
            lambda: client.identify("u1", {"seats": 1}, account_id=value),
            "account_id",
            reason,
        )


# -- alias(), forget(), reads ------------------------------------------------------------


@pytest.mark.parametrize(("value", "reason"), BAD_IDS, ids=BAD_ID_IDS)
def test_alias_forget_and_reads_reject_bad_ids(client: Client, value: object, reason: str) -> None:
    """alias(), forget(), scores() and explain() check their ids."""
    assert_rejected(client, lambda: client.alias(value, "u1"), "previous_id", reason)
    assert_rejected(client, lambda: client.alias("anon-9", value), "user_id", reason)
    assert_rejected(client, lambda: client.forget(value), "user_id", reason)
    assert_rejected(client, lambda: client.scores(value), "subject_id", reason)
    assert_rejected(client, lambda: client.explain(value), "subject_id", reason)


def test_alias_refuses_a_cycle(client: Client) -> None:
    """Aliasing an id to itself, or back to an id aliased to it, is rejected."""
    assert_rejected(client, lambda: client.alias("u1", "u1"), "user_id", "already an alias")
    assert_rejected(client, lambda: client.alias("u2", "anon-1"), "user_id", "already an alias")


def test_reads_reject_an_unknown_subject_kind(client: Client) -> None:
    """of= is "user" or "account"."""
    assert_rejected(client, lambda: client.scores("u1", of="team"), "of", "must be")


# -- track_many() --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [
        ({"user_id": "", "event": "login"}, "events[2].user_id", "must not be empty"),
        ({"user_id": "u9", "event": None}, "events[2].event", "must be a str"),
        (Event("u9", "login", {"n": math.nan}), "events[2].properties.n", "not a finite"),
        (
            Event("u9", "login", timestamp=T0.replace(tzinfo=None)),
            "events[2].timestamp",
            "must be timezone-aware",
        ),
        ({"user_id": "u9", "event": "x", "message_id": ""}, "events[2].message_id", "empty"),
        ({"user_id": "u9"}, "events[2].event", "is required"),
        ({"user": "u9", "event": "x"}, "events[2].user", "is not a parameter of track()"),
    ],
    ids=["user_id", "event", "nan", "naive", "message_id", "missing", "unknown-key"],
)
def test_track_many_names_the_bad_item(
    client: Client, bad: object, field: str, reason: str
) -> None:
    """A bad item raises ValidationError naming events[i].field; nothing of its batch is stored."""
    good = [
        {"user_id": "u9", "event": "login", "message_id": "bulk-0"},
        Event("u9", "login", message_id="bulk-1"),
    ]
    assert_rejected(client, lambda: client.track_many([*good, bad]), field, reason)
    # The good items' message ids were not used up either.
    assert client.track_many(good).stored == 2


def test_track_many_rejects_an_item_of_the_wrong_type(client: Client) -> None:
    """An item that is neither a dict nor an Event is rejected by index."""
    error = assert_rejected(
        client,
        lambda: client.track_many([("u9", "login")]),
        "events[0].event",
        "must be a dict or a pqlkit.Event",
    )
    assert error.field.startswith("events[0]")


def test_track_many_rejects_what_is_not_iterable(client: Client) -> None:
    """Not a list (or any iterable) of events: ValidationError, not a TypeError."""
    assert_rejected(client, lambda: client.track_many(5), "events", "must be an iterable")  # type: ignore[arg-type]


# -- Client settings and store URLs ------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_", "field"),
    [
        ({"max_id_length": 0}, "max_id_length"),
        ({"max_id_length": -1}, "max_id_length"),
        ({"max_id_length": True}, "max_id_length"),
        ({"max_id_length": 1.5}, "max_id_length"),
        ({"max_id_length": "256"}, "max_id_length"),
        ({"max_properties_bytes": 0}, "max_properties_bytes"),
        ({"max_properties_bytes": None}, "max_properties_bytes"),
        ({"max_depth": 0}, "max_depth"),
        ({"max_depth": -3}, "max_depth"),
        ({"dispatch": "sync"}, "dispatch"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": False}, "max_attempts"),
        ({"retry_base": timedelta(0)}, "retry_base"),
        ({"retry_base": 1}, "retry_base"),
        ({"retry_cap": timedelta(seconds=-1)}, "retry_cap"),
        ({"delivery_lease": timedelta(0)}, "delivery_lease"),
        ({"context_events": -1}, "context_events"),
        ({"context_events": "10"}, "context_events"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else None,
)
def test_client_rejects_bad_settings(tmp_path: Path, settings_: dict[str, Any], field: str) -> None:
    """A bad keyword setting raises ValidationError naming it, before any store is opened."""
    path = tmp_path / "never.db"
    with pytest.raises(ValidationError) as info:
        Client(MODEL, store=f"sqlite:///{path}", **settings_)
    assert info.value.field == field
    assert info.value.reason
    assert not path.exists()


def test_client_rejects_a_model_that_is_not_a_model(tmp_path: Path) -> None:
    """The model must be a pqlkit.Model."""
    path = tmp_path / "never.db"
    with pytest.raises(ValidationError) as info:
        Client({"signals": {}}, store=f"sqlite:///{path}")
    assert (info.value.field, info.value.reason) == ("model", "must be a pqlkit.Model, got dict")
    assert not path.exists()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("pqlkit.db", "not a store URL"),
        ("sqlite://relative.db", "has no host"),
        ("sqlite:///x.db?mode=ro", "no query parameters"),
        ("sqlite:///", "no file path"),
        ("mysql://localhost/pql", "unknown store URL scheme 'mysql'"),
        ("memory://extra", "takes nothing after"),
        ("", "not a store URL"),
    ],
)
def test_client_rejects_bad_store_urls(url: str, reason: str) -> None:
    """An unusable store URL raises ValidationError on the "store" field."""
    with pytest.raises(ValidationError) as info:
        Client(MODEL, store=url)
    assert info.value.field == "store"
    assert reason in info.value.reason


@pytest.mark.parametrize("bad_store", [42, object(), ["memory://"]], ids=["int", "object", "list"])
def test_client_rejects_a_store_that_is_neither_url_nor_store(bad_store: object) -> None:
    """Only a URL str or a Store is accepted as store."""
    with pytest.raises(ValidationError) as info:
        Client(MODEL, store=bad_store)
    assert info.value.field == "store"


def test_store_url_errors_never_repeat_the_url() -> None:
    """A URL may hold a password: the error does not echo it."""
    with pytest.raises(ValidationError) as info:
        Client(MODEL, store="mysql://admin:hunter2@db.example.com/pql")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["memory://", "sqlite://", "sqlite://:memory:", "sqlite:///:memory:"]
)
def test_client_accepts_good_store_urls(url: str) -> None:
    """The documented in-memory URLs open a working store."""
    with Client(MODEL, store=url, clock=FrozenClock(T0)) as client:
        assert client.track("u1", "login").scores["events"] == 1


def test_relative_and_absolute_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite:///relative.db is relative to the working directory; sqlite:////abs is absolute."""
    monkeypatch.chdir(tmp_path)
    with Client(MODEL, store="sqlite:///rel.db", clock=FrozenClock(T0)) as client:
        client.track("u1", "login")
    assert (tmp_path / "rel.db").exists()
    absolute = tmp_path / "sub" / "abs.db"
    absolute.parent.mkdir()
    with Client(MODEL, store=f"sqlite:///{absolute}", clock=FrozenClock(T0)) as client:
        client.track("u1", "login")
    assert absolute.exists()


# -- hypothesis ----------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)

non_json_leaves = st.one_of(
    st.sets(st.integers(), max_size=3),
    st.frozensets(st.text(max_size=3), max_size=3),
    st.binary(max_size=8),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.complex_numbers(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.just(timezone.utc)),
    st.dates(),
    st.builds(Unserialisable),
    st.builds(object),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.text(max_size=4).map(lambda s: s + "\ud800"),
    st.integers(min_value=2**63) | st.integers(max_value=-(2**63) - 1),
)


@st.composite
def poisoned(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid JSON object with one non-JSON value hidden in it, and that value's path."""
    base = draw(json_objects)
    key = draw(st.text(max_size=8))
    value: Any = draw(non_json_leaves)
    steps = draw(st.lists(st.one_of(st.text(max_size=4), st.integers(0, 2)), max_size=3))
    suffix = ""
    for step in steps:
        if isinstance(step, str):
            suffix = f".{step}" + suffix
            value = {step: value}
        else:
            suffix = f"[{step}]" + suffix
            value = [*([0] * step), value]
    # The poisoned key comes first, so it is the first thing checked.
    properties = {key: value, **{k: v for k, v in base.items() if k != key}}
    return properties, f"properties.{key}{suffix}"


@hypothesis_settings
@given(case=poisoned())
def test_any_non_json_value_is_rejected(client: Client, case: tuple[dict[str, Any], str]) -> None:
    """Any non-JSON value, however deep, is rejected at its path and nothing is stored."""
    properties, path = case
    message_id = fresh_id("poisoned")
    error = assert_rejected(
        client,
        lambda: client.track("u9", "e", properties, message_id=message_id),
        path,
        "",
    )
    assert error.reason
    assert client.track("u9", "e", message_id=message_id).duplicate is False


@hypothesis_settings
@given(
    key=st.one_of(st.integers(), st.none(), st.booleans(), st.tuples(st.integers())),
    base=json_objects,
)
def test_any_non_str_key_is_rejected(client: Client, key: object, base: dict[str, Any]) -> None:
    """A dict key that is not a str is rejected, nested or not."""
    assert_rejected(
        client,
        lambda: client.track("u9", "e", {**base, "inner": {key: 1}}),
        "properties.inner",
        "keys must be str",
    )


@hypothesis_settings
@given(properties=json_objects, traits=json_objects)
def test_any_json_object_round_trips(
    store: Store, properties: dict[str, Any], traits: dict[str, Any]
) -> None:
    """Every JSON object is stored and read back equal, as properties and as traits."""
    user = fresh_id("user")
    with Client(
        MODEL, store=store, clock=FrozenClock(T0), max_depth=64, max_properties_bytes=10**7
    ) as client:
        message_id = fresh_id("json")
        result = client.track(user, "e", properties, message_id=message_id)
        assert result.duplicate is False
        assert stored_event(client, message_id).properties == properties
        client.identify(user, traits)
        with client.store.transaction() as tx:
            assert tx.traits("user", user) == traits


def test_stored_properties_are_a_copy(client: Client) -> None:
    """Mutating the caller's dict after track() or identify() does not change what is stored."""
    properties: dict[str, Any] = {"plan": "pro", "tags": ["a"], "nested": {"n": 1}}
    client.track("u9", "e", properties, message_id="copy")
    traits: dict[str, Any] = {"seats": 3, "roles": ["admin"]}
    client.identify("u9", traits)
    properties["plan"] = "free"
    properties["tags"].append("b")
    properties["nested"]["n"] = 2
    traits["roles"].append("owner")
    assert stored_event(client, "copy").properties == {
        "plan": "pro",
        "tags": ["a"],
        "nested": {"n": 1},
    }
    with client.store.transaction() as tx:
        assert tx.traits("user", "u9") == {"seats": 3, "roles": ["admin"]}


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="ascii"), max_size=400),
)


@settings(max_examples=400, deadline=None)
@given(
    props=st.dictionaries(st.text(max_size=12), _SCALARS, max_size=12),
    limit=st.sampled_from([64, 256, 32_768]),
)
def test_the_fast_path_for_flat_properties_agrees_with_the_general_one(
    props: dict[str, Any], limit: int
) -> None:
    """Flat dicts take a shortcut: it accepts and rejects exactly what the general path does."""
    from pqlkit import _validation as v

    limits = v.Limits(max_properties_bytes=limit)

    def outcome(check: Callable[[], Any]) -> Any:
        try:
            return ("ok", check())
        except ValidationError as error:
            return ("error", str(error))

    def general() -> Any:
        with_flat_path_off = v._flat_copy
        v._flat_copy = lambda value, limits: None  # type: ignore[assignment]
        try:
            return v.check_properties(props, "properties", limits)
        finally:
            v._flat_copy = with_flat_path_off

    fast = outcome(lambda: v.check_properties(props, "properties", limits))
    assert fast == outcome(general)
    if fast[0] == "ok":
        assert fast[1] is not props  # a copy: the caller's dict may change later


def test_check_event_returns_the_event_as_it_would_be_stored() -> None:
    """check_event() validates like track_many() and fills in timestamp and message_id,
    storing nothing."""
    clock = FrozenClock(T0)
    with Client(MODEL, store="memory://", clock=clock) as client:
        checked = client.check_event({"user_id": "u1", "event": "x", "properties": {"n": 1}})
        assert (checked.user_id, checked.event, checked.properties) == ("u1", "x", {"n": 1})
        assert checked.timestamp == clock.now()
        assert checked.message_id
        with pytest.raises(ValidationError) as info:
            client.check_event({"user_id": "", "event": "x"})
        assert info.value.field == "user_id"
        assert client.stats().users == 0
