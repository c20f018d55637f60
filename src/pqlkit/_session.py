"""Transactions and the warm cache: one owner, used by the core and the dispatcher alike.

A :class:`Session` opens every store transaction a Client runs (``tx()``), runs a
write again when the database aborted it (``write()``), and owns the :class:`Warm`
cache of decoded subjects that those transactions keep honest (``store_state`` and
``drop_state`` write a subject's row and keep the cache's account of it). A
:class:`Subject` is one subject's state as a transaction loaded it; a :class:`Due`,
when its evaluation found that time alone may next change its standing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar

import attrs

from . import _process
from ._convert import from_us
from ._engine import SubjectState
from ._events import Qualification, SubjectKind
from ._retry import pause
from .exceptions import TransientStoreError
from .stores._base import Checked, StaleCache, StateRecord, Store, Transaction

__all__ = ["Due", "Outcome", "Session", "Subject", "TxScope", "Warm"]

T = TypeVar("T")

_WRITE_ATTEMPTS = 5  # a write the store aborted to resolve a conflict is run again, up to this


class Due:
    """When time alone may next change a subject's standing, as its evaluation found:
    what a save stores as the subject's due time (a plain class: one is made per evaluation).

    ``at`` holds for the subject's state at ``t`` with ``events`` events folded in: the
    rule's next change by time alone, or the end of a re-qualification cool-down,
    whichever comes first (None: neither).
    """

    __slots__ = ("at", "events", "t")

    def __init__(self, t: int, events: int, at: int | None) -> None:
        self.t = t
        self.events = events
        self.at = at


@attrs.define
class Subject:
    """A subject's state loaded inside a transaction, saved at its end."""

    kind: SubjectKind
    id: str
    state: SubjectState
    account: str | None = None  # users: their current account
    # What the store holds of it: the state as of `stored_events` events (None: no
    # row), and the row's due time. Behind these, its newer events are a tail in the log.
    stored_events: int | None = None
    stored_due: int | None = None
    stored_size: int = 0
    # The Due of its last evaluation, kept by the core for the save that stores it: a
    # warm subject's save may be put off (to its eviction, or the client's close)
    due: Due | None = None
    # ranked score -> (value, when time alone may change it) as the store holds them
    # (None: not known, e.g. loaded cold; the next evaluation writes them all)
    ranks: dict[str, tuple[float, int | None]] | None = None
    # the stored row's version as last read or written (ABSENT: no row; None: the
    # store keeps none, or not known): a store that checks writes checks it
    version: int | None = None


class Warm:
    """This process's cache of decoded subject states, traits and aliases.

    Valid while nothing but this Client's own transactions wrote to the store:
    each transaction compares the store's cache token with the one its previous
    transaction saw (see ``stores/_base.py``) and starts cold if they differ, or
    if a transaction of its own failed. A store whose writers run concurrently
    (PostgresStore: a ``Checked`` token, ``checked`` here) cannot tell at the start:
    it checks at commit what a write used of the cache instead (``StaleCache``:
    the write runs again cold); there every state is written on every event, and
    reads do not use the cache. While warm, a subject's state is not
    decoded from the store on each event, and it is written back only every few
    events (its newer events stay in the log, replayed by whoever loads it cold).

    The tail left behind is never longer than ``streak``, the transactions in a
    row that found the cache valid: where other processes write often (a cache
    that rarely survives) states are written on every event, so loading one cold
    replays little or nothing.

    The cache holds at most ``capacity`` subjects. As a subject comes in, the least
    recently used ones are evicted while the states' stored sizes add up to more
    than ``max_bytes`` (``size``: the sum, as of each state's last write): a few
    whales with large states, such as accounts with many users, take the room of
    many small subjects.
    """

    def __init__(self, capacity: int, max_bytes: int) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.size = 0  # the stored sizes of the subjects in `subjects`, added up
        self.subjects: dict[tuple[str, str], Subject] = {}
        self.traits: dict[tuple[str, str], dict[str, Any]] = {}
        self.resolved: dict[str, str] = {}
        # subjects whose stored state this client wrote since the cache
        # went warm: loading them needs no look for newer events in the log
        self.current: set[tuple[str, str]] = set()
        self.active = False  # inside a transaction that may use the cache
        self.usable = True  # False once the store turned out to have no cache_token()
        # the store checks at commit that the cache is current (PostgresStore): every
        # state is written on every event (no tail behind it in the log)
        self.checked = False
        self.last: tuple[Hashable, int] | None = None  # token of our last committed transaction
        self.streak = 0  # transactions in a row that found the cache valid
        self._lock = threading.RLock()
        self._pid = _process.pid

    def lock(self) -> threading.RLock:
        """The lock held for each whole transaction (a new one after fork())."""
        if self._pid != _process.pid:
            self._lock, self._pid = threading.RLock(), _process.pid
            self.clear()
        return self._lock

    def begin(self, token: tuple[Hashable, int] | None) -> None:
        last = self.last
        if token is None or last is None or last[0] != token[0] or last[1] + 1 != token[1]:
            self.clear()
        else:
            self.streak += 1
        self.active = token is not None

    def follow(self, leader: Warm) -> None:
        """Enter the leader's transaction (a shadow model's cache, see ``Session``):
        warm while the leader's cache stays warm, cleared whenever it is cleared."""
        if leader.streak == 0:  # the leader's begin() cleared it
            self.clear()
        self.streak = leader.streak
        self.usable = leader.usable
        self.checked = leader.checked
        self.active = leader.active

    def clear(self) -> None:
        self.subjects.clear()
        self.size = 0
        self.traits.clear()
        self.resolved.clear()
        self.current.clear()
        self.last = None
        self.streak = 0


