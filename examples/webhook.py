"""A signed webhook, both sides: :class:`pqlkit.sinks.SignedWebhook` sends, a receiver verifies.

The sender posts each qualification as JSON, signed with HMAC-SHA256 over a
timestamp, the delivery id and the body. The receiver here is a plain
``http.server`` on 127.0.0.1: it checks the signature with
:func:`pqlkit.sinks.verify` (which also refuses a request older than 5 minutes,
a replay), de-duplicates on the delivery id (pqlkit delivers at least once),
and reads the body back into a :class:`pqlkit.Qualification`.

Run it: ``python examples/webhook.py`` prints what the receiver accepted.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pqlkit
from pqlkit import Model, did
from pqlkit.sinks import ID_HEADER, SignedWebhook, verify

SECRET = "change-me"  # in an app: os.environ["PQL_WEBHOOK_SECRET"], on both sides

model = Model("webhook-demo", pql=did("dashboard_built"))


class Receiver(BaseHTTPRequestHandler):
    """What the other system runs: verify, de-duplicate, then act."""

    seen: ClassVar[set[str]] = set()
    accepted: ClassVar[list[pqlkit.Qualification]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not verify(body, self.headers, SECRET):
            self.answer(401)
            return
        delivery_id = self.headers[ID_HEADER]
        if delivery_id not in self.seen:  # a retry of something already handled: just 200
            self.seen.add(delivery_id)
            self.accepted.append(pqlkit.Qualification.from_dict(json.loads(body)))
        self.answer(200)

    def answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> list[pqlkit.Qualification]:
    """Start the receiver, qualify two users, return what it accepted."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/pql"
    try:
        with pqlkit.Client(model, store="memory://", dispatch="inline") as client:
            client.on_pql(SignedWebhook(url, secret=SECRET, timeout=5.0), name="crm-webhook")
            client.track("jane", "dashboard_built", account_id="acme")
            client.track("raj", "dashboard_built", account_id="acme")
    finally:
        server.shutdown()
        server.server_close()
    return list(Receiver.accepted)


if __name__ == "__main__":
    for q in main():
        print(f"accepted {q.kind} {q.subject_id} ({q.account_id}) id {q.id}")
