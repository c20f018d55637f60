"""Configuration from the environment: PQLKIT_STORE_URL and the PQLKIT_* settings.

``Client()`` (and ``AsyncClient``, ``pqlkit.configure()``, the ``pqlkit`` command) read
them when the code does not say; what the code says wins; a malformed value is a
ValidationError naming the variable. (tests/conftest.py clears them for every other test.)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import pqlkit
from pqlkit import (
    AsyncClient,
    Client,
    MemoryStore,
    Model,
    PostgresStore,
    Settings,
    SQLiteStore,
    ValidationError,
    did,
)
from pqlkit._settings import ENVIRONMENT, parse_duration
from pqlkit.cli import main
from pqlkit.testing import ClientFactory

MODEL = Model("env", pql=did("dashboard_built"))


def stored_events(store: pqlkit.Store) -> list[tuple[str, str]]:
    with store.transaction() as tx:
        return [(e.user_id, e.event) for e in tx.events()]


def with_schema(dsn: str, schema: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"


# -- PQLKIT_STORE_URL ---------------------------------------------------------------------


def test_a_client_with_no_store_opens_the_url_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``Client(model)`` with ``PQLKIT_STORE_URL=sqlite:///...`` records into that file, not
    into ``pqlkit.db`` in the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PQLKIT_STORE_URL", f"sqlite:///{tmp_path / 'from-env.db'}")
    with Client(MODEL) as client:
        assert isinstance(client.store, SQLiteStore)
        assert client.track("u1", "dashboard_built").qualified
    assert not (tmp_path / "pqlkit.db").exists()
    with SQLiteStore(tmp_path / "from-env.db") as store:
        assert stored_events(store) == [("u1", "dashboard_built")]


@pytest.mark.postgres
def test_a_postgresql_url_in_the_environment_stores_in_postgres(
    monkeypatch: pytest.MonkeyPatch, postgres_dsn: str, pg_schema: str
) -> None:
    """``PQLKIT_STORE_URL=postgresql://...?schema=...``: a PostgresStore on that schema."""
    monkeypatch.setenv("PQLKIT_STORE_URL", with_schema(postgres_dsn, pg_schema))
    with Client(MODEL) as client:
        assert isinstance(client.store, PostgresStore)
        client.track("u1", "dashboard_built")
    with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        assert stored_events(store) == [("u1", "dashboard_built")]


@pytest.mark.postgres
def test_an_app_run_with_the_variable_set_records_in_postgres(
    tmp_path: Path, postgres_dsn: str, pg_schema: str
) -> None:
    """``PQLKIT_STORE_URL=postgresql://... python app.py`` just works: an app that builds its
    client with no store (here through ``pqlkit.configure()``) records in PostgreSQL, and
    writes no SQLite file where it runs."""
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            import pqlkit
            from pqlkit import Model, did

            client = pqlkit.configure(Model("app", pql=did("dashboard_built")))
            result = pqlkit.track("u1", "dashboard_built")
            print(type(client.store).__name__, len(result.qualified))
            client.close()
            """
        )
    )
    env = {**os.environ, "PQLKIT_STORE_URL": with_schema(postgres_dsn, pg_schema)}
    run = subprocess.run(
        [sys.executable, str(app)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["PostgresStore", "1"]
    assert not (tmp_path / "pqlkit.db").exists()
    with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        assert stored_events(store) == [("u1", "dashboard_built")]
        with store.transaction() as tx:
            assert [q.subject_id for q in tx.qualifications(model="app")] == ["u1"]


def test_an_explicit_store_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``store=`` given: the variable is not read (not even opened)."""
    monkeypatch.setenv("PQLKIT_STORE_URL", f"sqlite:///{tmp_path / 'from-env.db'}")
    with Client(MODEL, store="memory://") as client:
        assert isinstance(client.store, MemoryStore)
    mine = MemoryStore()
    with Client(MODEL, store=mine) as client:
        assert client.store is mine
    mine.close()
    assert not (tmp_path / "from-env.db").exists()


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_variable_counts_as_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    """``PQLKIT_STORE_URL=`` (as a compose file leaves it): the default SQLite file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PQLKIT_STORE_URL", value)
    with Client(MODEL) as client:
        assert isinstance(client.store, SQLiteStore)
        assert Path(client.store.path) == tmp_path / "pqlkit.db"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("mysql://app:s3cret@db/app", "unknown store URL scheme 'mysql'"),
        ("pqlkit.db", "not a store URL"),
        ("sqlite://relative.db", "an sqlite URL has no host"),
        ("postgresql://app:s3cret@db/app?schema=no-dash", "not a plain identifier"),
    ],
)
def test_a_malformed_url_is_an_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    """A bad URL: ValidationError whose field is ``PQLKIT_STORE_URL``; the message never
    repeats the URL (it may hold a password)."""
    monkeypatch.setenv("PQLKIT_STORE_URL", url)
    with pytest.raises(ValidationError) as caught:
        Client(MODEL)
    assert caught.value.field == "PQLKIT_STORE_URL"
    assert reason in caught.value.reason
    assert str(caught.value).startswith("PQLKIT_STORE_URL: ")
    assert "s3cret" not in str(caught.value)


def test_async_client_and_configure_read_the_variable_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``AsyncClient(model)`` and ``pqlkit.configure(model)`` open the same store."""
    monkeypatch.setenv("PQLKIT_STORE_URL", f"sqlite:///{tmp_path / 'from-env.db'}")

    async def track() -> None:
        async with AsyncClient(MODEL) as client:
            assert isinstance(client.store, SQLiteStore)
            await client.track("async-user", "login")

    asyncio.run(track())
    previous = pqlkit._default.swap(None)
    try:
        client = pqlkit.configure(MODEL)
        pqlkit.track("default-user", "login")
        client.close()
    finally:
        pqlkit._default.swap(previous)
    with SQLiteStore(tmp_path / "from-env.db") as store:
        assert stored_events(store) == [("async-user", "login"), ("default-user", "login")]


