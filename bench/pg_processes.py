"""Aggregate ``track()`` throughput of N processes on one PostgresStore (issue 18).

Each process runs one Client of the data-tooling model (``workload.py``) on the same
schema, with users and accounts of its own (a web server's workers each serving its
own requests: no two processes write one subject, so each keeps its subjects warm),
tracks them once to warm them, waits at a barrier, then calls ``track()`` for
``--seconds``. Rounds of 1, 2, 4 and 8 processes alternate (1, 2, 4, 8, 1, 2, ...),
each round on a fresh schema; the report gives each N's median aggregate calls per
second and its ratio to one process's, from the same run.

    python bench/pg_processes.py --rounds 3 --seconds 5
    PQLKIT_TEST_POSTGRES_DSN=postgresql://... python bench/pg_processes.py
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
import uuid
from typing import Any

import workload

import pqlkit
from pqlkit.testing import FrozenClock


def _dsn() -> str:
    return os.environ.get("PQLKIT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _worker(index: int, schema: str, seconds: float, barrier: Any, out: Any) -> None:
    pop = workload.Population.make(60, 6, seed=index, prefix=f"p{index}-")
    store = pqlkit.PostgresStore(_dsn(), schema=schema, min_size=1, max_size=1)
    clock = FrozenClock(workload.T0)
    with pqlkit.Client(workload.MODEL, store=store, clock=clock) as client:
        client.on_pql(lambda q: None)
        client.on_pqa(lambda q: None)
        for user in pop.users:  # warm: every subject tracked once by this process
            client.track(user, "login", account_id=pop.account_of[user])
        calls = workload.calls(pop, 200_000, seed=index)
        barrier.wait()
        done, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            c = calls[done]
            clock.advance(c.gap)
            client.track(c.user_id, c.event, c.properties, account_id=c.account_id)
            done += 1
    store.close()
    out.put(done)


def one_round(n: int, seconds: float) -> float:
    """Aggregate calls per second of ``n`` processes on a fresh schema."""
    import psycopg

    schema = f"pqlkit_procs_{uuid.uuid4().hex[:10]}"
    pqlkit.PostgresStore(_dsn(), schema=schema).close()  # created once, before the race
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(i, schema, seconds, barrier, out)) for i in range(n)]
    try:
        for p in procs:
            p.start()
        total = sum(out.get(timeout=seconds + 300) for _ in procs)
        for p in procs:
            p.join(60)
    finally:
        with psycopg.connect(_dsn(), autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return total / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", default="1,2,4,8")
    args = parser.parse_args()
    counts = [int(x) for x in args.processes.split(",")]
    rates: dict[int, list[float]] = {n: [] for n in counts}
    for r in range(args.rounds):
        for n in counts:
            rates[n].append(one_round(n, args.seconds))
            print(f"round {r}: {n} process(es): {rates[n][-1]:,.0f} track()/s", flush=True)
    build = "mypyc" if pqlkit._core.__file__.endswith((".so", ".pyd")) else "pure Python"
    load = os.getloadavg()
    print(
        f"\n{build} build, {os.cpu_count()} CPUs, load {load[0]:.1f} / {load[1]:.1f} /"
        f" {load[2]:.1f}; medians of {args.rounds} rounds of {args.seconds:g} s"
    )
    base = statistics.median(rates[counts[0]])
    for n in counts:
        median = statistics.median(rates[n])
        print(f"  {n} process(es): {median:8,.0f} track()/s  {median / base:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
