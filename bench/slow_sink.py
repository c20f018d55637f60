"""Request latency with a slow sink, and shutdown with a hung one.

What it shows (issue 20): a callback that takes seconds (a Slack endpoint timing out)
must not stall the requests of the app's workers, and ``close(timeout=...)`` must come
back on time even while a callback hangs.

Part 1: ``--workers`` processes share one SQLite file, each a Client tracking
``--requests`` events as a web worker would (one ``track()`` per request, users
qualifying on their ``--fire-every``-th event, so that share of requests fire a
qualification). Each runs once with a healthy sink (returns at once) and once with a
slow one (sleeps ``--sink-seconds``), in inline and in background dispatch. Printed:
request p50/p99/max per run and the slow run's p99 as a multiple of the healthy run's.

Part 2: a Client whose callback hangs (sleeps 60 s) is closed with ``close(timeout=5)``;
printed: how long ``close()`` took, in both dispatch modes.

    .venv/bin/python bench/slow_sink.py
    .venv/bin/python bench/slow_sink.py --workers 4 --requests 400 --sink-seconds 6
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Literal

from pqlkit import Client, Model, Qualification, count

Mode = Literal["inline", "background"]


def model(fire_every: int) -> Model:
    return Model("slow-sink", scores={"events": count()}, pql=count() >= fire_every)


def worker(
    path: str, index: int, requests: int, fire_every: int, mode: Mode, sink: float, out: object
) -> None:
    def deliver(q: Qualification) -> None:
        if sink:
            time.sleep(sink)

    latencies: list[float] = []
    with Client(model(fire_every), store=f"sqlite:///{path}", dispatch=mode) as client:
        client.on_pql(deliver)
        for n in range(requests):
            user = f"w{index}-u{n // fire_every}"
            start = time.perf_counter()
            client.track(user, "request")
            latencies.append(time.perf_counter() - start)
        client.close(timeout=0.1)  # what is still pending stays in the outbox
    out.put(latencies)  # type: ignore[attr-defined]


def run(args: argparse.Namespace, mode: Mode, sink: float) -> list[float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "pqlkit.db")
        Client(model(args.fire_every), store=f"sqlite:///{path}").close()  # create it first
        procs = [
            context.Process(
                target=worker,
                args=(path, i, args.requests, args.fire_every, mode, sink, queue),
            )
            for i in range(args.workers)
        ]
        for p in procs:
            p.start()
        latencies = [x for _ in procs for x in queue.get()]
        for p in procs:
            p.join()
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def hung_close(mode: Mode, timeout: float) -> float:
    def hang(q: Qualification) -> None:
        time.sleep(60)

    with tempfile.TemporaryDirectory() as tmp:
        client = Client(model(1), store=f"sqlite:///{tmp}/pqlkit.db", dispatch=mode)
        client.on_pql(hang)
        if mode == "inline":
            # the hung callback runs inside this track(): start it on another thread
            import threading

            threading.Thread(target=client.track, args=("u1", "request"), daemon=True).start()
        else:
            client.track("u1", "request")
        time.sleep(0.5)  # the callback is running now
        start = time.perf_counter()
        client.close(timeout=timeout)
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=400, help="track() calls per worker")
    parser.add_argument("--fire-every", type=int, default=200, help="events per qualifying user")
    parser.add_argument("--sink-seconds", type=float, default=6.0)
    parser.add_argument("--close-timeout", type=float, default=5.0)
    args = parser.parse_args()
    print(
        f"{args.workers} workers x {args.requests} track(), one in {args.fire_every} fires;"
        f" slow sink {args.sink_seconds} s"
    )
    for mode in ("inline", "background"):
        rows = {}
        for label, sink in (("healthy", 0.0), ("slow", args.sink_seconds)):
            lat = run(args, mode, sink)  # type: ignore[arg-type]
            rows[label] = lat
            print(
                f"  {mode:10s} {label:7s} p50 {statistics.median(lat) * 1e3:7.2f} ms"
                f"  p99 {pct(lat, 0.99) * 1e3:8.2f} ms  max {max(lat) * 1e3:8.1f} ms"
            )
        ratio = pct(rows["slow"], 0.99) / pct(rows["healthy"], 0.99)
        print(f"  {mode:10s} slow p99 / healthy p99 = {ratio:.2f}")
    for mode in ("inline", "background"):
        took = hung_close(mode, args.close_timeout)  # type: ignore[arg-type]
        print(f"close(timeout={args.close_timeout:g}) with a hung callback, {mode}: {took:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
