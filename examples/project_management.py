"""Project management: a trial user is a PQL after 3+ projects, 2+ invites and 5+ active days.

All three must happen inside the 14-day trial, which starts at the user's first event
(``since_first_seen=days(14)`` counts events in ``[first seen, first seen + 14 days)``).
Work done after the trial never counts, and what was done inside it stays counted.

Run it: ``python examples/project_management.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pqlkit
from pqlkit import Model, active_days, count, days, signal
from pqlkit.testing import FrozenClock

TRIAL = days(14)

model = Model(
    "project-management",
    signals={
        "projects": count("project_created", since_first_seen=TRIAL) >= 3,
        "invites": count("teammate_invited", since_first_seen=TRIAL) >= 2,
        "habit": active_days(since_first_seen=TRIAL) >= 5,  # distinct UTC calendar days
    },
    pql=signal("projects") & signal("invites") & signal("habit"),
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

# (day, event) for two trial users: pat finishes inside the trial, kim a day too late.
PAT = [(0, "signed_up"), (0, "project_created"), (1, "project_created"), (2, "teammate_invited"),
       (3, "project_created"), (6, "teammate_invited")]  # fmt: skip
KIM = [(0, "signed_up"), (0, "project_created"), (1, "project_created"), (2, "teammate_invited"),
       (3, "teammate_invited"), (6, "login"), (14, "project_created")]  # fmt: skip


def main() -> None:
    """Two trial users; print the day pat qualifies and why kim does not."""
    clock = FrozenClock(T0)
    with pqlkit.Client(model, store=pqlkit.MemoryStore(), clock=clock) as client:
        client.on_pql(lambda q: print(f"  -> PQL: {q.subject_id} on {q.qualified_at:%Y-%m-%d}"))
        for user, journey in (("pat", PAT), ("kim", KIM)):
            for day, event in journey:
                clock.set(T0 + timedelta(days=day))
                print(f"day {day:2}: {user} {event}")
                client.track(user, event)
        print("kim's third project came on day 14, after the trial ([day 0, day 14)):")
        for line in client.explain("kim"):
            print(f"  {line}")


if __name__ == "__main__":
    main()
