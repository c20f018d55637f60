"""SQLiteStore: one SQLite file, shared safely by the threads and processes that open it.

How it stays safe:

* **Processes** serialize on SQLite's own write lock: the file is in WAL mode
  (readers never block the writer) and every transaction starts with
  ``BEGIN IMMEDIATE``, so it holds the write lock from its first statement.
  Waiting is bounded by ``busy_timeout``; a ``BEGIN IMMEDIATE`` that SQLite
  refuses without waiting (it does, e.g. while another process recovers the
  WAL) is retried with a short backoff until ``timeout`` has passed.
* **Threads** of one process share one connection, guarded by a lock held for
  the whole transaction.
* **Forks** (``gunicorn --preload``) get a connection of their own: the store
  notices that its process id changed and opens a new connection in the child,
  leaving the parent's untouched.

The schema is created on first use and upgraded by forward migrations; the
version is recorded in the ``schema_version`` table. Every value is a bound
parameter: no user data is ever formatted into SQL.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

import attrs
from sqlite_utils import Database

from .. import _process
from .._convert import dumps, loads, to_us
from .._events import EventRecord, Qualification, SubjectKind
from .._retry import pause
from ..exceptions import SchemaError, StoreError, ValidationError
from ._base import (
    INVALID_STATE,
    DeliveryRecord,
    DeliveryStatus,
    NewEvent,
    NudgeAction,
    NudgeRecord,
    QualificationRecord,
    Rank,
    StateRecord,
    cannot_join,
)
from ._rows import event_pages, nudge_records, pack, payload, rows

__all__ = ["DEFAULT_SQLITE_PATH", "SCHEMA_VERSION", "SQLiteStore"]

T = TypeVar("T")

DEFAULT_SQLITE_PATH = "pqlkit.db"
"""The file a :class:`SQLiteStore` uses when given no path (relative to the current directory)."""

_MEMORY = ":memory:"

# Rows: the mapping shared with the other SQL store (``_rows.py``).

_rows = rows

# -- schema --------------------------------------------------------------------------

_EVENTS_TABLE = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event TEXT NOT NULL,
    properties TEXT NOT NULL,
    account_id TEXT,
    ts INTEGER NOT NULL
)
"""


def _create_v1(db: Database) -> None:
    """The first schema: every table the Store protocol needs."""
    # sqlite-utils' create() has no AUTOINCREMENT, and ``seq`` needs it: without it
    # SQLite reuses the seq of a forgotten newest event, and a reader that kept
    # "everything up to seq N" would miss the new event.
    db.execute(_EVENTS_TABLE)
    events = db.table("events")
    events.create_index(["message_id"], unique=True, if_not_exists=True)
    # An index on one column also holds the rowid (= seq): events() pages through
    # a user's or an account's events by seq with an index range search.
    events.create_index(["user_id"], if_not_exists=True)
    events.create_index(["account_id"], if_not_exists=True)

    aliases = db.table("aliases").create(
        {"previous_id": str, "user_id": str},
        pk="previous_id",
        not_null=["previous_id", "user_id"],
        if_not_exists=True,
    )
    aliases.create_index(["user_id"], if_not_exists=True)

    db.table("traits").create(
        {"kind": str, "subject_id": str, "traits": str},
        pk=("kind", "subject_id"),
        not_null=["kind", "subject_id", "traits"],
        if_not_exists=True,
    )

    states = db.table("states").create(
        {"model": str, "kind": str, "subject_id": str, "state": str, "due_at": int},
        pk=("model", "kind", "subject_id"),
        not_null=["model", "kind", "subject_id", "state"],
        if_not_exists=True,
    )
    # (model, due_at) for due_subjects(); kind and subject_id make it covering and
    # give the tie-break order without a sort.
    states.create_index(["model", "due_at", "kind", "subject_id"], if_not_exists=True)

    qualifications = db.table("qualifications").create(
        {
            "id": str,
            "model": str,
            "kind": str,
            "subject_id": str,
            "round": int,
            "fingerprint": str,
            "qualified_at": int,
            "first_seen": int,
            "disqualified_at": int,
        },
        pk=("model", "kind", "subject_id", "round"),
        not_null=[
            "id",
            "model",
            "kind",
            "subject_id",
            "round",
            "fingerprint",
            "qualified_at",
            "first_seen",
        ],
        if_not_exists=True,
    )
    qualifications.create_index(["id"], if_not_exists=True)
    qualifications.create_index(["subject_id", "kind"], if_not_exists=True)

    deliveries = db.table("deliveries").create(
        {
            "id": str,
            "kind": str,
            "subject_id": str,
            "qualification": str,
            "status": str,
            "attempts": int,
            "next_attempt_at": int,
            "lease_until": int,
            "last_error": str,
            "created": int,
        },
        pk="id",
        not_null=["id", "kind", "subject_id", "qualification", "status", "attempts", "created"],
        if_not_exists=True,
    )
    deliveries.create_index(["status", "next_attempt_at"], if_not_exists=True)
    deliveries.create_index(["created"], unique=True, if_not_exists=True)
    deliveries.create_index(["subject_id"], if_not_exists=True)

    db.table("meta").create(
        {"key": str, "value": str}, pk="key", not_null=["key", "value"], if_not_exists=True
    )


def _v2_delivery_model(db: Database) -> None:
    """Deliveries scoped to their model: a ``model`` column, filled from the payload."""
    db.execute("ALTER TABLE deliveries ADD COLUMN model TEXT NOT NULL DEFAULT ''")
    db.execute("UPDATE deliveries SET model = json_extract(qualification, '$.model')")
    db.table("deliveries").create_index(["model", "status", "created"], if_not_exists=True)


def _v3_delivery_per_callback(db: Database) -> None:
    """A delivery record per callback; each qualification stored once, open for a window.

    ``deliveries`` keeps the qualifications (status "open", "closed" or "expired");
    ``callback_deliveries`` the records, ``callbacks`` the names registered per
    model and kind. A delivered or dead delivery becomes a record of callback
    ``"*"`` (every callback of its kind) of a closed qualification; a pending one
    an open qualification, open from now, whose records are made as callbacks
    register.
    """
    now = to_us(datetime.now(timezone.utc))
    db.execute("ALTER TABLE deliveries ADD COLUMN enqueued_at INTEGER")
    db.execute("ALTER TABLE deliveries ADD COLUMN finished_at INTEGER")
    db.execute("DROP INDEX IF EXISTS idx_deliveries_status_next_attempt_at")
    db.execute(
        """CREATE TABLE callback_deliveries (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            delivery_id TEXT NOT NULL,
            callback TEXT NOT NULL,
            model TEXT NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            next_attempt_at INTEGER,
            lease_until INTEGER,
            last_error TEXT,
            finished_at INTEGER,
            UNIQUE (delivery_id, callback)
        )"""
    )
    # claim_due reads only the pending records: a partial index keeps the others out
    db.execute(
        "CREATE INDEX callback_deliveries_pending ON callback_deliveries (model)"
        " WHERE status = 'pending'"
    )
    db.execute(
        "CREATE TABLE callbacks (model TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,"
        " seen_at INTEGER NOT NULL, PRIMARY KEY (model, kind, name))"
    )
    db.execute(
        "INSERT INTO callback_deliveries (delivery_id, callback, model, kind, status, attempts,"
        " last_error, finished_at)"
        " SELECT id, '*', model, kind, status, attempts, last_error,"
        " CASE WHEN status = 'delivered' THEN ? END"
        " FROM deliveries WHERE status IN ('delivered', 'dead') ORDER BY created",
        (now,),
    )
    db.execute(
        "UPDATE deliveries SET status = 'closed', finished_at = ?"
        " WHERE status IN ('delivered', 'dead')",
        (now,),
    )
    db.execute(
        "UPDATE deliveries SET status = 'open', enqueued_at = ?, lease_until = NULL"
        " WHERE status = 'pending'",
        (now,),
    )
    db.execute(
        "CREATE INDEX deliveries_open ON deliveries (model, enqueued_at) WHERE status = 'open'"
    )
    db.execute(
        "CREATE INDEX deliveries_finished ON deliveries (model, finished_at) WHERE status <> 'open'"
    )


