"""The sinks (``pqlkit.sinks``): Slack, a signed webhook, a JSON Lines file for reverse ETL.

The HTTP ones post to a real server on 127.0.0.1 (``http.server`` in a thread).
"""

from __future__ import annotations

import json
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import attrs
import pytest

import pqlkit
from conftest import T0
from pqlkit import Client, MemoryStore, Model, SinkError, ValidationError, count, did, points, score
from pqlkit.sinks import (
    ID_HEADER,
    MAX_LINES,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    JsonlSink,
    SignedWebhook,
    SlackWebhook,
    headline,
    read_jsonl,
    sign,
    slack_message,
    verify,
    webhook_body,
)
from pqlkit.testing import ClientFactory, FrozenClock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

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


def sample() -> pqlkit.Qualification:
    """A qualification fired by MODEL on an in-memory store."""
    with Client(MODEL, store=MemoryStore()) as client:
        return qualify(client)


def qualify(client: Client, user: str = "jane") -> pqlkit.Qualification:
    """Make ``user`` a PQL and return the qualification fired."""
    client.track(user, "dashboard_built", account_id="acme")
    result = client.track(user, "teammate_invited", {"email": "raj@acme.io"}, account_id="acme")
    (q,) = result.qualified
    return q


# -- the signed webhook ------------------------------------------------------------------------


def test_webhook_posts_the_qualification_signed(client: Client, server: LocalServer) -> None:
    """The body is the Qualification as JSON; id, timestamp and signature headers verify."""
    before = int(time.time())
    client.on_pql(SignedWebhook(server.url + "/hooks/pql", secret=SECRET), name="hook")
    q = qualify(client)
    assert client.pending() == []
    (got,) = server.requests
    assert got.path == "/hooks/pql"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers[ID_HEADER] == q.id
    assert before <= int(got.headers[TIMESTAMP_HEADER]) <= time.time()
    signature = got.headers[SIGNATURE_HEADER]
    assert signature.startswith("v1=")
    assert len(signature) == len("v1=") + 64
    assert verify(got.body, got.headers, SECRET)
    assert not verify(got.body, got.headers, "wrong secret")
    assert not verify(got.body + b" ", got.headers, SECRET)
    assert got.body == webhook_body(q)
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


def signed(
    body: bytes, *, at: int, delivery_id: str = "q1", secret: str = SECRET
) -> dict[str, str]:
    """The headers SignedWebhook sends for ``body`` signed at ``at``."""
    return {
        ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(at),
        SIGNATURE_HEADER: sign(body, secret, timestamp=at, delivery_id=delivery_id),
    }


NOW = 1_767_603_600  # T0 as a Unix time


def test_verify_covers_the_timestamp_and_the_id() -> None:
    """Changing the timestamp or the delivery id header breaks the signature."""
    headers = signed(b"{}", at=NOW)
    assert verify(b"{}", headers, SECRET, now=NOW)
    assert not verify(b"{}", {**headers, TIMESTAMP_HEADER: str(NOW + 1)}, SECRET, now=NOW)
    assert not verify(b"{}", {**headers, ID_HEADER: "q2"}, SECRET, now=NOW)
    assert sign(b"{}", SECRET, timestamp=NOW, delivery_id="q1") == sign(
        b"{}", SECRET.encode(), timestamp=NOW, delivery_id="q1"
    )


def test_verify_refuses_a_replay_older_than_the_tolerance() -> None:
    """A request signed more than ``tolerance`` seconds ago (or ahead) is refused."""
    headers = signed(b"{}", at=NOW)
    assert verify(b"{}", headers, SECRET, now=NOW + 300)
    assert not verify(b"{}", headers, SECRET, now=NOW + 301)
    assert not verify(b"{}", headers, SECRET, now=NOW - 301)
    assert verify(b"{}", headers, SECRET, now=NOW + 3600, tolerance=3600)
    assert not verify(b"{}", headers, SECRET)  # now: the request was signed long ago


@pytest.mark.parametrize(
    "change",
    [
        {SIGNATURE_HEADER: "v1=\u00e9" + "0" * 63},
        {SIGNATURE_HEADER: "sha256=caf\u00e9"},
        {TIMESTAMP_HEADER: "\u0661\u0667\u0666"},  # Arabic-Indic digits: isdigit(), not ASCII
        {TIMESTAMP_HEADER: "-5"},
        {TIMESTAMP_HEADER: "1e9"},
        {TIMESTAMP_HEADER: "9" * 40},
        {SIGNATURE_HEADER: ""},
    ],
)
def test_verify_refuses_malformed_headers_cleanly(change: dict[str, str]) -> None:
    """A non-ASCII or malformed header is a plain False, never an exception."""
    headers = {**signed(b"{}", at=NOW), **change}
    assert verify(b"{}", headers, SECRET, now=NOW) is False


