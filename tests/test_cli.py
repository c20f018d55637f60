"""The ``pqlkit`` command: --version, export, import; SQLite -> SQLite and SQLite -> Postgres."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import T0
from pqlkit import (
    Client,
    Model,
    Qualification,
    active_users,
    count,
    days,
    did,
    idle,
    points,
    score,
    signal,
    trait,
)
from pqlkit._settings import STORE_URL
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


# -- for operators -----------------------------------------------------------------------------

OPS_PATH = "test_cli:OPS"
OPS = Model(
    "ops-tests",
    signals={"dormant": idle() >= days(14)},
    scores={"logins": count("login"), "events": count()},
    pql=did("dashboard_built") & ~signal("dormant"),
    pqa=active_users() >= 2,
    ranked=["events"],
)
"""The operators' model: PQLs that go dormant after 14 idle days, a PQA at two users; its
event count ranked (for `pqlkit top`)."""


def crm_down(q: Qualification) -> None:
    raise ConnectionError("the CRM is down")


def ops_data(url: str) -> dict[str, Qualification]:
    """On the system clock: old (30 days ago), then jane and raj qualify, which makes acme a PQA;
    the crm callback fails once and for all (max_attempts=1): two dead letters; acme's PQA
    has no callback: pending."""
    now = datetime.now(timezone.utc)
    store = open_store(url)
    try:
        with Client(OPS, store=store, max_attempts=1) as client, pytest.MonkeyPatch.context() as mp:
            mp.setattr("pqlkit._dispatch.logger.disabled", True)
            client.on_pql(crm_down, name="crm")
            old = client.track("old", "dashboard_built", timestamp=now - timedelta(days=30))
            client.track("jane", "login", account_id="acme", timestamp=now - timedelta(minutes=2))
            jane = client.track("jane", "dashboard_built", account_id="acme")
            raj = client.track("raj", "dashboard_built", account_id="acme")
            (pqa,) = [q for q in raj.qualified if q.kind == "pqa"]
            (raj_pql,) = [q for q in raj.qualified if q.kind == "pql"]
            return {
                "old": old.qualified[0],
                "jane": jane.qualified[0],
                "raj": raj_pql,
                "acme": pqa,
            }
    finally:
        store.close()


@pytest.fixture(name="ops")
def fixture_ops(tmp_path: Path) -> tuple[str, dict[str, Qualification]]:
    """An SQLite store URL with OPS's data (see ops_data), and its qualifications by subject."""
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    return url, ops_data(url)


def run(runner: CliRunner, *args: str) -> Any:
    result = runner.invoke(main, list(args))
    assert result.exit_code == 0, result.output + result.stderr
    return result


def run_json(runner: CliRunner, *args: str) -> Any:
    return json.loads(run(runner, *args, "--json").stdout)


def test_stats(runner: CliRunner, ops: tuple[str, dict[str, Qualification]]) -> None:
    """`pqlkit stats` prints the funnel; --json the Stats fields."""
    url, _ = ops
    data = run_json(runner, "stats", "--store", url, "--model", OPS_PATH)
    assert (data["users"], data["accounts"], data["pqls"], data["pqas"]) == (3, 1, 3, 1)
    assert data["pql_rate"] == 1.0
    assert data["pql_rate_healthy"] is False
    lines = run(runner, "stats", "--store", url, "--model", OPS_PATH).stdout.splitlines()
    assert lines[0].split() == ["users", "3"]
    assert lines[4].split(None, 2)[:2] == ["PQL", "rate"]
    assert "100.0% (outside the healthy 5-15%)" in lines[4]
    assert lines[5].startswith("time to PQL, median")


