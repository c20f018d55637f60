"""The nudge inbox and ``top()``: what a page render and a "who is closest" list cost.

Three measurements, each printed with its median (the machine is shared and noisy):

1. ``client.nudges(user)`` on a warm SQLite store (the read a web app makes on every
   page): 2,000 users with 0 to 3 open nudges each, then ``--reads`` calls on random
   users; p50 and p90. Target: under 100 µs p50.
2. ``client.top(score, n=50)`` over ``--subjects`` users (default 100,000) of the
   workload's data-tooling model with its three scores ranked, filled with
   ``track_many`` (two events a user over 60 days). ``fit`` reads traits only (time
   alone never changes it): a pure index read. ``behavior`` reads windows and
   ``idle()``: its first call after the fill re-evaluates every subject whose value
   time has changed since its last event (printed: how many, how long), then the
   index is current and later calls are index reads again; ``sweep()`` (which an app runs
   on a schedule) does that work instead when it runs first. Target: under 50 ms.
3. What ranking costs ``track()``: two clients of the working tree, the same model
   with and without ``ranked=[...]`` (``--ranked``, default all three scores), on their
   own SQLite files (``--store``), batches of calls
   alternating (the order flipped every pair) as ``bench/ab.py`` does; the p50 of
   every call and the median of the pairs' ratios of batch means.

Usage::

    python bench/nudges_top.py                      # everything, SQLite
    python bench/nudges_top.py --subjects 10000     # a quicker top()
    python bench/nudges_top.py --only nudges
    python bench/nudges_top.py --only cost --ranked behavior --store memory
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload

import pqlkit
from pqlkit.testing import FrozenClock

BASE = workload.MODEL


def ranked_model(names: list[str]) -> pqlkit.Model:
    """The workload's model with ``names`` ranked (everything else as it is)."""
    return pqlkit.Model(
        BASE.name,
        signals=dict(BASE.signals),
        scores=dict(BASE.scores),
        pql=BASE.pql,
        pqa=BASE.pqa,
        version=BASE.version,
        requalify_after=BASE.requalify_after,
        ranked=names,
    )


def percentiles(samples_ns: list[int]) -> tuple[float, float]:
    """(p50, p90) in µs."""
    ordered = sorted(samples_ns)
    return (
        statistics.median(ordered) / 1000,
        ordered[int(len(ordered) * 0.9)] / 1000,
    )


def bench_nudges(tmp: Path, reads: int) -> None:
    clock = FrozenClock(workload.T0)
    with pqlkit.Client(BASE, store=f"sqlite:///{tmp}/nudges.db", clock=clock) as client:
        rng = random.Random(3)
        users = [f"user-{i}" for i in range(2_000)]
        for user in users:
            client.track(user, "login")
            for key in rng.sample(["upgrade", "invite", "tour"], rng.randrange(4)):
                client.nudge(user, key, {"title": f"{key} for {user}", "cta": "/billing"})
        clock.advance(timedelta(minutes=1))
        order = [rng.choice(users) for _ in range(reads)]
        for user in order[:1_000]:  # warm up
            client.nudges(user)
        nudges, perf = client.nudges, time.perf_counter_ns
        samples = []
        shown = 0
        for user in order:
            t0 = perf()
            found = nudges(user)
            samples.append(perf() - t0)
            shown += len(found)
        p50, p90 = percentiles(samples)
        print(f"nudges(user), warm SQLite, {reads:,} reads of 2,000 users")
        print(f"  p50 {p50:.1f} µs, p90 {p90:.1f} µs ({shown / reads:.2f} nudges a read)")


