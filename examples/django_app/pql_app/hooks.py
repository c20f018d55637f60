"""The callbacks ``settings.PQLKIT["CALLBACKS"]`` registers."""

from __future__ import annotations

import logging

import pqlkit

logger = logging.getLogger(__name__)


def notify_sales(q: pqlkit.Qualification) -> None:
    """Where a team would post to Slack or its CRM (``pqlkit.sinks``)."""
    logger.info("PQL %s (%s): %s", q.subject_id, q.account_id, "; ".join(q.explanation))
