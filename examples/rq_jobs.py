"""pqlkit in RQ: jobs that track, and ``sweep()`` on a schedule (``rq_cron.py``).

RQ's default worker forks a "work horse" for every job, and the horse ends with
``os._exit()``: no exit hook runs in it, and a thread it started dies with it. So:

* each job uses this process's Client (:func:`get_client`: built on first use; a horse
  forked from a worker that built one reuses it, and its store opens its own
  connection after the fork);
* callbacks run inside the job that fired them (``dispatch="inline"``), and every job
  ends with ``client.flush(timeout=...)``: what is due (retries too) is attempted
  before the horse exits. What is not delivered stays in the outbox for the next job;
* :func:`track_event` uses the job's id as the event's ``message_id``: a job RQ runs
  again stores its event once.

A worker that runs jobs in its own process (``rq worker -w rq.worker.SimpleWorker``)
keeps one Client for all its jobs; close it when the worker stops (the exit hook does,
within ``flush_at_exit``).

Run it from ``examples/``: ``rq worker pqlkit`` with ``PQLKIT_STORE_URL`` (default
``sqlite:///pqlkit.db``), ``rq cron rq_cron`` for the schedule, and from your web app
``Queue("pqlkit", connection=redis).enqueue(track_event, "jane", "dashboard_built",
account_id="acme")``.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime
from typing import Any

from rq import get_current_job

import pqlkit
from pqlkit import Model, count, days, did, idle, points, score, signal

logger = logging.getLogger(__name__)

QUEUE = "pqlkit"
FLUSH_TIMEOUT = 30.0  # seconds a job may spend delivering before it returns

model = Model(
    "trial",
    signals={
        "activated": did("warehouse_connected") & did("dashboard_built"),
        "invited": count("teammate_invited") >= 1,
        "dormant": idle() >= days(14),
    },
    scores={"behavior": points(activated=30, invited=20)},
    pql=(score("behavior") >= 50) & ~signal("dormant"),
)

_lock = threading.Lock()
_client: pqlkit.Client | None = None


def notify_sales(q: pqlkit.Qualification) -> None:
    """Where a team would post to Slack or its CRM (see slack_webhook.py and webhook.py)."""
    logger.info("PQL %s (%s): %s", q.subject_id, q.account_id, "; ".join(q.explanation))


def cool_down(q: pqlkit.Qualification) -> None:
    """A PQL went dormant: tell sales to stop chasing it."""
    logger.info("no longer a PQL: %s (%s)", q.subject_id, q.account_id)


def get_client() -> pqlkit.Client:
    """This process's Client, built on first use."""
    global _client
    with _lock:
        if _client is None:
            client = pqlkit.Client(
                model, store=os.environ.get("PQLKIT_STORE_URL", "sqlite:///pqlkit.db")
            )
            client.on_pql(notify_sales, name="sales-alert")
            client.on_disqualified(cool_down, name="sales-cool-down")
            _client = client
        return _client


def close_client() -> None:
    """Close this process's Client (delivering what is due, for up to 10 s), if built."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.close()


def track_event(
    user_id: str,
    event: str,
    properties: dict[str, Any] | None = None,
    *,
    account_id: str | None = None,
    timestamp: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """The job: record an event (``timestamp`` in ISO 8601), deliver what is due."""
    job = get_current_job()
    client = get_client()
    try:
        result = client.track(
            user_id,
            event,
            properties,
            account_id=account_id,
            timestamp=datetime.fromisoformat(timestamp) if timestamp else None,
            message_id=message_id or (job.id if job is not None else None),
        )
    finally:
        client.flush(timeout=FLUSH_TIMEOUT)  # before the work horse exits
    return {
        "qualified": [q.subject_id for q in result.qualified],
        "scores": result.scores,
        "duplicate": result.duplicate,
    }


def sweep() -> dict[str, int]:
    """The scheduled job: fire what time alone made due, then deliver what is due."""
    client = get_client()
    fired = client.sweep()
    left = client.flush(timeout=FLUSH_TIMEOUT)
    return {"fired": len(fired), "pending": left}
