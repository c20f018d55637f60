"""The AppConfig: builds the process's pqlkit Client when Django is ready."""

from __future__ import annotations

import logging

from django.apps import AppConfig, apps
from django.conf import settings

import pqlkit

logger = logging.getLogger(__name__)


def notify_sales(q: pqlkit.Qualification) -> None:
    """Where a team would post to Slack or its CRM (see examples/slack_webhook.py)."""
    logger.info("PQL %s (%s): %s", q.subject_id, q.account_id, "; ".join(q.explanation))


class PqlConfig(AppConfig):
    """Holds the Client: ``get_client()`` anywhere after ``django.setup()``."""

    name = "pql_app"
    verbose_name = "Product-qualified leads"
    client: pqlkit.Client | None = None

    def ready(self) -> None:
        """Build the Client from ``settings.PQLKIT`` (once, even if ready() runs again)."""
        if self.client is not None:
            return
        from .pql_model import model

        conf = getattr(settings, "PQLKIT", {})
        self.client = pqlkit.Client(model, store=conf.get("STORE"), **conf.get("SETTINGS", {}))
        self.client.on_pql(notify_sales)
        # closed (delivering what is due, for up to flush_at_exit) when the process exits


def get_client() -> pqlkit.Client:
    """The Client of this process (built in ``PqlConfig.ready``)."""
    client = apps.get_app_config("pql_app").client  # type: ignore[attr-defined]
    if client is None:
        raise RuntimeError("pql_app is not ready: is it in INSTALLED_APPS?")
    return client
