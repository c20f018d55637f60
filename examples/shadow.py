"""Shadow a candidate model on live traffic, then promote it.

The live model fires your callbacks; the candidate runs beside it on every event
(``Client(live, shadows=[candidate])``): its states are kept and its qualifications
recorded in the store under its own name, and nothing is delivered for it. After a
while, ``client.stats(model="candidate")`` tells how many users it would have
qualified, and how soon. Promoting it is building the client with the candidate as its
model: its states are current, so nothing is rebuilt and nothing fires twice. Before
that, ``pqlkit.backtest(..., store, recorded=True)`` reports what each recorded against
the conversions that followed, like a backtest.

The traffic here is a simulated history (``pqlkit.simulate``). Run it:
``python examples/shadow.py``.
"""

from __future__ import annotations

import pqlkit
from pqlkit import Model, Qualification, days, did, points, score, signal
from pqlkit.stores import MemoryStore

live = Model(
    "live",
    signals={"activated": did("warehouse_connected"), "projects": did("project_created")},
    scores={"behavior": points(activated=30, projects=30)},
    pql=score("behavior") >= 60,
)

candidate = Model(
    "candidate",
    signals={
        "dashboard": did("dashboard_built"),
        "invited": did("teammate_invited"),
        "pricing": did("page_viewed", where={"path": "/pricing"}, within=days(30)),
    },
    scores={"behavior": points(dashboard=30, invited=30, pricing=20)},
    pql=(score("behavior") >= 50) | (signal("invited") & signal("pricing")),
)


def describe(name: str, stats: pqlkit.Stats) -> str:
    wait = stats.time_to_pql_median
    median = f"{wait.total_seconds() / 86_400:.1f} days" if wait is not None else "-"
    return (
        f"{name:>9}: {stats.pqls:4} PQLs of {stats.users} users ({stats.pql_rate:.1%}),"
        f" median time to PQL {median}"
    )


def main() -> None:
    sim = pqlkit.simulate(seed=3, users=1_000, accounts=100, days=60)
    store = MemoryStore()  # in production: your store URL
    heard: list[Qualification] = []
    with pqlkit.Client(live, store, shadows=[candidate]) as client:
        client.on("pql", heard.append)  # the live model's callbacks; the candidate has none
        sim.load(client)
        client.flush()
        print(describe("live", client.stats()))
        print(describe("candidate", client.stats(model="candidate")))
    print(f"callbacks ran {len(heard)} times, all for {sorted({q.model for q in heard})}")

    # the shadowing reported like a backtest: what the store recorded against conversions
    report = pqlkit.backtest(
        {"live": live, "candidate": candidate},
        store,
        outcome="subscription_started",
        recorded=True,
    )
    for name in ("live", "candidate"):
        rule = report[name].pql
        if rule is not None and rule.precision is not None and rule.lift is not None:
            print(f"{name:>9}: precision {rule.precision:.1%}, lift {rule.lift:.2f} (as recorded)")

    # promote: the candidate becomes the model; its states and records are already there
    with pqlkit.Client(candidate, store) as promoted:
        print(f"promoted: {len(promoted.pending())} deliveries pending (nothing was rebuilt)")
    store.close()


if __name__ == "__main__":
    main()
