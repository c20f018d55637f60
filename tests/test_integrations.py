"""The Flask, FastAPI and Django examples, driven by each framework's own test client."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import subprocess
import sys
import threading
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


DORMANT = pqlkit.Model(
    "flask-sweep",
    signals={"dormant": pqlkit.idle() >= pqlkit.days(14)},
    pql=pqlkit.did("dashboard_built") & ~pqlkit.signal("dormant"),
)


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
    """``PqlKit(app, model=...)`` initialises the app at once; ``pql.track`` works in a request."""
    import flask_app
    from flask import Flask

    from pqlkit.integrations.flask import PqlKit

    app = Flask("direct")
    app.config["PQLKIT_STORE"] = "memory://"
    ext = PqlKit(app, model=flask_app.model)
    try:
        with app.test_request_context():
            assert ext.track("u1", "dashboard_built").scores == {"behavior": 0.0}
            assert ext.client is app.extensions["pqlkit"]
    finally:
        ext.close(app)


def test_flask_model_from_config() -> None:
    """Without ``model=``, ``PQLKIT_MODEL`` names it (a Model or ``module:attribute``)."""
    from flask import Flask

    from pqlkit.integrations.flask import PqlKit

    app = Flask("configured")
    app.config.update(PQLKIT_MODEL="flask_app:model", PQLKIT_STORE="memory://")
    ext = PqlKit(app)
    try:
        with app.app_context():
            assert ext.client.model.name == "flask-demo"
    finally:
        ext.close(app)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({}, "give PqlKit(model=...)"),
        ({"PQLKIT_MODEL": "flask_app:nope"}, "no attribute 'nope'"),
        ({"PQLKIT_MODEL": "no_such_module_xyz:model"}, "cannot load"),
        ({"PQLKIT_MODEL": "flask_app:create_app"}, "not a pqlkit.Model"),
    ],
)
def test_flask_needs_a_model(config: dict[str, Any], reason: str) -> None:
    """A missing or unloadable model stops init_app with a ValidationError naming the key."""
    from flask import Flask

    from pqlkit.integrations.flask import PqlKit

    app = Flask("no-model")
    app.config.update({"PQLKIT_STORE": "memory://", **config})
    with pytest.raises(pqlkit.ValidationError, match=re.escape(reason)) as raised:
        PqlKit(app)
    assert raised.value.field == "PQLKIT_MODEL"
    assert "pqlkit" not in app.extensions


def test_flask_callbacks_reach_apps_initialised_before_and_after() -> None:
    """A callback registered on the extension reaches the apps it already serves and later ones."""
    from flask import Flask

    from pqlkit.integrations.flask import PqlKit

    ext = PqlKit(model=DORMANT)
    early, late = Flask("early"), Flask("late")
    for app in (early, late):
        app.config["PQLKIT_STORE"] = "memory://"
    ext.init_app(early)
    got: list[str] = []

    @ext.on_pql(name="recorder")
    def record(q: pqlkit.Qualification) -> None:
        got.append(q.subject_id)

    ext.init_app(late)
    try:
        for app, user in ((early, "jane"), (late, "raj")):
            with app.app_context():
                ext.track(user, "dashboard_built")
        assert got == ["jane", "raj"]
    finally:
        ext.close(early)
        ext.close(late)


def test_flask_lists_qualifications_a_page_at_a_time(flask_app: Any) -> None:
    """The example's GET /qualifications pages with ``?before=<id>``; a bad id is a 400."""
    client: pqlkit.Client = flask_app.extensions["pqlkit"]
    for i in range(25):
        client.track(f"u{i}", "warehouse_connected")
        client.track(f"u{i}", "dashboard_built")
        client.track(f"u{i}", "teammate_invited", {"email": f"x{i}@acme.io"})
    http = flask_app.test_client()
    first = http.get("/qualifications").get_json()
    assert len(first["qualifications"]) == 20
    second = http.get(f"/qualifications?before={first['next']}").get_json()
    assert len(second["qualifications"]) == 5
    assert second["next"] is None
    subjects = {q["subject_id"] for q in first["qualifications"] + second["qualifications"]}
    assert subjects == {f"u{i}" for i in range(25)}
    answer = http.get("/qualifications?before=nope")
    assert (answer.status_code, answer.get_json()["field"]) == (400, "before")


