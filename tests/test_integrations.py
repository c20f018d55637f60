"""The Flask, FastAPI and Django examples, driven by each framework's own test client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

import pqlkit
from conftest import T0
from pqlkit import MemoryStore
from pqlkit.testing import FrozenClock, recorder

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DJANGO_PROJECT = EXAMPLES / "django_app"
sys.path.insert(0, str(EXAMPLES))

ACTIVATION = [
    {"user_id": "jane", "event": "warehouse_connected", "account_id": "acme"},
    {"user_id": "jane", "event": "dashboard_built", "account_id": "acme"},
]
INVITE = {
    "user_id": "jane",
    "event": "teammate_invited",
    "properties": {"email": "raj@acme.io"},
    "account_id": "acme",
}


# -- Flask -------------------------------------------------------------------------------------


@pytest.fixture(name="flask_app")
def fixture_flask_app() -> Iterator[Any]:
    """The Flask example app on an in-memory store and a frozen clock; its client closed after."""
    import flask_app

    app = flask_app.create_app(
        {
            "TESTING": True,
            "PQLKIT_STORE": MemoryStore(),
            "PQLKIT_SETTINGS": {"clock": FrozenClock(T0)},
        }
    )
    yield app
    flask_app.pql.close(app)


def test_flask_track_in_a_view_fires(flask_app: Any) -> None:
    """POST /events records through the extension's client; the third event makes jane a PQL."""
    rec = recorder(flask_app.extensions["pqlkit"])
    http = flask_app.test_client()
    for body in ACTIVATION:
        assert http.post("/events", json=body).get_json()["qualified"] == []
    answer = http.post("/events", json=INVITE).get_json()
    assert answer == {"scores": {"behavior": 50.0}, "qualified": ["pql"], "duplicate": False}
    assert [q.subject_id for q in rec.pql] == ["jane"]
    lines = http.get("/users/jane/explain").get_json()["explanation"]
    assert any(line.startswith("behavior") for line in lines)


def test_flask_validation_error_is_a_400(flask_app: Any) -> None:
    """A bad event is answered 400 with the field and the reason."""
    answer = flask_app.test_client().post("/events", json={"user_id": "", "event": "x"})
    assert answer.status_code == 400
    assert answer.get_json()["field"] == "user_id"


def test_flask_flushes_at_teardown(flask_app: Any) -> None:
    """A failed delivery is retried when a later request's app context ends, not only on track."""
    client: pqlkit.Client = flask_app.extensions["pqlkit"]
    calls: list[str] = []

    @client.on_pql
    def flaky(q: pqlkit.Qualification) -> None:
        calls.append(q.subject_id)
        if len(calls) == 1:
            raise ConnectionError("CRM down")

    http = flask_app.test_client()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pqlkit._dispatch.logger.disabled", True)
        for body in [*ACTIVATION, INVITE]:
            http.post("/events", json=body)
    assert len(client.pending()) == 1
    clock = flask_app.config["PQLKIT_SETTINGS"]["clock"]
    clock.advance(timedelta(seconds=5))
    http.get("/users/jane/explain")  # no track(): only the teardown flush delivers
    assert calls == ["jane", "jane"]
    assert client.pending() == []


def test_flask_extension_direct_form() -> None:
    """``PqlKit(app)`` initialises the app at once; ``pql.track`` works in a request context."""
    import flask_app
    from flask import Flask

    app = Flask("direct")
    app.config["PQLKIT_STORE"] = "memory://"
    ext = flask_app.PqlKit(app)
    try:
        with app.test_request_context():
            assert ext.track("u1", "dashboard_built").scores == {"behavior": 0.0}
            assert ext.client is app.extensions["pqlkit"]
    finally:
        ext.close(app)


# -- FastAPI -----------------------------------------------------------------------------------

# Starlette's TestClient warns when it has to fall back to httpx (httpx2 needs Python 3.11+).
starlette_on_httpx = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


@starlette_on_httpx
def test_fastapi_lifespan_dependency_and_track() -> None:
    """The lifespan opens an AsyncClient, the dependency hands it to the view, and it fires."""
    import fastapi_app
    from fastapi.testclient import TestClient

    app = fastapi_app.create_app(store=MemoryStore(), clock=FrozenClock(T0))
    with TestClient(app) as http:
        client: pqlkit.AsyncClient = app.state.pqlkit
        rec = recorder(client.client)
        for body in ACTIVATION:
            assert http.post("/events", json=body).json()["qualified"] == []
        answer = http.post("/events", json=INVITE).json()
        assert answer == {"scores": {"behavior": 50.0}, "qualified": ["pql"], "duplicate": False}
        again = http.post("/events", json={**INVITE, "message_id": "m-1"}).json()
        assert again["duplicate"] is False
        assert http.post("/events", json={**INVITE, "message_id": "m-1"}).json()["duplicate"]
        explanation = http.get("/users/jane/explain").json()["explanation"]
        assert any(line.startswith("behavior") for line in explanation)
    assert [q.subject_id for q in rec.pql] == ["jane"]
    with pytest.raises(pqlkit.ClientClosedError):
        client.client.track("u1", "x")  # the lifespan closed it


