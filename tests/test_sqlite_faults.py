"""SQLiteStore on a damaged file, a full disk and a read-only file: a StoreError that says so."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import pqlkit
from conftest import T0
from pqlkit import Client, Model, count, did
from pqlkit.exceptions import StoreError, TransientStoreError
from pqlkit.stores import SQLiteStore
from pqlkit.testing import FrozenClock

EVENTS = 3000  # about 70 pages of the events table
MODEL = Model("faults", signals={"active": did("login")}, scores={"logins": count("login")})


def _client(store: SQLiteStore, model: Model = MODEL) -> Client:
    return Client(model, store=store, clock=FrozenClock(T0), dispatch="inline")


def _fill(path: Path, events: int = EVENTS) -> None:
    """A closed store holding ``events`` logins of 50 users, event i marked ``row-<i>``."""
    with SQLiteStore(path) as store, _client(store) as client:
        client.track_many(
            {
                "user_id": f"u{i % 50}",
                "event": "login",
                "properties": {"marker": f"row-{i:05d}"},
                "timestamp": T0 + timedelta(seconds=i),
                "message_id": f"m{i:05d}",
            }
            for i in range(events)
        )


def _event_count(path: Path) -> int:
    with SQLiteStore(path) as store, store.transaction() as tx:
        return sum(1 for _ in tx.events())


def _page_of(data: bytes, marker: bytes) -> tuple[int, int]:
    """(offset, size) of the one page holding ``marker``."""
    assert data.count(marker) == 1, "the marker must be stored once, in the events table"
    size = int.from_bytes(data[16:18], "big")
    size = 65536 if size == 1 else size
    return data.index(marker) // size * size, size


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """SQLite's big-endian varint at ``at``: (value, length)."""
    value = 0
    for length in range(1, 9):
        byte = data[at + length - 1]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, length
    return (value << 8) | data[at + 8], 9


def _damage_seq(path: Path, index: int) -> None:
    """Turn the stored seq (rowid) of event ``index`` into a huge one: one flipped cell.

    The page stays well-formed, so SQLite reads it without complaint; only the
    order of the table's keys is broken, as bit rot or a torn write may leave it.
    """
    data = bytearray(path.read_bytes())
    page, _ = _page_of(data, f"row-{index:05d}".encode())
    assert data[page] == 0x0D, "not a leaf page of a table"
    cells = int.from_bytes(data[page + 3 : page + 5], "big")
    for cell in range(cells):
        at = page + int.from_bytes(data[page + 8 + 2 * cell : page + 10 + 2 * cell], "big")
        _, skip = _varint(data, at)  # the payload's size
        rowid, length = _varint(data, at + skip)
        if rowid == index + 1:  # seq counts from 1
            data[at + skip : at + skip + length] = b"\xff" * (length - 1) + b"\x7f"
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"no cell of event {index} in its page")


def _zero_page_of(path: Path, marker: str) -> None:
    data = bytearray(path.read_bytes())
    page, size = _page_of(data, marker.encode())
    data[page : page + size] = bytes(size)
    path.write_bytes(bytes(data))


def _says(error: BaseException | str, what: str, path: Path) -> None:
    """``error`` names the file, and says ``what`` (elsewhere than in the file's name)."""
    message = str(error)
    assert str(path) in message, message
    assert what in message.replace(str(path), ""), message


@pytest.fixture(name="db_path")
def fixture_db_path(tmp_path: Path) -> Path:
    return tmp_path / "pqlkit.db"


# -- a damaged file ----------------------------------------------------------------------


