"""Lists for people (API.md section 6): ``client.qualifications()``, on every store."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import attrs
import pytest

import pqlkit
from conftest import T0
from pqlkit import (
    Client,
    Model,
    Qualification,
    ValidationError,
    active_users,
    days,
    did,
    idle,
    signal,
)
from pqlkit.testing import ClientFactory, FrozenClock

MODEL = Model(
    "lists",
    signals={"dormant": idle() >= days(14)},
    pql=did("dashboard_built") & ~signal("dormant"),
    pqa=active_users() >= 2,
    requalify_after=days(1),
)


@pytest.fixture(name="client")
def fixture_client(make_client: ClientFactory) -> Client:
    """An inline client for MODEL on each store, its deliveries recorded."""
    client = make_client(MODEL)
    client.on_pql(lambda q: None, name="crm")
    client.on_pqa(lambda q: None, name="crm")
    return client


def qualify(client: Client, clock: FrozenClock, *users: str, account: str = "acme") -> None:
    """Each user qualifies, one minute after the one before."""
    for user in users:
        clock.advance(timedelta(minutes=1))
        client.track(user, "dashboard_built", account_id=account)


def ids(qualifications: list[Qualification]) -> list[tuple[str, str]]:
    return [(q.kind, q.subject_id) for q in qualifications]


def test_newest_first_as_delivered(client: Client, clock: FrozenClock) -> None:
    """Every kind, latest first; each the Qualification its callbacks got."""
    got: list[Qualification] = []
    client.on_pql(got.append, name="recorder")
    qualify(client, clock, "jane", "raj")  # raj makes acme a PQA, at the same time
    listed = client.qualifications()
    # raj and acme qualified at the same time: by id between them
    assert set(ids(listed)[:2]) == {("pqa", "acme"), ("pql", "raj")}
    assert ids(listed)[2] == ("pql", "jane")
    assert listed[0].id > listed[1].id
    by_id = {q.id: q for q in listed}
    assert [by_id[q.id] for q in got] == got  # the very payload: scores, explanation, context
    assert by_id[got[0].id].explanation
    assert by_id[got[0].id].account_id == "acme"
    assert ids(client.qualifications(kind="pql")) == [("pql", "raj"), ("pql", "jane")]
    assert ids(client.qualifications(kind="pqa")) == [("pqa", "acme")]


def test_ties_are_ordered_by_id(client: Client) -> None:
    """Qualifications at the same time (a frozen clock) come by id, descending."""
    for user in ("a", "b", "c", "d"):
        client.track(user, "dashboard_built")
    listed = client.qualifications(kind="pql")
    assert len({q.qualified_at for q in listed}) == 1
    assert [q.id for q in listed] == sorted((q.id for q in listed), reverse=True)


@pytest.mark.parametrize("cursor", ["qualification", "id"])
def test_paging_with_before_lists_each_once(
    client: Client, clock: FrozenClock, cursor: str
) -> None:
    """Pages joined by ``before=`` (the last one, or its id) list everything once, ties too."""
    users = [f"u{i:02}" for i in range(11)]
    for i, user in enumerate(users):
        if i % 4 == 0:
            clock.advance(timedelta(seconds=1))  # four at a time share qualified_at
        client.track(user, "dashboard_built")
    whole = client.qualifications(kind="pql", limit=100)
    assert len(whole) == 11
    pages: list[list[Qualification]] = []
    before: Qualification | str | None = None
    while True:
        page = client.qualifications(kind="pql", before=before, limit=3)
        pages.append(page)
        if len(page) < 3:
            break
        before = page[-1] if cursor == "qualification" else page[-1].id
    assert [len(p) for p in pages] == [3, 3, 3, 2]
    assert [q for p in pages for q in p] == whole


def test_since_a_time_or_a_duration(client: Client, clock: FrozenClock) -> None:
    """``since`` keeps those qualified at or after it; a timedelta counts back from now."""
    client.track("old", "dashboard_built")
    clock.advance(days(10))
    client.track("new", "dashboard_built")
    assert ids(client.qualifications(since=days(7))) == [("pql", "new")]
    assert ids(client.qualifications(since=T0 + days(10))) == [("pql", "new")]
    assert ids(client.qualifications(since=T0)) == [("pql", "new"), ("pql", "old")]
    assert client.qualifications(since=T0 + days(10) + timedelta(microseconds=1)) == []


def test_disqualified_and_requalified(client: Client, clock: FrozenClock) -> None:
    """A qualification whose rule turned false says when; a re-qualification is listed too."""
    client.track("jane", "dashboard_built")
    first = client.qualifications()[0]
    assert first.disqualified_at is None
    client.sweep(T0 + days(15))  # dormant: disqualified
    (gone,) = client.qualifications()
    assert gone.id == first.id
    assert gone.disqualified_at == T0 + days(15)
    assert attrs.evolve(gone, disqualified_at=None) == first
    clock.set(T0 + days(17))
    client.track("jane", "dashboard_built")  # back, and the cool-down has passed
    again, before = client.qualifications()
    assert before == gone
    assert again.id != first.id
    assert (again.qualified_at, again.disqualified_at) == (T0 + days(17), None)


def test_without_its_payload_a_record_still_lists(client: Client, clock: FrozenClock) -> None:
    """Once the outbox dropped the payload, the record's fields remain (scores empty)."""
    qualify(client, clock, "jane", "raj")
    far = T0 + days(400)
    with client.store.transaction() as tx:
        tx.close_deliveries(far, far, model=MODEL.name)
    with client.store.transaction() as tx:
        tx.purge_deliveries(far + days(1), model=MODEL.name)
    assert client.deliveries() == []
    listed = {q.subject_id: q for q in client.qualifications()}
    jane, acme = listed["jane"], listed["acme"]
    assert (jane.kind, jane.model, jane.qualified_at) == ("pql", "lists", T0 + timedelta(minutes=1))
    assert (jane.scores, jane.explanation, jane.account_id) == ({}, (), None)
    assert acme.account_id == "acme"


