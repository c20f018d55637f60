"""Integrations with other tools, and what they are built on.

:class:`Observer` is the base of telemetry integrations: subclass it, override
the hooks you need and pass it to :meth:`pqlkit.Client.add_observer`.
``pqlkit.integrations.otel`` (the ``otel`` extra) reports to OpenTelemetry; it
is imported only when you import it.
"""

from __future__ import annotations

from .._observe import DeliveryFailure, Observer

__all__ = ["DeliveryFailure", "Observer"]
