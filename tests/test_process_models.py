"""The process-model examples: an AWS Lambda handler, Celery tasks and RQ jobs.

Each runs as its platform would run it, without the platform: the Lambda handler is
called with events and a context like Lambda's; Celery runs its tasks eagerly (no
broker); RQ runs its jobs synchronously on fakeredis. Each example reads its store from
``PQLKIT_STORE_URL``, here an SQLite file of the test's own.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pqlkit import ClientClosedError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

# jane: activated and invited, a PQL; twenty days ago, so a sweep finds her dormant
ACTIVATION = [
    {"user_id": "jane", "event": "warehouse_connected", "account_id": "acme"},
    {"user_id": "jane", "event": "dashboard_built", "account_id": "acme"},
    {"user_id": "jane", "event": "teammate_invited", "account_id": "acme"},
]
LONG_AGO = datetime.now(timezone.utc) - timedelta(days=20)


def _fresh(name: str) -> ModuleType:
    """Import an example module anew (a cold start: its module-level code runs again)."""
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@pytest.fixture(name="store_url")
def fixture_store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """PQLKIT_STORE_URL: an SQLite file of this test's own."""
    url = f"sqlite:///{tmp_path / 'pqlkit.db'}"
    monkeypatch.setenv("PQLKIT_STORE_URL", url)
    return url


def _statuses(client: Any) -> list[tuple[str | None, str, str]]:
    return sorted((d.callback, d.status, d.qualification.subject_id) for d in client.deliveries())


# -- AWS Lambda --------------------------------------------------------------------------------


class LambdaContext:
    """What Lambda passes as ``context`` (the part the handler reads)."""

    def __init__(self, remaining_ms: int = 30_000) -> None:
        self.remaining_ms = remaining_ms
        self.function_name = "pqlkit-track"
        self.aws_request_id = "c0ffee"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture(name="aws_lambda")
def fixture_aws_lambda(store_url: str) -> Iterator[ModuleType]:
    """The Lambda module after a cold start; its client closed after the test."""
    module = _fresh("aws_lambda")
    yield module
    module.client.close()
    sys.modules.pop("aws_lambda", None)


