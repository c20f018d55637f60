"""CRM: a PQL imported contacts AND sent the first email within 48 hours of signup.

Why ``sequence`` and not ``time_to``: the sentence starts the clock at the signup.
``sequence("signed_up", "contacts_imported", "email_sent", within=hours(48))`` is
true when a signup, then an import, then an email happened in that order with the
whole chain spanning at most 48 hours (48h exactly counts, 48h and 1s does not). The
first email after the import is the earliest email that can complete the chain, so
"the first email" is the one measured. ``time_to("email_sent") <= hours(48)`` would
instead measure from the user's *first event of any kind*: a visit to the pricing
page days before signing up would eat the 48 hours. The steps need strictly
increasing timestamps, so an email recorded at the very instant of the import does
not complete the chain.

Run it: ``python examples/crm.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pqlkit
from pqlkit import Model, hours, sequence, signal
from pqlkit.testing import FrozenClock

model = Model(
    "crm",
    signals={
        "fast_start": sequence("signed_up", "contacts_imported", "email_sent", within=hours(48)),
    },
    pql=signal("fast_start"),
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def main() -> None:
    """Two new users email their contacts 48h and 48h + 1s after signing up."""
    clock = FrozenClock(T0)
    with pqlkit.Client(model, store=pqlkit.MemoryStore(), clock=clock) as client:
        client.on_pql(lambda q: print(f"  -> PQL: {q.subject_id}"))
        late = hours(48) + timedelta(seconds=1)
        for user, email_after, words in (("eve", hours(48), "48h"), ("max", late, "48h and 1s")):
            clock.set(T0)
            print(f"{user} signs up, imports contacts an hour later")
            client.track(user, "signed_up")
            clock.advance(hours(1))
            client.track(user, "contacts_imported", {"contacts": 1200})
            clock.set(T0 + email_after)
            print(f"{user} sends the first email {words} after signing up")
            client.track(user, "email_sent")
        for line in client.explain("max"):
            print(f"  max: {line}")


if __name__ == "__main__":
    main()
