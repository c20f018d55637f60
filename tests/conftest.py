"""Fixtures shared by the test suite.

One start time, :data:`T0` (the package's ``pqlkit.testing.START``), and one
fixture layer built on the package's own pytest plugin: ``clock`` is the
plugin's ``pql_clock``; ``make_client`` builds clients as ``pql_client`` does,
but on the shared ``store`` (every kind of store, one after the other).
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.context
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typing_extensions import Unpack

from pqlkit import Client, ClientOptions, Model
from pqlkit._settings import ENVIRONMENT, STORE_URL
from pqlkit.stores import MemoryStore, SQLiteStore, Store
from pqlkit.testing import START, ClientFactory, FrozenClock

T0: datetime = START
"""The suite's one start time: ``pqlkit.testing.START``, Monday 2026-01-05 09:00 UTC.

The ``clock`` fixture starts there; a test module that needs a particular
date (a UTC midnight, say) derives it from T0 and says why.
"""

POSTGRES_DSN = os.environ.get(
    "PQLKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
"""The PostgreSQL server the ``postgres`` tests use (each session in schemas of its own)."""

POSTGRES_SCHEMA = f"pqlkit_test_{os.getpid()}_{secrets.token_hex(4)}"
"""This session's schema for the shared suite, emptied before each test, dropped at the end."""

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_PG_TABLES = (
    "events",
    "aliases",
    "traits",
    "states",
    "qualifications",
    "deliveries",
    "callback_deliveries",
    "callbacks",
    "meta",
    "nudges",
    "ranks",
    "suppressions",
    "checkpoints",
)
_PG_IDENTITIES = (
    ("events", "seq"),
    ("qualifications", "pos"),
    ("deliveries", "created"),
    ("callback_deliveries", "seq"),
    ("nudges", "seq"),
)
_dropped_at_exit: set[str] = set()


def _build() -> str:
    """``"mypyc"`` when the pqlkit imported is the compiled build, else ``"pure"``."""
    import pqlkit._core

    return "pure" if str(pqlkit._core.__file__).endswith(".py") else "mypyc"


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test another build than the one asked for (``PQLKIT_EXPECT_BUILD``,
    default ``pure``): compiled modules left in src/ would shadow its sources."""
    import pqlkit

    expected = os.environ.get("PQLKIT_EXPECT_BUILD", "pure")
    if expected not in ("pure", "mypyc"):
        raise pytest.UsageError(f'PQLKIT_EXPECT_BUILD must be "pure" or "mypyc", not {expected!r}')
    got = _build()
    if got != expected:
        raise pytest.UsageError(
            f"expected the {expected} build of pqlkit, but {pqlkit.__file__} is the {got}"
            " build (compiled modules in src/? `find src -name '*.so' -delete`)"
        )


def pytest_report_header(config: pytest.Config) -> str:
    import pqlkit

    return f"pqlkit: the {_build()} build, from {os.path.dirname(pqlkit.__file__ or '')}"


@functools.cache
def _postgres_unreachable() -> str | None:
    """Why the test server cannot be used, or None when it can."""
    try:
        import psycopg
    except ImportError as error:  # pragma: no cover - the dev extra installs it
        return f"psycopg is not installed ({error})"
    try:
        psycopg.connect(POSTGRES_DSN, connect_timeout=3).close()
    except psycopg.Error as error:
        return f"PostgreSQL at PQLKIT_TEST_POSTGRES_DSN is unreachable: {error}"
    return None


def require_postgres() -> str:
    """The test server's DSN; skips the test without one, but fails it under ``CI=true``."""
    reason = _postgres_unreachable()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the postgres tests must run)", pytrace=False)
        pytest.skip(reason)
    return POSTGRES_DSN


def chromium_path() -> str:
    """Debian's chromium (``make test`` installs it: .ci/ensure-chromium); skips the test
    without one, but fails it under ``CI=true``."""
    path = os.environ.get("PQLKIT_TEST_CHROMIUM") or shutil.which("chromium")
    if path is None:
        reason = "chromium is not installed (make browser installs it)"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the browser tests must run)", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(name="browser")
def fixture_browser() -> Iterator[Any]:
    """A headless Chromium driven by Playwright (a ``playwright.sync_api.Browser``).

    One per test, not per session: Playwright's sync API runs an asyncio event loop in
    this thread while it is started, and every later ``asyncio.run()`` (the AsyncClient
    tests) would fail with "cannot be called from a running event loop".
    """
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path, headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


def new_postgres_schema() -> str:
    """A fresh schema name for this session; it is dropped when the session ends."""
    name = f"{POSTGRES_SCHEMA}_{secrets.token_hex(3)}"
    _dropped_at_exit.add(name)
    return name


def drop_postgres_schemas(*names: str) -> None:
    """Drop these schemas (and everything in them) if they exist."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
            _dropped_at_exit.discard(name)


def worker_context() -> multiprocessing.context.BaseContext:
    """Start worker processes fast: forked from a clean server with pqlkit imported.

    A forkserver has no threads (unlike the test process, which a plain fork
    would copy) and imports pqlkit and psycopg once, not once per worker as
    spawn does. Falls back to spawn where there is no forkserver.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pqlkit", "pqlkit.stores.postgres", "psycopg", "psycopg_pool"])
    return context


def with_query(url: str, option: str) -> str:
    """``url`` with ``option`` (``key=value``) added to its query string."""
    return f"{url}{'&' if '?' in url else '?'}{option}"


