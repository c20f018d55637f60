"""The web helpers for nudges: the escaped page data, the shipped script, each framework's
routes, and the whole flow in a real headless Chromium against two worker processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import pqlkit
from pqlkit import Nudge
from pqlkit.integrations import web

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

AT = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
EVIL = "</script><script>window.pwned = 1</script><!-- & \u2028"


# -- the shared part ---------------------------------------------------------------------------


def test_nudges_script_cannot_be_ended_by_a_payload() -> None:
    """A payload holding ``</script>`` or ``<!--`` stays in the JSON element, read back intact."""
    html = web.nudges_script([Nudge("u1", "tour", {"title": EVIL}, AT)])
    assert html.startswith('<script type="application/json" id="pqlkit-nudges">')
    assert html.endswith("</script>")
    assert html.count("</script") == 1
    assert "<!--" not in html
    inner = html[len('<script type="application/json" id="pqlkit-nudges">') : -len("</script>")]
    assert json.loads(inner)[0]["payload"]["title"] == EVIL


def test_nudges_script_is_safe_markup_for_templates() -> None:
    """Jinja inserts it as it is (``__html__``), and the script tag's attributes are escaped."""
    import jinja2

    html = web.nudges_script([], src='/x.js?a=1&b="2"', endpoint="/p/nudges")
    rendered = jinja2.Environment(autoescape=True).from_string("{{ s }}").render(s=html)
    assert rendered == (
        '<script type="application/json" id="pqlkit-nudges">[]</script>'
        '<script src="/x.js?a=1&amp;b=&quot;2&quot;" data-endpoint="/p/nudges" defer></script>'
    )


def test_check_mark_names_the_field() -> None:
    """An unknown action names ``action``; an empty key names ``key``."""
    with pytest.raises(pqlkit.ValidationError) as caught:
        web.check_mark("upgrade", "opened")
    assert caught.value.field == "action"
    with pytest.raises(pqlkit.ValidationError) as caught:
        web.check_mark("", "seen")
    assert caught.value.field == "key"


def test_the_script_ships_in_the_package() -> None:
    """The script is package data, read through importlib.resources."""
    source = web.nudges_js()
    assert "pqlkit-nudges" in source
    assert "innerHTML" not in source.replace("no innerHTML", "")


# -- Flask -------------------------------------------------------------------------------------


@pytest.fixture(name="nudge_app")
def fixture_nudge_app(tmp_path: Path) -> Iterator[Any]:
    """The example app on a SQLite file; its client closed after."""
    import nudge_app

    app = nudge_app.create_app(
        {"TESTING": True, "PQLKIT_STORE": f"sqlite:///{tmp_path / 'nudges.db'}"}
    )
    yield app
    nudge_app.pql.close(app)


def _qualify(http: Any, user: str) -> None:
    http.get(f"/login/{user}")
    for _ in range(3):
        assert http.post("/track", json={"event": "report_exported"}).status_code == 200


def test_flask_routes_serve_the_signed_in_user_only(nudge_app: Any) -> None:
    """GET lists the session user's nudges; a signed-out request gets 401."""
    ada, bob, anonymous = (nudge_app.test_client() for _ in range(3))
    _qualify(ada, "ada")
    bob.get("/login/bob")
    assert [n["key"] for n in ada.get("/pqlkit/nudges").json["nudges"]] == ["upgrade"]
    assert bob.get("/pqlkit/nudges").json == {"nudges": []}
    assert bob.get("/pqlkit/nudges?user_id=ada").json == {"nudges": []}  # no id from the URL
    assert anonymous.get("/pqlkit/nudges").status_code == 401
    assert anonymous.post("/pqlkit/nudges/upgrade/clicked").status_code == 401


def test_flask_marks_and_bad_input(nudge_app: Any) -> None:
    """POST marks the session user's nudge; a bad action or key is a 400 naming the field;
    another user cannot close it."""
    ada, bob = nudge_app.test_client(), nudge_app.test_client()
    _qualify(ada, "ada")
    bob.get("/login/bob")
    bad = ada.post("/pqlkit/nudges/upgrade/opened")
    assert (bad.status_code, bad.json["field"]) == (400, "action")
    unknown = ada.post("/pqlkit/nudges/tour/clicked")
    assert (unknown.status_code, unknown.json["field"]) == (400, "key")
    assert bob.post("/pqlkit/nudges/upgrade/clicked").status_code == 400  # bob has none
    assert ada.post("/pqlkit/nudges/upgrade/seen").json == {"changed": True}
    assert ada.post("/pqlkit/nudges/upgrade/seen").json == {"changed": False}
    assert ada.get("/pqlkit/nudges").json["nudges"][0]["seen_at"] is not None
    assert ada.post("/pqlkit/nudges/upgrade/dismissed").json == {"changed": True}
    assert ada.get("/pqlkit/nudges").json == {"nudges": []}


