"""The callbacks teams route to: Slack, a signed webhook, a JSON Lines file for reverse ETL.

The HTTP ones post to a real server on 127.0.0.1 (``http.server`` in a thread).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import attrs
import pytest

import pqlkit
from conftest import T0
from pqlkit import Client, MemoryStore, Model, count, did, points, score
from pqlkit.testing import ClientFactory, FrozenClock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import crm_sync
import slack_webhook
import webhook

SECRET = "s3cr3t"

MODEL = Model(
    "routing",
    signals={"built": did("dashboard_built"), "invited": count("teammate_invited") >= 1},
    scores={"behavior": points(built=30, invited=20)},
    pql=score("behavior") >= 50,
)


@attrs.define
class Received:
    """One request the local server got."""

    path: str
    headers: dict[str, str]
    body: bytes


@attrs.define
class LocalServer:
    """An HTTP server on 127.0.0.1 recording requests; answers the queued statuses, then 200."""

    url: str
    requests: list[Received]
    statuses: list[int]
    delay: threading.Event | None = None


@pytest.fixture(name="server")
def fixture_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    """A local HTTP server in a thread, shut down after the test."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    state = LocalServer(url="", requests=[], statuses=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(Received(self.path, dict(self.headers.items()), body))
            if state.delay is not None:
                state.delay.wait(timeout=5)
            status = state.statuses.pop(0) if state.statuses else 200
            answer = b"ok" if status == 200 else b"error"
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep pytest's output clean

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that timed out and left: expected in the timeout test

    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        if state.delay is not None:
            state.delay.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(name="client")
def fixture_client(pql_client: ClientFactory) -> Client:
    """An inline Client for MODEL on the plugin's in-memory store and the frozen clock."""
    return pql_client(MODEL)


@pytest.fixture(name="quiet")
def fixture_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Silence the pqlkit logger's tracebacks of failed callbacks (expected in these tests)."""
    monkeypatch.setattr("pqlkit._dispatch.logger.disabled", True)


def qualify(client: Client, user: str = "jane") -> pqlkit.Qualification:
    """Make ``user`` a PQL and return the qualification fired."""
    client.track(user, "dashboard_built", account_id="acme")
    result = client.track(user, "teammate_invited", {"email": "raj@acme.io"}, account_id="acme")
    (q,) = result.qualified
    return q


# -- the signed webhook ------------------------------------------------------------------------


def test_webhook_posts_the_qualification_with_a_valid_signature(
    client: Client, server: LocalServer
) -> None:
    """The body is the Qualification as JSON; the signature is the HMAC-SHA256 of the body."""
    client.on_pql(webhook.SignedWebhook(server.url + "/hooks/pql", secret=SECRET))
    q = qualify(client)
    assert client.pending() == []
    (got,) = server.requests
    assert got.path == "/hooks/pql"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Pqlkit-Id"] == q.id
    signature = got.headers["X-Pqlkit-Signature"]
    assert signature.startswith("sha256=")
    assert len(signature) == len("sha256=") + 64
    assert webhook.verify(got.body, SECRET, signature)
    assert not webhook.verify(got.body, "wrong secret", signature)
    assert not webhook.verify(got.body + b" ", SECRET, signature)
    assert not webhook.verify(got.body, SECRET, None)
    data = json.loads(got.body)
    assert data["id"] == q.id
    assert data["kind"] == "pql"
    assert (data["subject_id"], data["account_id"]) == ("jane", "acme")
    assert data["qualified_at"] == T0.isoformat()
    assert data["scores"] == {"behavior": 50.0}
    assert data["signals"] == ["built", "invited"]
    assert data["explanation"] == list(q.explanation)
    assert data["disqualified_at"] is None
    assert datetime.fromisoformat(data["qualified_at"]) == q.qualified_at
    assert pqlkit.Qualification.from_dict(data) == q  # what the receiver gets back


def test_webhook_body_is_stable() -> None:
    """A qualification always gives the same bytes, so every retry has the same signature."""
    q = webhook.sample()
    assert webhook.body_of(q) == webhook.body_of(attrs.evolve(q))
    assert webhook.sign(webhook.body_of(q), SECRET) == webhook.sign(webhook.body_of(q), b"s3cr3t")