def test_flask_pqlkit_sweep_command() -> None:
    """``flask pqlkit sweep --now`` disqualifies a dormant PQL and delivers it to the app."""
    from flask import Flask

    from pqlkit.integrations.flask import PqlKit

    ext = PqlKit(model=DORMANT)
    gone: list[str] = []
    ext.on_pql(lambda q: None, name="crm")
    ext.on_disqualified(lambda q: gone.append(q.subject_id), name="gone")
    app = Flask("sweep")
    app.config.update(PQLKIT_STORE=MemoryStore(), PQLKIT_SETTINGS={"clock": FrozenClock(T0)})
    ext.init_app(app)
    try:
        with app.app_context():
            ext.track("jane", "dashboard_built")
        runner = app.test_cli_runner()
        later = (T0 + timedelta(days=15)).isoformat()
        result = runner.invoke(args=["pqlkit", "sweep", "--now", later])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines() == [
            "disqualified jane",
            "pqlkit sweep: 1 fired, 0 pending",
        ]
        assert gone == ["jane"]
        bad = runner.invoke(args=["pqlkit", "sweep", "--now", "yesterday"])
        assert bad.exit_code == 2
        assert "--now" in bad.output
        naive = runner.invoke(args=["pqlkit", "sweep", "--now", "2026-01-20T09:00:00"])
        assert naive.exit_code == 2
        assert "timezone-aware" in naive.output
    finally:
        ext.close(app)


def test_flask_model_must_be_a_model_or_a_path() -> None:
    """``PqlKit(model=3)`` is refused at once, naming ``model``."""
    from pqlkit.integrations.flask import PqlKit

    with pytest.raises(pqlkit.ValidationError) as raised:
        PqlKit(model=3)  # type: ignore[arg-type]
    assert raised.value.field == "model"


def test_flask_client_of_an_app_without_the_extension() -> None:
    """Asking for the Client of an app the extension never initialised is a clear error."""
    from flask import Flask

    from pqlkit.integrations.flask import client_of

    with pytest.raises(RuntimeError, match="init_app"):
        client_of(Flask("bare"))


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("pqlkit.integrations.flask", "flask", "flask"),
        ("pqlkit.integrations.django", "django", "django"),
        ("pqlkit.integrations.fastapi", "fastapi", "fastapi"),
    ],
)
def test_missing_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, framework: str, extra: str
) -> None:
    """Importing an integration without its framework says which extra to install."""
    monkeypatch.setitem(sys.modules, framework, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=re.escape(f"pip install 'pqlkit[{extra}]'")):
        importlib.import_module(module)


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
        values["PQLKIT"] = {**values["PQLKIT"], "STORE": f"sqlite:///{store}"}
        settings.configure(**values)
    django.setup()
    setup_test_environment()
    from django.test import Client as DjangoClient

    from pqlkit.integrations.django import get_client

    try:
        yield DjangoClient()
    finally:
        teardown_test_environment()
        get_client().close()


def test_django_app_builds_one_client_from_settings(django_client: Any) -> None:
    """The app builds one Client, on the store, model and callbacks of settings.PQLKIT."""
    from django.conf import settings

    from pqlkit.integrations.django import get_client

    client = get_client()
    assert client is get_client()
    assert isinstance(client.store, pqlkit.SQLiteStore)
    assert settings.PQLKIT["STORE"].startswith("sqlite:///")
    assert client.model.name == "django-demo"
    client.track("callbacks", "warehouse_connected")
    client.track("callbacks", "dashboard_built")
    client.track("callbacks", "teammate_invited", {"email": "a@b.io"})
    (delivered,) = [d for d in client.deliveries() if d.qualification.subject_id == "callbacks"]
    assert (delivered.callback, delivered.status) == ("pql_app.hooks:notify_sales", "delivered")


