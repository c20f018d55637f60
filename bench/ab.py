"""A/B of ``track()``: an earlier commit's pqlkit against the working tree's, in one process.

The machine is shared and noisy, and a change worth a few percent drowns in the
difference between two runs. So both versions run here side by side: the package as it
was at ``REV`` (taken with ``git archive``) is imported under another name
(``pqlkit_base``: its imports are relative) beside the working tree's ``pqlkit``; each
gets its own client, store and copy of the benchmark's workload (``bench/workload.py``:
the data-tooling model, 300 users in 30 accounts, traits set, 3,000 warm-up calls), and
batches of calls alternate between the two, the order flipped every pair.

Printed: the p50 of every call of each side and their ratio, and the median of the
per-pair ratios of batch means (which counts the slow calls too).

Usage::

    python bench/ab.py 0a6c292                        # MemoryStore, 25 pairs of 1,000 calls
    python bench/ab.py HEAD --store sqlite --pairs 15
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import builds
import workload

BASE = "pqlkit_base"


Batch = Callable[[int], list[int]]


def _side(package: str, store: str, calls: int, tmp: Path) -> tuple[Batch, Callable[[], None]]:
    """A warmed-up client of ``package``: a function timing ``n`` more calls, and a closer."""
    pkg = importlib.import_module(package)
    testing = importlib.import_module(f"{package}.testing")
    clock = testing.FrozenClock(workload.T0)
    client = pkg.Client(builds.model_for(package, tmp), store=store, clock=clock)
    batch = workload.warmed(client, clock, calls)

    return batch, client.close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the commit to compare the working tree with")
    parser.add_argument("--store", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--pairs", type=int, default=25, help="pairs of batches (25)")
    parser.add_argument("--calls", type=int, default=1_000, help="calls per batch (1,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        builds.export(args.rev, BASE, Path(tmp))
        sys.path.insert(0, tmp)
        total = args.calls * (args.pairs + 1)
        sides = []
        for package in (BASE, "pqlkit"):
            store = "memory://" if args.store == "memory" else f"sqlite:///{tmp}/{package}.db"
            sides.append(_side(package, store, total, Path(tmp)))
        (base, close_base), (new, close_new) = sides
        base(args.calls), new(args.calls)  # one untimed batch each
        times: tuple[list[int], list[int]] = ([], [])
        ratios = []
        for i in range(args.pairs):
            order = [(0, base), (1, new)] if i % 2 else [(1, new), (0, base)]
            means = [0.0, 0.0]
            for side, batch in order:
                got = batch(args.calls)
                times[side].extend(got)
                means[side] = statistics.fmean(got)
            ratios.append(means[1] / means[0])
        close_base(), close_new()
    p50 = [statistics.median(t) / 1000 for t in times]
    print(f"track() on {args.store}, {args.pairs} pairs of {args.calls:,} calls")
    print(f"  p50 of every call: {args.rev} {p50[0]:.1f} µs, working tree {p50[1]:.1f} µs,")
    print(
        f"  ratio {p50[1] / p50[0]:.3f}; median of the pairs' ratios of means "
        f"{statistics.median(ratios):.3f}"
    )


if __name__ == "__main__":
    main()