# -- the PQLKIT_* settings ------------------------------------------------------------------


def test_the_documented_variables_are_these() -> None:
    """The set is small and each maps to a Settings field (docs/deployment.md lists them)."""
    fields = {f.name for f in Settings.__attrs_attrs__}
    assert {v: name for v, (name, _) in ENVIRONMENT.items()} == {
        "PQLKIT_DISPATCH": "dispatch",
        "PQLKIT_INLINE_BUDGET": "inline_budget",
        "PQLKIT_DELIVERY_WINDOW": "delivery_window",
        "PQLKIT_MAX_ATTEMPTS": "max_attempts",
        "PQLKIT_RETENTION": "retention",
    }
    assert {name for name, _ in ENVIRONMENT.values()} <= fields
    docs = (Path(__file__).resolve().parent.parent / "docs" / "deployment.md").read_text()
    for variable in (*ENVIRONMENT, "PQLKIT_STORE_URL"):
        assert f"`{variable}`" in docs


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each variable sets its setting of a Client given no ``settings=``."""
    monkeypatch.setenv("PQLKIT_DISPATCH", "Background")
    monkeypatch.setenv("PQLKIT_INLINE_BUDGET", "250ms")
    monkeypatch.setenv("PQLKIT_DELIVERY_WINDOW", "3d")
    monkeypatch.setenv("PQLKIT_MAX_ATTEMPTS", " 4 ")
    with Client(MODEL, store="memory://") as client:
        s = client.settings
        assert (s.dispatch, s.inline_budget, s.delivery_window, s.max_attempts) == (
            "background",
            timedelta(milliseconds=250),
            timedelta(days=3),
            4,
        )
        assert s.retry_base == Settings().retry_base  # the rest: the defaults


def test_a_background_dispatch_from_the_environment_delivers_on_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PQLKIT_DISPATCH=background does what ``dispatch="background"`` does: the callback runs
    on the worker thread, not inside ``track()``."""
    import threading

    monkeypatch.setenv("PQLKIT_DISPATCH", "background")
    threads: list[str] = []
    with Client(MODEL, store="memory://") as client:
        client.on_pql(lambda q: threads.append(threading.current_thread().name), name="t")
        client.track("u1", "dashboard_built")
        client.flush(timeout=10)
    assert len(threads) == 1
    assert threads[0] != threading.current_thread().name


