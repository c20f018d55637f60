"""Sinks: ready-made callbacks that hand each qualification to where a team works.

Each sink is a callable taking one :class:`~pqlkit.Qualification`, so it
registers like any callback (``client.on_pql(sink, name="slack")``, ``on_pqa``,
``on_disqualified``). Standard library only: HTTP goes through ``urllib``.

* :class:`SlackWebhook` posts a message to a Slack incoming webhook;
* :class:`SignedWebhook` posts the qualification as JSON to any URL, signed
  with HMAC-SHA256 over a timestamp, the delivery id and the body
  (:func:`verify` checks it on the receiving side);
* :class:`JsonlSink` appends it, once per id, to a JSON Lines file that a
  reverse-ETL tool syncs to the CRM.

**Retries are the outbox's.** A sink does not retry by itself: when the receiver
answers anything but 2xx it raises :class:`~pqlkit.SinkError`, and a refused
connection or a timeout raises an ``OSError``; pqlkit then keeps the delivery in
its outbox and tries it again with exponential backoff (1 s of the client's
clock, doubling, capped at 1 h) until ``max_attempts``, then dead-letters it
(``client.dead_letters()``, ``client.retry_dead_letters()``). Delivery is at
least once: a receiver de-duplicates on ``Qualification.id``.

Give each sink a stable ``name=`` when you register it: the default name is the
class's (``pqlkit.sinks.SlackWebhook``), the same for two Slack sinks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ._events import Qualification
from .exceptions import SinkError, ValidationError

__all__ = [
    "ID_HEADER",
    "JsonlSink",
    "MAX_LINES",
    "SIGNATURE_HEADER",
    "SignedWebhook",
    "SinkError",
    "SlackWebhook",
    "TIMESTAMP_HEADER",
    "headline",
    "read_jsonl",
    "sign",
    "slack_message",
    "verify",
    "webhook_body",
]

ID_HEADER = "X-Pqlkit-Id"
"""The header holding the delivery id (``Qualification.id``): de-duplicate on it."""
TIMESTAMP_HEADER = "X-Pqlkit-Timestamp"
"""The header holding when the request was signed, in whole seconds since the epoch."""
SIGNATURE_HEADER = "X-Pqlkit-Signature"
"""The header holding ``v1=`` and the hex HMAC-SHA256 (see :func:`sign`)."""

_VERSION = "v1"
_DEFAULT_TIMEOUT = 5.0


# -- HTTP ------------------------------------------------------------------------------------


def _check_url(url: object) -> str:
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        shown = type(url).__name__ if not isinstance(url, str) else "a URL of another scheme"
        raise ValidationError("url", f"must be an http:// or https:// URL, got {shown}")
    return url


def _check_timeout(timeout: object) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout < float("inf")
    ):
        raise ValidationError("timeout", f"must be a number of seconds > 0, got {timeout!r}")
    return float(timeout)


def _post(url: str, body: bytes, headers: Mapping[str, str], timeout: float, who: str) -> None:
    """POST ``body``; return on 2xx, raise SinkError otherwise (OSError on network trouble)."""
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        raise SinkError(f"{who} answered {error.code}", status=error.code) from None
    if not 200 <= status < 300:
        raise SinkError(f"{who} answered {status}", status=status)


# -- Slack -----------------------------------------------------------------------------------

MAX_LINES = 40
"""Explanation lines a Slack message shows at most (a Slack section holds 3,000 characters)."""


def headline(q: Qualification) -> str:
    """One line: who qualified, as what, under which model.

    Example:
        >>> from datetime import datetime, timezone
        >>> at = datetime(2026, 1, 5, tzinfo=timezone.utc)
        >>> headline(Qualification("q1", "pql", "jane", "acme", "data-tooling", "f", at))
        'jane (acme) is a product-qualified lead (data-tooling)'
        >>> headline(Qualification("q2", "play", "acme", "acme", "data-tooling", "f", at,
        ...                        play="ae_handoff"))
        "acme fired the play 'ae_handoff' (data-tooling)"
    """
    if q.disqualified_at is not None:
        what = "no longer qualifies"
    elif q.kind == "play" and q.play is not None:
        what = f"fired the play {q.play!r}" + (" (held out)" if q.holdout else "")
    else:
        what = {
            "pql": "is a product-qualified lead",
            "pqa": "is a product-qualified account",
        }.get(q.kind, f"qualified ({q.kind})")
    if q.kind == "pqa" or q.account_id is None or q.account_id == q.subject_id:
        who = q.subject_id
    else:
        who = f"{q.subject_id} ({q.account_id})"
    return f"{who} {what} ({q.model})"


def slack_message(q: Qualification, *, blocks: bool = True) -> dict[str, Any]:
    """The JSON body :class:`SlackWebhook` posts for ``q``.

    ``text`` holds the headline and the explanation lines (what notifications
    and clients without blocks show); ``blocks`` lay out a header, the scores,
    the explanation and the qualification's id.
    """
    lines = list(q.explanation[:MAX_LINES])
    if len(q.explanation) > MAX_LINES:
        lines.append(f"... {len(q.explanation) - MAX_LINES} more")
    title = headline(q)
    message: dict[str, Any] = {"text": "\n".join([title, *lines])}
    if blocks:
        scores = ", ".join(f"{name} {value:g}" for name, value in q.scores.items())
        message["blocks"] = [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Scores:* {scores or '-'}"}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "```" + "\n".join(lines)[:2900] + "```"},
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"qualified at {q.qualified_at:%Y-%m-%d %H:%M} UTC, id {q.id}",
                    }
                ],
            },
        ]
    return message


class SlackWebhook:
    """A callback posting each qualification to a Slack incoming webhook.

    Slack answers 2xx when it took the message; anything else raises
    :class:`~pqlkit.SinkError` (a timeout or a refused connection an
    ``OSError``), so pqlkit's outbox retries the delivery with backoff. Slack
    does not de-duplicate: a retry after a lost answer can post twice, which at
    least once delivery allows.

    Args:
        url: The webhook URL Slack gave you (a secret: it never shows in a repr).
        blocks: Send Block Kit ``blocks`` as well as ``text``.
        timeout: Seconds to wait for Slack before the attempt fails.

    Raises:
        ValidationError: ``url`` is not an http(s) URL, or ``timeout`` is not > 0.

    Example:
        >>> import pqlkit
        >>> from pqlkit.sinks import SlackWebhook
        >>> with pqlkit.Client(pqlkit.Model("doc"), store="memory://") as client:
        ...     _ = client.on_pql(SlackWebhook("https://hooks.slack.com/services/T/B/x"),
        ...                       name="slack")
    """

    def __init__(self, url: str, *, blocks: bool = True, timeout: float = _DEFAULT_TIMEOUT) -> None:
        self.url = _check_url(url)
        self.blocks = bool(blocks)
        self.timeout = _check_timeout(timeout)

    def __repr__(self) -> str:
        return f"SlackWebhook(blocks={self.blocks}, timeout={self.timeout})"

    def __call__(self, q: Qualification, /) -> None:
        """Post ``q``; raise unless Slack answers 2xx."""
        body = json.dumps(slack_message(q, blocks=self.blocks)).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "pqlkit-slack"}
        _post(self.url, body, headers, self.timeout, "Slack")


# -- the signed webhook ----------------------------------------------------------------------


def webhook_body(q: Qualification) -> bytes:
    """The exact bytes :class:`SignedWebhook` posts: ``q.to_dict()`` as compact JSON, keys
    sorted (the same on every retry). A receiver reads it back with
    ``Qualification.from_dict(json.loads(body))``."""
    return json.dumps(q.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(body: bytes, secret: str | bytes, *, timestamp: int, delivery_id: str) -> str:
    """The signature header's value: ``v1=`` and the hex HMAC-SHA256, under ``secret``, of

    ``b"v1\\n" + str(timestamp) + b"\\n" + delivery_id + b"\\n" + body``

    (each part UTF-8; a header cannot hold a newline, so the parts cannot be
    shifted into one another). Covering the timestamp and the id, not only the
    body, lets a receiver refuse an old request replayed.

    Example:
        >>> sign(b"{}", "s3cr3t", timestamp=1767603600, delivery_id="q1")[:10]
        'v1=f7eff6b'
    """
    signed = f"{_VERSION}\n{timestamp}\n{delivery_id}\n".encode() + body
    return f"{_VERSION}=" + hmac.new(_key(secret), signed, hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted:
            return value
    return None


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secret: str | bytes,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """For the receiver: did pqlkit sign this request with ``secret``, recently?

    True only when :data:`SIGNATURE_HEADER` is the signature of ``body``,
    :data:`TIMESTAMP_HEADER` and :data:`ID_HEADER` (compared in constant time),
    and the timestamp is within ``tolerance`` seconds of ``now`` (default: the
    time now), so a request captured and replayed later is refused. A missing,
    malformed or non-ASCII header is a plain False, never an error. Within the
    tolerance, de-duplicate on the id: every delivery of one qualification has it.

    Args:
        body: The request's raw body bytes (before any JSON parsing).
        headers: The request's headers (any mapping; names are matched
            case-insensitively): ``request.headers`` in Flask, Django, Starlette.
        secret: The shared secret.
        tolerance: How old (or how far ahead, for clock skew) a timestamp may be.
        now: Seconds since the epoch to check against (for tests).

    Example:
        >>> headers = {"X-Pqlkit-Id": "q1", "X-Pqlkit-Timestamp": "1767603600"}
        >>> headers["X-Pqlkit-Signature"] = sign(b"{}", "k", timestamp=1767603600, delivery_id="q1")
        >>> verify(b"{}", headers, "k", now=1767603660), verify(b"{}", headers, "k")
        (True, False)
    """
    signature = _header(headers, SIGNATURE_HEADER)
    stamp = _header(headers, TIMESTAMP_HEADER)
    delivery_id = _header(headers, ID_HEADER)
    if not isinstance(signature, str) or not isinstance(stamp, str):
        return False
    if not isinstance(delivery_id, str) or not signature.isascii() or not stamp.isascii():
        return False
    if not stamp.isdigit() or len(stamp) > 12:
        return False
    at = int(stamp)
    current = time.time() if now is None else now
    if abs(current - at) > tolerance:
        return False
    expected = sign(body, secret, timestamp=at, delivery_id=delivery_id)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


class SignedWebhook:
    """A callback posting each qualification as signed JSON to ``url``.

    The body is :func:`webhook_body` (``q.to_dict()`` as JSON); the headers carry
    :data:`ID_HEADER` (``Qualification.id``), :data:`TIMESTAMP_HEADER` (when this
    attempt was signed) and :data:`SIGNATURE_HEADER` (:func:`sign`). Each attempt
    is signed anew, so a retry an hour later still passes :func:`verify`.

    A non-2xx answer raises :class:`~pqlkit.SinkError`, a timeout or a refused
    connection an ``OSError``: pqlkit's outbox retries the delivery with backoff,
    then dead-letters it.

    Args:
        url: Where to POST.
        secret: The shared HMAC key (never shows in a repr).
        timeout: Seconds to wait for the receiver before the attempt fails.
        headers: Extra headers (an ``Authorization``, say).

    Raises:
        ValidationError: A bad ``url``, an empty ``secret`` or a ``timeout`` not > 0.
    """

    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes,
        timeout: float = _DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = _check_url(url)
        if not isinstance(secret, (str, bytes)) or not secret:
            raise ValidationError("secret", "must be a non-empty str or bytes")
        self._secret = secret
        self.timeout = _check_timeout(timeout)
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"SignedWebhook({self.url!r}, timeout={self.timeout})"

    def __call__(self, q: Qualification, /) -> None:
        """Deliver ``q``; raise unless the receiver answers 2xx."""
        body = webhook_body(q)
        stamp = int(time.time())
        headers = {
            **self.headers,
            "Content-Type": "application/json",
            "User-Agent": "pqlkit-webhook",
            ID_HEADER: q.id,
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign(body, self._secret, timestamp=stamp, delivery_id=q.id),
        }
        _post(self.url, body, headers, self.timeout, self.url)


# -- JSON Lines --------------------------------------------------------------------------------

if sys.platform == "win32":  # pragma: no cover - no flock: one process per file

    def _lock_file(f: IO[bytes]) -> None:
        pass

    def _unlock_file(f: IO[bytes]) -> None:
        pass

else:
    import fcntl

    def _lock_file(f: IO[bytes]) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)

    def _unlock_file(f: IO[bytes]) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _record(q: Qualification) -> dict[str, Any]:
    data = q.to_dict()
    data["type"] = "disqualified" if q.disqualified_at is not None else q.kind
    return data


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of a :class:`JsonlSink` file, in order, skipping a line torn by a crash."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value


class JsonlSink:
    """A callback appending each qualification, once per id, to a JSON Lines file.

    Each line is ``q.to_dict()`` as JSON (datetimes in ISO 8601) plus ``type``
    (``pql``, ``pqa`` or ``disqualified``; a disqualification has an id of its
    own). pqlkit delivers at least once, so the sink remembers the ids already in
    the file and skips a redelivery, even after a restart. Several processes may
    share one file: on POSIX an exclusive ``flock`` serialises the appends, and
    each process reads what the others added before it writes. A line torn by a
    crash is ended and skipped; its qualification, not acknowledged, comes again.
    A file truncated after a sync starts over. Each append is ``fsync``-ed before
    the callback returns; an error writing (a full disk) raises, and the outbox
    retries.

    Args:
        path: The file (created, with its folder, if missing).

    Example:
        >>> import pqlkit, tempfile, os
        >>> from pqlkit.sinks import JsonlSink, read_jsonl
        >>> path = os.path.join(tempfile.mkdtemp(), "pql.jsonl")
        >>> with pqlkit.Client(pqlkit.Model("doc", pql=pqlkit.did("x")), store="memory://") as c:
        ...     _ = c.on_pql(JsonlSink(path), name="crm-file")
        ...     _ = c.track("u1", "x")
        >>> for record in read_jsonl(path):
        ...     print(record["type"], record["subject_id"])
        pql u1
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ValidationError("path", f"must be a file path, got {path!r}")
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._offset = 0  # how far this sink has read the file

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path)!r})"

    def __call__(self, q: Qualification, /) -> None:
        """Append ``q`` unless a line with its id is in the file already."""
        line = json.dumps(_record(q), sort_keys=True, allow_nan=False) + "\n"
        with self._lock, self._locked_file() as f:
            self._catch_up(f)
            if q.id in self._seen:
                return
            f.seek(0, os.SEEK_END)
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())
            self._offset = f.tell()
            self._seen.add(q.id)

    @contextmanager
    def _locked_file(self) -> Iterator[IO[bytes]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            _lock_file(f)
            try:
                yield f
            finally:
                _unlock_file(f)

    def _catch_up(self, f: IO[bytes]) -> None:
        """Read the ids appended since the last call (by this sink or another process)."""
        size = f.seek(0, os.SEEK_END)
        if size < self._offset:  # the file was replaced or truncated: start over
            self._offset, self._seen = 0, set()
        f.seek(self._offset)
        for raw in f.read().splitlines(keepends=True):
            if not raw.endswith(b"\n"):  # torn by a crash: end it so the next line stands alone
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
                break
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict) and isinstance(value.get("id"), str):
                self._seen.add(value["id"])
        self._offset = f.seek(0, os.SEEK_END)
