"""Integrations with other tools, each imported only when you import it.

* :mod:`pqlkit.integrations.flask`: an ``init_app`` extension (``pip install 'pqlkit[flask]'``);
* :mod:`pqlkit.integrations.django`: a Django app with the ``pqlkit_sweep``
  management command (``pip install 'pqlkit[django]'``);
* :mod:`pqlkit.integrations.otel`: spans and metrics for OpenTelemetry
  (``pip install 'pqlkit[otel]'``), built on :class:`Observer`: subclass it,
  override the hooks you need and pass it to :meth:`pqlkit.Client.add_observer`.

Importing one without what it needs installed raises an ``ImportError`` that
names the extra to install.
"""

from __future__ import annotations

from .._observe import DeliveryFailure, Observer

__all__ = ["DeliveryFailure", "Observer", "missing_extra"]


def missing_extra(module: str, framework: str, extra: str) -> ImportError:
    """The error raised when ``module`` is imported without ``framework`` installed."""
    return ImportError(
        f"{module} needs {framework}, which is not installed: pip install 'pqlkit[{extra}]'",
        name=module,
    )