class TxScope:
    """``Session.tx()``: a store transaction that keeps the warm cache honest.

    The cache is used only when the transaction's ``cache_token()`` follows the
    one of this client's previous transaction; it is cleared when it does not, and
    when the transaction fails. A class rather than a generator: every write
    enters one.
    """

    __slots__ = ("_cold", "_connection", "_inner", "_lock", "_session", "_token", "_tx", "_writing")

    def __init__(
        self, session: Session, connection: object, writing: bool = False, cold: bool = False
    ) -> None:
        self._session = session
        self._connection = connection
        self._writing = writing
        self._cold = cold  # start cold whatever the token says (a run again after StaleCache)
        self._lock: threading.RLock | None = None
        self._token: tuple[Hashable, int] | None = None

    def __enter__(self) -> Transaction:
        session = self._session
        warm = session.warm
        if self._connection is not None or not warm.usable:  # joined, or a store with no token
            self._inner = session.transaction(self._connection)
            return self._inner.__enter__()
        lock = warm.lock()
        lock.acquire()
        try:
            self._inner = session.store.transaction()
            tx = self._inner.__enter__()
            try:
                token = tx.cache_token()
                if token is None:
                    warm.usable = False  # this store cannot tell: never cache
                warm.begin(token)
                if self._cold:
                    warm.clear()
                warm.checked = token is not None and isinstance(token[0], Checked)
                if warm.checked:
                    # a store that checks writes (PostgresStore) checks what a write
                    # used of the cache at its commit; a read checks nothing, so it
                    # reads the store (and leaves the cache as it is)
                    if not self._writing:
                        warm.active = False
                    elif warm.streak > 0:
                        tx.batch()
                for follower in session.followers:
                    follower.follow(warm)
            except BaseException as error:
                self._inner.__exit__(type(error), error, error.__traceback__)
                raise
        except BaseException:
            warm.active = False
            warm.clear()
            for follower in session.followers:
                follower.active = False
                follower.clear()
            lock.release()
            raise
        self._token = token
        self._tx = tx
        self._lock = lock
        return tx

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lock = self._lock
        if lock is None:
            self._inner.__exit__(exc_type, exc, tb)
            return
        warm = self._session.warm
        committed = False
        try:
            self._inner.__exit__(exc_type, exc, tb)
            committed = exc_type is None
        finally:
            warm.active = False
            token = self._token
            if committed and token is not None:
                if isinstance(token[0], Checked) and (self._writing or warm.streak == 0):
                    # the generation the cache is current at now: what the write
                    # read, checked or counted (a read left the cache as it was,
                    # current at the token's, unless it began empty)
                    warm.last = self._tx.cache_token()
                else:
                    warm.last = token
            else:
                warm.clear()
            for follower in self._session.followers:
                follower.active = False
                if warm.last is None:  # cleared with it
                    follower.clear()
            lock.release()


