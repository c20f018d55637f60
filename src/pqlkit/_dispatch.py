"""Delivery of qualifications from the outbox to callbacks: at least once, with backoff."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from typing import Literal, Protocol, TypeVar

import attrs

from ._clock import Clock
from ._events import JsonRecord, Qualification
from ._observe import DeliveryFailure, Observer, notify
from ._retry import pause
from .exceptions import StoreError, TransientStoreError, ValidationError
from .stores._base import DeliveryRecord, DeliveryStatus, Store, Transaction

__all__ = [
    "Callback",
    "Delivery",
    "Dispatcher",
    "RetryPolicy",
    "callback_name",
    "register_or_decorate",
]

logger = logging.getLogger("pqlkit")

DeliveryKind = str  # "pql", "pqa", "disqualified" or "play:<name>" (a play's)
_FINISH_ATTEMPTS = 5
_CLAIM_ATTEMPTS = 5  # claims in a row the database aborted before a pass gives up
_SYNC_WAIT = 2.0  # seconds a full pass waits at most for another process's registration
_BEATS_PER_LEASE = 3  # a running callback's lease is renewed this often per lease
_BEAT_IDLE = 60.0  # seconds without a running callback before the heartbeat thread ends
_HOUSEKEEPING = timedelta(minutes=1)  # closing windows and purging, at most this often
_REFRESH = timedelta(hours=1)  # a registered callback is recorded as seen again this often
_MAX_NAME = 200


class Callback(Protocol):
    """A function called with one :class:`~pqlkit.Qualification`."""

    def __call__(self, qualification: Qualification, /) -> object: ...


F = TypeVar("F", bound=Callback)


def register_or_decorate(
    register: Callable[[Callback], object], fn: F | None
) -> F | Callable[[F], F]:
    """``register(fn)`` and return ``fn``; with no ``fn``, a decorator that does that
    (what ``on_pql(fn)``, ``@on_pql`` and ``@on_pql(name=...)`` share)."""

    def decorate(fn: F) -> F:
        register(fn)
        return fn

    return decorate if fn is None else decorate(fn)


def callback_name(fn: object, name: object = None) -> str:
    """The name ``fn`` is registered under: ``name``, or the function's qualified name.

    The default is ``module.qualname`` (``"myapp.hooks.alert_owner"``), which stays
    the same across restarts as long as the function is not moved or renamed.

    Raises:
        ValidationError: ``name`` is not a non-empty str (or is ``"*"``, kept for
            deliveries migrated from a version that had no names).
    """
    if name is None:
        qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        module = getattr(fn, "__module__", None) or type(fn).__module__
        name = f"{module}.{qualname}"
    if not isinstance(name, str):
        raise ValidationError("name", f"must be a str, got {type(name).__name__}")
    if not name.strip() or name == "*" or "\x00" in name or len(name) > _MAX_NAME:
        raise ValidationError(
            "name", f"must be a non-empty name of at most {_MAX_NAME} characters, got {name!r}"
        )
    return name


@attrs.frozen
class Delivery(JsonRecord):
    """One qualification's delivery to one callback, as :meth:`Client.deliveries` lists it.

    Attributes:
        qualification: What is delivered.
        callback: The name of the callback it is for; None while no callback took
            the qualification (``status`` is then "pending", or "expired" once its
            ``delivery_window`` closed without one). ``"*"`` is a delivery
            recorded before callbacks had names, for every callback of its kind.
        status: ``"pending"``, ``"delivered"``, ``"dead"`` (exhausted its attempts)
            or ``"expired"`` (never attempted within the window).
        attempts: Attempts so far.
        next_attempt_at: When it is due next (the client's clock), while pending.
        last_error: The last attempt's error, if it failed.
        finished_at: When it was delivered, dead-lettered or expired (the client's clock).
    """

    qualification: Qualification
    callback: str | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    finished_at: datetime | None

    @classmethod
    def of(cls, record: DeliveryRecord) -> Delivery:
        """The public view of a store's record."""
        return cls(
            record.qualification,
            record.callback,
            record.status,
            record.attempts,
            record.next_attempt_at,
            record.last_error,
            record.finished_at,
        )


@attrs.frozen
class RetryPolicy:
    """Retry delays: ``base * 2**(attempt-1)``, capped at ``cap``, minus up to ``jitter``."""

    max_attempts: int = 10
    base: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(hours=1)
    jitter: float = 0.1

    def delay(self, attempt: int) -> timedelta:
        nominal: timedelta = min(self.cap, self.base * (2 ** min(attempt - 1, 40)))
        return timedelta(seconds=nominal.total_seconds() * (1 - self.jitter * random.random()))


class Dispatcher:
    """Runs due deliveries: inline (in the caller's thread) or on a background thread."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        mode: Literal["inline", "background"],
        policy: RetryPolicy,
        lease: timedelta,
        transaction: Callable[[], AbstractContextManager[Transaction]] | None = None,
        model: str | None = None,
        budget: timedelta = timedelta(seconds=1),
        window: timedelta = timedelta(days=7),
        retention: timedelta = timedelta(days=1),
    ) -> None:
        self._store = store
        self._model = model  # only this model's deliveries are claimed
        # how to open a transaction (the Client passes its own, which keeps its cache valid)
        self._transaction = transaction if transaction is not None else store.transaction
        self._clock = clock
        self.mode = mode
        self._policy = policy
        self._lease = lease
        self._budget = budget.total_seconds()  # inline: how long a write may deliver
        self._window = window  # how long a qualification waits for callbacks to take it
        self._retention = retention  # how long finished deliveries are kept after that
        # (kind, name) -> callback, in registration order
        self._callbacks: dict[tuple[str, str], Callback] = {}
        # (kind, name) -> when (the client's clock) it was last recorded in the store
        self._synced: dict[tuple[str, str], datetime] = {}
        self._housekept: datetime | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        # background mode
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._stopping = False
        self._closed = False  # close() was called: claim nothing more
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        # leases of the records whose callbacks run now ((id, callback) -> attempts
        # of the claim), renewed by the heartbeat thread until they finish
        self._inflight: dict[tuple[str, str], int] = {}
        self._beat: threading.Thread | None = None
        self._beat_cond = threading.Condition()
        self._observers: tuple[Observer, ...] = ()  # told of what fires and each attempt

    # -- registration ----------------------------------------------------------
    def register(self, kind: DeliveryKind, fn: Callback, name: str) -> None:
        """Register ``fn`` for ``kind`` under ``name`` (unique among ``kind``'s callbacks)."""
        with self._lock:
            if (kind, name) in self._callbacks:
                raise ValidationError(
                    "name",
                    f"a {kind} callback named {name!r} is registered already; give each one"
                    " its own name= (deliveries are recorded per name)",
                )
            self._callbacks[kind, name] = fn

    def names(self, kind: str) -> list[str]:
        """The names of ``kind``'s callbacks."""
        with self._lock:
            return [name for k, name in self._callbacks if k == kind]

    def keys(self) -> list[str]:
        """``"kind:name"`` of every callback (what claim_due selects by)."""
        with self._lock:
            return [f"{kind}:{name}" for kind, name in self._callbacks]

    def add_observer(self, observer: Observer) -> None:
        """Tell ``observer`` of every qualification fired and every delivery attempt."""
        with self._lock:
            self._observers = (*self._observers, observer)

    @property
    def window(self) -> timedelta:
        """How long a qualification stays open for callbacks registered later."""
        return self._window

    # -- triggering ------------------------------------------------------------
    def fired(self, qualifications: Sequence[Qualification]) -> None:
        """After a committed write: deliver what it fired (inline) or wake the worker.

        The observers hear of each qualification first. Inline, only the
        deliveries of ``qualifications`` run, in the caller's thread, until
        the inline budget is spent (checked before each callback starts; a running
        callback is not interrupted); the rest stay pending for the next
        ``flush()``, ``sweep()`` or background pass. A caller never waits for
        someone else's delivery, nor for retries.

        Never raises: the write it follows is committed, and a caller that saw an
        error would retry it (storing it twice). A delivery that could not be
        attempted stays pending.
        """
        if not qualifications:
            return
        observers = self._observers
        if observers:
            for q in qualifications:
                notify(observers, lambda o: o.fired(q))  # noqa: B023 - called at once
        if self._closed:
            return
        try:
            if self.mode == "inline":
                self._run([q.id for q in qualifications], time.monotonic() + self._budget)
            else:
                self._wake()
        except Exception:
            logger.exception("pqlkit: delivery after the commit failed; it stays pending")

    def revived(self) -> None:
        """Dead letters were made pending again: inline, deliver them within the budget."""
        self._after_commit(self._budget)

    def swept(self, qualifications: Sequence[Qualification]) -> None:
        """After a committed sweep(): what it fired, then (inline) every due retry."""
        self.fired(qualifications)
        self._after_commit(None)

    def _after_commit(self, timeout: float | None) -> None:
        if self._closed:
            return
        try:
            if self.mode == "inline":
                self.flush(timeout)
            else:
                self._wake()
        except Exception:
            logger.exception("pqlkit: delivery after the commit failed; it stays pending")

    def flush(self, timeout: float | None = None) -> int:
        """Attempt every due delivery (on the worker thread), waiting up to ``timeout`` s.

        Returns how many due deliveries were left unattempted when ``timeout`` ran
        out (0 when every due delivery was attempted), and logs them.
        """
        if self._closed:
            return 0
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            ticket = self._wake()
        except RuntimeError:
            # No new thread while the interpreter exits (CPython 3.12 refuses them in
            # atexit hooks; the exit hook calls this from a thread it started earlier):
            # deliver on this thread, the deadline checked before each callback.
            self._run(None, deadline)
            return self.count_due()
        if threading.current_thread() is self._thread:
            return 0  # a callback flushed: waiting for ourselves would never end
        with self._cond:
            while self._completed < ticket and self._thread is not None:
                wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if wait <= 0:
                    break
                self._cond.wait(timeout=wait)
                if self._thread is not None and not self._thread.is_alive():
                    break
            done = self._completed >= ticket
        if done:
            return 0
        left = self.count_due()
        if left:
            logger.warning(
                "pqlkit: flush() gave up after %s s; %d due deliveries left pending", timeout, left
            )
        return left

    def count_due(self) -> int:
        """How many pending records of this client's callbacks are due now (and not running)."""
        keys = set(self.keys())
        now = self._clock.now()
        with self._transaction() as tx:
            pending = tx.deliveries("pending", model=self._model)
        with self._lock:
            running = set(self._inflight)
        return sum(
            1
            for d in pending
            if f"{d.kind}:{d.callback}" in keys
            and (d.next_attempt_at is None or d.next_attempt_at <= now)
            and (d.id, d.callback) not in running
        )

    # -- the work --------------------------------------------------------------
    def run_due(self, deadline: float | None = None) -> int:
        """Attempt due deliveries to this client's callbacks until none is left (or ``deadline``).

        First records newly registered callbacks in the store (so they get what
        is open), and at most once a minute closes windows and purges (see
        :meth:`_housekeep`). Returns how many were attempted.
        """
        return self._run(None, deadline)

    def _run(self, ids: list[str] | None, deadline: float | None) -> int:
        if getattr(self._local, "active", False):
            return 0  # a callback called track(): left for the next pass
        self._local.active = True
        attempted = conflicts = 0
        try:
            if self._closed or self._stopping:
                return 0
            self._sync_callbacks(waiting=ids is None, deadline=deadline)
            while True:
                keys = self.keys()
                if not keys or self._closed or self._stopping:
                    return attempted
                if ids is not None and attempted >= len(ids) * len(keys):
                    return attempted  # every record these deliveries can have: no claim more
                if deadline is not None and time.monotonic() >= deadline:
                    return attempted
                wall = datetime.now(timezone.utc)
                now = self._clock.now()
                try:
                    with self._transaction() as tx:
                        # one record per claim: its lease covers one callback run,
                        # renewed while it runs (see _heartbeat)
                        batch = tx.claim_due(
                            now, wall, wall + self._lease, keys, 1, model=self._model, ids=ids
                        )
                except TransientStoreError:  # a conflict: claim again after a pause
                    conflicts += 1
                    if pause(conflicts, first=0.01, attempts=_CLAIM_ATTEMPTS):
                        continue
                    return attempted  # the next pass claims them
                if not batch:
                    return attempted
                for delivery in batch:
                    self._attempt_leased(delivery)
                    attempted += 1
        finally:
            self._local.active = False

    def _sync_callbacks(self, *, waiting: bool, deadline: float | None) -> None:
        """:meth:`_sync` (and :meth:`_housekeep` for a full pass) before claiming.

        A full pass (``waiting``: flush(), the worker, sweep()) waits briefly for
        a registration another process is committing: its records are what this
        pass would claim, and a flush() that claimed before they were visible
        would return with due deliveries of its callbacks unattempted. A pass for
        one call's own qualifications (inline) does not wait; the next pass
        registers.
        """
        tries = 0
        wait_until = time.monotonic() + _SYNC_WAIT
        if deadline is not None:
            wait_until = min(wait_until, deadline)
        while True:
            try:
                synced = self._sync()
                if waiting:
                    self._housekeep()
            except TransientStoreError:  # a conflict: try again, or the next pass does it
                synced = False
            if synced or not waiting:
                return
            tries += 1
            if not pause(tries, first=0.01, cap=0.2, deadline=wait_until):
                return

    def _sync(self) -> bool:
        """Record this client's callbacks in the store: new ones, and each again hourly.

        The store then gives each one a record of every qualification that is
        still open (enqueued within the window), including those that processes
        without this callback recorded, and of every one enqueued from now on.
        Returns False when a registration was left for later (another
        transaction held the store's registration lock, or a conflict).
        """
        if self._model is None:
            return True
        now = self._clock.now()
        refresh = min(_REFRESH, self._window / 4)
        with self._lock:
            stale = [
                key
                for key in self._callbacks
                if key not in self._synced or now >= self._synced[key] + refresh
            ]
        for kind, name in stale:
            with self._transaction() as tx:
                done = tx.register_callback(self._model, kind, name, now, since=now - self._window)
            if not done:
                return False
            with self._lock:
                self._synced[kind, name] = now
        return True

    def _housekeep(self) -> None:
        """Close the window of qualifications enqueued before it, then purge finished ones.

        At most once a minute on the client's clock. A record never attempted in
        its qualification's window expires, and so does a qualification that no
        callback took (both logged). A qualification with its records is deleted
        ``retention`` after its window closed and each record was delivered or
        expired.
        """
        if self._model is None:
            return
        now = self._clock.now()
        if self._housekept is not None and now < self._housekept + _HOUSEKEEPING:
            return
        with self._transaction() as tx:
            expired = tx.close_deliveries(now - self._window, now, model=self._model)
            tx.purge_deliveries(now - self._retention, model=self._model)
        self._housekept = now
        if expired:
            logger.warning(
                "pqlkit: %d deliveries expired: no callback took them within %s"
                " (see client.deliveries(status='expired'))",
                expired,
                self._window,
            )

    def _attempt_leased(self, delivery: DeliveryRecord) -> None:
        """Attempt a claimed record, its lease renewed until its outcome is recorded."""
        assert delivery.callback is not None
        key = (delivery.id, delivery.callback)
        with self._lock:
            if key in self._inflight:
                # running here already (its lease ran out while a renewal failed):
                # never twice at once; that run records the outcome
                return
            self._inflight[key] = delivery.attempts
        try:
            self._ensure_heartbeat()
            self._attempt(delivery, delivery.callback)
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def _attempt(self, delivery: DeliveryRecord, name: str) -> None:
        with self._lock:
            fn = self._callbacks.get((delivery.kind, name))
        if fn is None:  # pragma: no cover - claimed only for registered names
            return
        attempts = delivery.attempts  # counted by the claim
        if attempts > self._policy.max_attempts:
            # every attempt so far died with its process (or was cut short): give up
            logger.error(
                "pqlkit: %s delivery to %s for %s dead-lettered: %d attempts never finished",
                delivery.kind,
                name,
                delivery.qualification.subject_id,
                attempts - 1,
            )
            self._finish(
                delivery.id,
                name,
                status="dead",
                attempts=attempts - 1,
                next_attempt_at=None,
                last_error=delivery.last_error or "the process died during the callback",
            )
            self._report(DeliveryFailure(delivery.qualification, name, attempts - 1, None, None))
            return
        try:
            fn(delivery.qualification)
        except Exception as exc:  # a callback's error never propagates
            dead = attempts >= self._policy.max_attempts
            logger.exception(
                "pqlkit: %s callback %s failed for %s (attempt %d of %d)%s",
                delivery.kind,
                name,
                delivery.qualification.subject_id,
                attempts,
                self._policy.max_attempts,
                "; dead-lettered" if dead else "",
            )
            next_at = None if dead else self._clock.now() + self._policy.delay(attempts)
            self._finish(
                delivery.id,
                name,
                status="dead" if dead else "pending",
                attempts=attempts,
                next_attempt_at=next_at,
                last_error=f"{type(exc).__name__}: {exc}",
            )
            self._report(DeliveryFailure(delivery.qualification, name, attempts, exc, next_at))
            return
        self._finish(
            delivery.id,
            name,
            status="delivered",
            attempts=attempts,
            next_attempt_at=None,
            last_error=None,
        )
        observers = self._observers
        if observers:
            q = delivery.qualification
            notify(observers, lambda o: o.delivered(q, name, attempts))

    def _report(self, failure: DeliveryFailure) -> None:
        observers = self._observers
        if observers:
            notify(observers, lambda o: o.failed(failure))

    def _finish(
        self,
        delivery_id: str,
        name: str,
        *,
        status: DeliveryStatus,
        attempts: int,
        next_attempt_at: datetime | None,
        last_error: str | None,
    ) -> None:
        """Record an attempt's outcome, re-running the write if the database aborted it.

        If it cannot be recorded, the lease expires and the delivery runs again:
        at least once, never lost.
        """
        finished_at = None if status == "pending" else self._clock.now()
        with self._lock:  # its callback is over: the heartbeat stops renewing the lease
            self._inflight.pop((delivery_id, name), None)
        failed = 0
        while True:
            try:
                with self._transaction() as tx:
                    tx.finish_delivery(
                        delivery_id,
                        name,
                        status=status,
                        attempts=attempts,
                        next_attempt_at=next_attempt_at,
                        last_error=last_error,
                        finished_at=finished_at,
                    )
                return
            except TransientStoreError:
                failed += 1
                if not pause(failed, first=0.01, attempts=_FINISH_ATTEMPTS):
                    logger.warning(
                        "pqlkit: could not record delivery %s to %s; it will run again",
                        delivery_id,
                        name,
                    )
                    return
            except StoreError:
                if not self._closed:
                    raise
                # a callback that close() abandoned ended after it: its store is closed
                logger.info(
                    "pqlkit: delivery %s ended after close(); not recorded, it will run"
                    " again once its lease expires",
                    delivery_id,
                )
                return

    # -- heartbeat ------------------------------------------------------------------
    def _ensure_heartbeat(self) -> None:
        self._check_fork()
        beat = self._beat
        if beat is None or not beat.is_alive():
            with self._lock:
                if self._beat is None or not self._beat.is_alive():
                    beat = threading.Thread(
                        target=self._heartbeat, name="pqlkit-lease", daemon=True
                    )
                    try:
                        beat.start()
                    except RuntimeError:  # the interpreter is exiting (see flush())
                        self._beat = None  # the lease is not renewed: it outlasts the exit
                        return
                    self._beat = beat

    def _heartbeat(self) -> None:
        """Renew the leases of running callbacks every lease / 3; end when idle for a while."""
        interval = self._lease.total_seconds() / _BEATS_PER_LEASE
        idle_since = time.monotonic()
        while True:
            with self._beat_cond:
                self._beat_cond.wait(timeout=interval)
            with self._lock:
                running = dict(self._inflight)
                if not running and (self._closed or time.monotonic() - idle_since >= _BEAT_IDLE):
                    self._beat = None
                    return
            if not running:
                continue
            idle_since = time.monotonic()
            until = datetime.now(timezone.utc) + self._lease
            try:
                with self._transaction() as tx:
                    for (delivery_id, name), attempts in running.items():
                        if tx.renew_lease(delivery_id, name, attempts, until):
                            continue
                        with self._lock:  # not finished meanwhile: lost
                            lost = self._inflight.get((delivery_id, name)) == attempts
                        if lost:
                            logger.warning(
                                "pqlkit: the lease of delivery %s to %s was lost while the"
                                " callback ran; another process may deliver it again",
                                delivery_id,
                                name,
                            )
            except Exception:
                if self._closed:  # the client closed its store: leave the leases to expire
                    logger.debug("pqlkit: a closed client stopped renewing delivery leases")
                    with self._lock:
                        self._beat = None
                    return
                # the next beat tries again
                logger.warning("pqlkit: could not renew delivery leases", exc_info=True)

    def _check_fork(self) -> None:
        pid = os.getpid()
        if pid != self._pid:  # forked: threads do not survive a fork
            self._pid = pid
            self._thread = None
            self._beat = None
            self._cond = threading.Condition()
            self._beat_cond = threading.Condition()
            self._lock = threading.Lock()
            self._inflight = {}
            self._requested = self._completed = 0

    # -- background worker -------------------------------------------------------
    def _wake(self) -> int:
        self._ensure_thread()
        with self._cond:
            self._requested += 1
            ticket = self._requested
            self._cond.notify_all()
        return ticket

    def _ensure_thread(self) -> None:
        self._check_fork()
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            thread = threading.Thread(target=self._loop, name="pqlkit-dispatch", daemon=True)
            thread.start()  # RuntimeError while the interpreter exits (see flush())
            self._thread = thread

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and self._completed >= self._requested:
                    # background mode also polls (retries come due) every second
                    if not self._cond.wait(timeout=1.0) and self.mode == "background":
                        break
                if self._stopping:
                    return
                ticket = self._requested
            try:
                self.run_due()
            except Exception:
                logger.exception("pqlkit: delivery pass failed")
            with self._cond:
                self._completed = max(self._completed, ticket)
                self._cond.notify_all()

    def close(self, timeout: float | None = None) -> int:
        """Attempt what is due for up to ``timeout`` s, then stop the worker.

        Returns (and logs) how many due deliveries were left pending. A callback
        still running then is abandoned on its daemon thread; its lease is renewed
        while this process lives and can reach the store (not once the Client has
        closed a store it opened: then the lease expires and the delivery runs again).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        left = self.flush(timeout)
        self._closed = True
        with self._beat_cond:
            self._beat_cond.notify_all()
        thread = self._thread
        if thread is None or os.getpid() != self._pid:
            return left
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if thread is not threading.current_thread():  # a callback closed the client
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(timeout=remaining)
            if thread.is_alive():
                logger.warning(
                    "pqlkit: close() did not wait for a callback still running after %s s", timeout
                )
        self._thread = None
        return left
