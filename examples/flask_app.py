"""pqlkit in a Flask app: an ``init_app``-style extension, ``track()`` in a view.

The extension builds one :class:`pqlkit.Client` per app from the app's config,
keeps it in ``app.extensions["pqlkit"]``, and flushes due deliveries when each
app context ends (so retries of a failed callback are attempted as requests
come in). Callbacks registered on the extension apply to every app it serves.

Config keys (all optional):

* ``PQLKIT_STORE``: a store URL or a Store (default ``sqlite:///pqlkit.db``);
* ``PQLKIT_SETTINGS``: more keyword arguments for ``pqlkit.Client`` (``clock``,
  ``dispatch``, ``max_attempts``, ...);
* ``PQLKIT_FLUSH_ON_TEARDOWN``: flush when an app context ends (default True).

Run it: ``flask --app examples/flask_app.py run`` then
``curl -XPOST localhost:5000/events -H 'content-type: application/json'
-d '{"user_id": "jane", "event": "dashboard_built", "account_id": "acme"}'``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from flask import Flask, current_app, request

import pqlkit
from pqlkit import Model, count, did, points, score

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


class PqlKit:
    """A Flask extension holding one pqlkit Client per app.

    ``PqlKit(app)`` or ``pql = PqlKit(model=...)`` then ``pql.init_app(app)``.
    """

    def __init__(self, app: Flask | None = None, *, model: Model = model) -> None:
        self.model = model
        self._callbacks: list[tuple[Literal["pql", "pqa"], pqlkit.Callback]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Build the app's Client from its config and flush it at every app teardown."""
        app.config.setdefault("PQLKIT_STORE", "sqlite:///pqlkit.db")
        app.config.setdefault("PQLKIT_SETTINGS", {})
        app.config.setdefault("PQLKIT_FLUSH_ON_TEARDOWN", True)
        client = pqlkit.Client(
            self.model, store=app.config["PQLKIT_STORE"], **app.config["PQLKIT_SETTINGS"]
        )
        for kind, fn in self._callbacks:
            client.on(kind, fn)
        app.extensions["pqlkit"] = client
        # Flask has no shutdown hook: pqlkit's exit hook closes the client when the
        # process exits (flushing for up to flush_at_exit, 5 s), or call pql.close(app)

        @app.teardown_appcontext
        def flush_pqlkit(exc: BaseException | None) -> None:
            if app.config["PQLKIT_FLUSH_ON_TEARDOWN"]:
                client.flush()

        @app.errorhandler(pqlkit.ValidationError)
        def bad_event(error: pqlkit.ValidationError) -> tuple[dict[str, str], int]:
            return {"field": error.field, "reason": error.reason}, 400

    @property
    def client(self) -> pqlkit.Client:
        """The current app's Client (inside an app or request context)."""
        client: pqlkit.Client = current_app.extensions["pqlkit"]
        return client

    def close(self, app: Flask) -> None:
        """Close ``app``'s Client (delivering what is due)."""
        app.extensions["pqlkit"].close()

    def on_pql(self, fn: pqlkit.Callback) -> pqlkit.Callback:
        """Decorator: call ``fn`` when a user qualifies, in every app initialised after this."""
        self._callbacks.append(("pql", fn))
        return fn

    def on_pqa(self, fn: pqlkit.Callback) -> pqlkit.Callback:
        """Decorator: call ``fn`` when an account qualifies."""
        self._callbacks.append(("pqa", fn))
        return fn

    def track(
        self,
        user_id: str,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        account_id: str | None = None,
        timestamp: datetime | None = None,
        message_id: str | None = None,
    ) -> pqlkit.TrackResult:
        """``Client.track`` on the current app's Client."""
        return self.client.track(
            user_id,
            event,
            properties,
            account_id=account_id,
            timestamp=timestamp,
            message_id=message_id,
        )


pql = PqlKit()


@pql.on_pql
def log_pql(q: pqlkit.Qualification) -> None:
    """Where a team would post to Slack or its CRM (see slack_webhook.py and webhook.py)."""
    logger.info("PQL %s (%s): %s", q.subject_id, q.account_id, "; ".join(q.explanation))


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The application factory: config first, then ``pql.init_app(app)``."""
    app = Flask(__name__)
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

    return app


if __name__ == "__main__":
    create_app().run()