def test_only_this_models_and_not_the_forgotten(client: Client, make_client: ClientFactory) -> None:
    """Another model's qualifications on the same store are not listed, nor a forgotten user's."""
    other = make_client(Model("other", pql=did("dashboard_built")))
    other.track("zed", "dashboard_built")
    client.track("jane", "dashboard_built")
    client.track("raj", "dashboard_built")
    client.forget("raj")
    assert ids(client.qualifications()) == [("pql", "jane")]
    assert ids(other.qualifications()) == [("pql", "zed")]


def test_a_model_without_plays_lists_no_play(client: Client) -> None:
    """``kind="play"`` is valid and lists none for a model without plays; ``play=`` must
    name one of the model's plays (tests/test_plays.py lists those of a model with plays)."""
    client.track("jane", "dashboard_built")
    assert client.qualifications(kind="play") == []
    with pytest.raises(ValidationError) as info:
        client.qualifications(play="upgrade_nudge")
    assert info.value.field == "play"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"kind": "lead"}, "kind"),
        ({"kind": "disqualified"}, "kind"),
        ({"play": ""}, "play"),
        ({"play": 3}, "play"),
        ({"kind": "pql", "play": "upgrade_nudge"}, "play"),
        ({"limit": 0}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": 2.5}, "limit"),
        ({"since": datetime(2026, 1, 1)}, "since"),
        ({"since": "7d"}, "since"),
        ({"since": timedelta(days=-1)}, "since"),
        ({"before": 12}, "before"),
        ({"before": "no-such-id"}, "before"),
    ],
)
def test_bad_arguments_name_the_field(
    client: Client, options: dict[str, object], field: str
) -> None:
    """A bad argument is a ValidationError naming it."""
    with pytest.raises(ValidationError) as raised:
        client.qualifications(**options)  # type: ignore[arg-type]
    assert raised.value.field == field


def test_before_of_another_model_is_refused(client: Client, make_client: ClientFactory) -> None:
    """An id of another model's qualification is no cursor for this one."""
    other = make_client(Model("other", pql=did("dashboard_built")))
    (q,) = other.track("zed", "dashboard_built").qualified
    with pytest.raises(ValidationError, match="before"):
        client.qualifications(before=q.id)


def test_async_client_lists_too(store: pqlkit.Store, clock: FrozenClock) -> None:
    """AsyncClient.qualifications() awaits the same list."""

    async def main() -> list[Qualification]:
        async with pqlkit.AsyncClient(MODEL, store=store, clock=clock) as client:
            await client.track("jane", "dashboard_built")
            return await client.qualifications(kind="pql", since=days(1), limit=5)

    assert ids(asyncio.run(main())) == [("pql", "jane")]
