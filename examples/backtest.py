"""Backtest a PQL model before it ships, and compare it with a candidate.

The history is simulated (``pqlkit.simulate``): a SaaS product whose conversions
are planted in three behaviours (building a dashboard, inviting a teammate,
visiting the pricing page). With your own data, pass a store URL
(``"sqlite:///pqlkit.db"``, read-only), a ``pqlkit export`` file, or a list of
events instead of ``sim``, and your conversion event, or a CRM export
(``"conversions.csv"`` with ``subject_id,converted_at``), as ``outcome``.

Run it: ``python examples/backtest.py`` (about ten seconds).
"""

from __future__ import annotations

import pqlkit
from pqlkit import Model, active_days, days, did, points, score, signal, trait

live = Model(
    "live",
    signals={
        "activated": did("warehouse_connected"),
        "projects": did("project_created"),
        "habit": active_days(within=days(7)) >= 2,
    },
    scores={"behavior": points(activated=30, projects=20, habit=20)},
    pql=score("behavior") >= 50,
)

candidate = Model(
    "candidate",
    signals={
        "dashboard": did("dashboard_built"),
        "invited": did("teammate_invited"),
        "pricing": did("page_viewed", where={"path": "/pricing"}, within=days(30)),
        "big_company": trait("employees", of="account") >= 200,
    },
    scores={"behavior": points(dashboard=30, invited=30, pricing=20)},
    pql=(score("behavior") >= 50) | (signal("invited") & signal("pricing")),
)


def main() -> None:
    """Simulate a year, backtest both models on it, print the report and the verdict."""
    sim = pqlkit.simulate(seed=42, users=5_000, accounts=500, days=365)
    report = pqlkit.backtest(
        {"live": live, "candidate": candidate},
        sim,
        outcome="subscription_started",
        horizon=days(30),
    )
    print(report)
    c = report.comparison("live", "candidate")
    low, high = c.precision_diff_ci or (0.0, 0.0)
    verdict = "better" if low > 0 else "worse" if high < 0 else "not distinguishable"
    print(
        f"\nThe candidate's precision is {verdict}: {c.precision_diff:+.1%}"
        f" (95% interval {low:+.1%} to {high:+.1%})."
    )


if __name__ == "__main__":
    main()