def _postgres_store(tmp_path: Path, *, through_pgbouncer: bool = False) -> Store:
    """A PostgresStore on this session's schema, emptied first (faster than a new schema).

    ``through_pgbouncer``: connected through this session's PgBouncer in transaction
    pooling mode (tests/pgbouncer.py), configured as docs/deployment.md says
    (``?pgbouncer=true``); the schema is emptied on a direct connection.
    """
    import psycopg
    from psycopg import sql

    from pqlkit.stores.postgres import PostgresStore

    dsn = require_postgres()
    _dropped_at_exit.add(POSTGRES_SCHEMA)
    if through_pgbouncer:
        from pgbouncer import pgbouncer_dsn

        url = with_query(pgbouncer_dsn(), "pgbouncer=true")
        store = PostgresStore(url, schema=POSTGRES_SCHEMA, max_size=4)
    else:
        store = PostgresStore(dsn, schema=POSTGRES_SCHEMA, max_size=4)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        # DELETE, not TRUNCATE: on a handful of rows it is 20 times faster
        for table in _PG_TABLES:
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(POSTGRES_SCHEMA, table)))
        for table, column in _PG_IDENTITIES:
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, %s), 1, false)",
                (sql.Identifier(POSTGRES_SCHEMA, table).as_string(conn), column),
            )
    return store


STORE_FACTORIES: dict[str, Callable[[Path], Store]] = {
    "memory": lambda tmp_path: MemoryStore(),
    "sqlite": lambda tmp_path: SQLiteStore(tmp_path / "pqlkit.db"),
    "postgres": _postgres_store,
    "postgres-pgbouncer": functools.partial(_postgres_store, through_pgbouncer=True),
}
"""Every store the shared suite runs on, by name: add one here to run the suite on it."""

_STORE_MARKS = {
    "postgres": [pytest.mark.postgres],
    "postgres-pgbouncer": [pytest.mark.postgres, pytest.mark.pgbouncer],
}

THROUGH_PGBOUNCER_ONLY_IN_THE_STORE_SUITE = ("postgres-pgbouncer",)
"""Stores only tests/test_store.py runs on (the Store protocol suite); every other test
that takes ``store`` runs on the others. The whole suite through PgBouncer would double
the PostgreSQL tests' time for little: PgBouncer changes how statements reach the server,
which the protocol suite, tests/test_pgbouncer.py and tests/test_concurrency.py cover."""


def store_params(*, through_pgbouncer: bool) -> list[Any]:
    """The ``store`` fixture's parameters, with their marks."""
    return [
        pytest.param(name, marks=_STORE_MARKS.get(name, []))
        for name in STORE_FACTORIES
        if through_pgbouncer or name not in THROUGH_PGBOUNCER_ONLY_IN_THE_STORE_SUITE
    ]


def open_test_store(name: str, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of kind ``name``, closed after the test."""
    store = STORE_FACTORIES[name](tmp_path)
    yield store
    store.close()


@pytest.fixture(name="store", params=store_params(through_pgbouncer=False))
def fixture_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each kind, closed after the test."""
    yield from open_test_store(request.param, tmp_path)


@pytest.fixture(autouse=True)
def _no_pqlkit_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite does not read the PQLKIT_* settings of the shell it runs in (a developer's
    PQLKIT_STORE_URL or PQLKIT_INLINE_BUDGET would change what every Client does); a test of
    them sets them itself."""
    for name in (STORE_URL, *ENVIRONMENT):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(name="clock")
def fixture_clock(pql_clock: FrozenClock) -> FrozenClock:
    """The plugin's FrozenClock, at T0; move it with advance() or set()."""
    return pql_clock


@pytest.fixture(name="make_client")
def fixture_make_client(store: Store, clock: FrozenClock) -> Iterator[ClientFactory]:
    """make_client(model, **options): the plugin's ``pql_client``, on the shared ``store``.

    A Client on ``store`` and ``clock``, ``dispatch="inline"`` unless told
    (``options``: the Client's settings); every client it built is closed after the test.
    """
    with ExitStack() as built:  # closes every client, even if one close() raises

        def make(model: Model, /, **options: Unpack[ClientOptions]) -> Client:
            options.setdefault("dispatch", "inline")
            client = Client(model, store=store, clock=clock, **options)
            built.callback(client.close)
            return client

        yield make


@pytest.fixture(name="postgres_dsn")
def fixture_postgres_dsn() -> str:
    """The test server's DSN (the test is skipped without a server, and fails under CI=true)."""
    return require_postgres()


@pytest.fixture(name="pg_schema")
def fixture_pg_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema name of this test's own, dropped after it."""
    name = new_postgres_schema()
    yield name
    drop_postgres_schemas(name)


@pytest.fixture(autouse=True, scope="session")
def _drop_session_schemas() -> Iterator[None]:
    """Drop every schema this session created, when it ends."""
    yield
    if _dropped_at_exit and _postgres_unreachable() is None:
        drop_postgres_schemas(*sorted(_dropped_at_exit))


@pytest.fixture(autouse=True, scope="session")
def _stop_pgbouncer() -> Iterator[None]:
    """Stop the PgBouncer this session started, if a test started one (tests/pgbouncer.py)."""
    yield
    from pgbouncer import stop_pgbouncer

    stop_pgbouncer()