def test_flask_page_embeds_the_nudges(nudge_app: Any) -> None:
    """``{{ pqlkit_nudges() }}`` puts the user's nudges and the script tag in the page."""
    ada = nudge_app.test_client()
    ada.get("/login/ada")
    assert 'id="pqlkit-nudges">[]</script>' in ada.get("/").text
    _qualify(ada, "ada")
    page = ada.get("/").text
    assert '"key":"upgrade"' in page
    assert '<script src="/pqlkit/nudges.js" data-endpoint="/pqlkit/nudges" defer>' in page
    assert "pqlkit-nudges" not in nudge_app.test_client().get("/").text  # signed out
    script = ada.get("/pqlkit/nudges.js")
    assert script.mimetype == "text/javascript"
    assert script.text == web.nudges_js()


# -- in a real browser, two worker processes -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server at {url} exited: {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/pqlkit/nudges.js", timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(name="workers")
def fixture_workers(tmp_path: Path) -> Iterator[tuple[list[str], str]]:
    """Two processes of examples/nudge_app.py on two ports, one SQLite file: (urls, store)."""
    store = f"sqlite:///{tmp_path / 'nudges.db'}"
    env = {
        **os.environ,
        "PQLKIT_STORE": store,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for _ in range(2):
            port = _free_port()
            processes.append(
                subprocess.Popen(
                    [sys.executable, str(EXAMPLES / "nudge_app.py"), "--port", str(port)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 15
        for url, process in zip(urls, processes, strict=True):
            _wait_until_up(url, process, deadline)
        yield urls, store
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck server
                process.kill()
                process.wait()


def _open_nudges(page: Any, url: str) -> list[dict[str, Any]]:
    response = page.context.request.get(url + "/pqlkit/nudges")
    assert response.status == 200
    return list(response.json()["nudges"])


def _settled(page: Any, url: str) -> None:
    """Load ``url`` and wait for the script to have run (it sets window.pqlkitNudges)."""
    page.goto(url)
    page.wait_for_function("() => window.pqlkitNudges !== undefined")
    page.wait_for_load_state("networkidle")


def _wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_nudge_in_the_browser_on_either_worker(browser: Any, workers: Any) -> None:
    """Qualifying actions over HTTP open a nudge; the next page (other worker) shows it once and
    posts seen; a click closes it; a reload, on either worker, no longer shows it; no console
    errors."""
    (a, b), store = workers
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("dialog", lambda d: problems.append(f"dialog {d.message}"))
    page.on(
        "response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    page.goto(f"{a}/login/ada")

    for url in (a, b, a):  # the qualifying actions, over HTTP, on both workers
        response = context.request.post(url + "/track", data={"event": "report_exported"})
        assert response.status == 200
    _settled(page, b)  # the next page, on the other worker
    shown = page.locator(".pqlkit-nudge")
    assert shown.count() == 1
    assert page.text_content(".pqlkit-nudge-title") == "Exporting a lot?"
    assert page.text_content(".pqlkit-nudge-body") == "Pro exports on a schedule."
    _wait_for(lambda: _open_nudges(page, a)[0]["seen_at"] is not None, "seen was not posted")

    page.click(".pqlkit-nudge-click")
    assert shown.count() == 0
    _wait_for(lambda: _open_nudges(page, b) == [], "clicked was not posted")
    for url in (a, b):  # a reload, on either worker, shows nothing
        _settled(page, url)
        assert page.locator(".pqlkit-nudge").count() == 0
    assert problems == []

    with (
        pqlkit.Client(pqlkit.Model("reader"), store=store) as reader,
        reader.store.transaction() as tx,
    ):
        marks = [e.event for e in tx.events(user_ids=["ada"]) if e.event.startswith("nudge_")]
    assert marks == ["nudge_seen", "nudge_clicked"]
    context.close()


def test_a_hostile_payload_is_shown_as_text(browser: Any, workers: Any) -> None:
    """A payload with ``</script>`` and markup is shown as text; nothing of it runs; dismiss
    closes it."""
    (a, b), store = workers
    with pqlkit.Client(pqlkit.Model("writer"), store=store) as writer:
        writer.nudge("eve", "tour", {"title": EVIL, "body": "<b>bold</b>", "url": "javascript:1"})
    context = browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{a}/login/eve")
    _settled(page, a)
    assert page.text_content(".pqlkit-nudge-title") == EVIL
    assert page.text_content(".pqlkit-nudge-body") == "<b>bold</b>"
    assert page.evaluate("() => window.pwned") is None
    page.click(".pqlkit-nudge-dismiss")
    _wait_for(lambda: _open_nudges(page, b) == [], "dismissed was not posted")
    assert problems == []
    context.close()


# -- FastAPI -----------------------------------------------------------------------------------

# Starlette's TestClient warns when it has to fall back to httpx (httpx2 needs Python 3.11+).
starlette_on_httpx = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


@pytest.fixture(name="fastapi_http")
def fixture_fastapi_http() -> Iterator[tuple[Any, pqlkit.Client]]:
    """An app with the nudges router over a memory store, its AsyncClient built by the
    lifespan; the user from an async function of a cookie (a stand-in for a session).
    Yields the TestClient and the AsyncClient's Client."""
    from contextlib import asynccontextmanager

    from fastapi import Cookie, FastAPI
    from fastapi.responses import HTMLResponse
    from fastapi.testclient import TestClient

    from pqlkit.integrations.fastapi import nudges_html, nudges_router

    held: dict[str, pqlkit.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with pqlkit.AsyncClient(pqlkit.Model("web"), store="memory://") as client:
            app.state.pqlkit = held["client"] = client
            yield

    async def current_user(request: Any) -> str | None:
        user: str | None = request.cookies.get("signed_in_as")
        return user

    app = FastAPI(lifespan=lifespan)
    app.include_router(
        nudges_router(lambda request: request.app.state.pqlkit, current_user, prefix="/p")
    )

    @app.get("/", response_class=HTMLResponse)
    async def home(signed_in_as: str | None = Cookie(None)) -> str:
        client = held["client"]
        nudges = await nudges_html(client, signed_in_as, prefix="/p") if signed_in_as else ""
        return f"<body>{nudges}</body>"

    with TestClient(app) as http:
        yield http, held["client"].client


@starlette_on_httpx
def test_fastapi_router_serves_the_signed_in_user_only(fastapi_http: Any) -> None:
    """GET lists the signed-in user's nudges, nobody else's; signed out is a 401."""
    http, client = fastapi_http
    client.nudge("ada", "upgrade", {"title": "Hi"})
    assert http.get("/p/nudges").status_code == 401
    assert http.post("/p/nudges/upgrade/clicked").status_code == 401
    http.cookies.set("signed_in_as", "bob")
    assert http.get("/p/nudges", params={"user_id": "ada"}).json() == {"nudges": []}
    assert http.post("/p/nudges/upgrade/clicked").json()["field"] == "key"  # not bob's
    http.cookies.set("signed_in_as", "ada")
    assert [n["payload"] for n in http.get("/p/nudges").json()["nudges"]] == [{"title": "Hi"}]


@starlette_on_httpx
def test_fastapi_marks_bad_input_page_and_script(fastapi_http: Any) -> None:
    """POST marks; a bad action is a 400 naming it; the page embeds the nudges; the script."""
    http, client = fastapi_http
    client.nudge("ada", "upgrade", {"title": "</script>"})
    http.cookies.set("signed_in_as", "ada")
    page = http.get("/").text
    assert '"title":"\\u003c/script\\u003e"' in page
    assert '<script src="/p/nudges.js" data-endpoint="/p/nudges" defer>' in page
    bad = http.post("/p/nudges/upgrade/opened")
    assert (bad.status_code, bad.json()["field"]) == (400, "action")
    assert http.post("/p/nudges/upgrade/seen").json() == {"changed": True}
    assert http.post("/p/nudges/upgrade/clicked").json() == {"changed": True}
    assert http.get("/p/nudges").json() == {"nudges": []}
    script = http.get("/p/nudges.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.text == web.nudges_js()
