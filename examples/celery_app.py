"""pqlkit in Celery: tasks that track, and a beat schedule for ``sweep()``.

One Client per worker process, shared by the tasks it runs:

* the prefork pool forks its child processes from the main worker process, and a
  child exits without running exit hooks. So each child builds its Client when it
  starts (``worker_process_init``) and closes it when it stops
  (``worker_process_shutdown``), which delivers what is due for up to 10 s;
  :func:`get_client` also builds it on first use (the eager mode tests run in, the
  threads pool, a script);
* callbacks run on the Client's dispatch thread (``dispatch="background"``): a worker
  process lives long, so the thread delivers what tasks fire and retries failures on
  time, with pqlkit's backoff, while tasks go on. Closing the client at
  ``worker_process_shutdown`` delivers what is due before the process exits; what is
  not delivered then stays in the outbox for another worker;
* :func:`track_event` uses the task's id as the event's ``message_id``: a task Celery
  runs again (a retry after a ``StoreError``, ``acks_late`` after a lost worker) stores
  its event once;
* beat runs :func:`sweep` every 5 minutes (``celery -A celery_app beat``) so rules that
  turn true or false with time alone (``idle()``, windows) fire without new events.
  Several sweeps at once are safe, only wasteful: run one beat.

Run a worker with ``celery -A celery_app worker`` from ``examples/``, with
``CELERY_BROKER_URL`` (default ``redis://localhost:6379/0``) and ``PQLKIT_STORE_URL``
(default ``sqlite:///pqlkit.db``: one host; PostgreSQL for several).
Queue an event from your web app: ``track_event.delay("jane", "dashboard_built",
account_id="acme")``.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_process_shutdown

import pqlkit
from pqlkit import Model, count, days, did, idle, points, score, signal

logger = logging.getLogger(__name__)

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

app = Celery("celery_app", broker=os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0"))
app.conf.beat_schedule = {
    "pqlkit-sweep": {"task": "pql.sweep", "schedule": 300.0},  # seconds
}

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
                model,
                store=os.environ.get("PQLKIT_STORE_URL", "sqlite:///pqlkit.db"),
                dispatch="background",
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


@worker_process_init.connect
def _open_client(**_: Any) -> None:
    get_client()


@worker_process_shutdown.connect
def _close_client(**_: Any) -> None:
    close_client()


@app.task(
    name="pql.track_event",
    bind=True,
    autoretry_for=(pqlkit.StoreError,),  # nothing was stored: running it again is safe
    retry_backoff=True,
    max_retries=5,
)
def track_event(
    self: Task,
    user_id: str,
    event: str,
    properties: dict[str, Any] | None = None,
    *,
    account_id: str | None = None,
    timestamp: str | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """Record an event (``timestamp`` in ISO 8601); return who it qualified."""
    result = get_client().track(
        user_id,
        event,
        properties,
        account_id=account_id,
        timestamp=datetime.fromisoformat(timestamp) if timestamp else None,
        message_id=message_id or self.request.id,
    )
    return {
        "qualified": [q.subject_id for q in result.qualified],
        "scores": result.scores,
        "duplicate": result.duplicate,
    }


@app.task(name="pql.sweep")
def sweep() -> dict[str, int]:
    """Fire what time alone made due, then attempt every due delivery (retries too)."""
    client = get_client()
    fired = client.sweep()
    left = client.flush(timeout=60)
    return {"fired": len(fired), "pending": left}