def test_django_client_is_built_once_across_threads(django_client: Any) -> None:
    """Threads asking for the client at once after a reset all get the same one."""
    from django.apps import apps

    from pqlkit.integrations.django import get_client

    config = apps.get_app_config("pqlkit")
    config.reset()  # type: ignore[attr-defined]
    got: list[pqlkit.Client] = []
    start = threading.Barrier(6)

    def ask() -> None:
        start.wait()
        got.append(get_client())

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in got}) == 1


def test_django_view_tracks_and_fires(django_client: Any) -> None:
    """POST /events through Django's test Client fires the PQL once."""
    from pqlkit.integrations.django import get_client

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
    listed = django_client.get("/qualifications").json()["qualifications"]
    assert "jane" in [q["subject_id"] for q in listed]
    assert django_client.get("/qualifications?before=nope").status_code == 400


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

    from pqlkit.integrations.django import get_client

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


@pytest.mark.parametrize(
    ("conf", "field", "reason"),
    [
        (None, "PQLKIT", "must be a dict"),
        ({}, 'PQLKIT["MODEL"]', "is required"),
        ({"MODEL": "pql_app.pql_model:model", "STORES": "x"}, "PQLKIT", "unknown keys ['STORES']"),
        ({"MODEL": "pql_app.pql_model:nope"}, 'PQLKIT["MODEL"]', "no attribute 'nope'"),
        ({"MODEL": "pql_app.hooks:notify_sales"}, 'PQLKIT["MODEL"]', "not a pqlkit.Model"),
        ({"MODEL": "pql_app.pql_model:model", "STORE": 5}, 'PQLKIT["STORE"]', "store URL"),
        ({"MODEL": "pql_app.pql_model:model", "SETTINGS": []}, 'PQLKIT["SETTINGS"]', "dict"),
        ({"MODEL": "pql_app.pql_model:model", "CALLBACKS": []}, 'PQLKIT["CALLBACKS"]', "dict"),
        (
            {"MODEL": "pql_app.pql_model:model", "CALLBACKS": {"lead": []}},
            "PQLKIT[\"CALLBACKS\"]['lead']",
            "unknown kind",
        ),
        (
            {"MODEL": "pql_app.pql_model:model", "CALLBACKS": {"pql": "pql_app.hooks:x"}},
            "PQLKIT[\"CALLBACKS\"]['pql']",
            "list",
        ),
        (
            {"MODEL": "pql_app.pql_model:model", "CALLBACKS": {"pql": ["pql_app.hooks:logger"]}},
            "PQLKIT[\"CALLBACKS\"]['pql']",
            "not callable",
        ),
        (
            {"MODEL": "pql_app.pql_model:model", "CALLBACKS": {"pql": ["pql_app.hooks:nope"]}},
            "PQLKIT[\"CALLBACKS\"]['pql']",
            "no attribute 'nope'",
        ),
    ],
)
def test_django_settings_are_checked(conf: object, field: str, reason: str) -> None:
    """A malformed settings.PQLKIT is a ValidationError naming the key, before any Client."""
    sys.path.insert(0, str(DJANGO_PROJECT))
    from pqlkit.integrations.django.apps import read_settings

    with pytest.raises(pqlkit.ValidationError, match=re.escape(reason)) as raised:
        read_settings(conf)
    assert raised.value.field == field


