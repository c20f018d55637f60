"""Email marketing: a PQL imported a list of 500+ contacts and sent at least one campaign.

"A list of 500+" is one import of 500 or more contacts (the ``contacts`` property),
not 500 spread over several imports: ``where=`` takes a function for a comparison
(``where={...}`` only tests equality). Summing the imports instead would be
``total("list_imported", "contacts") >= 500``.

Run it: ``python examples/email_marketing.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pqlkit
from pqlkit import Model, did, hours, signal
from pqlkit.testing import FrozenClock

MIN_LIST = 500


def big_list(properties: Mapping[str, Any]) -> bool:
    """The import brought MIN_LIST or more contacts (a pure function of the properties)."""
    contacts = properties.get("contacts")
    return isinstance(contacts, int) and not isinstance(contacts, bool) and contacts >= MIN_LIST


model = Model(
    "email-marketing",
    signals={
        "big_list": did("list_imported", where=big_list),
        "campaign": did("campaign_sent"),
    },
    pql=signal("big_list") & signal("campaign"),
    version="1",  # bump when big_list's code changes: the fingerprint sees only its name
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def main() -> None:
    """Two senders, 500 and 499 contacts; print who qualifies."""
    clock = FrozenClock(T0)
    with pqlkit.Client(model, store=pqlkit.MemoryStore(), clock=clock) as client:
        client.on_pql(lambda q: print(f"  -> PQL: {q.subject_id}"))
        for user, contacts in (("ada", 500), ("bob", 499)):
            clock.set(T0)
            print(f"{user} imports a list of {contacts} contacts")
            client.track(user, "list_imported", {"contacts": contacts})
            clock.advance(hours(3))
            print(f"{user} sends a campaign")
            client.track(user, "campaign_sent", {"recipients": contacts})
        print("bob, 499 contacts:")
        for line in client.explain("bob"):
            print(f"  {line}")


if __name__ == "__main__":
    main()