@pytest.mark.parametrize("missing", [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_verify_needs_every_header(missing: str) -> None:
    """Without the id, the timestamp or the signature, nothing verifies."""
    headers = signed(b"{}", at=NOW)
    del headers[missing]
    assert not verify(b"{}", headers, SECRET, now=NOW)


def test_verify_matches_header_names_in_any_case() -> None:
    """A plain dict of lower-case names (as some frameworks give) works too."""
    headers = {k.lower(): v for k, v in signed(b"{}", at=NOW).items()}
    assert verify(b"{}", headers, SECRET, now=NOW)


def test_webhook_body_is_stable() -> None:
    """A qualification always gives the same bytes, so every retry posts the same body."""
    q = sample()
    assert webhook_body(q) == webhook_body(attrs.evolve(q))


def test_webhook_500_is_retried_with_backoff(
    client: Client, clock: FrozenClock, server: LocalServer, quiet: None
) -> None:
    """A 500 leaves the delivery pending; after the backoff, flush() delivers the same body."""
    server.statuses[:] = [500, 503]
    client.on_pql(SignedWebhook(server.url, secret=SECRET), name="hook")
    q = qualify(client)
    assert [p.id for p in client.pending()] == [q.id]
    assert len(server.requests) == 1

    client.flush()  # not due yet: the first retry waits ~1 s of the client's clock
    assert len(server.requests) == 1

    clock.advance(timedelta(seconds=1))
    client.flush()  # due: answered 503, pending again (next wait ~2 s)
    assert len(server.requests) == 2
    assert [p.id for p in client.pending()] == [q.id]
    (failed,) = client.deliveries(status="pending")
    assert failed.last_error is not None
    assert "503" in failed.last_error

    clock.advance(timedelta(seconds=2))
    client.flush()
    assert client.pending() == []
    assert client.dead_letters() == []
    assert len(server.requests) == 3
    assert len({r.body for r in server.requests}) == 1, "every retry sends the same body"
    assert {r.headers[ID_HEADER] for r in server.requests} == {q.id}
    for r in server.requests:  # each attempt signed anew, each verifies
        assert verify(r.body, r.headers, SECRET)


def test_webhook_gives_up_into_dead_letters(
    server: LocalServer, clock: FrozenClock, quiet: None
) -> None:
    """With max_attempts=2, two failures dead-letter it; retry_dead_letters() delivers it."""
    server.statuses[:] = [500, 500]
    with Client(MODEL, store=MemoryStore(), clock=clock, max_attempts=2) as client:
        client.on_pql(SignedWebhook(server.url, secret=SECRET), name="hook")
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
    client.on_pql(SignedWebhook(server.url, secret=SECRET, timeout=0.2), name="hook")
    started = time.monotonic()
    q = qualify(client)
    assert time.monotonic() - started < 4
    assert [p.id for p in client.pending()] == [q.id]
    server.delay.set()


def test_webhook_refused_connection_is_a_failed_attempt(client: Client, quiet: None) -> None:
    """Nobody listening: the attempt fails (OSError), the delivery stays pending."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client.on_pql(SignedWebhook(f"http://127.0.0.1:{port}", secret=SECRET, timeout=2), name="h")
    q = qualify(client)
    assert [p.id for p in client.pending()] == [q.id]


def test_webhook_extra_headers_are_sent(client: Client, server: LocalServer) -> None:
    """``headers=`` adds headers (an Authorization); pqlkit's own cannot be overridden."""
    hook = SignedWebhook(
        server.url, secret=SECRET, headers={"Authorization": "Bearer t", ID_HEADER: "forged"}
    )
    client.on_pql(hook, name="hook")
    q = qualify(client)
    (got,) = server.requests
    assert got.headers["Authorization"] == "Bearer t"
    assert got.headers[ID_HEADER] == q.id


def test_webhook_repr_hides_the_secret() -> None:
    """The secret never shows in a repr (logs)."""
    assert SECRET not in repr(SignedWebhook("http://x", secret=SECRET))


def test_sink_error_carries_the_status() -> None:
    """SinkError is a PqlkitError with the HTTP status; it pickles (logs, processes)."""
    error = SinkError("https://x answered 503", status=503)
    assert isinstance(error, pqlkit.PqlkitError)
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.status) == (str(error), 503)


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: SignedWebhook("ftp://x", secret=SECRET), "url"),
        (lambda: SignedWebhook(None, secret=SECRET), "url"),  # type: ignore[arg-type]
        (lambda: SignedWebhook("https://x", secret=""), "secret"),
        (lambda: SignedWebhook("https://x", secret=SECRET, timeout=0), "timeout"),
        (lambda: SignedWebhook("https://x", secret=SECRET, timeout=True), "timeout"),
        (lambda: SlackWebhook("hooks.slack.com/x"), "url"),
        (lambda: SlackWebhook("https://x", timeout=float("nan")), "timeout"),
        (lambda: JsonlSink(""), "path"),
        (lambda: JsonlSink(3), "path"),  # type: ignore[arg-type]
    ],
)
def test_bad_sink_settings_name_the_field(build: object, field: str) -> None:
    """A sink built with a bad setting raises a ValidationError naming it, at once."""
    with pytest.raises(ValidationError) as raised:
        build()  # type: ignore[operator]
    assert raised.value.field == field


