"""Clocks: where a Client gets "now" from (injectable for tests)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Anything with a ``now()`` returning an aware datetime."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def __repr__(self) -> str:
        return "SystemClock()"
