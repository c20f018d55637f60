"""The ``pqlkit`` command: --version, export, import; SQLite -> SQLite and SQLite -> Postgres."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import T0
from pqlkit import Client, Model, count, did, points, score, trait
from pqlkit.cli import main
from pqlkit.stores import SQLiteStore, Store, open_store
from pqlkit.testing import FrozenClock

MODEL_PATH = "test_cli:MODEL"
MODEL = Model(
    "cli-tests",
    signals={"activated": did("dashboard_built"), "admin": trait("role") == "admin"},
    scores={"logins": count("login"), "behavior": points(activated=40, admin=20)},
    pql=score("behavior") >= 50,
    pqa=count("login") >= 3,
)


@pytest.fixture(name="runner")
def fixture_runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(name="source")
def fixture_source(tmp_path: Path) -> str:
    """An SQLite store URL holding events, traits, an alias, a PQL delivered and one pending."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    store = open_store(url)
    delivered: list[str] = []
    with Client(MODEL, store=store, clock=FrozenClock(T0)) as client:
        client.identify("jane", {"role": "admin", "name": "Jané"}, account_id="acme")
        client.group("acme", {"employees": 600})
        client.track("anon-1", "page_viewed", {"path": "/pricing"}, timestamp=T0)
        client.alias("anon-1", "jane")
        client.on_pql(lambda q: delivered.append(q.subject_id))
        client.track("jane", "dashboard_built", account_id="acme", timestamp=T0, message_id="j1")
        for i in range(3):
            client.track("bob", "login", account_id="acme", timestamp=T0 + timedelta(hours=i))
    assert delivered == ["jane"]  # the PQA of acme stays pending: no on_pqa callback
    store.close()
    return url


def snapshot(store: Store) -> dict[str, Any]:
    """What a migration must carry over."""
    with store.transaction() as tx:
        events = [(e.message_id, e.user_id, e.event, e.properties, e.account_id, e.timestamp)
                  for e in tx.events()]  # fmt: skip
        return {
            "events": events,
            "jane": tx.traits("user", "jane"),
            "acme": tx.traits("account", "acme"),
            "aliases": tx.aliases_of("jane"),
            "qualifications": [
                (q.id, q.kind, q.subject_id, q.qualified_at) for q in tx.qualifications(MODEL.name)
            ],
            "pending": [d.id for d in tx.deliveries("pending")],
            "delivered": [d.id for d in tx.deliveries("delivered")],
        }


def scores(url: str) -> dict[str, dict[str, float]]:
    store = open_store(url)
    try:
        with Client(MODEL, store=store, clock=FrozenClock(T0)) as client:
            return {
                "jane": client.scores("jane"),
                "anon-1": client.scores("anon-1"),
                "bob": client.scores("bob"),
                "acme": client.scores("acme", of="account"),
            }
    finally:
        store.close()


