"""A signed generic webhook: POST each Qualification as JSON, standard library only.

The body is the :class:`pqlkit.Qualification` as a JSON object (``q.to_dict()``:
datetimes in ISO 8601); a receiver in Python reads it back with
``pqlkit.Qualification.from_dict(json.loads(body))``. The header
``X-Pqlkit-Signature: sha256=<hex>`` is the HMAC-SHA256 of the exact body bytes
under a shared secret, so the receiver can check it came from you
(:func:`verify`). ``X-Pqlkit-Id`` repeats ``Qualification.id``: delivery is at
least once, and a receiver de-duplicates on it.

Retries are pqlkit's: a non-2xx answer, a timeout or a refused connection raises,
so pqlkit keeps the delivery in its outbox and tries again with exponential
backoff (1 s of the client's clock, doubling, up to ``max_attempts``), then
dead-letters it (``client.dead_letters()``, ``client.retry_dead_letters()``).
Every retry sends the same body and signature.

Use it::

    client.on_pql(SignedWebhook("https://hooks.example.com/pql", secret=os.environ["PQL_SECRET"]))

Run it: ``python examples/webhook.py URL SECRET`` posts one sample qualification.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.request

import attrs

import pqlkit

SIGNATURE_HEADER = "X-Pqlkit-Signature"
ID_HEADER = "X-Pqlkit-Id"


class WebhookError(Exception):
    """The receiver did not answer 2xx; pqlkit will retry the delivery."""


def body_of(q: pqlkit.Qualification) -> bytes:
    """The exact bytes posted: ``q.to_dict()`` (datetimes as ISO 8601 text) as compact JSON
    with sorted keys (the same on every retry). The receiver reads it back with
    ``pqlkit.Qualification.from_dict(json.loads(body))``."""
    data = q.to_dict()
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sign(body: bytes, secret: str | bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str | bytes, signature: str | None) -> bool:
    """For the receiver: is ``signature`` (the header) right for ``body``? Constant-time."""
    return signature is not None and hmac.compare_digest(sign(body, secret), signature)


@attrs.define
class SignedWebhook:
    """A pqlkit callback posting signed JSON to ``url``.

    Args:
        url: Where to POST.
        secret: The shared HMAC key.
        timeout: Seconds to wait for the receiver before the attempt fails.
        headers: Extra headers (an ``Authorization``, say).
    """

    url: str
    secret: str | bytes = attrs.field(repr=False)
    timeout: float = 5.0
    headers: dict[str, str] = attrs.field(factory=dict)

    def __call__(self, q: pqlkit.Qualification) -> None:
        """Deliver ``q``; raise :class:`WebhookError` (or an OSError) unless the answer is 2xx."""
        body = body_of(q)
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                **self.headers,
                "Content-Type": "application/json",
                "User-Agent": "pqlkit-webhook",
                ID_HEADER: q.id,
                SIGNATURE_HEADER: sign(body, self.secret),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            error.close()
            raise WebhookError(f"{self.url} answered {error.code}") from None
        if not 200 <= status < 300:
            raise WebhookError(f"{self.url} answered {status}")


def sample() -> pqlkit.Qualification:
    """A qualification, fired by a one-rule model on an in-memory store."""
    model = pqlkit.Model("webhook-demo", pql=pqlkit.did("dashboard_built"))
    with pqlkit.Client(model, store="memory://") as client:
        return client.track("jane", "dashboard_built", account_id="acme").qualified[0]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python examples/webhook.py URL SECRET")
    SignedWebhook(sys.argv[1], secret=sys.argv[2])(sample())
    print("delivered")
