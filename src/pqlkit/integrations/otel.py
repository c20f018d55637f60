"""OpenTelemetry for pqlkit: a span per ``track()``, counters of qualifications and
deliveries, and the outbox's depth. Needs the ``otel`` extra (``opentelemetry-api``).

Turn it on once per client, after setting up your OpenTelemetry SDK::

    from pqlkit.integrations import otel

    client = pqlkit.Client(model, store=...)
    otel.instrument(client)        # the global tracer and meter providers, or pass your own

What it reports (instrumentation scope ``pqlkit``):

- span ``pqlkit.track`` around each ``track()``, a child of the caller's current
  span, with the attributes ``pqlkit.model``, ``pqlkit.event`` (the event's name),
  ``pqlkit.subjects`` (``["user"]`` or ``["user", "account"]``: what the event was
  evaluated for), ``pqlkit.qualified`` and ``pqlkit.disqualified`` (how many it
  fired) and ``pqlkit.duplicate``. No user or account id, no properties: nothing
  personal. A failed call sets the span's status to ERROR and ``error.type`` to
  the exception's class (not its message, which may hold the bad value);
- histogram ``pqlkit.track.duration`` (s), per ``pqlkit.model`` (and ``error.type``);
- counters ``pqlkit.qualifications`` and ``pqlkit.disqualifications``, per
  ``pqlkit.model`` and ``pqlkit.kind`` (``pql``, ``pqa``): what committed writes
  fired (``track()``, ``track_many()``, ``identify()``, ``group()``, ``alias()``,
  ``sweep()``, ``rebuild()``); not what a write inside your own transaction
  (``connection=``) fires, nor what a rebuild only records (``on_retune="record"``);
- counter ``pqlkit.deliveries``, per ``pqlkit.model``, ``pqlkit.kind`` (``pql``,
  ``pqa``, ``disqualified``), ``pqlkit.callback`` (its name) and ``pqlkit.outcome``:
  ``ok``, ``failed`` (to be retried) or ``dead`` (dead-lettered), one per attempt
  this process made;
- observable gauge ``pqlkit.outbox.pending``: deliveries not delivered yet, per
  ``pqlkit.model`` and ``pqlkit.callback`` (absent for qualifications no callback
  took yet), read from the store each time the metrics are collected.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from importlib import metadata

from .._async import AsyncClient
from .._client import Client
from .._events import Qualification, TrackResult
from .._observe import DeliveryFailure, Observer
from ..exceptions import PqlkitError, ValidationError

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import Status, StatusCode
except ImportError as error:
    raise ImportError(
        'pqlkit.integrations.otel needs OpenTelemetry: pip install "pqlkit[otel]"'
    ) from error

__all__ = ["OtelObserver", "instrument"]

logger = logging.getLogger("pqlkit")

try:
    _VERSION = metadata.version("pqlkit")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    _VERSION = ""

_instrumented: weakref.WeakSet[Client] = weakref.WeakSet()
_USER = ("user",)
_USER_AND_ACCOUNT = ("user", "account")


def instrument(
    client: Client | AsyncClient,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> None:
    """Report ``client``'s work to OpenTelemetry (see the module's docstring for what).

    Args:
        client: A :class:`~pqlkit.Client` or :class:`~pqlkit.AsyncClient`.
        tracer_provider: Where spans go (default: the global one).
        meter_provider: Where metrics go (default: the global one).

    Raises:
        ValidationError: ``client`` is not a client, or is instrumented already.
    """
    target = client.client if isinstance(client, AsyncClient) else client
    if not isinstance(target, Client):
        raise ValidationError(
            "client", f"must be a pqlkit.Client or AsyncClient, got {type(client).__name__}"
        )
    with _lock:
        if target in _instrumented:
            raise ValidationError("client", "is instrumented already")
        _instrumented.add(target)
    tracer = trace.get_tracer("pqlkit", _VERSION, tracer_provider=tracer_provider)
    meter = metrics.get_meter("pqlkit", _VERSION, meter_provider=meter_provider)
    target.add_observer(OtelObserver(target.model.name, tracer, meter))
    _outbox(meter).clients.add(target)


class OtelObserver(Observer):
    """The observer :func:`instrument` adds: spans and metrics for one client."""

    def __init__(self, model: str, tracer: trace.Tracer, meter: metrics.Meter) -> None:
        self._model = model
        self._model_attributes = {"pqlkit.model": model}
        self._tracer = tracer
        self._duration = meter.create_histogram(
            "pqlkit.track.duration", unit="s", description="Duration of pqlkit track() calls"
        )
        self._qualifications = meter.create_counter(
            "pqlkit.qualifications",
            unit="{qualification}",
            description="Users (pql) and accounts (pqa) that qualified",
        )
        self._disqualifications = meter.create_counter(
            "pqlkit.disqualifications",
            unit="{disqualification}",
            description="Qualified users and accounts whose rule turned false",
        )
        self._deliveries = meter.create_counter(
            "pqlkit.deliveries",
            unit="{attempt}",
            description="Delivery attempts to callbacks, by outcome (ok, failed, dead)",
        )

    def track(
        self, call: Callable[[], TrackResult], event: object, account_id: object
    ) -> TrackResult:
        attributes = {
            "pqlkit.model": self._model,
            "pqlkit.event": event if isinstance(event, str) else "",
            "pqlkit.subjects": _USER if account_id is None else _USER_AND_ACCOUNT,
        }
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            "pqlkit.track",
            attributes=attributes,
            record_exception=False,  # its message may hold the bad value: personal data
            set_status_on_exception=False,
        ) as span:
            try:
                result = call()
            except BaseException as exc:
                kind = type(exc).__qualname__
                span.set_status(Status(StatusCode.ERROR, kind))
                span.set_attribute("error.type", kind)
                self._duration.record(
                    time.perf_counter() - started,
                    {"pqlkit.model": self._model, "error.type": kind},
                )
                raise
            try:  # the event is stored: nothing may raise from here on (see Observer.track)
                span.set_attributes(
                    {
                        "pqlkit.qualified": len(result.qualified),
                        "pqlkit.disqualified": len(result.disqualified),
                        "pqlkit.duplicate": result.duplicate,
                    }
                )
            except Exception:  # pragma: no cover - OpenTelemetry's API does not raise
                logger.debug("pqlkit: could not set the span's attributes", exc_info=True)
        try:
            self._duration.record(time.perf_counter() - started, self._model_attributes)
        except Exception:  # pragma: no cover - OpenTelemetry's API does not raise
            logger.debug("pqlkit: could not record track()'s duration", exc_info=True)
        return result

    def fired(self, qualification: Qualification) -> None:
        counter = (
            self._qualifications
            if qualification.disqualified_at is None
            else self._disqualifications
        )
        counter.add(1, {"pqlkit.model": qualification.model, "pqlkit.kind": qualification.kind})

    def delivered(self, qualification: Qualification, callback: str, attempt: int) -> None:
        self._count(qualification, callback, "ok")

    def failed(self, failure: DeliveryFailure) -> None:
        self._count(failure.qualification, failure.callback, "dead" if failure.dead else "failed")

    def _count(self, qualification: Qualification, callback: str, outcome: str) -> None:
        kind = "disqualified" if qualification.disqualified_at is not None else qualification.kind
        self._deliveries.add(
            1,
            {
                "pqlkit.model": qualification.model,
                "pqlkit.kind": kind,
                "pqlkit.callback": callback,
                "pqlkit.outcome": outcome,
            },
        )


class _Outbox:
    """The ``pqlkit.outbox.pending`` gauge of one meter, over every client instrumented on it.

    (A meter hands out one instrument per name: a second client's gauge would be
    the first's, so one gauge reads them all.)
    """

    def __init__(self, meter: metrics.Meter) -> None:
        self.clients: weakref.WeakSet[Client] = weakref.WeakSet()
        meter.create_observable_gauge(
            "pqlkit.outbox.pending",
            callbacks=[self._observe],
            unit="{delivery}",
            description="Deliveries waiting in pqlkit's outbox",
        )

    def _observe(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        depth: Counter[tuple[str, str | None]] = Counter()
        for client in list(self.clients):
            try:
                pending = client.deliveries(status="pending")
            except PqlkitError:  # closed, or the store cannot answer now
                continue
            depth[client.model.name, None] += 0  # a model with nothing pending reads 0
            for delivery in pending:
                depth[client.model.name, delivery.callback] += 1
        for (model, callback), count in depth.items():
            attributes = {"pqlkit.model": model}
            if callback is not None:
                attributes["pqlkit.callback"] = callback
            yield metrics.Observation(count, attributes)


_outboxes: weakref.WeakKeyDictionary[metrics.Meter, _Outbox] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _outbox(meter: metrics.Meter) -> _Outbox:
    with _lock:
        outbox = _outboxes.get(meter)
        if outbox is None:
            outbox = _outboxes[meter] = _Outbox(meter)
        return outbox
