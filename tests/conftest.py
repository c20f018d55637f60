"""Fixtures shared by the test suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pqlkit.stores import MemoryStore, SQLiteStore, Store

STORE_FACTORIES: dict[str, Callable[[Path], Store]] = {
    "memory": lambda tmp_path: MemoryStore(),
    "sqlite": lambda tmp_path: SQLiteStore(tmp_path / "pqlkit.db"),
}
"""Every store the shared suite runs on, by name: add one here to run the suite on it."""


@pytest.fixture(name="store", params=list(STORE_FACTORIES))
def fixture_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each kind, closed after the test."""
    store = STORE_FACTORIES[request.param](tmp_path)
    yield store
    store.close()