def test_webhook_500_is_retried_with_backoff(
    client: Client, clock: FrozenClock, server: LocalServer, quiet: None
) -> None:
    """A 500 leaves the delivery pending; after the backoff, flush() delivers the same body."""
    server.statuses[:] = [500, 503]
    client.on_pql(webhook.SignedWebhook(server.url, secret=SECRET))
    q = qualify(client)
    assert [p.id for p in client.pending()] == [q.id]
    assert len(server.requests) == 1

    client.flush()  # not due yet: the first retry waits ~1 s of the client's clock
    assert len(server.requests) == 1

    clock.advance(timedelta(seconds=1))
    client.flush()  # due: answered 503, pending again (next wait ~2 s)
    assert len(server.requests) == 2
    assert [p.id for p in client.pending()] == [q.id]

    clock.advance(timedelta(seconds=2))
    client.flush()
    assert client.pending() == []
    assert client.dead_letters() == []
    bodies = {r.body for r in server.requests}
    assert len(server.requests) == 3
    assert len(bodies) == 1, "every retry sends the same body"
    assert {r.headers["X-Pqlkit-Signature"] for r in server.requests} == {
        webhook.sign(server.requests[0].body, SECRET)
    }


def test_webhook_gives_up_into_dead_letters(
    server: LocalServer, clock: FrozenClock, quiet: None
) -> None:
    """With max_attempts=2, two failures dead-letter it; retry_dead_letters() delivers it."""
    server.statuses[:] = [500, 500]
    with Client(MODEL, store=MemoryStore(), clock=clock, max_attempts=2) as client:
        client.on_pql(webhook.SignedWebhook(server.url, secret=SECRET))
        q = qualify(client)
        clock.advance(timedelta(seconds=1))
        client.flush()
        assert [d.id for d in client.dead_letters()] == [q.id]
        assert client.retry_dead_letters() == 1
        client.flush()
        assert client.dead_letters() == client.pending() == []
    assert len(server.requests) == 3


def test_webhook_timeout_is_a_failed_attempt(
    client: Client, server: LocalServer, quiet: None
) -> None:
    """A receiver slower than ``timeout`` fails the attempt; the delivery stays pending."""
    server.delay = threading.Event()
    client.on_pql(webhook.SignedWebhook(server.url, secret=SECRET, timeout=0.2))
    q = qualify(client)
    assert [p.id for p in client.pending()] == [q.id]
    server.delay.set()


