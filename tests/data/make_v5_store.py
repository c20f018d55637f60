"""Makes ``v5_store.db``: a store written by pqlkit at SQLite schema version 5 (the
release before the lean event row), and ``v5_store.json``: what it holds, read with
that release's own code. ``tests/test_sqlite.py`` opens a copy with the current code
and checks that every event, state and qualification reads back the same.

Run with the release's sources first on the path, e.g. from a checkout of it::

    PYTHONPATH=src python tests/data/make_v5_store.py tests/data
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pqlkit
from pqlkit.stores.sqlite import SCHEMA_VERSION
from pqlkit.testing import FrozenClock

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import data_tooling

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
# message ids the user passed: packed only when they read back as the same text
GIVEN_IDS = [
    "0195f3a2-7c1e-7d4a-9b2c-3d4e5f607182",  # lowercase UUID: packed
    "0195F3A2-7C1E-7D4A-9B2C-3D4E5F607183",  # uppercase: stays text
    "{0195f3a2-7c1e-7d4a-9b2c-3d4e5f607184}",  # braces: text
    "0195f3a27c1e7d4a9b2c3d4e5f607185",  # no dashes: text
    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",  # dashes in place, not hex: text
    "0195f3a2-7c1e-7d4a-9b2c-3d4e5f60718 ",  # a space: text
    "order-17",
    "ünïcode-id-✓",
]


def main(out: Path) -> None:
    assert SCHEMA_VERSION == 5, SCHEMA_VERSION
    db = out / "v5_store.db"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{db}{suffix}"):
            os.remove(f"{db}{suffix}")
    clock = FrozenClock(T0)
    client = pqlkit.Client(data_tooling.model, store=f"sqlite:///{db}", clock=clock)
    client.on_pql(lambda q: None)
    client.on_pqa(lambda q: None)
    rng = random.Random(5)
    users = [f"user-{i}" for i in range(12)]
    for i, user in enumerate(users):
        client.identify(user, {"email_domain": f"co{i % 3}.io", "row_limit": 1000})
    for i in range(3):
        client.group(f"acct-{i}", {"employees": 300, "plan": "free"})
    names = [
        "warehouse_connected",
        "dashboard_built",
        "teammate_invited",
        "api_key_generated",
        "page_viewed",
        "project_created",
        "usage_reported",
        "login",
    ]
    for n in range(240):
        clock.advance(timedelta(minutes=rng.randrange(1, 90)))
        user = rng.choice(users)
        account = None if user.endswith(("0", "5")) else f"acct-{int(user[5:]) % 3}"
        name = rng.choice(names)
        props = {"path": "/pricing", "rows": rng.randrange(10, 900), "n": n}
        given = GIVEN_IDS[n // 20] if n % 20 == 7 and n // 20 < len(GIVEN_IDS) else None
        client.track(user, name, props, account_id=account, message_id=given)
    # the newest event is forgotten: its seq must never be given again
    clock.advance(timedelta(minutes=5))
    client.track("leaver", "login", {}, account_id="acct-0")
    client.forget("leaver")
    client.close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    expected = {
        "events": conn.execute(
            "SELECT seq, message_id, user_id, event, properties, account_id, ts FROM events"
            " ORDER BY seq"
        ).fetchall(),
        "sqlite_sequence": conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
        ).fetchone()[0],
        "states": conn.execute(
            "SELECT model, kind, subject_id, state, due_at FROM states ORDER BY 1, 2, 3"
        ).fetchall(),
        "qualifications": conn.execute(
            "SELECT id, model, kind, subject_id, round, fingerprint, qualified_at, first_seen,"
            " disqualified_at FROM qualifications ORDER BY rowid"
        ).fetchall(),
        "deliveries": conn.execute(
            "SELECT id, qualification FROM deliveries ORDER BY created"
        ).fetchall(),
        "clock": clock.now().isoformat(),
        "given": GIVEN_IDS,
    }
    conn.close()
    (out / "v5_store.json").write_text(json.dumps(expected, indent=0, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
