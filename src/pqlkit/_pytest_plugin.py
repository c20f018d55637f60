"""The pytest plugin: fixtures for testing code that uses pqlkit.

pytest loads it through the ``pytest11`` entry point as soon as pqlkit is
installed, so a test suite needs no ``conftest.py`` to use:

* ``pql_clock``: a :class:`~pqlkit.testing.FrozenClock` at :data:`START`;
* ``pql_store``: a fresh :class:`~pqlkit.testing.FakeStore`;
* ``pql_client``: a factory, ``pql_client(model, **settings)``, building a
  :class:`~pqlkit.Client` on those two with ``dispatch="inline"``, closing every
  client it built after the test.

Nothing here runs a thread or reads the wall clock. This is the only module of
pqlkit that imports pytest, and nothing else in pqlkit imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from ._client import Client
    from ._model import Model
    from .stores.memory import MemoryStore
    from .testing import FrozenClock

__all__ = ["START", "ClientFactory", "pql_client", "pql_clock", "pql_store"]

START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
"""Where ``pql_clock`` starts: Monday 2026-01-05, 09:00 UTC."""


class ClientFactory(Protocol):
    """The type of the ``pql_client`` fixture."""

    def __call__(self, model: Model, /, **settings: Any) -> Client:
        """Build a Client for ``model`` on ``pql_store`` and ``pql_clock``."""


@pytest.fixture(name="pql_clock")
def pql_clock() -> FrozenClock:
    """A FrozenClock standing at 2026-01-05 09:00 UTC; move it with advance()/set()."""
    from .testing import FrozenClock

    return FrozenClock(START)


@pytest.fixture(name="pql_store")
def pql_store() -> Iterator[MemoryStore]:
    """A fresh, empty FakeStore (in memory), closed after the test."""
    from .testing import FakeStore

    store = FakeStore()
    yield store
    store.close()


@pytest.fixture(name="pql_client")
def pql_client(pql_store: MemoryStore, pql_clock: FrozenClock) -> Iterator[ClientFactory]:
    """A factory: ``pql_client(model, **settings)`` -> a Client on pql_store and pql_clock.

    Clients use ``dispatch="inline"`` (callbacks run inside ``track()``); every
    client built is closed after the test. ``settings`` go to
    :class:`~pqlkit.Client` (``max_attempts=...``, ``dispatch=...``).
    """
    from ._client import Client

    built: list[Client] = []

    def factory(model: Model, /, **settings: Any) -> Client:
        settings.setdefault("dispatch", "inline")
        client = Client(model, store=pql_store, clock=pql_clock, **settings)
        built.append(client)
        return client

    yield factory
    for client in reversed(built):
        client.close()