def test_webhook_example_runs() -> None:
    """``python examples/webhook.py``: its receiver verifies and accepts both PQLs once."""
    import webhook

    accepted = webhook.main()
    assert [(q.kind, q.subject_id, q.account_id) for q in accepted] == [
        ("pql", "jane", "acme"),
        ("pql", "raj", "acme"),
    ]


# -- Slack -------------------------------------------------------------------------------------


def test_slack_message_has_the_explanation(client: Client, server: LocalServer) -> None:
    """Slack gets ``text`` with the headline and every explanation line, and ``blocks``."""
    client.on_pql(SlackWebhook(server.url + "/services/T0/B0/x"), name="slack")
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
    client.on_pql(SlackWebhook(server.url, blocks=False), name="slack")
    qualify(client)
    assert set(json.loads(server.requests[0].body)) == {"text"}


def test_slack_headlines() -> None:
    """PQAs and disqualifications read as such; a user without an account shows no account."""
    q = sample()
    assert headline(q) == "jane (acme) is a product-qualified lead (routing)"
    assert headline(attrs.evolve(q, account_id=None)).startswith("jane is a")
    pqa = attrs.evolve(q, kind="pqa", subject_id="acme")
    assert headline(pqa) == "acme is a product-qualified account (routing)"
    gone = attrs.evolve(q, disqualified_at=T0)
    assert "no longer qualifies" in headline(gone)


def test_slack_long_explanations_are_cut() -> None:
    """More than MAX_LINES explanation lines are cut with a count of the rest."""
    q = attrs.evolve(sample(), explanation=tuple(f"line {i}" for i in range(50)))
    lines = slack_message(q)["text"].splitlines()
    assert len(lines) == 1 + MAX_LINES + 1
    assert lines[-1] == "... 10 more"


def test_slack_error_is_retried(
    client: Client, clock: FrozenClock, server: LocalServer, quiet: None
) -> None:
    """A 500 from Slack makes pqlkit retry; the retry posts."""
    server.statuses[:] = [500]
    client.on_pql(SlackWebhook(server.url), name="slack")
    qualify(client)
    assert len(client.pending()) == 1
    clock.advance(timedelta(seconds=1))
    client.flush()
    assert client.pending() == []
    assert len(server.requests) == 2


def test_slack_repr_hides_the_url() -> None:
    """The webhook URL is a secret: not in the repr."""
    assert "T0/B0" not in repr(SlackWebhook("https://hooks.slack.com/services/T0/B0/x"))


def test_slack_example_posts(server: LocalServer) -> None:
    """``python examples/slack_webhook.py URL`` posts jane's PQL."""
    import slack_webhook

    assert slack_webhook.main(server.url) == []
    (got,) = server.requests
    assert json.loads(got.body)["text"].startswith("jane (acme) is a product-qualified lead")


# -- the JSON Lines file for reverse ETL -------------------------------------------------------


def test_jsonl_one_line_per_qualification(client: Client, tmp_path: Path) -> None:
    """Each qualification is one JSON line with its id, type and ISO times."""
    path = tmp_path / "out" / "pql.jsonl"
    client.on_pql(JsonlSink(path), name="file")
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
    """A redelivery (the sink's own delivery failed after it wrote) leaves one line per id."""
    path = tmp_path / "pql.jsonl"
    sink = JsonlSink(path)
    calls: list[str] = []

    def flaky_after_writing(q: pqlkit.Qualification) -> None:
        sink(q)
        calls.append(q.id)
        if len(calls) == 1:
            raise ConnectionError("lost the acknowledgement")

    client.on_pql(flaky_after_writing, name="file")
    q = qualify(client)
    clock.advance(timedelta(seconds=1))
    client.flush()
    assert calls == [q.id, q.id], "it was delivered twice"
    assert [r["id"] for r in read_jsonl(path)] == [q.id]
    assert len(path.read_text().splitlines()) == 1


