"""PostgresStore: one PostgreSQL database shared by every app server, through a connection pool.

How it stays safe:

* **Writers to one subject** take turns on transaction-level advisory locks:
  :meth:`Transaction.lock` calls ``pg_advisory_xact_lock`` for each key, in
  sorted order, and PostgreSQL releases them at commit or rollback.
  Transactions run at READ COMMITTED, so every statement after the lock sees
  what the previous holder committed. Unique constraints (one event per
  ``message_id``, one qualification per subject and round) are the backstop.
* **A warm write checks instead of reading** (``_PostgresTransaction``): a Client
  that kept a subject's state, traits and aliases in memory sends its whole
  transaction in one pipeline, checking that each state row is at the version it
  last saw and that the store's generation (counted up by every alias, traits,
  suppression, forget and metadata write) did not move; if not, the transaction is
  rolled back (:class:`~pqlkit.stores._base.StaleCache`) and run again cold. The
  locks are taken first in the pipeline, as in any transaction.
* **Only transaction-level locks** are used, never session-level ones, so the
  store works behind PgBouncer in transaction pooling mode.
* **Conflicts** that PostgreSQL resolves by aborting a transaction (a deadlock,
  SQLSTATE 40P01, or a serialization failure, 40001) roll the transaction back
  and raise :class:`~pqlkit.exceptions.TransientStoreError`; the Client re-runs
  its write, a bounded number of times. A pooled connection found broken at
  ``BEGIN`` is replaced and ``BEGIN`` retried, since nothing has run yet.
* **Forks** (``gunicorn --preload``): the pool belongs to one process. A forked
  child notices that its process id changed and opens a pool of its own; the
  parent's connections are never used, nor closed, in the child.
* **The schema** lives in its own PostgreSQL schema (``pqlkit`` by default),
  created on first use and upgraded by forward migrations under an advisory
  lock, so many processes starting at once migrate it exactly once. The
  version is recorded in ``schema_version``.

Every value is a bound parameter; the schema name, checked to be a plain
identifier, is composed with :class:`psycopg.sql.Identifier`. psycopg is
imported only when a store is opened, so pqlkit works without it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import attrs

from .. import _process
from .._convert import dumps, loads, to_us
from .._events import EventRecord, Qualification, SubjectKind
from .._retry import pause
from ..exceptions import SchemaError, StoreError, TransientStoreError, ValidationError
from ._base import (
    ABSENT,
    INVALID_STATE,
    Checked,
    DeliveryRecord,
    DeliveryStatus,
    NewEvent,
    NudgeAction,
    NudgeRecord,
    QualificationRecord,
    Rank,
    StaleCache,
    StateRecord,
)
from ._rows import event_pages, nudge_records, payload, rows

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["DEFAULT_SCHEMA", "SCHEMA_VERSION", "PostgresStore"]

DEFAULT_SCHEMA = "pqlkit"
"""The PostgreSQL schema a :class:`PostgresStore` uses when given none."""

_INSTALL_HINT = 'PostgresStore needs psycopg 3 and psycopg-pool: pip install "pqlkit[postgres]"'

# Rows: the mapping shared with the other SQL store (``_rows.py``).

_rows = rows

# -- schema ------------------------------------------------------------------------------
# Templates are composed with the schema's quoted name ({s}) once per store.
# JSON columns are ``json``, not ``jsonb``: ``json`` keeps the text as written, so
# every number comes back exactly (jsonb turns 1e308 into a 309-digit integer)
# and "\u0000" is accepted; pqlkit never queries inside them.

_CREATE_V1 = [
    """CREATE TABLE IF NOT EXISTS {s}.events (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_id text NOT NULL,
        user_id text NOT NULL,
        event text NOT NULL,
        properties json NOT NULL,
        account_id text,
        ts bigint NOT NULL,
        CONSTRAINT events_message_id_key UNIQUE (message_id)
    )""",
    # events() pages through one user's or one account's events by seq.
    "CREATE INDEX IF NOT EXISTS events_user_id_seq ON {s}.events (user_id, seq)",
    "CREATE INDEX IF NOT EXISTS events_account_id_seq ON {s}.events (account_id, seq)",
    """CREATE TABLE IF NOT EXISTS {s}.aliases (
        previous_id text PRIMARY KEY,
        user_id text NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS aliases_user_id ON {s}.aliases (user_id)",
    """CREATE TABLE IF NOT EXISTS {s}.traits (
        kind text NOT NULL,
        subject_id text NOT NULL,
        traits json NOT NULL,
        PRIMARY KEY (kind, subject_id)
    )""",
    """CREATE TABLE IF NOT EXISTS {s}.states (
        model text NOT NULL,
        kind text NOT NULL,
        subject_id text NOT NULL,
        state text NOT NULL,
        due_at bigint,
        PRIMARY KEY (model, kind, subject_id)
    )""",
    # (model, due_at) for due_subjects(); kind and subject_id give the tie-break order.
    "CREATE INDEX IF NOT EXISTS states_model_due_at"
    " ON {s}.states (model, due_at, kind, subject_id)",
    """CREATE TABLE IF NOT EXISTS {s}.qualifications (
        pos bigint GENERATED ALWAYS AS IDENTITY,
        id text NOT NULL,
        model text NOT NULL,
        kind text NOT NULL,
        subject_id text NOT NULL,
        round integer NOT NULL,
        fingerprint text NOT NULL,
        qualified_at bigint NOT NULL,
        first_seen bigint NOT NULL,
        disqualified_at bigint,
        PRIMARY KEY (model, kind, subject_id, round),
        CONSTRAINT qualifications_id_key UNIQUE (id)
    )""",
    "CREATE INDEX IF NOT EXISTS qualifications_subject ON {s}.qualifications (subject_id, kind)",
    """CREATE TABLE IF NOT EXISTS {s}.deliveries (
        id text PRIMARY KEY,
        kind text NOT NULL,
        subject_id text NOT NULL,
        qualification json NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL,
        next_attempt_at bigint,
        lease_until bigint,
        last_error text,
        created bigint GENERATED ALWAYS AS IDENTITY,
        CONSTRAINT deliveries_created_key UNIQUE (created)
    )""",
    "CREATE INDEX IF NOT EXISTS deliveries_status ON {s}.deliveries (status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS deliveries_subject_id ON {s}.deliveries (subject_id)",
    """CREATE TABLE IF NOT EXISTS {s}.meta (
        key text PRIMARY KEY,
        value text NOT NULL
    )""",
]

# v2: deliveries scoped to their model (a column, filled from the payload).
_V2_DELIVERY_MODEL = [
    "ALTER TABLE {s}.deliveries ADD COLUMN IF NOT EXISTS model text NOT NULL DEFAULT ''",
    "UPDATE {s}.deliveries SET model = qualification->>'model'",
]

_NOW_US = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"

# v3: a delivery record per callback (callback_deliveries); each qualification
# stored once in deliveries ("open", "closed" or "expired"); the callbacks
# registered per model and kind. A delivered or dead delivery becomes a record of
# callback "*" (every callback of its kind) of a closed qualification; a pending
# one an open qualification, open from now, whose records are made as callbacks
# register.
_V3_DELIVERY_PER_CALLBACK = [
    "ALTER TABLE {s}.deliveries ADD COLUMN IF NOT EXISTS enqueued_at bigint",
    "ALTER TABLE {s}.deliveries ADD COLUMN IF NOT EXISTS finished_at bigint",
    "DROP INDEX IF EXISTS {s}.deliveries_status",
    """CREATE TABLE IF NOT EXISTS {s}.callback_deliveries (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery_id text NOT NULL,
        callback text NOT NULL,
        model text NOT NULL,
        kind text NOT NULL,
        status text NOT NULL,
        attempts integer NOT NULL,
        next_attempt_at bigint,
        lease_until bigint,
        last_error text,
        finished_at bigint,
        CONSTRAINT callback_deliveries_key UNIQUE (delivery_id, callback)
    )""",
    # claim_due reads only the pending records: a partial index holds nothing else,
    # so neither finished records nor their dead versions are read
    "CREATE INDEX IF NOT EXISTS callback_deliveries_pending"
    " ON {s}.callback_deliveries (model, seq) WHERE status = 'pending'",
    """CREATE TABLE IF NOT EXISTS {s}.callbacks (
        model text NOT NULL,
        kind text NOT NULL,
        name text NOT NULL,
        seen_at bigint NOT NULL,
        PRIMARY KEY (model, kind, name)
    )""",
    "INSERT INTO {s}.callback_deliveries (delivery_id, callback, model, kind, status, attempts,"
    " last_error, finished_at)"
    " SELECT id, '*', model, kind, status, attempts, last_error,"
    f" CASE WHEN status = 'delivered' THEN {_NOW_US} END"
    " FROM {s}.deliveries WHERE status IN ('delivered', 'dead') ORDER BY created",
    f"UPDATE {{s}}.deliveries SET status = 'closed', finished_at = {_NOW_US}"
    " WHERE status IN ('delivered', 'dead')",
    f"UPDATE {{s}}.deliveries SET status = 'open', enqueued_at = {_NOW_US}, lease_until = NULL"
    " WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS deliveries_open"
    " ON {s}.deliveries (model, enqueued_at) WHERE status = 'open'",
    "CREATE INDEX IF NOT EXISTS deliveries_finished"
    " ON {s}.deliveries (model, finished_at) WHERE status <> 'open'",
]

