"""What a backtest costs: the data-tooling model over a simulated year, at three sizes.

Each size runs in a fresh process (so its peak RSS is its own): it builds the
history with ``pqlkit.simulate`` (about ten events a user, a tenth as many accounts
as users, one year), then times ``pqlkit.backtest(MODEL, history,
outcome="subscription_started")`` with the defaults (weekly snapshots, a 30-day
horizon, a 90-day lookback): wall time, the process's CPU time, and the peak
resident set size of the whole process (``VmHWM``: the history included).

    $ python bench/lab_backtest.py                        # 100k, 300k and 1M events
    $ python bench/lab_backtest.py --events 100000 --source jsonl   # read from a file
    $ PYTHONPATH=build/mypyc python bench/lab_backtest.py # the compiled build

``--source`` picks where the backtest reads the history: ``sim`` (the Simulation
itself), ``jsonl`` (a ``pqlkit export``-format file written first, untimed) or
``sqlite`` (a store filled first with ``track_many``, untimed; slow to fill).
The machine's load average is printed with the results: on a shared machine,
compare CPU time more than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENTS_PER_USER = 10.3  # what simulate() makes, on average


def _rss(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")  # pragma: no cover - not Linux


def child(events: int, source: str) -> dict[str, object]:
    """One size, in this process."""
    sys.path.insert(0, str(ROOT / "bench"))
    from workload import MODEL

    import pqlkit

    users = round(events / EVENTS_PER_USER)
    t = time.perf_counter()
    sim = pqlkit.simulate(seed=0, users=users, accounts=users // 10, days=365)
    made = time.perf_counter() - t
    history: object = sim
    scratch = tempfile.TemporaryDirectory()
    if source == "jsonl":
        history = Path(scratch.name) / "history.jsonl"
        sim.write(history)
    elif source == "sqlite":
        path = Path(scratch.name) / "history.db"
        with pqlkit.Client(MODEL, store=f"sqlite:///{path}", dispatch="inline") as client:
            sim.load(client)
        history = f"sqlite:///{path}"
    before = _rss("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    report = pqlkit.backtest(MODEL, history, outcome="subscription_started")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    pql, pqa = report[MODEL.name].pql, report[MODEL.name].pqa
    assert pql is not None
    assert pqa is not None
    scratch.cleanup()
    return {
        "events": len(sim.events),
        "users": report.users,
        "accounts": report.accounts,
        "snapshots": len(report.snapshots),
        "measured": pql.eligible + pqa.eligible,
        "simulate_s": round(made, 1),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "us_per_event": round(cpu / len(sim.events) * 1e6, 1),
        "rss_before_mb": round(before),
        "peak_rss_mb": round(_rss("VmHWM")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", default="100000,300000,1000000", help="sizes, comma-separated")
    parser.add_argument("--source", choices=["sim", "jsonl", "sqlite"], default="sim")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(int(args.events), args.source)))
        return
    import pqlkit

    build = "pure Python" if str(pqlkit._core.__file__).endswith(".py") else "compiled (mypyc)"
    print(f"pqlkit {build}; source: {args.source}; load average {os.getloadavg()[0]:.1f}")
    rows = []
    for size in [int(s) for s in args.events.split(",")]:
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--events", str(size), "--source", args.source],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT / "src"))},
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {rows[-1]}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}\n")
    print(
        "| events | users | accounts | snapshots | subject-snapshots | wall | CPU"
        " | CPU per event | peak RSS |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['events']:,} | {r['users']:,} | {r['accounts']:,} | {r['snapshots']}"
            f" | {r['measured']:,} | {r['wall_s']} s | {r['cpu_s']} s"
            f" | {r['us_per_event']} µs | {r['peak_rss_mb']} MB |"
        )


if __name__ == "__main__":
    main()