def fill(client: pqlkit.Client, clock: FrozenClock, subjects: int) -> float:
    """``subjects`` users with two events each over 60 days; the seconds it took."""
    pop = workload.Population.make(subjects, subjects // 20, prefix="t")
    for account in pop.accounts:
        client.group(account, {"employees": pop.employees[account], "plan": "free"})
    rng = random.Random(5)
    span = timedelta(days=60) / timedelta(microseconds=1)
    events: list[dict[str, Any]] = []
    for user in pop.users:
        for _ in range(2):
            name = rng.choices(list(workload.EVENT_MIX), list(workload.EVENT_MIX.values()))[0]
            events.append(
                {
                    "user_id": user,
                    "event": name,
                    "properties": {"path": "/pricing"} if name == "page_viewed" else {},
                    "account_id": pop.account_of[user],
                    "timestamp": workload.T0 + timedelta(microseconds=rng.randrange(int(span))),
                }
            )
    events.sort(key=lambda e: e["timestamp"])
    clock.set(events[-1]["timestamp"])
    started = time.perf_counter()
    client.track_many(events)
    return time.perf_counter() - started


def stale_count(client: pqlkit.Client, score: str) -> int:
    with client.store.transaction() as tx:
        return len(tx.stale_ranks(BASE.name, "user", score, client.clock.now(), 10**9))


def timed(call: Callable[[], object], times: int) -> list[int]:
    out = []
    for _ in range(times):
        t0 = time.perf_counter_ns()
        call()
        out.append(time.perf_counter_ns() - t0)
    return out


def bench_top(tmp: Path, subjects: int, calls: int) -> None:
    clock = FrozenClock(workload.T0)
    model = ranked_model(["behavior", "fit", "tev"])
    with pqlkit.Client(model, store=f"sqlite:///{tmp}/top.db", clock=clock) as client:
        seconds = fill(client, clock, subjects)
        print(f"top(score, n=50), SQLite, {subjects:,} users ({2 * subjects:,} events)")
        each = seconds / subjects / 2 * 1e6
        print(f"  filled with track_many in {seconds:.0f} s ({each:.0f} µs an event)")
        p50, p90 = percentiles(timed(lambda: client.top("fit"), calls))
        print(f"  top('fit'): p50 {p50 / 1000:.2f} ms, p90 {p90 / 1000:.2f} ms (an index read)")
        stale = stale_count(client, "behavior")
        started = time.perf_counter()
        client.top("behavior")
        first = time.perf_counter() - started
        print(
            f"  top('behavior'), first call: re-evaluated {stale:,} users whose value time"
            f" changed since their last event, in {first:.2f} s"
        )
        p50, p90 = percentiles(timed(lambda: client.top("behavior"), calls))
        print(f"  top('behavior') then: p50 {p50 / 1000:.2f} ms, p90 {p90 / 1000:.2f} ms")
        started = time.perf_counter()
        client.sweep()  # the rule's backlog of the 60 days filled in: not what is measured
        print(
            f"  (a first sweep() clears the rule's backlog: {time.perf_counter() - started:.0f} s)"
        )
        clock.advance(timedelta(hours=1))
        stale = stale_count(client, "behavior")
        started = time.perf_counter()
        client.top("behavior")
        hour = time.perf_counter() - started
        print(f"  an hour later: {stale:,} users stale, the first call took {hour * 1000:.1f} ms")
        clock.advance(timedelta(hours=1))
        stale = stale_count(client, "behavior")
        started = time.perf_counter()
        client.sweep()
        swept = time.perf_counter() - started
        p50, p90 = percentiles(timed(lambda: client.top("behavior"), calls))
        print(
            f"  another hour later, sweep() first ({stale:,} users stale, sweep {swept * 1000:.0f}"
            f" ms): top('behavior') p50 {p50 / 1000:.2f} ms, p90 {p90 / 1000:.2f} ms"
        )


def side(model: pqlkit.Model, path: str, total: int) -> tuple[Callable[[int], list[int]], Any]:
    """A warmed-up client (the workload as bench/ab.py runs it): a function timing ``n``
    more calls, and the client."""
    clock = FrozenClock(workload.T0)
    client = pqlkit.Client(model, store=path, clock=clock)
    batch = workload.warmed(client, clock, total)

    return batch, client


def bench_rank_cost(tmp: Path, pairs: int, calls: int, store: str, names: list[str]) -> None:
    total = calls * (pairs + 1)
    where = {"sqlite": lambda name: f"sqlite:///{tmp}/{name}.db", "memory": lambda _: "memory://"}
    plain, plain_client = side(BASE, where[store]("plain"), total)
    ranked, ranked_client = side(ranked_model(names), where[store]("ranked"), total)
    plain(calls), ranked(calls)
    times: tuple[list[int], list[int]] = ([], [])
    ratios = []
    for i in range(pairs):
        order = [(0, plain), (1, ranked)] if i % 2 else [(1, ranked), (0, plain)]
        means = [0.0, 0.0]
        for n, batch in order:
            got = batch(calls)
            times[n].extend(got)
            means[n] = statistics.fmean(got)
        ratios.append(means[1] / means[0])
    plain_client.close()
    ranked_client.close()
    p50 = [statistics.median(t) / 1000 for t in times]
    print(f"track() with {', '.join(names)} ranked, {store}, {pairs} pairs of {calls:,} calls")
    print(f"  p50 of every call: not ranked {p50[0]:.1f} µs, ranked {p50[1]:.1f} µs,")
    print(
        f"  ratio {p50[1] / p50[0]:.3f}; median of the pairs' ratios of means "
        f"{statistics.median(ratios):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["nudges", "top", "cost"], default=None)
    parser.add_argument("--reads", type=int, default=20_000, help="nudges() calls (20,000)")
    parser.add_argument("--subjects", type=int, default=100_000, help="users for top() (100,000)")
    parser.add_argument("--calls", type=int, default=50, help="top() calls timed (50)")
    parser.add_argument("--pairs", type=int, default=15, help="pairs of track() batches (15)")
    parser.add_argument("--store", choices=["sqlite", "memory"], default="sqlite")
    parser.add_argument(
        "--ranked", default="behavior,fit,tev", help="the scores ranked for the cost (all three)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "nudges"):
            bench_nudges(Path(tmp), args.reads)
        if args.only in (None, "top"):
            bench_top(Path(tmp), args.subjects, args.calls)
        if args.only in (None, "cost"):
            bench_rank_cost(Path(tmp), args.pairs, 1_000, args.store, args.ranked.split(","))


if __name__ == "__main__":
    main()
