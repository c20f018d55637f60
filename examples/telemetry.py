"""Telemetry for pqlkit: a hook for failed deliveries, and OpenTelemetry spans and metrics.

Run it: ``python examples/telemetry.py`` (needs ``pip install "pqlkit[otel]"
opentelemetry-sdk``). It prints what a failing CRM callback reports to the hook, then the
spans and metrics pqlkit handed to OpenTelemetry. In an application, set up the SDK with
the exporters you run (OTLP to a collector, say) instead of the in-memory ones here.
"""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import pqlkit
from pqlkit import Model, did, signal
from pqlkit.integrations import otel

model = Model(
    "telemetry-demo",
    signals={"activated": did("dashboard_built")},
    pql=signal("activated"),
)


def crm(q: pqlkit.Qualification) -> None:
    """A sink that is down."""
    raise ConnectionError("crm.example.com refused the connection")


def report(failure: pqlkit.DeliveryFailure) -> None:
    """Where you would page someone, or count the failure in your own metrics."""
    state = "dead-lettered" if failure.dead else f"retried at {failure.next_attempt_at:%H:%M:%S}"
    print(
        f"delivery to {failure.callback} failed (attempt {failure.attempt}):"
        f" {failure.error!r}; {state}"
    )


def main() -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metrics])

    with pqlkit.Client(model, store="memory://") as client:
        client.on_pql(crm, name="crm")
        client.on_delivery_error(report)
        otel.instrument(client, tracer_provider=tracer_provider, meter_provider=meter_provider)
        client.track("jane", "page_viewed")
        client.track("jane", "dashboard_built", account_id="acme")

        for span in spans.get_finished_spans():
            print(span.name, dict(span.attributes or {}))
        data = metrics.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:  # a histogram: how many calls it measured
                            value = f"{getattr(point, 'count', 0)} calls"
                        print(metric.name, dict(point.attributes or {}), value)
    tracer_provider.shutdown()
    meter_provider.shutdown()


if __name__ == "__main__":
    main()
