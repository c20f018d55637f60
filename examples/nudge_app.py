"""Nudges in a Flask app, end to end: the page shows a nudge when the user qualifies.

A user who exports three reports qualifies; the ``on_pql`` callback opens an upgrade nudge in
their inbox (in the store, shared by every worker process); the next page they load, on any
worker, carries it in its first render (``{{ pqlkit_nudges() }}``), the package's script shows
it and posts ``seen``, and its buttons post ``clicked`` or ``dismissed``: a closed nudge is not
shown again.

Run two workers on one SQLite file (what tests/test_web.py does in a real Chromium)::

    PQLKIT_STORE=sqlite:///nudges.db python examples/nudge_app.py --port 5001 &
    PQLKIT_STORE=sqlite:///nudges.db python examples/nudge_app.py --port 5002 &

then open http://127.0.0.1:5001/login/ada, POST ``/track`` three times
(``curl -XPOST -b 'session=...' localhost:5001/track -d '{"event": "report_exported"}'``)
and load http://127.0.0.1:5002/.

Signing in is a stand-in (``/login/<user>`` puts the id in Flask's signed session cookie): the
nudge routes read the user from that session through ``current_user``, never from the URL.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from flask import Flask, Request, abort, render_template, request, session
from markupsafe import escape

import pqlkit
from pqlkit import Model, count
from pqlkit.integrations.flask import PqlKit

model = Model(
    "nudge-app",
    signals={"exports_a_lot": count("report_exported") >= 3},
    pql=pqlkit.signal("exports_a_lot"),
)

pql = PqlKit(model=model)


# --8<-- [start:open]
@pql.on_pql(name="open_upgrade_nudge")
def open_upgrade_nudge(q: pqlkit.Qualification) -> None:
    """Put an upgrade nudge in the user's inbox (idempotent: a redelivery opens nothing)."""
    pql.client.nudge(
        q.subject_id,
        "upgrade",
        {"title": "Exporting a lot?", "body": "Pro exports on a schedule.", "cta": "See Pro"},
        until=pqlkit.days(7),
    )


# --8<-- [end:open]


# --8<-- [start:user]
def current_user(req: Request) -> str | None:
    """The signed-in user, from the app's own session: never from the URL or the body."""
    user = session.get("user_id")
    return user if isinstance(user, str) else None


# --8<-- [end:user]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """One worker's app; every worker uses the same store and secret key."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "only-for-the-example")
    app.config["PQLKIT_STORE"] = os.environ.get("PQLKIT_STORE", "sqlite:///nudges.db")
    # inline: the callback opens the nudge before /track answers, so the next page has it
    app.config["PQLKIT_SETTINGS"] = {"dispatch": "inline"}
    app.config.update(config or {})
    pql.init_app(app)
    # --8<-- [start:register]
    app.register_blueprint(pql.nudges_blueprint(current_user))  # /pqlkit/nudges...
    # --8<-- [end:register]

    @app.get("/login/<user_id>")
    def login(user_id: str) -> str:
        session["user_id"] = user_id  # a stand-in for your real sign-in
        return (
            f'<!doctype html><link rel="icon" href="data:,"><p>signed in as {escape(user_id)}</p>'
        )

    @app.post("/track")
    def track() -> dict[str, Any]:
        user_id = current_user(request)
        if user_id is None:
            abort(401)
        body = request.get_json(force=True)
        result = pql.track(user_id, body.get("event"), body.get("properties"))
        return {"qualified": [q.kind for q in result.qualified]}

    @app.get("/")
    def home() -> str:
        return render_template("nudge_home.html", worker=os.getpid())

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    create_app().run(host="127.0.0.1", port=args.port, threaded=True)
