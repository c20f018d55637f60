"""Pauses between attempts of an operation that failed transiently: jittered exponential
backoff, bounded by a number of attempts or by a deadline.

Every retry loop in pqlkit (a write the database aborted, SQLite's "database is
locked", a broken pooled PostgreSQL connection, recording a delivery's outcome) keeps
its own ``while True: try ... except`` (nothing extra on the path that succeeds) and
asks :func:`pause` whether, and after how long, to try again.
"""

from __future__ import annotations

import math
import random
import time

__all__ = ["pause"]


def pause(
    failed: int,
    *,
    first: float,
    cap: float = math.inf,
    attempts: int | None = None,
    deadline: float | None = None,
) -> bool:
    """Wait before trying again after ``failed`` attempts (1 after the first), or say not to.

    The wait is ``first * 2**(failed - 1)``, at most ``cap`` seconds, times a jitter
    in [0.5, 1.5) (so that writers that collided do not collide again), and never
    runs past ``deadline`` (a ``time.monotonic()`` value).

    Returns:
        True after waiting; False, at once, when ``attempts`` attempts were made or
        the deadline has passed: the caller gives up.
    """
    if attempts is not None and failed >= attempts:
        return False
    delay = min(cap, first * 2 ** min(failed - 1, 60)) * random.uniform(0.5, 1.5)
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        delay = min(delay, remaining)
    time.sleep(delay)
    return True
