"""pqlkit in a Flask app, with the extension the package ships (``pqlkit.integrations.flask``).

``PqlKit`` builds one :class:`pqlkit.Client` per app from its config
(``PQLKIT_STORE``, ``PQLKIT_SETTINGS``), flushes due deliveries as each app
context ends, turns a :class:`pqlkit.ValidationError` into a 400, and adds
``flask pqlkit sweep`` to the app's command line. Install it with
``pip install 'pqlkit[flask]'``.

Run it: ``flask --app examples/flask_app.py run`` then
``curl -XPOST localhost:5000/events -H 'content-type: application/json'
-d '{"user_id": "jane", "event": "dashboard_built", "account_id": "acme"}'``;
``flask --app examples/flask_app.py pqlkit sweep`` from cron.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, request

import pqlkit
from pqlkit import Model, count, did, points, score
from pqlkit.integrations.flask import PqlKit

logger = logging.getLogger(__name__)

model = Model(
    "flask-demo",
    signals={
        "activated": did("warehouse_connected") & did("dashboard_built"),
        "invited": count("teammate_invited") >= 1,
    },
    scores={"behavior": points(activated=30, invited=20)},
    pql=score("behavior") >= 50,
)

pql = PqlKit(model=model)


@pql.on_pql(name="log")
def log_pql(q: pqlkit.Qualification) -> None:
    """Where a team would post to Slack or its CRM (``pqlkit.sinks``)."""
    logger.info("PQL %s (%s): %s", q.subject_id, q.account_id, "; ".join(q.explanation))


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The application factory: config first, then ``pql.init_app(app)``."""
    app = Flask(__name__)
    app.config["PQLKIT_STORE"] = "sqlite:///pqlkit.db"
    app.config.update(config or {})
    pql.init_app(app)

    @app.post("/events")
    def track_event() -> dict[str, Any]:
        body = request.get_json(force=True)
        result = pql.track(
            body.get("user_id"),
            body.get("event"),
            body.get("properties"),
            account_id=body.get("account_id"),
            message_id=body.get("message_id"),
        )
        return {
            "scores": result.scores,
            "qualified": [q.kind for q in result.qualified],
            "duplicate": result.duplicate,
        }

    @app.get("/users/<user_id>/explain")
    def explain(user_id: str) -> dict[str, Any]:
        return {"user_id": user_id, "explanation": pql.client.explain(user_id)}

    @app.get("/qualifications")
    def qualifications() -> dict[str, Any]:
        """Who qualified, newest first; ``?before=<id>`` for the next page."""
        page = pql.client.qualifications(before=request.args.get("before"), limit=20)
        return {
            "qualifications": [q.to_dict() for q in page],
            "next": page[-1].id if len(page) == 20 else None,
        }

    return app


if __name__ == "__main__":
    create_app().run()
