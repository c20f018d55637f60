"""The nudge inbox end to end: a qualification opens a nudge, the next page shows it, a click
closes it, and the model reads what users did with their nudges.

Two clients on one SQLite file stand for two worker processes of a web app: the one that
records the user's qualifying action opens the nudge from its ``on_pql`` callback, the other
renders the next page. ``render_page`` and ``post_mark`` are what your framework's views
would do (docs/plays.md shows them in Flask and FastAPI).

Run it: ``python examples/nudges.py [path.db]``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pqlkit
from pqlkit import Model, count, days, last, signal, trait
from pqlkit.testing import START, FrozenClock

# --8<-- [start:model]
model = Model(
    "upgrade-nudges",
    signals={
        "near_row_limit": last("usage_reported", "rows") >= trait("row_limit") * 0.8,
        # the marks are events: a user who dismissed the upgrade nudge twice is left alone
        "tired_of_upgrade": count("nudge_dismissed", where={"key": "upgrade"}) >= 2,
    },
    pql=signal("near_row_limit") & ~signal("tired_of_upgrade"),
)
# --8<-- [end:model]


# --8<-- [start:open]
def open_upgrade_nudge(client: pqlkit.Client, q: pqlkit.Qualification) -> None:
    """on_pql: put an upgrade nudge in the user's inbox, for a week.

    Delivery is at least once; nudge() is idempotent per user and key while the nudge is
    open, so a redelivered qualification opens nothing twice.
    """
    client.nudge(
        q.subject_id,
        "upgrade",
        {"title": "You're close to your row limit", "cta": "/billing/upgrade"},
        until=days(7),
    )


# --8<-- [end:open]


# --8<-- [start:views]
def render_page(client: pqlkit.Client, user_id: str) -> str:
    """A page view: the user's open nudges go into the page (one store read), and each
    one shown is marked "seen"."""
    nudges = client.nudges(user_id)
    for nudge in nudges:
        client.mark(user_id, nudge.key, "seen")  # sets seen_at the first time only
    data = json.dumps([n.to_dict() for n in nudges])
    # JSON in a <script> element: escape what could end it early
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"<script>window.NUDGES = {data};</script>"


def post_mark(client: pqlkit.Client, user_id: str, body: dict[str, Any]) -> tuple[int, str]:
    """POST /nudges/mark {"key": ..., "action": "clicked" | "dismissed"}: 204, or 400."""
    try:
        client.mark(user_id, body.get("key"), body.get("action"))  # type: ignore[arg-type]
    except pqlkit.ValidationError as error:  # an unknown key or action: nothing stored
        return 400, f"{error.field}: {error.reason}"
    return 204, ""


# --8<-- [end:views]


def main(path: str) -> None:
    clock = FrozenClock(START)
    store = f"sqlite:///{path}"
    with (
        pqlkit.Client(model, store=store, clock=clock, dispatch="inline") as worker_a,
        pqlkit.Client(model, store=store, clock=clock, dispatch="inline") as worker_b,
    ):
        worker_a.on_pql(lambda q: open_upgrade_nudge(worker_a, q), name="open_upgrade_nudge")

        # worker A records the action that qualifies ada; its callback opens the nudge
        worker_a.identify("ada", {"row_limit": 1_000_000})
        worker_a.track("ada", "usage_reported", {"rows": 850_000})

        # worker B renders ada's next page: the nudge is there
        print("page 1:", render_page(worker_b, "ada"))
        clock.advance(timedelta(minutes=2))
        print("page 2:", render_page(worker_b, "ada"))  # still open, seen already
        print("click:", post_mark(worker_a, "ada", {"key": "upgrade", "action": "clicked"}))
        print("page 3:", render_page(worker_b, "ada"))  # closed: not shown again
        print("bad mark:", post_mark(worker_b, "ada", {"key": "tour", "action": "clicked"}))
        with worker_b.store.transaction() as tx:
            marks = [e.event for e in tx.events(user_ids=["ada"]) if e.event.startswith("nudge_")]
        print("events:", marks)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(str(Path(tmp) / "nudges.db"))
