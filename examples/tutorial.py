"""The tutorial's script (docs/tutorial.md): declare a model, track events, react.

Run it from any folder: ``python tutorial.py``. It keeps its data in ``tutorial.db``
(SQLite) in the working directory, so a second run fires nothing: Ada already
qualified, and a subject fires once.
"""

from __future__ import annotations

import pqlkit
from pqlkit import Model, count, days, did, points, score

# --8<-- [start:model]
model = Model(
    "tutorial",
    signals={
        "activated": did("project_created") & did("task_completed"),
        "collaborating": count("teammate_invited") >= 2,
        "pricing_curious": did("page_viewed", where={"path": "/pricing"}, within=days(30)),
    },
    scores={"behavior": points(activated=40, collaborating=30, pricing_curious=20)},
    pql=score("behavior") >= 70,
)
# --8<-- [end:model]


def main() -> None:
    """Ada activates and invites two teammates: a PQL. Bo only looks at the pricing page."""
    # --8<-- [start:client]
    client = pqlkit.Client(model, store="sqlite:///tutorial.db")

    @client.on_pql
    def alert_sales(q: pqlkit.Qualification) -> None:
        print(f"PQL: {q.subject_id} at {q.account_id}, scores {q.scores}")
        for line in q.explanation:
            print("    " + line)

    # --8<-- [end:client]
    # --8<-- [start:track]
    client.track("ada", "project_created", account_id="initech")
    client.track("ada", "task_completed", account_id="initech")
    client.track("ada", "teammate_invited", {"email": "bo@initech.com"}, account_id="initech")
    client.track("ada", "teammate_invited", {"email": "cy@initech.com"}, account_id="initech")
    # --8<-- [end:track]
    # --8<-- [start:explain]
    client.track("bo", "page_viewed", {"path": "/pricing"}, account_id="initech")
    print("bo:", client.scores("bo"))
    for line in client.explain("bo"):
        print("    " + line)
    client.close()
    # --8<-- [end:explain]


if __name__ == "__main__":
    main()
