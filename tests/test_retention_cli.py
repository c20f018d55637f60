"""`pqlkit prune` and `pqlkit vacuum`."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pqlkit import Client, Model, SQLiteStore, count
from pqlkit.cli import main

MODEL = Model("cli-retention", scores={"logins": count("login")})
MODEL_PATH = "test_retention_cli:MODEL"
NOW = datetime.now(timezone.utc)


@pytest.fixture(name="url")
def fixture_url(tmp_path: Path) -> str:
    """An SQLite store with 300 events of 500 days ago and 2 of now."""
    url = f"sqlite:///{tmp_path / 'ret.db'}"
    old = NOW - timedelta(days=500)
    with Client(MODEL, store=url) as client:
        client.track_many(
            [
                {"user_id": f"u{i % 10}", "event": "login", "timestamp": old, "account_id": None}
                for i in range(300)
            ]
        )
        client.track("u1", "login")
        client.track("u2", "login")
    return url


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output + result.stderr
    return result


def logins(url: str) -> dict[str, float]:
    with Client(MODEL, store=url) as client:
        return {u: client.scores(u)["logins"] for u in ("u0", "u1", "u2")}


def test_prune_dry_run_then_prune(url: str) -> None:
    base = ("--store", url, "--model", MODEL_PATH)
    before = logins(url)
    data = json.loads(invoke("prune", *base, "--older-than", "400d", "--dry-run", "--json").stdout)
    assert (data["events"], data["subjects"], data["dry_run"]) == (300, 10, True)
    out = invoke("prune", *base, "--older-than", "400d", "--dry-run").stdout
    assert "would delete 300 events" in out
    assert "dry run: nothing deleted" in out
    assert logins(url) == before
    result = invoke("prune", *base, "--older-than", "400d")
    assert "deleted 300 events older than" in result.stdout
    assert "pruning" in result.stderr  # the progress bar, on stderr
    assert logins(url) == before == {"u0": 30.0, "u1": 31.0, "u2": 31.0}
    again = json.loads(invoke("prune", *base, "--older-than", "400d", "--json").stdout)
    assert again["events"] == 0


def test_prune_needs_a_horizon(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    base = ("--store", url, "--model", MODEL_PATH)
    result = CliRunner().invoke(main, ["prune", *base])
    assert result.exit_code == 2
    assert "--older-than" in result.stderr
    bad = CliRunner().invoke(main, ["prune", *base, "--older-than", "soon"])
    assert bad.exit_code == 2
    assert "--older-than" in bad.stderr
    monkeypatch.setenv("PQLKIT_RETENTION", "400d")
    data = json.loads(invoke("prune", *base, "--json").stdout)
    assert data["events"] == 300


def test_vacuum_gives_the_space_back(url: str, tmp_path: Path) -> None:
    path = tmp_path / "ret.db"
    invoke("prune", "--store", url, "--model", MODEL_PATH, "--older-than", "400d")
    out = invoke("vacuum", "--store", url, "--dry-run").stdout
    assert f"would run VACUUM on {path}" in out
    before = os.path.getsize(path)
    out = invoke("vacuum", "--store", url).stdout
    assert f"vacuumed {path}" in out
    assert os.path.getsize(path) < before
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed and truncated
    with SQLiteStore(path) as store, store.transaction() as tx:
        assert sum(1 for _ in tx.events()) == 2
    assert logins(url)["u0"] == 30.0


def test_vacuum_of_a_memory_store() -> None:
    assert "nothing to vacuum" in invoke("vacuum", "--store", "memory://").stdout
