"""The data-tooling freemium model from the PQL literature: recipe 1 of the cookbook.

The cookbook (docs/cookbook.md) shows it; docs/concepts.md describes each aggregate it
uses, docs/testing.md tests it (examples/test_data_tooling.py).

Behaviour points: activation (connected a warehouse AND built a dashboard) 30, invited a
second user 20, generated an API key 15, visited the pricing page 10, reached 80% of the
free row limit 10, dormant for 14 days -25. Fit: +20 at a company of 200+ people, -30 on
a free-mail domain. A user is a PQL at behaviour + fit >= 50 (and not dormant); an account
is a PQA when 3+ of its users were active within 14 days.

Run it: ``python examples/data_tooling.py``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pqlkit
from pqlkit import (
    Model,
    active_days,
    active_users,
    count,
    days,
    did,
    distinct,
    fit,
    hours,
    idle,
    last,
    points,
    score,
    sequence,
    signal,
    tev,
    time_to,
    trait,
)
from pqlkit.testing import FrozenClock

FREE_MAIL = frozenset(
    {
        "aol.com",
        "gmail.com",
        "gmx.de",
        "hotmail.com",
        "icloud.com",
        "outlook.com",
        "proton.me",
        "yahoo.com",
    }
)
"""Free-mail domains: a user signing up with one of them is probably not buying for a company."""

model = Model(
    "data-tooling",
    signals={
        "activated": did("warehouse_connected") & did("dashboard_built"),
        "invited": count("teammate_invited") >= 1,
        "api_key": did("api_key_generated"),
        "pricing_visit": did("page_viewed", where={"path": "/pricing"}, within=days(30)),
        "near_row_limit": last("usage_reported", "rows") >= trait("row_limit") * 0.8,
        "habit": active_days(within=days(7)) >= 5,
        "trial_projects": count("project_created", since_first_seen=days(14)) >= 3,
        "fast_start": sequence("contacts_imported", "email_sent", within=hours(48)),
        "fast_value": time_to("dashboard_built") <= days(2),
        "dormant": idle() >= days(14),
        "big_company": trait("employees", of="account") >= 200,
    },
    scores={
        "behavior": points(
            activated=30, invited=20, api_key=15, pricing_visit=10, near_row_limit=10, dormant=-25
        ),
        "tev": tev(
            activation="activated",
            fast=days(2),
            slow=days(14),
            engagement=active_days(within=days(14)),
            engagement_target=7,
            virality=distinct("teammate_invited", "email"),
            virality_target=3,
        ),
        "fit": fit(
            (trait("employees", of="account") >= 200, 20),
            (trait("email_domain").is_in(FREE_MAIL), -30),
        ),
    },
    pql=(score("behavior") + score("fit") >= 50) & ~signal("dormant"),
    pqa=active_users(within=days(14)) >= 3,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def main() -> None:
    """One user walks through the freemium funnel; print each step's score and the alert."""
    clock = FrozenClock(T0)
    with pqlkit.Client(model, store=pqlkit.MemoryStore(), clock=clock) as client:

        @client.on_pql
        def alert(q: pqlkit.Qualification) -> None:
            print(f"  -> PQL: {q.subject_id} qualified at {q.qualified_at:%Y-%m-%d %H:%M}")
            for line in q.explanation:
                if line.startswith(("behavior =", "fit =", "pql:")):
                    print(f"       {line}")

        client.identify("dana", {"email_domain": "example.org", "row_limit": 1_000_000})
        steps: list[tuple[str, dict[str, Any], str]] = [
            ("warehouse_connected", {"warehouse": "snowflake"}, "connects a warehouse"),
            ("dashboard_built", {}, "builds a dashboard (activated: +30)"),
            ("usage_reported", {"rows": 800_000}, "uses 800k of 1M free rows (80%: +10)"),
            ("teammate_invited", {"email": "lee@example.org"}, "invites a teammate (+20)"),
        ]
        for day, (event, props, words) in enumerate(steps):
            clock.set(T0 + days(day))
            print(f"day {day}: dana {words}")
            result = client.track("dana", event, props)
            print(f"  behavior = {result.scores['behavior']:g}, fit = {result.scores['fit']:g}")
        # The published version of this example says activation, invites and the row limit
        # "score 70"; they score 30 + 20 + 10 = 60.
        print(f"final behavior score: {client.scores('dana')['behavior']:g} (30 + 10 + 20 = 60)")


if __name__ == "__main__":
    main()
