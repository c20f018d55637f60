"""The pytest plugin: fixtures for testing code that uses pqlkit.

pytest loads it through the ``pytest11`` entry point as soon as pqlkit is
installed, so a test suite needs no ``conftest.py`` to use:

* ``pql_clock``: a :class:`~pqlkit.testing.FrozenClock` at
  :data:`pqlkit.testing.START` (2026-01-05 09:00 UTC);
* ``pql_store``: a fresh :data:`~pqlkit.testing.FakeStore`;
* ``pql_client``: a factory (:class:`~pqlkit.testing.ClientFactory`),
  ``pql_client(model, **settings)``, building a :class:`~pqlkit.Client` on those
  two with ``dispatch="inline"``, and closing every client it built after the test.

Nothing here runs a thread or reads the wall clock. This is the only module of
pqlkit that imports pytest, and nothing else in pqlkit imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from typing_extensions import Unpack

from ._client import Client
from ._model import Model
from ._settings import ClientOptions, Settings
from .testing import START, ClientFactory, FakeStore, FrozenClock

__all__: list[str] = []


@pytest.fixture(name="pql_clock")
def fixture_pql_clock() -> FrozenClock:
    """A FrozenClock at 2026-01-05 09:00 UTC (pqlkit.testing.START); move it with advance/set."""
    return FrozenClock(START)


@pytest.fixture(name="pql_store")
def fixture_pql_store() -> Iterator[FakeStore]:
    """A fresh, empty FakeStore (in memory), closed after the test."""
    store = FakeStore()
    yield store
    store.close()


@pytest.fixture(name="pql_client")
def fixture_pql_client(pql_store: FakeStore, pql_clock: FrozenClock) -> Iterator[ClientFactory]:
    """pql_client(model, **options): a Client on pql_store and pql_clock, dispatch="inline".

    Every client it built is closed after the test. ``options`` are the Client's
    settings (max_attempts=..., retry_base=..., even dispatch=...; see pqlkit.Settings),
    over the defaults: the PQLKIT_* environment variables are not read.
    """
    with ExitStack() as built:  # closes every client, even if one close() raises

        def factory(model: Model, /, **options: Unpack[ClientOptions]) -> Client:
            options.setdefault("dispatch", "inline")
            # Settings(): the defaults, not what PQLKIT_* variables set where the tests run
            client = Client(model, store=pql_store, clock=pql_clock, settings=Settings(), **options)
            built.callback(client.close)
            return client

        yield factory
