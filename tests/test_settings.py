"""Settings: one frozen value behind the keywords of Client, AsyncClient, configure() and
the testing kit, checked once."""

from __future__ import annotations

import asyncio
import typing
from datetime import timedelta

import attrs
import pytest

import pqlkit
from pqlkit import AsyncClient, Client, ClientOptions, Model, Settings, ValidationError, did
from pqlkit._default import swap
from pqlkit.testing import ClientFactory, FrozenClock

MODEL = Model("settings", signals={"x": did("x")})


def test_the_keywords_are_the_settings() -> None:
    """ClientOptions (the typed keywords) lists exactly the fields of Settings."""
    assert set(typing.get_type_hints(ClientOptions)) == {f.name for f in attrs.fields(Settings)}


def test_keywords_override_a_settings_value() -> None:
    """settings= gives the base, keywords override it; the client says what it runs with."""
    base = Settings(max_attempts=3, dispatch="background")
    with Client(MODEL, store="memory://", settings=base, max_attempts=5) as client:
        assert client.settings == attrs.evolve(base, max_attempts=5)
    with Client(MODEL, store="memory://") as client:
        assert client.settings == Settings()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"dispatch": "later"}, "dispatch"),
        ({"retry_base": timedelta(0)}, "retry_base"),
        ({"inline_budget": timedelta(seconds=-1)}, "inline_budget"),
        ({"context_events": -1}, "context_events"),
        ({"max_id_length": 0}, "max_id_length"),
        ({"max_future": timedelta(seconds=-1)}, "max_future"),
        ({"warm_subjects": 0}, "warm_subjects"),
        ({"delivery_window": 7}, "delivery_window"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else v,
)
def test_a_bad_setting_names_itself(options: dict[str, object], field: str) -> None:
    """Settings(...) and Client(...) refuse an out-of-range value with its name."""
    with pytest.raises(ValidationError) as info:
        Settings(**options)  # type: ignore[arg-type]
    assert info.value.field == field
    with pytest.raises(ValidationError) as info:
        Client(MODEL, store="memory://", **options)  # type: ignore[arg-type]
    assert info.value.field == field


def test_an_unknown_keyword_is_a_type_error() -> None:
    """A misspelt setting fails as any unknown keyword does."""
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_attempt'"):
        Client(MODEL, store="memory://", max_attempt=3)  # type: ignore[call-arg]


def test_settings_must_be_a_settings() -> None:
    """settings= takes a Settings, not a dict."""
    with pytest.raises(ValidationError) as info:
        Client(MODEL, store="memory://", settings={"max_attempts": 3})  # type: ignore[arg-type]
    assert info.value.field == "settings"


def test_every_entry_point_takes_the_same_settings() -> None:
    """AsyncClient, configure() and pql_client pass settings and keywords on to the Client."""
    clock = FrozenClock(pqlkit.testing.START)
    strict = Settings(max_id_length=8)

    async def main() -> None:
        async with AsyncClient(MODEL, store="memory://", settings=strict, max_attempts=2) as ac:
            assert ac.client.settings == attrs.evolve(strict, max_attempts=2)

    asyncio.run(main())
    previous = swap(None)  # the module-level default client, restored after
    try:
        client = pqlkit.configure(MODEL, store="memory://", clock=clock, settings=strict)
        assert client.settings == strict
        assert client.clock is clock
        with pytest.raises(ValidationError, match="the limit is 8"):
            pqlkit.track("u" * 9, "x")
    finally:
        current = swap(previous)
        if current is not None:
            current.close()


def test_pql_client_takes_settings_keywords(pql_client: ClientFactory) -> None:
    """The pytest plugin's factory passes keywords through, inline by default."""
    client = pql_client(MODEL, max_attempts=4)
    assert (client.settings.max_attempts, client.settings.dispatch) == (4, "inline")
