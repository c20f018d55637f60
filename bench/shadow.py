"""A/B of ``track()`` with and without a shadow model, in one process (issue 16: shadowing
one candidate costs at most 1.6x a plain ``track()``).

Two clients of the working tree's pqlkit, each with its own store and copy of the
benchmark's workload (``bench/workload.py``: the data-tooling model, 300 users in 30
accounts, traits set, 3,000 warm-up calls): ``Client(model)`` and
``Client(model, shadows=[candidate])``, the candidate being the same data-tooling model
under another name (the same work again: the cost of shadowing a model as heavy as the
live one). Batches of calls alternate between the two, the order flipped every pair, as
``bench/ab.py`` does.

Printed: the p50 of every call of each side and their ratio, and the median of the
per-pair ratios of batch means (which counts the slow calls too).

Usage::

    python bench/shadow.py                          # MemoryStore, 25 pairs of 1,000 calls
    python bench/shadow.py --store sqlite --pairs 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload

import pqlkit
from pqlkit.testing import FrozenClock

Batch = Callable[[int], list[int]]


def candidate(model: pqlkit.Model) -> pqlkit.Model:
    """``model`` under another name: a candidate exactly as heavy as the live model."""
    return pqlkit.Model(
        "candidate",
        signals=dict(model.signals),
        scores=dict(model.scores),
        pql=model.pql,
        pqa=model.pqa,
        requalify_after=model.requalify_after,
        ranked=model.ranked,
    )


def _side(store: str, calls: int, shadows: list[pqlkit.Model]) -> tuple[Batch, Callable[[], None]]:
    """A warmed-up client: a function timing ``n`` more calls, and a closer."""
    clock = FrozenClock(workload.T0)
    client = pqlkit.Client(workload.MODEL, store=store, clock=clock, shadows=shadows)
    batch = workload.warmed(client, clock, calls)

    return batch, client.close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--pairs", type=int, default=25, help="pairs of batches (25)")
    parser.add_argument("--calls", type=int, default=1_000, help="calls per batch (1,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        total = args.calls * (args.pairs + 1)
        sides = []
        for name, shadows in (("plain", []), ("shadowed", [candidate(workload.MODEL)])):
            store = "memory://" if args.store == "memory" else f"sqlite:///{tmp}/{name}.db"
            sides.append(_side(store, total, shadows))
        (plain, close_plain), (shadowed, close_shadowed) = sides
        plain(args.calls), shadowed(args.calls)  # one untimed batch each
        times: tuple[list[int], list[int]] = ([], [])
        ratios = []
        for i in range(args.pairs):
            order = [(0, plain), (1, shadowed)] if i % 2 else [(1, shadowed), (0, plain)]
            means = [0.0, 0.0]
            for side, batch in order:
                got = batch(args.calls)
                times[side].extend(got)
                means[side] = statistics.fmean(got)
            ratios.append(means[1] / means[0])
        close_plain(), close_shadowed()
    p50 = [statistics.median(t) / 1000 for t in times]
    print(f"track() on {args.store}, {args.pairs} pairs of {args.calls:,} calls")
    print(f"  p50 of every call: plain {p50[0]:.1f} µs, one shadow {p50[1]:.1f} µs,")
    print(
        f"  ratio {p50[1] / p50[0]:.3f}; median of the pairs' ratios of means "
        f"{statistics.median(ratios):.3f}"
    )


if __name__ == "__main__":
    main()
