"""The Store protocol: what pqlkit needs from a place that keeps its data.

A store keeps seven things, all of them plain values:

* the **event log** (the source of truth), with a unique ``message_id`` and an
  increasing arrival ``seq``;
* **aliases** (``previous_id -> user_id``, always pointing at the final id) and
  **traits** of users and accounts;
* **derived state** per (model, subject): an opaque JSON text owned by the
  engine, and the time the subject next needs a ``sweep`` (its *due* time);
  and, for a model's *ranked* scores, each subject's latest value with the time
  it may next change with time alone (an index ``top()`` reads);
* **qualification records**, unique per (model, kind, subject, round);
* the **outbox**: each qualification to deliver, stored once, with one delivery
  record per callback (status, attempts, backoff, lease), and the names of the
  callbacks registered for each model and kind (so that a qualification
  recorded by a process without callbacks still reaches them);
* **nudges**: each user's in-app inbox, at most one open nudge per (user, key),
  kept when closed (clicked, dismissed or expired) until the user is forgotten.
* **suppressions**: keyed one-way digests of ids whose later calls are dropped
  (``forget(user, suppress=True)``), each with the number of calls dropped.

Everything happens inside :meth:`Store.transaction`: one transaction per
``track()``, committed atomically or not at all. Transactions do not nest (a
store raises :class:`~pqlkit.StoreError` if one is opened inside another in the
same thread), and what a transaction returns lazily (``events()``) is only
valid until it ends. A transaction must isolate
concurrent writers to the same subject (SQLite: ``BEGIN IMMEDIATE``; Postgres:
:meth:`Transaction.lock`). Bring your own store by implementing both protocols;
``tests/test_store.py`` is the suite it must pass.

Four operations tell what a store can do, each with a "cannot" answer a store
gives when it does not have the capability (so a Client asks, never guesses):

* :meth:`Transaction.cache_token` lets a Client keep decoded states in memory
  between its transactions (SQLiteStore, MemoryStore, PostgresStore); None: read
  everything from the store on every transaction. A store whose writers run
  concurrently (PostgresStore) gives a :class:`Checked` key: its token proves
  nothing, and it checks at commit instead that what a write used of the cache is
  current (:meth:`Transaction.batch`, :meth:`Transaction.check_state`,
  :class:`StaleCache`); the Client then writes every state on every event, leaving
  no tail of newer events in the log.
* :meth:`Transaction.try_lock` takes locks without waiting (PostgresStore); a store
  whose transactions are serialized anyway answers True.
* :meth:`Transaction.check_integrity` checks the store's own data before a full
  rebuild (SQLiteStore: ``PRAGMA integrity_check``); a no-op where there is nothing
  to check.
* :meth:`Store.joined` runs a transaction inside the caller's own (PostgresStore);
  the others raise :class:`~pqlkit.ValidationError` naming ``connection``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Literal, Protocol

import attrs

from .._events import EventRecord, Nudge, Qualification, SubjectKind
from ..exceptions import TransientStoreError, ValidationError

__all__ = [
    "ABSENT",
    "INVALID_STATE",
    "Checked",
    "DeliveryRecord",
    "NewEvent",
    "NudgeAction",
    "NudgeRecord",
    "QualificationRecord",
    "Rank",
    "StaleCache",
    "StateRecord",
    "Store",
    "Transaction",
]

DeliveryKind = str  # "pql", "pqa", "disqualified" or "play:<name>" (a play's)
DeliveryStatus = Literal["pending", "delivered", "dead", "expired"]
NudgeAction = Literal["seen", "clicked", "dismissed"]

INVALID_STATE = "[]"
"""The text :meth:`Transaction.invalidate_states` stores: no model reads it as a state,
so the subject is rebuilt from the log when its model next loads it."""


@attrs.frozen
class NewEvent:
    """A validated event about to be stored (the store assigns ``seq``)."""

    message_id: str
    user_id: str
    event: str
    properties: dict[str, Any]
    account_id: str | None
    timestamp: datetime


@attrs.frozen
class StateRecord:
    """The engine's derived state for one subject under one model.

    ``version``: a store that versions its rows (PostgresStore) gives the row's
    version when it loads one; a save that gives one (the version the caller last
    saw, or :data:`ABSENT`: no row) is checked against the row (see
    :class:`StaleCache`). None: not versioned, or saved unchecked. Records compare
    equal whatever their versions.
    """

    model: str
    kind: SubjectKind
    subject_id: str
    state: str
    due_at: datetime | None = None
    version: int | None = attrs.field(default=None, eq=False)  # not the state's content


@attrs.frozen
class Checked:
    """The key of a cache token from a store that checks writes at commit (PostgresStore).

    Its writers run concurrently, so the token proves nothing: the store checks at
    commit that what a write used of the Client's warm cache is current (each state
    row's version, :meth:`Transaction.check_state`; the store's generation, counted
    up by every alias, traits, suppression or forget) and raises :class:`StaleCache`
    if not. A Client seeing one writes every state on every event (no tail of newer
    events in the log), reads without its cache, and calls :meth:`Transaction.batch`
    in a write that uses it.
    """

    key: Hashable


ABSENT = -1
"""A :class:`StateRecord` version meaning "no row": a save with it checks there is none."""


class StaleCache(TransientStoreError):
    """A checked write found that what the Client kept warm changed in the store.

    Raised by a store that checks writes instead of reading first (PostgresStore):
    a state row written since the Client read it, the event's message id already
    stored, or an alias, traits, suppression or forget since. The transaction was
    rolled back; the Client clears its warm cache and runs the write again at once,
    reading everything.
    """


@attrs.frozen
class Rank:
    """A subject's latest value of a ranked score, and when time alone may change it.

    ``changes_at`` is None when time alone never changes it (only events and
    traits do); otherwise the earliest time at which it may (a window's next
    exit, an ``idle()`` comparison's flip): ``top()`` re-evaluates the subject
    once that time has come.
    """

    name: str
    value: float
    changes_at: datetime | None = None


@attrs.frozen
class NudgeRecord:
    """A nudge as the store keeps it: the public fields, and the model that opened it.

    ``model`` is the name of the model whose client opened it (a play's nudge is
    re-checked against that model's play when it is read).
    """

    user_id: str
    key: str
    payload: dict[str, Any] | None
    created_at: datetime
    until: datetime | None = None
    seen_at: datetime | None = None
    model: str | None = None
    play: str | None = None

    def public(self) -> Nudge:
        """The :class:`~pqlkit.Nudge` a client returns for it."""
        return Nudge(
            self.user_id,
            self.key,
            self.payload,
            self.created_at,
            self.until,
            self.seen_at,
            self.play,
        )


@attrs.frozen
class QualificationRecord:
    """One firing of a rule for a subject; ``round`` counts re-qualifications from 0.

    ``id`` is unique (derived from model, kind, subject and round).
    """

    id: str
    model: str
    kind: str  # "pql", "pqa", or "play:<name>" for a play
    subject_id: str
    round: int
    fingerprint: str
    qualified_at: datetime
    first_seen: datetime
    disqualified_at: datetime | None = None


@attrs.frozen
class DeliveryRecord:
    """A delivery in the outbox: one qualification to one callback.

    ``callback`` is the name the callback was registered with; None for a
    qualification no callback took yet (``status`` "pending" while its window
    is open, "expired" once it closed). ``"*"`` marks a record migrated from
    schema version 2, when one delivery served every callback of its kind.

    ``next_attempt_at`` is on the client's clock (it drives backoff), and so is
    ``finished_at`` (when it was delivered, dead-lettered or expired);
    ``lease_until`` is on the wall clock (it stops two processes from running the
    same delivery at once, and expires if the claiming process dies).
    """

    id: str
    kind: DeliveryKind
    subject_id: str
    qualification: Qualification
    status: DeliveryStatus = "pending"
    attempts: int = 0
    next_attempt_at: datetime | None = None
    lease_until: datetime | None = None
    last_error: str | None = None
    callback: str | None = None
    finished_at: datetime | None = None

    @property
    def model(self) -> str:
        """The name of the model whose qualification this is (deliveries are scoped to it)."""
        return self.qualification.model


class Transaction(Protocol):
    """Operations available inside :meth:`Store.transaction`."""

    # -- concurrency -----------------------------------------------------
    def lock(self, keys: Sequence[str]) -> None:
        """Serialize with other transactions holding any of ``keys`` until commit.

        Keys are subjects (``"user:u1"``, ``"account:acme"``); a Client takes them in
        sorted order.
        """

    def try_lock(self, keys: Sequence[str]) -> bool:
        """Lock ``keys`` without waiting: False if another transaction holds one.

        A Client uses it for a key it finds it needs only after locking keys that
        sort later (waiting could deadlock): on False it runs the transaction again.
        A store whose transactions are serialized anyway returns True.
        """

    def cache_token(self) -> tuple[Hashable, int] | None:
        """``(key, n)`` that lets a Client keep what it read warm between transactions.

        ``n`` counts the transactions begun on this connection before this one, and
        ``key`` changes whenever anyone else (another connection, another process)
        committed since: a Client whose previous transaction saw ``(key, n - 1)``
        knows that only it wrote in between. SQLiteStore derives ``key`` from ``PRAGMA
        data_version``; MemoryStore from its identity. PostgresStore: a :class:`Checked`
        key (the generation its last transaction found), which proves nothing: the
        store checks at commit. None: the store cannot tell; it is read every time.
        """

    def batch(self) -> None:
        """A write that uses a warm cache of a store that checks writes (see
        :class:`Checked`): the store may hold its statements back and send them at
        once (PostgresStore: one round trip). A no-op elsewhere."""

    def check_state(self, model: str, kind: SubjectKind, subject_id: str, version: int) -> None:
        """A write used this state as a warm cache kept it (``version``, or
        :data:`ABSENT`): a store that checks writes checks at commit that the row is
        unchanged, raising :class:`StaleCache` if not. A no-op elsewhere."""

    def check_integrity(self) -> None:
        """Raise :class:`~pqlkit.StoreError` if the store finds its own data damaged.

        A Client calls it before a full rebuild, which would otherwise rewrite every
        subject's state from whatever a damaged log still reads. SQLiteStore runs
        ``PRAGMA integrity_check``; a store with nothing to check does nothing.
        """

    # -- event log ---------------------------------------------------------
    def insert_event(self, event: NewEvent) -> EventRecord | None:
        """Append ``event``; return None (and store nothing) if its message_id exists."""

    def events(
        self,
        *,
        user_ids: Sequence[str] | None = None,
        account_id: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> Iterator[EventRecord]:
        """Events in arrival order, optionally only those of some users or one account."""

    def recent_events(self, user_ids: Sequence[str], limit: int) -> list[EventRecord]:
        """The ``limit`` latest events (by timestamp, then seq) of these users, newest first."""

    def has_message(self, message_id: str) -> bool:
        """True if an event with this message_id is stored."""

    # -- identity ------------------------------------------------------------
    def resolve(self, user_id: str) -> str:
        """The final id ``user_id`` is an alias of (itself when it is none)."""

    def aliases_of(self, user_id: str) -> list[str]:
        """Every previous id that resolves to ``user_id``."""

    def set_alias(self, previous_id: str, user_id: str) -> None:
        """Make ``previous_id`` (and every id aliased to it) resolve to ``user_id``."""

    def traits(self, kind: SubjectKind, subject_id: str) -> dict[str, Any]:
        """The stored traits (empty when none)."""

    def set_traits(self, kind: SubjectKind, subject_id: str, traits: dict[str, Any]) -> None:
        """Replace the stored traits."""

    def accounts_of(self, user_ids: Sequence[str]) -> set[str]:
        """Every account id that events of these users carry."""

    def users_of(self, account_id: str) -> set[str]:
        """Every user id (as recorded) with an event for this account."""

    def forget_users(self, user_ids: Sequence[str]) -> None:
        """Delete the events, traits, aliases and nudges of these user ids, and their
        states and ranks under every model (not only the caller's)."""

    def user_rows(self, user_ids: Sequence[str]) -> dict[str, int]:
        """How many rows ``forget`` of these user ids deletes, by table: ``events``,
        ``traits``, ``aliases``, ``nudges``, ``states`` and ``ranks`` (every model's),
        ``qualifications`` and ``deliveries`` (their PQLs, every model's)."""

    def invalidate_states(self, kind: SubjectKind, subject_id: str, *, keep: str) -> int:
        """Replace the subject's stored state under every model but ``keep`` by
        :data:`INVALID_STATE` (``forget`` does: another model's state of an account may
        quote a forgotten user's values; that model rebuilds it from the log when it
        next loads it). Returns how many states it replaced."""

    # -- derived state -------------------------------------------------------
    def load_state(self, model: str, kind: SubjectKind, subject_id: str) -> StateRecord | None:
        """The subject's derived state, or None."""

    def save_state(self, record: StateRecord) -> int | None:
        """Insert or replace the subject's derived state; return its new version
        (None: the store keeps none). A store that versions rows checks a save that
        gives ``record.version`` (see :class:`StateRecord`)."""

    def delete_state(self, model: str, kind: SubjectKind, subject_id: str) -> None:
        """Forget the subject's derived state and ranks (no error if there is none)."""

    def clear_states(self, model: str) -> None:
        """Forget every derived state and rank of ``model``."""

    def due_subjects(self, model: str, now: datetime, limit: int) -> list[tuple[SubjectKind, str]]:
        """Subjects whose ``due_at`` is at or before ``now``, earliest first."""

    def count_subjects(self, model: str, kind: SubjectKind) -> int:
        """How many subjects of ``kind`` have derived state."""

    # -- ranked scores ----------------------------------------------------------
    def save_ranks(
        self,
        model: str,
        kind: SubjectKind,
        subject_id: str,
        ranks: Sequence[Rank],
        *,
        at: datetime | None = None,
    ) -> None:
        """Insert or replace the subject's values of these ranked scores.

        With ``at`` (the evaluation time that found them), a stored rank of the same
        value whose ``changes_at`` is still after ``at`` and not after the new one is
        kept: it is early enough (the subject is re-evaluated then), and keeping it
        spares a write on every event that only pushes that time back.
        """

    def top_ranks(
        self, model: str, kind: SubjectKind, name: str, n: int
    ) -> list[tuple[str, float]]:
        """The ``n`` subjects with the highest values of score ``name``, highest first
        (ties by subject id), from the stored ranks alone."""

    def stale_ranks(
        self, model: str, kind: SubjectKind, name: str, now: datetime, limit: int
    ) -> list[str]:
        """Up to ``limit`` subjects whose value of ``name`` may have changed with time
        alone by ``now`` (``changes_at`` at or before it), earliest first."""

    # -- qualifications ------------------------------------------------------
    def latest_qualification(
        self, model: str, kind: str, subject_id: str
    ) -> QualificationRecord | None:
        """The subject's record with the highest round, or None."""

    def insert_qualification(self, record: QualificationRecord) -> bool:
        """Store ``record``; False (nothing stored) if its (model, kind, subject, round) exists."""

    def set_disqualified(self, qualification_id: str, at: datetime) -> None:
        """Record that the qualification's rule turned false at ``at``."""

    def qualifications(self, model: str) -> Iterator[QualificationRecord]:
        """Every qualification record of ``model``."""

    def recent_qualifications(
        self,
        model: str,
        *,
        kinds: Sequence[str],
        since: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int,
    ) -> list[tuple[QualificationRecord, Qualification | None]]:
        """Up to ``limit`` of ``model``'s records whose kind is one of ``kinds``, newest first.

        Ordered by ``qualified_at``, then ``id``, both descending; only records with
        ``qualified_at >= since`` and, given ``before = (at, id)``, those ordered
        after it (``(qualified_at, id) < (at, id)``: the page that follows a record).
        Each comes with its payload (the :class:`Qualification` its delivery holds,
        the firing's, not a disqualification's) while the outbox keeps it, else None.
        """

    def find_qualification(self, qualification_id: str) -> QualificationRecord | None:
        """The record with this id (of any model), or None."""

    def delete_qualifications(self, subject_id: str, kind: str) -> None:
        """Delete the subject's qualification records and all its deliveries (any model).

        Deliveries hold personal data (traits, events), so delivered and dead ones go too.
        """

    # -- outbox ----------------------------------------------------------------
    # A qualification to deliver is stored once and stays *open* for a window
    # (the Client's ``delivery_window``): a callback registered in that time, in
    # any process, gets a delivery record for it. Each record is claimed, retried
    # and dead-lettered on its own.
    def enqueue(
        self,
        delivery: DeliveryRecord,
        callbacks: Sequence[str] = (),
        *,
        now: datetime,
        known_since: datetime | None = None,
    ) -> None:
        """Store a qualification to deliver, open from ``now`` (ignored if its id exists).

        Adds a pending record, due at ``delivery.next_attempt_at``, for each of
        ``callbacks`` (names of ``delivery.kind``'s callbacks) and for each callback
        :meth:`register_callback` recorded for its model and kind as seen at or
        after ``known_since`` (every one when None). The record fields of
        ``delivery`` (status, attempts, lease, error) are not read.
        """

    def register_callback(
        self, model: str, kind: str, name: str, now: datetime, *, since: datetime
    ) -> bool:
        """Record that callback ``name`` of ``kind`` is registered for ``model`` (seen ``now``).

        Adds a pending record, due ``now``, for it to every open qualification of
        that model and kind enqueued at or after ``since`` that has none. Returns
        False (and changes nothing) if it could not do so without waiting for
        other writers (a later call tries again).
        """

    def replace_qualification(self, delivery_id: str, qualification: Qualification) -> None:
        """Replace a delivery's payload (``forget`` redacts a forgotten user from it)."""

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
        """Lease pending records due at ``now`` whose lease expired, for ``callbacks``.

        ``callbacks`` are ``"kind:name"`` keys (a record matches by its kind and
        callback name). With ``model``, only that model's records (another
        model's callbacks never receive them); with ``ids``, only records of the
        qualifications with those ids.

        Sets each one's ``lease_until``, counts the attempt (``attempts + 1``, so a
        process that dies mid-callback still uses one up) and returns them, oldest
        first, as updated.
        """

    def renew_lease(
        self, delivery_id: str, callback: str, attempts: int, lease_until: datetime
    ) -> bool:
        """Extend the lease of a claimed record whose callback is still running.

        Only while it is pending and ``attempts`` is still what the claim set (nobody
        claimed it since); returns whether it was extended.
        """

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
        """Record an attempt's outcome for one callback and release the lease."""

    def deliveries(
        self,
        status: DeliveryStatus,
        *,
        model: str | None = None,
        callback: str | None = None,
    ) -> list[DeliveryRecord]:
        """Records with ``status`` (of ``model``, of ``callback``, if given), oldest first.

        Without ``callback``, "pending" also lists the open qualifications that no
        callback took yet, and "expired" the ones that none took in their window,
        each as a record whose ``callback`` is None.
        """

    def revive_dead(
        self,
        now: datetime,
        *,
        model: str | None = None,
        callback: str | None = None,
        known_since: datetime | None = None,
    ) -> int:
        """Make dead records (of ``model``, of ``callback``, if given) pending again, due ``now``.

        A migrated ``"*"`` record is replaced: its qualification opens again from
        ``now``, with a record for each callback registered for its model and kind
        since ``known_since``. Returns how many records were revived.
        """

    def close_deliveries(self, before: datetime, now: datetime, *, model: str) -> int:
        """Close the window of ``model``'s open qualifications enqueued before ``before``.

        Records of theirs that were never attempted, and qualifications that no
        callback took, expire (``finished_at = now``). Returns how many expired.
        """

    def purge_deliveries(self, before: datetime, *, model: str) -> int:
        """Delete ``model``'s qualifications (with their records) that finished before ``before``.

        A qualification goes once its window closed before ``before`` and each of
        its records was delivered or expired before ``before`` (a pending or dead
        record keeps it). Returns how many qualifications were deleted.
        """

    # -- nudges ----------------------------------------------------------------
    def open_nudge(self, record: NudgeRecord, now: datetime) -> bool:
        """Open ``record`` unless the user has an open nudge with its key; True if opened.

        An open nudge of that key whose ``until`` is at or before ``now`` is closed
        first (as expired), so the key opens again. Concurrent calls for one user
        and key open one nudge between them (a store's uniqueness guarantees it,
        not the caller's locks).
        """

    def nudges(self, user_id: str, now: datetime) -> list[NudgeRecord]:
        """The user's open nudges whose ``until`` is after ``now`` (or None), oldest first."""

    def mark_nudge(self, user_id: str, key: str, action: NudgeAction, at: datetime) -> bool | None:
        """Mark the user's open nudge of ``key``: ``"seen"`` sets ``seen_at`` (if unset),
        ``"clicked"`` and ``"dismissed"`` close it (and set ``seen_at`` if unset).

        True if it changed the nudge; False if there was nothing to change (seen
        already, or no open nudge of that key but a closed one); None if the user
        has no nudge of that key at all.
        """

    # -- suppressions ----------------------------------------------------------
    # Ids whose later track(), identify() and alias() calls are dropped, stored only
    # as one-way digests (the Client computes them: see pqlkit._suppression).
    def suppress(self, digest: str, at: datetime) -> bool:
        """Record ``digest`` as suppressed (since ``at``); False if it was already."""

    def unsuppress(self, digest: str) -> bool:
        """Lift the suppression of ``digest``; False if there was none."""

    def has_suppressions(self) -> bool:
        """True if any digest is suppressed (a cheap read: the Client asks it first)."""

    def drop_suppressed(self, digests: Sequence[str]) -> bool:
        """True if one of ``digests`` is suppressed; then the dropped call is counted."""

    def suppressed_calls(self) -> int:
        """How many calls were dropped for the digests suppressed now."""

    # -- retention (checkpoints and pruning) -------------------------------------
    # A checkpoint is a subject's state under one model folded over its events up to
    # an arrival seq; the events it covers can then be deleted (``Client.prune``), and
    # a rebuild starts from it (see pqlkit._retention).
    def prune_cut(self, before: datetime) -> int:
        """The highest seq S such that every stored event with seq <= S is older than
        ``before`` (0 when the oldest stored event is not)."""

    def delete_events(self, seqs: Sequence[int]) -> int:
        """Delete the events with these seqs; return how many were deleted."""

    def load_checkpoint(
        self, model: str, kind: SubjectKind, subject_id: str
    ) -> tuple[str, int] | None:
        """The subject's checkpoint under ``model``: (its state text, the seq it covers)."""

    def save_checkpoint(
        self,
        model: str,
        kind: SubjectKind,
        subject_id: str,
        state: str,
        seq: int,
        accounts: Sequence[str] = (),
    ) -> None:
        """Insert or replace the subject's checkpoint under ``model``; a user's names
        the ``accounts`` its pruned events carried (``forget`` deletes theirs too)."""

    def checkpoint_accounts(self, user_ids: Sequence[str]) -> set[str]:
        """The accounts the checkpoints of these users (any model's) name."""

    def has_checkpoints(self, kind: SubjectKind, subject_ids: Sequence[str]) -> bool:
        """True if one of these subjects has a checkpoint under any model."""

    def delete_checkpoints(self, kind: SubjectKind, subject_ids: Sequence[str]) -> int:
        """Delete these subjects' checkpoints under every model; return how many."""

    # -- metadata --------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        """A stored setting (e.g. a model's fingerprint)."""

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""


def cannot_join(store: object) -> ValidationError:
    """What :meth:`Store.joined` raises on a store that cannot join a caller's transaction."""
    return ValidationError(
        "connection",
        "writing inside your own transaction needs a PostgresStore; this client's"
        f" store is a {type(store).__name__}",
    )


class Store(Protocol):
    """Somewhere pqlkit keeps its events, state and outbox.

    Implementations: :class:`~pqlkit.MemoryStore`, :class:`~pqlkit.SQLiteStore`,
    :class:`~pqlkit.PostgresStore`. A store must be safe to share between
    threads, and must not reuse a connection across ``os.fork()``.
    """

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A unit of work: committed when the block exits, rolled back if it raises."""

    def joined(self, connection: Any) -> AbstractContextManager[Transaction]:
        """A unit of work inside the caller's own transaction on ``connection``
        (``track(..., connection=conn)``), committed with it.

        Raises:
            ValidationError: This store cannot join a caller's transaction (only
                PostgresStore can), naming ``connection``.
        """

    def scrub(self, *, vacuum: bool = False) -> None:
        """Leave no copy of deleted rows in the store's files (``forget`` calls it after
        its transaction).

        SQLiteStore checkpoints its write-ahead log and truncates it (deleted pages
        are zeroed already: ``secure_delete`` is on); PostgresStore, with ``vacuum``,
        runs ``VACUUM`` on its tables (without it, dead row versions keep the data
        until autovacuum reclaims them); MemoryStore has nothing to do.
        """

    def close(self) -> None:
        """Release connections. Idempotent."""
