"""Profile ``Client.track()`` on each store and print the top functions by own time.

The workload is the benchmark's (``bench/workload.py``): the data-tooling model,
300 users in 30 accounts, the mixed event stream. Traits are set and a warm-up
stream is tracked before profiling starts, so the profile shows the steady state.

Usage::

    python bench/profile_track.py                  # cProfile, every store, top 25 by tottime
    python bench/profile_track.py --store sqlite --calls 5000 --top 40
    python bench/profile_track.py --pyinstrument   # a call tree instead (pip install pyinstrument)
    python bench/profile_track.py --store sqlite --history 100000   # a subject with a long past

With ``--history N`` the profiled calls are all for one user (in one account) that
first gets N prior events spread over the past year through ``track_many``, as in
the history benchmark (``bench/history.py``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import re
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stores
import workload

import pqlkit
from pqlkit.testing import FrozenClock


def _stream(client: pqlkit.Client, clock: FrozenClock, calls: list[workload.Call]) -> None:
    for call in calls:
        clock.advance(call.gap)
        client.track(call.user_id, call.event, call.properties, account_id=call.account_id)


def profile(name: str, open_store: Callable[[], pqlkit.Store], args: argparse.Namespace) -> None:
    """Warm a client up on ``name``'s store, then profile ``args.calls`` track() calls."""
    pop = workload.Population.make(300, 30)
    clock = FrozenClock(workload.T0)
    store = open_store()
    with pqlkit.Client(workload.MODEL, store=store, clock=clock) as client:
        client.on_pql(lambda q: None)
        client.on_pqa(lambda q: None)
        pop.set_traits(client)
        _stream(client, clock, workload.calls(pop, args.warmup, seed=1))
        calls = workload.calls(pop, args.calls, seed=2)
        what = f"{args.calls} calls after {args.warmup} warm-up calls"
        if args.history:
            clock.advance(timedelta(days=400))
            print(f"(backfilling {args.history:,} prior events for the profiled user...)")
            client.track_many(workload.history("whale", "whale-co", args.history, end=clock.now()))
            calls = [
                workload.Call("whale", c.event, c.properties, "whale-co", c.gap) for c in calls
            ]
            what = f"{args.calls} calls for a user with {args.history:,} prior events"
        print(f"\n=== track() on {name}: {what} ===")
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002)
            profiler.start()
            _stream(client, clock, calls)
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False, show_all=False))
        else:
            prof = cProfile.Profile()
            prof.enable()
            _stream(client, clock, calls)
            prof.disable()
            out = io.StringIO()
            stats = pstats.Stats(prof, stream=out)
            total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
            print(
                f"{total / args.calls * 1e6:.0f} us of own time per track() under cProfile"
                " (the profiler inflates it; compare shares, not absolutes)"
            )
            stats.sort_stats("tottime").print_stats(args.top)
            print(_trim(out.getvalue()))
    store.close()


def _trim(text: str) -> str:
    """pstats' report without its preamble, with short paths."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    out = []
    for line in lines[start:]:
        line = re.sub(r"/\S*/site-packages/", "", line)
        line = re.sub(r"/\S*/src/pqlkit/", "pqlkit/", line)
        line = re.sub(r"/\S*/lib/python3\.\d+/", "", line)
        out.append(line)
    return "\n".join(out).rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store",
        choices=["memory", "sqlite", "postgres", "all"],
        default="all",
        help="which store to profile (default: every available one)",
    )
    parser.add_argument("--calls", type=int, default=3000, help="track() calls profiled")
    parser.add_argument("--warmup", type=int, default=1000, help="track() calls before profiling")
    parser.add_argument("--top", type=int, default=25, help="functions shown")
    parser.add_argument("--pyinstrument", action="store_true", help="print a pyinstrument tree")
    parser.add_argument(
        "--history", type=int, default=0, help="profile a user with this many prior events"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pqlkit-profile-") as tmp:
        available = stores.available(tmp)
        for name, opener in available.items():
            if args.store in ("all", name):
                profile(name, opener, args)
        for name, why in stores.skipped(available).items():
            if args.store in ("all", name):
                print(f"\n=== {name}: skipped ({why}) ===")
        stores.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
