"""Fit: the same behaviour qualifies at a 600-person company and not on a free-mail address.

Uses the data-tooling model (``data_tooling.py``): fit is +20 at a company of 200+
people and -30 on a free-mail domain, added to the behaviour points; PQL at 50. A
heavy user (activated 30 + invited 20 + API key 15 + pricing page 10 = 75) scores
75 - 30 = 45 alone on gmail.com and 75 + 20 = 95 at acme (600 people).

Fit is a weight here, not a gate: a user who does all five things scores 85 and
still qualifies on gmail.com (85 - 30 = 55). To keep free-mail users out whatever
they do, make fit a condition of the rule: ``... & (score("fit") >= 0)``.

Run it: ``python examples/firmographic_fit.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_tooling import T0, model

import pqlkit
from pqlkit import days
from pqlkit.testing import FrozenClock

HEAVY_USE: list[tuple[str, dict[str, Any]]] = [
    ("warehouse_connected", {}),
    ("dashboard_built", {}),  # activated: +30
    ("teammate_invited", {"email": "friend@example.com"}),  # +20
    ("api_key_generated", {}),  # +15
    ("page_viewed", {"path": "/pricing"}),  # +10  -> behaviour 75
]


def main() -> None:
    """A hobbyist on gmail.com and a buyer at acme do the same things."""
    clock = FrozenClock(T0)
    with pqlkit.Client(model, store=pqlkit.MemoryStore(), clock=clock) as client:
        client.on_pql(lambda q: print(f"  -> PQL: {q.subject_id}"))
        client.group("acme", {"employees": 600})
        client.identify("hobbyist", {"email_domain": "gmail.com"})
        client.identify("buyer", {"email_domain": "acme.io"}, account_id="acme")
        for user, account in (("hobbyist", None), ("buyer", "acme")):
            for day, (event, props) in enumerate(HEAVY_USE):
                clock.set(T0 + days(day))
                client.track(user, event, props, account_id=account)
            s = client.scores(user)
            print(f"{user}: behavior {s['behavior']:g} + fit {s['fit']:g}")
        for line in client.explain("hobbyist"):
            if line.startswith(("fit =", "pql:")):
                print(f"  hobbyist: {line}")


if __name__ == "__main__":
    main()