def test_keywords_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A keyword overrides its variable; the other variables still apply."""
    monkeypatch.setenv("PQLKIT_DISPATCH", "background")
    monkeypatch.setenv("PQLKIT_MAX_ATTEMPTS", "4")
    with Client(MODEL, store="memory://", dispatch="inline") as client:
        assert (client.settings.dispatch, client.settings.max_attempts) == ("inline", 4)


def test_a_settings_object_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """``settings=`` given: the environment is not read for settings (a Settings is whole:
    its defaults cannot be told from values chosen), and keywords still override it."""
    monkeypatch.setenv("PQLKIT_DISPATCH", "background")
    monkeypatch.setenv("PQLKIT_MAX_ATTEMPTS", "not a number")  # not even parsed
    chosen = Settings(max_attempts=3)
    with Client(MODEL, store="memory://", settings=chosen) as client:
        assert client.settings == chosen
    with Client(MODEL, store="memory://", settings=chosen, inline_budget=timedelta(0)) as client:
        assert client.settings == Settings(max_attempts=3, inline_budget=timedelta(0))


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("PQLKIT_DISPATCH", "sometimes", 'expected "inline" or "background"'),
        ("PQLKIT_INLINE_BUDGET", "soon", "expected a duration"),
        ("PQLKIT_INLINE_BUDGET", "-1s", "expected a duration"),
        ("PQLKIT_INLINE_BUDGET", "1 week", "expected a duration"),
        ("PQLKIT_DELIVERY_WINDOW", "0", "must be a positive timedelta"),
        ("PQLKIT_DELIVERY_WINDOW", "9" * 30 + "d", "too long"),
        ("PQLKIT_MAX_ATTEMPTS", "3.5", "expected a whole number"),
        ("PQLKIT_MAX_ATTEMPTS", "0", "must be an int >= 1"),
    ],
)
def test_a_malformed_setting_is_an_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    """An unparseable or out-of-range value: ValidationError whose field is the variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Client(MODEL, store="memory://")
    assert caught.value.field == variable
    assert reason in caught.value.reason


def test_a_malformed_variable_is_reported_even_when_a_keyword_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken deployment setting is not hidden by the code that happens to override it."""
    monkeypatch.setenv("PQLKIT_DISPATCH", "sometimes")
    with pytest.raises(ValidationError, match="PQLKIT_DISPATCH"):
        Client(MODEL, store="memory://", dispatch="inline")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("30s", timedelta(seconds=30)),
        ("1.5", timedelta(seconds=1.5)),
        ("0", timedelta(0)),
        ("10m", timedelta(minutes=10)),
        (" 2H ", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("0.5d", timedelta(hours=12)),
        (".5s", timedelta(milliseconds=500)),
    ],
)
def test_durations_read_with_a_unit_or_as_seconds(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_the_testing_kit_does_not_read_the_environment(
    monkeypatch: pytest.MonkeyPatch, pql_client: ClientFactory
) -> None:
    """``pql_client`` builds clients on the defaults: a developer's PQLKIT_INLINE_BUDGET=0
    would otherwise leave every inline delivery of their tests pending."""
    monkeypatch.setenv("PQLKIT_INLINE_BUDGET", "0")
    monkeypatch.setenv("PQLKIT_MAX_ATTEMPTS", "oops")
    client = pql_client(MODEL)
    assert client.settings == Settings()


# -- the pqlkit command ------------------------------------------------------------------------


def test_the_command_reads_the_store_from_the_environment(tmp_path: Path) -> None:
    """``pqlkit export`` without ``--store`` exports the store PQLKIT_STORE_URL names."""
    url = f"sqlite:///{tmp_path / 'from-env.db'}"
    with Client(MODEL, store=url) as client:
        client.track("u1", "dashboard_built", message_id="m1")
    result = CliRunner().invoke(main, ["export"], env={"PQLKIT_STORE_URL": url})
    assert result.exit_code == 0, result.output
    assert '"message_id":"m1"' in result.stdout


def test_the_store_option_wins_over_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chosen.db'}"
    with Client(MODEL, store=url) as client:
        client.track("u1", "dashboard_built", message_id="chosen")
    result = CliRunner().invoke(
        main, ["export", "--store", url], env={"PQLKIT_STORE_URL": "mysql://elsewhere"}
    )
    assert result.exit_code == 0, result.output
    assert '"message_id":"chosen"' in result.stdout


def test_the_command_names_the_variable_of_a_malformed_url() -> None:
    """A bad URL from the environment is an error naming PQLKIT_STORE_URL (from the
    option, naming --store), never repeating the URL."""
    runner = CliRunner()
    result = runner.invoke(main, ["export"], env={"PQLKIT_STORE_URL": "mysql://u:s3cret@db"})
    assert result.exit_code == 1
    assert "PQLKIT_STORE_URL: unknown store URL scheme 'mysql'" in result.stderr
    assert "s3cret" not in result.output
    result = runner.invoke(main, ["export", "--store", "mysql://u:s3cret@db"])
    assert result.exit_code == 1
    assert "--store: unknown store URL scheme 'mysql'" in result.stderr


def test_the_command_without_store_or_variable_says_both() -> None:
    """Neither given: click's usage error, whose help names the variable."""
    runner = CliRunner()
    result = runner.invoke(main, ["export"])
    assert result.exit_code == 2
    assert "Missing option '--store'" in result.stderr
    help_text = runner.invoke(main, ["import", "--help"]).output
    assert "PQLKIT_STORE_URL" in help_text