def test_django_settings_accept_a_model_and_a_store() -> None:
    """MODEL may be the Model itself and STORE a Store; the plan builds a working Client."""
    sys.path.insert(0, str(DJANGO_PROJECT))
    from pql_app.pql_model import model

    from pqlkit.integrations.django.apps import read_settings

    plan = read_settings(
        {"MODEL": model, "STORE": MemoryStore(), "SETTINGS": {"clock": FrozenClock(T0)}}
    )
    client = plan.build()
    try:
        assert client.model is model
        assert client.clock.now() == T0
    finally:
        client.close()


def test_django_plan_closes_its_client_when_a_callback_is_refused() -> None:
    """The same callback path twice for one kind: building fails, and leaves no client open."""
    sys.path.insert(0, str(DJANGO_PROJECT))
    from pqlkit.integrations.django.apps import read_settings

    path = "pql_app.hooks:notify_sales"
    plan = read_settings(
        {
            "MODEL": "pql_app.pql_model:model",
            "STORE": "memory://",
            "CALLBACKS": {"pql": [path, path]},
        }
    )
    with pytest.raises(pqlkit.ValidationError, match="name"):
        plan.build()


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


def test_django_nudge_views_serve_the_signed_in_user_only(django_client: Any) -> None:
    """The nudge views list the signed-in user's nudges only; signed out is a 401."""
    from django.test import Client as DjangoClient

    from pqlkit.integrations.django import get_client

    get_client().nudge("nadia", "upgrade", {"title": "Hi"})
    anonymous, bob = DjangoClient(), DjangoClient()
    assert anonymous.get("/pqlkit/nudges").status_code == 401
    assert anonymous.post("/pqlkit/nudges/upgrade/clicked").status_code == 401
    bob.get("/login/bob")
    assert bob.get("/pqlkit/nudges?user_id=nadia").json() == {"nudges": []}
    assert bob.post("/pqlkit/nudges/upgrade/clicked").json()["field"] == "key"  # not bob's
    nadia = DjangoClient()
    nadia.get("/login/nadia")
    assert [n["payload"] for n in nadia.get("/pqlkit/nudges").json()["nudges"]] == [{"title": "Hi"}]
    get_client().mark("nadia", "upgrade", "dismissed")


def test_django_page_tag_marks_and_csrf(django_client: Any) -> None:
    """{% pqlkit_nudges %} embeds the nudges, escaped, with the script and a CSRF token; a mark
    needs the token; a bad action is a 400 naming it; the script is served."""
    from django.test import Client as DjangoClient

    from pqlkit.integrations.django import get_client

    get_client().nudge("olga", "upgrade", {"title": "</script><b>"})
    browser = DjangoClient(enforce_csrf_checks=True)
    assert "pqlkit-nudges" not in browser.get("/").content.decode()  # signed out
    browser.get("/login/olga")
    page = browser.get("/").content.decode()
    assert '"title":"\\u003c/script\\u003e\\u003cb\\u003e"' in page
    token = re.search(r'data-csrf-token="([^"]+)"', page)
    assert token is not None
    assert '<script src="/pqlkit/nudges.js" data-endpoint="/pqlkit/nudges"' in page
    assert browser.post("/pqlkit/nudges/upgrade/seen").status_code == 403  # no token
    headers = {"X-CSRFToken": token.group(1)}
    bad = browser.post("/pqlkit/nudges/upgrade/opened", headers=headers)
    assert (bad.status_code, bad.json()["field"]) == (400, "action")
    assert browser.post("/pqlkit/nudges/upgrade/clicked", headers=headers).json() == {
        "changed": True
    }
    assert browser.get("/pqlkit/nudges").json() == {"nudges": []}
    script = browser.get("/pqlkit/nudges.js")
    assert script["content-type"].startswith("text/javascript")
    from pqlkit.integrations import web

    assert script.content.decode() == web.nudges_js()