def _v4_nudges_and_ranks(db: Database) -> None:
    """The nudge inbox (``nudges``) and the index of ranked scores (``ranks``).

    A user has at most one open nudge per key: a partial unique index, which also
    serves the read of a user's open nudges. ``ranks`` holds, per model, kind and
    ranked score, each subject's latest value and when time alone may change it.
    """
    db.execute(
        """CREATE TABLE nudges (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id TEXT NOT NULL,
            key TEXT NOT NULL,
            payload TEXT,
            created_at INTEGER NOT NULL,
            until INTEGER,
            seen_at INTEGER,
            model TEXT,
            play TEXT,
            status TEXT NOT NULL,
            closed_at INTEGER
        )"""
    )
    db.execute("CREATE UNIQUE INDEX nudges_open ON nudges (user_id, key) WHERE status = 'open'")
    db.execute("CREATE INDEX nudges_user_key ON nudges (user_id, key)")
    db.execute(
        """CREATE TABLE ranks (
            model TEXT NOT NULL,
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            subject_id TEXT NOT NULL,
            value REAL NOT NULL,
            changes_at INTEGER,
            PRIMARY KEY (model, kind, name, subject_id)
        ) WITHOUT ROWID"""
    )
    # top(): the highest values first, ties by subject id, read straight off the index
    db.execute("CREATE INDEX ranks_top ON ranks (model, kind, name, value DESC, subject_id)")
    db.execute(
        "CREATE INDEX ranks_stale ON ranks (model, kind, name, changes_at)"
        " WHERE changes_at IS NOT NULL"
    )


def _v5_suppressions(db: Database) -> None:
    """Suppressed ids (``forget(user, suppress=True)``), as one-way digests, with the
    number of calls dropped for each."""
    db.execute(
        "CREATE TABLE suppressions (digest TEXT PRIMARY KEY, created_at INTEGER NOT NULL,"
        " dropped INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID"
    )


def _message_key(message_id: str) -> str | bytes:
    """How a message id is stored: a UUID written as Python writes one (36 characters,
    lowercase hex, dashes at 8-4-4-4-12) as its 16 bytes, anything else as given.

    Only a form that :func:`_event_dicts` turns back into exactly the same text is
    packed, so every id reads back as it was passed (an uppercase UUID stays text).
    """
    if len(message_id) == 36 and message_id[8] == message_id[13] == message_id[18] == "-":
        digits = (
            message_id[:8] + message_id[9:13] + message_id[14:18] + message_id[19:23]
        ) + message_id[24:]
        if message_id[23] == "-":
            try:
                packed = bytes.fromhex(digits)
            except ValueError:
                return message_id
            if packed.hex() == digits:
                return packed
    return message_id


def _event_dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """Rows of ``_EVENT_COLUMNS`` as dicts, each message id as the text it was made
    from (a packed one, :func:`_message_key`, in Python: faster than in SQL)."""
    out = []
    for seq, mid, user_id, event, properties, account_id, ts in cursor:
        if mid.__class__ is bytes:
            h = mid.hex()
            mid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        out.append(
            {
                "seq": seq,
                "message_id": mid,
                "user_id": user_id,
                "event": event,
                "properties": properties,
                "account_id": account_id,
                "ts": ts,
            }
        )
    return out


# meta key: the highest seq ever given to an event, kept when forget() deletes the
# newest ones (SQLite would otherwise give their seqs again: see _v6_lean_events)
_SEQ_KEY = "events.seq"


def _v6_lean_events(db: Database) -> None:
    """A leaner event row: UUID message ids as 16 bytes, event names as numbers, no
    AUTOINCREMENT, and no index entries for events without an account; delivery
    payloads compressed.

    ``event`` is the id of the name in ``event_names`` (names are an application's
    vocabulary, a few dozen: they are kept when the events that used them are
    forgotten).

    ``message_id`` has BLOB affinity, so an id that is not a UUID in canonical form
    stays text (:func:`_message_key`); the unique index holds both kinds, which never
    compare equal. ``seq`` is the rowid: SQLite gives max(seq) + 1, so a reader that
    kept "everything up to seq N" would miss a new event that got the seq of a
    forgotten newest one. AUTOINCREMENT prevented that by writing ``sqlite_sequence``
    on every insert; now forget_users() records the highest seq in ``meta`` when it
    deletes the newest events, and insert_event() starts above it (the value from
    ``sqlite_sequence`` is carried over here).
    """
    db.conn.create_function("pqlkit_message_key", 1, _message_key, deterministic=True)
    db.execute("CREATE TABLE event_names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")
    db.execute("INSERT INTO event_names (name) SELECT DISTINCT event FROM events ORDER BY event")
    db.execute(
        """CREATE TABLE events_v6 (
            seq INTEGER PRIMARY KEY,
            message_id BLOB NOT NULL,
            user_id TEXT NOT NULL,
            event INTEGER NOT NULL,
            properties TEXT NOT NULL,
            account_id TEXT,
            ts INTEGER NOT NULL
        )"""
    )
    db.execute(
        "INSERT INTO events_v6 (seq, message_id, user_id, event, properties, account_id, ts)"
        " SELECT seq, pqlkit_message_key(message_id), user_id, n.id, properties, account_id, ts"
        " FROM events JOIN event_names AS n ON n.name = events.event ORDER BY seq"
    )
    high = db.conn.execute(
        "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
        " AND seq > (SELECT coalesce(max(seq), 0) FROM events)"
    ).fetchone()
    if high is not None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (_SEQ_KEY, str(high[0])),
        )
    db.execute("DROP TABLE events")  # its indexes and its sqlite_sequence row with it
    db.execute("ALTER TABLE events_v6 RENAME TO events")
    db.execute("CREATE UNIQUE INDEX events_message_id ON events (message_id)")
    # An index on one column also holds the rowid (= seq): events() pages through a
    # user's or an account's events by seq with an index range search. Every query on
    # account_id asks for one value, so events without an account need no entry.
    db.execute("CREATE INDEX events_user_id ON events (user_id)")
    db.execute("CREATE INDEX events_account_id ON events (account_id) WHERE account_id IS NOT NULL")
    # A qualification's payload, stored once per qualification (deliveries; the records
    # per callback point at it) since version 3, compressed from here on; the kind that
    # SQL read out of its JSON is a column of its own.
    db.conn.create_function("pqlkit_pack", 1, pack, deterministic=True)
    db.execute("ALTER TABLE deliveries ADD COLUMN qualification_kind TEXT NOT NULL DEFAULT ''")
    db.execute(
        "UPDATE deliveries SET qualification_kind = json_extract(qualification, '$.kind'),"
        " qualification = pqlkit_pack(qualification)"
    )


def _v7_checkpoints(db: Database) -> None:
    """Checkpoints (``Client.prune``): each subject's state under a model folded over
    its events up to ``seq``, from which a rebuild starts once those events are gone."""
    db.execute(
        "CREATE TABLE checkpoints (model TEXT NOT NULL, kind TEXT NOT NULL,"
        " subject_id TEXT NOT NULL, state TEXT NOT NULL, seq INTEGER NOT NULL,"
        " accounts TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (model, kind, subject_id)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX checkpoints_subject ON checkpoints (kind, subject_id)")


# Forward migrations: _MIGRATIONS[v] upgrades a schema at version v to v + 1.
# Append to it; never edit a migration that was released.
_MIGRATIONS: list[Callable[[Database], None]] = [
    _create_v1,
    _v2_delivery_model,
    _v3_delivery_per_callback,
    _v4_nudges_and_ranks,
    _v5_suppressions,
    _v6_lean_events,
    _v7_checkpoints,
]

SCHEMA_VERSION = len(_MIGRATIONS)
"""The schema version this code writes; a database at a higher version is refused."""


def _check_sqlite() -> None:
    """Refuse an SQLite library without what the store's SQL needs.

    Asked of a private in-memory database: what the library lacks, not what is
    wrong with the file (a statement on the file may fail for other reasons).
    """
    if sqlite3.sqlite_version_info < (3, 24, 0):  # upserts: INSERT ... ON CONFLICT DO
        raise StoreError(f"SQLiteStore needs SQLite 3.24 or newer, not {sqlite3.sqlite_version}")
    conn = sqlite3.connect(_MEMORY)
    try:
        conn.execute("SELECT json_extract('[1]', '$[0]') FROM json_each('[]')").fetchall()
    except sqlite3.OperationalError as error:
        raise StoreError(f"SQLiteStore needs SQLite's JSON functions: {error}") from error
    finally:
        conn.close()


def _schema_version(db: Database) -> int:
    if not db.table("schema_version").exists():
        return 0
    row = db.conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def _check_version(version: int, path: str) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{path!r} has schema version {version}, but this pqlkit knows versions up to "
            f"{SCHEMA_VERSION}: upgrade pqlkit to open it"
        )


