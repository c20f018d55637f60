"""Post each qualification to Slack through an incoming webhook, standard library only.

The message's ``text`` holds the headline and the explanation lines (it is what
notifications and clients without blocks show); ``blocks`` lay the same out with
a header, the scores and the explanation, and can be turned off.

Slack answers 200 ``ok``; anything else raises, so pqlkit keeps the delivery in
its outbox and retries it with backoff (see ``examples/webhook.py``). Slack does
not de-duplicate: a retry after a lost answer can post twice, which at least once
delivery allows.

Use it::

    client.on_pql(SlackWebhook(os.environ["SLACK_WEBHOOK_URL"]))
    client.on_pqa(SlackWebhook(os.environ["SLACK_WEBHOOK_URL"], blocks=False))

Run it: ``python examples/slack_webhook.py WEBHOOK_URL`` posts one sample message.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

import attrs

import pqlkit

MAX_LINES = 40
"""Explanation lines shown at most (a Slack section holds 3,000 characters)."""


class SlackError(Exception):
    """Slack did not answer 2xx; pqlkit will retry the delivery."""


def headline(q: pqlkit.Qualification) -> str:
    """One line: who qualified, as what, under which model."""
    if q.disqualified_at is not None:
        what = "no longer qualifies"
    elif q.kind == "pqa":
        what = "is a product-qualified account"
    else:
        what = "is a product-qualified lead"
    who = (
        q.subject_id
        if q.kind == "pqa" or q.account_id is None
        else f"{q.subject_id} ({q.account_id})"
    )
    return f"{who} {what} ({q.model})"


def slack_message(q: pqlkit.Qualification, *, blocks: bool = True) -> dict[str, Any]:
    """The JSON body of the incoming-webhook request."""
    lines = list(q.explanation[:MAX_LINES])
    if len(q.explanation) > MAX_LINES:
        lines.append(f"... {len(q.explanation) - MAX_LINES} more")
    text = "\n".join([headline(q), *lines])
    message: dict[str, Any] = {"text": text}
    if blocks:
        scores = ", ".join(f"{name} {value:g}" for name, value in q.scores.items())
        message["blocks"] = [
            {"type": "header", "text": {"type": "plain_text", "text": headline(q)[:150]}},
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


@attrs.define
class SlackWebhook:
    """A pqlkit callback posting to a Slack incoming webhook.

    Args:
        url: The webhook URL Slack gave you (keep it secret).
        blocks: Send Block Kit ``blocks`` as well as ``text``.
        timeout: Seconds to wait for Slack before the attempt fails.
    """

    url: str = attrs.field(repr=False)
    blocks: bool = True
    timeout: float = 5.0

    def __call__(self, q: pqlkit.Qualification) -> None:
        """Post ``q``; raise :class:`SlackError` (or an OSError) unless Slack answers 2xx."""
        request = urllib.request.Request(
            self.url,
            data=json.dumps(slack_message(q, blocks=self.blocks)).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "pqlkit-slack"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            error.close()
            raise SlackError(f"Slack answered {error.code}") from None
        if not 200 <= status < 300:
            raise SlackError(f"Slack answered {status}")


def sample() -> pqlkit.Qualification:
    """A qualification, fired by a small model on an in-memory store."""
    model = pqlkit.Model(
        "slack-demo",
        signals={"built": pqlkit.did("dashboard_built")},
        scores={"behavior": pqlkit.points(built=60)},
        pql=pqlkit.score("behavior") >= 50,
    )
    with pqlkit.Client(model, store="memory://") as client:
        return client.track("jane", "dashboard_built", account_id="acme").qualified[0]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/slack_webhook.py WEBHOOK_URL")
    SlackWebhook(sys.argv[1])(sample())
    print("posted")