# v4: the nudge inbox (at most one open nudge per user and key: a partial unique
# index, which also serves the read of a user's open nudges) and the index of
# ranked scores (each subject's latest value, and when time alone may change it).
_V4_NUDGES_AND_RANKS = [
    """CREATE TABLE IF NOT EXISTS {s}.nudges (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id text NOT NULL,
        key text NOT NULL,
        payload json,
        created_at bigint NOT NULL,
        until bigint,
        seen_at bigint,
        model text,
        play text,
        status text NOT NULL,
        closed_at bigint
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS nudges_open ON {s}.nudges (user_id, key)"
    " WHERE status = 'open'",
    "CREATE INDEX IF NOT EXISTS nudges_user_key ON {s}.nudges (user_id, key)",
    """CREATE TABLE IF NOT EXISTS {s}.ranks (
        model text NOT NULL,
        kind text NOT NULL,
        name text NOT NULL,
        subject_id text NOT NULL,
        value double precision NOT NULL,
        changes_at bigint,
        PRIMARY KEY (model, kind, name, subject_id)
    )""",
    # top(): the highest values first, ties by subject id, read straight off the index
    "CREATE INDEX IF NOT EXISTS ranks_top ON {s}.ranks (model, kind, name, value DESC, subject_id)",
    "CREATE INDEX IF NOT EXISTS ranks_stale ON {s}.ranks (model, kind, name, changes_at)"
    " WHERE changes_at IS NOT NULL",
]

# v5: suppressed ids (forget(user, suppress=True)), as one-way digests, with the
# number of calls dropped for each.
_V5_SUPPRESSIONS = [
    """CREATE TABLE IF NOT EXISTS {s}.suppressions (
        digest text PRIMARY KEY,
        created_at bigint NOT NULL,
        dropped bigint NOT NULL DEFAULT 0
    )""",
]

# Checkpoints (Client.prune): each subject's state under a model folded over its
# events up to seq, from which a rebuild starts once those events are gone.
_V6_CHECKPOINTS = [
    """CREATE TABLE IF NOT EXISTS {s}.checkpoints (
        model text NOT NULL,
        kind text NOT NULL,
        subject_id text NOT NULL,
        state text NOT NULL,
        seq bigint NOT NULL,
        accounts text[] NOT NULL DEFAULT '{{}}',
        PRIMARY KEY (model, kind, subject_id)
    )""",
    "CREATE INDEX IF NOT EXISTS checkpoints_subject ON {s}.checkpoints (kind, subject_id)",
]

# v7: a version per state row (a random 62-bit number, new at every write; 0 for rows
# written before) and a store-wide generation, counted up by every write that changes
# what a Client keeps warm besides states (aliases, traits, suppressions, forget,
# invalidated or cleared states, metadata): a Client that kept a subject warm writes
# it in one round trip, checking both (see ``_PostgresTransaction``).
_V7_VERSIONS = [
    "ALTER TABLE {s}.states ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0",
    """CREATE TABLE IF NOT EXISTS {s}.generation (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        value bigint NOT NULL
    )""",
    "INSERT INTO {s}.generation (id, value) VALUES (true, 1) ON CONFLICT DO NOTHING",
]

# Forward migrations: _MIGRATIONS[v] upgrades a schema at version v to v + 1.
# Append to it; never edit a migration that was released.
_MIGRATIONS: list[list[str]] = [
    _CREATE_V1,
    _V2_DELIVERY_MODEL,
    _V3_DELIVERY_PER_CALLBACK,
    _V4_NUDGES_AND_RANKS,
    _V5_SUPPRESSIONS,
    _V6_CHECKPOINTS,
    _V7_VERSIONS,
]

SCHEMA_VERSION = len(_MIGRATIONS)
"""The schema version this code writes; a database at a higher version is refused."""

# the tables forget() deletes or rewrites rows of (scrub(vacuum=True) vacuums them)
_PERSONAL_TABLES = (
    "events",
    "aliases",
    "traits",
    "states",
    "ranks",
    "qualifications",
    "deliveries",
    "callback_deliveries",
    "nudges",
    "suppressions",
    "checkpoints",
)

# the tables user_rows() counts, in the order of its columns
_USER_ROW_TABLES = (
    "events",
    "traits",
    "aliases",
    "nudges",
    "states",
    "ranks",
    "qualifications",
    "deliveries",
)

_SCHEMA_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS {s}.schema_version (
    version integer PRIMARY KEY,
    applied_at bigint NOT NULL
)"""

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# -- statements ----------------------------------------------------------------------------

_EVENT_COLUMNS = "seq, message_id, user_id, event, properties::text AS properties, account_id, ts"
# a record joined with its qualification (c: callback_deliveries, d: deliveries)
_RECORD_COLUMNS = (
    "c.delivery_id AS id, c.kind, d.subject_id, d.qualification::text AS qualification,"
    " c.status, c.attempts, c.next_attempt_at, c.lease_until, c.last_error, c.callback,"
    " c.finished_at"
)
# a qualification that no callback took, as a record with no callback
_UNTAKEN_COLUMNS = (
    "d.id, d.kind, d.subject_id, d.qualification::text AS qualification,"
    " %(status)s::text AS status, 0 AS attempts, d.next_attempt_at,"
    " NULL::bigint AS lease_until, NULL::text AS last_error, NULL::text AS callback,"
    " d.finished_at"
)
_CLAIM = (
    "UPDATE {s}.callback_deliveries AS c"
    " SET lease_until = %(lease_until)s, attempts = c.attempts + 1"
    " FROM (SELECT seq FROM {s}.callback_deliveries WHERE status = 'pending'"
    "{filters} AND kind || ':' || callback = ANY(%(callbacks)s::text[])"
    " AND (next_attempt_at IS NULL OR next_attempt_at <= %(now)s)"
    " AND (lease_until IS NULL OR lease_until <= %(wall_now)s)"
    " ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS due, {s}.deliveries AS d"
    " WHERE c.seq = due.seq AND d.id = c.delivery_id"
    f" RETURNING c.seq, {_RECORD_COLUMNS}"
)
_OPENING = (
    "SELECT id FROM {s}.deliveries"
    " WHERE status = 'open' AND model = %(model)s AND enqueued_at < %(before)s"
)
_QUALIFICATION_COLUMNS = (
    "id, model, kind, subject_id, round, fingerprint, qualified_at, first_seen, disqualified_at"
)

_STALE = "pqlkit stale"
"""What a checked write's error says: the Client's warm cache was stale (see
``_PostgresTransaction``); the transaction is rolled back and run again cold."""
# The tail of a checked write: one row written in ``w``, or an error (a cast of a text
# that is no number: evaluated per row, so never folded away when the plan is made).
_CHECK_ONE = (
    "SELECT CASE WHEN count(*) = 1 THEN 1"
    " ELSE ('" + _STALE + " {what} ' || count(*))::int END FROM w"
)

_PLANNED_EACH_TIME = frozenset(
    {
        "recent_events",
        "accounts_of",
        "users_of",
        *(f"events_{u}{a}" for u in "01" for a in "01"),
        "recent_qualifications",
    }
)
"""Reads of the event log whose best plan depends on its size: never prepared, so
PostgreSQL plans each with the table as it is. A prepared statement's generic plan,
made while the log was small, stays a sequential scan for good where nothing runs
ANALYZE (autovacuum off or lagging): ``recent_events`` (a payload's context) then read
the whole log on every qualification. The lookups by key stay prepared.
``recent_qualifications`` (a list for people, its cursor optional) is planned with
its values too."""

_STATEMENTS: dict[str, str] = {
    "max_seq": "SELECT coalesce(max(seq), 0) FROM {s}.events",
    "insert_event": (
        "INSERT INTO {s}.events (message_id, user_id, event, properties, account_id, ts)"
        " VALUES (%(message_id)s, %(user_id)s, %(event)s, %(properties)s::json,"
        " %(account_id)s, %(ts)s)"
        " ON CONFLICT (message_id) DO NOTHING RETURNING seq"
    ),
    "insert_event_new": (
        "WITH w AS (INSERT INTO {s}.events (message_id, user_id, event, properties, account_id,"
        " ts) VALUES (%(message_id)s, %(user_id)s, %(event)s, %(properties)s::json,"
        " %(account_id)s, %(ts)s) ON CONFLICT (message_id) DO NOTHING RETURNING 1)"
        f" {_CHECK_ONE.format(what='event')}"
    ),
    "recent_events": (
        f"SELECT {_EVENT_COLUMNS} FROM {{s}}.events WHERE user_id = ANY(%s::text[])"
        " ORDER BY ts DESC, seq DESC LIMIT %s"
    ),
    "has_message": "SELECT 1 FROM {s}.events WHERE message_id = %s",
    "resolve": "SELECT user_id FROM {s}.aliases WHERE previous_id = %s",
    "aliases_of": "SELECT previous_id FROM {s}.aliases WHERE user_id = %s ORDER BY previous_id",
    "retarget_aliases": "UPDATE {s}.aliases SET user_id = %s WHERE user_id = %s",
    "set_alias": (
        "INSERT INTO {s}.aliases (previous_id, user_id) VALUES (%s, %s)"
        " ON CONFLICT (previous_id) DO UPDATE SET user_id = excluded.user_id"
    ),
    "traits": "SELECT traits::text FROM {s}.traits WHERE kind = %s AND subject_id = %s",
    "set_traits": (
        "INSERT INTO {s}.traits (kind, subject_id, traits) VALUES (%s, %s, %s::json)"
        " ON CONFLICT (kind, subject_id) DO UPDATE SET traits = excluded.traits"
    ),
    "accounts_of": (
        "SELECT DISTINCT account_id FROM {s}.events"
        " WHERE user_id = ANY(%s::text[]) AND account_id IS NOT NULL"
    ),
    "users_of": "SELECT DISTINCT user_id FROM {s}.events WHERE account_id = %s",
    "forget_events": "DELETE FROM {s}.events WHERE user_id = ANY(%s::text[])",
    "forget_traits": (
        "DELETE FROM {s}.traits WHERE kind = 'user' AND subject_id = ANY(%s::text[])"
    ),
    "forget_aliases": (
        "DELETE FROM {s}.aliases"
        " WHERE previous_id = ANY(%(ids)s::text[]) OR user_id = ANY(%(ids)s::text[])"
    ),
    "load_state": (
        "SELECT model, kind, subject_id, state, due_at, version FROM {s}.states"
        " WHERE model = %s AND kind = %s AND subject_id = %s"
    ),
    "save_state": (
        "INSERT INTO {s}.states (model, kind, subject_id, state, due_at, version)"
        " VALUES (%(model)s, %(kind)s, %(subject_id)s, %(state)s, %(due_at)s, %(version)s)"
        " ON CONFLICT (model, kind, subject_id) DO UPDATE"
        " SET state = excluded.state, due_at = excluded.due_at, version = excluded.version"
    ),
    # the checked writes: the statement fails (with _STALE) unless exactly one row was
    # written, so the whole transaction rolls back (see _PostgresTransaction)
    "save_state_if": (
        "WITH w AS (UPDATE {s}.states SET state = %(state)s, due_at = %(due_at)s,"
        " version = %(version)s WHERE model = %(model)s AND kind = %(kind)s"
        " AND subject_id = %(subject_id)s AND version = %(expected)s RETURNING 1)"
        f" {_CHECK_ONE.format(what='state')}"
    ),
    "save_state_new": (
        "WITH w AS (INSERT INTO {s}.states (model, kind, subject_id, state, due_at, version)"
        " VALUES (%(model)s, %(kind)s, %(subject_id)s, %(state)s, %(due_at)s, %(version)s)"
        f" ON CONFLICT DO NOTHING RETURNING 1) {_CHECK_ONE.format(what='state')}"
    ),
    "generation": "SELECT value FROM {s}.generation",
    "check_state": (
        "WITH k AS (SELECT version FROM {s}.states WHERE model = %(model)s"
        " AND kind = %(kind)s AND subject_id = %(subject_id)s),"
        " w AS (SELECT 1 WHERE CASE WHEN %(version)s::bigint = -1"
        " THEN NOT EXISTS (SELECT 1 FROM k)"
        " ELSE EXISTS (SELECT 1 FROM k WHERE version = %(version)s::bigint) END)"
        f" {_CHECK_ONE.format(what='state')}"
    ),
    "check_generation": (
        "SELECT CASE WHEN value = %s THEN 1"
        f" ELSE ('{_STALE} generation ' || value)::int END FROM {{s}}.generation"
    ),
    "bump_generation": "UPDATE {s}.generation SET value = value + 1 RETURNING value",
    "delete_state": "DELETE FROM {s}.states WHERE model = %s AND kind = %s AND subject_id = %s",
    "delete_ranks": "DELETE FROM {s}.ranks WHERE model = %s AND kind = %s AND subject_id = %s",
    "clear_states": "DELETE FROM {s}.states WHERE model = %s",
    "clear_ranks": "DELETE FROM {s}.ranks WHERE model = %s",
    "save_ranks": (
        "INSERT INTO {s}.ranks (model, kind, name, subject_id, value, changes_at)"
        " SELECT %(model)s, %(kind)s, r.name, %(subject_id)s, r.value, r.changes_at"
        " FROM unnest(%(names)s::text[], %(values)s::float8[], %(changes)s::bigint[])"
        " AS r(name, value, changes_at)"
        " ON CONFLICT (model, kind, name, subject_id) DO UPDATE"
        " SET value = excluded.value, changes_at = excluded.changes_at"
        " WHERE (ranks.value, ranks.changes_at)"
        " IS DISTINCT FROM (excluded.value, excluded.changes_at)"
        # kept: the same value with a time still after `at`, and early enough
        " AND NOT coalesce(ranks.value = excluded.value AND ranks.changes_at > %(at)s::bigint"
        " AND (excluded.changes_at IS NULL OR excluded.changes_at >= ranks.changes_at), false)"
    ),
    "top_ranks": (
        "SELECT subject_id, value FROM {s}.ranks WHERE model = %s AND kind = %s AND name = %s"
        " ORDER BY value DESC, subject_id LIMIT %s"
    ),
    "stale_ranks": (
        "SELECT subject_id FROM {s}.ranks WHERE model = %s AND kind = %s AND name = %s"
        " AND changes_at <= %s ORDER BY changes_at, subject_id LIMIT %s"
    ),
    "expire_nudge": (
        "UPDATE {s}.nudges SET status = 'expired', closed_at = until"
        " WHERE user_id = %s AND key = %s AND status = 'open' AND until <= %s"
    ),
    "open_nudge": (
        "INSERT INTO {s}.nudges (user_id, key, payload, created_at, until, seen_at, model, play,"
        " status) VALUES (%(user_id)s, %(key)s, %(payload)s::json, %(created_at)s, %(until)s,"
        " %(seen_at)s, %(model)s, %(play)s, 'open')"
        " ON CONFLICT (user_id, key) WHERE status = 'open' DO NOTHING RETURNING seq"
    ),
    "nudges": (
        "SELECT key, payload::text, created_at, until, seen_at, model, play FROM {s}.nudges"
        " WHERE user_id = %s AND status = 'open' AND (until IS NULL OR until > %s)"
        " ORDER BY created_at, seq"
    ),
    "see_nudge": (
        "UPDATE {s}.nudges SET seen_at = %s WHERE user_id = %s AND key = %s"
        " AND status = 'open' AND seen_at IS NULL"
    ),
    "close_nudge": (
        "UPDATE {s}.nudges SET status = %s, closed_at = %s, seen_at = coalesce(seen_at, %s)"
        " WHERE user_id = %s AND key = %s AND status = 'open'"
    ),
    "has_nudge": "SELECT 1 FROM {s}.nudges WHERE user_id = %s AND key = %s LIMIT 1",
    "forget_nudges": "DELETE FROM {s}.nudges WHERE user_id = ANY(%s::text[])",
    "suppress": (
        "INSERT INTO {s}.suppressions (digest, created_at) VALUES (%s, %s)"
        " ON CONFLICT (digest) DO NOTHING"
    ),
    "unsuppress": "DELETE FROM {s}.suppressions WHERE digest = %s",
    "has_suppressions": "SELECT 1 FROM {s}.suppressions LIMIT 1",
    "drop_suppressed": (
        "UPDATE {s}.suppressions SET dropped = dropped + 1 WHERE digest = ANY(%s::text[])"
    ),
    "suppressed_calls": "SELECT coalesce(sum(dropped), 0) FROM {s}.suppressions",
    "user_rows": (
        "SELECT (SELECT count(*) FROM {s}.events WHERE user_id = ANY(%(ids)s::text[])),"
        " (SELECT count(*) FROM {s}.traits"
        " WHERE kind = 'user' AND subject_id = ANY(%(ids)s::text[])),"
        " (SELECT count(*) FROM {s}.aliases WHERE previous_id = ANY(%(ids)s::text[])"
        " OR user_id = ANY(%(ids)s::text[])),"
        " (SELECT count(*) FROM {s}.nudges WHERE user_id = ANY(%(ids)s::text[])),"
        " (SELECT count(*) FROM {s}.states"
        " WHERE kind = 'user' AND subject_id = ANY(%(ids)s::text[])),"
        " (SELECT count(*) FROM {s}.ranks"
        " WHERE kind = 'user' AND subject_id = ANY(%(ids)s::text[])),"
        " (SELECT count(*) FROM {s}.qualifications"
        " WHERE kind = 'pql' AND subject_id = ANY(%(ids)s::text[])),"
        " (SELECT count(*) FROM {s}.deliveries"
        " WHERE qualification->>'kind' = 'pql' AND subject_id = ANY(%(ids)s::text[]))"
    ),
    "forget_states": (
        "DELETE FROM {s}.states WHERE kind = 'user' AND subject_id = ANY(%s::text[])"
    ),
    "forget_ranks": "DELETE FROM {s}.ranks WHERE kind = 'user' AND subject_id = ANY(%s::text[])",
    "invalidate_states": (
        "UPDATE {s}.states SET state = %s, version = version + 1"
        " WHERE kind = %s AND subject_id = %s AND model <> %s"
    ),
    "due_subjects": (
        "SELECT kind, subject_id FROM {s}.states WHERE model = %s AND due_at <= %s"
        " ORDER BY due_at, kind, subject_id LIMIT %s"
    ),
    "count_subjects": "SELECT count(*) FROM {s}.states WHERE model = %s AND kind = %s",
    "latest_qualification": (
        f"SELECT {_QUALIFICATION_COLUMNS} FROM {{s}}.qualifications"
        " WHERE model = %s AND kind = %s AND subject_id = %s ORDER BY round DESC LIMIT 1"
    ),
    "insert_qualification": (
        f"INSERT INTO {{s}}.qualifications ({_QUALIFICATION_COLUMNS})"
        " VALUES (%(id)s, %(model)s, %(kind)s, %(subject_id)s, %(round)s, %(fingerprint)s,"
        " %(qualified_at)s, %(first_seen)s, %(disqualified_at)s)"
        " ON CONFLICT (model, kind, subject_id, round) DO NOTHING"
    ),
    "set_disqualified": "UPDATE {s}.qualifications SET disqualified_at = %s WHERE id = %s",
    "qualifications": (
        f"SELECT {_QUALIFICATION_COLUMNS} FROM {{s}}.qualifications WHERE model = %s ORDER BY pos"
    ),
    # newest first; ids compare byte by byte (COLLATE "C"), as in the other stores
    "recent_qualifications": (
        f"SELECT {', '.join('q.' + c for c in _QUALIFICATION_COLUMNS.split(', '))},"
        " d.qualification::text AS payload"
        " FROM {s}.qualifications AS q LEFT JOIN {s}.deliveries AS d ON d.id = q.id"
        " WHERE q.model = %(model)s AND q.kind = ANY(%(kinds)s::text[])"
        " AND q.qualified_at >= %(since)s AND (%(at)s::bigint IS NULL OR q.qualified_at < %(at)s"
        ' OR (q.qualified_at = %(at)s AND q.id COLLATE "C" < %(id)s))'
        ' ORDER BY q.qualified_at DESC, q.id COLLATE "C" DESC LIMIT %(limit)s'
    ),
    "find_qualification": (
        f"SELECT {_QUALIFICATION_COLUMNS} FROM {{s}}.qualifications WHERE id = %s"
    ),
    "delete_qualifications": ("DELETE FROM {s}.qualifications WHERE subject_id = %s AND kind = %s"),
    "delete_callback_deliveries": (
        "DELETE FROM {s}.callback_deliveries WHERE delivery_id IN (SELECT id FROM {s}.deliveries"
        " WHERE subject_id = %s AND qualification->>'kind' = %s)"
    ),
    "delete_deliveries": (
        "DELETE FROM {s}.deliveries WHERE subject_id = %s AND qualification->>'kind' = %s"
    ),
    "replace_qualification": (
        "UPDATE {s}.deliveries SET qualification = %(qualification)s::json WHERE id = %(id)s"
    ),
    # a registration (exclusive) waits for no enqueuer, and no enqueuer (shared)
    # commits a qualification without the records of a callback registered meanwhile
    "share_callbacks": "SELECT pg_advisory_xact_lock_shared(%s)",
    "own_callbacks": "SELECT pg_try_advisory_xact_lock(%s)",
    "enqueue": (
        "WITH q AS (INSERT INTO {s}.deliveries (id, kind, subject_id, qualification, status,"
        " attempts, model, enqueued_at, next_attempt_at)"
        " VALUES (%(id)s, %(kind)s, %(subject_id)s, %(qualification)s::json, 'open', 0,"
        " %(model)s, %(now)s, %(due)s) ON CONFLICT (id) DO NOTHING RETURNING id, model, kind)"
        " INSERT INTO {s}.callback_deliveries (delivery_id, callback, model, kind, status,"
        " attempts, next_attempt_at)"
        " SELECT q.id, names.name, q.model, q.kind, 'pending', 0, %(due)s FROM q,"
        " (SELECT unnest(%(callbacks)s::text[]) AS name UNION SELECT name FROM {s}.callbacks"
        " WHERE model = %(model)s AND kind = %(kind)s AND seen_at >= %(known_since)s) AS names"
        " ORDER BY names.name"
    ),
    "register_callback": (
        "INSERT INTO {s}.callbacks (model, kind, name, seen_at)"
        " VALUES (%(model)s, %(kind)s, %(name)s, %(now)s)"
        " ON CONFLICT (model, kind, name) DO UPDATE SET seen_at = excluded.seen_at"
    ),
    "backfill": (
        "INSERT INTO {s}.callback_deliveries (delivery_id, callback, model, kind, status,"
        " attempts, next_attempt_at)"
        " SELECT d.id, %(name)s, d.model, d.kind, 'pending', 0, %(now)s FROM {s}.deliveries AS d"
        " WHERE d.status = 'open' AND d.model = %(model)s AND d.enqueued_at >= %(since)s"
        " AND d.kind = %(kind)s AND NOT EXISTS (SELECT 1 FROM {s}.callback_deliveries AS c"
        " WHERE c.delivery_id = d.id AND c.callback = %(name)s)"
        " ORDER BY d.created ON CONFLICT DO NOTHING"
    ),
    "known": (
        "SELECT name FROM {s}.callbacks WHERE model = %s AND kind = %s AND seen_at >= %s"
        " ORDER BY name"
    ),
    "add_records": (
        "INSERT INTO {s}.callback_deliveries (delivery_id, callback, model, kind, status,"
        " attempts, next_attempt_at)"
        " SELECT d.id, names.name, d.model, d.kind, 'pending', 0, %(now)s FROM {s}.deliveries"
        " AS d, unnest(%(names)s::text[]) AS names(name) WHERE d.id = %(id)s"
        " ON CONFLICT DO NOTHING"
    ),
    "claim_due": _CLAIM.replace("{filters}", " AND model = %(model)s::text"),
    "claim_any": _CLAIM.replace("{filters}", ""),
    "claim_ids": _CLAIM.replace(
        "{filters}", " AND model = %(model)s::text AND delivery_id = ANY(%(ids)s::text[])"
    ),
    "claim_any_ids": _CLAIM.replace("{filters}", " AND delivery_id = ANY(%(ids)s::text[])"),
    "renew_lease": (
        "UPDATE {s}.callback_deliveries SET lease_until = %s"
        " WHERE delivery_id = %s AND callback = %s AND attempts = %s AND status = 'pending'"
    ),
    "finish_delivery": (
        "UPDATE {s}.callback_deliveries SET status = %s, attempts = %s, next_attempt_at = %s,"
        " last_error = %s, lease_until = NULL, finished_at = %s"
        " WHERE delivery_id = %s AND callback = %s"
    ),
    "records": (
        f"SELECT d.created AS _order, c.seq AS _seq, {_RECORD_COLUMNS}"
        " FROM {s}.callback_deliveries AS c JOIN {s}.deliveries AS d ON d.id = c.delivery_id"
        " WHERE c.status = %(status)s"
        " AND (%(model)s::text IS NULL OR c.model = %(model)s::text)"
        " AND (%(callback)s::text IS NULL OR c.callback = %(callback)s::text)"
    ),
    "untaken": (
        f"SELECT d.created AS _order, -1::bigint AS _seq, {_UNTAKEN_COLUMNS}"
        " FROM {s}.deliveries AS d WHERE d.status = 'open'"
        " AND (%(model)s::text IS NULL OR d.model = %(model)s::text)"
        " AND NOT EXISTS (SELECT 1 FROM {s}.callback_deliveries AS c"
        " WHERE c.delivery_id = d.id)"
    ),
    "expired": (
        f"SELECT d.created AS _order, -1::bigint AS _seq, {_UNTAKEN_COLUMNS}"
        " FROM {s}.deliveries AS d WHERE d.status = 'expired'"
        " AND (%(model)s::text IS NULL OR d.model = %(model)s::text)"
    ),
    "legacy_dead": (
        "SELECT delivery_id, model, kind FROM {s}.callback_deliveries"
        " WHERE status = 'dead' AND callback = '*'"
        " AND (%(model)s::text IS NULL OR model = %(model)s::text)"
        " AND (%(callback)s::text IS NULL OR callback = %(callback)s::text)"
    ),
    "drop_legacy": (
        "DELETE FROM {s}.callback_deliveries WHERE delivery_id = %s AND callback = '*'"
    ),
    "reopen": (
        "UPDATE {s}.deliveries SET status = 'open', enqueued_at = %s, finished_at = NULL"
        " WHERE id = %s"
    ),
    "revive_dead": (
        "UPDATE {s}.callback_deliveries SET status = 'pending', attempts = 0,"
        " next_attempt_at = %(now)s, lease_until = NULL, finished_at = NULL"
        " WHERE status = 'dead'"
        " AND (%(model)s::text IS NULL OR model = %(model)s::text)"
        " AND (%(callback)s::text IS NULL OR callback = %(callback)s::text)"
    ),
    "expire_records": (
        "UPDATE {s}.callback_deliveries SET status = 'expired', finished_at = %(now)s"
        f" WHERE status = 'pending' AND attempts = 0 AND delivery_id IN ({_OPENING})"
    ),
    "expire_untaken": (
        "UPDATE {s}.deliveries AS d SET status = 'expired', finished_at = %(now)s"
        f" WHERE id IN ({_OPENING}) AND NOT EXISTS (SELECT 1 FROM {{s}}.callback_deliveries"
        " AS c WHERE c.delivery_id = d.id)"
    ),
    "close_rest": (
        f"UPDATE {{s}}.deliveries SET status = 'closed', finished_at = %(now)s"
        f" WHERE id IN ({_OPENING})"
    ),
    "purgeable": (
        "SELECT id FROM {s}.deliveries AS d WHERE d.status <> 'open' AND d.model = %(model)s"
        " AND d.finished_at < %(before)s AND NOT EXISTS (SELECT 1 FROM {s}.callback_deliveries"
        " AS c WHERE c.delivery_id = d.id AND (c.status NOT IN ('delivered', 'expired')"
        " OR c.finished_at IS NULL OR c.finished_at >= %(before)s))"
    ),
    "purge_records": "DELETE FROM {s}.callback_deliveries WHERE delivery_id = ANY(%s::text[])",
    "purge_deliveries": "DELETE FROM {s}.deliveries WHERE id = ANY(%s::text[])",
    "get_meta": "SELECT value FROM {s}.meta WHERE key = %s",
    "set_meta": (
        "INSERT INTO {s}.meta (key, value) VALUES (%s, %s)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    ),
}

# retention: checkpoints and pruning (Client.prune)
_STATEMENTS.update(
    {
        "prune_first": "SELECT min(seq) FROM {s}.events WHERE ts >= %s",
        "prune_delete": "DELETE FROM {s}.events WHERE seq = ANY(%s::bigint[])",
        "load_checkpoint": (
            "SELECT state, seq FROM {s}.checkpoints"
            " WHERE model = %s AND kind = %s AND subject_id = %s"
        ),
        "save_checkpoint": (
            "INSERT INTO {s}.checkpoints (model, kind, subject_id, state, seq, accounts)"
            " VALUES (%s, %s, %s, %s, %s, %s::text[]) ON CONFLICT (model, kind, subject_id)"
            " DO UPDATE SET state = excluded.state, seq = excluded.seq,"
            " accounts = excluded.accounts"
        ),
        "checkpoint_accounts": (
            "SELECT DISTINCT unnest(accounts) FROM {s}.checkpoints"
            " WHERE kind = 'user' AND subject_id = ANY(%s::text[])"
        ),
        "has_checkpoints": (
            "SELECT 1 FROM {s}.checkpoints WHERE kind = %s AND subject_id = ANY(%s::text[]) LIMIT 1"
        ),
        "delete_checkpoints": (
            "DELETE FROM {s}.checkpoints WHERE kind = %s AND subject_id = ANY(%s::text[])"
        ),
    }
)

# events() has a statement per combination of filters, so each can use its index.
_STATEMENTS.update(
    {
        f"events_{int(users)}{int(account)}": (
            f"SELECT {_EVENT_COLUMNS} FROM {{s}}.events WHERE seq > %s AND seq <= %s"
            + (" AND user_id = ANY(%s::text[])" if users else "")
            + (" AND account_id = %s" if account else "")
            + " ORDER BY seq LIMIT %s"
        )
        for users in (False, True)
        for account in (False, True)
    }
)


def _names(columns: str) -> tuple[str, ...]:
    """The result names of a column list: ``"a, b::text AS b"`` -> ``("a", "b")``."""
    return tuple(part.split()[-1].split(".")[-1] for part in columns.split(","))


# The names of each row-returning statement's columns (cheaper than cursor.description).
_COLUMNS: dict[str, tuple[str, ...]] = {
    **{name: _names(_EVENT_COLUMNS) for name in _STATEMENTS if name.startswith("events_")},
    "recent_events": _names(_EVENT_COLUMNS),
    "load_state": ("model", "kind", "subject_id", "state", "due_at", "version"),
    "latest_qualification": _names(_QUALIFICATION_COLUMNS),
    "qualifications": _names(_QUALIFICATION_COLUMNS),
    "find_qualification": _names(_QUALIFICATION_COLUMNS),
    "recent_qualifications": (*_names(_QUALIFICATION_COLUMNS), "payload"),
    **{
        name: ("seq", *_names(_RECORD_COLUMNS))
        for name in ("claim_due", "claim_any", "claim_ids", "claim_any_ids")
    },
    "records": ("_order", "_seq", *_names(_RECORD_COLUMNS)),
    "untaken": ("_order", "_seq", *_names(_UNTAKEN_COLUMNS)),
    "expired": ("_order", "_seq", *_names(_UNTAKEN_COLUMNS)),
    "legacy_dead": ("delivery_id", "model", "kind"),
}

_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
# A statement prepared on one server connection met on another: a transaction pooler
# (PgBouncer before 1.21, or without max_prepared_statements) hands each transaction
# whichever server connection is free. 42P05: "prepared statement ... already exists",
# 26000: "prepared statement ... does not exist".
_POOLER_SQLSTATES = frozenset({"42P05", "26000"})
_BEGIN_ATTEMPTS = 5


def _check_schema_name(schema: object) -> str:
    if not isinstance(schema, str):
        raise ValidationError("schema", f"must be a str, got {type(schema).__name__}")
    if not _SCHEMA_NAME.fullmatch(schema) or len(schema.encode()) > 63:
        raise ValidationError(
            "schema",
            f"{schema!r} is not a plain identifier (letters, digits and _, not starting with a"
            " digit, at most 63 characters)",
        )
    if schema.lower().startswith("pg_"):
        raise ValidationError("schema", "names starting with 'pg_' are reserved by PostgreSQL")
    return schema


def _split_schema(dsn: str) -> tuple[str, str | None]:
    """``dsn`` without a ``schema`` URL query parameter, and that parameter's value."""
    scheme, separator, _ = dsn.partition("://")
    if not separator or scheme.lower() not in ("postgres", "postgresql"):
        return dsn, None
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if not schemas:
        return dsn, None
    kept = urlencode([(k, v) for k, v in query if k != "schema"], quote_via=quote)
    return urlunsplit(parts._replace(query=kept)), schemas[-1]


def _split_pgbouncer(dsn: str) -> tuple[str, bool]:
    """``dsn`` without a ``pgbouncer`` URL query parameter, and whether it said true.

    ``?pgbouncer=true`` (Prisma's spelling) says a transaction pooler is in front of
    the server: statements are never prepared. Any other value than true/false/1/0
    (or a key=value DSN, which cannot carry it) is refused by the caller.
    """
    scheme, separator, _ = dsn.partition("://")
    if not separator or scheme.lower() not in ("postgres", "postgresql"):
        return dsn, False
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    values = [value for key, value in query if key == "pgbouncer"]
    if not values:
        return dsn, False
    flag = values[-1].lower()
    if flag not in ("true", "false", "1", "0"):
        raise ValidationError("dsn", f"pgbouncer={values[-1]!r} must be true or false")
    kept = urlencode([(k, v) for k, v in query if k != "pgbouncer"], quote_via=quote)
    return urlunsplit(parts._replace(query=kept)), flag in ("true", "1")


def lock_id(namespace: str, key: str) -> int:
    """The signed 64-bit advisory lock id of ``key`` in ``namespace`` (stable across processes)."""
    digest = hashlib.blake2b(
        f"{namespace}\x00{key}".encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def _redacted(dsn: str) -> str:
    """The DSN's host, port and database, for messages (never the password)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    parts = [f"{k}={params[k]}" for k in ("host", "port", "dbname", "user") if params.get(k)]
    return " ".join(parts) or "(default connection parameters)"


# -- forks ---------------------------------------------------------------------------------

_open_lock = _process.Lock()  # guards opening a pool

# Pools inherited across fork(). Never used nor closed in the child: closing one
# would end the parent's server sessions, and keeping a reference stops garbage
# collection from trying to.
_inherited: list[ConnectionPool[Any]] = []


@attrs.define
class _Pool:
    """This process's pool."""

    pool: ConnectionPool[Any]
    pid: int


# -- the transaction ---------------------------------------------------------------------


def _forget_prepared(conn: psycopg.Connection[Any]) -> None:
    """After a pipeline failed: forget every statement prepared on ``conn``.

    psycopg (3.3) remembers a statement it prepared inside a pipeline that failed as
    prepared, though the server skipped it after the error: its next run by name fails
    with "prepared statement _pg3_3 does not exist" (found by ``tests/test_races.py``
    and ``tests/test_pg_roundtrips.py``). Clearing psycopg's cache makes it deallocate
    them all on the server and prepare them again. Where that cache is not found (another
    psycopg), the connection is closed instead: the pool replaces it.
    """
    prepared = getattr(conn, "_prepared", None)
    clear = getattr(prepared, "clear", None)
    if callable(clear):
        clear()
    else:
        conn.close()


class _PostgresTransaction:
    """The Transaction protocol over one transaction (or savepoint) on ``cursor``.

    **Batched** (a ``store.transaction()``): nothing is sent until a statement needs its
    result. Locks and writes whose result nobody reads wait in ``_pending`` and go out
    in one pipeline with the next statement that is read (the first one after
    ``BEGIN``, the locks, and a read of the store's generation), or with ``COMMIT``.
    A Client whose warm cache holds every subject an event touches reads nothing, so
    its whole ``track()`` is one pipeline, one round trip: ``BEGIN``, the locks, the
    event (checked new), each state (checked unchanged since the Client last saw it:
    its row ``version``), the generation (checked unchanged: no alias, traits,
    suppression or forget since), ``COMMIT``. A failed check raises
    :class:`StaleCache`: everything is rolled back and the Client runs the write
    again cold, reading everything as before.

    **Joined** (``store.joined()``): every statement is sent when it is called, inside
    the caller's transaction, as before.
    """

    def __init__(
        self,
        cursor: psycopg.Cursor[Any],
        sql: dict[str, bytes],
        namespace: str,
        store: PostgresStore | None = None,
    ) -> None:
        self._cur = cursor
        self._sql = sql
        self._namespace = namespace
        self._held: set[str] = set()
        # Traits read in this transaction. A subject's traits are written only
        # under its lock (identify: the user's, group: the account's), which
        # track() holds too, so a second read would return the same.
        self._traits: dict[tuple[str, str], dict[str, Any]] = {}
        self._store = store  # None: joined, every statement sent at once
        self._begun = store is None
        self._pending: list[tuple[bytes, Any]] = []
        self._batching = False  # batch() was called: event inserts may wait too
        # (model, kind, subject id) -> version: states used from a warm cache, checked
        # unchanged at commit unless a checked save of them does it
        self._checks: dict[tuple[str, str, str], int] = {}
        self._token: tuple[Hashable, int] | None = None
        self._done = False  # committed
        # the generation the store was last found at (the token's), the one checked
        # (batching: the Client's warm cache was current at it), what this
        # transaction read, and how far its own writes counted it
        self._found = None if store is None else store._generation
        self._expected: int | None = None
        self._seen: int | None = None
        self._counted: int | None = None
        self._broken = False  # someone else counted the generation while we did

    # -- sending ----------------------------------------------------------------------
    def _pipeline(
        self, tail: list[tuple[bytes, Any]], head: bytes | None = None
    ) -> list[psycopg.Cursor[Any]]:
        """Send ``head``, the pending statements and ``tail`` in one pipeline (one round
        trip); the cursors of ``tail``'s statements, with their results."""
        import psycopg

        conn = self._cur.connection
        cursors: list[psycopg.Cursor[Any]] = []
        first: psycopg.Error | None = None  # a statement's error, raised once it is synced
        try:
            with conn.pipeline():
                try:
                    if head is not None:
                        self._cur.execute(head, prepare=False)
                    for query, params in self._pending:
                        self._cur.execute(query, params)
                    for query, params in tail:
                        cursor = conn.cursor()
                        cursor.execute(query, params)
                        cursors.append(cursor)
                except psycopg.Error as error:
                    # psycopg may raise it before the block ends (a result read early):
                    # end the pipeline quietly (not "error ignored terminating" logged)
                    first = error
        except BaseException as error:
            _forget_prepared(conn)
            if first is not None and isinstance(error, psycopg.Error):
                raise first from None
            raise
        if first is not None:
            _forget_prepared(conn)
            raise first
        self._pending = []
        return cursors

    def _start(self, tail: list[tuple[bytes, Any]]) -> list[psycopg.Cursor[Any]]:
        """``BEGIN``, what is pending, a read of the generation, then ``tail``."""
        assert self._store is not None
        cursors = self._store._first_send(self, [(self._sql["generation"], None), *tail])
        self._begun = True
        row = cursors[0].fetchone()
        seen = self._seen = None if row is None else int(row[0])
        if self._expected is not None and seen != self._expected:
            raise StaleCache("the store's generation changed since the warm cache was read")
        return cursors[1:]

    def _send(self, query: bytes, params: Any, prepare: bool | None = None) -> Any:
        """Run one statement whose result is read (sending what is pending before it)."""
        if not self._begun:
            return self._start([(query, params)])[0]
        if self._pending:
            return self._pipeline([(query, params)])[0]
        return self._cur.execute(query, params, prepare=prepare)

    def _defer(self, name: str, params: Any) -> None:
        """A statement whose result nobody reads: sent with the next one that is read."""
        if self._store is None:
            self._cur.execute(self._sql[name], params)
        else:
            self._pending.append((self._sql[name], params))

    def commit(self) -> None:
        """Send what is pending with ``COMMIT`` (nothing at all if nothing was asked)."""
        assert self._store is not None
        if not self._begun:
            if not self._pending:
                return
            tail: list[tuple[bytes, Any]] = self._checked()
            if self._expected is not None:
                tail.append((self._sql["check_generation"], (self._expected,)))
            tail.append((b"COMMIT", None))
            self._store._first_send(self, tail, final=True)
            self._seen = self._expected
        elif self._pending or self._checks:
            self._pipeline([*self._checked(), (b"COMMIT", None)])
        else:
            self._cur.execute(b"COMMIT")

    def batch(self) -> None:
        """Let event inserts wait too: called by a Client whose warm cache is in use.

        An insert sent before anything was read is checked new in the batch (a
        duplicate raises :class:`StaleCache`, and the Client's run again finds it
        stored) and returns its record with seq 0 (not known yet).
        """
        self._batching = True
        self._expected = self._found

    def check_state(self, model: str, kind: SubjectKind, subject_id: str, version: int) -> None:
        """Check at commit that the state row is still at ``version`` (ABSENT: no row),
        else fail with :class:`StaleCache`: the Client used it as its cache kept it."""
        self._checks[model, kind, subject_id] = version

    def _checked(self) -> list[tuple[bytes, Any]]:
        """The checks of states used but not saved, as statements (sent at commit)."""
        checks, self._checks = self._checks, {}
        return [
            (
                self._sql["check_state"],
                {"model": model, "kind": kind, "subject_id": sid, "version": version},
            )
            for (model, kind, sid), version in checks.items()
        ]

    def generation(self) -> int | None:
        """The generation a warm cache is current at after this transaction committed."""
        if self._broken:
            return None
        return self._counted if self._counted is not None else self._seen

    def _count(self) -> None:
        """Count the generation up: this write changes what warm caches may hold."""
        if self._store is None:
            self._execute("bump_generation")
            return
        value = int(self._scalar("bump_generation"))
        before = self._counted if self._counted is not None else self._seen
        if before is None or value != before + 1:
            self._broken = True  # another write counted it too: our cache may be stale
        self._counted = value

    def _execute(self, name: str, params: Any = None) -> psycopg.Cursor[Any]:
        prepare = False if name in _PLANNED_EACH_TIME else None
        if self._store is None:
            return self._cur.execute(self._sql[name], params, prepare=prepare)
        cursor: psycopg.Cursor[Any] = self._send(self._sql[name], params, prepare)
        return cursor

    def _dicts(self, name: str, params: Any = None) -> list[dict[str, Any]]:
        names = _COLUMNS[name]
        rows = self._execute(name, params).fetchall()
        return [dict(zip(names, row, strict=True)) for row in rows]

    def _scalar(self, name: str, params: Any = None) -> Any:
        row = self._execute(name, params).fetchone()
        return None if row is None else row[0]

    def _column(self, name: str, params: Any = None) -> list[Any]:
        return [row[0] for row in self._execute(name, params).fetchall()]

    def cache_token(self) -> tuple[Hashable, int] | None:
        """(a :class:`Checked` key, transactions begun on this store before this one);
        None when joined. The key: the generation the store was last found at, as
        this transaction began; once it committed, the one it left (what it read,
        checked or counted; unknown if another write counted it meanwhile).

        Unlike SQLite's, the key does not prove that nobody else wrote: the store
        checks that at commit (each state used unchanged since the Client read it,
        the generation unchanged), and raises :class:`StaleCache` if not.
        """
        if self._token is None or not self._done:
            return self._token
        generation = self.generation()
        key = object() if generation is None else (_process.pid, generation)
        return Checked(key), self._token[1]

    def check_integrity(self) -> None:
        """Nothing here: PostgreSQL checks its own pages (``data_checksums``)."""

    def lock(self, keys: Sequence[str]) -> None:
        """Take ``pg_advisory_xact_lock`` on each key (sorted), held until the transaction ends.

        Batching (see :meth:`batch`), it is sent with the next statement: before
        anything read or written after it, but the call itself does not wait.
        """
        wanted = sorted(set(keys) - self._held)
        if not wanted:
            return
        # One statement: unnest() yields the ids in array order, and the aggregate
        # takes them one after the other in that order.
        query = b"SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k"
        params = ([lock_id(self._namespace, key) for key in wanted],)
        if self._store is None:
            self._cur.execute(query, params)
        elif self._batching:
            self._pending.append((query, params))
        else:
            self._send(query, params)
        self._held.update(wanted)

    def try_lock(self, keys: Sequence[str]) -> bool:
        """Take ``pg_try_advisory_xact_lock`` on each key (sorted) without waiting.

        True if every key is held now; False if another transaction holds one
        (those taken stay held until this transaction ends). The Client uses it
        for a key it finds it needs only after locking keys that sort after it:
        waiting for it could deadlock, so it runs the transaction again instead.
        """
        wanted = sorted(set(keys) - self._held)
        if not wanted:
            return True
        query = (
            b"SELECT pg_try_advisory_xact_lock(k) FROM unnest(%s::bigint[]) WITH ORDINALITY"
            b" AS t(k, n) ORDER BY n"
        )
        params = ([lock_id(self._namespace, key) for key in wanted],)
        if self._store is None:
            rows = self._cur.execute(query, params).fetchall()
        else:
            rows = self._send(query, params).fetchall()
        taken = [key for key, row in zip(wanted, rows, strict=True) if row[0]]
        self._held.update(taken)
        return len(taken) == len(wanted)

    # -- event log -------------------------------------------------------------------
    def insert_event(self, event: NewEvent) -> EventRecord | None:
        if self._batching and not self._begun:
            # Batched: checked new when sent (a duplicate fails the transaction with
            # StaleCache, and the run again finds it), its seq not known: 0. A Client
            # writes every state on PostgreSQL (no tail to catch up), so no state
            # reads the seq it folded in; one rebuilt from the log (which must leave
            # this event out) runs the write again instead.
            self._defer("insert_event_new", _rows.unstructure(event))
            return EventRecord(seq=0, **attrs.asdict(event, recurse=False))
        seq = self._scalar("insert_event", _rows.unstructure(event))
        if seq is None:
            return None
        return EventRecord(seq=int(seq), **attrs.asdict(event, recurse=False))

    def events(
        self,
        *,
        user_ids: Sequence[str] | None = None,
        account_id: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> Iterator[EventRecord]:
        """Events in arrival order, read in pages (valid inside the transaction only)."""
        high = int(self._scalar("max_seq"))
        name = f"events_{int(user_ids is not None)}{int(account_id is not None)}"
        filters: list[Any] = []
        if user_ids is not None:
            filters.append(list(user_ids))
        if account_id is not None:
            filters.append(account_id)
        yield from event_pages(
            lambda after, size: self._dicts(name, [after, high, *filters, size]), after_seq, limit
        )

    def recent_events(self, user_ids: Sequence[str], limit: int) -> list[EventRecord]:
        rows = self._dicts("recent_events", (list(user_ids), limit))
        return [_rows.structure(row, EventRecord) for row in rows]

    def has_message(self, message_id: str) -> bool:
        return self._scalar("has_message", (message_id,)) is not None

    # -- identity ----------------------------------------------------------------------
    def resolve(self, user_id: str) -> str:
        target = self._scalar("resolve", (user_id,))
        return user_id if target is None else str(target)

    def aliases_of(self, user_id: str) -> list[str]:
        return [str(v) for v in self._column("aliases_of", (user_id,))]

    def set_alias(self, previous_id: str, user_id: str) -> None:
        self._count()
        self._execute("retarget_aliases", (user_id, previous_id))
        self._execute("set_alias", (previous_id, user_id))

    def traits(self, kind: SubjectKind, subject_id: str) -> dict[str, Any]:
        cached = self._traits.get((kind, subject_id))
        if cached is None:
            text = self._scalar("traits", (kind, subject_id))
            cached = self._traits[kind, subject_id] = {} if text is None else dict(loads(text))
        return dict(cached)

    def set_traits(self, kind: SubjectKind, subject_id: str, traits: dict[str, Any]) -> None:
        text = dumps(traits)
        self._count()
        self._execute("set_traits", (kind, subject_id, text))
        self._traits[kind, subject_id] = loads(text)  # a deep copy, as a read would give

    def accounts_of(self, user_ids: Sequence[str]) -> set[str]:
        return {str(v) for v in self._column("accounts_of", (list(user_ids),))}

    def users_of(self, account_id: str) -> set[str]:
        return {str(v) for v in self._column("users_of", (account_id,))}

    def forget_users(self, user_ids: Sequence[str]) -> None:
        wanted = list(user_ids)
        self._traits.clear()
        self._count()
        self._execute("forget_events", (wanted,))
        self._execute("forget_traits", (wanted,))
        self._execute("forget_aliases", {"ids": wanted})
        self._execute("forget_nudges", (wanted,))
        # every model's states and ranks of these users (an old model version's too)
        self._execute("forget_states", (wanted,))
        self._execute("forget_ranks", (wanted,))

    def suppress(self, digest: str, at: datetime) -> bool:
        self._count()
        return int(self._execute("suppress", (digest, to_us(at))).rowcount) == 1

    def unsuppress(self, digest: str) -> bool:
        self._count()
        return int(self._execute("unsuppress", (digest,)).rowcount) == 1

    def has_suppressions(self) -> bool:
        return self._scalar("has_suppressions") is not None

    def drop_suppressed(self, digests: Sequence[str]) -> bool:
        return int(self._execute("drop_suppressed", (list(digests),)).rowcount) > 0

    def suppressed_calls(self) -> int:
        return int(self._scalar("suppressed_calls"))

    def user_rows(self, user_ids: Sequence[str]) -> dict[str, int]:
        row = self._execute("user_rows", {"ids": list(user_ids)}).fetchone()
        assert row is not None  # one row of counts
        return dict(zip(_USER_ROW_TABLES, (int(v) for v in row), strict=True))

    def invalidate_states(self, kind: SubjectKind, subject_id: str, *, keep: str) -> int:
        self._count()
        return int(
            self._execute("invalidate_states", (INVALID_STATE, kind, subject_id, keep)).rowcount
        )

    # -- derived state -------------------------------------------------------------------
    def load_state(self, model: str, kind: SubjectKind, subject_id: str) -> StateRecord | None:
        rows = self._dicts("load_state", (model, kind, subject_id))
        return _rows.structure(rows[0], StateRecord) if rows else None

    def save_state(self, record: StateRecord) -> int | None:
        """Write the state with a new version, and return it. With ``record.version``
        (the version the caller last saw, or ABSENT: no row), the write is checked:
        if the row changed since, the transaction fails with :class:`StaleCache`."""
        version = secrets.randbits(62) + 1
        params = {
            "model": record.model,
            "kind": record.kind,
            "subject_id": record.subject_id,
            "state": record.state,
            "due_at": None if record.due_at is None else to_us(record.due_at),
            "version": version,
            "expected": record.version,
        }
        self._checks.pop((record.model, record.kind, record.subject_id), None)
        if record.version is None:
            self._defer("save_state", params)
        elif record.version == ABSENT:
            self._defer("save_state_new", params)
        else:
            self._defer("save_state_if", params)
        return version

    def delete_state(self, model: str, kind: SubjectKind, subject_id: str) -> None:
        self._execute("delete_state", (model, kind, subject_id))
        self._execute("delete_ranks", (model, kind, subject_id))

    def clear_states(self, model: str) -> None:
        self._count()
        self._execute("clear_states", (model,))
        self._execute("clear_ranks", (model,))

    def due_subjects(self, model: str, now: datetime, limit: int) -> list[tuple[SubjectKind, str]]:
        rows = self._execute("due_subjects", (model, to_us(now), limit)).fetchall()
        return [(row[0], row[1]) for row in rows]

    def count_subjects(self, model: str, kind: SubjectKind) -> int:
        return int(self._scalar("count_subjects", (model, kind)))

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
        self._defer(
            "save_ranks",
            {
                "model": model,
                "kind": kind,
                "subject_id": subject_id,
                "names": [r.name for r in ranks],
                "values": [r.value for r in ranks],
                "changes": [None if r.changes_at is None else to_us(r.changes_at) for r in ranks],
                "at": None if at is None else to_us(at),
            },
        )

    def top_ranks(
        self, model: str, kind: SubjectKind, name: str, n: int
    ) -> list[tuple[str, float]]:
        rows = self._execute("top_ranks", (model, kind, name, n)).fetchall()
        return [(row[0], float(row[1])) for row in rows]

    def stale_ranks(
        self, model: str, kind: SubjectKind, name: str, now: datetime, limit: int
    ) -> list[str]:
        return [str(v) for v in self._column("stale_ranks", (model, kind, name, to_us(now), limit))]

    # -- qualifications ------------------------------------------------------------------
    def latest_qualification(
        self, model: str, kind: str, subject_id: str
    ) -> QualificationRecord | None:
        rows = self._dicts("latest_qualification", (model, kind, subject_id))
        return _rows.structure(rows[0], QualificationRecord) if rows else None

    def insert_qualification(self, record: QualificationRecord) -> bool:
        cursor = self._execute("insert_qualification", _rows.unstructure(record))
        return cursor.rowcount == 1

    def set_disqualified(self, qualification_id: str, at: datetime) -> None:
        self._execute("set_disqualified", (to_us(at), qualification_id))

    def qualifications(self, model: str) -> Iterator[QualificationRecord]:
        rows = self._dicts("qualifications", (model,))
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
        found = self._dicts(
            "recent_qualifications",
            {
                "model": model,
                "kinds": list(kinds),
                "since": -(2**63) if since is None else to_us(since),
                "at": None if before is None else to_us(before[0]),
                "id": None if before is None else before[1],
                "limit": limit,
            },
        )
        out: list[tuple[QualificationRecord, Qualification | None]] = []
        for row in found:
            text = row.pop("payload")
            record = _rows.structure(row, QualificationRecord)
            out.append((record, None if text is None else payload(text)))
        return out

    def find_qualification(self, qualification_id: str) -> QualificationRecord | None:
        rows = self._dicts("find_qualification", (qualification_id,))
        return _rows.structure(rows[0], QualificationRecord) if rows else None

    def delete_qualifications(self, subject_id: str, kind: str) -> None:
        self._execute("delete_qualifications", (subject_id, kind))
        self._execute("delete_callback_deliveries", (subject_id, kind))
        self._execute("delete_deliveries", (subject_id, kind))

    # -- outbox ------------------------------------------------------------------------
    def _callbacks_lock(self, model: str) -> int:
        return lock_id(self._namespace, f"$callbacks:{model}")

    def enqueue(
        self,
        delivery: DeliveryRecord,
        callbacks: Sequence[str] = (),
        *,
        now: datetime,
        known_since: datetime | None = None,
    ) -> None:
        self._execute("share_callbacks", (self._callbacks_lock(delivery.model),))
        due = delivery.next_attempt_at
        self._execute(
            "enqueue",
            {
                "id": delivery.id,
                "kind": delivery.kind,
                "subject_id": delivery.subject_id,
                "qualification": _rows.unstructure(delivery)["qualification"],
                "model": delivery.model,
                "now": to_us(now),
                "due": None if due is None else to_us(due),
                "callbacks": list(callbacks),
                "known_since": -(2**63) if known_since is None else to_us(known_since),
            },
        )

    def register_callback(
        self, model: str, kind: str, name: str, now: datetime, *, since: datetime
    ) -> bool:
        if not self._scalar("own_callbacks", (self._callbacks_lock(model),)):
            return False  # an enqueuer is committing: the next pass registers it
        params = {"model": model, "kind": kind, "name": name, "now": to_us(now)}
        self._execute("register_callback", params)
        self._execute("backfill", {**params, "since": to_us(since)})
        return True

    def replace_qualification(self, delivery_id: str, qualification: Qualification) -> None:
        row = _rows.unstructure(
            DeliveryRecord(delivery_id, "pql", qualification.subject_id, qualification)
        )
        self._execute(
            "replace_qualification",
            {"id": delivery_id, "qualification": row["qualification"]},
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
        name = ("claim_any", "claim_due", "claim_any_ids", "claim_ids")[
            (model is not None) + 2 * (ids is not None)
        ]
        rows = self._dicts(
            name,
            {
                "ids": None if ids is None else list(ids),
                "lease_until": to_us(lease_until),
                "callbacks": list(callbacks),
                "model": model,
                "now": to_us(now),
                "wall_now": to_us(wall_now),
                "limit": limit,
            },
        )
        rows.sort(key=lambda row: row.pop("seq"))
        return [_rows.structure(row, DeliveryRecord) for row in rows]

    def renew_lease(
        self, delivery_id: str, callback: str, attempts: int, lease_until: datetime
    ) -> bool:
        cursor = self._execute("renew_lease", (to_us(lease_until), delivery_id, callback, attempts))
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
        self._execute(
            "finish_delivery",
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
        params = {"status": status, "model": model, "callback": callback}
        rows = self._dicts("records", params)
        if callback is None and status == "pending":
            rows += self._dicts("untaken", params)
        elif callback is None and status == "expired":
            rows += self._dicts("expired", params)
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
        params = {"now": to_us(now), "model": model, "callback": callback}
        legacy = self._dicts("legacy_dead", params)
        for row in legacy:  # migrated: open the qualification to every callback again
            self._execute("share_callbacks", (self._callbacks_lock(row["model"]),))
            self._execute("drop_legacy", (row["delivery_id"],))
            self._execute("reopen", (to_us(now), row["delivery_id"]))
            since = -(2**63) if known_since is None else to_us(known_since)
            names = self._column("known", (row["model"], row["kind"], since))
            self._execute(
                "add_records", {"now": to_us(now), "names": names, "id": row["delivery_id"]}
            )
        return len(legacy) + self._execute("revive_dead", params).rowcount

    def close_deliveries(self, before: datetime, now: datetime, *, model: str) -> int:
        params = {"model": model, "before": to_us(before), "now": to_us(now)}
        expired = self._execute("expire_records", params).rowcount
        expired += self._execute("expire_untaken", params).rowcount
        self._execute("close_rest", params)
        return expired

    def purge_deliveries(self, before: datetime, *, model: str) -> int:
        ids = self._column("purgeable", {"model": model, "before": to_us(before)})
        if ids:
            self._execute("purge_records", (ids,))
            self._execute("purge_deliveries", (ids,))
        return len(ids)

    # -- nudges --------------------------------------------------------------------------
    def open_nudge(self, record: NudgeRecord, now: datetime) -> bool:
        self._execute("expire_nudge", (record.user_id, record.key, to_us(now)))
        row = self._execute(
            "open_nudge",
            {
                "user_id": record.user_id,
                "key": record.key,
                "payload": None if record.payload is None else dumps(record.payload),
                "created_at": to_us(record.created_at),
                "until": None if record.until is None else to_us(record.until),
                "seen_at": None if record.seen_at is None else to_us(record.seen_at),
                "model": record.model,
                "play": record.play,
            },
        ).fetchone()
        return row is not None

    def nudges(self, user_id: str, now: datetime) -> list[NudgeRecord]:
        rows = self._execute("nudges", (user_id, to_us(now))).fetchall()
        return nudge_records(user_id, rows)

    def mark_nudge(self, user_id: str, key: str, action: NudgeAction, at: datetime) -> bool | None:
        when = to_us(at)
        if action == "seen":
            cursor = self._execute("see_nudge", (when, user_id, key))
        else:
            cursor = self._execute("close_nudge", (action, when, when, user_id, key))
        if cursor.rowcount:
            return True
        return None if self._scalar("has_nudge", (user_id, key)) is None else False

    # -- retention -----------------------------------------------------------------------
    def prune_cut(self, before: datetime) -> int:
        first = self._scalar("prune_first", (to_us(before),))
        if first is None:
            return int(self._scalar("max_seq"))
        return int(first) - 1

    def delete_events(self, seqs: Sequence[int]) -> int:
        return int(self._execute("prune_delete", (list(seqs),)).rowcount)

    def load_checkpoint(
        self, model: str, kind: SubjectKind, subject_id: str
    ) -> tuple[str, int] | None:
        row = self._execute("load_checkpoint", (model, kind, subject_id)).fetchone()
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
        params = (model, kind, subject_id, state, seq, sorted(accounts))
        self._execute("save_checkpoint", params)

    def checkpoint_accounts(self, user_ids: Sequence[str]) -> set[str]:
        return {str(v) for v in self._column("checkpoint_accounts", (list(user_ids),))}

    def has_checkpoints(self, kind: SubjectKind, subject_ids: Sequence[str]) -> bool:
        return self._scalar("has_checkpoints", (kind, list(subject_ids))) is not None

    def delete_checkpoints(self, kind: SubjectKind, subject_ids: Sequence[str]) -> int:
        return int(self._execute("delete_checkpoints", (kind, list(subject_ids))).rowcount)

    # -- metadata ------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        value = self._scalar("get_meta", (key,))
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        self._count()  # a model's fingerprint, a rebuild's claim, the suppression key
        self._execute("set_meta", (key, value))


# -- the store -------------------------------------------------------------------------


class PostgresStore:
    """A store in a PostgreSQL database: for several app servers sharing one database.

    Connections come from a pool (psycopg 3 and psycopg-pool: ``pip install
    "pqlkit[postgres]"``); each ``transaction()`` is one READ COMMITTED
    transaction on one pooled connection. Writers to the same subject serialize
    on transaction-level advisory locks, so the store is safe behind PgBouncer
    in transaction pooling mode. A forked child (``gunicorn --preload``) opens
    its own pool.

    Args:
        dsn: A libpq connection string or URL, e.g.
            ``"postgresql://app@db.internal:5432/app"``. A URL may name the
            schema in a ``schema`` query parameter (``...?schema=analytics``),
            as Prisma's do; it is removed before connecting.
        schema: The PostgreSQL schema holding pqlkit's tables, created if
            missing; default ``"pqlkit"``. A plain identifier: letters, digits
            and ``_``.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
        timeout: Seconds to wait for a pooled connection before giving up
            with :class:`~pqlkit.exceptions.StoreError`.
        prepare_threshold: psycopg's ``prepare_threshold``: after how many runs
            a statement is prepared on the server. ``None`` never prepares
            (for PgBouncer older than 1.21, or without ``max_prepared_statements``,
            in transaction pooling mode; a URL says so with ``?pgbouncer=true``).
            A store that meets the error a transaction pooler causes (a statement
            prepared on another server connection) stops preparing, for good,
            and raises TransientStoreError, which the Client retries.
        read_only: Open an existing store only to read it (what
            :func:`pqlkit.backtest` does): the schema is never created nor
            migrated, and every transaction is ``READ ONLY`` (a write raises
            StoreError).

    Raises:
        ValidationError: ``schema`` is not a plain identifier, or a size is not
            a positive int.
        StoreError: psycopg is not installed, or the database cannot be reached.
        SchemaError: The schema was written by a newer pqlkit (or, with
            ``read_only``, holds no pqlkit store of this version).

    Example:
        >>> from pqlkit.stores.postgres import PostgresStore
        >>> store = PostgresStore("postgresql://postgres@127.0.0.1/test")  # doctest: +SKIP
        >>> with store.transaction() as tx:  # doctest: +SKIP
        ...     tx.set_meta("greeting", "hello")
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        prepare_threshold: int | None = 5,
        read_only: bool = False,
    ) -> None:
        try:
            import psycopg
            import psycopg_pool  # noqa: F401
        except ImportError as error:
            raise StoreError(f"{_INSTALL_HINT} ({error})") from error
        if not isinstance(dsn, str):
            raise ValidationError("dsn", f"must be a str, got {type(dsn).__name__}")
        dsn, in_url = _split_schema(dsn)
        dsn, behind_pooler = _split_pgbouncer(dsn)
        if behind_pooler:
            prepare_threshold = None
        if schema is not None and in_url is not None and schema != in_url:
            raise ValidationError(
                "schema", f"{schema!r} differs from the URL's schema={in_url!r}; give one"
            )
        if schema is None:
            schema = DEFAULT_SCHEMA if in_url is None else in_url
        self._schema = _check_schema_name(schema)
        for name, size in (("min_size", min_size), ("max_size", max_size)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValidationError(name, f"must be a positive int, got {size!r}")
        if max_size < min_size:
            raise ValidationError("max_size", f"must be at least min_size ({min_size})")
        try:
            self._where = _redacted(dsn)
        except psycopg.ProgrammingError as error:
            raise ValidationError("dsn", f"is not a valid connection string: {error}") from None
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._prepare_threshold = prepare_threshold
        self._read_only = read_only
        self._begin_sql = (
            b"BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY"
            if read_only
            else b"BEGIN ISOLATION LEVEL READ COMMITTED"
        )
        self._closed = False
        self._local = threading.local()
        self._state_lock = threading.Lock()
        self._serial = 0  # transactions begun on this store (the warm cache's token)
        # the generation the last committed transaction left current (None: unknown)
        self._generation: int | None = None
        schema_id = psycopg.sql.Identifier(schema)
        self._sql = {
            name: psycopg.sql.SQL(template).format(s=schema_id).as_bytes(None)
            for name, template in _STATEMENTS.items()
        }
        self._migrate()
        self._current: _Pool | None = self._open_pool()

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding pqlkit's tables."""
        return self._schema

    def __repr__(self) -> str:
        closed = ", closed" if self._closed else ""
        return f"<PostgresStore {self._where} schema={self._schema!r}{closed}>"

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- connections ---------------------------------------------------------------------
    def _connect_kwargs(self) -> dict[str, Any]:
        return {"autocommit": True, "prepare_threshold": self._prepare_threshold}

    def _migrate(self) -> None:
        """Create or upgrade the schema, on a connection of its own, under an advisory lock."""
        import psycopg
        from psycopg import sql

        try:
            # prepare_threshold=None: a migration runs a statement a few times at most,
            # and behind a transaction pooler a statement it prepared would meet (or be
            # left for) another client's of the same name on the server connection
            conn = psycopg.connect(
                self._dsn, connect_timeout=max(1, int(self._timeout)), prepare_threshold=None
            )
        except psycopg.Error as error:
            raise StoreError(f"cannot connect to PostgreSQL at {self._where}: {error}") from error
        schema_id = sql.Identifier(self._schema)
        try:
            with conn:
                version = self._version(conn)
                if version == SCHEMA_VERSION:
                    return
                if self._read_only:
                    raise SchemaError(
                        f"schema {self._schema!r} at {self._where} "
                        + (
                            "holds no pqlkit store"
                            if version == 0
                            else f"has version {version}, older than this pqlkit's"
                            f" {SCHEMA_VERSION}: open it once with a Client to upgrade it"
                        )
                    )
                with conn.transaction():
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(%s)",
                        (lock_id(self._schema, "$migrate"),),
                    )
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema_id))
                    conn.execute(sql.SQL(_SCHEMA_VERSION_TABLE).format(s=schema_id))
                    version = self._version(conn)  # another process may have migrated meanwhile
                    for target in range(version + 1, SCHEMA_VERSION + 1):
                        for statement in _MIGRATIONS[target - 1]:
                            conn.execute(sql.SQL(statement).format(s=schema_id))
                        conn.execute(
                            sql.SQL(
                                "INSERT INTO {}.schema_version (version, applied_at)"
                                " VALUES (%s, %s)"
                            ).format(schema_id),
                            (target, to_us(datetime.now(timezone.utc))),
                        )
        except psycopg.Error as error:
            raise StoreError(
                f"cannot create pqlkit's schema {self._schema!r} at {self._where}: {error}"
            ) from error

    def _version(self, conn: psycopg.Connection[Any]) -> int:
        """The schema's version (0 when there is none yet); refuses a newer one."""
        from psycopg import sql

        table = sql.Identifier(self._schema, "schema_version").as_string(conn)
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        version = 0
        if exists is not None and exists[0]:
            row = conn.execute(
                sql.SQL("SELECT max(version) FROM {}").format(
                    sql.Identifier(self._schema, "schema_version")
                )
            ).fetchone()
            version = int(row[0] or 0) if row is not None else 0
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"schema {self._schema!r} at {self._where} has version {version}, but this"
                f" pqlkit knows versions up to {SCHEMA_VERSION}: upgrade pqlkit to use it"
            )
        return version

    def _open_pool(self) -> _Pool:
        from psycopg_pool import ConnectionPool

        pool: ConnectionPool[Any] = ConnectionPool(
            self._dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            timeout=self._timeout,
            kwargs=self._connect_kwargs(),
            name=f"pqlkit-{self._schema}",
            open=False,
        )
        pool.open(wait=False)
        return _Pool(pool, _process.pid)

    def _pool(self) -> ConnectionPool[Any]:
        """This process's pool, opened anew after a fork."""
        current = self._current
        if current is not None and current.pid == _process.pid:
            return current.pool
        with _open_lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed")
            current = self._current
            if current is None or current.pid != _process.pid:
                if current is not None:
                    _inherited.append(current.pool)  # the parent's: never touch it
                current = self._current = self._open_pool()
            return current.pool

    def _getconn(self) -> psycopg.Connection[Any]:
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            conn: psycopg.Connection[Any] = self._pool().getconn()
            if conn.prepare_threshold != self._prepare_threshold:  # set to None since
                conn.prepare_threshold = self._prepare_threshold
            return conn
        except PoolTimeout as error:
            raise StoreError(
                f"no PostgreSQL connection became free within {self._timeout} s"
            ) from error
        except psycopg.Error as error:  # the pool is closed
            raise StoreError(f"{self!r} cannot hand out connections: {error}") from error

    def _first_send(
        self, tx: _PostgresTransaction, tail: list[tuple[bytes, Any]], *, final: bool = False
    ) -> list[psycopg.Cursor[Any]]:
        """A transaction's first pipeline (from its ``BEGIN``), on a pooled connection
        replaced and the pipeline sent again if it is found broken: nothing ran yet.

        With ``final`` (the pipeline ends in ``COMMIT``) a connection that broke may
        have committed: TransientStoreError, and the Client runs its write again
        (an event's message id makes that safe: the second run finds it stored).
        """
        import psycopg

        failed = 0
        while True:
            try:
                return tx._pipeline(tail, self._begin_sql)
            except psycopg.OperationalError as error:
                conn = tx._cur.connection
                if not (conn.broken or conn.closed):
                    raise
                if final:
                    raise TransientStoreError(
                        f"the connection to {self._where} broke while committing: {error}"
                    ) from error
                failed += 1
                if failed == 1:
                    # The server, or a pooler in front of it, went away: the other idle
                    # connections are likely broken too. Test them now, once, rather than
                    # meet them one by one.
                    with suppress(psycopg.Error):
                        self._pool().check()
                if not pause(failed, first=0.005, attempts=_BEGIN_ATTEMPTS):
                    raise TransientStoreError(
                        f"cannot start a transaction at {self._where}: {error}"
                    ) from error
                self._pool().putconn(conn)  # broken: the pool discards it
                tx._cur = self._getconn().cursor()

    def _enter(self) -> None:
        if getattr(self._local, "active", False):
            raise StoreError(
                "a transaction of this PostgresStore is already open in this thread; "
                "transactions do not nest"
            )
        self._local.active = True

    def _exit(self) -> None:
        self._local.active = False

    @contextmanager
    def transaction(self) -> Iterator[_PostgresTransaction]:
        """A READ COMMITTED transaction: committed on exit, rolled back if the block raises.

        Its statements are batched (see ``_PostgresTransaction``): ``BEGIN`` goes out
        with the first statement whose result is read, or with ``COMMIT``.

        Raises:
            TransientStoreError: PostgreSQL aborted the transaction to resolve a
                deadlock or a serialization failure; running the block again
                may succeed (the Client does so). :class:`StaleCache`, one of
                them: a checked write found the Client's warm cache stale.
            StoreError: The store is closed, a transaction is already open in
                this thread, no connection became free within ``timeout``, or
                the database failed.
        """
        import psycopg

        if self._closed:
            raise StoreError(f"{self!r} is closed")
        self._enter()
        try:
            with self._state_lock:
                self._serial += 1
                serial = self._serial
            conn = self._getconn()
            tx = _PostgresTransaction(conn.cursor(), self._sql, self._schema, self)
            generation = tx._found
            key = Checked(object() if generation is None else (_process.pid, generation))
            tx._token = (key, serial)
            try:
                yield tx
                tx.commit()
            except BaseException as error:
                with self._state_lock:
                    self._generation = None
                conn = tx._cur.connection
                if not conn.closed and conn.info.transaction_status != _IDLE:
                    # if the connection broke, the pool discards it
                    with suppress(psycopg.Error):
                        conn.execute(b"ROLLBACK")
                elif conn.closed and isinstance(error, psycopg.OperationalError):
                    # The connection was lost (the server or PgBouncer restarted): the
                    # server rolled the transaction back, unless it was the COMMIT
                    # whose answer was lost, when it may have committed. Running the
                    # write again is safe either way: an event's message id is unique
                    # (the retry reports a duplicate), a qualification is unique per
                    # subject and round, traits and aliases are set, not added, and
                    # deliveries a lost claim took stay leased until the lease ends.
                    raise TransientStoreError(
                        f"the connection to PostgreSQL at {self._where} was lost: {error}"
                    ) from error
                if isinstance(error, psycopg.Error):
                    raise self._translate(error) from error
                raise
            else:
                tx._done = True
                with self._state_lock:
                    self._generation = tx.generation()
            finally:
                tx._cur.close()
                self._pool().putconn(tx._cur.connection)
        finally:
            self._exit()

    @contextmanager
    def joined(self, connection: psycopg.Connection[Any]) -> Iterator[_PostgresTransaction]:
        """A transaction inside the caller's own, on the caller's psycopg connection.

        pqlkit's writes go into a savepoint of the caller's current transaction
        and are committed, or rolled back, with it: pqlkit never commits. If the
        block raises, only pqlkit's writes are rolled back (to the savepoint)
        and the caller's transaction stays usable. The advisory locks taken by
        :meth:`Transaction.lock` are held until the caller's transaction ends.

        The connection must reach the database this store uses. A connection in
        autocommit mode must be inside ``with connection.transaction():``.

        Raises:
            ValidationError: ``connection`` is not a psycopg connection, is in
                autocommit mode outside a transaction, or its transaction failed.
            TransientStoreError: PostgreSQL aborted pqlkit's statements to resolve
                a deadlock; pqlkit's writes were rolled back to the savepoint.
        """
        import psycopg
        from psycopg.pq import TransactionStatus
        from psycopg.rows import tuple_row

        if not isinstance(connection, psycopg.Connection):
            raise ValidationError(
                "connection",
                f"must be a psycopg (3) Connection, got {type(connection).__name__}",
            )
        status = connection.info.transaction_status
        if status == TransactionStatus.INERROR:
            raise ValidationError(
                "connection", "its transaction has failed; roll it back before tracking"
            )
        if status == TransactionStatus.ACTIVE:
            raise ValidationError("connection", "is busy running another query")
        if status == TransactionStatus.IDLE:
            if connection.autocommit:
                raise ValidationError(
                    "connection",
                    "is in autocommit mode outside a transaction, so nothing would be atomic;"
                    " track inside `with connection.transaction():`",
                )
            connection.execute(b"SELECT 1")  # opens the implicit transaction pqlkit joins
        self._enter()
        try:
            with connection.transaction(), connection.cursor(row_factory=tuple_row) as cursor:
                yield _PostgresTransaction(cursor, self._sql, self._schema)
        except psycopg.Error as error:
            raise self._translate(error) from error
        finally:
            self._exit()

    def _translate(self, error: Exception) -> StoreError:
        code = getattr(error, "sqlstate", None)
        if code == "22P02" and _STALE in str(error):
            return StaleCache(f"a checked write found the warm cache stale: {error}")
        if code in _RETRYABLE_SQLSTATES:
            return TransientStoreError(
                f"PostgreSQL aborted the transaction to resolve a conflict ({code}): {error}"
            )
        if code in _POOLER_SQLSTATES and self._prepare_threshold is not None:
            # A transaction pooler: stop preparing statements (each connection is
            # switched as it is next handed out) and let the write run again.
            self._prepare_threshold = None
            return TransientStoreError(
                f"a transaction pooler in front of PostgreSQL at {self._where} ran a"
                f" prepared statement on another server connection ({error}); statements"
                " are no longer prepared (say ?pgbouncer=true in the URL to start so)"
            )
        return StoreError(f"PostgreSQL error at {self._where}: {error}")

    def scrub(self, *, vacuum: bool = False) -> None:
        """With ``vacuum``, run ``VACUUM`` on the tables that hold personal data.

        A ``DELETE`` (or an ``UPDATE``) in PostgreSQL leaves the old row version in
        its page, invisible but readable from the data files, until a vacuum marks
        its space free; autovacuum does that eventually (on its thresholds), and the
        space is overwritten only when new rows reuse it. ``VACUUM`` (not ``FULL``:
        it takes no exclusive lock) reclaims it now; it runs outside a transaction,
        on a pooled connection. Without ``vacuum``, nothing is done.
        """
        if not vacuum:
            return
        import psycopg
        from psycopg import sql

        pool = self._pool()
        try:
            with pool.connection() as conn:  # autocommit: VACUUM cannot run in a transaction
                for table in _PERSONAL_TABLES:
                    conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier(self._schema, table)))
        except psycopg.Error as error:
            raise self._translate(error) from error

    def close(self) -> None:
        """Close this process's pool. Idempotent.

        Raises:
            StoreError: Called inside one of this store's transactions.
        """
        current = self._current
        if current is None:
            self._closed = True
            return
        if current.pid != _process.pid:
            _inherited.append(current.pool)  # the parent's: never touch it
            self._current, self._closed = None, True
            return
        if getattr(self._local, "active", False):
            raise StoreError("cannot close a PostgresStore inside its own transaction")
        self._current, self._closed = None, True
        current.pool.close()
