"""Child process: import events into a fresh SQLite file with ``track_many``; report peak RSS.

Run by ``bench/run.py`` in a process of its own, so the peak resident set size it
reports (``VmHWM`` in ``/proc/self/status``) is the import's alone: the
interpreter, pqlkit, the model and the import, nothing the benchmark did before.
The events come from :func:`workload.sweep_events`, generated lazily, so the
input is never held in memory; the file it leaves is the sweep benchmark's store.

Prints one JSON object: events stored, seconds, RSS before the import and the peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload

import pqlkit
from pqlkit.testing import FrozenClock


def _proc_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``: now, ``VmHWM``: the peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_kib() -> int:
    """The current resident set size, KiB."""
    now = _proc_kib("VmRSS")
    return now if now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_kib() -> int:
    """This process's peak resident set size, KiB.

    ``VmHWM`` belongs to the address space exec() made, while ``ru_maxrss`` can
    carry over the parent's peak across fork() (the benchmark's own memory).
    """
    peak = _proc_kib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="the SQLite file to create")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--per-user", type=int, default=10)
    args = parser.parse_args()
    store = pqlkit.SQLiteStore(args.db)
    clock = FrozenClock(workload.SWEEP_AT - timedelta(days=1))
    client = pqlkit.Client(workload.MODEL, store=store, clock=clock)
    before = _rss_kib()
    peak_before = _peak_kib()
    t0, c0 = time.perf_counter(), time.process_time()
    result = client.track_many(workload.sweep_events(args.users, args.per_user))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _peak_kib()
    after = _rss_kib()
    client.close()
    store.close()
    json.dump(
        {
            "events": result.stored,
            "users": args.users,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "rss_before_kib": before,
            "peak_before_kib": peak_before,
            "rss_after_kib": after,
            "peak_kib": peak,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
