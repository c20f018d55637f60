"""What a cold load pays for the events a warm writer left behind its stored state.

A Client that writes alone defers writing a warm subject's state back for up to 64
events (``_TAIL_EVENTS`` in ``_client.py``); another process that then loads the subject
folds those events in from the log. This times that first ``track()`` of the other
process (its store shares the file), for a user and its account left ``--tail`` events
behind, against the same call with nothing left behind (both states just written back).
Each repetition uses a fresh database file; medians over ``--reps``.

Usage::

    python bench/cold_tail.py               # tails of 0 and 63 events, 15 repetitions
    python bench/cold_tail.py --tail 16 --reps 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload

import pqlkit
from pqlkit.testing import FrozenClock


def cold_call(path: str, tail: int, seed: int) -> int:
    """ns of the other process's first track() for u1, ``tail`` events behind."""
    clock = FrozenClock(workload.T0)
    calls = workload.calls(workload.Population.make(1, 1), 100 + tail, seed=seed)
    with pqlkit.Client(workload.MODEL, store=path, clock=clock) as writer:
        for c in calls[:100]:
            clock.advance(c.gap)
            writer.track("u1", c.event, c.properties, account_id="acme")
    # close() wrote both states back: from here the writer leaves `tail` events behind
    with (
        pqlkit.Client(workload.MODEL, store=path, clock=clock) as writer,
        pqlkit.Client(workload.MODEL, store=path, clock=clock) as other,
    ):
        writer.track("u1", "login", account_id="acme")  # warm from here on
        for c in calls[100:]:
            clock.advance(c.gap)
            writer.track("u1", c.event, c.properties, account_id="acme")
        clock.advance(timedelta(seconds=1))
        t0 = time.perf_counter_ns()
        other.track("u1", "login", account_id="acme")  # cold: folds the tail in
        return time.perf_counter_ns() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tail", type=int, default=63, help="events left behind (63)")
    parser.add_argument("--reps", type=int, default=15, help="repetitions (15)")
    args = parser.parse_args()
    results: dict[int, list[int]] = {0: [], args.tail: []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for tail in results:
                path = f"sqlite:///{tmp}/cold-{rep}-{tail}.db"
                results[tail].append(cold_call(path, tail, seed=rep))
    for tail, times in results.items():
        ms = statistics.median(times) / 1e6
        print(f"cold track() with {tail:3d} events behind (user and account): p50 {ms:.2f} ms")


if __name__ == "__main__":
    main()
