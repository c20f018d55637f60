"""Route qualifications to Slack with :class:`pqlkit.sinks.SlackWebhook`.

The sink posts a headline and the explanation lines (and Block Kit ``blocks``);
anything but a 2xx answer raises, so pqlkit's outbox retries it with backoff.

Run it: ``python examples/slack_webhook.py WEBHOOK_URL`` makes a user qualify
and posts the message to your channel.
"""

from __future__ import annotations

import sys

import pqlkit
from pqlkit import Model, did, points, score
from pqlkit.sinks import SlackWebhook

model = Model(
    "slack-demo",
    signals={"built": did("dashboard_built"), "invited": did("teammate_invited")},
    scores={"behavior": points(built=30, invited=20)},
    pql=score("behavior") >= 50,
)


def main(url: str) -> list[pqlkit.Qualification]:
    """Jane qualifies; the PQL goes to Slack (or stays pending if Slack refuses it)."""
    with pqlkit.Client(model, store="memory://", dispatch="inline") as client:
        client.on_pql(SlackWebhook(url, timeout=5.0), name="slack")
        client.track("jane", "dashboard_built", account_id="acme")
        client.track("jane", "teammate_invited", {"email": "raj@acme.io"}, account_id="acme")
        return client.pending()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/slack_webhook.py WEBHOOK_URL")
    left = main(sys.argv[1])
    print("posted" if not left else f"Slack refused it: {len(left)} pending")
