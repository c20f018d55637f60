"""pqlkit.integrations.otel: spans and metrics, seen by OpenTelemetry's in-memory exporters."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra's tests need opentelemetry-sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from pqlkit import AsyncClient, Client, Model, Qualification, ValidationError, did, signal
from pqlkit.integrations import otel
from pqlkit.testing import ClientFactory, FrozenClock

MODEL = Model(
    "otel",
    signals={"built": did("dashboard_built"), "churned": did("churned")},
    pql=signal("built") & ~signal("churned"),
    pqa=did("dashboard_built"),
)


class Telemetry:
    """A tracer provider and a meter provider that keep what they get in memory."""

    def __init__(self) -> None:
        self.spans_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans_exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def instrument(self, client: Client | AsyncClient) -> None:
        otel.instrument(
            client, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def spans(self, name: str = "pqlkit.track") -> list[ReadableSpan]:
        return [s for s in self.spans_exporter.get_finished_spans() if s.name == name]

    def points(self, metric: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """Each data point of ``metric``: its sorted attributes -> its value (or histogram)."""
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name != metric:
                        continue
                    for p in m.data.data_points:
                        key = tuple(sorted(dict(p.attributes or {}).items()))
                        found[key] = getattr(p, "value", p)
        return found


@pytest.fixture(name="telemetry")
def fixture_telemetry() -> Iterator[Telemetry]:
    """In-memory OpenTelemetry providers, shut down after the test."""
    t = Telemetry()
    yield t
    t.tracer_provider.shutdown()
    t.meter_provider.shutdown()


class Down:
    def __call__(self, q: Qualification) -> None:
        raise ConnectionError("down")


def test_track_makes_a_span_with_its_attributes_and_nothing_personal(
    pql_client: ClientFactory, telemetry: Telemetry
) -> None:
    """One pqlkit.track span per call: model, event, subjects, qualified counts; no ids."""
    client = pql_client(MODEL)
    telemetry.instrument(client)
    client.track("jane@acme.io", "page_viewed", {"path": "/secret"})
    client.track("jane@acme.io", "dashboard_built", account_id="acme-corp")
    first, second = telemetry.spans()
    assert dict(first.attributes or {}) == {
        "pqlkit.model": "otel",
        "pqlkit.event": "page_viewed",
        "pqlkit.subjects": ("user",),
        "pqlkit.qualified": 0,
        "pqlkit.disqualified": 0,
        "pqlkit.duplicate": False,
    }
    attributes = dict(second.attributes or {})
    assert attributes["pqlkit.subjects"] == ("user", "account")
    assert attributes["pqlkit.qualified"] == 2  # the user's pql and the account's pqa
    for span in (first, second):
        assert span.status.status_code == StatusCode.UNSET
        text = repr(dict(span.attributes or {}))
        assert "jane" not in text
        assert "acme" not in text
        assert "secret" not in text


def test_the_span_is_a_child_of_the_callers_span(
    pql_client: ClientFactory, telemetry: Telemetry
) -> None:
    """track() inside a request's span makes pqlkit.track its child."""
    client = pql_client(MODEL)
    telemetry.instrument(client)
    tracer = telemetry.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("POST /events") as request:
        client.track("u1", "x")
    [span] = telemetry.spans()
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id


def test_a_failed_track_sets_error_without_the_message(
    pql_client: ClientFactory, telemetry: Telemetry
) -> None:
    """A ValidationError: status ERROR, error.type, no exception event holding the value."""
    client = pql_client(MODEL)
    telemetry.instrument(client)
    with pytest.raises(ValidationError):
        client.track("u1", "x", {"ssn": float("nan")})
    [span] = telemetry.spans()
    assert span.status.status_code == StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "ValidationError"
    assert span.events == ()
    durations = telemetry.points("pqlkit.track.duration")
    assert (("error.type", "ValidationError"), ("pqlkit.model", "otel")) in durations


