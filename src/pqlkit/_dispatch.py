"""Delivery of qualifications from the outbox to callbacks: at least once, with backoff."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from typing import Literal, Protocol

import attrs

from ._clock import Clock
from ._events import Qualification
from .exceptions import TransientStoreError
from .stores._base import DeliveryRecord, DeliveryStatus, Store, Transaction

__all__ = ["Callback", "Dispatcher", "RetryPolicy"]

logger = logging.getLogger("pqlkit")

DeliveryKind = Literal["pql", "pqa", "disqualified"]
_FINISH_ATTEMPTS = 5
_BEATS_PER_LEASE = 3  # a running callback's lease is renewed this often per lease
_BEAT_IDLE = 60.0  # seconds without a running callback before the heartbeat thread ends


class Callback(Protocol):
    """A function called with one :class:`~pqlkit.Qualification`."""

    def __call__(self, qualification: Qualification, /) -> object: ...


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
    ) -> None:
        self._store = store
        self._model = model  # only this model's deliveries are claimed
        # how to open a transaction (the Client passes its own, which keeps its cache valid)
        self._transaction = transaction if transaction is not None else store.transaction
        self._clock = clock
        self.mode = mode
        self._policy = policy
        self._lease = lease
        self._callbacks: dict[str, list[Callback]] = {"pql": [], "pqa": [], "disqualified": []}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._known_due: datetime | None = None
        self._last_poll = 0.0
        self._dirty = True
        # background mode
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._stopping = False
        self._closed = False  # close() was called: claim nothing more
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        # leases of the deliveries whose callbacks run now (id -> attempts of the
        # claim), renewed by the heartbeat thread until they finish
        self._inflight: dict[str, int] = {}
        self._beat: threading.Thread | None = None
        self._beat_cond = threading.Condition()

    # -- registration ----------------------------------------------------------
    def register(self, kind: DeliveryKind, fn: Callback) -> None:
        with self._lock:
            self._callbacks[kind].append(fn)
            self._dirty = True

    def kinds(self) -> list[str]:
        with self._lock:
            return [k for k, fns in self._callbacks.items() if fns]

    # -- triggering ------------------------------------------------------------
    def poke(self, *, enqueued: bool) -> None:
        """Called after each write: run what is due (inline) or wake the worker.

        Never raises: the write it follows is committed, and a caller that saw an
        error would retry it (storing it twice). A delivery that could not be
        attempted stays pending.
        """
        try:
            if enqueued:
                self._dirty = True
            if self._closed or not self._should_run():
                return
            if self.mode == "inline":
                self.run_due()
            else:
                self._wake()
        except Exception:
            logger.exception("pqlkit: delivery after the commit failed; it stays pending")

    def flush(self) -> None:
        """Attempt every due delivery; in background mode wait for the worker to do it."""
        self._dirty = True
        if self.mode == "inline":
            self.run_due()
            return
        ticket = self._wake()
        if threading.current_thread() is self._thread:
            return  # a callback flushed: waiting for ourselves would never end
        with self._cond:
            while self._completed < ticket and self._thread is not None:
                self._cond.wait(timeout=0.5)
                if self._thread is not None and not self._thread.is_alive():
                    break

    def _should_run(self) -> bool:
        if self._dirty:
            return True
        if self._known_due is not None and self._clock.now() >= self._known_due:
            return True
        return time.monotonic() - self._last_poll >= 1.0

    # -- the work --------------------------------------------------------------
    def run_due(self) -> int:
        """Attempt every due delivery whose kind has a callback; return how many were attempted."""
        if getattr(self._local, "active", False):
            return 0  # a callback called track(): the outer loop picks new work up
        self._local.active = True
        attempted = 0
        try:
            self._dirty = False
            self._last_poll = time.monotonic()
            self._known_due = None
            while True:
                kinds = self.kinds()
                if not kinds or self._closed:
                    return attempted
                wall = datetime.now(timezone.utc)
                now = self._clock.now()
                try:
                    with self._transaction() as tx:
                                # one delivery per claim: its lease covers one callback run,
                        # renewed while it runs (see _heartbeat)
                        batch = tx.claim_due(
                            now, wall, wall + self._lease, kinds, 1, model=self._model
                        )
                except TransientStoreError:  # a conflict: the next pass claims them
                    self._dirty = True
                    return attempted
                if not batch:
                    return attempted
                for delivery in batch:
                    self._attempt_leased(delivery)
                    attempted += 1
        finally:
            self._local.active = False

    def _attempt_leased(self, delivery: DeliveryRecord) -> None:
        """Attempt a claimed delivery, its lease renewed until its outcome is recorded."""
        with self._lock:
            if delivery.id in self._inflight:
                # running here already (its lease ran out while a renewal failed):
                # never twice at once; that run records the outcome
                return
            self._inflight[delivery.id] = delivery.attempts
        try:
            self._ensure_heartbeat()
            self._attempt(delivery)
        finally:
            with self._lock:
                self._inflight.pop(delivery.id, None)

    def _attempt(self, delivery: DeliveryRecord) -> None:
        with self._lock:
            fns = list(self._callbacks[delivery.kind])
        attempts = delivery.attempts  # counted by the claim
        if attempts > self._policy.max_attempts:
            # every attempt so far died with its process (or was cut short): give up
            logger.error(
                "pqlkit: %s delivery for %s dead-lettered: %d attempts never finished",
                delivery.kind,
                delivery.qualification.subject_id,
                attempts - 1,
            )
            self._finish(
                delivery.id,
                status="dead",
                attempts=attempts - 1,
                next_attempt_at=None,
                last_error=delivery.last_error or "the process died during the callback",
            )
            return
        try:
            for fn in fns:
                fn(delivery.qualification)
        except Exception as exc:  # a callback's error never propagates
            dead = attempts >= self._policy.max_attempts
            logger.exception(
                "pqlkit: %s callback failed for %s (attempt %d of %d)%s",
                delivery.kind,
                delivery.qualification.subject_id,
                attempts,
                self._policy.max_attempts,
                "; dead-lettered" if dead else "",
            )
            next_at = None if dead else self._clock.now() + self._policy.delay(attempts)
            if next_at is not None and (self._known_due is None or next_at < self._known_due):
                self._known_due = next_at
            self._finish(
                delivery.id,
                status="dead" if dead else "pending",
                attempts=attempts,
                next_attempt_at=next_at,
                last_error=f"{type(exc).__name__}: {exc}",
            )
            return
        self._finish(
            delivery.id,
            status="delivered",
            attempts=attempts,
            next_attempt_at=None,
            last_error=None,
        )

    def _finish(
        self,
        delivery_id: str,
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
        for attempt in range(1, _FINISH_ATTEMPTS + 1):
            try:
                with self._transaction() as tx:
                    tx.finish_delivery(
                        delivery_id,
                        status=status,
                        attempts=attempts,
                        next_attempt_at=next_attempt_at,
                        last_error=last_error,
                    )
                return
            except TransientStoreError:
                if attempt == _FINISH_ATTEMPTS:
                    logger.warning(
                        "pqlkit: could not record delivery %s; it will run again", delivery_id
                    )
                    return
                time.sleep(0.005 * 2**attempt * random.uniform(0.5, 1.5))

    # -- heartbeat ------------------------------------------------------------------
    def _ensure_heartbeat(self) -> None:
        self._check_fork()
        beat = self._beat
        if beat is None or not beat.is_alive():
            with self._lock:
                if self._beat is None or not self._beat.is_alive():
                    self._beat = threading.Thread(
                        target=self._heartbeat, name="pqlkit-lease", daemon=True
                    )
                    self._beat.start()

    def _heartbeat(self) -> None:
        """Renew the leases of running callbacks every lease / 3; end when idle for a while."""
        interval = self._lease.total_seconds() / _BEATS_PER_LEASE
        idle_since = time.monotonic()
        while True:
            with self._beat_cond:
                self._beat_cond.wait(timeout=interval)
            with self._lock:
                running = dict(self._inflight)
                if not running and (
                    self._closed or time.monotonic() - idle_since >= _BEAT_IDLE
                ):
                    self._beat = None
                    return
            if not running:
                continue
            idle_since = time.monotonic()
            until = datetime.now(timezone.utc) + self._lease
            try:
                with self._transaction() as tx:
                    for delivery_id, attempts in running.items():
                        if not tx.renew_lease(delivery_id, attempts, until):
                            logger.warning(
                                "pqlkit: the lease of delivery %s was lost while its callback"
                                " ran; another process may deliver it again",
                                delivery_id,
                            )
            except Exception:  # the next beat tries again
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
            self._thread = threading.Thread(target=self._loop, name="pqlkit-dispatch", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._completed >= self._requested and not self._stopping:
                    self._cond.wait(timeout=1.0)
                if self._stopping:
                    return
                ticket = self._requested
            try:
                self.run_due()
            except Exception:
                logger.exception("pqlkit: background delivery pass failed")
            with self._cond:
                self._completed = max(self._completed, ticket)
                self._cond.notify_all()

    def close(self) -> None:
        self._closed = True
        with self._beat_cond:
            self._beat_cond.notify_all()
        thread = self._thread
        if thread is None or os.getpid() != self._pid:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if thread is not threading.current_thread():  # a callback closed the client
            thread.join(timeout=10)
        self._thread = None
