"""This process, cheaply: its id, a random stream and locks of its own, renewed after fork().

``os.getpid()`` and ``os.urandom()`` are system calls, and every write asks for
the one (is the cache or connection still this process's?) and every event for
the other (a message id). A forked child gets new values from the hook below, and
new locks (see :class:`Lock`).
"""

from __future__ import annotations

import os
import random
import threading
import time
from types import TracebackType

pid = os.getpid()
"""This process's id (read it as ``_process.pid``: it changes in a forked child)."""

_rng = random.Random()  # seeded from os.urandom


def new_message_id() -> str:
    """A fresh message id: a version 7 UUID (RFC 9562) as text.

    Its first 48 bits are the Unix time in milliseconds, so ids are stored in
    about the order they are made: a store's unique index on them grows at its
    right end instead of at random pages (fewer pages touched per insert, fewer
    to checkpoint). The other 74 bits come from this process's Mersenne Twister
    stream (seeded from ``os.urandom``, and again in a forked child, so parent and
    child never share a stream): two ids of one millisecond collide with odds of
    2**-74. Message ids are idempotency keys, not secrets.
    """
    n = (time.time_ns() // 1_000_000) << 80 | _rng.getrandbits(80)
    h = "%032x" % (n & _RANDOM_BITS | _VERSION_7)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_VERSION_7 = (7 << 76) | (2 << 62)  # the version nibble, and the RFC 4122 variant bits
_RANDOM_BITS = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)


class Lock:
    """A module-level lock that a forked child gets anew: the parent's may have been
    copied while another of the parent's threads held it, and no thread of the child
    would ever release it. (Each is kept for the life of the process.)"""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held = self.lock  # the one acquired last: the one to release (once renewed too)
        _locks.append(self)

    def __enter__(self) -> bool:
        lock = self.lock
        lock.acquire()
        self.held = lock
        return True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.held.release()


_locks: list[Lock] = []


def _after_fork_in_child() -> None:
    global pid
    pid = os.getpid()
    _rng.seed()
    for lock in _locks:
        lock.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