def _migrate(db: Database, path: str, timeout: float) -> None:
    """Bring the schema up to :data:`SCHEMA_VERSION`, in one transaction."""
    version = _retry_busy(lambda: _schema_version(db), timeout)
    _check_version(version, path)
    if version == SCHEMA_VERSION:
        return
    with _immediate(db.conn, timeout):
        version = _schema_version(db)  # another process may have migrated meanwhile
        _check_version(version, path)
        db.table("schema_version").create(
            {"version": int, "applied_at": int},
            pk="version",
            not_null=["version", "applied_at"],
            if_not_exists=True,
        )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            _MIGRATIONS[target - 1](db)
            db.conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (target, to_us(datetime.now(timezone.utc))),
            )


def _check_current(db: Database, path: str, timeout: float) -> None:
    """Refuse to read a file that is not a pqlkit store of this schema version."""
    version = _retry_busy(lambda: _schema_version(db), timeout)
    _check_version(version, path)
    if version == 0:
        raise SchemaError(f"{path!r} is not a pqlkit store (it has no pqlkit tables)")
    if version < SCHEMA_VERSION:
        raise SchemaError(
            f"{path!r} has schema version {version}, older than this pqlkit's"
            f" {SCHEMA_VERSION}: open it once with a Client (which upgrades it) to read it"
        )


# -- errors --------------------------------------------------------------------------

# SQLite's primary result codes; an extended code keeps its primary one in its low byte.
_SQLITE_BUSY = 5
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26

# The code told by the message, for errors that carry none: Python 3.10's, and the
# sqlite3 module's own (it reads every stored text as UTF-8, and pqlkit writes no other).
_CODE_OF_MESSAGE = {
    "database is locked": _SQLITE_BUSY,
    "attempt to write a readonly database": _SQLITE_READONLY,
    "disk I/O error": _SQLITE_IOERR,
    "database disk image is malformed": _SQLITE_CORRUPT,
    "malformed database schema": _SQLITE_CORRUPT,
    "Could not decode to UTF-8": _SQLITE_CORRUPT,
    "database or disk is full": _SQLITE_FULL,
    "unable to open database file": _SQLITE_CANTOPEN,
    "file is not a database": _SQLITE_NOTADB,
}


def _result_code(error: sqlite3.Error) -> int | None:
    """SQLite's primary result code for ``error`` (None when it is not SQLite's)."""
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return int(code) & 0xFF
    message = str(error)
    return next((c for text, c in _CODE_OF_MESSAGE.items() if text in message), None)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return _result_code(error) == _SQLITE_BUSY  # SQLITE_BUSY and its extended codes


def _corrupt(path: str, detail: str, *, what: str = "is corrupt") -> StoreError:
    return StoreError(
        f"SQLite database {path!r} {what} ({detail}): restore it from a backup;"
        " pqlkit cannot trust what it reads from it"
    )


def _store_error(error: sqlite3.Error, path: str) -> StoreError:
    """The StoreError that says what ``error`` means for the database at ``path``.

    Every sqlite3 error that leaves the store is raised as this one, ``from``
    SQLite's own: on opening (``SQLiteStore._connect``) and in every transaction
    (``_Scope``), the first statement and ``COMMIT`` included.
    """
    code = _result_code(error)
    where = f"SQLite database {path!r}"
    if code == _SQLITE_CORRUPT:
        return _corrupt(path, str(error))
    if code == _SQLITE_NOTADB:
        return _corrupt(path, str(error), what="is corrupt, or is not an SQLite database")
    if code == _SQLITE_FULL:
        return StoreError(
            f"{where} is full ({error}): no space is left on its disk, or it reached"
            " its maximum size"
        )
    if code == _SQLITE_READONLY:
        return StoreError(
            f"{where} is read-only for this process ({error}): pqlkit writes to it, so"
            " the file, and its directory (where SQLite keeps the -wal and -shm files),"
            " must be writable"
        )
    if code == _SQLITE_CANTOPEN:
        return StoreError(f"cannot open {where} ({error})")
    if code == _SQLITE_IOERR:
        return StoreError(f"{where}: the operating system failed to read or write it ({error})")
    return StoreError(f"{where}: {error}")


# -- locking -------------------------------------------------------------------------


def _retry_busy(action: Callable[[], T], timeout: float) -> T:
    """Run ``action``, retrying "database is locked" with backoff for up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    failed = 0
    while True:
        try:
            return action()
        except sqlite3.OperationalError as error:
            if not _is_busy(error):
                raise
            failed += 1
            if not pause(failed, first=0.001, cap=0.05, deadline=deadline):
                raise StoreError(
                    f"the SQLite database stayed locked for more than {timeout} s"
                ) from error


def _begin(conn: sqlite3.Connection, timeout: float, statement: str = "BEGIN IMMEDIATE") -> None:
    """``BEGIN IMMEDIATE`` (or ``statement``), retrying "database is locked" for up to
    ``timeout`` s."""
    try:
        conn.execute(statement)  # the common case: no retry closure
    except sqlite3.OperationalError as error:
        if not _is_busy(error):
            raise
        _retry_busy(lambda: conn.execute(statement), timeout)


def _end(conn: sqlite3.Connection, *, commit: bool) -> None:
    """``COMMIT`` (``ROLLBACK`` if that fails), or ``ROLLBACK``."""
    if commit:
        try:
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    elif conn.in_transaction:
        conn.execute("ROLLBACK")


@contextmanager
def _immediate(conn: sqlite3.Connection, timeout: float) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` if the block raises."""
    _begin(conn, timeout)
    try:
        yield
    except BaseException:
        _end(conn, commit=False)
        raise
    _end(conn, commit=True)


_open_lock = _process.Lock()  # guards opening a connection


def _create_file(path: str, mode: int) -> None:
    """Create an empty database file with permissions ``mode``, unless one exists.

    SQLite would create it with 0644 (less the umask): readable by every user of
    the machine. An empty file is a valid empty database.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except (FileExistsError, IsADirectoryError):
        return
    except OSError:
        return  # a missing directory, say: connecting reports it as SQLite sees it
    os.close(fd)


# Connections inherited across fork(). Never used nor closed in the child:
# keeping a reference stops garbage collection from closing them behind the
# parent's back.
_inherited: list[Database] = []


@attrs.define
class _Connection:
    """This process's connection, and the lock that serializes its use."""

    db: Database
    pid: int
    lock: threading.RLock = attrs.field(factory=threading.RLock)
    active: bool = False  # a transaction is open (to refuse nesting)
    serial: object = attrs.field(factory=object)  # tells this connection's cache tokens apart
    begun: int = 0  # transactions begun on it


# -- the transaction ---------------------------------------------------------------------

_EVENT_COLUMNS = (
    "seq, message_id, user_id,"
    " (SELECT name FROM event_names WHERE id = events.event) AS event, properties, account_id, ts"
)
# the next seq: above every stored one and every one forgotten (``_SEQ_KEY``)
_INSERT_EVENT = (
    "INSERT INTO events (seq, message_id, user_id, event, properties, account_id, ts)"
    " VALUES (max(coalesce((SELECT max(seq) FROM events), 0),"
    f" coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{_SEQ_KEY}'), 0)) + 1,"
    " ?, ?, (SELECT id FROM event_names WHERE name = ?), ?, ?, ?)"
    " ON CONFLICT (message_id) DO NOTHING"
)
# a record joined with its qualification (c: callback_deliveries, d: deliveries)
_RECORD_COLUMNS = (
    "c.delivery_id AS id, c.kind, d.subject_id, d.qualification, c.status, c.attempts,"
    " c.next_attempt_at, c.lease_until, c.last_error, c.callback, c.finished_at"
)
# a qualification that no callback took, as a record with no callback
_UNTAKEN_COLUMNS = (
    "d.id, d.kind, d.subject_id, d.qualification, ? AS status, 0 AS attempts,"
    " d.next_attempt_at, NULL AS lease_until, NULL AS last_error,"
    " NULL AS callback, d.finished_at"
)
# a pending record for each name (bound: a JSON array) with none for the qualification
_ADD_RECORDS = (
    "INSERT INTO callback_deliveries (delivery_id, callback, model, kind, status, attempts,"
    " next_attempt_at)"
    " SELECT d.id, names.value, d.model, d.kind, 'pending', 0, ? FROM deliveries AS d,"
    " json_each(?) AS names WHERE d.id = ? AND NOT EXISTS (SELECT 1 FROM callback_deliveries"
    " AS c WHERE c.delivery_id = d.id AND c.callback = names.value)"
)
_QUALIFICATION_COLUMNS = (
    "id, model, kind, subject_id, round, fingerprint, qualified_at, first_seen, disqualified_at"
)
_IN_JSON = "(SELECT value FROM json_each(?))"  # binds a whole list as one JSON array
# a rank, unless the stored one has the same value and a time still after the last
# parameter and early enough (plain ? placeholders, each used once: Python 3.12 warns of
# numbered ones bound from a sequence)
_SAVE_RANK = (
    "INSERT INTO ranks (model, kind, name, subject_id, value, changes_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model, kind, name, subject_id)"
    " DO UPDATE SET value = excluded.value, changes_at = excluded.changes_at"
    " WHERE (ranks.value IS NOT excluded.value OR ranks.changes_at IS NOT excluded.changes_at)"
    " AND NOT coalesce(ranks.value = excluded.value AND ranks.changes_at > ?"
    " AND (excluded.changes_at IS NULL OR excluded.changes_at >= ranks.changes_at), 0)"
)


