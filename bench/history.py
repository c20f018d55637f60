"""``track()`` for a subject with a long history, against a fresh subject, on one SQLiteStore.

One user, ``whale``, in one account, ``whale-co``, gets its history in stages
(10k, then 100k, then 1M prior events) through ``track_many`` — the engine's own
bulk path, so its derived state is exactly what live tracking would have built.
Each stage's new events are spread uniformly at random over the 365 days before
the measurement, with the live traffic's event mix (page views, queries, funnel
events), so at every stage the history is uniform over the past year.

At each stage three contenders run interleaved on the *same* client and store (so
the table sizes are the same): ``track()`` for the whale (and its account), and
``track()`` for a brand-new user in a brand-new account (0 prior events). The
ratio of their medians is the cost of history. The third is the whale *cold*: the
client's warm cache is dropped before each call (outside the timed region), as
when another process wrote in between or the client was just started, so the call
reads and decodes the whale's and its account's stored states and replays the few
events newer than them from the log.
"""

from __future__ import annotations

import time
from datetime import timedelta

import workload
from contenders import new_client
from harness import Contender, Sample, cpu_ns, now_ns

import pqlkit
from pqlkit.testing import FrozenClock


class Stage:
    """The shared store, client and clock, and the whale's history so far."""

    def __init__(self, store: pqlkit.Store) -> None:
        self.store = store
        self.clock = FrozenClock(workload.T0 + timedelta(days=400))
        self.client = new_client(store, self.clock)
        self.prior = 0
        self.fresh_serial = 0

    def grow(self, target: int) -> float:
        """Backfill the whale up to ``target`` prior events; return the seconds it took."""
        more = target - self.prior
        if more <= 0:
            return 0.0
        events = workload.history(
            "whale", "whale-co", more, end=self.clock.now(), seed=1_000 + self.prior
        )
        t0 = time.perf_counter()
        result = self.client.track_many(events)
        elapsed = time.perf_counter() - t0
        assert result.stored == more
        self.prior = target
        return elapsed

    def close(self) -> None:
        self.client.close()
        self.store.close()


class _HistoryTrack(Contender):
    def __init__(self, stage: Stage, ops: int, seed: int) -> None:
        super().__init__(ops)
        self._stage = stage
        self._seed = seed

    def setup(self, batches: int) -> None:
        pop = workload.Population.make(1, 1, prefix="draw-")
        self._calls = iter(workload.calls(pop, self.ops * (batches + 1), seed=self._seed))

    def ids(self) -> tuple[str, str]:
        raise NotImplementedError

    def batch(self, n: int) -> list[Sample]:
        stage = self._stage
        track = stage.client.track
        out = []
        for _ in range(n):
            call = next(self._calls)
            user, account = self.ids()
            stage.clock.advance(call.gap)
            c0 = cpu_ns()
            w0 = now_ns()
            track(user, call.event, call.properties, account_id=account)
            w1 = now_ns()
            out.append((w1 - w0, cpu_ns() - c0))
        return out


class FreshTrack(_HistoryTrack):
    """``track()`` for a user (and account) never seen before."""

    name = "fresh subject (0 prior events)"

    def ids(self) -> tuple[str, str]:
        self._stage.fresh_serial += 1
        n = self._stage.fresh_serial
        return f"fresh-{n}", f"fresh-co-{n}"


class ColdWhaleTrack(_HistoryTrack):
    """``track()`` for the whale with the client's warm cache dropped before each call."""

    name = "whale, cold"

    def ids(self) -> tuple[str, str]:
        # Private, bench only: what a client sees after another process wrote.
        self._stage.client._warm.clear()
        return "whale", "whale-co"


class WhaleTrack(_HistoryTrack):
    """``track()`` for the whale, whose history the stage grew."""

    name = "whale"

    def ids(self) -> tuple[str, str]:
        return "whale", "whale-co"
