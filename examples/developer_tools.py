"""Developer tools: a PQL made 100+ API calls, has a production integration and generated docs.

Run it: ``python examples/developer_tools.py``.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pqlkit
from pqlkit import Model, count, did, minutes, signal
from pqlkit.testing import FrozenClock

model = Model(
    "developer-tools",
    signals={
        "api_usage": count("api_called") >= 100,
        "production": did("integration_created", where={"environment": "production"}),
        "docs": did("docs_generated"),
    },
    pql=signal("api_usage") & signal("production") & signal("docs"),
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def main() -> None:
    """A developer ships to production, generates docs, then crosses 100 API calls."""
    clock = FrozenClock(T0)
    with pqlkit.Client(model, store=pqlkit.MemoryStore(), clock=clock) as client:
        client.on_pql(lambda q: print(f"  -> PQL: {q.subject_id}"))
        print("dev creates a staging integration, then a production one, and generates docs")
        client.track("dev", "integration_created", {"environment": "staging"})
        client.track("dev", "integration_created", {"environment": "production"})
        client.track("dev", "docs_generated")
        calls = [
            {"user_id": "dev", "event": "api_called", "timestamp": T0 + minutes(i + 1)}
            for i in range(99)
        ]
        client.track_many(calls)  # the bulk path: same semantics as 99 track() calls
        print("dev made 99 API calls:")
        for line in client.explain("dev"):
            print(f"  {line}")
        clock.set(T0 + minutes(100))
        print("dev makes the 100th API call")
        client.track("dev", "api_called")


if __name__ == "__main__":
    main()