def test_qualifications(runner: CliRunner, ops: tuple[str, dict[str, Qualification]]) -> None:
    """`pqlkit qualifications` lists newest first; --kind, --since 7d and paging filter."""
    url, fired = ops
    base = ["qualifications", "--store", url, "--model", OPS_PATH]
    everything = run_json(runner, *base)
    assert [q["subject_id"] for q in everything][2:] == ["jane", "old"]
    assert {q["subject_id"] for q in everything[:2]} == {"raj", "acme"}
    assert everything[-1] == fired["old"].to_dict()
    assert [q["subject_id"] for q in run_json(runner, *base, "--kind", "pqa")] == ["acme"]
    recent = run_json(runner, *base, "--kind", "pql", "--since", "7d")
    assert [q["subject_id"] for q in recent] == ["raj", "jane"]
    since = fired["jane"].qualified_at.isoformat()
    assert len(run_json(runner, *base, "--since", since)) == 3
    page = run_json(runner, *base, "--limit", "2")
    rest = run_json(runner, *base, "--limit", "2", "--before", page[-1]["id"])
    assert page + rest == everything
    assert run_json(runner, *base, "--kind", "play") == []  # the model declares no plays
    unknown = runner.invoke(main, [*base, "--play", "upgrade_nudge"])
    assert unknown.exit_code != 0
    assert "play: unknown play 'upgrade_nudge'" in unknown.stderr

    table = run(runner, *base, "--limit", "3")
    header, rule, *rows = table.stdout.splitlines()
    assert header.split()[:5] == ["qualified", "at", "(UTC)", "kind", "subject"]
    assert set(rule) <= {"-", " "}
    assert [row.split()[3] for row in rows][2] == "jane"
    assert f"(more: --before {everything[2]['id']})" in table.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last week"], "expected a duration back from now"),
        (["--since", "2026-01-05T09:00:00"], "expected a duration back from now"),
        (["--limit", "0"], "--limit"),
        (["--kind", "lead"], "--kind"),
    ],
)
def test_qualifications_bad_options(
    runner: CliRunner, ops: tuple[str, dict[str, Qualification]], args: list[str], message: str
) -> None:
    """A bad option is a usage error (exit 2) naming it."""
    url, _ = ops
    result = runner.invoke(main, ["qualifications", "--store", url, "--model", OPS_PATH, *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_qualifications_before_an_unknown_id(
    runner: CliRunner, ops: tuple[str, dict[str, Qualification]]
) -> None:
    """--before with an id no qualification has is an error naming it."""
    url, _ = ops
    args = ["qualifications", "--store", url, "--model", OPS_PATH, "--before", "nope"]
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert "before: no qualification of this model has the id 'nope'" in result.stderr


def test_explain(runner: CliRunner, ops: tuple[str, dict[str, Qualification]]) -> None:
    """`pqlkit explain USER [--of account]` prints the explanation lines and the status."""
    url, fired = ops
    base = ["--store", url, "--model", OPS_PATH]
    out = run(runner, "explain", "jane", *base).stdout.splitlines()
    when = fired["jane"].qualified_at.strftime("%Y-%m-%d %H:%M")
    assert out[0] == f"jane (user): qualified as a PQL at {when} UTC"
    assert any(line.strip().startswith("logins") for line in out[1:])
    data = run_json(runner, "explain", "acme", *base, "--of", "account")
    assert data["scores"] == {"logins": 1.0, "events": 3.0}
    assert data["qualified_at"] == fired["acme"].qualified_at.isoformat()
    assert any(line.startswith("logins") for line in data["explanation"])
    nobody = run(runner, "explain", "nobody", *base).stdout.splitlines()
    assert nobody[0] == "nobody (user): not a PQL yet"
    bad = runner.invoke(main, ["explain", " ", *base])
    assert bad.exit_code == 2
    assert "SUBJECT" in bad.stderr


def test_top(runner: CliRunner, ops: tuple[str, dict[str, Qualification]]) -> None:
    """`pqlkit top SCORE -n N [--of account]` ranks by a ranked score's current value."""
    url, _ = ops
    base = ["--store", url, "--model", OPS_PATH]
    users = run_json(runner, "top", "events", *base)
    assert users[0] == {"subject_id": "jane", "events": 2.0}  # a login and a dashboard
    assert sorted(u["subject_id"] for u in users[1:]) == ["old", "raj"]
    assert {u["events"] for u in users[1:]} == {1.0}
    assert run_json(runner, "top", "events", *base, "-n", "1") == users[:1]
    assert run_json(runner, "top", "events", *base, "--of", "account") == [
        {"subject_id": "acme", "events": 3.0}
    ]
    header, _rule, *rows = run(runner, "top", "events", *base, "-n", "1").stdout.splitlines()
    assert header.split() == ["#", "user", "events"]
    assert rows == ["1  jane  2"]
    unranked = runner.invoke(main, ["top", "logins", *base])
    assert unranked.exit_code == 2
    assert "is not ranked" in unranked.stderr
    assert "SCORE" in unranked.stderr


def test_pending_and_dead_letters(
    runner: CliRunner, ops: tuple[str, dict[str, Qualification]]
) -> None:
    """`pqlkit pending` lists what is not delivered yet; --dead the dead letters."""
    url, fired = ops
    base = ["--store", url, "--model", OPS_PATH]
    pending = run_json(runner, "pending", *base)
    assert [(d["callback"], d["qualification"]["id"]) for d in pending] == [
        (None, fired["acme"].id)
    ]
    dead = run_json(runner, "pending", *base, "--dead")
    assert sorted(d["qualification"]["subject_id"] for d in dead) == ["jane", "old", "raj"]
    assert {(d["callback"], d["attempts"]) for d in dead} == {("crm", 1)}
    assert "the CRM is down" in dead[0]["last_error"]
    assert run_json(runner, "pending", *base, "--dead", "--callback", "other") == []
    table = run(runner, "pending", *base, "--dead").stdout.splitlines()
    assert table[0].split()[:5] == ["qualified", "at", "(UTC)", "kind", "subject"]
    assert len(table) == 2 + 3
    assert all("crm" in row and "ConnectionError" in row for row in table[2:])
    assert "(no callback yet)" in run(runner, "pending", *base).stdout


def test_retry_makes_dead_letters_pending(
    runner: CliRunner, ops: tuple[str, dict[str, Qualification]]
) -> None:
    """`pqlkit retry` revives the dead letters; the app's next flush delivers them."""
    url, _ = ops
    base = ["--store", url, "--model", OPS_PATH]
    assert run_json(runner, "retry", *base, "--callback", "other") == {"retried": 0}
    out = run(runner, "retry", *base).stdout
    assert out.strip() == "3 dead deliveries are pending again"
    assert run_json(runner, "pending", *base, "--dead") == []
    assert len(run_json(runner, "pending", *base, "--callback", "crm")) == 3
    delivered: list[str] = []
    with Client(OPS, store=url) as app:  # the app, its callback fixed
        app.on_pql(lambda q: delivered.append(q.subject_id), name="crm")
        app.flush()
    assert sorted(delivered) == ["jane", "old", "raj"]


def test_sweep(runner: CliRunner, ops: tuple[str, dict[str, Qualification]]) -> None:
    """`pqlkit sweep --now` fires what time made due; the app's callbacks get it later."""
    url, _ = ops
    base = ["--store", url, "--model", OPS_PATH]
    later = (datetime.now(timezone.utc) + timedelta(days=15)).isoformat()
    data = run_json(runner, "sweep", *base, "--now", later)
    # idle 14 days by then: all three PQLs (old's has been idle for 30 days already)
    assert sorted(q["subject_id"] for q in data["fired"]) == ["jane", "old", "raj"]
    assert all(q["disqualified_at"] for q in data["fired"])
    assert data["pending"] >= 3
    again = run(runner, "sweep", *base, "--now", later)
    assert again.stdout.splitlines() == [
        f"swept: 0 fired; {data['pending']} waiting for your app's callbacks"
    ]
    naive = runner.invoke(main, ["sweep", *base, "--now", "2026-12-06T09:00:00"])
    assert naive.exit_code == 2
    assert "--now" in naive.stderr


def test_sweep_table(runner: CliRunner, tmp_path: Path) -> None:
    """Without --json, sweep prints a line per disqualification."""
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    ops_data(url)
    later = (datetime.now(timezone.utc) + timedelta(days=15)).isoformat()
    out = run(runner, "sweep", "--store", url, "--model", OPS_PATH, "--now", later).stdout
    header, _, *rows = out.splitlines()
    assert header.split() == ["what", "subject", "account", "at", "(UTC)"]
    assert sorted(row.split()[1] for row in rows[:3]) == ["jane", "old", "raj"]
    assert rows[-1].startswith("swept: 3 fired;")


OPS_RETUNED = Model("ops-tests", pql=did("dashboard_built"))
"""The same name as OPS, another version: its fingerprint differs."""


@pytest.mark.parametrize(
    ("model", "code", "message"),
    [
        ("no_such_module_xyz:model", 2, "cannot load 'no_such_module_xyz:model'"),
        ("test_cli:OPS_RETUNED", 1, "built by another version of the model"),
        ("test_cli:MODEL", 1, "holds no state of the model 'cli-tests'"),
    ],
)
@pytest.mark.parametrize("command", ["stats", "qualifications", "pending", "retry", "sweep"])
def test_operator_commands_check_the_model(
    runner: CliRunner,
    ops: tuple[str, dict[str, Qualification]],
    command: str,
    model: str,
    code: int,
    message: str,
) -> None:
    """A model that does not import, or is not the one the state was built with, is refused,
    and the store's state is left as it was (no rebuild)."""
    url, _ = ops
    result = runner.invoke(main, [command, "--store", url, "--model", model])
    assert result.exit_code == code
    assert message in result.stderr
    with SQLiteStore(url.removeprefix("sqlite:///")) as store, store.transaction() as tx:
        assert tx.get_meta("model:ops-tests:fingerprint") == OPS.fingerprint


def test_store_url_from_the_environment(
    runner: CliRunner, ops: tuple[str, dict[str, Qualification]]
) -> None:
    """--store may come from PQLKIT_STORE_URL."""
    url, _ = ops
    result = runner.invoke(main, ["stats", "--model", OPS_PATH, "--json"], env={STORE_URL: url})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["pqls"] == 3


@pytest.mark.postgres
def test_operator_commands_on_postgres(
    runner: CliRunner, postgres_dsn: str, pg_schema: str
) -> None:
    """The operator commands read a PostgresStore the same way."""
    url = f"{postgres_dsn}?schema={pg_schema}"
    fired = ops_data(url)
    base = ["--store", url, "--model", OPS_PATH]
    assert run_json(runner, "stats", *base)["pqls"] == 3
    listed = run_json(runner, "qualifications", *base, "--since", "7d")
    assert {q["subject_id"] for q in listed} == {"jane", "raj", "acme"}
    page = run_json(runner, "qualifications", *base, "--limit", "2")
    rest = run_json(runner, "qualifications", *base, "--before", page[-1]["id"])
    assert [q["id"] for q in page + rest] == [
        q["id"] for q in run_json(runner, "qualifications", *base)
    ]
    assert rest[-1]["id"] == fired["old"].id
    assert len(run_json(runner, "pending", *base, "--dead")) == 3
    assert run_json(runner, "retry", *base) == {"retried": 3}
    assert run(runner, "explain", "jane", *base).stdout.startswith("jane (user): qualified")


def test_tables_say_when_there_is_nothing(runner: CliRunner, tmp_path: Path) -> None:
    """An empty page, nothing pending and no dead letters are said so (on stderr)."""
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with Client(OPS, store=url) as client:
        client.track("quiet", "login")
    base = ["--store", url, "--model", OPS_PATH]
    assert run(runner, "qualifications", *base).stderr.strip() == "no qualifications"
    assert run(runner, "pending", *base).stderr.strip() == "nothing pending"
    assert run(runner, "pending", *base, "--dead").stderr.strip() == "no dead letters"
    assert run(runner, "retry", *base).stdout.strip() == "0 dead deliveries are pending again"
    stats = run(runner, "stats", *base).stdout
    assert "time to PQL, median  -" in stats


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(5, "5s"), (125, "2m"), (3 * 3600 + 60, "3h 1m"), (2 * 86400 + 7200, "2d 2h")],
)
def test_durations_read_as_people_write_them(seconds: int, shown: str) -> None:
    """Durations in tables: the two largest units."""
    from pqlkit.cli import _duration

    assert _duration(timedelta(seconds=seconds)) == shown