def test_counters_of_qualifications_and_deliveries(
    pql_client: ClientFactory, pql_clock: FrozenClock, telemetry: Telemetry
) -> None:
    """Qualifications per model and kind; delivery attempts per callback and outcome."""
    client = pql_client(MODEL, max_attempts=2)
    client.on_pql(lambda q: None, name="slack")
    client.on_pql(Down(), name="crm")
    telemetry.instrument(client)
    client.track("u1", "dashboard_built", account_id="acme")
    client.track("u2", "dashboard_built", account_id="acme")
    client.track("u1", "churned", account_id="acme")
    pql_clock.advance(timedelta(hours=1))
    client.flush()  # crm's second and last attempts: dead-lettered
    assert telemetry.points("pqlkit.qualifications") == {
        (("pqlkit.kind", "pql"), ("pqlkit.model", "otel")): 2,
        (("pqlkit.kind", "pqa"), ("pqlkit.model", "otel")): 1,
    }
    assert telemetry.points("pqlkit.disqualifications") == {
        (("pqlkit.kind", "pql"), ("pqlkit.model", "otel")): 1,
    }

    def key(callback: str, outcome: str) -> tuple[tuple[str, Any], ...]:
        return (
            ("pqlkit.callback", callback),
            ("pqlkit.kind", "pql"),
            ("pqlkit.model", "otel"),
            ("pqlkit.outcome", outcome),
        )

    assert telemetry.points("pqlkit.deliveries") == {
        key("slack", "ok"): 2,
        key("crm", "failed"): 2,
        key("crm", "dead"): 2,
    }
    [histogram] = telemetry.points("pqlkit.track.duration").values()
    assert histogram.count == 3


def test_the_outbox_gauge_reads_what_is_pending(
    pql_client: ClientFactory, telemetry: Telemetry
) -> None:
    """pqlkit.outbox.pending: per callback; without one, what no callback took yet."""
    client = pql_client(MODEL)
    telemetry.instrument(client)
    assert telemetry.points("pqlkit.outbox.pending") == {(("pqlkit.model", "otel"),): 0}
    client.track("u1", "dashboard_built", account_id="acme")  # no callback yet: not taken
    assert telemetry.points("pqlkit.outbox.pending") == {(("pqlkit.model", "otel"),): 2}
    client.on_pql(Down(), name="crm")
    client.flush()  # crm takes the pql, fails: pending for crm; the pqa is still untaken
    assert telemetry.points("pqlkit.outbox.pending") == {
        (("pqlkit.model", "otel"),): 1,
        (("pqlkit.callback", "crm"), ("pqlkit.model", "otel")): 1,
    }


def test_one_gauge_reads_every_client_of_a_meter_provider(
    pql_client: ClientFactory, telemetry: Telemetry
) -> None:
    """Two instrumented clients on one meter provider: both models are in the gauge."""
    first = pql_client(MODEL)
    second = pql_client(Model("other", pql=did("x")))
    telemetry.instrument(first)
    telemetry.instrument(second)
    second.track("u1", "x")
    assert telemetry.points("pqlkit.outbox.pending") == {
        (("pqlkit.model", "otel"),): 0,
        (("pqlkit.model", "other"),): 1,
    }
    first.close()  # a closed client is left out
    assert telemetry.points("pqlkit.outbox.pending") == {(("pqlkit.model", "other"),): 1}


def test_instrument_checks_its_client(pql_client: ClientFactory, telemetry: Telemetry) -> None:
    """Not a client, or one instrumented already: ValidationError naming client."""
    client = pql_client(MODEL)
    telemetry.instrument(client)
    for bad in (client, "client"):
        with pytest.raises(ValidationError) as caught:
            telemetry.instrument(bad)  # type: ignore[arg-type]
        assert caught.value.field == "client"


def test_an_async_client_is_instrumented_through_its_client(telemetry: Telemetry) -> None:
    """instrument(AsyncClient): the span of an awaited track() is a child of the caller's."""

    async def main() -> int:
        async with AsyncClient(MODEL, store="memory://") as client:
            telemetry.instrument(client)
            tracer = telemetry.tracer_provider.get_tracer("app")
            with tracer.start_as_current_span("request") as request:
                await client.track("u1", "dashboard_built")
            return request.get_span_context().span_id

    request_id = asyncio.run(main())
    [span] = telemetry.spans()
    assert span.parent is not None
    assert span.parent.span_id == request_id


def test_without_the_extra_the_import_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """No opentelemetry installed: importing the integration says which extra to install."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "pqlkit.integrations.otel")
    with pytest.raises(ImportError, match=r'pip install "pqlkit\[otel\]"'):
        importlib.import_module("pqlkit.integrations.otel")


def test_the_telemetry_example_prints_the_failure_spans_and_metrics(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """examples/telemetry.py: the hook's line, two track spans, the counters and the gauge."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    try:
        import telemetry

        telemetry.main()
    finally:
        sys.path.pop(0)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("delivery to crm failed (attempt 1): ConnectionError(")
    assert sum(line.startswith("pqlkit.track {") for line in out) == 2
    assert (
        "pqlkit.deliveries {'pqlkit.model': 'telemetry-demo', 'pqlkit.kind': 'pql',"
        " 'pqlkit.callback': 'crm', 'pqlkit.outcome': 'failed'} 1"
    ) in out
    assert (
        "pqlkit.outbox.pending {'pqlkit.model': 'telemetry-demo', 'pqlkit.callback': 'crm'} 1"
        in out
    )
