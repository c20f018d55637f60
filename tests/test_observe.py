"""Telemetry hooks: ``on_delivery_error`` and the observers a Client tells what it does."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from conftest import T0
from pqlkit import (
    AsyncClient,
    DeliveryFailure,
    Model,
    Qualification,
    TrackResult,
    ValidationError,
    days,
    did,
    idle,
    signal,
)
from pqlkit.integrations import Observer
from pqlkit.testing import ClientFactory, FrozenClock

MODEL = Model(
    "observe",
    signals={"built": did("dashboard_built"), "churned": did("churned")},
    pql=signal("built") & ~signal("churned"),
    pqa=did("dashboard_built"),
)


class Down:
    """A callback that fails its first ``failures`` calls."""

    def __init__(self, failures: int = 1_000) -> None:
        self.failures, self.calls = failures, 0

    def __call__(self, q: Qualification) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"crm down ({self.calls})")


class Recorder(Observer):
    """Records every hook call, in order."""

    def __init__(self, name: str = "rec", log: list[tuple[object, ...]] | None = None) -> None:
        self.name = name
        self.log: list[tuple[object, ...]] = [] if log is None else log

    def track(
        self, call: Callable[[], TrackResult], event: object, account_id: object
    ) -> TrackResult:
        self.log.append((self.name, "track>", event, account_id))
        result = call()
        self.log.append((self.name, "track<", len(result.qualified)))
        return result

    def fired(self, qualification: Qualification) -> None:
        gone = qualification.disqualified_at is not None
        self.log.append(("fired", qualification.kind, qualification.subject_id, gone))

    def delivered(self, qualification: Qualification, callback: str, attempt: int) -> None:
        self.log.append(("delivered", qualification.subject_id, callback, attempt))

    def failed(self, failure: DeliveryFailure) -> None:
        self.log.append(("failed", failure.callback, failure.attempt, failure.dead))


def test_on_delivery_error_reports_each_failed_attempt_then_the_dead_letter(
    pql_client: ClientFactory, pql_clock: FrozenClock
) -> None:
    """Every failed attempt is reported with its error and next time; the last one is dead."""
    client = pql_client(MODEL, max_attempts=3, retry_base=timedelta(seconds=1))
    client.on_pql(Down(), name="crm")
    failures: list[DeliveryFailure] = []
    assert client.on_delivery_error(failures.append) == failures.append  # returns fn
    client.track("u1", "dashboard_built")
    for _ in range(2):
        pql_clock.advance(timedelta(hours=1))
        client.flush()
    assert [(f.callback, f.attempt, f.dead) for f in failures] == [
        ("crm", 1, False),
        ("crm", 2, False),
        ("crm", 3, True),
    ]
    first, last = failures[0], failures[-1]
    assert isinstance(first.error, ConnectionError)
    assert str(first.error) == "crm down (1)"
    assert first.qualification.subject_id == "u1"
    assert first.next_attempt_at is not None
    assert first.next_attempt_at > T0
    assert last.next_attempt_at is None
    assert client.dead_letters() == [last.qualification]


def test_on_delivery_error_is_not_called_for_a_success_or_another_callback(
    pql_client: ClientFactory,
) -> None:
    """A delivered callback reports nothing; a failing one reports only itself."""
    client = pql_client(MODEL)
    client.on_pql(lambda q: None, name="ok")
    client.on_pql(Down(), name="crm")
    failures: list[DeliveryFailure] = []

    @client.on_delivery_error
    def page(failure: DeliveryFailure) -> None:
        failures.append(failure)

    client.track("u1", "dashboard_built")
    assert [f.callback for f in failures] == ["crm"]


class Died(BaseException):
    """Stands for a process dying inside a callback: nothing records the attempt's outcome."""


def test_a_delivery_whose_attempts_never_finished_is_reported_dead_without_error(
    pql_client: ClientFactory,
) -> None:
    """Dead-lettered because each attempt died with its process: error is None, dead is True."""
    client = pql_client(MODEL, max_attempts=1, delivery_lease=timedelta(milliseconds=50))
    calls = 0

    def dies(q: Qualification) -> None:
        nonlocal calls
        calls += 1
        raise Died

    client.on_pql(dies, name="crm")
    failures: list[DeliveryFailure] = []
    client.on_delivery_error(failures.append)
    with pytest.raises(Died):
        client.track("u1", "dashboard_built")
    time.sleep(0.1)  # the lease (wall clock) runs out
    client.flush()
    assert calls == 1
    assert [(f.callback, f.attempt, f.error, f.dead) for f in failures] == [("crm", 1, None, True)]