def test_forget_dry_run_counts_and_changes_nothing(
    runner: CliRunner, ops: tuple[str, dict[str, Qualification]]
) -> None:
    """`pqlkit forget USER --dry-run` prints the rows it would delete per table, and
    deletes none; without it the user is gone (and with --suppress, dropped later)."""
    url, _ = ops
    base = ("--store", url, "--model", OPS_PATH)
    data = run_json(runner, "forget", "jane", "--dry-run", *base)
    rows = data["rows"]
    assert data["dry_run"] is True
    assert (rows["events"], rows["states"], rows["qualifications"], rows["deliveries"]) == (
        2,
        1,
        1,
        1,
    )
    assert rows["accounts to rebuild"] == 1
    assert rows["account payloads to redact"] == 1
    out = run(runner, "forget", "jane", "--dry-run", *base).stdout
    assert "dry run: nothing deleted" in out
    assert run_json(runner, "forget", "jane", "--dry-run", *base)["rows"] == rows
    out = run(runner, "forget", "jane", "--suppress", *base).stdout
    assert "forgotten: 'jane' (and suppressed)" in out
    after = run_json(runner, "forget", "jane", "--dry-run", *base)["rows"]
    assert after["events"] == after["states"] == after["qualifications"] == 0
    store = open_store(url)
    try:
        with Client(OPS, store=store) as client:
            assert client.track("jane", "login").suppressed is True
            assert client.stats().suppressed == 1
    finally:
        store.close()
