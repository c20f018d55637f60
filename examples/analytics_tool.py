"""Analytics tool: a PQL connected a data source, created a dashboard and shared it.

Sharing counts when it names another user (``recipient``); a public link has none.
The steps are three ``did``s rather than a ``sequence``: the product already forces
the order (nothing to share before a dashboard exists), and a ``sequence`` would also
reject steps recorded with the same timestamp (it needs strictly increasing times).
The model cannot check that the shared dashboard is the one created: aggregates do
not join events on a property.

Run it: ``python examples/analytics_tool.py``.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pqlkit
from pqlkit import Model, all_of, did, distinct, hours, signal
from pqlkit.testing import FrozenClock

model = Model(
    "analytics-tool",
    signals={
        "connected": did("data_source_connected"),
        "dashboard": did("dashboard_created"),
        "shared": distinct("dashboard_shared", "recipient") >= 1,  # events without one ignored
    },
    pql=all_of(signal("connected"), signal("dashboard"), signal("shared")),
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def main() -> None:
    """One analyst shares with a colleague, another only publishes a public link."""
    clock = FrozenClock(T0)
    with pqlkit.Client(model, store=pqlkit.MemoryStore(), clock=clock) as client:
        client.on_pql(lambda q: print(f"  -> PQL: {q.subject_id}"))
        for user, share in (("ann", {"recipient": "ben@example.com"}), ("cy", {"public": True})):
            clock.set(T0)
            for event, props in (
                ("data_source_connected", {"source": "postgres"}),
                ("dashboard_created", {"dashboard_id": "d1"}),
                ("dashboard_shared", {"dashboard_id": "d1", **share}),
            ):
                clock.advance(hours(1))
                print(f"{user} {event} {props}")
                client.track(user, event, props)
        print("cy only published a public link:")
        for line in client.explain("cy"):
            print(f"  {line}")


if __name__ == "__main__":
    main()
