"""TEV: Time-to-value, Engagement and Virality, each 0..1, averaged into a 0..100 score.

* Time: 1 when the user activated within ``fast`` (2 days) of first seen, 0 at ``slow``
  (14 days) or never, linear in between: activation on day 8 gives
  (14 - 8) / (14 - 2) = 0.5.
* Engagement: active days in the last 14 days / 7, capped at 1.
* Virality: distinct invited emails / 3, capped at 1.

TEV = 100 x (Time + Engagement + Virality) / 3. Activated within 2 days, active 7 of 14
days and 3 invites: 100 x (1 + 1 + 1) / 3 = 100. The PQL threshold here is 50.

Run it: ``python examples/tev_score.py``.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pqlkit
from pqlkit import Model, active_days, days, did, distinct, score, tev
from pqlkit.testing import FrozenClock

model = Model(
    "tev",
    signals={"activated": did("dashboard_built")},
    scores={
        "tev": tev(
            activation="activated",
            fast=days(2),
            slow=days(14),
            engagement=active_days(within=days(14)),
            engagement_target=7,
            virality=distinct("teammate_invited", "email"),
            virality_target=3,
        ),
    },
    pql=score("tev") >= 50,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def main() -> None:
    """A slow starter: active on days 0-5, activates on day 8; then invites three people."""
    clock = FrozenClock(T0)
    with pqlkit.Client(model, store=pqlkit.MemoryStore(), clock=clock) as client:
        client.on_pql(lambda q: print(f"  -> PQL: {q.subject_id}, tev {q.scores['tev']:g}"))
        for day in range(6):
            clock.set(T0 + days(day))
            client.track("liz", "login")
        print(f"days 0-5, no activation: tev {client.scores('liz')['tev']:.2f}")
        print("  = 100 x (0 + 6/7 + 0/3) / 3 = 28.57")
        clock.set(T0 + days(8))
        client.track("liz", "dashboard_built")
        print(f"day 8, activated: tev {client.scores('liz')['tev']:g}")
        print("  = 100 x ((14 - 8) / (14 - 2) + 7/7 + 0/3) / 3 = 100 x 1.5 / 3 = 50")
        for name in ("mo", "ned", "ola"):
            client.track("liz", "teammate_invited", {"email": f"{name}@example.com"})
            print(f"invited {name}: tev {client.scores('liz')['tev']:.2f}")
        print("  = 100 x (0.5 + 1 + 3/3) / 3 = 83.33")
        for line in client.explain("liz"):
            print(f"  {line}")


if __name__ == "__main__":
    main()