@starlette_on_httpx
def test_fastapi_validation_error_is_a_422() -> None:
    """pqlkit's ValidationError becomes a 422 naming the field."""
    import fastapi_app
    from fastapi.testclient import TestClient

    with TestClient(fastapi_app.create_app(store="memory://")) as http:
        answer = http.post("/events", json={"user_id": " ", "event": "login"})
    assert answer.status_code == 422
    assert answer.json()["detail"]["field"] == "user_id"


@starlette_on_httpx
def test_fastapi_dependency_can_be_overridden() -> None:
    """Tests of an app can swap the AsyncClient through FastAPI's dependency overrides."""
    import fastapi_app
    from fastapi.testclient import TestClient

    app = fastapi_app.create_app(store="memory://")
    own = pqlkit.AsyncClient(fastapi_app.model, store="memory://", clock=FrozenClock(T0))
    app.dependency_overrides[fastapi_app.get_pqlkit] = lambda: own
    try:
        with TestClient(app) as http:
            for body in [*ACTIVATION, INVITE]:
                http.post("/events", json=body)
            assert own.client.qualified_at("jane") == T0
            assert app.state.pqlkit.client.qualified_at("jane") is None
    finally:
        asyncio.run(own.close())


# -- Django ------------------------------------------------------------------------------------


@pytest.fixture(name="django_client", scope="module")
def fixture_django_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Django configured from the example's settings, on a temporary SQLite store.

    Settings are configured in-process (no DJANGO_SETTINGS_MODULE in the environment) and
    only here; the test environment is torn down and the pqlkit client closed afterwards.
    """
    import django
    from django.conf import settings
    from django.test.utils import setup_test_environment, teardown_test_environment

    sys.path.insert(0, str(DJANGO_PROJECT))
    store = tmp_path_factory.mktemp("django") / "pqlkit.db"
    if not settings.configured:
        from pqlkit_site import settings as example_settings

        values = {k: v for k, v in vars(example_settings).items() if k.isupper()}
        values["PQLKIT"] = {"STORE": f"sqlite:///{store}", "SETTINGS": {}}
        settings.configure(**values)
    django.setup()
    setup_test_environment()
    from django.test import Client as DjangoClient
    from pql_app.apps import get_client

    try:
        yield DjangoClient()
    finally:
        teardown_test_environment()
        get_client().close()


def test_django_app_config_builds_the_client(django_client: Any) -> None:
    """PqlConfig.ready() built one Client, on the store from settings.PQLKIT."""
    from django.conf import settings
    from pql_app.apps import get_client

    client = get_client()
    assert client is get_client()
    assert isinstance(client.store, pqlkit.SQLiteStore)
    assert settings.PQLKIT["STORE"].startswith("sqlite:///")


def test_django_view_tracks_and_fires(django_client: Any) -> None:
    """POST /events through Django's test Client fires the PQL once."""
    from pql_app.apps import get_client

    rec = recorder(get_client())
    for body in ACTIVATION:
        answer = django_client.post("/events", json.dumps(body), content_type="application/json")
        assert answer.status_code == 200
        assert answer.json()["qualified"] == []
    answer = django_client.post("/events", json.dumps(INVITE), content_type="application/json")
    assert answer.json()["qualified"] == ["pql"]
    assert [q.subject_id for q in rec.pql] == ["jane"]
    lines = django_client.get("/users/jane/explain").json()["explanation"]
    assert any(line.startswith("behavior") for line in lines)


def test_django_bad_requests(django_client: Any) -> None:
    """Invalid JSON and invalid events are 400s; a GET on /events is a 405."""
    post = django_client.post
    assert post("/events", "{", content_type="application/json").status_code == 400
    assert post("/events", "[]", content_type="application/json").status_code == 400
    answer = post("/events", json.dumps({"user_id": "u1"}), content_type="application/json")
    assert (answer.status_code, answer.json()["field"]) == (400, "event")
    assert django_client.get("/events").status_code == 405


def test_django_pqlkit_sweep_command(django_client: Any) -> None:
    """``pqlkit_sweep --now`` disqualifies a PQL that went dormant and says so."""
    from django.core.management import call_command
    from pql_app.apps import get_client

    client = get_client()
    for body in [*ACTIVATION, INVITE]:
        client.track(**{**body, "user_id": "sweepy"})
    assert client.qualified_at("sweepy") is not None
    later = datetime.now(timezone.utc) + timedelta(days=15)
    out = StringIO()
    call_command("pqlkit_sweep", now=later.isoformat(), stdout=out)
    lines = out.getvalue().splitlines()
    assert "disqualified sweepy" in lines
    assert lines[-1].startswith("pqlkit sweep: ")


def test_django_pqlkit_sweep_rejects_a_bad_time(django_client: Any) -> None:
    """A --now that is not an aware ISO time is a CommandError, not a traceback."""
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--now"):
        call_command("pqlkit_sweep", now="yesterday", stdout=StringIO())
    with pytest.raises(CommandError, match="--now"):
        call_command("pqlkit_sweep", now=T0.replace(tzinfo=None).isoformat(), stdout=StringIO())


def test_django_manage_py_runs_the_sweep(tmp_path: Path) -> None:
    """``python manage.py pqlkit_sweep`` runs as a real command, in its own process."""
    env = {**os.environ, "PQLKIT_STORE": f"sqlite:///{tmp_path / 'cmd.db'}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-W", "error", "manage.py", "pqlkit_sweep"],
        cwd=DJANGO_PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pqlkit sweep: 0 fired, 0 pending"