def _json_ids(ids: Sequence[str]) -> str:
    """``ids`` as the JSON array that ``_IN_JSON`` binds.

    json_each() cuts text at a NUL character, so ``"a\x00b"`` would match ``"a"``:
    the Client rejects such ids, and so does the store, for callers of its own.
    """
    for value in ids:
        if "\x00" in value:
            raise ValidationError("user_id", f"{value!r} contains a NUL character")
    return dumps(list(ids))


# events() has a statement per combination of filters, so each can use its index.
_EVENTS_PAGE = {
    (users, account): (
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? AND seq <= ?"
        + (f" AND user_id IN {_IN_JSON}" if users else "")
        + (" AND account_id = ?" if account else "")
        + " ORDER BY seq LIMIT ?"
    )
    for users in (False, True)
    for account in (False, True)
}


class _SQLiteTransaction:
    """The Transaction protocol over one open ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, conn: sqlite3.Connection, begun: tuple[Hashable, int], path: str) -> None:
        self._conn = conn
        self._begun = begun
        self._path = path

    def cache_token(self) -> tuple[Hashable, int]:
        """((connection, data version), transactions begun on it before this one).

        SQLite changes ``PRAGMA data_version`` when another connection (another
        process, or another store on the same file) commits; see ``_base``.
        """
        serial, begun = self._begun
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        return (serial, version), begun

    def _dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self._conn.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def lock(self, keys: Sequence[str]) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already serializes every writer."""

    def try_lock(self, keys: Sequence[str]) -> bool:
        """True: ``BEGIN IMMEDIATE`` already serializes every writer."""
        return True

    def batch(self) -> None:
        """Nothing to do: writes are not checked at commit here (see ``_base.Checked``)."""

    def check_state(self, model: str, kind: SubjectKind, subject_id: str, version: int) -> None:
        """Nothing to do: writes are not checked at commit here (see ``_base.Checked``)."""

    def check_integrity(self) -> None:
        """Raise StoreError if ``PRAGMA integrity_check`` finds the file damaged.

        It reads the whole file (0.18 s for 100,000 events, about a seventh of
        rebuilding them): the Client runs it before a full rebuild, so that
        state is never rewritten from a log that a damaged page cut short.
        """
        found = [row[0] for row in self._conn.execute("PRAGMA integrity_check(10)")]
        if found != ["ok"]:
            lines = "\n".join(found).splitlines()  # without SQLite's "*** in database main ***"
            problems = "; ".join(line for line in lines if not line.startswith("***"))
            raise _corrupt(self._path, f"PRAGMA integrity_check found: {problems}")

    # -- event log -------------------------------------------------------------------
    def insert_event(self, event: NewEvent) -> EventRecord | None:
        row = (  # the hot path: the row by hand (what _rows.unstructure(event) gives)
            _message_key(event.message_id),
            event.user_id,
            event.event,
            dumps(event.properties),
            event.account_id,
            to_us(event.timestamp),
        )
        try:
            cursor = self._conn.execute(_INSERT_EVENT, row)
        except sqlite3.IntegrityError as error:
            if "events.event" not in str(error):
                raise
            # a name never seen: the failed statement changed nothing (the transaction
            # goes on); name it, and insert again
            self._conn.execute(
                "INSERT INTO event_names (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
                (event.event,),
            )
            cursor = self._conn.execute(_INSERT_EVENT, row)
        if cursor.rowcount != 1 or cursor.lastrowid is None:
            return None
        return EventRecord(
            cursor.lastrowid,
            event.message_id,
            event.user_id,
            event.event,
            event.properties,
            event.account_id,
            event.timestamp,
        )

    def events(
        self,
        *,
        user_ids: Sequence[str] | None = None,
        account_id: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> Iterator[EventRecord]:
        """Events in arrival order, read in pages (valid inside the transaction only).

        Only events that existed when the first page was read are returned, even if
        the caller inserts more while iterating. The upper bound that takes is read
        only when there is a second page (a log tail fits in one: one statement).
        """
        high = 2**63 - 1
        sql = _EVENTS_PAGE[user_ids is not None, account_id is not None]
        filters: list[Any] = []
        if user_ids is not None:
            filters.append(_json_ids(user_ids))
        if account_id is not None:
            filters.append(account_id)

        def page(after: int, size: int) -> list[dict[str, Any]]:
            nonlocal high
            rows = _event_dicts(self._conn.execute(sql, [after, high, *filters, size]))
            if len(rows) == size and high == 2**63 - 1:
                # before yielding anything: nobody can have written since the page
                high = int(self._scalar("SELECT coalesce(max(seq), 0) FROM events"))
            return rows

        yield from event_pages(page, after_seq, limit)

    def recent_events(self, user_ids: Sequence[str], limit: int) -> list[EventRecord]:
        rows = _event_dicts(
            self._conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE user_id IN {_IN_JSON}"
                " ORDER BY ts DESC, seq DESC LIMIT ?",
                (_json_ids(user_ids), limit),
            )
        )
        return [_rows.structure(row, EventRecord) for row in rows]

    def has_message(self, message_id: str) -> bool:
        found = self._scalar(
            "SELECT 1 FROM events WHERE message_id = ?", (_message_key(message_id),)
        )
        return found is not None

    # -- identity ----------------------------------------------------------------------
    def resolve(self, user_id: str) -> str:
        target = self._scalar("SELECT user_id FROM aliases WHERE previous_id = ?", (user_id,))
        return user_id if target is None else str(target)

    def aliases_of(self, user_id: str) -> list[str]:
        cursor = self._conn.execute(
            "SELECT previous_id FROM aliases WHERE user_id = ? ORDER BY previous_id", (user_id,)
        )
        return [row[0] for row in cursor]

    def set_alias(self, previous_id: str, user_id: str) -> None:
        self._conn.execute(
            "UPDATE aliases SET user_id = ? WHERE user_id = ?", (user_id, previous_id)
        )
        self._conn.execute(
            "INSERT INTO aliases (previous_id, user_id) VALUES (?, ?)"
            " ON CONFLICT (previous_id) DO UPDATE SET user_id = excluded.user_id",
            (previous_id, user_id),
        )

    def traits(self, kind: SubjectKind, subject_id: str) -> dict[str, Any]:
        text = self._scalar(
            "SELECT traits FROM traits WHERE kind = ? AND subject_id = ?", (kind, subject_id)
        )
        return {} if text is None else dict(loads(text))

    def set_traits(self, kind: SubjectKind, subject_id: str, traits: dict[str, Any]) -> None:
        self._conn.execute(
            "INSERT INTO traits (kind, subject_id, traits) VALUES (?, ?, ?)"
            " ON CONFLICT (kind, subject_id) DO UPDATE SET traits = excluded.traits",
            (kind, subject_id, dumps(traits)),
        )

    def accounts_of(self, user_ids: Sequence[str]) -> set[str]:
        cursor = self._conn.execute(
            f"SELECT DISTINCT account_id FROM events WHERE user_id IN {_IN_JSON}"
            " AND account_id IS NOT NULL",
            (_json_ids(user_ids),),
        )
        return {row[0] for row in cursor}

    def users_of(self, account_id: str) -> set[str]:
        cursor = self._conn.execute(
            "SELECT DISTINCT user_id FROM events WHERE account_id = ?", (account_id,)
        )
        return {row[0] for row in cursor}

    def forget_users(self, user_ids: Sequence[str]) -> None:
        wanted = (_json_ids(user_ids),)
        self._delete_events(f"DELETE FROM events WHERE user_id IN {_IN_JSON}", wanted)
        self._conn.execute(
            f"DELETE FROM traits WHERE kind = 'user' AND subject_id IN {_IN_JSON}", wanted
        )
        self._conn.execute(
            f"DELETE FROM aliases WHERE previous_id IN {_IN_JSON} OR user_id IN {_IN_JSON}",
            wanted * 2,
        )
        self._conn.execute(f"DELETE FROM nudges WHERE user_id IN {_IN_JSON}", wanted)
        # every model's states and ranks of these users (an old model version's too)
        self._conn.execute(
            f"DELETE FROM states WHERE kind = 'user' AND subject_id IN {_IN_JSON}", wanted
        )
        self._conn.execute(
            f"DELETE FROM ranks WHERE kind = 'user' AND subject_id IN {_IN_JSON}", wanted
        )

    def user_rows(self, user_ids: Sequence[str]) -> dict[str, int]:
        wanted = _json_ids(user_ids)
        counts = {
            table: int(self._scalar(f"SELECT count(*) FROM {table} WHERE {where}", params))
            for table, where, params in (
                ("events", f"user_id IN {_IN_JSON}", (wanted,)),
                ("traits", f"kind = 'user' AND subject_id IN {_IN_JSON}", (wanted,)),
                ("aliases", f"previous_id IN {_IN_JSON} OR user_id IN {_IN_JSON}", (wanted,) * 2),
                ("nudges", f"user_id IN {_IN_JSON}", (wanted,)),
                ("states", f"kind = 'user' AND subject_id IN {_IN_JSON}", (wanted,)),
                ("ranks", f"kind = 'user' AND subject_id IN {_IN_JSON}", (wanted,)),
                ("qualifications", f"kind = 'pql' AND subject_id IN {_IN_JSON}", (wanted,)),
                (
                    "deliveries",
                    f"qualification_kind = 'pql' AND subject_id IN {_IN_JSON}",
                    (wanted,),
                ),
            )
        }
        return counts

    def invalidate_states(self, kind: SubjectKind, subject_id: str, *, keep: str) -> int:
        cursor = self._conn.execute(
            "UPDATE states SET state = ? WHERE kind = ? AND subject_id = ? AND model <> ?",
            (INVALID_STATE, kind, subject_id, keep),
        )
        return cursor.rowcount

    # -- derived state -------------------------------------------------------------------
    def load_state(self, model: str, kind: SubjectKind, subject_id: str) -> StateRecord | None:
        rows = self._dicts(
            "SELECT model, kind, subject_id, state, due_at FROM states"
            " WHERE model = ? AND kind = ? AND subject_id = ?",
            (model, kind, subject_id),
        )
        return _rows.structure(rows[0], StateRecord) if rows else None

    def save_state(self, record: StateRecord) -> None:
        self._conn.execute(
            "INSERT INTO states (model, kind, subject_id, state, due_at)"
            " VALUES (:model, :kind, :subject_id, :state, :due_at)"
            " ON CONFLICT (model, kind, subject_id)"
            " DO UPDATE SET state = excluded.state, due_at = excluded.due_at",
            _rows.unstructure(record),
        )

    def delete_state(self, model: str, kind: SubjectKind, subject_id: str) -> None:
        self._conn.execute(
            "DELETE FROM states WHERE model = ? AND kind = ? AND subject_id = ?",
            (model, kind, subject_id),
        )
        self._conn.execute(
            "DELETE FROM ranks WHERE model = ? AND kind = ? AND subject_id = ?",
            (model, kind, subject_id),
        )

    def clear_states(self, model: str) -> None:
        self._conn.execute("DELETE FROM states WHERE model = ?", (model,))
        self._conn.execute("DELETE FROM ranks WHERE model = ?", (model,))

    def due_subjects(self, model: str, now: datetime, limit: int) -> list[tuple[SubjectKind, str]]:
        cursor = self._conn.execute(
            "SELECT kind, subject_id FROM states WHERE model = ? AND due_at <= ?"
            " ORDER BY due_at, kind, subject_id LIMIT ?",
            (model, to_us(now), limit),
        )
        return [(row[0], row[1]) for row in cursor]

    def count_subjects(self, model: str, kind: SubjectKind) -> int:
        return int(
            self._scalar("SELECT count(*) FROM states WHERE model = ? AND kind = ?", (model, kind))
        )

    # -- ranked scores --------------------------------------------------------------------
    def save_ranks(
        self,
        model: str,
        kind: SubjectKind,
        subject_id: str,
        ranks: Sequence[Rank],
        *,
        at: datetime | None = None,
    ) -> None:
        self._conn.executemany(
            _SAVE_RANK,
            [
                (
                    model,
                    kind,
                    r.name,
                    subject_id,
                    r.value,
                    None if r.changes_at is None else to_us(r.changes_at),
                    None if at is None else to_us(at),
                )
                for r in ranks
            ],
        )

    def top_ranks(
        self, model: str, kind: SubjectKind, name: str, n: int
    ) -> list[tuple[str, float]]:
        cursor = self._conn.execute(
            "SELECT subject_id, value FROM ranks WHERE model = ? AND kind = ? AND name = ?"
            " ORDER BY value DESC, subject_id LIMIT ?",
            (model, kind, name, n),
        )
        return [(row[0], float(row[1])) for row in cursor]

    def stale_ranks(
        self, model: str, kind: SubjectKind, name: str, now: datetime, limit: int
    ) -> list[str]:
        cursor = self._conn.execute(
            "SELECT subject_id FROM ranks WHERE model = ? AND kind = ? AND name = ?"
            " AND changes_at <= ? ORDER BY changes_at, subject_id LIMIT ?",
            (model, kind, name, to_us(now), limit),
        )
        return [row[0] for row in cursor]

    # -- qualifications ------------------------------------------------------------------
    def latest_qualification(
        self, model: str, kind: str, subject_id: str
    ) -> QualificationRecord | None:
        rows = self._dicts(
            f"SELECT {_QUALIFICATION_COLUMNS} FROM qualifications"
            " WHERE model = ? AND kind = ? AND subject_id = ? ORDER BY round DESC LIMIT 1",
            (model, kind, subject_id),
        )
        return _rows.structure(rows[0], QualificationRecord) if rows else None

    def insert_qualification(self, record: QualificationRecord) -> bool:
        cursor = self._conn.execute(
            f"INSERT INTO qualifications ({_QUALIFICATION_COLUMNS})"
            " VALUES (:id, :model, :kind, :subject_id, :round, :fingerprint, :qualified_at,"
            " :first_seen, :disqualified_at)"
            " ON CONFLICT (model, kind, subject_id, round) DO NOTHING",
            _rows.unstructure(record),
        )
        return cursor.rowcount == 1

    def set_disqualified(self, qualification_id: str, at: datetime) -> None:
        self._conn.execute(
            "UPDATE qualifications SET disqualified_at = ? WHERE id = ?",
            (to_us(at), qualification_id),
        )

    def qualifications(self, model: str) -> Iterator[QualificationRecord]:
        rows = self._dicts(
            f"SELECT {_QUALIFICATION_COLUMNS} FROM qualifications WHERE model = ? ORDER BY rowid",
            (model,),
        )
        return iter([_rows.structure(row, QualificationRecord) for row in rows])

    def recent_qualifications(
        self,
        model: str,
        *,
        kinds: Sequence[str],
        since: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int,
    ) -> list[tuple[QualificationRecord, Qualification | None]]:
        params: list[Any] = [model, _json_ids(kinds), -(2**63) if since is None else to_us(since)]
        after = ""
        if before is not None:
            after = " AND (q.qualified_at < ? OR (q.qualified_at = ? AND q.id < ?))"
            params += [to_us(before[0]), to_us(before[0]), before[1]]
        columns = ", ".join(f"q.{c}" for c in _QUALIFICATION_COLUMNS.split(", "))
        found = self._dicts(
            f"SELECT {columns}, d.qualification AS payload FROM qualifications AS q"
            " LEFT JOIN deliveries AS d ON d.id = q.id"
            f" WHERE q.model = ? AND q.kind IN {_IN_JSON} AND q.qualified_at >= ?{after}"
            " ORDER BY q.qualified_at DESC, q.id DESC LIMIT ?",
            [*params, limit],
        )
        out: list[tuple[QualificationRecord, Qualification | None]] = []
        for row in found:
            text = row.pop("payload")
            record = _rows.structure(row, QualificationRecord)
            out.append((record, None if text is None else payload(text)))
        return out

    def find_qualification(self, qualification_id: str) -> QualificationRecord | None:
        rows = self._dicts(
            f"SELECT {_QUALIFICATION_COLUMNS} FROM qualifications WHERE id = ? LIMIT 1",
            (qualification_id,),
        )
        return _rows.structure(rows[0], QualificationRecord) if rows else None

    def delete_qualifications(self, subject_id: str, kind: str) -> None:
        self._conn.execute(
            "DELETE FROM qualifications WHERE subject_id = ? AND kind = ?", (subject_id, kind)
        )
        self._conn.execute(
            "DELETE FROM callback_deliveries WHERE delivery_id IN (SELECT id FROM deliveries"
            " WHERE subject_id = ? AND qualification_kind = ?)",
            (subject_id, kind),
        )
        self._conn.execute(
            "DELETE FROM deliveries WHERE subject_id = ? AND qualification_kind = ?",
            (subject_id, kind),
        )

    # -- outbox ------------------------------------------------------------------------
    def _known(self, model: str, kind: str, since: datetime | None) -> list[str]:
        cursor = self._conn.execute(
            "SELECT name FROM callbacks WHERE model = ? AND kind = ? AND seen_at >= ?"
            " ORDER BY name",
            (model, kind, -(2**63) if since is None else to_us(since)),
        )
        return [row[0] for row in cursor]

    def enqueue(
        self,
        delivery: DeliveryRecord,
        callbacks: Sequence[str] = (),
        *,
        now: datetime,
        known_since: datetime | None = None,
    ) -> None:
        cursor = self._conn.execute(
            "INSERT INTO deliveries (id, kind, subject_id, qualification, qualification_kind,"
            " status, attempts, model, created, enqueued_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, 'open', 0, ?,"
            " (SELECT coalesce(max(created), 0) + 1 FROM deliveries), ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (
                delivery.id,
                delivery.kind,
                delivery.subject_id,
                pack(_rows.unstructure(delivery)["qualification"]),
                delivery.qualification.kind,
                delivery.model,
                to_us(now),
                None if (due := delivery.next_attempt_at) is None else to_us(due),
            ),
        )
        if cursor.rowcount != 1:
            return
        self._conn.execute(
            "INSERT INTO callback_deliveries (delivery_id, callback, model, kind, status,"
            " attempts, next_attempt_at)"
            " SELECT ?, name, ?, ?, 'pending', 0, ? FROM (SELECT value AS name FROM json_each(?)"
            " UNION SELECT name FROM callbacks WHERE model = ? AND kind = ? AND seen_at >= ?)"
            " ORDER BY name",
            (
                delivery.id,
                delivery.model,
                delivery.kind,
                None if due is None else to_us(due),
                dumps(list(callbacks)),
                delivery.model,
                delivery.kind,
                -(2**63) if known_since is None else to_us(known_since),
            ),
        )

    def register_callback(
        self, model: str, kind: str, name: str, now: datetime, *, since: datetime
    ) -> bool:
        self._conn.execute(
            "INSERT INTO callbacks (model, kind, name, seen_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (model, kind, name) DO UPDATE SET seen_at = excluded.seen_at",
            (model, kind, name, to_us(now)),
        )
        self._conn.execute(
            "INSERT INTO callback_deliveries (delivery_id, callback, model, kind, status,"
            " attempts, next_attempt_at)"
            " SELECT d.id, ?, d.model, d.kind, 'pending', 0, ? FROM deliveries AS d"
            " WHERE d.status = 'open' AND d.model = ? AND d.enqueued_at >= ? AND d.kind = ?"
            " AND NOT EXISTS (SELECT 1 FROM callback_deliveries AS c"
            " WHERE c.delivery_id = d.id AND c.callback = ?)"
            " ORDER BY d.created",
            (name, to_us(now), model, to_us(since), kind, name),
        )
        return True

    def replace_qualification(self, delivery_id: str, qualification: Qualification) -> None:
        row = _rows.unstructure(
            DeliveryRecord(delivery_id, "pql", qualification.subject_id, qualification)
        )
        self._conn.execute(
            "UPDATE deliveries SET qualification = ? WHERE id = ?",
            (pack(row["qualification"]), delivery_id),
        )

    def claim_due(
        self,
        now: datetime,
        wall_now: datetime,
        lease_until: datetime,
        callbacks: Sequence[str],
        limit: int,
        *,
        model: str | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[DeliveryRecord]:
        # the pending records, in creation order, through the partial index
        rows = self._dicts(
            f"SELECT c.seq, {_RECORD_COLUMNS}"
            " FROM callback_deliveries AS c JOIN deliveries AS d ON d.id = c.delivery_id"
            " WHERE c.status = 'pending'"
            + ("" if model is None else " AND c.model = ?")
            + f" AND c.kind || ':' || c.callback IN {_IN_JSON}"
            + ("" if ids is None else f" AND c.delivery_id IN {_IN_JSON}")
            + " AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= ?)"
            " AND (c.lease_until IS NULL OR c.lease_until <= ?)"
            " ORDER BY c.seq LIMIT ?",
            (
                *(() if model is None else (model,)),
                dumps(list(callbacks)),
                *(() if ids is None else (dumps(list(ids)),)),
                to_us(now),
                to_us(wall_now),
                limit,
            ),
        )
        seqs = [row.pop("seq") for row in rows]
        claimed = [
            attrs.evolve(
                record := _rows.structure(row, DeliveryRecord),
                lease_until=lease_until,
                attempts=record.attempts + 1,
            )
            for row in rows
        ]
        self._conn.executemany(
            "UPDATE callback_deliveries SET lease_until = ?, attempts = ? WHERE seq = ?",
            [(to_us(lease_until), d.attempts, seq) for d, seq in zip(claimed, seqs, strict=True)],
        )
        return claimed

    def renew_lease(
        self, delivery_id: str, callback: str, attempts: int, lease_until: datetime
    ) -> bool:
        cursor = self._conn.execute(
            "UPDATE callback_deliveries SET lease_until = ?"
            " WHERE delivery_id = ? AND callback = ? AND attempts = ? AND status = 'pending'",
            (to_us(lease_until), delivery_id, callback, attempts),
        )
        return cursor.rowcount == 1

    def finish_delivery(
        self,
        delivery_id: str,
        callback: str,
        *,
        status: DeliveryStatus,
        attempts: int,
        next_attempt_at: datetime | None,
        last_error: str | None,
        finished_at: datetime | None = None,
    ) -> None:
        self._conn.execute(
            "UPDATE callback_deliveries SET status = ?, attempts = ?, next_attempt_at = ?,"
            " last_error = ?, lease_until = NULL, finished_at = ?"
            " WHERE delivery_id = ? AND callback = ?",
            (
                status,
                attempts,
                None if next_attempt_at is None else to_us(next_attempt_at),
                last_error,
                None if finished_at is None else to_us(finished_at),
                delivery_id,
                callback,
            ),
        )

    def deliveries(
        self,
        status: DeliveryStatus,
        *,
        model: str | None = None,
        callback: str | None = None,
    ) -> list[DeliveryRecord]:
        rows = self._dicts(
            f"SELECT d.created AS _order, c.seq AS _seq, {_RECORD_COLUMNS}"
            " FROM callback_deliveries AS c JOIN deliveries AS d ON d.id = c.delivery_id"
            " WHERE c.status = ? AND (? IS NULL OR c.model = ?) AND (? IS NULL OR c.callback = ?)",
            (status, model, model, callback, callback),
        )
        if callback is None and status in ("pending", "expired"):
            rows += self._dicts(
                f"SELECT d.created AS _order, -1 AS _seq, {_UNTAKEN_COLUMNS} FROM deliveries AS d"
                " WHERE d.status = ? AND (? IS NULL OR d.model = ?)"
                + (
                    " AND NOT EXISTS (SELECT 1 FROM callback_deliveries AS c"
                    " WHERE c.delivery_id = d.id)"
                    if status == "pending"
                    else ""
                ),
                (status, "open" if status == "pending" else "expired", model, model),
            )
        rows.sort(key=lambda row: (row.pop("_order"), row.pop("_seq")))
        return [_rows.structure(row, DeliveryRecord) for row in rows]

    def revive_dead(
        self,
        now: datetime,
        *,
        model: str | None = None,
        callback: str | None = None,
        known_since: datetime | None = None,
    ) -> int:
        legacy = self._dicts(
            "SELECT delivery_id, model, kind FROM callback_deliveries WHERE status = 'dead'"
            " AND callback = '*' AND (? IS NULL OR model = ?) AND (? IS NULL OR callback = ?)",
            (model, model, callback, callback),
        )
        for row in legacy:  # migrated: open the qualification to every callback again
            self._conn.execute(
                "DELETE FROM callback_deliveries WHERE delivery_id = ? AND callback = '*'",
                (row["delivery_id"],),
            )
            self._conn.execute(
                "UPDATE deliveries SET status = 'open', enqueued_at = ?, finished_at = NULL"
                " WHERE id = ?",
                (to_us(now), row["delivery_id"]),
            )
            names = self._known(row["model"], row["kind"], known_since)
            self._conn.execute(_ADD_RECORDS, (to_us(now), dumps(names), row["delivery_id"]))
        cursor = self._conn.execute(
            "UPDATE callback_deliveries SET status = 'pending', attempts = 0,"
            " next_attempt_at = ?, lease_until = NULL, finished_at = NULL"
            " WHERE status = 'dead' AND (? IS NULL OR model = ?) AND (? IS NULL OR callback = ?)",
            (to_us(now), model, model, callback, callback),
        )
        return len(legacy) + cursor.rowcount

    def close_deliveries(self, before: datetime, now: datetime, *, model: str) -> int:
        closing = (
            "SELECT id FROM deliveries WHERE status = 'open' AND model = ? AND enqueued_at < ?"
        )
        params = (model, to_us(before))
        expired = self._conn.execute(
            "UPDATE callback_deliveries SET status = 'expired', finished_at = ?"
            f" WHERE status = 'pending' AND attempts = 0 AND delivery_id IN ({closing})",
            (to_us(now), *params),
        ).rowcount
        untaken = self._conn.execute(
            "UPDATE deliveries SET status = 'expired', finished_at = ?"
            f" WHERE id IN ({closing}) AND NOT EXISTS (SELECT 1 FROM callback_deliveries AS c"
            " WHERE c.delivery_id = deliveries.id)",
            (to_us(now), *params),
        ).rowcount
        self._conn.execute(
            f"UPDATE deliveries SET status = 'closed', finished_at = ? WHERE id IN ({closing})",
            (to_us(now), *params),
        )
        return expired + untaken

    def purge_deliveries(self, before: datetime, *, model: str) -> int:
        cutoff = to_us(before)
        ids = [
            row[0]
            for row in self._conn.execute(
                "SELECT id FROM deliveries AS d WHERE d.status <> 'open' AND d.model = ?"
                " AND d.finished_at < ? AND NOT EXISTS (SELECT 1 FROM callback_deliveries AS c"
                " WHERE c.delivery_id = d.id AND (c.status NOT IN ('delivered', 'expired')"
                " OR c.finished_at IS NULL OR c.finished_at >= ?))",
                (model, cutoff, cutoff),
            )
        ]
        if ids:
            wanted = (dumps(ids),)
            self._conn.execute(
                f"DELETE FROM callback_deliveries WHERE delivery_id IN {_IN_JSON}", wanted
            )
            self._conn.execute(f"DELETE FROM deliveries WHERE id IN {_IN_JSON}", wanted)
        return len(ids)

    # -- nudges --------------------------------------------------------------------------
    def open_nudge(self, record: NudgeRecord, now: datetime) -> bool:
        self._conn.execute(
            "UPDATE nudges SET status = 'expired', closed_at = until"
            " WHERE user_id = ? AND key = ? AND status = 'open' AND until <= ?",
            (record.user_id, record.key, to_us(now)),
        )
        cursor = self._conn.execute(
            "INSERT INTO nudges (user_id, key, payload, created_at, until, seen_at, model, play,"
            " status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open')"
            " ON CONFLICT (user_id, key) WHERE status = 'open' DO NOTHING",
            (
                record.user_id,
                record.key,
                None if record.payload is None else dumps(record.payload),
                to_us(record.created_at),
                None if record.until is None else to_us(record.until),
                None if record.seen_at is None else to_us(record.seen_at),
                record.model,
                record.play,
            ),
        )
        return cursor.rowcount == 1

    def nudges(self, user_id: str, now: datetime) -> list[NudgeRecord]:
        cursor = self._conn.execute(
            "SELECT key, payload, created_at, until, seen_at, model, play FROM nudges"
            " WHERE user_id = ? AND status = 'open' AND (until IS NULL OR until > ?)"
            " ORDER BY created_at, seq",
            (user_id, to_us(now)),
        )
        return nudge_records(user_id, cursor)

    def mark_nudge(self, user_id: str, key: str, action: NudgeAction, at: datetime) -> bool | None:
        when = to_us(at)
        if action == "seen":
            cursor = self._conn.execute(
                "UPDATE nudges SET seen_at = ? WHERE user_id = ? AND key = ?"
                " AND status = 'open' AND seen_at IS NULL",
                (when, user_id, key),
            )
        else:
            cursor = self._conn.execute(
                "UPDATE nudges SET status = ?, closed_at = ?, seen_at = coalesce(seen_at, ?)"
                " WHERE user_id = ? AND key = ? AND status = 'open'",
                (action, when, when, user_id, key),
            )
        if cursor.rowcount:
            return True
        known = self._scalar(
            "SELECT 1 FROM nudges WHERE user_id = ? AND key = ? LIMIT 1", (user_id, key)
        )
        return None if known is None else False

    # -- suppressions --------------------------------------------------------------------
    def suppress(self, digest: str, at: datetime) -> bool:
        cursor = self._conn.execute(
            "INSERT INTO suppressions (digest, created_at) VALUES (?, ?)"
            " ON CONFLICT (digest) DO NOTHING",
            (digest, to_us(at)),
        )
        return cursor.rowcount == 1

    def unsuppress(self, digest: str) -> bool:
        cursor = self._conn.execute("DELETE FROM suppressions WHERE digest = ?", (digest,))
        return cursor.rowcount == 1

    def has_suppressions(self) -> bool:
        return self._scalar("SELECT 1 FROM suppressions LIMIT 1") is not None

    def drop_suppressed(self, digests: Sequence[str]) -> bool:
        cursor = self._conn.execute(
            f"UPDATE suppressions SET dropped = dropped + 1 WHERE digest IN {_IN_JSON}",
            (dumps(list(digests)),),
        )
        return cursor.rowcount > 0

    def suppressed_calls(self) -> int:
        return int(self._scalar("SELECT coalesce(sum(dropped), 0) FROM suppressions"))

    # -- retention -----------------------------------------------------------------------
    def prune_cut(self, before: datetime) -> int:
        first = self._scalar("SELECT min(seq) FROM events WHERE ts >= ?", (to_us(before),))
        if first is None:
            return int(self._scalar("SELECT coalesce(max(seq), 0) FROM events"))
        return int(first) - 1

    def delete_events(self, seqs: Sequence[int]) -> int:
        return self._delete_events(
            "DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?))",
            (dumps(list(seqs)),),
        )

    def _delete_events(self, sql: str, params: Sequence[Any]) -> int:
        """Delete events; when the newest go, keep their seqs from being given again
        (``_SEQ_KEY``: a checkpoint, or a reader that kept "everything up to seq N",
        would otherwise miss the events given those seqs)."""
        newest = self._scalar("SELECT max(seq) FROM events")
        deleted = self._conn.execute(sql, params).rowcount
        if newest is not None and self._scalar("SELECT max(seq) FROM events") != newest:
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
                " SET value = max(CAST(meta.value AS INTEGER), CAST(excluded.value AS INTEGER))",
                (_SEQ_KEY, str(newest)),
            )
        return int(deleted)

    def load_checkpoint(
        self, model: str, kind: SubjectKind, subject_id: str
    ) -> tuple[str, int] | None:
        row = self._conn.execute(
            "SELECT state, seq FROM checkpoints WHERE model = ? AND kind = ? AND subject_id = ?",
            (model, kind, subject_id),
        ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def save_checkpoint(
        self,
        model: str,
        kind: SubjectKind,
        subject_id: str,
        state: str,
        seq: int,
        accounts: Sequence[str] = (),
    ) -> None:
        self._conn.execute(
            "INSERT INTO checkpoints (model, kind, subject_id, state, seq, accounts)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model, kind, subject_id) DO UPDATE"
            " SET state = excluded.state, seq = excluded.seq, accounts = excluded.accounts",
            (model, kind, subject_id, state, seq, dumps(sorted(accounts))),
        )

    def checkpoint_accounts(self, user_ids: Sequence[str]) -> set[str]:
        cursor = self._conn.execute(
            "SELECT DISTINCT a.value FROM checkpoints AS c, json_each(c.accounts) AS a"
            f" WHERE c.kind = 'user' AND c.subject_id IN {_IN_JSON}",
            (_json_ids(user_ids),),
        )
        return {str(row[0]) for row in cursor}

    def has_checkpoints(self, kind: SubjectKind, subject_ids: Sequence[str]) -> bool:
        return (
            self._scalar(
                f"SELECT 1 FROM checkpoints WHERE kind = ? AND subject_id IN {_IN_JSON} LIMIT 1",
                (kind, _json_ids(subject_ids)),
            )
            is not None
        )

    def delete_checkpoints(self, kind: SubjectKind, subject_ids: Sequence[str]) -> int:
        cursor = self._conn.execute(
            f"DELETE FROM checkpoints WHERE kind = ? AND subject_id IN {_IN_JSON}",
            (kind, _json_ids(subject_ids)),
        )
        return cursor.rowcount

    # -- metadata ------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        value = self._scalar("SELECT value FROM meta WHERE key = ?", (key,))
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


# -- the store -------------------------------------------------------------------------


class _Scope:
    """One transaction of an SQLiteStore (a class, not a generator: it is on the hot path)."""

    __slots__ = ("_connection", "_store")

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __enter__(self) -> _SQLiteTransaction:
        store = self._store
        connection = store._connection()
        connection.lock.acquire()
        try:
            if connection is not store._current:  # closed by another thread meanwhile
                raise StoreError(f"{store!r} is closed")
            if connection.active:
                raise StoreError(
                    "a transaction of this SQLiteStore is already open in this thread; "
                    "transactions do not nest"
                )
            conn = connection.db.conn
            _begin(conn, store._timeout, "BEGIN" if store._read_only else "BEGIN IMMEDIATE")
        except BaseException as error:
            connection.lock.release()
            if isinstance(error, sqlite3.Error):
                raise _store_error(error, store._path) from error
            raise
        connection.active = True
        begun = (connection.serial, connection.begun)
        connection.begun += 1
        self._connection = connection
        return _SQLiteTransaction(conn, begun, store._path)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        connection = self._connection
        try:
            _end(connection.db.conn, commit=exc_type is None)
        except sqlite3.Error as error:  # COMMIT failed (a full disk, say): rolled back
            raise _store_error(error, self._store._path) from error
        finally:
            connection.active = False
            connection.lock.release()
        if exc is not None and isinstance(exc, sqlite3.Error):
            raise _store_error(exc, self._store._path) from exc


class SQLiteStore:
    """A store in one SQLite file: the default, safe for several processes on one file.

    Every transaction is ``BEGIN IMMEDIATE`` on a WAL-mode database, so writers
    from any number of threads and processes take turns, each waiting up to
    ``timeout`` seconds for the others. The threads of a process share one
    connection; a forked child (``gunicorn --preload``) opens its own.

    Args:
        path: The database file, created if missing (relative paths are resolved
            against the current directory now, so a later ``chdir`` does not
            move the store). ``":memory:"`` keeps the database in this process's
            memory: it is private to the connection, so a forked child starts
            with an empty one.
        timeout: How long, in seconds, a transaction waits for the write lock
            before giving up with :class:`~pqlkit.exceptions.StoreError`.
        mode: The permission bits a new database file is created with (the
            default, ``0o600``, lets only its owner read it: it holds personal
            data); SQLite gives its ``-wal`` and ``-shm`` files the same. An
            existing file keeps its own.
        read_only: Open an existing store only to read it (what
            :func:`pqlkit.backtest` does): the file is opened read-only, so
            nothing can change it (a write raises StoreError); it is never
            created, migrated nor switched to WAL; transactions are plain
            ``BEGIN``, taking no write lock, so writers are not held up.

    Every error from SQLite reaches you as a :class:`~pqlkit.exceptions.StoreError`
    that names the file and says what is wrong (corrupt, full, read-only...),
    with SQLite's own error as its ``__cause__``. A transaction that raised one
    stored nothing.

    Raises:
        SchemaError: The file was written by a newer pqlkit (or, with
            ``read_only``, is not a pqlkit store of this version).
        StoreError: The file cannot be opened as an SQLite database: missing
            (with ``read_only``, a missing file),
            directory, read-only file or directory, corrupt header or schema.
            Opening does not read the whole file: damage deeper in it is
            reported when a statement reads it, and by a full rebuild, which
            checks the whole file first.

    Example:
        >>> from pqlkit.stores import SQLiteStore
        >>> with SQLiteStore(":memory:") as store, store.transaction() as tx:
        ...     tx.set_meta("greeting", "hello")
        ...     tx.get_meta("greeting")
        'hello'
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_SQLITE_PATH,
        *,
        timeout: float = 30.0,
        read_only: bool = False,
        mode: int = 0o600,
    ):
        path = os.fspath(path)
        self._path = path if path == _MEMORY else os.path.abspath(path)
        self._timeout = timeout
        self._read_only = read_only
        if read_only and (self._path == _MEMORY or not os.path.isfile(self._path)):
            raise StoreError(f"no SQLite file at {self._path!r} to open read-only")
        if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
            raise ValidationError("mode", f"must be file permission bits like 0o600, got {mode!r}")
        if not read_only and self._path != _MEMORY:
            _create_file(self._path, mode)
        self._closed = False
        self._current: _Connection | None = self._connect()

    @property
    def path(self) -> str:
        """The absolute path of the database file (or ``":memory:"``)."""
        return self._path

    def __repr__(self) -> str:
        closed = ", closed" if self._closed else ""
        mode = ", read-only" if self._read_only else ""
        return f"<SQLiteStore {self._path!r} timeout={self._timeout!r}{mode}{closed}>"

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _connect(self) -> _Connection:
        """Open, configure and migrate a new connection for this process."""
        try:
            if self._read_only:
                conn = sqlite3.connect(
                    f"file:{urllib.parse.quote(self._path)}?mode=ro",
                    uri=True,
                    timeout=self._timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                conn = sqlite3.connect(
                    self._path,
                    timeout=self._timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
        except sqlite3.Error as error:
            raise _store_error(error, self._path) from error
        try:
            _check_sqlite()
            db = Database(conn, execute_plugins=False)
            # deleted rows are overwritten with zeros, not left in free pages
            # (most SQLite builds default it off; Debian's on)
            conn.execute("PRAGMA secure_delete = ON")
            if self._read_only:
                _check_current(db, self._path, self._timeout)
            else:
                if self._path != _MEMORY:
                    _retry_busy(db.enable_wal, self._timeout)
                conn.execute("PRAGMA synchronous = NORMAL")
                _migrate(db, self._path, self._timeout)
        except sqlite3.Error as error:
            conn.close()
            raise _store_error(error, self._path) from error
        except BaseException:
            conn.close()
            raise
        return _Connection(db=db, pid=_process.pid)

    def _connection(self) -> _Connection:
        """This process's connection, opened anew after a fork."""
        current = self._current
        if current is not None and current.pid == _process.pid:
            return current
        with _open_lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed")
            current = self._current
            if current is None or current.pid != _process.pid:
                if current is not None:
                    _inherited.append(current.db)  # the parent's: never touch it
                current = self._current = self._connect()
            return current

    def transaction(self) -> AbstractContextManager[_SQLiteTransaction]:
        """A ``BEGIN IMMEDIATE`` transaction: committed on exit, rolled back if the block raises.

        Raises:
            StoreError: The store is closed, a transaction is already open in
                this thread (transactions do not nest), the write lock could
                not be taken within ``timeout`` seconds, or SQLite failed (a
                corrupt file, a full disk, a read-only file: the message says
                which). The transaction was rolled back.
        """
        return _Scope(self)

    def joined(self, connection: Any) -> AbstractContextManager[_SQLiteTransaction]:
        """Refused: only a PostgresStore joins the caller's transaction."""
        raise cannot_join(self)

    def scrub(self, *, vacuum: bool = False) -> None:
        """Checkpoint the write-ahead log into the file and truncate it to zero bytes.

        Deleted rows are zeroed in the file (``secure_delete`` is on), but the WAL
        still holds copies of the pages written before the delete until a
        checkpoint; a reader in another process that keeps a transaction open
        holds the checkpoint back (it waits up to ``timeout`` for it). ``vacuum``
        also rebuilds the file (``VACUUM``), which gives freed pages back to the
        file system.
        """
        if self._read_only or self._path == _MEMORY:
            return
        connection = self._connection()
        with connection.lock:
            if connection.active:
                raise StoreError("cannot scrub an SQLiteStore inside its own transaction")
            conn = connection.db.conn
            try:
                if vacuum:
                    _retry_busy(lambda: conn.execute("VACUUM"), self._timeout)
                _retry_busy(
                    lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall(),
                    self._timeout,
                )
            except sqlite3.Error as error:
                raise _store_error(error, self._path) from error

    def close(self) -> None:
        """Close this process's connection. Idempotent.

        Raises:
            StoreError: Called inside one of this store's transactions.
        """
        current = self._current
        if current is None:
            self._closed = True
            return
        if current.pid != _process.pid:
            _inherited.append(current.db)  # the parent's: never touch it
            self._current, self._closed = None, True
            return
        with current.lock:
            if current.active:
                raise StoreError("cannot close an SQLiteStore inside its own transaction")
            self._current, self._closed = None, True
            current.db.close()
