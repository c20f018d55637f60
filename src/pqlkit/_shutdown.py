"""Closing the clients a process left open when its interpreter exits: bounded, weakly held.

A Client built with ``flush_at_exit`` on registers itself here; ``close()`` takes
it out. At exit (an :mod:`atexit` hook, registered with the first client) every
client this process built and left open is closed, all at once on threads of
their own, each given its ``flush_at_exit`` seconds to deliver what is due (its
``close(timeout)``), plus :data:`GRACE` to write back and close its store; then
the interpreter goes on exiting whatever is still running. A hung callback, or a
store that does not answer, never holds the exit longer.

The registry holds clients by weak reference: registering keeps nothing alive. A
forked child starts with an empty registry (it exits without touching the
clients it inherited: its parent owns them), and registers the clients it builds.

CPython 3.12 refuses to start a thread in an atexit hook (``RuntimeError: can't
create new thread at interpreter shutdown``; "Changed in version 3.12" in the
:mod:`atexit` docs). There the first registration starts one idle daemon thread
(``pqlkit-exit``) that waits for the exit; the hook wakes it and waits, bounded,
while it closes the clients one after another, each delivering on that thread
(the dispatcher falls back to its caller's thread when it cannot start its own).
A hung callback then holds that thread, not the exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import weakref
from typing import Protocol

__all__ = ["GRACE", "Closeable", "close_all", "register", "unregister"]

logger = logging.getLogger("pqlkit")

GRACE = 1.0
"""Seconds an exit allows each client beyond its ``flush_at_exit``, to close its store."""


class Closeable(Protocol):
    """What the exit hook closes: a Client."""

    def close(self, timeout: float | None = ...) -> None: ...


STANDBY = sys.version_info[:2] == (3, 12)
"""Whether the exit's work runs on a thread started beforehand (see the module docstring)."""

_lock = threading.Lock()
_open: weakref.WeakKeyDictionary[Closeable, float] = weakref.WeakKeyDictionary()
_hooked = False
_standby: threading.Thread | None = None
_exiting = threading.Event()  # set by the hook: the standby thread closes the clients
_closed = threading.Event()  # set by the standby thread when it is done


def register(client: Closeable, timeout: float) -> None:
    """Close ``client`` at exit (waiting up to ``timeout`` s for its deliveries) if still open."""
    global _hooked, _standby, _exiting, _closed
    with _lock:
        _open[client] = timeout
        if not _hooked:
            atexit.register(close_all)
            _hooked = True
        if STANDBY and (_standby is None or not _standby.is_alive()):
            # fresh events for each standby thread: one that close_all() already woke
            # (a test calls it before the exit) must not wake the next one at once
            _exiting, _closed = threading.Event(), threading.Event()
            _standby = threading.Thread(
                target=_wait_for_exit, args=(_exiting, _closed), name="pqlkit-exit", daemon=True
            )
            _standby.start()


def _wait_for_exit(exiting: threading.Event, closed: threading.Event) -> None:
    exiting.wait()
    try:
        _close_each()
    finally:
        closed.set()


def unregister(client: Closeable) -> None:
    """Forget ``client`` (it was closed)."""
    with _lock:
        _open.pop(client, None)


def close_all() -> None:
    """Close every registered client (the exit hook): in parallel, each bounded.

    Returns once each one closed, or at the latest when the longest
    ``flush_at_exit`` plus :data:`GRACE` has passed; a client still closing then
    is left to the interpreter's exit (what it did not deliver stays pending).
    """
    standby = _standby
    if standby is None or not standby.is_alive():
        _close_each()
        return
    with _lock:  # the standby thread closes them one after another: the bound is their sum
        if not _open:
            return
        bound = sum(_open.values()) + GRACE * len(_open)
    exiting, closed = _exiting, _closed
    exiting.set()
    if not closed.wait(bound):
        logger.warning(
            "pqlkit: clients were still closing at exit; what they did not deliver stays pending"
        )


def _close_each() -> None:
    with _lock:
        todo = list(_open.items())
        _open.clear()
    waits: list[tuple[threading.Thread, float, Closeable]] = []
    for client, timeout in todo:
        thread = threading.Thread(
            target=_close, args=(client, timeout), name="pqlkit-exit", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # no new threads this late in the exit: close it here
            _close(client, timeout)
            continue
        waits.append((thread, time.monotonic() + timeout + GRACE, client))
    for thread, deadline, client in waits:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            logger.warning(
                "pqlkit: %r was still closing at exit; what it did not deliver stays pending",
                client,
            )


def _close(client: Closeable, timeout: float) -> None:
    try:
        client.close(timeout)
    except Exception:  # an exit hook must not raise; nothing due is lost: it stays pending
        logger.exception("pqlkit: closing %r at exit failed", client)


def _after_fork_in_child() -> None:
    global _lock, _open, _standby, _exiting, _closed
    _lock = threading.Lock()  # another thread may have held it at the fork
    _open = weakref.WeakKeyDictionary()
    _standby = None  # threads do not survive a fork: the child's first client starts one
    _exiting, _closed = threading.Event(), threading.Event()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
