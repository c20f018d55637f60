"""Helpers for testing code that uses pqlkit: a fake store, a frozen clock, and more."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from .exceptions import ValidationError
from .stores.memory import MemoryStore

__all__ = ["FakeStore", "FrozenClock"]

FakeStore = MemoryStore
"""The in-memory store, under the name test suites expect."""


class FrozenClock:
    """A clock that stands still until told to move.

    Args:
        start: An aware datetime.

    Example:
        >>> from datetime import datetime, timedelta, timezone
        >>> clock = FrozenClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
        >>> clock.advance(timedelta(days=2)).isoformat()
        '2026-01-03T00:00:00+00:00'
    """

    def __init__(self, start: datetime) -> None:
        self._now = _aware(start, "start")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FrozenClock({self._now.isoformat()})"

    def now(self) -> datetime:
        """The frozen time."""
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta`` and return the new time."""
        if not isinstance(delta, timedelta):
            raise ValidationError("delta", f"must be a timedelta, got {type(delta).__name__}")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> datetime:
        """Jump to ``when`` (an aware datetime) and return it."""
        value = _aware(when, "when")
        with self._lock:
            self._now = value
            return value


def _aware(value: datetime, field: str) -> datetime:
    from ._validation import check_timestamp

    return check_timestamp(value, field)