def test_jsonl_dedup_survives_a_restart(tmp_path: Path) -> None:
    """A new sink (a restarted process) on the same file still skips ids already written."""
    path = tmp_path / "pql.jsonl"
    q = sample()
    JsonlSink(path)(q)
    other = JsonlSink(path)
    other(q)
    other(attrs.evolve(q, id="another"))
    JsonlSink(path)(q)
    assert [r["id"] for r in read_jsonl(path)] == [q.id, "another"]


def test_jsonl_two_sinks_share_a_file(tmp_path: Path) -> None:
    """Two sinks on one file (two processes) see each other's lines before appending."""
    path = tmp_path / "pql.jsonl"
    q = sample()
    one, two = JsonlSink(path), JsonlSink(path)
    one(q)
    two(q)
    two(attrs.evolve(q, id="b"))
    one(attrs.evolve(q, id="b"))
    assert [r["id"] for r in read_jsonl(path)] == [q.id, "b"]


def test_jsonl_threads_append_each_id_once(tmp_path: Path) -> None:
    """Threads delivering the same qualifications through two sinks write each id once."""
    path = tmp_path / "pql.jsonl"
    q = sample()
    sinks = [JsonlSink(path), JsonlSink(path)]
    wanted = [attrs.evolve(q, id=f"q{i}") for i in range(20)]
    start = threading.Barrier(4)

    def deliver(n: int) -> None:
        start.wait()
        for item in wanted:
            sinks[n % 2](item)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [r["id"] for r in read_jsonl(path)]
    assert sorted(ids) == sorted(q.id for q in wanted)


def test_jsonl_torn_line_is_skipped_and_ended(tmp_path: Path) -> None:
    """A line torn by a crash is ended; the next record stands on its own line."""
    path = tmp_path / "pql.jsonl"
    path.write_text('{"id": "x", "type": "pql"}\n{"id": "torn", "ty')
    q = sample()
    JsonlSink(path)(q)
    assert [r["id"] for r in read_jsonl(path)] == ["x", q.id]


def test_jsonl_disqualification_gets_its_own_line(tmp_path: Path) -> None:
    """A disqualification (its own id) is recorded with type "disqualified"."""
    path = tmp_path / "pql.jsonl"
    q = sample()
    sink = JsonlSink(path)
    sink(q)
    sink(attrs.evolve(q, id="dq", disqualified_at=T0))
    assert [(r["id"], r["type"]) for r in read_jsonl(path)] == [
        (q.id, "pql"),
        ("dq", "disqualified"),
    ]


def test_jsonl_truncated_file_starts_over(tmp_path: Path) -> None:
    """If the reverse-ETL tool truncates the file after a sync, ids are written again."""
    path = tmp_path / "pql.jsonl"
    q = sample()
    sink = JsonlSink(path)
    sink(q)
    path.write_text("")
    sink(q)
    assert [r["id"] for r in read_jsonl(path)] == [q.id]


def test_jsonl_write_error_is_retried(
    client: Client, clock: FrozenClock, tmp_path: Path, quiet: None
) -> None:
    """A file that cannot be written (its folder is a file) fails the attempt; it stays pending."""
    (tmp_path / "blocked").write_text("")
    client.on_pql(JsonlSink(tmp_path / "blocked" / "pql.jsonl"), name="file")
    q = qualify(client)
    assert [p.id for p in client.pending()] == [q.id]


def test_crm_sync_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python examples/crm_sync.py`` writes two lines despite a redelivery."""
    import crm_sync

    crm_sync.main(str(tmp_path / "demo.jsonl"))
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in out] == [["pql", "jane", "acme"], ["pql", "raj", "acme"]]


def test_jsonl_skips_lines_that_are_not_records(tmp_path: Path) -> None:
    """Lines that are not JSON objects (a note, a list) are skipped by the sink and the reader."""
    path = tmp_path / "pql.jsonl"
    path.write_text('not json\n[1, 2]\n{"id": "x", "type": "pql"}\n')
    sink = JsonlSink(path)
    sink(attrs.evolve(sample(), id="x"))  # already there: no new line
    assert [r["id"] for r in read_jsonl(path)] == ["x"]
    assert repr(sink) == f"JsonlSink({str(path)!r})"
