"""This process, cheaply: its id and a random stream of its own, both renewed after fork().

``os.getpid()`` and ``os.urandom()`` are system calls, and every write asks for
the one (is the cache or connection still this process's?) and every event for
the other (a message id). A forked child gets new values from the hook below.
"""

from __future__ import annotations

import os
import random

pid = os.getpid()
"""This process's id (read it as ``_process.pid``: it changes in a forked child)."""

_rng = random.Random()  # seeded from os.urandom


def new_message_id() -> str:
    """A random UUID (version 4) as text, in the format of ``str(uuid.uuid4())``.

    From this process's Mersenne Twister stream (seeded from ``os.urandom``, and
    seeded again in a forked child, so parent and child never share a stream):
    122 random bits make a collision as unlikely as with ``uuid4()``. Message ids
    are idempotency keys, not secrets.
    """
    h = "%032x" % (_rng.getrandbits(128) & _RANDOM_BITS | _VERSION_4)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_VERSION_4 = (4 << 76) | (2 << 62)  # the version nibble, and the RFC 4122 variant bits
_RANDOM_BITS = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)


def _after_fork_in_child() -> None:
    global pid
    pid = os.getpid()
    _rng.seed()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
