"""Fresh, empty stores for the benchmarks: MemoryStore, SQLiteStore, PostgresStore.

PostgresStore is used when ``pqlkit.stores.postgres`` imports and the server at
``PQLKIT_TEST_POSTGRES_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
answers; each store gets a database of its own (``CREATE DATABASE``), dropped by
:func:`cleanup`. Otherwise the Postgres rows are skipped, with the reason.
"""

from __future__ import annotations

import importlib
import itertools
import os
from collections.abc import Callable
from typing import Any

import pqlkit

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
_created: list[str] = []
_counter = itertools.count()
_why_not: dict[str, str] = {}


def dsn() -> str:
    """The Postgres server the tests use."""
    return os.environ.get("PQLKIT_TEST_POSTGRES_DSN", DEFAULT_DSN)


def _with_dbname(url: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params: dict[str, Any] = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo(**params)


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(dsn(), autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)


def _postgres_factory() -> Callable[[], pqlkit.Store] | None:
    try:
        module = importlib.import_module("pqlkit.stores.postgres")
        store_cls = module.PostgresStore
    except (ImportError, AttributeError) as error:
        _why_not["postgres"] = f"pqlkit.stores.postgres cannot be imported ({error})"
        return None
    try:
        _admin("SELECT 1")
    except Exception as error:  # any failure to reach the server skips the row
        _why_not["postgres"] = f"no Postgres server at the test DSN ({type(error).__name__})"
        return None

    def open_postgres() -> pqlkit.Store:
        name = f"pqlkit_bench_{os.getpid()}_{next(_counter)}"
        _admin(f'CREATE DATABASE "{name}"')
        _created.append(name)
        store: pqlkit.Store = store_cls(_with_dbname(dsn(), name))
        return store

    return open_postgres


def available(tmp: str) -> dict[str, Callable[[], pqlkit.Store]]:
    """Name -> a function opening a fresh empty store (SQLite files go under ``tmp``)."""

    def open_sqlite() -> pqlkit.Store:
        return pqlkit.SQLiteStore(os.path.join(tmp, f"bench-{next(_counter)}.db"))

    out: dict[str, Callable[[], pqlkit.Store]] = {
        "memory": pqlkit.MemoryStore,
        "sqlite": open_sqlite,
    }
    postgres = _postgres_factory()
    if postgres is not None:
        out["postgres"] = postgres
    return out


def skipped(available: dict[str, Any]) -> dict[str, str]:
    """Stores left out of ``available``, with the reason."""
    return {k: v for k, v in _why_not.items() if k not in available}


def cleanup() -> None:
    """Drop the Postgres databases this process created."""
    while _created:
        name = _created.pop()
        try:
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as error:  # best effort: report, never fail the run for it
            print(f"warning: could not drop database {name}: {error}")
