"""pqlkit in AWS Lambda: a client at module scope, ``flush()`` before the handler returns.

Lambda imports this module once per execution environment (a cold start), then calls
``handler`` once per invocation, and freezes the process between invocations: no thread
runs while it is frozen, and an environment is shut down without notice (no exit hook
runs reliably). So:

* the Client is built at module scope, once per environment, on a store that every
  environment shares: PostgreSQL (``PQLKIT_STORE_URL=postgresql://...``). An SQLite file
  in ``/tmp`` would belong to one environment only;
* ``dispatch="inline"`` (the default): ``track()`` runs the callbacks its event fired
  before it returns, within ``inline_budget``;
* ``client.flush(timeout=...)`` before returning attempts what else is due (retries of
  earlier failures) while the process is thawed, within the invocation's remaining time.
  What is not delivered stays in the outbox, for the next invocation of any environment;
* ``flush_at_exit=None``: the exit hook is for processes that exit; a frozen one never
  does, so there is nothing to wait for;
* ``sweep_handler``, scheduled by an EventBridge rule (``rate(5 minutes)``), fires what
  turns true with time alone (``idle()``, windows).

``handler`` takes an API Gateway proxy event whose JSON body is one event
(``{"user_id": ..., "event": ..., "properties": ..., "account_id": ..., "timestamp":
ISO 8601}``), or an SQS
batch (``{"Records": [{"messageId": ..., "body": ...}, ...]}``): each message's id is
its event's ``message_id``, so a message SQS delivers twice is stored once.

Deploy it with the handler ``aws_lambda.handler`` and ``pqlkit[postgres]`` in the package.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from typing import Any, Protocol

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

# Once per execution environment (cold start): every invocation it serves reuses it.
client = pqlkit.Client(
    model,
    store=os.environ.get("PQLKIT_STORE_URL", "sqlite:////tmp/pqlkit.db"),
    flush_at_exit=None,
)


@client.on_pql(name="sales-alert")
def notify_sales(q: pqlkit.Qualification) -> None:
    """Where a team would post to Slack or its CRM (see slack_webhook.py and webhook.py)."""
    logger.info("PQL %s (%s): %s", q.subject_id, q.account_id, "; ".join(q.explanation))


@client.on_disqualified(name="sales-cool-down")
def cool_down(q: pqlkit.Qualification) -> None:
    """A PQL went dormant: tell sales to stop chasing it."""
    logger.info("no longer a PQL: %s (%s)", q.subject_id, q.account_id)


class LambdaContext(Protocol):
    """What the handlers read of Lambda's context object."""

    def get_remaining_time_in_millis(self) -> int: ...


def _flush(context: LambdaContext) -> int:
    """Attempt what is due, leaving a second of the invocation's time to return."""
    seconds = context.get_remaining_time_in_millis() / 1000 - 1.0
    return client.flush(timeout=max(0.0, seconds))


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Track the event of an API Gateway request, or the events of an SQS batch; then flush."""
    try:
        return _sqs_batch(event["Records"]) if "Records" in event else _api_request(event)
    finally:
        _flush(context)  # before the process is frozen


def _api_request(event: dict[str, Any]) -> dict[str, Any]:
    try:
        body = json.loads(event.get("body") or "{}")
        result = client.track(
            body.get("user_id"),
            body.get("event"),
            body.get("properties"),
            account_id=body.get("account_id"),
            timestamp=_when(body.get("timestamp")),
            message_id=body.get("message_id"),
        )
    except json.JSONDecodeError:
        return {"statusCode": 400, "body": json.dumps({"error": "the body is not JSON"})}
    except pqlkit.ValidationError as error:
        return {"statusCode": 400, "body": json.dumps({"field": error.field})}
    qualified = [q.subject_id for q in result.qualified]
    return {
        "statusCode": 200,
        "body": json.dumps({"qualified": qualified, "duplicate": result.duplicate}),
    }


def _when(timestamp: object) -> Any:
    """An ISO 8601 string as a datetime (track() checks the rest and names the field)."""
    if isinstance(timestamp, str):
        try:
            return datetime.fromisoformat(timestamp)
        except ValueError:
            pass
    return timestamp


def _sqs_batch(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One event per message; a message that can never be stored is logged and dropped."""
    events: list[pqlkit.Event] = []
    for record in records:
        try:
            body = json.loads(record["body"])
            body.setdefault("message_id", record["messageId"])
            if "timestamp" in body:
                body["timestamp"] = _when(body["timestamp"])
            events.append(client.check_event(body))
        except (json.JSONDecodeError, AttributeError, pqlkit.ValidationError) as error:
            logger.warning("dropped SQS message %s: %s", record["messageId"], error)
    result = client.track_many(events)  # a StoreError fails the batch: SQS redelivers it
    return {"stored": result.stored, "duplicates": result.duplicates}


def sweep_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """For an EventBridge schedule: fire what time alone made due, then flush."""
    fired = client.sweep()
    left = _flush(context)
    return {"fired": len(fired), "pending": left}
