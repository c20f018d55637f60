"""Video hosting: a PQL uploaded a second video within 48 hours of the first.

``sequence("video_uploaded", "video_uploaded", within=hours(48))``: two uploads at
strictly increasing times, at most 48 hours apart (48h exactly counts).

Not exactly the sentence: the DSL has no way to anchor a window on the *first*
upload, so any two uploads 48 hours apart qualify (uploads on day 0, day 5 and day 6
qualify on day 6, although the second video came five days after the first). For
most products that is the intent ("uploads in bursts"); the literal reading would
need something like a "time from the first to the second occurrence" aggregate.

Run it: ``python examples/video_hosting.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pqlkit
from pqlkit import Model, hours, sequence, signal
from pqlkit.testing import FrozenClock

model = Model(
    "video-hosting",
    signals={"second_video": sequence("video_uploaded", "video_uploaded", within=hours(48))},
    pql=signal("second_video"),
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def main() -> None:
    """Two creators upload a second video 48h and 48h + 1s after their first."""
    clock = FrozenClock(T0)
    with pqlkit.Client(model, store=pqlkit.MemoryStore(), clock=clock) as client:
        client.on_pql(lambda q: print(f"  -> PQL: {q.subject_id}"))
        late = hours(48) + timedelta(seconds=1)
        for user, gap, words in (("vic", hours(48), "48h"), ("wes", late, "48h and 1s")):
            clock.set(T0)
            print(f"{user} uploads a first video")
            client.track(user, "video_uploaded", {"seconds": 95})
            clock.advance(gap)
            print(f"{user} uploads a second video {words} later")
            client.track(user, "video_uploaded", {"seconds": 240})
        for line in client.explain("wes"):
            print(f"  wes: {line}")


if __name__ == "__main__":
    main()