def test_a_failing_hook_is_logged_and_changes_nothing(
    pql_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in on_delivery_error's hook is logged; the delivery is recorded as usual."""
    client = pql_client(MODEL)
    client.on_pql(Down(), name="crm")

    def broken(failure: DeliveryFailure) -> None:
        raise RuntimeError("the pager is down too")

    client.on_delivery_error(broken)
    with caplog.at_level(logging.ERROR, logger="pqlkit"):
        result = client.track("u1", "dashboard_built")
    assert len(result.qualified) == 1
    assert any("observer" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)
    [delivery] = client.deliveries(callback="crm")
    assert (delivery.status, delivery.attempts) == ("pending", 1)


def test_on_delivery_error_runs_on_the_dispatch_thread_in_background_mode(
    pql_client: ClientFactory,
) -> None:
    """With dispatch="background" the hook runs on the worker, not in track()."""
    client = pql_client(MODEL, dispatch="background")
    client.on_pql(Down(), name="crm")
    threads: list[str] = []
    client.on_delivery_error(lambda f: threads.append(threading.current_thread().name))
    client.track("u1", "dashboard_built")
    client.flush(timeout=10)
    assert threads == ["pqlkit-dispatch"]


def test_observers_hear_of_what_fires_and_every_delivery(pql_client: ClientFactory) -> None:
    """fired() after the commit for each qualification, then delivered() or failed()."""
    client = pql_client(MODEL, max_attempts=1)
    client.on_pql(lambda q: None, name="ok")
    client.on_pqa(Down(), name="crm")
    rec = Recorder()
    client.add_observer(rec)
    client.track("u1", "dashboard_built", account_id="acme")
    client.track("u1", "churned", account_id="acme")
    assert rec.log == [
        ("rec", "track>", "dashboard_built", "acme"),
        ("fired", "pql", "u1", False),
        ("fired", "pqa", "acme", False),
        ("delivered", "u1", "ok", 1),
        ("failed", "crm", 1, True),
        ("rec", "track<", 2),
        ("rec", "track>", "churned", "acme"),
        ("fired", "pql", "u1", True),  # disqualified: no callback for it, nothing delivered
        ("rec", "track<", 0),
    ]


def test_observers_hear_of_what_a_sweep_fires(
    pql_client: ClientFactory, pql_clock: FrozenClock
) -> None:
    """fired() is called for qualifications found by sweep(), not only by track()."""
    model = Model("idle", signals={"quiet": idle() >= days(2)}, pql=did("signup") & signal("quiet"))
    client = pql_client(model)
    rec = Recorder()
    client.add_observer(rec)
    client.track("u1", "signup")
    pql_clock.advance(days(3))
    rec.log.clear()
    [fired] = client.sweep()
    assert rec.log == [("fired", "pql", "u1", False)]
    assert fired.subject_id == "u1"


def test_track_observers_nest_and_see_errors(pql_client: ClientFactory) -> None:
    """Each observer wraps track() (the last added outermost) and sees its exception pass."""
    client = pql_client(MODEL)
    log: list[tuple[object, ...]] = []
    client.add_observer(Recorder("a", log))
    client.add_observer(Recorder("b", log))
    client.track("u1", "x")
    assert [entry[:2] for entry in log] == [
        ("b", "track>"),
        ("a", "track>"),
        ("a", "track<"),
        ("b", "track<"),
    ]
    log.clear()
    with pytest.raises(ValidationError):
        client.track("", "x")
    assert [entry[:2] for entry in log] == [("b", "track>"), ("a", "track>")]


def test_add_observer_and_on_delivery_error_check_their_argument(
    pql_client: ClientFactory,
) -> None:
    """Not an Observer, not callable: a ValidationError naming the argument."""
    client = pql_client(MODEL)
    with pytest.raises(ValidationError) as caught:
        client.add_observer(object())  # type: ignore[arg-type]
    assert caught.value.field == "observer"
    with pytest.raises(ValidationError) as caught:
        client.on_delivery_error("page me")  # type: ignore[arg-type]
    assert caught.value.field == "fn"


def test_async_client_on_delivery_error() -> None:
    """AsyncClient registers the hook on its Client; an async def hook is refused."""

    async def main() -> list[DeliveryFailure]:
        failures: list[DeliveryFailure] = []
        async with AsyncClient(MODEL, store="memory://") as client:
            client.on_pql(Down(), name="crm")
            client.on_delivery_error(failures.append)

            async def hook(failure: DeliveryFailure) -> None: ...

            with pytest.raises(ValidationError):
                client.on_delivery_error(hook)
            await client.track("u1", "dashboard_built")
        return failures

    assert [f.callback for f in asyncio.run(main())] == ["crm"]
