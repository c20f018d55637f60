"""What a client reports as it works, for telemetry: the :class:`Observer` hooks and the
:class:`DeliveryFailure` record.

A Client calls its observers (``Client.add_observer``) at a few points: around
``track()``, after a committed write fired qualifications, and after each delivery
attempt. With none added it calls nothing, so telemetry costs nothing until it is
turned on. ``Client.on_delivery_error`` and ``pqlkit.integrations.otel`` are built
on these hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import attrs

from ._events import Qualification, TrackResult

__all__ = [
    "DeliveryFailure",
    "DeliveryFailureHook",
    "FailureHook",
    "Observer",
    "notify",
    "overrides_track",
]

logger = logging.getLogger("pqlkit")


@attrs.frozen
class DeliveryFailure:
    """A delivery attempt that failed, as :meth:`Client.on_delivery_error` reports it.

    Attributes:
        qualification: What was being delivered.
        callback: The name of the callback that failed.
        attempt: Which attempt it was (1 for the first).
        error: What the callback raised; None when the delivery is dead-lettered
            because its attempts never finished (each died with its process).
        next_attempt_at: When it is retried (the client's clock); None when it
            was dead-lettered: ``client.retry_dead_letters()`` revives it.
    """

    qualification: Qualification
    callback: str
    attempt: int
    error: Exception | None
    next_attempt_at: datetime | None

    @property
    def dead(self) -> bool:
        """True when the delivery was dead-lettered: it will not be tried again by itself."""
        return self.next_attempt_at is None


class Observer:
    """Hooks a :class:`~pqlkit.Client` calls as it works; each one here does nothing.

    Subclass it and override what you need, then ``client.add_observer(obs)``.
    The hooks run on the thread doing the work (``track()``'s caller, or the
    dispatch thread for deliveries) and must be quick. An exception raised by
    ``fired``, ``delivered`` or ``failed`` is logged on the ``pqlkit`` logger and
    otherwise ignored; ``track`` wraps the caller's call, so what it raises
    reaches the caller.
    """

    def track(
        self, call: Callable[[], TrackResult], event: object, account_id: object
    ) -> TrackResult:
        """Wrap one ``track()`` call: return ``call()``, observing it (a span, a timer).

        ``event`` and ``account_id`` are what the caller passed, not yet checked.
        Only observers that override this method are called on ``track()``. Let
        ``call()``'s exceptions through, and raise none of your own once it
        returned: the event is stored, and a caller that saw an error would
        track it again.
        """
        return call()

    def fired(self, qualification: Qualification) -> None:
        """A committed write fired ``qualification`` (a PQL, PQA or disqualification)."""

    def delivered(self, qualification: Qualification, callback: str, attempt: int) -> None:
        """``callback`` returned for ``qualification`` on ``attempt`` (1 for the first)."""

    def failed(self, failure: DeliveryFailure) -> None:
        """A delivery attempt failed, or a delivery was dead-lettered (``failure.dead``)."""


DeliveryFailureHook = Callable[[DeliveryFailure], object]
"""What ``Client.on_delivery_error`` takes: a function of one :class:`DeliveryFailure`."""


class FailureHook(Observer):
    """An observer that calls ``fn(failure)`` on each failed delivery attempt."""

    def __init__(self, fn: DeliveryFailureHook) -> None:
        self.fn = fn

    def failed(self, failure: DeliveryFailure) -> None:
        self.fn(failure)


def notify(observers: tuple[Observer, ...], hook: Callable[[Observer], object]) -> None:
    """``hook(observer)`` for each observer; an observer's error is logged, never raised."""
    for observer in observers:
        try:
            hook(observer)
        except Exception:
            logger.exception("pqlkit: observer %r failed", observer)


def overrides_track(observer: Observer) -> bool:
    """Whether ``observer`` wraps ``track()`` (the others are not called there)."""
    return type(observer).track is not Observer.track