def test_rebuild_refuses_a_damaged_log(db_path: Path) -> None:
    """rebuild() on a damaged file raises StoreError naming it corrupt, and keeps the states."""
    _fill(db_path)
    _damage_seq(db_path, EVENTS // 2)
    with SQLiteStore(db_path) as store, _client(store) as client:
        before = client.stats()
        with pytest.raises(StoreError) as caught:
            client.rebuild()  # before the fix: replayed about half of the log, silently
        _says(caught.value, "corrupt", db_path)
        assert client.stats() == before  # nothing was rewritten from part of the log


def test_automatic_rebuild_refuses_a_damaged_log(db_path: Path) -> None:
    """A Client whose new model needs a rebuild refuses a damaged file when it starts."""
    _fill(db_path)
    _damage_seq(db_path, EVENTS // 2)
    tuned = Model("faults", signals={"active": did("login")}, scores={"logins": count()})
    with SQLiteStore(db_path) as store, pytest.raises(StoreError) as caught:
        _client(store, tuned)
    _says(caught.value, "corrupt", db_path)


def test_opening_does_not_scan_the_file(db_path: Path) -> None:
    """Opening reads the header and schema only: damage deeper in the file is found on use."""
    _fill(db_path)
    _damage_seq(db_path, EVENTS // 2)
    with SQLiteStore(db_path) as store, _client(store) as client:
        assert client.track("u1", "login").duplicate is False


def test_damaged_header_is_corrupt(db_path: Path) -> None:
    """A file whose header was overwritten is refused when opened, as corrupt."""
    _fill(db_path, events=10)
    with db_path.open("r+b") as f:
        f.write(b"\0" * 16)  # "SQLite format 3\0"
    with pytest.raises(StoreError) as caught:
        SQLiteStore(db_path)
    _says(caught.value, "corrupt", db_path)


def test_damaged_schema_is_corrupt(db_path: Path) -> None:
    """A file whose schema page was overwritten is refused when opened, as corrupt."""
    _fill(db_path, events=10)
    with db_path.open("r+b") as f:
        f.seek(200)
        f.write(b"\xa5" * (4096 - 200))  # the rest of page 1: the schema's root page
    with pytest.raises(StoreError) as caught:
        SQLiteStore(db_path)
    _says(caught.value, "corrupt", db_path)


def test_malformed_page_is_corrupt(db_path: Path) -> None:
    """Reading a page SQLite finds malformed raises StoreError saying corrupt, not DatabaseError."""
    _fill(db_path)
    _zero_page_of(db_path, f"row-{EVENTS // 2:05d}")
    with SQLiteStore(db_path) as store:
        with pytest.raises(StoreError) as caught, store.transaction() as tx:
            list(tx.events())
        _says(caught.value, "corrupt", db_path)
        assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
        with store.transaction() as tx:  # the store stays usable for what is intact
            assert tx.get_meta("model:faults:fingerprint") == MODEL.fingerprint


def test_text_that_is_not_utf8_is_corrupt(db_path: Path) -> None:
    """A stored text that is not UTF-8 (pqlkit writes only UTF-8) is reported as corrupt."""
    _fill(db_path, events=10)
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE events SET user_id = CAST(x'ff6c6f67696e' AS TEXT) WHERE seq = 5")
    conn.close()
    with (
        SQLiteStore(db_path) as store,
        pytest.raises(StoreError) as caught,
        store.transaction() as tx,
    ):
        list(tx.events())
    _says(caught.value, "corrupt", db_path)


# -- a full disk -------------------------------------------------------------------------


def _limit_pages(store: SQLiteStore) -> None:
    """Let the store's connection use no page more than the file has now (SQLITE_FULL).

    SQLite's ``max_page_count`` is a setting of one connection: it has to be the store's.
    """
    conn = store._connection().db.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {int(pages)}")


def _track_until_full(client: Client) -> None:
    for i in range(100):  # a few fill the pages left free, then the file must grow
        client.track("big", "login", {"blob": "x" * 20_000}, message_id=f"big{i}")


def test_disk_full_raises_store_error_and_loses_nothing(db_path: Path) -> None:
    """A full disk fails track() with StoreError saying so; what was stored stays stored."""
    _fill(db_path, events=100)
    with SQLiteStore(db_path) as store, _client(store) as client:
        _limit_pages(store)
        with pytest.raises(StoreError) as caught:
            _track_until_full(client)
        error = caught.value
        _says(error, "full", db_path)
        assert not isinstance(error, TransientStoreError)
        assert isinstance(error.__cause__, sqlite3.OperationalError)
        stored_big = client.scores("big")["logins"]
    assert _event_count(db_path) == 100 + stored_big  # the failed call stored nothing
    with SQLiteStore(db_path) as store, _client(store) as client:  # a new connection: no limit
        assert client.scores("u1")["logins"] == 2
        assert client.track("u1", "login").scores["logins"] == 3


_ON_A_FULL_DISK = """
import sys
from datetime import timedelta
import pqlkit
from pqlkit.stores import SQLiteStore
from pqlkit.testing import START as t0
path = sys.argv[1]
model = pqlkit.Model("faults", signals={"active": pqlkit.did("login")})
tracked = 0
with SQLiteStore(path) as store, pqlkit.Client(model, store=store, dispatch="inline") as client:
    try:
        for i in range(1000):
            client.track("u1", "login", {"blob": "x" * 20_000}, timestamp=t0 + timedelta(seconds=i))
            tracked += 1
    except pqlkit.StoreError as error:
        print(f"StoreError: {error}")
        print(f"cause: {type(error.__cause__).__name__}")
print(f"tracked: {tracked}")
with SQLiteStore(path) as store, store.transaction() as tx:
    print(f"stored: {sum(1 for _ in tx.events())}")
"""


def test_a_real_full_disk(tmp_path: Path) -> None:
    """On a real 1 MB file system (a tmpfs private to a child), the failing COMMIT is "full"."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs in a private mount namespace needs root and unshare")
    src = os.path.dirname(os.path.dirname(pqlkit.__file__ or ""))
    mount = tmp_path / "disk"
    mount.mkdir()
    path = mount / "pqlkit.db"
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs -o size=1m tmpfs "$1" && exec "$2" -c "$3" "$4"',
            "sh",
            str(mount),
            sys.executable,
            _ON_A_FULL_DISK,
            str(path),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("StoreError: "), lines
    _says(lines[0], "is full", path)
    assert lines[1] == "cause: OperationalError", lines
    tracked = int(lines[2].removeprefix("tracked: "))
    assert tracked > 10, lines  # the disk filled up after a few events, not at once
    assert lines[3] == f"stored: {tracked}", lines  # all of them, and not the failed one
    assert not path.exists()  # it was on the private tmpfs, gone with the child


# -- a read-only file --------------------------------------------------------------------

_AS_ANOTHER_USER = """
import os, sys
import pqlkit
from pqlkit.stores import SQLiteStore
path = sys.argv[1]
if os.geteuid() == 0:  # root writes through file modes: drop to nobody (after the imports)
    os.setgid(65534)
    os.setuid(65534)
model = pqlkit.Model("faults", signals={"active": pqlkit.did("login")},
                     scores={"logins": pqlkit.count("login")})
try:
    with SQLiteStore(path) as store:
        print("opened")
        with pqlkit.Client(model, store=store, dispatch="inline") as client:
            print("client")
            client.track("u1", "login")
            print("stored")
except pqlkit.StoreError as error:
    print(f"StoreError: {error}")
"""


@pytest.fixture(name="shared_dir")
def fixture_shared_dir() -> Iterator[Path]:
    """A directory that the unprivileged user of ``_AS_ANOTHER_USER`` can reach."""
    path = Path(tempfile.mkdtemp(prefix="pqlkit-ro-"))
    path.chmod(0o755)
    yield path
    path.chmod(0o755)
    shutil.rmtree(path)


def _run_unprivileged(path: Path) -> list[str]:
    """What ``_AS_ANOTHER_USER`` printed on ``path`` (as nobody when this runs as root)."""
    src = os.path.dirname(os.path.dirname(pqlkit.__file__ or ""))
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run(
        [sys.executable, "-c", _AS_ANOTHER_USER, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_read_only_file_in_read_only_directory(shared_dir: Path) -> None:
    """A read-only file in a read-only directory is refused as read-only (not "needs JSON")."""
    path = shared_dir / "pqlkit.db"
    _fill(path, events=10)
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    shared_dir.chmod(0o555)
    lines = _run_unprivileged(path)
    assert len(lines) == 1, lines
    assert lines[0].startswith("StoreError: "), lines
    _says(lines[0], "read-only", path)
    assert "JSON" not in lines[0], lines


def test_read_only_file(shared_dir: Path) -> None:
    """A read-only file (in a writable directory) opens, and track() raises StoreError."""
    path = shared_dir / "pqlkit.db"
    _fill(path, events=10)
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    shared_dir.chmod(0o777)
    lines = _run_unprivileged(path)
    assert lines[:2] == ["opened", "client"], lines
    assert len(lines) == 3, lines
    assert lines[2].startswith("StoreError: "), lines
    _says(lines[2], "read-only", path)
    assert _event_count(path) == 10