def test_webhook_refused_connection_is_a_failed_attempt(client: Client, quiet: None) -> None:
    """Nobody listening: the attempt fails (OSError), the delivery stays pending."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client.on_pql(webhook.SignedWebhook(f"http://127.0.0.1:{port}", secret=SECRET, timeout=2))
    q = qualify(client)
    assert [p.id for p in client.pending()] == [q.id]


def test_webhook_repr_hides_the_secret() -> None:
    """The secret never shows in a repr (logs)."""
    assert SECRET not in repr(webhook.SignedWebhook("http://x", secret=SECRET))


# -- Slack -------------------------------------------------------------------------------------


def test_slack_message_has_the_explanation(client: Client, server: LocalServer) -> None:
    """Slack gets ``text`` with the headline and every explanation line, and ``blocks``."""
    client.on_pql(slack_webhook.SlackWebhook(server.url + "/services/T0/B0/x"))
    q = qualify(client)
    (got,) = server.requests
    assert got.path == "/services/T0/B0/x"
    message = json.loads(got.body)
    lines = message["text"].splitlines()
    assert lines[0] == "jane (acme) is a product-qualified lead (routing)"
    assert lines[1:] == list(q.explanation)
    assert [b["type"] for b in message["blocks"]] == ["header", "section", "section", "context"]
    assert "behavior 50" in message["blocks"][1]["text"]["text"]
    assert q.explanation[0] in message["blocks"][2]["text"]["text"]


def test_slack_blocks_are_optional(client: Client, server: LocalServer) -> None:
    """``blocks=False`` sends the text alone."""
    client.on_pql(slack_webhook.SlackWebhook(server.url, blocks=False))
    qualify(client)
    assert set(json.loads(server.requests[0].body)) == {"text"}


def test_slack_headlines() -> None:
    """PQAs and disqualifications read as such; a user without an account shows no account."""
    q = slack_webhook.sample()
    assert slack_webhook.headline(q) == "jane (acme) is a product-qualified lead (slack-demo)"
    assert slack_webhook.headline(attrs.evolve(q, account_id=None)).startswith("jane is a")
    pqa = attrs.evolve(q, kind="pqa", subject_id="acme")
    assert slack_webhook.headline(pqa) == "acme is a product-qualified account (slack-demo)"
    gone = attrs.evolve(q, disqualified_at=T0)
    assert "no longer qualifies" in slack_webhook.headline(gone)


def test_slack_long_explanations_are_cut() -> None:
    """More than MAX_LINES explanation lines are cut with a count of the rest."""
    q = attrs.evolve(slack_webhook.sample(), explanation=tuple(f"line {i}" for i in range(50)))
    lines = slack_webhook.slack_message(q)["text"].splitlines()
    assert len(lines) == 1 + slack_webhook.MAX_LINES + 1
    assert lines[-1] == "... 10 more"


def test_slack_error_is_retried(
    client: Client, clock: FrozenClock, server: LocalServer, quiet: None
) -> None:
    """A 500 from Slack makes pqlkit retry; the retry posts."""
    server.statuses[:] = [500]
    client.on_pql(slack_webhook.SlackWebhook(server.url))
    qualify(client)
    assert len(client.pending()) == 1
    clock.advance(timedelta(seconds=1))
    client.flush()
    assert client.pending() == []
    assert len(server.requests) == 2


# -- the JSON Lines file for reverse ETL -------------------------------------------------------


def test_jsonl_one_line_per_qualification(client: Client, tmp_path: Path) -> None:
    """Each qualification is one JSON line with its id, type and ISO times."""
    path = tmp_path / "out" / "pql.jsonl"
    client.on_pql(crm_sync.JsonlSink(path))
    a, b = qualify(client, "jane"), qualify(client, "raj")
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [a.id, b.id]
    first = json.loads(lines[0])
    assert first["type"] == "pql"
    assert first["qualified_at"] == T0.isoformat()
    assert first["scores"] == {"behavior": 50.0}


def test_jsonl_redelivery_adds_no_line(
    client: Client, clock: FrozenClock, tmp_path: Path, quiet: None
) -> None:
    """A redelivery (another callback failed after the sink wrote) leaves one line per id."""
    path = tmp_path / "pql.jsonl"
    client.on_pql(crm_sync.JsonlSink(path))
    calls: list[str] = []

    @client.on_pql
    def flaky(q: pqlkit.Qualification) -> None:
        calls.append(q.id)
        if len(calls) == 1:
            raise ConnectionError("the other system is down")

    q = qualify(client)
    clock.advance(timedelta(seconds=1))
    client.flush()
    assert calls == [q.id, q.id], "it was delivered twice"
    assert [r["id"] for r in crm_sync.read(path)] == [q.id]
    assert len(path.read_text().splitlines()) == 1


def test_jsonl_dedup_survives_a_restart(tmp_path: Path) -> None:
    """A new sink (a restarted process) on the same file still skips ids already written."""
    path = tmp_path / "pql.jsonl"
    q = webhook.sample()
    crm_sync.JsonlSink(path)(q)
    other = crm_sync.JsonlSink(path)
    other(q)
    other(attrs.evolve(q, id="another"))
    crm_sync.JsonlSink(path)(q)
    assert [r["id"] for r in crm_sync.read(path)] == [q.id, "another"]


def test_jsonl_two_sinks_share_a_file(tmp_path: Path) -> None:
    """Two sinks on one file (two processes) see each other's lines before appending."""
    path = tmp_path / "pql.jsonl"
    q = webhook.sample()
    one, two = crm_sync.JsonlSink(path), crm_sync.JsonlSink(path)
    one(q)
    two(q)
    two(attrs.evolve(q, id="b"))
    one(attrs.evolve(q, id="b"))
    assert [r["id"] for r in crm_sync.read(path)] == [q.id, "b"]


def test_jsonl_torn_line_is_skipped_and_ended(tmp_path: Path) -> None:
    """A line torn by a crash is ended; the next record stands on its own line."""
    path = tmp_path / "pql.jsonl"
    path.write_text('{"id": "x", "type": "pql"}\n{"id": "torn", "ty')
    q = webhook.sample()
    crm_sync.JsonlSink(path)(q)
    assert [r["id"] for r in crm_sync.read(path)] == ["x", q.id]


def test_jsonl_disqualification_gets_its_own_line(tmp_path: Path) -> None:
    """A disqualification (its own id) is recorded with type "disqualified"."""
    path = tmp_path / "pql.jsonl"
    q = webhook.sample()
    sink = crm_sync.JsonlSink(path)
    sink(q)
    sink(attrs.evolve(q, id="dq", disqualified_at=T0))
    assert [(r["id"], r["type"]) for r in crm_sync.read(path)] == [
        (q.id, "pql"),
        ("dq", "disqualified"),
    ]


def test_jsonl_truncated_file_starts_over(tmp_path: Path) -> None:
    """If the reverse-ETL tool truncates the file after a sync, ids are written again."""
    path = tmp_path / "pql.jsonl"
    q = webhook.sample()
    sink = crm_sync.JsonlSink(path)
    sink(q)
    path.write_text("")
    sink(q)
    assert [r["id"] for r in crm_sync.read(path)] == [q.id]


def test_crm_sync_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python examples/crm_sync.py`` writes two lines despite a redelivery."""
    crm_sync.main(str(tmp_path / "demo.jsonl"))
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in out] == [["pql", "jane", "acme"], ["pql", "raj", "acme"]]