class Outcome:
    """What one write changed (a plain class: one is made per event)."""

    __slots__ = ("disqualified", "enqueued", "qualified", "scores")

    def __init__(self) -> None:
        self.qualified: list[Qualification] = []
        self.disqualified: list[Qualification] = []
        self.scores: dict[str, float] = {}
        self.enqueued = False


class Session:
    """The store, the warm cache, and the transactions that keep it honest.

    A shadow model's session (``leader``: the main model's) has a cache of its own
    but opens no transaction of its own: ``tx()`` is the leader's, whose cache
    decides for both (``Warm.follow``), under the leader's lock.
    """

    def __init__(self, store: Store, warm: Warm, leader: Session | None = None) -> None:
        self.store = store
        self.warm = warm
        self.followers: list[Warm] = []  # the shadow models' caches
        self._leader = self if leader is None else leader
        if leader is not None:
            # traits and aliases are the same whoever reads them: one cache of each
            warm.traits = leader.warm.traits
            warm.resolved = leader.warm.resolved
            leader.followers.append(warm)

    def write(self, work: Callable[[Transaction], T], connection: object = None) -> T:
        """Run ``work`` in one store transaction; run it again if the store aborted it.

        A store raises :class:`TransientStoreError` when the database aborted the
        transaction to resolve a conflict (PostgreSQL: a deadlock or a
        serialization failure); nothing of it was stored, so ``work`` runs again,
        after a short jittered pause, up to ``_WRITE_ATTEMPTS`` times. ``work``
        must return what it changed rather than change anything outside.
        """
        failed = stale = 0
        while True:
            try:
                with TxScope(self._leader, connection, True, stale > 0) as tx:
                    return work(tx)
            except StaleCache:
                # the warm cache was stale: run again at once, cold (reading everything
                # under the locks, so its checks cannot fail again; another thread's
                # transaction in between may have warmed the cache anew)
                stale += 1
                if stale >= _WRITE_ATTEMPTS:
                    raise
            except TransientStoreError:
                failed += 1
                if not pause(failed, first=0.01, attempts=_WRITE_ATTEMPTS):
                    raise

    def store_state(self, tx: Transaction, model: str, subject: Subject, due: int | None) -> None:
        """Write the subject's state with its due time, and keep the cache's account of it."""
        s = subject.state
        kind = subject.kind
        text = s.dump()
        subject.version = tx.save_state(
            StateRecord(
                model,
                kind,
                subject.id,
                text,
                from_us(due) if due is not None else None,
                subject.version,
            )
        )
        subject.stored_events = s.events
        subject.stored_due = due
        warm = self.warm
        if warm.subjects.get((kind, subject.id)) is subject:
            warm.size += len(text) - subject.stored_size
        subject.stored_size = len(text)
        if warm.active:
            warm.current.add((kind, subject.id))

    def used_warm(self, tx: Transaction, model: str, subject: Subject) -> None:
        """A write used the subject as the cache kept it: where the store checks writes,
        its commit checks the row is unchanged (a save of it checks that anyway)."""
        if self.warm.checked and subject.version is not None:
            tx.check_state(model, subject.kind, subject.id, subject.version)

    def drop_state(self, tx: Transaction, model: str, subject: Subject) -> None:
        """Delete the subject's stored state (it has no events), and forget it warm."""
        kind = subject.kind
        tx.delete_state(model, kind, subject.id)
        warm = self.warm
        if warm.subjects.pop((kind, subject.id), None) is not None:
            warm.size -= subject.stored_size
        warm.current.discard((kind, subject.id))

    def tx(self, connection: object = None) -> AbstractContextManager[Transaction]:
        """A store transaction that keeps the warm cache honest (see :class:`Warm`);
        with ``connection``, inside the caller's own transaction (not cached)."""
        return TxScope(self._leader, connection)

    def transaction(self, connection: object) -> AbstractContextManager[Transaction]:
        """A plain store transaction (or one joining the caller's on ``connection``)."""
        if connection is None:
            return self.store.transaction()
        return self.store.joined(connection)