def export(runner: CliRunner, url: str, path: Path) -> list[dict[str, Any]]:
    result = runner.invoke(main, ["export", "--store", url, "-o", str(path)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in path.read_text().splitlines()]


def do_import(runner: CliRunner, url: str, path: Path) -> str:
    result = runner.invoke(main, ["import", "--store", url, "--model", MODEL_PATH, str(path)])
    assert result.exit_code == 0, result.output
    return result.stderr


def test_version(runner: CliRunner) -> None:
    """``pqlkit --version`` prints the installed version and which build runs."""
    from importlib.metadata import version

    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    # the build this run tests (tests/conftest.py checks that it is the one imported)
    compiled = os.environ.get("PQLKIT_EXPECT_BUILD") == "mypyc"
    build = "compiled with mypyc" if compiled else "pure Python"
    assert result.output.strip() == f"pqlkit {version('pqlkit')} ({build})"


def test_export_writes_every_kind_of_record(runner: CliRunner, source: str, tmp_path: Path) -> None:
    """The export holds events in arrival order, traits, the alias, qualifications, deliveries."""
    lines = export(runner, source, tmp_path / "out.jsonl")
    kinds = [line["type"] for line in lines]
    assert kinds[:5] == ["event"] * 5
    assert sorted(set(kinds)) == ["alias", "delivery", "event", "qualification", "traits"]
    first = lines[0]
    assert first == {
        "type": "event",
        "message_id": first["message_id"],
        "user_id": "anon-1",
        "event": "page_viewed",
        "properties": {"path": "/pricing"},
        "account_id": None,
        "timestamp": "2026-01-05T09:00:00+00:00",
    }
    assert {"type": "alias", "previous_id": "anon-1", "user_id": "jane"} in lines
    assert {line["subject_id"] for line in lines if line["type"] == "qualification"} == {
        "jane",
        "acme",
    }
    assert {line["status"] for line in lines if line["type"] == "delivery"} == {
        "delivered",
        "pending",
    }


def test_export_to_standard_output(runner: CliRunner, source: str) -> None:
    """Without -o the JSON Lines go to stdout and the summary to stderr."""
    result = runner.invoke(main, ["export", "--store", source])
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sum(1 for line in lines if line["type"] == "event") == 5
    assert "exported 5 events" in result.stderr


def test_sqlite_to_sqlite_round_trip(runner: CliRunner, source: str, tmp_path: Path) -> None:
    """Export then import into a new SQLite file: the same data, scores, and nothing re-fires."""
    target = f"sqlite:///{tmp_path / 'target.db'}"
    path = tmp_path / "dump.jsonl"
    export(runner, source, path)
    message = do_import(runner, target, path)
    assert "imported 5 events" in message
    with SQLiteStore(tmp_path / "source.db") as a, SQLiteStore(tmp_path / "target.db") as b:
        assert snapshot(b) == snapshot(a)
    assert scores(target) == scores(source)


def test_importing_twice_stores_nothing_new(runner: CliRunner, source: str, tmp_path: Path) -> None:
    """A second import of the same file adds nothing and does not rebuild."""
    target = f"sqlite:///{tmp_path / 'target.db'}"
    path = tmp_path / "dump.jsonl"
    export(runner, source, path)
    do_import(runner, target, path)
    with SQLiteStore(tmp_path / "target.db") as store:
        before = snapshot(store)
    message = do_import(runner, target, path)
    assert "imported 0 events, 0 traits, 0 aliases, 0 qualifications, 0 deliveries" in message
    with SQLiteStore(tmp_path / "target.db") as store:
        assert snapshot(store) == before


def test_import_plain_events_without_message_ids(runner: CliRunner, tmp_path: Path) -> None:
    """Hand-written event lines (track()'s names) import; a re-import does not duplicate them."""
    path = tmp_path / "events.jsonl"
    lines = [
        {"user_id": "u1", "event": "dashboard_built", "timestamp": "2026-01-05T09:00:00+00:00"},
        {"user_id": "u1", "event": "login", "account_id": "acme"},
        {"user_id": "u1", "event": "login", "account_id": "acme"},  # the same, twice: both count
        {"user_id": "u2", "event": "login", "account_id": "acme"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    target = f"sqlite:///{tmp_path / 'target.db'}"
    assert "imported 4 events" in do_import(runner, target, path)
    assert "imported 0 events" in do_import(runner, target, path)
    assert scores(target)["acme"]["logins"] == 3
    with SQLiteStore(tmp_path / "target.db") as store, store.transaction() as tx:
        assert [e.event for e in tx.events()] == ["dashboard_built", "login", "login", "login"]
        (pqa,) = list(tx.qualifications(MODEL.name))  # the rebuild fired acme's PQA
        assert (pqa.kind, pqa.subject_id) == ("pqa", "acme")
        assert [d.id for d in tx.deliveries("pending")] == [pqa.id]


def test_import_reports_a_bad_line_by_number(runner: CliRunner, tmp_path: Path) -> None:
    """An invalid event fails the import with its line number and the field at fault."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"user_id": "u1", "event": "login"}\n{"user_id": "", "event": "login"}\n')
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = runner.invoke(main, ["import", "--store", target, "--model", MODEL_PATH, str(path)])
    assert result.exit_code == 1
    assert "line 2: user_id" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json\n", "line 1: not JSON"),
        ("[1, 2]\n", "line 1: not a JSON object"),
        ('{"type": "mystery"}\n', "line 1: unknown type 'mystery'"),
        ('{"type": "traits", "kind": "team", "subject_id": "t", "traits": {}}\n', "line 1: kind"),
        ('{"user_id": "u1", "event": "x", "timestamp": "yesterday"}\n', "line 1: bad event"),
    ],
)
def test_import_rejects_malformed_lines(
    runner: CliRunner, tmp_path: Path, content: str, message: str
) -> None:
    """Lines that are not records of a known type fail the import, naming the line."""
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = runner.invoke(main, ["import", "--store", target, "--model", MODEL_PATH, str(path)])
    assert result.exit_code == 1
    assert message in result.stderr


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("no_colon", "expected module:attribute"),
        ("no_such_module_xyz:model", "cannot load"),
        ("test_cli:NOPE", "cannot load"),
        ("test_cli:T0", "not a pqlkit.Model"),
    ],
)
def test_import_needs_a_model(runner: CliRunner, tmp_path: Path, model: str, message: str) -> None:
    """--model must name a pqlkit.Model as module:attribute."""
    path = tmp_path / "events.jsonl"
    path.write_text('{"user_id": "u1", "event": "login"}\n')
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = runner.invoke(main, ["import", "--store", target, "--model", model, str(path)])
    assert result.exit_code == 2
    assert message in result.stderr


def test_bad_store_url(runner: CliRunner) -> None:
    """An unknown store URL is a usage error naming the problem, not a traceback."""
    result = runner.invoke(main, ["export", "--store", "mysql://localhost/db"])
    assert result.exit_code == 1
    assert "unknown store URL scheme" in result.stderr


@pytest.mark.postgres
def test_sqlite_to_postgres_round_trip(
    runner: CliRunner, source: str, tmp_path: Path, postgres_dsn: str, pg_schema: str
) -> None:
    """Migrate SQLite -> Postgres: same events, traits, aliases, records, outbox and scores."""
    target = f"{postgres_dsn}?schema={pg_schema}"
    path = tmp_path / "dump.jsonl"
    export(runner, source, path)
    assert "imported 5 events" in do_import(runner, target, path)
    assert "imported 0 events" in do_import(runner, target, path)
    pg = open_store(target)
    try:
        with SQLiteStore(tmp_path / "source.db") as sqlite:
            assert snapshot(pg) == snapshot(sqlite)
    finally:
        pg.close()
    assert scores(target) == scores(source)
    # and back: a Postgres export reads the same as the SQLite one
    again = export(runner, target, tmp_path / "again.jsonl")
    assert again == export(runner, source, tmp_path / "first.jsonl")