def test_django_default_nudge_urls_use_request_user(django_client: Any) -> None:
    """``include("pqlkit.integrations.django.urls")`` reads ``request.user`` (its pk, when
    authenticated)."""
    from types import SimpleNamespace

    from pqlkit.integrations.django import urls
    from pqlkit.integrations.django.views import signed_in_user

    assert [p.name for p in urls.urlpatterns] == [
        "pqlkit_nudges",
        "pqlkit_nudges_js",
        "pqlkit_nudge_mark",
    ]
    signed_in = SimpleNamespace(user=SimpleNamespace(is_authenticated=True, pk=42))
    signed_out = SimpleNamespace(user=SimpleNamespace(is_authenticated=False, pk=None))
    assert signed_in_user(signed_in) == "42"  # type: ignore[arg-type]
    assert signed_in_user(signed_out) is None  # type: ignore[arg-type]
    assert signed_in_user(SimpleNamespace()) is None  # type: ignore[arg-type]


def test_django_get_client_before_setup_is_a_clear_error() -> None:
    """get_client() in a process where Django is not set up says what to do."""
    code = (
        "from pqlkit.integrations.django import get_client\n"
        "try:\n    get_client()\nexcept RuntimeError as e:\n    print(e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "add it to INSTALLED_APPS" in done.stdout


PLAYS = pqlkit.Model(
    "integration-plays",
    plays={"upgrade": pqlkit.play(pqlkit.did("limit_hit"))},
)


def test_flask_on_play_reaches_apps_initialised_before_and_after() -> None:
    """@ext.on_play("upgrade") gets that play's qualifications on every app's Client."""
    from flask import Flask

    from pqlkit.integrations.flask import PqlKit

    ext = PqlKit(model=PLAYS)
    early, late = Flask("early-plays"), Flask("late-plays")
    for app in (early, late):
        app.config["PQLKIT_STORE"] = "memory://"
    ext.init_app(early)
    got: list[tuple[str | None, str]] = []

    @ext.on_play("upgrade", name="recorder")
    def record(q: pqlkit.Qualification) -> None:
        got.append((q.play, q.subject_id))

    ext.init_app(late)
    try:
        for app, user in ((early, "jane"), (late, "raj")):
            with app.app_context():
                ext.track(user, "limit_hit")
        assert got == [("upgrade", "jane"), ("upgrade", "raj")]
    finally:
        ext.close(early)
        ext.close(late)


def test_flask_on_play_of_an_unknown_play_is_refused() -> None:
    """An unknown play is a ValidationError naming ``play``."""
    from flask import Flask

    from pqlkit.integrations.flask import PqlKit

    app = Flask("unknown-play")
    app.config["PQLKIT_STORE"] = "memory://"
    ext = PqlKit(app, model=PLAYS)
    try:
        with pytest.raises(pqlkit.ValidationError) as raised:
            ext.on_play("nope", lambda q: None)
        assert raised.value.field == "play"
    finally:
        ext.close(app)


def test_django_callbacks_of_a_play() -> None:
    """CALLBACKS {"play:<name>": [...]} registers each path for that play; an unknown
    play's key is refused naming it."""
    sys.path.insert(0, str(DJANGO_PROJECT))
    from pqlkit.integrations.django.apps import read_settings

    path = "pql_app.hooks:notify_sales"
    plan = read_settings(
        {"MODEL": PLAYS, "STORE": MemoryStore(), "CALLBACKS": {"play:upgrade": [path]}}
    )
    assert [(kind, name) for kind, _, name in plan.callbacks] == [("play:upgrade", path)]
    client = plan.build()
    try:
        with pytest.raises(pqlkit.ValidationError, match=r"taken|registered"):
            client.on_play("upgrade", lambda q: None, name=path)  # the name is taken: registered
    finally:
        client.close()
    with pytest.raises(pqlkit.ValidationError, match="unknown play") as raised:
        read_settings({"MODEL": PLAYS, "CALLBACKS": {"play:nope": [path]}})
    assert raised.value.field == "PQLKIT[\"CALLBACKS\"]['play:nope']"
