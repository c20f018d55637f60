"""Plays: route qualified users and accounts by motion.

A self-serve user near their row limit gets an in-app upgrade nudge (declared on the play:
no callback needed), with 10% held out to measure what the nudge is worth; an account with
three active users at a big company is handed to an account executive by a callback. Two
clients on one SQLite file stand for two worker processes of a web app.

Run it: ``python examples/plays.py [path.db]``.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import pqlkit
from pqlkit import Model, active_users, days, did, last, play, signal, trait
from pqlkit.testing import START, FrozenClock

# --8<-- [start:model]
model = Model(
    "plays-example",
    signals={
        "near_row_limit": last("usage_reported", "rows") >= trait("row_limit") * 0.8,
        "big_company": trait("employees", of="account") >= 200,
        "upgraded": did("plan_upgraded"),
    },
    plays={
        # self-serve: a nudge in the product, re-checked each time the page asks for it
        "upgrade_nudge": play(
            signal("near_row_limit") & ~signal("big_company") & ~signal("upgraded"),
            nudge={"title": "You're close to your row limit", "cta": "/billing"},
            until=days(7),
            holdout=0.1,  # a stable 10% get nothing: the comparison group
        ),
        # sales-assisted: a big account with three active users goes to a named AE
        "ae_handoff": play(
            (active_users(within=days(14)) >= 3) & signal("big_company"), of="account"
        ),
    },
)
# --8<-- [end:model]


# --8<-- [start:handoff]
def hand_to_ae(q: pqlkit.Qualification) -> None:
    """The AE hand-off: create the CRM task (here: print it). Delivered at least once:
    de-duplicate on ``q.id`` in the CRM."""
    print(f"AE task for {q.subject_id}: {', '.join(q.signals)} (id {q.id[:8]})")


# --8<-- [end:handoff]


def main(path: str) -> None:
    clock = FrozenClock(START)
    store = f"sqlite:///{path}"
    with (
        pqlkit.Client(model, store=store, clock=clock, dispatch="inline") as web,
        pqlkit.Client(model, store=store, clock=clock, dispatch="inline") as worker,
    ):
        worker.on_play("ae_handoff", hand_to_ae, name="crm")

        # a solo user of a small company nears the row limit: the play opens the nudge
        web.group("tiny", {"employees": 4})
        web.identify("ada", {"row_limit": 1_000_000}, account_id="tiny")
        fired = web.track("ada", "usage_reported", {"rows": 850_000}, account_id="tiny")
        print("fired:", [(q.play, q.subject_id, q.holdout) for q in fired.qualified])
        print("ada's inbox:", [n.payload["title"] for n in worker.nudges("ada") if n.payload])
        web.track("ada", "plan_upgraded", account_id="tiny")
        print("after upgrading:", worker.nudges("ada"))  # the play no longer holds

        # three users of a big account: the worker process's callback hands it over
        web.group("bigco", {"employees": 5_000})
        for user in ("bo", "cy", "di"):
            web.track(user, "dashboard_viewed", account_id="bigco")
            clock.advance(timedelta(minutes=5))
        worker.flush()

        # 200 more small-company users near their limit: about 10% are held out
        for i in range(200):
            web.identify(f"user-{i}", {"row_limit": 100}, account_id="tiny")
            web.track(f"user-{i}", "usage_reported", {"rows": 90}, account_id="tiny")
        stats = web.stats()
        print("upgrade_nudge fired:", stats.plays["upgrade_nudge"])
        print("held out:", stats.plays_held_out["upgrade_nudge"])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(str(Path(tmp) / "plays.db"))
