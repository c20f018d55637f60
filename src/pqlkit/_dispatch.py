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
from typing import Literal, Protocol

import attrs

from ._clock import Clock
from ._events import Qualification
from .exceptions import StoreError, TransientStoreError
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
        budget: timedelta = timedelta(seconds=1),
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
        self._callbacks: dict[str, list[Callback]] = {"pql": [], "pqa": [], "disqualified": []}
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
        # leases of the deliveries whose callbacks run now (id -> attempts of the
        # claim), renewed by the heartbeat thread until they finish
        self._inflight: dict[str, int] = {}
        self._beat: threading.Thread | None = None
        self._beat_cond = threading.Condition()

    # -- registration ----------------------------------------------------------
    def register(self, kind: DeliveryKind, fn: Callback) -> None:
        with self._lock:
            self._callbacks[kind].append(fn)

    def kinds(self) -> list[str]:
        with self._lock:
            return [k for k, fns in self._callbacks.items() if fns]

    # -- triggering ------------------------------------------------------------
    def fired(self, ids: Sequence[str]) -> None:
        """After a committed write: deliver what it fired (inline) or wake the worker.

        Inline, only the deliveries of ``ids`` run, in the caller's thread, until
        the inline budget is spent (checked before each callback starts; a running
        callback is not interrupted); the rest stay pending for the next
        ``flush()``, ``sweep()`` or background pass. A caller never waits for
        someone else's delivery, nor for retries.

        Never raises: the write it follows is committed, and a caller that saw an
        error would retry it (storing it twice). A delivery that could not be
        attempted stays pending.
        """
        if not ids or self._closed:
            return
        try:
            if self.mode == "inline":
                self._run(list(ids), time.monotonic() + self._budget)
            else:
                self._wake()
        except Exception:
            logger.exception("pqlkit: delivery after the commit failed; it stays pending")

    def revived(self) -> None:
        """Dead letters were made pending again: inline, deliver them within the budget."""
        self._after_commit(self._budget)

    def swept(self, ids: Sequence[str]) -> None:
        """After a committed sweep(): what it fired, then (inline) every due retry."""
        self.fired(ids)
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
        ticket = self._wake()
        if threading.current_thread() is self._thread:
            return 0  # a callback flushed: waiting for ourselves would never end
        deadline = None if timeout is None else time.monotonic() + timeout
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
        """How many pending deliveries of this client's kinds are due now (and not running)."""
        kinds = self.kinds()
        now = self._clock.now()
        with self._transaction() as tx:
            pending = tx.deliveries("pending", model=self._model)
        with self._lock:
            running = set(self._inflight)
        return sum(
            1
            for d in pending
            if d.kind in kinds
            and (d.next_attempt_at is None or d.next_attempt_at <= now)
            and d.id not in running
        )

    # -- the work --------------------------------------------------------------
    def run_due(self, deadline: float | None = None) -> int:
        """Attempt due deliveries of kinds with a callback until none is left (or ``deadline``).

        Returns how many were attempted.
        """
        return self._run(None, deadline)

    def _run(self, ids: list[str] | None, deadline: float | None) -> int:
        if getattr(self._local, "active", False):
            return 0  # a callback called track(): left for the next pass
        self._local.active = True
        attempted = 0
        try:
            while True:
                kinds = self.kinds()
                if not kinds or self._closed or self._stopping:
                    return attempted
                if deadline is not None and time.monotonic() >= deadline:
                    return attempted
                wall = datetime.now(timezone.utc)
                now = self._clock.now()
                try:
                    with self._transaction() as tx:
                        # one delivery per claim: its lease covers one callback run,
                        # renewed while it runs (see _heartbeat)
                        batch = tx.claim_due(
                            now, wall, wall + self._lease, kinds, 1, model=self._model, ids=ids
                        )
                except TransientStoreError:  # a conflict: the next pass claims them
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
                if not running and (self._closed or time.monotonic() - idle_since >= _BEAT_IDLE):
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
            self._thread = threading.Thread(target=self._loop, name="pqlkit-dispatch", daemon=True)
            self._thread.start()

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