def _api(body: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway proxy event carrying ``body``."""
    return {"httpMethod": "POST", "path": "/events", "body": json.dumps(body)}


def test_lambda_handler_delivers_before_it_returns(
    aws_lambda: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """Invocation after invocation: the third event qualifies jane; her alert ran; nothing waits."""
    answers = []
    with caplog.at_level(logging.INFO, logger="aws_lambda"):
        for event in ACTIVATION:
            answers.append(aws_lambda.handler(_api(event), LambdaContext()))
            assert aws_lambda.client.pending() == []  # nothing left for a frozen process
    assert [a["statusCode"] for a in answers] == [200, 200, 200]
    assert [json.loads(a["body"])["qualified"] for a in answers] == [[], [], ["jane"]]
    assert any(r.getMessage().startswith("PQL jane (acme)") for r in caplog.records)
    assert _statuses(aws_lambda.client) == [("sales-alert", "delivered", "jane")]


def test_lambda_handler_retries_a_failed_delivery_on_a_later_invocation(
    aws_lambda: ModuleType,
) -> None:
    """A callback down during one invocation is delivered by the flush of a later one."""
    client = aws_lambda.client
    down = True

    @client.on_pql(name="crm")
    def crm(q: Any) -> None:
        if down:
            raise ConnectionError("crm is down")

    for event in ACTIVATION:
        aws_lambda.handler(_api(event), LambdaContext())
    [failed] = client.deliveries(callback="crm")
    assert (failed.status, failed.attempts) == ("pending", 1)
    down = False
    # the retry is due retry_base (1 s, less jitter) after the failure
    time.sleep(max(0.0, (failed.next_attempt_at - datetime.now(timezone.utc)).total_seconds()))
    aws_lambda.handler(_api({"user_id": "raj", "event": "page_viewed"}), LambdaContext())
    [done] = client.deliveries(callback="crm")
    assert (done.status, done.attempts) == ("delivered", 2)
    assert client.pending() == []


def test_lambda_sqs_batch_stores_a_redelivered_message_once(aws_lambda: ModuleType) -> None:
    """An SQS batch: each message's id is its event's message_id; a bad message is dropped."""
    records = [
        {"messageId": f"m{i}", "body": json.dumps(event)} for i, event in enumerate(ACTIVATION)
    ]
    records.append({"messageId": "m0", "body": json.dumps(ACTIVATION[0])})  # SQS redelivered
    records.append({"messageId": "bad", "body": json.dumps({"user_id": "", "event": "x"})})
    answer = aws_lambda.handler({"Records": records}, LambdaContext())
    assert answer == {"stored": 3, "duplicates": 1}
    assert _statuses(aws_lambda.client) == [("sales-alert", "delivered", "jane")]


def test_lambda_handler_answers_400_naming_the_field(aws_lambda: ModuleType) -> None:
    """A bad event: 400 with the field; a body that is not JSON: 400."""
    answer = aws_lambda.handler(_api({"user_id": "jane", "event": ""}), LambdaContext())
    assert (answer["statusCode"], json.loads(answer["body"])) == (400, {"field": "event"})
    answer = aws_lambda.handler({"body": "{not json"}, LambdaContext())
    assert answer["statusCode"] == 400


def test_lambda_sweep_handler_fires_what_time_made_due(aws_lambda: ModuleType) -> None:
    """The scheduled handler: jane, a PQL twenty days ago and idle since, is disqualified."""
    for event in ACTIVATION:
        aws_lambda.handler(_api({**event, "timestamp": LONG_AGO.isoformat()}), LambdaContext())
    assert aws_lambda.sweep_handler({"source": "aws.events"}, LambdaContext()) == {
        "fired": 1,
        "pending": 0,
    }
    assert _statuses(aws_lambda.client) == [
        ("sales-alert", "delivered", "jane"),
        ("sales-cool-down", "delivered", "jane"),
    ]


# -- Celery ------------------------------------------------------------------------------------


@pytest.fixture(name="celery_app")
def fixture_celery_app(store_url: str) -> Iterator[ModuleType]:
    """The Celery example, running tasks eagerly (in this process, no broker).

    Imported once (Celery keeps the tasks it saw registered for every app); each test
    gets a client of its own, on its own store, as each worker process would.
    """
    import celery_app

    celery_app.app.conf.update(task_always_eager=True, task_eager_propagates=True)
    yield celery_app
    celery_app.close_client()


def test_celery_tasks_track_and_deliver(celery_app: ModuleType) -> None:
    """track_event.delay() records each event; the third qualifies jane and alerts sales."""
    results = [
        celery_app.track_event.delay(e["user_id"], e["event"], account_id=e["account_id"]).get()
        for e in ACTIVATION
    ]
    assert [r["qualified"] for r in results] == [[], [], ["jane"]]
    client = celery_app.get_client()
    assert client.flush(timeout=10) == 0  # the dispatch thread delivered it
    assert _statuses(client) == [("sales-alert", "delivered", "jane")]
    assert client.pending() == []


def test_celery_task_id_makes_a_rerun_a_duplicate(celery_app: ModuleType) -> None:
    """A task run twice (same task id: a retry, acks_late) stores its event once."""
    first = celery_app.track_event.apply(args=("jane", "login"), task_id="task-1").get()
    again = celery_app.track_event.apply(args=("jane", "login"), task_id="task-1").get()
    assert (first["duplicate"], again["duplicate"]) == (False, True)


def test_celery_beat_runs_the_sweep_task(celery_app: ModuleType) -> None:
    """The beat schedule names a registered task; run, it disqualifies the dormant PQL."""
    entry = celery_app.app.conf.beat_schedule["pqlkit-sweep"]
    assert entry["schedule"] == 300.0
    for e in ACTIVATION:
        celery_app.track_event.delay(
            e["user_id"], e["event"], account_id=e["account_id"], timestamp=LONG_AGO.isoformat()
        ).get()
    task = celery_app.app.tasks[entry["task"]]
    assert task.delay().get() == {"fired": 1, "pending": 0}
    assert ("sales-cool-down", "delivered", "jane") in _statuses(celery_app.get_client())


def test_celery_worker_process_signals_open_and_close_the_client(celery_app: ModuleType) -> None:
    """worker_process_init builds the child's client; worker_process_shutdown closes it."""
    from celery.signals import worker_process_init, worker_process_shutdown

    worker_process_init.send(sender=None)
    client = celery_app.get_client()
    worker_process_shutdown.send(sender=None, pid=1, exitcode=0)
    with pytest.raises(ClientClosedError):
        client.track("jane", "login")
    assert celery_app.get_client() is not client  # the next use builds a new one


# -- RQ ----------------------------------------------------------------------------------------


@pytest.fixture(name="rq_jobs")
def fixture_rq_jobs(store_url: str) -> Iterator[ModuleType]:
    """The RQ example's jobs module; the client a test's jobs built is closed after it."""
    import rq_jobs

    yield rq_jobs
    rq_jobs.close_client()


@pytest.fixture(name="queue")
def fixture_queue(rq_jobs: ModuleType) -> Any:
    """An RQ queue that runs each job at once, in this process, on fakeredis."""
    import fakeredis
    from rq import Queue

    return Queue(rq_jobs.QUEUE, is_async=False, connection=fakeredis.FakeRedis())


def test_rq_jobs_track_and_deliver(rq_jobs: ModuleType, queue: Any) -> None:
    """Enqueued track_event jobs record each event; the third qualifies jane, delivered."""
    jobs = [
        queue.enqueue(rq_jobs.track_event, e["user_id"], e["event"], account_id=e["account_id"])
        for e in ACTIVATION
    ]
    assert [job.return_value()["qualified"] for job in jobs] == [[], [], ["jane"]]
    client = rq_jobs.get_client()
    assert _statuses(client) == [("sales-alert", "delivered", "jane")]
    assert client.pending() == []
    again = queue.enqueue(rq_jobs.track_event, "jane", "login", job_id=jobs[0].id)
    assert again.return_value()["duplicate"]  # the job's id is the message_id


def test_rq_a_later_job_delivers_a_retry(rq_jobs: ModuleType, queue: Any) -> None:
    """Each job ends with flush(): a callback that failed is delivered by a later job."""
    client = rq_jobs.get_client()
    down = True

    @client.on_pql(name="crm")
    def crm(q: Any) -> None:
        if down:
            raise ConnectionError("crm is down")

    for e in ACTIVATION:
        queue.enqueue(rq_jobs.track_event, e["user_id"], e["event"], account_id=e["account_id"])
    [failed] = client.deliveries(callback="crm")
    assert (failed.status, failed.attempts) == ("pending", 1)
    down = False
    time.sleep(max(0.0, (failed.next_attempt_at - datetime.now(timezone.utc)).total_seconds()))
    queue.enqueue(rq_jobs.track_event, "raj", "page_viewed")
    [done] = client.deliveries(callback="crm")
    assert (done.status, done.attempts) == ("delivered", 2)


def test_rq_cron_schedules_the_sweep(rq_jobs: ModuleType, queue: Any) -> None:
    """rq_cron registers sweep() every 5 minutes on the jobs' queue; run, it disqualifies."""
    import fakeredis
    from rq.cron import CronScheduler

    scheduler = CronScheduler(connection=fakeredis.FakeRedis())
    scheduler.load_config_from_file("rq_cron")
    [cron_job] = scheduler.get_jobs()
    assert (cron_job.func, cron_job.queue_name, cron_job.interval) == (
        rq_jobs.sweep,
        rq_jobs.QUEUE,
        300,
    )
    for e in ACTIVATION:
        queue.enqueue(
            rq_jobs.track_event,
            e["user_id"],
            e["event"],
            account_id=e["account_id"],
            timestamp=LONG_AGO.isoformat(),
        )
    assert queue.enqueue(cron_job.func).return_value() == {"fired": 1, "pending": 0}
    assert ("sales-cool-down", "delivered", "jane") in _statuses(rq_jobs.get_client())
